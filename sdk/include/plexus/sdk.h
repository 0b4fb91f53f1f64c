/* Plexus plugin SDK, ABI 1.x: the only header a plugin includes.
 *
 * A plugin is a shared object exporting one symbol, PX_PLUGIN_ENTRY, which receives the host's
 * function table and returns the plugin's descriptor. The plugin never links against host symbols:
 * every service (events, deliveries, timers, HTTP, key/value state, metrics, thread hand-off) is a
 * function pointer in px_host_api. No libuv, curl or yaml type crosses this boundary; json_t (jansson)
 * is the one foreign type, and plugins must link the shared libjansson.
 *
 * Threads: every callback runs on the host's loop thread, and every host function must be called
 * from it, except px_host_api.post, which any thread may call.
 *
 * Ownership words used below: "borrowed" (valid for the call only), "steals" (the callee owns it
 * from now on, even on failure), "new reference" (caller must json_decref / free), "valid until X".
 *
 * Shared libraries: a plugin runs inside the host's process and shares its libjansson (one copy,
 * one allocator): never call json_set_alloc_funcs, and hand the host only values jansson made.
 * It may link libc, libm, libpthread, libjansson and libraries of its own that start no
 * process-wide machinery (no signal handlers, no atexit, no global init that cannot be repeated).
 *
 * Growth: minor versions only append fields at the end of px_host_api and px_plugin_desc. A plugin
 * declares the minor it needs (abi_minor; PX_PLUGIN_DESC_INIT says this header's), and a host
 * refuses a plugin that needs a newer one. A plugin that also runs on older 1.x hosts declares
 * the oldest minor it supports and checks PX_HAS(px_host_api, host, field) before calling a
 * newer function. What each minor added:
 *   1.1: event_create_text, event_payload_text.
 *   1.2: the hints PX_HINT_DEADLINE_MS and PX_HINT_FAIL_ON_TIMEOUT (a 1.1 host answers
 *        event_set_hint with PX_EINVAL); PX_ECONFLICT; set_error, vlog, kv_get_versioned, kv_cas,
 *        lock_acquire, lock_release, cluster, sha256, hmac_sha256, ct_equal, retry_after_ms,
 *        event_payload_const, delivery_params_const; px_plugin_desc.option_size and check.
 * px_option never grows: a later minor that needs more per option says so in option_size, which
 * the host walks the table by.
 */
#ifndef PLEXUS_SDK_H
#define PLEXUS_SDK_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PX_SDK_ABI_MAJOR 1
#define PX_SDK_ABI_MINOR 2
#define PX_PLUGIN_ENTRY px_plugin_entry_v1 /* the symbol carries the major */
#define PX_PLUGIN_ENTRY_NAME "px_plugin_entry_v1"

/* Opaque handles, all owned by the host. */
typedef struct px_plugin_ctx px_plugin_ctx;   /* one per loaded generation of an instance */
typedef struct px_event px_event;             /* ref-counted, immutable once emitted */
typedef struct px_delivery px_delivery;       /* one attempt to hand an event to a sink */
typedef struct px_timer px_timer;
typedef struct px_http_request px_http_request;   /* an incoming request on a plugin route */
typedef struct px_http_response px_http_response; /* the answer to an outgoing request */
typedef struct px_http_call px_http_call;         /* an outgoing request in progress */

/* Result codes shared by host and plugins. */
enum {
    PX_OK = 0,
    PX_ERETRY = -5001,  /* complete(): try again later (after retry_after_ms if non-zero) */
    PX_EREJECT = -5002, /* complete(): never deliverable; goes to the dead letters */
    PX_EINVAL = -5003,  /* a host call got a bad argument */
    PX_EBUSY = -5004,   /* back-pressure: the spool cannot take more now; retry upstream later */
    PX_ESTATE = -5005,  /* the call is not allowed in this state (e.g. after stop) */
    PX_ENOENT = -5006,  /* no such key / route / item */
    PX_ECONFLICT = -5007, /* compare-and-set: the value changed since it was read (1.2) */
};

