/* The dispatcher: hands spooled deliveries to sink generations and acts on their outcome.
 * Per sink it keeps a bounded window of pending deliveries in memory, in arrival (id) order; the
 * rest stay in the spool and are read back as the window empties, so memory does not grow with the
 * backlog. Outcomes: done -> removed from the spool; retry -> rescheduled with backoff (the sink
 * then probes with one delivery at a time until one succeeds, and a delivery waiting for its retry
 * holds back the ones after it, so a sink sees events in arrival order); reject or attempts
 * exhausted -> dead letters. Per-delivery timeouts turn a silent sink into a retry. Loop thread. */
#ifndef PX_DISPATCH_H
#define PX_DISPATCH_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <plexus/sdk.h>

#include "config.h"
#include "crash.h"
#include "event.h"
#include "instance.h"
#include "store.h"
#include "tap.h"

typedef struct px_dispatch px_dispatch;
typedef struct px_sinkq px_sinkq;

struct px_delivery {
    int64_t id;             /* spool delivery id */
    int64_t order;          /* its place in the sink's order: the id, or for an ordered sink on a
                               shared store the commit-order place (px_store_delivery.seq) */
    px_event *event;        /* owned reference */
    char *pipeline, *sink, *action; /* owned */
    json_t *params;         /* owned reference */
    uint32_t attempt;       /* attempts started so far (the current one included while in flight) */
    int64_t next_at_ms;     /* not before (retries) */
    px_retry_policy policy; /* pipeline policy narrowed by the event's hints */
    px_sinkq *q;
    px_plugin_ctx *gen;     /* generation it was handed to, while in flight */
    int64_t started_ms, deadline_ms;
    int orphan;             /* timed out or generation gone: a late complete() only frees it */
    uint64_t handle;        /* what the plugin was given for this attempt (0 = not handed over) */
    px_delivery *prev, *next;
};

typedef struct px_dispatch_stats {
    uint64_t delivered, retried, dead, rejected, timeouts;
    uint64_t adopted; /* deliveries adopted from hosts that died (several hosts on one store) */
} px_dispatch_stats;

/* Where the dispatcher finds sinks and pipelines, filled in by the runtime; both return borrowed
 * values (owner is passed back). */
typedef struct px_sink_directory {
    void *owner;
    px_instance *(*instance)(void *owner, const char *name); /* NULL when unknown */
    const px_retry_policy *(*policy)(void *owner, const char *pipeline); /* never NULL */
    px_tap *tap; /* told every delivery outcome while a tap is open; NULL: none */
} px_sink_directory;

/* A dispatcher on loop delivering what store (borrowed; outlives it) holds, finding sinks and
 * policies through dir (copied). */
int px_dispatch_create(uv_loop_t *loop, px_store *store, const px_sink_directory *dir,
                       px_dispatch **out);
/* Frees every delivery in memory (they are all in the spool). Timers closed; the loop must run
 * once more. */
void px_dispatch_close(px_dispatch *disp);

/* A delivery the spool has queued or committed, with its event still in memory. Strings and
 * params borrowed (copied / increfed); ev borrowed (a reference is taken when kept). Deliveries of
 * one sink must be added in id order: see px_dispatch_await. */
void px_dispatch_add(px_dispatch *disp, int64_t id, px_event *ev, const char *pipeline,
                     const char *sink, const char *action, json_t *params,
                     const px_retry_policy *policy);
/* Counts deliveries of `sink` that will be added only once their put has committed (delta > 0
 * when queued, < 0 when added or failed). Returns 1 when none is awaited: only then may a newer
 * delivery of that sink be added before its own commit without overtaking an older one. */
int px_dispatch_await(px_dispatch *disp, const char *sink, int delta);
/* From now on, deliveries of `sink` are added only once their put has committed (it crashed the
 * host on a delivery tried before its commit: the next crash must be chargeable to a stored
 * delivery). */
