/* amocrm core: the bottom layer of the plugin, shared by every other file. One instance serves
 * one connected amoCRM account; its state is one struct amocrm, declared here. The files form
 * layers that only call downward:
 *
 *   amocrm.c                     descriptor, life cycle, the sink
 *   api.c                        the admin API's routes
 *   account.c  rules.c  lead.c   account and OAuth, rules, the leads/complex body
 *   cache.c                      cached users/pipelines/steps/fields/tags
 *   client.c                     raw HTTP, tokens and their refresh, rate-limited API calls
 *   core.c                       this header: the state, small helpers, held admin requests
 *
 * Everything runs on the host loop thread. */
#ifndef AMOCRM_CORE_H
#define AMOCRM_CORE_H

#include <stddef.h>
#include <stdint.h>

#include <plexus/sdk.h>

extern const px_host_api *amocrm_host; /* set once by the entry point; valid for the process */

/* Outcomes of an amoCRM API call (client.h) that are not an HTTP status. */
enum {
    AMOCRM_ENOACCOUNT = -1, /* no account connected (never, or deleted) */
    AMOCRM_ESTALE = -2,     /* amoCRM refused the refresh token: the account must reconnect */
    AMOCRM_ENET = -3,       /* no HTTP answer (connection, timeout); or the token is unusable now */
    AMOCRM_EQUEUE = -4,     /* waited longer than queue_timeout for a rate-limit slot */
    AMOCRM_ESTOP = -5,      /* the instance is being destroyed: free the owner, call no host API */
};

typedef struct amocrm amocrm;
typedef struct amocrm_http amocrm_http;
typedef struct amocrm_call amocrm_call;
typedef struct amocrm_sync amocrm_sync;

/* An admin request answered later (after a call to amoCRM). The instance answers every held
 * request with 503 when it stops, because the host fails a stopped generation's requests itself
 * before running the cancelled calls' callbacks: an answer after that would touch a released
 * request. */
typedef struct amocrm_hold {
    px_http_request *req; /* NULL once answered */
    struct amocrm_hold *prev, *next;
} amocrm_hold;

/* Cached collections, in this order (kv keys "cache.users"...). */
enum {
    AMOCRM_C_USERS,
    AMOCRM_C_PIPELINES,
    AMOCRM_C_STEPS,
    AMOCRM_C_FIELDS,
    AMOCRM_C_TAGS,
    AMOCRM_C_COUNT
};

struct amocrm {
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
    int refreshing;         /* a refresh is asked for: waiting on the cluster lock, or sent */
    int refresh_locked;     /* the cluster lock "token-refresh" is held */
    const char *refresh_why; /* static text: why the refresh was asked for */
    uint64_t refresh_gen;   /* token_gen when it was asked for */
    int refresh_failures;
    px_timer *refresh_timer;

    /* cached collections (copies of kv "cache.*"): {"next_id", "synced_at", "items"} */
    json_t *cache[AMOCRM_C_COUNT];
    json_t *rules; /* "<AccountID>:<QuizID>" -> rule (copy of kv "rules"), every account's */

    /* rate limiter and queued API calls */
    int64_t next_send_ms, paused_until_ms; /* monotonic */
    px_timer *pump_timer;
    amocrm_call *q_head, *q_tail;
    amocrm_http *http; /* in-flight raw requests (doubly linked) */
    amocrm_sync *syncs;

    /* The store is shared with the other hosts running this instance: the versions of the copies
     * above as last read or written (kv_get_versioned / kv_cas; 0 = never read), and when the
     * copies were last compared with the store (monotonic ms). */
    int64_t ver_account, ver_tokens, ver_rules, ver_cache[AMOCRM_C_COUNT];
    int64_t shared_read_ms;
    double rate_share;      /* this host's share of rate: rate / live hosts */
    int64_t cluster_read_ms; /* monotonic: when the live hosts were last counted */
    px_timer *cluster_timer; /* counts the live hosts and re-reads the shared state */

    amocrm_hold *holds; /* unanswered admin requests */
    size_t deliveries;  /* open deliveries */
    int stopping, draining, destroying;
    int closing; /* calls were cancelled after stop: the host is unloading this generation */
};

/* --- helpers (core.c) ------------------------------------------------------------------------ */
int64_t amocrm_now_ms(void);  /* unix time, ms */
int64_t amocrm_mono_ms(void); /* monotonic, ms */
/* Parses a JSON integer or a string of decimal digits (optionally signed) into *out. 0 or -1. */
int amocrm_json_int(const json_t *v, int64_t *out);
/* ISO 8601 UTC text of unix ms into buf (>= 32 bytes). */
void amocrm_iso_time(int64_t ms, char *buf, size_t len);
/* Answers req with `status` and a JSON string body (the seed's message bodies); msg borrowed. */
void amocrm_respond_msg(px_http_request *req, int status, const char *msg);
/* Answers req with `status` and `body` (borrowed) as JSON. */
void amocrm_respond_json(px_http_request *req, int status, const json_t *body);
/* Value of `name` (borrowed) in the query string `query` (borrowed), percent-decoded, as a new
 * string (owned by caller; free), or NULL when absent. */
char *amocrm_query_get(const char *query, const char *name);

/* --- the shared store (core.c) ------------------------------------------------------------- */
/* Replaces *slot (owned) by the stored value of key when its version is not *version, and
 * updates *version. A value that cannot be read (absent, or the store unreachable) leaves both
 * alone. Returns 1 when *slot was replaced. */
int amocrm_kv_reread(amocrm *a, const char *key, json_t **slot, int64_t *version);
/* Read-modify-write of key against the other hosts: fn gets the stored value (borrowed, NULL
 * when absent) and returns the value to store (new reference; NULL = give up, nothing stored);
 * it is called again on the newest value while another host wrote in between (compare-and-set).
 * On success *out (may be NULL) gets the stored value (new reference) and *version (may be
 * NULL) its version. Returns 0, 1 when fn gave up, or < 0 (store error). */
int amocrm_kv_update(amocrm *a, const char *key, json_t *(*fn)(const json_t *cur, void *arg),
                     void *arg, json_t **out, int64_t *version);
/* Brings account, rules and cached lists up to what the store holds (another host may have
 * changed them): at most once a second unless force. The token pair is re-read separately,
 * before each use (client.c). Returns 1 when the account record changed. */
int amocrm_shared_sync(amocrm *a, int force);

/* --- held admin requests (core.c) ----------------------------------------------------------- */
/* Holds req (borrowed until answered) for a later answer; returns the hold, owned by the caller
 * and released by amocrm_hold_answer or amocrm_hold_drop. */
amocrm_hold *amocrm_hold_req(amocrm *a, px_http_request *req);
/* Answers the held request (if still open) with a JSON string msg (borrowed), frees h. */
void amocrm_hold_answer(amocrm *a, amocrm_hold *h, int status, const char *msg);
/* Frees h without answering (the instance is going away). */
void amocrm_hold_drop(amocrm *a, amocrm_hold *h);
/* Answers every held request with 503; their holds stay with their owners, now inert. */
void amocrm_hold_release_all(amocrm *a);

#endif