enum px_log_level { PX_LOG_ERROR = 0, PX_LOG_WARN = 1, PX_LOG_INFO = 2, PX_LOG_DEBUG = 3 };

enum px_kind { PX_KIND_SOURCE = 1u << 0, PX_KIND_SINK = 1u << 1 };

/* Declared option types. The host validates the YAML against them and hands init() a clean JSON
 * object with every declared option present (defaults applied) and no undeclared key. */
enum px_option_type {
    PX_OPT_STRING = 1,   /* JSON string */
    PX_OPT_INT = 2,      /* JSON integer */
    PX_OPT_NUMBER = 3,   /* JSON real or integer */
    PX_OPT_BOOL = 4,     /* JSON true/false */
    PX_OPT_DURATION = 5, /* "250ms", "2s", "5m", "1h" or a number of ms; given to init as integer ms */
    PX_OPT_SIZE = 6,     /* "512", "64KiB", "1MiB", "1GiB"; given to init as integer bytes */
    PX_OPT_LIST = 7,     /* a YAML sequence of strings; JSON array of strings */
    PX_OPT_OBJECT = 8,   /* any YAML mapping, converted as-is; JSON object */
};

/* One declared option. The host walks the table by px_plugin_desc.option_size (1.2; a descriptor
 * without it is walked by this struct's 1.0 size), so a later minor may append fields here. */
typedef struct px_option {
    const char *name;          /* static storage; NULL name ends the table */
    uint32_t type;             /* enum px_option_type */
    uint32_t flags;            /* PX_OPT_REQUIRED | PX_OPT_SECRET */
    const char *default_value; /* written as in YAML ("30s", "true", "10"); NULL = none (JSON null) */
    const char *doc;           /* one line, for `plexus plugins --describe` */
} px_option;

#define PX_OPT_REQUIRED (1u << 0)
#define PX_OPT_SECRET (1u << 1) /* value never printed: logs, status, errors */

/* Event string fields settable by the source before emit. */
enum px_event_field {
    PX_EVENT_ID = 1,         /* default: a host-generated unique id */
    PX_EVENT_DEDUPE_KEY = 2, /* a repeat of this key within the dedupe window is dropped */
    PX_EVENT_SUBJECT = 3,    /* free text for logs and status, e.g. an upstream message id */
};

/* Delivery hints a source attaches; they can only narrow the pipeline's retry policy. A host
 * that does not know a hint returns PX_EINVAL from event_set_hint (the event is still valid).
 * 1.0: MAX_ATTEMPTS, TIMEOUT_MS, BACKOFF_MS; 1.2: DEADLINE_MS, FAIL_ON_TIMEOUT. */
enum px_event_hint {
    PX_HINT_MAX_ATTEMPTS = 1, /* value: attempts, >= 1 */
    PX_HINT_TIMEOUT_MS = 2,   /* value: per-attempt timeout */
    PX_HINT_BACKOFF_MS = 3,   /* value: appends one step to the backoff list (capped by the
                                 pipeline's max_backoff); last repeats */
    PX_HINT_DEADLINE_MS = 4,  /* value: unix ms after which no retry starts: a failed attempt
                                 whose next try would start later goes to the dead letters. The
                                 first attempt always runs. */
    PX_HINT_FAIL_ON_TIMEOUT = 5, /* value: 1 = an attempt that times out goes to the dead letters
                                    at once, whatever attempts are left; 0 = retried (default) */
};

/* Runs once, on the loop, after emit() (never inside it). status == PX_OK: the spool holds the
 * event (or no pipeline wanted it): acknowledge upstream now. status < 0 (PX_EBUSY...): it was not
 * kept; do not acknowledge, let upstream retry. */
typedef void (*px_persisted_cb)(int status, void *arg);

/* Incoming HTTP request on a route the plugin registered. The plugin must answer it exactly once
 * with http_respond, now or later on the loop; the request is valid until then. */
typedef void (*px_http_handler)(px_http_request *req, void *arg);

/* The answer to http_request. status: the HTTP status, or < 0 when no answer came (timeout,
 * connection refused...; then resp is NULL and error says why). resp is valid for the call only. */
