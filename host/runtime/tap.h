/* The tap: a live view, for operators, of what the host does with events: each event as it is
 * accepted (source, type, id, the pipelines and sinks it was routed to) and each delivery outcome
 * (ok, retry with its reason, dead letter), as JSON lines with secret values masked
 * (px_log_redact_json). Subscribers (the admin API's GET /admin/tap) filter by pipeline, sink or
 * source, may stop after a number of records, and are bounded: a line that would take a
 * subscriber's backlog (what its writer accepted and its reader has not taken) past max_backlog
 * is dropped and counted, and the count is reported in the stream before the next line that
 * fits. A slow reader therefore costs the host a bounded amount of memory and never holds an
 * event up. With no subscriber the hooks in ingest and dispatch cost one branch (px_tap_on).
 * Loop thread only. */
#ifndef PX_TAP_H
#define PX_TAP_H

#include <stddef.h>
#include <stdint.h>

#include "event.h"
#include "router.h"

#define PX_TAP_MAX_SUBS 4              /* taps open at once */
#define PX_TAP_MAX_BACKLOG (256u << 10) /* bytes per subscriber beyond which lines are dropped */

typedef struct px_tap_sub px_tap_sub;

/* Members are tap.c's; only nsubs is read elsewhere (px_tap_on). */
typedef struct px_tap {
    size_t nsubs;
    px_tap_sub *subs[PX_TAP_MAX_SUBS];
    size_t max_backlog;
} px_tap;

/* What a subscriber sees: strings borrowed for px_tap_open (copied); NULL = any. limit: records
 * (events and deliveries) after which the subscriber is done; 0 = no limit. */
typedef struct px_tap_filter {
    const char *pipeline, *sink, *source;
    uint64_t limit;
} px_tap_filter;

/* Where a subscriber's lines go (copied at open; arg borrowed until px_tap_close). */
typedef struct px_tap_writer {
    /* Takes line (len bytes ending in '\n'; borrowed for the call). 0 when taken, < 0 when the
     * reader is gone (the line is lost; nothing is counted). */
    int (*write)(void *arg, const char *line, size_t len);
    /* Bytes the writer has taken and its reader has not. */
    size_t (*backlog)(void *arg);
    /* The limit was reached (after its last line): the owner ends the stream and calls
     * px_tap_close, now or later; no line is written to it after this. May be NULL. */
    void (*done)(void *arg);
    void *arg;
} px_tap_writer;

/* A hub with no subscriber, its backlog bound max_backlog bytes (0 = PX_TAP_MAX_BACKLOG).
 * Caller-owned memory: px_tap_deinit releases it. */
void px_tap_init(px_tap *t, size_t max_backlog);
/* Closes every subscriber still open (their owners must not use them afterwards). */
void px_tap_deinit(px_tap *t);

/* 1 while a subscriber is open: the hooks' one branch. */
static inline int px_tap_on(const px_tap *t)
{
    return t->nsubs != 0;
}

/* Opens a subscriber. Returns 0 with *out (owned by the hub; px_tap_close), or PX_EBUSY when
 * PX_TAP_MAX_SUBS are open. */
int px_tap_open(px_tap *t, const px_tap_filter *f, const px_tap_writer *w, px_tap_sub **out);
/* Removes s (freed; NULL is a no-op). */
void px_tap_close(px_tap *t, px_tap_sub *s);
/* Lines dropped for s so far (its reader was too slow). */
uint64_t px_tap_dropped(const px_tap_sub *s);
/* Records written to s so far. */
uint64_t px_tap_written(const px_tap_sub *s);

/* Hooks (call only when px_tap_on): ev (borrowed) was accepted with its n routes (borrowed; a
 * route with an error is dead at once and reported as a delivery outcome too). */
void px_tap_event(px_tap *t, const px_event *ev, const px_route *routes, size_t n);
/* A delivery outcome: "ok", "retry" (reason, retry_in_ms) or "dead" (reason); every string
 * borrowed; attempt is the attempt that ended (0: none was made). */
void px_tap_delivery(px_tap *t, const px_event *ev, const char *pipeline, const char *sink,
                     const char *action, int64_t delivery_id, uint32_t attempt,
                     const char *outcome, const char *reason, uint64_t retry_in_ms);

/* The record format, one JSON object a line: {"kind": "event", "at": ms, "source", "type", "id",
 * "pipelines": [...], "sinks": [...]}, {"kind": "delivery", "at", "outcome", "event_id",
 * "source", "type", "pipeline", "sink", "action", "delivery_id", "attempt", "reason"?,
 * "retry_in_ms"?}, and {"kind": "dropped", "count": n, "total": n} before the first line that
 * fits after drops. */

#endif
