/* amocrm core: the bottom layer of the plugin, shared by every other file. One instance serves
 * one connected amoCRM account; its state is one struct amo, declared here. The files form layers
 * that only call downward:
 *
 *   amocrm.c                     descriptor, life cycle, the sink
 *   api.c                        the admin API's routes
 *   account.c  rules.c  lead.c   account and OAuth, rules, the leads/complex body
 *   cache.c                      cached users/pipelines/steps/fields/tags
 *   client.c                     raw HTTP, tokens and their refresh, rate-limited API calls
 *   core.c                       this header: the state, small helpers, held admin requests
 *
 * Everything runs on the host loop thread. */
#ifndef PX_AMOCRM_CORE_H
#define PX_AMOCRM_CORE_H

#include <stddef.h>
#include <stdint.h>

#include <plexus/sdk.h>

extern const px_host_api *amo_host; /* set once by the entry point; valid for the process */

/* Outcomes of an amoCRM API call (client.h) that are not an HTTP status. */
enum {
    AMO_ENOACCOUNT = -1, /* no account connected (never, or deleted) */
    AMO_ESTALE = -2,     /* amoCRM refused the refresh token: the account must reconnect */
    AMO_ENET = -3,       /* no HTTP answer (connection, timeout); or the token is unusable now */
    AMO_EQUEUE = -4,     /* waited longer than queue_timeout for a rate-limit slot */
    AMO_ESTOP = -5,      /* the instance is being destroyed: free the owner, call no host API */
};

typedef struct amo amo;
typedef struct amo_http amo_http;
typedef struct amo_call amo_call;
typedef struct amo_sync amo_sync;

/* An admin request answered later (after a call to amoCRM). The instance answers every held
 * request with 503 when it stops, because the host fails a stopped generation's requests itself
 * before running the cancelled calls' callbacks: an answer after that would touch a released
 * request. */
typedef struct amo_hold {
    px_http_request *req; /* NULL once answered */
    struct amo_hold *prev, *next;
} amo_hold;

/* Cached collections, in this order (kv keys "cache.users"...). */
enum { AMO_C_USERS, AMO_C_PIPELINES, AMO_C_STEPS, AMO_C_FIELDS, AMO_C_TAGS, AMO_C_COUNT };

struct amo {
    px_plugin_ctx *ctx;
    /* options (owned copies); prefix is api_prefix normalised: "" for the root, else "/a/b" (no
     * repeated or trailing slash), so that a request path is prefix + "/account"... */
    char *client_id, *client_secret, *redirect_uri, *api_token, *prefix, *auth_url, *base_url;
    char *account_ref;    /* our side's account id (AccountAmo.accountID) */
    json_t *allowed_hosts; /* array of glob strings */
    double rate;           /* requests per second to amoCRM */
    int64_t refresh_before_ms, stale_retry_ms, timeout_ms, queue_timeout_ms, page_limit;
    int sync_on_connect;

    /* account and tokens (copies of kv "account" and "tokens"; NULL when absent) */
    json_t *account;
    json_t *tokens;
    uint64_t token_gen; /* bumped whenever the access token changes */
    int refreshing;
    int refresh_failures;
    px_timer *refresh_timer;

    /* cached collections (copies of kv "cache.*"): {"next_id", "synced_at", "items"} */
    json_t *cache[AMO_C_COUNT];
    json_t *rules; /* "<AccountID>:<QuizID>" -> rule (copy of kv "rules"), every account's */

    /* rate limiter and queued API calls */
    int64_t next_send_ms, paused_until_ms; /* monotonic */
    px_timer *pump_timer;
    amo_call *q_head, *q_tail;
    amo_http *http; /* in-flight raw requests (doubly linked) */
    amo_sync *syncs;

    amo_hold *holds;   /* unanswered admin requests */
    size_t deliveries; /* open deliveries */
    int stopping, draining, destroying;
    int closing; /* calls were cancelled after stop: the host is unloading this generation */
};

/* --- helpers (core.c) ------------------------------------------------------------------------ */
int64_t amo_now_ms(void);  /* unix time, ms */
int64_t amo_mono_ms(void); /* monotonic, ms */
/* Parses a JSON integer or a string of decimal digits (optionally signed) into *out. 0 or -1. */
int amo_json_int(const json_t *v, int64_t *out);
/* ISO 8601 UTC text of unix ms into buf (>= 32 bytes). */
void amo_iso_time(int64_t ms, char *buf, size_t len);
/* Answers req with `status` and a JSON string body (the seed's message bodies); msg borrowed. */
void amo_respond_msg(px_http_request *req, int status, const char *msg);
/* Answers req with `status` and `body` (borrowed) as JSON. */
void amo_respond_json(px_http_request *req, int status, const json_t *body);
/* Value of `name` (borrowed) in the query string `query` (borrowed), percent-decoded, as a new
 * string (owned by caller; free), or NULL when absent. */
char *amo_query_get(const char *query, const char *name);
/* Appends `s` (borrowed) percent-encoded (RFC 3986 unreserved kept) to buf at *o (bounded). */
void amo_url_encode(const char *s, char *buf, size_t len, size_t *o);

/* --- held admin requests (core.c) ----------------------------------------------------------- */
/* Holds req (borrowed until answered) for a later answer; returns the hold, owned by the caller
 * and released by amo_hold_answer or amo_hold_drop. */
amo_hold *amo_hold_req(amo *a, px_http_request *req);
/* Answers the held request (if still open) with a JSON string msg (borrowed), frees h. */
void amo_hold_answer(amo *a, amo_hold *h, int status, const char *msg);
/* Frees h without answering (the instance is going away). */
void amo_hold_drop(amo *a, amo_hold *h);
/* Answers every held request with 503; their holds stay with their owners, now inert. */
void amo_hold_release_all(amo *a);

#endif