typedef void (*px_http_response_cb)(int status, const px_http_response *resp, const char *error,
                                    void *arg);

#define PX_ROUTE_PREFIX (1u << 0) /* path matches itself and anything under "path/" */

/* An outgoing HTTP request. Every pointer is borrowed for the http_request() call only. */
typedef struct px_http_options {
    uint32_t size;               /* sizeof(px_http_options) as the plugin built it */
    const char *method;          /* "GET", "POST"...; NULL = GET, or POST when body is set */
    const char *url;             /* absolute http:// or https:// URL */
    const char *const *headers;  /* "Name: value" strings, NULL-terminated; may be NULL */
    const char *body;            /* may be NULL */
    size_t body_len;
    uint32_t timeout_ms;         /* whole request; 0 = 30 s */
    const char *aws_sigv4;       /* e.g. "aws:amz:eu-west-1:sqs" to sign with SigV4; NULL = none */
    const char *aws_key;         /* SigV4 access key id */
    const char *aws_secret;      /* SigV4 secret key */
    uint32_t flags;              /* PX_HTTP_INSECURE: skip TLS verification (tests only) */
} px_http_options;

#define PX_HTTP_INSECURE (1u << 0)

#define PX_SHA256_LEN 32 /* bytes of a SHA-256 digest or HMAC-SHA256 (1.2) */

/* What px_host_api.cluster reports (1.2). Set size before the call; the host fills the fields
 * that fit and leaves the rest. */
typedef struct px_cluster_info {
    uint32_t size;        /* sizeof(px_cluster_info) as the plugin built it */
    uint32_t live_hosts;  /* hosts sharing the store whose heartbeat holds, this one included;
                             >= 1. E.g. divide a rate limit by it */
    uint32_t host_index;  /* this host's place among the live hosts ordered by id, 0-based
                             (< live_hosts); e.g. to split work by a hash modulo live_hosts */
    char host_id[128];    /* this host's id, NUL-terminated (cut to fit) */
} px_cluster_info;

