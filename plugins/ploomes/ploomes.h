/* ploomes: internal declarations shared by the plugin's files. ploomes.c owns the instance
 * (options, lifecycle), ploomes_api.c the outgoing REST calls (User-Key, client-side rate limit,
 * sink actions), ploomes_hooks.c the incoming webhooks and the registration of subscriptions.
 * Everything here runs on the host loop thread. */
#ifndef PX_PLUGIN_PLOOMES_H
#define PX_PLUGIN_PLOOMES_H

#include <stdint.h>

#include <plexus/sdk.h>

extern const px_host_api *px__ploomes_host;

typedef struct plm plm;
typedef struct plm_call plm_call;
typedef struct plm_ack plm_ack;
typedef struct plm_waiter plm_waiter;

/* Called once when an API call ends: status is the HTTP status, or < 0 when no answer came
 * (then resp is NULL and error says why). resp and error are valid for the call only. Never
 * called after the instance is destroyed. */
typedef void (*plm_call_cb)(plm *p, int status, const px_http_response *resp, const char *error,
                            void *arg);

/* One subscription from `subscriptions:`, e.g. "Contacts.Update". */
typedef struct plm_sub {
    char *text;        /* owned: as configured */
    char *action;      /* owned: the action part, resolved to an id during a sync */
    int64_t entity_id; /* resolved at init */
    int64_t action_id; /* 0 until resolved */
} plm_sub;

/* A webhook registration pass (see ploomes_hooks.c). */
typedef struct plm_sync {
    int running;
    int again;          /* another pass was asked for while this one ran */
    unsigned failures;  /* consecutive failed passes: backoff exponent */
    json_t *hooks;      /* owned: the account's webhooks listed so far */
    json_t *actions;    /* owned: action name (lowercase) -> id from /Webhooks@Actions, or NULL */
    int64_t skip;       /* next page offset */
    size_t idx;         /* next subscription to reconcile */
    int created, updated, present, unresolved;
    uint64_t retry_hint_ms; /* Retry-After of a 429 that ended the pass */
    plm_waiter *waiting;    /* sync requests answered when this pass ends */
    plm_waiter *next_waiting; /* sync requests that came during this pass: after the next one */
    px_timer *retry;        /* owned by the host; the next pass after a failure */
} plm_sync;

struct plm {
    px_plugin_ctx *ctx; /* borrowed from the host, valid until destroy */
    /* options */
    char *path, *sync_path;      /* owned */
    char *validation_key;        /* owned, secret; NULL = no webhook route */
    char *user_key;              /* owned, secret; NULL = no API calls */
    char *base_url;              /* owned, without a trailing '/' */
    char *callback_url;          /* owned; NULL = no registration */
    json_t *entity_ids, *action_ids; /* owned: configured name -> id maps (objects) */
    plm_sub *subs;               /* owned array */
    size_t nsubs;
    int64_t max_body, timeout_ms, retry_after_ms, sync_retry_ms, page_size, rate_limit;
    /* lifecycle */
    int started, stopping, draining, drained_sent;
    /* API calls: queued (waiting for the rate limiter) then active */
    plm_call *queue_head, *queue_tail, *active;
    int64_t next_start_us;   /* monotonic: earliest start of the next call */
    int64_t paused_until_us; /* monotonic: after a 429, no call starts before this */
    px_timer *pump;          /* owned by the host: wakes the queue */
    /* webhooks waiting for the spool */
    plm_ack *acks;
    plm_sync sync;
};

/* Monotonic clock in microseconds. */
int64_t px__ploomes_now_us(void);

/* Allocation that aborts on failure, as the host's own allocator does. */
void *px__ploomes_xcalloc(size_t n, size_t size);
char *px__ploomes_xstrdup(const char *s);

/* --- ploomes_api.c ------------------------------------------------------------------------ */

/* Queues a call of `method` (borrowed) on `path` (borrowed, starting with '/', appended to
 * base_url) with `body` (borrowed; NULL = none). It starts when the rate limiter allows. cb runs
 * once, later (never inside this call). Returns 0, or PX_ESTATE without a user key. */
int px__ploomes_call(plm *p, const char *method, const char *path, const json_t *body,
                     plm_call_cb cb, void *arg);
/* Sinks: performs the delivery's action (see docs/plugins/ploomes.md). */
void px__ploomes_deliver(void *state, px_delivery *d);
/* Stop: drops queued calls that carry no delivery and cancels active ones; their callbacks run
 * with an error. */
void px__ploomes_api_stop(plm *p);
/* 1 when no call is queued or active. */
int px__ploomes_api_idle(plm *p);
/* Destroy: gives back every delivery still held (retry) and detaches active calls so their late
 * callbacks only free memory. */
void px__ploomes_api_destroy(plm *p);
/* Seconds or HTTP-date of a Retry-After header (borrowed) in ms; 0 when absent or unreadable. */
uint64_t px__ploomes_retry_after(const char *value);
/* The API's error message in a response body (borrowed), as a new string (free), never NULL. */
char *px__ploomes_error_message(const char *body, size_t len);

/* --- ploomes_hooks.c ---------------------------------------------------------------------- */

/* Registers the webhook route and the sync route (when validation_key is set). */
int px__ploomes_hooks_route(plm *p);
/* Starts a registration pass now (or after the running one). */
void px__ploomes_sync_start(plm *p);
/* Stop: no more passes; answers waiting sync requests with 503. */
void px__ploomes_hooks_stop(plm *p);
/* Destroy: frees the pass state; webhook acks still waiting for the spool are orphaned so their
 * late callbacks only free memory. */
void px__ploomes_hooks_destroy(plm *p);

/* --- ploomes.c ---------------------------------------------------------------------------- */

/* During drain: reports drained to the host once no work is left. */
void px__ploomes_check_drained(plm *p);

#endif
