/* sqs: a small Amazon SQS client speaking the JSON protocol (POST / with X-Amz-Target) on the
 * host's HTTP client, signed with SigV4. It owns request framing, response and error parsing and
 * the retry classification of errors; the caller owns scheduling (timers, backoff, pollers).
 * Shared by the plugins that consume SQS queues. Loop thread only, like every host call. */
#ifndef PX_PLUGINS_SQS_H
#define PX_PLUGINS_SQS_H

#include <stddef.h>
#include <stdint.h>

#include <plexus/sdk.h>

typedef struct px_sqs px_sqs;           /* one endpoint + credentials */
typedef struct px_sqs_call px_sqs_call; /* one request in flight */

/* SQS limits the client enforces (clamps) on requests. */
#define PX_SQS_MAX_BATCH 10u   /* MaxNumberOfMessages, DeleteMessageBatch entries */
#define PX_SQS_MAX_WAIT_S 20u  /* WaitTimeSeconds */
#define PX_SQS_MAX_VISIBILITY_S 43200u

typedef struct px_sqs_config {
    const char *region;        /* borrowed, copied; required, e.g. "eu-west-1" */
    const char *endpoint;      /* borrowed, copied; NULL or "" = https://sqs.<region>.amazonaws.com */
    const char *access_key;    /* borrowed, copied; required */
    const char *secret_key;    /* borrowed, copied; required */
    const char *session_token; /* borrowed, copied; NULL or "" = none (sent as X-Amz-Security-Token) */
    uint32_t http_flags;       /* PX_HTTP_INSECURE (tests only) or 0 */
} px_sqs_config;

/* What went wrong with a request, and so what the caller should do about it. */
enum px_sqs_error_kind {
    PX_SQS_OK = 0,
    PX_SQS_ENET = 1,       /* no answer: connection refused/reset, timeout. Retry with backoff */
    PX_SQS_ETHROTTLE = 2,  /* throttling codes or 429. Retry with (longer) backoff */
    PX_SQS_ESERVER = 3,    /* 5xx or an unreadable answer. Retry with backoff */
    PX_SQS_ECLIENT = 4,    /* request refused (no such queue, access denied, bad value): retrying
                            * the same request will not help until the configuration changes */
    PX_SQS_ECANCELLED = 5, /* px_sqs_cancel or px_sqs_destroy */
};

typedef struct px_sqs_error {
    int kind;            /* enum px_sqs_error_kind */
    int http_status;     /* 0 when no answer came */
    const char *code;    /* e.g. "QueueDoesNotExist" (the part of __type after '#'); "" if none */
    const char *message; /* human text from the answer or the transport; "" if none */
} /* strings valid for the callback only */ px_sqs_error;

/* Creates a client for `host` and instance `ctx` (both borrowed, valid until px_sqs_destroy).
 * On success stores the client in *out (owned by caller; px_sqs_destroy) and returns 0; returns
 * PX_EINVAL when region, access_key or secret_key is missing or the endpoint is not http(s). */
int px_sqs_create(const px_host_api *host, px_plugin_ctx *ctx, const px_sqs_config *cfg,
                  px_sqs **out);

/* Frees the client. Requests still in flight are cancelled and their callbacks are NOT called.
 * NULL is a no-op. */
void px_sqs_destroy(px_sqs *c);

/* The base URL requests go to (valid until px_sqs_destroy), e.g. "http://127.0.0.1:4566/". */
const char *px_sqs_endpoint(const px_sqs *c);

/* Number of requests in flight. */
size_t px_sqs_pending(const px_sqs *c);

/* Cancels a request whose callback has not run yet; the callback then runs once, later on the
 * loop, with kind PX_SQS_ECANCELLED. NULL is a no-op. */
void px_sqs_cancel(px_sqs_call *call);

/* --- Generic action ------------------------------------------------------------------------ */

/* err->kind == PX_SQS_OK: result is the answer (borrowed, valid for the call; an object, maybe
 * empty). Otherwise result is NULL. */
typedef void (*px_sqs_result_cb)(const px_sqs_error *err, json_t *result, void *arg);

/* Calls AmazonSQS.<action> (borrowed) with `params` (borrowed, a JSON object) as the body.
 * timeout_ms 0 = 15 s. cb runs exactly once, later, on the loop (never inside this call) unless
 * this returns < 0. *out (may be NULL) stays valid until cb runs. Returns 0 or PX_EINVAL /
 * PX_ESTATE from the host. */
