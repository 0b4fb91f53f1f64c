/* amocrm: internal interfaces between the plugin's files. One instance serves one connected
 * amoCRM account: OAuth2 tokens and their refresh (client.c), the account model and the OAuth
 * callbacks (account.c), cached users/pipelines/steps/fields/tags (cache.c), one rule per quiz
 * and account (rules.c), the leads/complex body (lead.c), the admin API (api.c) and the sink
 * (amocrm.c). Everything runs on the host loop thread. */
#ifndef PX_AMOCRM_H
#define PX_AMOCRM_H

#include <stddef.h>
#include <stdint.h>

#include <plexus/sdk.h>

extern const px_host_api *amo_host; /* set once by the entry point; valid for the process */

/* Outcomes of amo_call() that are not an HTTP status. */
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

/* A raw outgoing HTTP request's answer: status as px_http_response_cb, or AMO_ESTOP; resp is
 * borrowed for the call (NULL when status < 0). */
typedef void (*amo_http_cb)(amo *a, int status, const px_http_response *resp, const char *err,
                            void *arg);

/* An amoCRM API answer. status: HTTP status or AMO_E*. body: the parsed JSON (borrowed for the
 * call; NULL for 204, a body that is not JSON, or status < 0). retry_after_ms: from a 429's
 * Retry-After. err (borrowed): a short text for status < 0. */
typedef void (*amo_call_cb)(amo *a, int status, json_t *body, uint64_t retry_after_ms,
                            const char *err, void *arg);

/* Done callback of a cache sync. ok = 1 when every list was read to the end; why (borrowed)
 * tells what failed otherwise. status is AMO_ESTOP when the instance is going away. */
typedef void (*amo_sync_cb)(amo *a, int status, int ok, const char *why, void *arg);

enum { AMO_SYNC_USERS = 1, AMO_SYNC_PIPELINES = 2, AMO_SYNC_FIELDS = 4, AMO_SYNC_TAGS = 8 };
#define AMO_SYNC_ALL (AMO_SYNC_USERS | AMO_SYNC_PIPELINES | AMO_SYNC_FIELDS | AMO_SYNC_TAGS)

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

/* --- util (amocrm.c) ------------------------------------------------------------------------ */
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
/* Called when a delivery finished, for drain. */
void amo_delivery_done(amo *a);

/* --- client.c: raw HTTP, tokens, rate-limited API calls --------------------------------------- */
/* Starts a raw request (every pointer borrowed). Returns 0, or < 0 without calling cb. */
int amo_http_start(amo *a, const char *method, const char *url, const char *const *headers,
                   const char *body, amo_http_cb cb, void *arg);
/* Base URL for the account host `host` (borrowed), e.g. https://example.amocrm.ru; a new string
 * owned by the caller (free). */
char *amo_base_url(amo *a, const char *host);
/* 1 when tokens exist and the account is usable (connected, not deleted, not stale). */
int amo_connected(amo *a);
int amo_is_stale(amo *a);
/* Queues an API call: `method`, `path` (e.g. "/api/v4/users?page=1", both borrowed), body
 * (borrowed, may be NULL). cb runs exactly once, never inside amo_call. With `connecting` set
 * the call only needs tokens (used while the account is being created). */
void amo_call_start(amo *a, const char *method, const char *path, const char *body,
                    int connecting, amo_call_cb cb, void *arg);
/* Replaces the tokens with `tok` (borrowed; {access_token, refresh_token, expires_in, ...} as
 * amoCRM answers) for account host `host`; stores them before returning. 0 or < 0. */
int amo_tokens_set(amo *a, const json_t *tok, const char *host);
/* Forgets the tokens (kv too) and fails queued calls with AMO_ENOACCOUNT. */
void amo_tokens_drop(amo *a);
/* (Re)schedules the refresh timer from the tokens' expiry. */
void amo_refresh_schedule(amo *a);
/* Marks the account stale or fresh: kv, gauge, and queued calls. */
void amo_set_stale(amo *a, int stale);
/* Publishes the account gauges. */
void amo_gauges(amo *a);
/* Stops timers (stop()). */
void amo_client_stop(amo *a);
/* Ends every queued/in-flight call with AMO_ESTOP (destroy()). */
void amo_client_destroy(amo *a);
/* Number of queued + in-flight raw requests. */
size_t amo_client_busy(amo *a);

/* --- account.c ------------------------------------------------------------------------------ */
void amo_account_load(amo *a);
void amo_api_account(amo *a, px_http_request *req, const char *method);
void amo_api_webhook_create(amo *a, px_http_request *req);
void amo_api_webhook_delete(amo *a, px_http_request *req);

/* --- cache.c -------------------------------------------------------------------------------- */
void amo_cache_load(amo *a);
/* Clears every cached collection (kv too). */
void amo_cache_clear(amo *a);
/* Starts reading `mask` collections from amoCRM to the end; cb (may be NULL) runs once. */
void amo_sync_start(amo *a, int mask, amo_sync_cb cb, void *arg);
/* GET (list a page) and PATCH (refresh) for collection `c` (AMO_C_*). */
void amo_api_list(amo *a, px_http_request *req, const char *method, int c);
/* Finds a live (not deleted) cached item of collection c by its amoCRM id (and, for steps,
 * pipeline id; for fields and tags, entity "leads"/"contacts"/"companies"/"customers"; pass
 * NULL/0 otherwise). Borrowed, valid until the cache changes; NULL when absent. */
json_t *amo_cache_find(amo *a, int c, int64_t amo_id, int64_t pipeline_id, const char *entity);
/* Same, by our own ID (the seed's primary key). */
json_t *amo_cache_find_own(amo *a, int c, int64_t id);
/* Ends every sync job with AMO_ESTOP (destroy()). */
void amo_sync_destroy(amo *a);

/* --- rules.c -------------------------------------------------------------------------------- */
/* The rule of quiz `quiz_id` for the connected account, borrowed (valid until rules change);
 * NULL when absent or deleted. */
json_t *amo_rule_get(amo *a, int64_t quiz_id);
void amo_api_rules(amo *a, px_http_request *req, const char *method, const char *quiz);
/* Loads kv "rules" into a->rules; rules stored under the bare quiz id (before rules were keyed by
 * account) move to their AccountID's key and the result is stored. */
void amo_rules_load(amo *a);

/* --- lead.c --------------------------------------------------------------------------------- */
/* Builds the POST /api/v4/leads/complex body (new reference: an array of one lead) for the quiz
 * result `params` (borrowed) following `rule` (borrowed). request_id (borrowed) may be NULL. On a
 * result that cannot become a lead returns NULL and writes the reason into why. */
json_t *amo_lead_build(amo *a, const json_t *rule, const json_t *params, const char *request_id,
                       char *why, size_t whylen);

/* --- api.c ---------------------------------------------------------------------------------- */
int amo_api_register(amo *a);
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