typedef struct px_host_api {
    uint32_t abi_major, abi_minor, size; /* size = sizeof(px_host_api) as the host built it */

    /* Logging, prefixed with the instance name. Secret option values are masked by the host. */
    void (*log)(px_plugin_ctx *ctx, int level, const char *fmt, ...)
#if defined(__GNUC__)
        __attribute__((format(printf, 3, 4)))
#endif
        ;
    /* Name of this instance (valid until destroy). */
    const char *(*instance_name)(px_plugin_ctx *ctx);

    /* --- Events (sources) --------------------------------------------------------------- */
    /* New event of `type` (borrowed, e.g. "ezzing.user_created") carrying `payload` (steals).
     * Returns NULL only on a bad argument. The caller owns the event until emit(). */
    px_event *(*event_create)(px_plugin_ctx *ctx, const char *type, json_t *payload);
    /* Sets a string field (value borrowed, copied). Only before emit. */
    int (*event_set)(px_event *ev, int field, const char *value);
    int (*event_set_hint)(px_event *ev, int hint, int64_t value);
    /* Adds metadata (e.g. an HTTP header or SQS attribute); both strings borrowed, copied. */
    int (*event_set_meta)(px_event *ev, const char *key, const char *value);
    /* Hands `ev` to the router (steals it, even on failure). cb (may be NULL) runs later exactly
     * once with the outcome; it is never called if emit returns < 0. Other instances' sinks may
     * get the event before cb runs, even before emit returns (the first attempt does not wait for
     * the commit); the emitting instance's own deliver never runs inside its emit. */
    int (*emit)(px_plugin_ctx *ctx, px_event *ev, px_persisted_cb cb, void *arg);
    /* Frees an event that was created but not emitted. */
    void (*event_discard)(px_event *ev);

    /* Event getters (sinks; also sources before emit). Strings valid while the event lives. */
    const char *(*event_type)(const px_event *ev);
    const char *(*event_id)(const px_event *ev);
    const char *(*event_source)(const px_event *ev);       /* instance that emitted it */
    const char *(*event_meta)(const px_event *ev, const char *key); /* NULL when absent */
    int64_t (*event_time_ms)(const px_event *ev);           /* unix ms at emit */
    /* Borrowed; never modify it (no json_object_set, no json_array_append...): several sinks
     * share one payload, and the spool may keep its text. 1.2: event_payload_const. */
    json_t *(*event_payload)(const px_event *ev);

    /* --- Deliveries (sinks) ------------------------------------------------------------- */
    /* Everything a delivery hands out is valid until complete(). */
    const px_event *(*delivery_event)(px_delivery *d);
    const char *(*delivery_action)(px_delivery *d);   /* the pipeline target's `action`, or "" */
    /* Borrowed: the mapped `with`, an object; never modify it (1.2: delivery_params_const). */
    json_t *(*delivery_params)(px_delivery *d);
    const char *(*delivery_pipeline)(px_delivery *d);
    uint32_t (*delivery_attempt)(px_delivery *d);     /* 1 for the first attempt */
    /* Finishes a delivery: PX_OK, PX_ERETRY (after retry_after_ms, 0 = policy backoff) or
     * PX_EREJECT. reason (borrowed) is kept in logs and the dead letters; on PX_OK it may carry
     * the result, e.g. "id=1234". d is invalid after the call: a second complete is refused
     * (logged, nothing changes) and the getters return NULL. */
    void (*complete)(px_delivery *d, int status, const char *reason, uint64_t retry_after_ms);

    /* --- Loop services ------------------------------------------------------------------ */
    /* Calls cb(arg) on the loop thread. The one host function callable from any thread.
     * Returns < 0 only when the instance is being destroyed. */
    int (*post)(px_plugin_ctx *ctx, void (*cb)(void *arg), void *arg);
    /* Calls cb after `ms`, then every repeat_ms if non-zero. *out (owned by the host) stays
     * valid until timer_stop(), which must be called once for every timer, even a fired one-shot.
     * The host stops any timer left at destroy. */
    int (*timer_start)(px_plugin_ctx *ctx, uint64_t ms, uint64_t repeat_ms, void (*cb)(void *arg),
                       void *arg, px_timer **out);
    void (*timer_stop)(px_timer *t);

    /* --- HTTP server routes ------------------------------------------------------------- */
    /* Routes `method` (NULL = any) + `path` (both borrowed) on the host's HTTP listener to cb.
     * Routes belong to this generation; on reload the new generation's routes replace them
     * without refusing a connection. */
    int (*http_route)(px_plugin_ctx *ctx, const char *method, const char *path, uint32_t flags,
                      px_http_handler cb, void *arg);
    const char *(*http_req_method)(px_http_request *req);
    const char *(*http_req_path)(px_http_request *req);   /* without the query string */
    const char *(*http_req_query)(px_http_request *req);  /* after '?', or "" */
    const char *(*http_req_header)(px_http_request *req, const char *name); /* case-insensitive */
    /* The body, *len bytes (len may be NULL); NUL-terminated after those bytes, so a text body
     * can be read as a string (a body holding NUL bytes is still *len long). Never NULL. */
    const char *(*http_req_body)(px_http_request *req, size_t *len);
    /* Adds a response header (borrowed, copied) before http_respond. */
    int (*http_set_header)(px_http_request *req, const char *name, const char *value);
    /* Answers and releases req. content_type NULL = "application/json". body borrowed. */
    void (*http_respond)(px_http_request *req, int status, const char *content_type,
                         const char *body, size_t len);

    /* --- HTTP client -------------------------------------------------------------------- */
    /* Starts a request; cb runs once on the loop. *out (may be NULL) allows http_cancel until cb
     * has run. The loop never blocks on it. */
    int (*http_request)(px_plugin_ctx *ctx, const px_http_options *opt, px_http_response_cb cb,
                        void *arg, px_http_call **out);
    void (*http_cancel)(px_http_call *call); /* cb runs with status < 0 ("cancelled") */
    const char *(*http_resp_header)(const px_http_response *resp, const char *name);
    const char *(*http_resp_body)(const px_http_response *resp, size_t *len);

    /* --- Per-instance key/value state, durable (SQLite), survives restart and reload ----- */
    /* Returns a new reference, or NULL when absent. */
    json_t *(*kv_get)(px_plugin_ctx *ctx, const char *key);
    /* Stores value (borrowed) atomically and durably before returning; NULL deletes. */
    int (*kv_set)(px_plugin_ctx *ctx, const char *key, const json_t *value);

    /* --- Metrics, exported as plexus_plugin_<name>{instance="..."[,labels]} ---------------- */
    /* labels: NULL or `key="value",key2="value2"` (borrowed). */
    void (*counter_add)(px_plugin_ctx *ctx, const char *name, const char *labels, double delta);
    void (*gauge_set)(px_plugin_ctx *ctx, const char *name, const char *labels, double value);

    /* --- Lifecycle ---------------------------------------------------------------------- */
    /* A plugin whose descriptor has drain() calls this once its in-flight work is finished. */
    void (*drained)(px_plugin_ctx *ctx);

    /* --- Poison input (sources) --------------------------------------------------------- */
    /* Stores an upstream message the source cannot turn into an event (not JSON, no type...)
     * in the dead letters: raw (borrowed, len bytes, kept byte for byte), reason (borrowed),
     * meta (borrowed, an object of strings such as upstream ids and attributes; may be NULL).
     * cb as for emit: once it runs with PX_OK the message is safe, so acknowledge it upstream
     * (e.g. delete it from the queue) and it no longer blocks anything. */
    int (*dead_letter)(px_plugin_ctx *ctx, const char *raw, size_t len, const json_t *meta,
                       const char *reason, px_persisted_cb cb, void *arg);

    /* Optional, sources: the exact JSON text `payload` was parsed from (e.g. a webhook body),
     * borrowed until emit() returns or the event is discarded. The spool stores this text as is
     * instead of serialising the payload again, which is most of the cost of persisting an
     * event. The text must parse to the payload given to event_create. */
    int (*event_set_raw)(px_event *ev, const char *json, size_t len);

    /* --- ABI 1.1 ---------------------------------------------------------------------- */
    /* Sources: a new event whose payload is the JSON text json (len bytes, borrowed, copied), as
     * json_loadb(json, len, flags, error) would parse it. The text is checked now but parsed only
     * when something needs its values (a pipeline condition or mapping, a sink calling
     * event_payload), so an event that is only moved along is never built as a tree. Returns
     * NULL when the text is not JSON (error, which may be NULL, filled as json_loadb fills it) or
     * on a bad argument (error->text says which). */
    px_event *(*event_create_text)(px_plugin_ctx *ctx, const char *type, const char *json,
                                   size_t len, size_t flags, json_error_t *error);
    /* Sinks (and sources before emit): the payload as JSON text, NUL-terminated, valid while the
     * event lives; *len (len may be NULL) its length. Byte for byte the text the source gave
     * (event_create_text, event_set_raw), which may hold insignificant whitespace and newlines;
     * otherwise a compact serialisation. Cheaper than serialising event_payload again. */
    const char *(*event_payload_text)(const px_event *ev, size_t *len);

    /* --- ABI 1.2 ---------------------------------------------------------------------- */
    /* The reason init, start or the descriptor's check is failing, in words for the operator:
     * `plexus check` (check), `plexus run`, `plexus reload` and /admin/status show e.g.
     * "init failed: <reason> (<code>)" instead of the code alone. Call it, then return < 0. Formatted like printf; masked like a
     * log line (secret option values become ***), and also logged at error level. Outside those
     * calls it is only logged. The last call wins. */
    void (*set_error)(px_plugin_ctx *ctx, const char *fmt, ...)
#if defined(__GNUC__)
        __attribute__((format(printf, 2, 3)))
#endif
        ;
    /* log with a va_list, for a plugin's own logging wrapper. ap is consumed as vprintf does. */
    void (*vlog)(px_plugin_ctx *ctx, int level, const char *fmt, va_list ap);

    /* Versioned state, for read-modify-write that several hosts (or generations) may race on.
     * kv_get_versioned: as kv_get; *version (not NULL) gets the value's version: > 0, changed
     * by every kv_set and kv_cas, 0 when the key is absent. kv_cas: stores value (borrowed; NULL
     * deletes) only when the key's version is still expected_version (0 = only when absent), and
     * writes the new version to *new_version (may be NULL; 0 after a delete). Returns PX_OK,
     * PX_ECONFLICT when the version moved (nothing changed: read again and redo), PX_EBUSY when
     * the store is unreachable (try later), PX_EINVAL. On the SQLite store the versions are
     * local and a conflict comes only from this host's own writes. */
    json_t *(*kv_get_versioned)(px_plugin_ctx *ctx, const char *key, int64_t *version);
    int (*kv_cas)(px_plugin_ctx *ctx, const char *key, int64_t expected_version,
                  const json_t *value, int64_t *new_version);

    /* Named leases: a duty only one host may do at a time (token refresh, webhook registration,
     * a scheduled sync). The name (borrowed, copied) is scoped to the instance: the same
     * instance name on every host sharing the store contends for it; other instances never do.
     * The holder is this generation on this host, so during a reload the new generation gets the
     * lease only once the old one lets go (lock_release in stop, or at the latest when it is
     * unloaded). The host keeps trying while another holder has it, renews it every ttl_ms / 3
     * while held, and calls cb(arg, status) on the loop, never inside lock_acquire:
     *   PX_OK        the lease is now held: start the duty;
     *   PX_ECONFLICT the lease is lost (another holder took it, or it could not be renewed for
     *                2/3 of ttl_ms, so another host may take it at the end of ttl_ms): stop the
     *                duty now. The host goes on trying, and calls cb with PX_OK again when it
     *                holds the lease once more.
     * It runs until lock_release or the generation is unloaded; no cb runs after either.
     * ttl_ms >= 30; a crash of this host frees the lease after ttl_ms. On the SQLite store the
     * lease is local to this host (still exclusive between its generations). Returns PX_OK,
     * PX_EINVAL (no name, ttl too short), PX_ESTATE (this generation already asked for it). */
    int (*lock_acquire)(px_plugin_ctx *ctx, const char *name, uint32_t ttl_ms,
                        void (*cb)(void *arg, int status), void *arg);
    /* Gives up name: released now if held; no cb runs after. PX_ENOENT when not asked for. */
    int (*lock_release)(px_plugin_ctx *ctx, const char *name);

    /* The hosts sharing the store: fills *info (caller's memory; set info->size first) as far as
     * info->size allows. One store call: ask when needed (e.g. every minute), not per event.
     * Returns PX_OK, or < 0 (PX_EBUSY: the store is unreachable; *info then says 1 host). */
    int (*cluster)(px_plugin_ctx *ctx, px_cluster_info *info);

    /* Digests for webhook signatures (libcrypto's). out: caller's memory, PX_SHA256_LEN bytes.
     * key and data borrowed; a NULL pointer is allowed with length 0. Any thread. */
    void (*sha256)(const void *data, size_t len, uint8_t *out);
    void (*hmac_sha256)(const void *key, size_t key_len, const void *data, size_t len,
                        uint8_t *out);
    /* 1 when given (glen bytes, e.g. a signature from a request) equals want (wlen bytes, the
     * expected one) in time that depends only on wlen; 0 otherwise. Any thread. */
    int (*ct_equal)(const void *given, size_t glen, const void *want, size_t wlen);
    /* A Retry-After value (borrowed: "120", or an HTTP date such as
     * "Wed, 21 Oct 2015 07:28:00 GMT") as milliseconds from now: 0 for a date already past,
     * capped at 7 days; -1 when value is NULL or neither form. Pass it to complete() as
     * retry_after_ms, e.g. retry_after_ms(http_resp_header(resp, "Retry-After")). */
    int64_t (*retry_after_ms)(const char *value);

    /* event_payload and delivery_params, typed as what they are: read-only. */
    const json_t *(*event_payload_const)(const px_event *ev);
    const json_t *(*delivery_params_const)(px_delivery *d);

    /* ABI 1.3+: append below this line only */
} px_host_api;

