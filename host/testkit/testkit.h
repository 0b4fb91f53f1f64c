/* The plugin test kit behind `plexus plugin test`: runs one plugin file in the real runtime
 * (lifecycle.h: px_runtime_create_with), with test doubles only at its edges: the in-memory store
 * (refusing every put for emit_status "busy"), a source and a collector sink of the kit's own
 * (in-process plugins) with generated pipelines, and a host table of shims that check the
 * plugin's side of the contract in <plexus/sdk.h> and call through to the real host functions.
 * It feeds the plugin the scenario's events through the router and dispatcher (sinks), collects
 * its emits and dead letters (sources), calls its HTTP routes over HTTP on the runtime's server
 * (127.0.0.1, a port of the system's choosing), answers its outgoing HTTP requests from a script
 * (or lets them go out for real), and records every completion. The runtime drives the lifecycle
 * (init, start, stop, drain, destroy; a reload hands over to a second generation) and the kit
 * checks: host calls on the loop thread only, none after destroy, one complete() per delivery,
 * drained() once drain is asked and nothing in flight then, every timer stopped, every request
 * answered, every created event emitted or discarded.
 *
 * The scenario (a JSON object, every key optional; see docs/plugin-guide.md, "Testing"):
 *   instance       instance name (default: the plugin's name)
 *   config         the plugin's options as JSON, validated like the YAML `config:` block
 *   kv             initial key/value state, an object
 *   emit_status    "ok" (default) or "busy": the store refuses every put, so persisted
 *                  callbacks report PX_EBUSY
 *   http           scripted answers to the plugin's outgoing requests: each request takes the
 *                  first one not used yet that fits its "method" and "url" (those it has; a
 *                  url ending in "*" is a prefix); "repeat": true answers every one that fits:
 *                  {"method", "url", "repeat", "status", "headers": {}, "body": string or
 *                  JSON, "error", "delay_ms", "expect_*"}; absent = requests really go out
 *   requests       calls of the plugin's routes: {"method", "path", "query", "headers": {},
 *                  "body": string or JSON, "host", "expect_status", "expect_body" (substring),
 *                  "expect_headers": {name: value or null}}
 *   events         deliveries, one after another: {"type", "payload", "params", "action",
 *                  "pipeline", "attempt", "id", "meta": {}, "host",
 *                  "expect": "ok"|"retry"|"reject", "expect_retry_after_ms", "expect_reason" (substring)}
 *   run_ms         time to let the plugin run after the requests and events (default 100)
 *   timeout_ms     bound for each delivery, request and the drain (default 5000)
 *   expect_emits   a number, {"min", "max", "match": [patterns]}, or [patterns] (one per emit):
 *                  JSON subsets of the emit records, matched in order
 *   expect_dead_letters  a number, or {"min", "max"}
 *   hosts          1..4 runtimes on the loop, sharing one in-memory cluster state (state,
 *                  versions, leases, members; each spool its own); "host" picks one per
 *                  event/request
 *   expect_cluster patterns matched in order on the "cluster" records (lock, kv_cas, cluster)
 *   expect_locks   {name: host}: who holds each lease at the end of the run (0: nobody)
 *   expect_kv      an object every key of which must be in the final state with that value
 *   expect_init_error  true: init must fail (checked, and then nothing else runs)
 *   reload         true: before stopping, hand over to a second generation (export_state /
 *                  import_state when both exist), stop, drain and destroy the first, and run the
 *                  events again on the second
 * Process: each run forks; the child runs the scenario on its own libuv loop, with the crash
 * handlers of crash.h installed, and hands the report back through a pipe. A child that dies of
 * a fatal signal yields a report whose one failure names the signal and the plugin callback that
 * was running, with "crash": {"signal", "call", "instance", "event"}. Call from the main thread
 * while no other thread runs, one run at a time. */
#ifndef PX_TESTKIT_H
#define PX_TESTKIT_H

#include <jansson.h>

/* Runs plugin `file` (borrowed) through `scenario` (borrowed; NULL = {}). Always stores a report
 * in *report (new reference): {"ok", "file", "plugin", "lifecycle", "deliveries", "requests",
 * "emits", "dead_letters", "http_calls", "kv", "metrics", "logs", "cluster", "locks",
 * "violations", "failures", "warnings"} ("crash" too after a crash; no "plugin" then).
 * Returns 0 when the plugin loaded, met every expectation and broke no rule; 1 otherwise. */
int px_testkit_run(const char *file, const json_t *scenario, json_t **report);

#endif
