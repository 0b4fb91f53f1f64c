/* ploomes core: the bottom layer of the plugin: the instance's state and small helpers. The
 * files form layers that only call downward:
 *
 *   ploomes.c        options, life cycle, the descriptor
 *   ploomes_hooks.c  incoming webhooks and the registration of subscriptions
 *   ploomes_api.c    outgoing REST calls (User-Key, client-side rate limit), sink actions
 *   ploomes_core.c   this header: the state and clock
 *
 * Everything here runs on the host loop thread. */
#ifndef PLOOMES_CORE_H
#define PLOOMES_CORE_H

#include <stdint.h>

#include <plexus/sdk.h>

#include "mem.h" /* px_xcalloc, px_xstrdup: allocation that aborts on failure */

extern const px_host_api *ploomes_host;

typedef struct ploomes ploomes;
typedef struct ploomes_call ploomes_call;
typedef struct ploomes_ack ploomes_ack;
typedef struct ploomes_waiter ploomes_waiter;

/* One subscription from `subscriptions:`, e.g. "Contacts.Update". */
typedef struct ploomes_sub {
    char *text;        /* owned: as configured */
    char *action;      /* owned: the action part, resolved to an id during a sync */
    int64_t entity_id; /* resolved at init */
    int64_t action_id; /* 0 until resolved */
} ploomes_sub;

/* A webhook registration pass (see ploomes_hooks.c). */
typedef struct ploomes_sync {
    int running;        /* a pass is asked for: waiting on the cluster lock, or under way */
    int locked;         /* the cluster lock "webhook-sync" is held: the pass is under way */
    int again;          /* another pass was asked for while this one ran */
    unsigned failures;  /* consecutive failed passes: backoff exponent */
    json_t *hooks;      /* owned: the account's webhooks listed so far */
    json_t *actions;    /* owned: action name (lowercase) -> id from /Webhooks@Actions, or NULL */
    int64_t skip;       /* next page offset */
    size_t idx;         /* next subscription to reconcile */
    int created, updated, present, unresolved;
    uint64_t retry_hint_ms; /* Retry-After of a 429 that ended the pass */
    ploomes_waiter *waiting;      /* sync requests answered when this pass ends */
    ploomes_waiter *next_waiting; /* sync requests that came during this pass: after the next one */
    px_timer *retry;              /* owned by the host; the next pass after a failure */
} ploomes_sync;

struct ploomes {
    px_plugin_ctx *ctx; /* borrowed from the host, valid until destroy */
    /* options */
    char *path, *sync_path;      /* owned */
    char *validation_key;        /* owned, secret; NULL = no webhook route */
    char *user_key;              /* owned, secret; NULL = no API calls */
    char *base_url;              /* owned, without a trailing '/' */
    char *callback_url;          /* owned; NULL = no registration */
    json_t *entity_ids, *action_ids; /* owned: configured name -> id maps (objects) */
    ploomes_sub *subs;           /* owned array */
    size_t nsubs;
    int64_t max_body, timeout_ms, retry_after_ms, sync_retry_ms, page_size, rate_limit;
    /* lifecycle */
    int started, stopping, draining, drained_sent;
    void (*call_ended)(ploomes *p); /* set by ploomes.c: runs after each API call ended (drain) */
    /* API calls: queued (waiting for the rate limiter) then active */
    ploomes_call *queue_head, *queue_tail, *active;
    int64_t next_start_us;   /* monotonic: earliest start of the next call */
    int64_t paused_until_us; /* monotonic: after a 429, no call starts before this */
    px_timer *pump;          /* owned by the host: wakes the queue */
    /* webhooks waiting for the spool */
    ploomes_ack *acks;
    ploomes_sync sync;
};

/* Monotonic clock in microseconds. */
int64_t ploomes_now_us(void);

#endif