typedef struct px_plugin_desc {
    uint32_t abi_major, abi_minor, size; /* stamped by PX_PLUGIN_DESC_INIT */
    uint32_t jansson_major;              /* JANSSON_MAJOR_VERSION; host refuses a mismatch */
    uint32_t kind;                       /* PX_KIND_SOURCE | PX_KIND_SINK */
    const char *name;                    /* must equal the file name <name>.so; static */
    const char *version;                 /* e.g. "1.2.0"; static */
    const char *description;             /* one line; static */
    const px_option *options;            /* declared config keys, { NULL }-terminated; static */

    /* Creates the instance state from config (borrowed, valid until destroy returns; validated
     * per options, so pointers to its strings may be kept). Register HTTP routes here or in
     * start. Returns 0, or < 0 with a reason logged through host->log. */
    int (*init)(px_plugin_ctx *ctx, const json_t *config, void **state);
    /* Starts producing (sources) / accepting deliveries (sinks). */
    int (*start)(void *state);
    /* Sinks: a delivery to perform, asynchronously; finish it with host->complete. */
    void (*deliver)(void *state, px_delivery *d);
    /* Stops taking new work: sources stop polling. Pending work may still finish. */
    void (*stop)(void *state);
    /* Optional. Finish in-flight work, close own resources, then call host->drained(ctx)
     * (possibly from inside drain). The host bounds the wait; deliveries still open then are
     * retried elsewhere. */
    void (*drain)(void *state);
    /* Frees everything init made. No host call is allowed after it returns. Just before it, the
     * host unloads the generation's resources in this order: requests it still holds are
     * answered 503 (do not touch them any more), outgoing HTTP calls are cancelled (their
     * callbacks run now, with status < 0), then destroy; timers left are stopped after it. */
    void (*destroy)(void *state);
    /* Optional hot-reload hand-over: the old generation exports (new reference), the new one
     * imports (borrowed) before start. */
    json_t *(*export_state)(void *state);
    int (*import_state)(void *state, const json_t *st);

    /* --- ABI 1.2 ---------------------------------------------------------------------- */
    /* sizeof(px_option) as the plugin built it (PX_PLUGIN_DESC_INIT stamps it); the host walks
     * options by it. 0 or absent (1.0, 1.1): the 1.0 size. */
    uint32_t option_size;
    /* Optional. Judges config (borrowed, as init gets it) without acquiring anything: no file,
     * thread, route, timer or request; only log, vlog, set_error, instance_name and the helpers
     * may be called, and ctx is valid for the call only. Returns 0, or < 0 after set_error.
     * `plexus check` calls it (it starts nothing, so it never calls init), and so do start-up and
     * reload before init: a configuration it refuses is reported at the instance's line. */
    int (*check)(px_plugin_ctx *ctx, const json_t *config);

    /* ABI 1.3+: append below this line only */
} px_plugin_desc;