int px_sqs_request(px_sqs *c, const char *action, const json_t *params, uint32_t timeout_ms,
                   px_sqs_result_cb cb, void *arg, px_sqs_call **out);

/* --- ReceiveMessage ------------------------------------------------------------------------ */

typedef struct px_sqs_message {
    const char *message_id;     /* "" if absent */
    const char *receipt_handle; /* what deletes it or changes its visibility */
    const char *md5_of_body;    /* "" if absent */
    const char *body;           /* the raw body, not NUL-safe: use body_len */
    size_t body_len;
    json_t *attributes;         /* borrowed; object of system attributes (string values) or NULL */
    json_t *message_attributes; /* borrowed; object name -> {DataType, StringValue...} or NULL */
} /* every pointer valid for the callback only */ px_sqs_message;

typedef struct px_sqs_receive_opts {
    const char *queue_url;      /* borrowed; goes in the body only */
    uint32_t max_messages;      /* clamped to 1..10 */
    uint32_t wait_seconds;      /* clamped to 0..20; > 0 = long polling */
    int32_t visibility_timeout; /* seconds, clamped to 43200; < 0 = the queue's default */
    int all_attributes;         /* ask for every system attribute and message attribute */
} px_sqs_receive_opts;

/* msgs (borrowed, n entries, valid for the call) is empty (n == 0) when the poll found nothing,
 * and NULL on error. A message without a receipt handle is left out. */
typedef void (*px_sqs_receive_cb)(const px_sqs_error *err, const px_sqs_message *msgs, size_t n,
                                  void *arg);

/* Receives up to max_messages from the queue. The HTTP timeout is wait_seconds + 10 s. Same
 * contract as px_sqs_request for cb, *out and the return value. */
int px_sqs_receive(px_sqs *c, const px_sqs_receive_opts *opt, px_sqs_receive_cb cb, void *arg,
                   px_sqs_call **out);

/* --- DeleteMessageBatch -------------------------------------------------------------------- */

typedef struct px_sqs_batch_failure {
    size_t index;        /* position in the handles given to px_sqs_delete_batch */
    int sender_fault;    /* 1: the entry itself is wrong (e.g. expired handle): do not retry it */
    const char *code;    /* e.g. "ReceiptHandleIsInvalid"; "Missing" when SQS did not mention it */
    const char *message; /* "" if none */
} /* strings valid for the callback only */ px_sqs_batch_failure;

/* err->kind == PX_SQS_OK: the request went through; `failed` (borrowed, nfailed entries) lists
 * the entries that were not deleted (a 200 answer can still carry partial failures). Otherwise
 * the whole request failed (failed == NULL): retrying every entry is safe, deleting twice is
 * harmless. */
typedef void (*px_sqs_delete_cb)(const px_sqs_error *err, const px_sqs_batch_failure *failed,
                                 size_t nfailed, void *arg);

/* Deletes up to 10 messages by receipt handle (handles borrowed, copied into the request).
 * Returns PX_EINVAL when n is 0 or above 10; otherwise as px_sqs_request. */
int px_sqs_delete_batch(px_sqs *c, const char *queue_url, const char *const *handles, size_t n,
                        px_sqs_delete_cb cb, void *arg, px_sqs_call **out);

/* --- ChangeMessageVisibility --------------------------------------------------------------- */

/* Sets the visibility timeout of one received message (0 = visible again now). cb may be NULL.
 * Returns as px_sqs_request. */
int px_sqs_change_visibility(px_sqs *c, const char *queue_url, const char *receipt_handle,
                             uint32_t seconds, px_sqs_result_cb cb, void *arg,
                             px_sqs_call **out);

/* --- Helpers ------------------------------------------------------------------------------- */

/* Classifies an error answer: http_status (< 0 = no answer) and the error code (borrowed, may be
 * NULL). Returns an enum px_sqs_error_kind (PX_SQS_OK for a 2xx). */
int px_sqs_classify(int http_status, const char *code);

/* Delay before retry number `attempt` (1 = first retry): min_ms doubled per attempt, capped at
 * max_ms, then "equal jitter" from `rnd` (any random value): the result lies in [d/2, d], so it
 * never drops to zero and retries never turn into a busy loop. */
uint64_t px_sqs_backoff_ms(uint32_t attempt, uint64_t min_ms, uint64_t max_ms, uint32_t rnd);

#endif