void px_dispatch_wait_for_commits(px_dispatch *disp, const char *sink);
/* A delivery added before its put committed, and the put failed: it is forgotten (ready: freed;
 * in flight: orphaned, so the sink's late answer changes nothing). Unknown ids are ignored. */
void px_dispatch_cancel(px_dispatch *disp, const char *sink, int64_t id);
/* The spool holds deliveries of `sink` that are not in memory (start-up, replay): read them. */
void px_dispatch_kick(px_dispatch *disp, const char *sink);
/* `sink` (borrowed) runs on this host: it adopts deliveries that hosts sharing the store left
 * when they died (px_store_adopt), even before it has any of its own. */
void px_dispatch_serve(px_dispatch *disp, const char *sink);
/* Re-examines every sink (a generation started or became current). */
void px_dispatch_pump_all(px_dispatch *disp);
/* Deliveries still in flight at `gen` are taken back and retried on the next generation
 * (orphaned, so a late complete() from gen is harmless). Call before gen's destroy. */
void px_dispatch_reclaim(px_dispatch *disp, px_plugin_ctx *gen);
/* Frees orphaned deliveries of gen after its destroy (it can no longer complete them). */
void px_dispatch_forget(px_dispatch *disp, px_plugin_ctx *gen);

/* Plugins never see a px_delivery's address: deliver() gets a handle, a pointer value that names
 * one hand-over in this process and is never given out again (see dispatch.c). This returns the
 * delivery `handle` names while its plugin may still use it (until complete, or the end of its
 * generation), else NULL: a finished delivery, one of a closed dispatcher, or not a handle. */
px_delivery *px_dispatch_resolve(px_delivery *handle);

/* SDK complete() of `handle` (see px_dispatch_resolve). A handle that names no open delivery (a
 * second complete, one after the generation's end or the dispatcher's close) is refused with an
 * error in the log; nothing else changes. */
void px_dispatch_complete(px_delivery *handle, int status, const char *reason,
                          uint64_t retry_after_ms);

/* Which delivery a plugin callback into gen runs for, so that a crash in it is charged there.
 * cause is the handle of the delivery the callback was set up for (captured with
 * px_crash_cause when the plugin asked for the timer, request or post), 0 when unknown:
 * - with a cause: that delivery while gen still holds it; none once it was completed (a
 *   finished delivery did not cause what comes after it, and guessing would charge another);
 * - without one (set up outside any delivery, or from a plugin thread): gen's delivery in
 *   flight when it has exactly one, the only one whose data can be at fault; none otherwise.
 * Returns the delivery (valid until it completes) or NULL. */
px_delivery *px_dispatch_blame(px_dispatch *disp, px_plugin_ctx *gen, uint64_t cause);
/* Enters crash frame f for callback `call` into gen, charged to the delivery px_dispatch_blame
 * names (none with disp NULL): what px_gen_crash_enter does through the runtime's hook. */
void px_dispatch_crash_enter(px_dispatch *disp, px_crash_frame *f, px_plugin_ctx *gen,
                             const char *call, uint64_t cause);

/* Backoff before attempt `attempt + 1` after `attempt` failed attempts (>= 1), without jitter:
 * the event's hint list when it has one (last entry repeats), else backoff_ms * 2^(attempt-1);
 * capped at max_backoff_ms. */
uint64_t px_dispatch_backoff(const px_retry_policy *p, const uint32_t *hints, size_t nhints,
                             uint32_t attempt);

void px_dispatch_get_stats(px_dispatch *disp, px_dispatch_stats *st);
/* Calls cb per sink with in-memory figures (ready, in flight). */
void px_dispatch_foreach_sink(px_dispatch *disp,
                              void (*cb)(const char *sink, size_t ready, size_t inflight,
                                         int failing, void *arg),
                              void *arg);
/* The last failed outcome of `sink` ("retry: REASON", "rejected: REASON", masked), borrowed until
 * the sink's next outcome; NULL when its last delivery succeeded or none failed. */
const char *px_dispatch_sink_error(const px_dispatch *disp, const char *sink);

#endif