#define PX_PLUGIN_DESC_V1_0_SIZE (offsetof(px_plugin_desc, import_state) + sizeof(void *))
#define PX_OPTION_V1_0_SIZE (offsetof(px_option, doc) + sizeof(const char *))

#define PX_PLUGIN_DESC_INIT                                                                   \
    .abi_major = PX_SDK_ABI_MAJOR, .abi_minor = PX_SDK_ABI_MINOR,                             \
    .size = sizeof(px_plugin_desc), .jansson_major = JANSSON_MAJOR_VERSION,                   \
    .option_size = sizeof(px_option)

/* True when struct `p` (of type T, with a `size` field) is large enough to hold field f. */
#define PX_HAS(T, p, f) (offsetof(T, f) + sizeof(((T *)0)->f) <= (p)->size)

#if defined(__GNUC__)
#define PX_SDK_EXPORT __attribute__((visibility("default")))
#else
#define PX_SDK_EXPORT
#endif

/* The one symbol a plugin exports. host is valid for the life of the process (keep it in a
 * static). Returns the plugin's descriptor (static storage). */
PX_SDK_EXPORT const px_plugin_desc *PX_PLUGIN_ENTRY(const px_host_api *host);

#ifdef __cplusplus
}
#endif

#endif /* PLEXUS_SDK_H */
