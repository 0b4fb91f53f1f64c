/* The host the plugin fuzz targets run a plugin in: the real runtime (lifecycle.h), with its
 * router, mapping, dispatcher, HTTP server and host API, and test doubles only at the edges: an
 * in-memory store (refusing every put when asked, so persisted callbacks report PX_EBUSY), a
 * source and a collector sink of its own (in-process plugins) with pipelines to and from the
 * plugin, and a host table over the real one (px_api_init) whose outgoing HTTP requests are
 * answered from the fuzz input instead of the network. Time is driven, not waited for: each
 * round runs the loop without blocking, then fires every pending plugin timer
 * (px_runtime_fire_timers). Loop, HTTP client and data folder live for the process; a runtime
 * lives for one input (fh_begin .. fh_end), so that every input sees the whole life cycle.
 * Main thread only, one runtime at a time. */
#ifndef PX_FUZZ_FUZZHOST_H
#define PX_FUZZ_FUZZHOST_H

#include <stddef.h>

#include <plexus/sdk.h>

/* Once per process: the plugin's entry (registered as the in-process plugin `plugin`, static
 * storage) and the deliveries the target may ask for, "action params-json" (NULL-terminated,
 * static storage; NULL = none), each given a pipeline from the host's source to the plugin.
 * Returns the plugin's descriptor. */
const px_plugin_desc *fh_setup(const char *plugin,
                               const px_plugin_desc *(*entry)(const px_host_api *host),
                               const char *const *actions);

/* Builds and starts a runtime with the plugin as instance "fuzzed": options config_json (the
 * `config:` block as JSON, borrowed), key/value state kv_json (borrowed; NULL = {}), every
 * store put refused when busy. Returns 0, or < 0 when it did not start (then everything is
 * already released: do not call fh_end). */
int fh_begin(const char *config_json, const char *kv_json, int busy);

/* Runs `rounds` rounds: the loop until nothing is due now, every pending timer of the plugin,
 * the loop again. Cancelled requests are answered with UV_ECANCELED as they would be. */
void fh_run(int rounds);

/* Calls the plugin's route that serves `path` over HTTP on the runtime's listener, or with path
 * NULL every route it registered at its own path; with this method (NULL = the route's, else
 * POST), extra headers ("Name: value", NULL-terminated), and body (borrowed). Waits until the
 * request reached the plugin (or was answered without it). Returns the number of requests. */
size_t fh_call_routes(const char *method, const char *path, const char *const *headers,
                      const char *body, size_t len);

/* Emits an event from the host's source that the pipeline of actions[index] routes to the
 * plugin, and waits until the dispatcher handed it over (or gave up). */
void fh_deliver(size_t index);

/* Answers every outgoing request of the plugin still open with status, the given headers and
 * body (borrowed); status < 0 answers as a transport error. Returns how many were answered. */
size_t fh_answer_calls(int status, const char *const *headers, const char *body, size_t len);

/* Shuts the runtime down as the daemon does (stop, drain, destroy), answering what the plugin
 * still asks with transport errors and firing its timers a few rounds, and frees it. */
void fh_end(void);

#endif
