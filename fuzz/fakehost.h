/* An in-memory host for fuzzing plugins inside one process: implements every px_host_api function
 * without a loop or sockets. Work the real host would do later (persisted callbacks, posts,
 * cancelled calls) is queued and run by fh_run; timers fire once per round; the plugin's routes and
 * outgoing HTTP requests are recorded so a fuzz target can call the routes with its input as the
 * body and answer the requests with its input as the response. Single-threaded except post. */
#ifndef PX_FUZZ_FAKEHOST_H
#define PX_FUZZ_FAKEHOST_H

#include <stddef.h>
#include <stdint.h>

#include <plexus/sdk.h>

/* The table handed to PX_PLUGIN_ENTRY (static storage). */
const px_host_api *fh_api(void);
/* The context of the one instance (static storage). */
px_plugin_ctx *fh_ctx(void);

/* Starts afresh: persisted_status is what every emit / dead_letter callback reports (PX_OK or
 * PX_EBUSY); kv_json (borrowed; NULL = {}) is the instance's key/value state. */
void fh_reset(int persisted_status, const char *kv_json);
/* Runs queued work, then fires every live timer once; `rounds` times. */
void fh_run(int rounds);

/* Calls the route that serves `path` (exact, else longest prefix), or with path NULL every recorded
 * route at its own path, with this method (NULL = the route's or "POST"), extra headers ("Name:
 * value" strings, NULL-terminated), an empty query and body (borrowed). Returns the number of
 * routes called. */
size_t fh_call_routes(const char *method, const char *path, const char *const *headers,
                      const char *body, size_t len);
/* Answers every outgoing request still open with status, the given headers and body (borrowed);
 * status < 0 answers as a transport error. Returns how many were answered. */
size_t fh_answer_calls(int status, const char *const *headers, const char *body, size_t len);
/* Hands the plugin a delivery of `payload` (JSON text) with action and params (JSON text); the
 * delivery is freed when the plugin completes it (or by fh_cleanup). */
void fh_deliver(void (*deliver)(void *state, px_delivery *d), void *state, const char *action,
                const char *params, const char *payload);
/* After destroy: frees everything the plugin left (timers, calls, unanswered requests, events,
 * deliveries) the way the real host would. */
void fh_cleanup(void);

#endif
