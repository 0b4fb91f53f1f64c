/* SQS client over the JSON protocol (see sqs.h). Every request is a POST of a JSON object to the
 * endpoint's "/" with X-Amz-Target naming the action; the queue URL travels in the body only, so
 * an emulator or VPC endpoint works whatever host name its queue URLs carry. */
#include "sqs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "sigv4.h"
#include "sqs_answer.h"
#include "utf8.h"

#define DEFAULT_TIMEOUT_MS 15000u
#define RECEIVE_EXTRA_MS 10000u /* long poll + this = HTTP timeout */

enum call_kind { CALL_GENERIC, CALL_RECEIVE, CALL_DELETE };

struct px_sqs {
    const px_host_api *host;
    px_plugin_ctx *ctx;
    char *url;          /* endpoint base, ends with '/' */
    char *host_header;  /* "Host: <host[:port] of url>", what is signed as host */
    const char *target; /* path and query of url (points into url) */
    px_sigv4 signer;    /* signing key cached per day */
    int signer_ready;
    char *token_header; /* "X-Amz-Security-Token: ..." or NULL */
    uint32_t http_flags;
    /* The last ReceiveMessage body and what it was made from: pollers repeat the same one. */
    char *recv_body, *recv_queue_url;
    px_sqs_receive_opts recv_opts; /* queue_url unused: see recv_queue_url */
    px_sqs_call *calls; /* in flight, doubly linked */
    size_t pending;
};

struct px_sqs_call {
    px_sqs *c; /* NULL once the client is destroyed: the answer is then only freed */
    px_http_call *http;
    int kind;
    int cancelled;
    size_t nentries; /* DeleteMessageBatch */
    px_sqs_result_cb result_cb;
    px_sqs_receive_cb receive_cb;
    px_sqs_delete_cb delete_cb;
    void *arg;
    px_sqs_call *prev, *next;
};

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) {
        memcpy(d, s, n);
    }
    return d;
}

static char *fmt_str(const char *a, const char *b, const char *c)
{
    size_t n = strlen(a) + strlen(b) + strlen(c) + 1;
    char *d = malloc(n);
    if (d) {
        snprintf(d, n, "%s%s%s", a, b, c);
    }
    return d;
}

static int has_crlf(const char *s)
{
    return s && strpbrk(s, "\r\n") != NULL;
}

int px_sqs_create(const px_host_api *host, px_plugin_ctx *ctx, const px_sqs_config *cfg,
                  px_sqs **out)
{
    if (!host || !cfg || !out || !cfg->region || !*cfg->region || !cfg->access_key ||
        !*cfg->access_key || !cfg->secret_key || !*cfg->secret_key || has_crlf(cfg->region) ||
        has_crlf(cfg->session_token) || has_crlf(cfg->endpoint)) {
        return PX_EINVAL;
    }
    const char *ep = cfg->endpoint;
    if (ep && *ep && strncmp(ep, "http://", 7) != 0 && strncmp(ep, "https://", 8) != 0) {
        return PX_EINVAL;
    }
    px_sqs *c = calloc(1, sizeof(*c));
    if (!c) {
        return PX_EINVAL;
    }
    c->host = host;
    c->ctx = ctx;
    c->http_flags = cfg->http_flags;
    if (ep && *ep) {
        /* Only a bare "scheme://host[:port]" gets the "/" path; a given path is kept as is. */
        const char *path = strchr(strstr(ep, "://") + 3, '/');
        c->url = path ? dup_str(ep) : fmt_str(ep, "/", "");
    } else {
        c->url = fmt_str("https://sqs.", cfg->region, ".amazonaws.com/");
    }
    if (c->url) {
        /* Host is sent as signed: "host[:port]" of the URL, without any user info. */
        const char *authority = strstr(c->url, "://") + 3;
        size_t len = strcspn(authority, "/?#");
        const char *at = memchr(authority, '@', len);
        if (at) {
            len -= (size_t)(at + 1 - authority);
            authority = at + 1;
        }
        char host_value[512];
        if (len > 0 && len < sizeof(host_value)) {
            snprintf(host_value, sizeof(host_value), "%.*s", (int)len, authority);
            c->host_header = fmt_str("Host: ", host_value, "");
        }
        c->target = authority + len; /* the path (always there: see above) and query */
    }
    c->signer_ready = c->host_header &&
                      px_sigv4_init(&c->signer, cfg->access_key, cfg->secret_key, cfg->region,
                                    "sqs") == 0;
    if (cfg->session_token && *cfg->session_token) {
        c->token_header = fmt_str("X-Amz-Security-Token: ", cfg->session_token, "");
    }
    if (!c->url || !c->signer_ready ||
        (cfg->session_token && *cfg->session_token && !c->token_header)) {
        px_sqs_destroy(c);
        return PX_EINVAL;
    }
    *out = c;
    return 0;
}

void px_sqs_destroy(px_sqs *c)
{
    if (!c) {
        return;
    }
    /* Orphan every call first: the host runs their callbacks later, and those only free them. */
    for (px_sqs_call *call = c->calls, *next; call; call = next) {
        next = call->next;
        call->c = NULL;
        call->prev = call->next = NULL;
        c->host->http_cancel(call->http);
    }
    c->calls = NULL;
    free(c->url);
    free(c->recv_body);
    free(c->recv_queue_url);
    free(c->host_header);
    if (c->signer_ready) {
        px_sigv4_deinit(&c->signer);
    }
    if (c->token_header) {
        memset(c->token_header, 0, strlen(c->token_header));
    }
    free(c->token_header);
    free(c);
}

const char *px_sqs_endpoint(const px_sqs *c)
{
    return c ? c->url : NULL;
}

size_t px_sqs_pending(const px_sqs *c)
{
    return c ? c->pending : 0;
}

void px_sqs_cancel(px_sqs_call *call)
{
    if (!call || !call->c || call->cancelled) {
        return;
    }
    call->cancelled = 1;
    call->c->host->http_cancel(call->http);
}

/* --- Errors -------------------------------------------------------------------------------- */

static int is_one_of(const char *code, const char *const *list)
{
    for (size_t i = 0; code && list[i]; i++) {
        if (strcasecmp(code, list[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

int px_sqs_classify(int http_status, const char *code)
{
    static const char *const throttle[] = {
        "RequestThrottled", "ThrottlingException", "Throttling", "ThrottledException",
        "OverLimit", "KmsThrottled", "KMS.ThrottlingException", "TooManyRequestsException",
        "RequestLimitExceeded", "SlowDown", NULL,
    };
    static const char *const server[] = {
        "InternalError", "InternalFailure", "ServiceUnavailable", "ServiceUnavailableException",
        "RequestTimeout", "RequestTimeoutException", NULL,
    };
    if (http_status < 0) {
        return PX_SQS_ENET;
    }
    if (http_status >= 200 && http_status < 300) {
        return PX_SQS_OK;
    }
    if (http_status == 429 || is_one_of(code, throttle)) {
        return PX_SQS_ETHROTTLE;
    }
    if (http_status >= 500 || http_status == 408 || is_one_of(code, server) || http_status < 200) {
        return PX_SQS_ESERVER;
    }
    return PX_SQS_ECLIENT;
}

uint64_t px_sqs_backoff_ms(uint32_t attempt, uint64_t min_ms, uint64_t max_ms, uint32_t rnd)
{
    if (min_ms == 0) {
        min_ms = 1;
    }
    if (max_ms < min_ms) {
        max_ms = min_ms;
    }
    uint64_t d = min_ms;
    for (uint32_t i = 1; i < attempt && d < max_ms; i++) {
        d *= 2;
    }
    if (d > max_ms) {
        d = max_ms;
    }
    uint64_t half = d / 2;
    return d - half + (uint64_t)rnd % (half + 1);
}

/* Error code of an answer: "__type" after its last '#', else the last part of the legacy code
 * in the x-amzn-query-error header ("AWS.SimpleQueueService.NonExistentQueue;Sender"). */
static void error_fields(json_t *body, const char *query_error, char *code, size_t code_len,
                         const char **message)
{
    const char *type = json_string_value(json_object_get(body, "__type"));
    code[0] = '\0';
    if (type && *type) {
        const char *hash = strrchr(type, '#');
        snprintf(code, code_len, "%s", hash ? hash + 1 : type);
    } else if (query_error && *query_error) {
        /* "AWS.SimpleQueueService.RequestThrottled;Sender" -> "RequestThrottled" */
        size_t n = strcspn(query_error, ";");
        const char *start = query_error;
        for (size_t i = 0; i < n; i++) {
            if (query_error[i] == '.') {
                start = query_error + i + 1;
            }
        }
        snprintf(code, code_len, "%.*s", (int)(query_error + n - start), start);
    }
    *message = "";
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v) {
        if (strcasecmp(key, "message") == 0 && json_is_string(v)) {
            *message = json_string_value(v);
            break;
        }
    }
}

/* --- Requests ------------------------------------------------------------------------------ */

static void call_unlink(px_sqs_call *call)
{
    px_sqs *c = call->c;
    if (!c) {
        return;
    }
    if (call->prev) {
        call->prev->next = call->next;
    } else {
        c->calls = call->next;
    }
    if (call->next) {
        call->next->prev = call->prev;
    }
    c->pending--;
}

static void deliver_receive(px_sqs_call *call, const px_sqs_error *err, json_t *result);
static void deliver_delete(px_sqs_call *call, const px_sqs_error *err, json_t *result);

static void deliver(px_sqs_call *call, const px_sqs_error *err, json_t *result)
{
    switch (call->kind) {
    case CALL_RECEIVE: deliver_receive(call, err, result); break;
    case CALL_DELETE: deliver_delete(call, err, result); break;
    default:
        if (call->result_cb) {
            call->result_cb(err, result, call->arg);
        }
        break;
    }
}

static void on_http(int status, const px_http_response *resp, const char *error, void *arg)
{
    px_sqs_call *call = arg;
    if (!call->c) {
        free(call); /* the client is gone: nobody is waiting */
        return;
    }
    const px_host_api *host = call->c->host;
    call_unlink(call);
    call->c = NULL;

    px_sqs_error err = {.kind = PX_SQS_OK, .http_status = status > 0 ? status : 0, .code = "",
                        .message = ""};
    char code[128] = "";
    json_t *body = NULL;
    if (call->cancelled) {
        err.kind = PX_SQS_ECANCELLED;
        err.message = "cancelled";
    } else if (status < 0 || !resp) {
        err.kind = PX_SQS_ENET;
        err.message = error ? error : "no answer";
    } else {
        size_t len = 0;
        const char *text = host->http_resp_body(resp, &len);
        px_sqs_answer answer;
        if (call->kind == CALL_RECEIVE && status >= 200 && status < 300 && text && len &&
            px_sqs_answer_read(text, len, &answer) == 0) {
            /* The usual answer, read without a tree of it; anything else goes to jansson. */
            call->receive_cb(&err, answer.msgs, answer.n, call->arg);
            px_sqs_answer_deinit(&answer);
            free(call);
            return;
        }
        if (text && len) {
            body = json_loadb(text, len, JSON_ALLOW_NUL, NULL);
        } else {
            body = json_object(); /* some actions answer with an empty body */
        }
        if (status >= 200 && status < 300) {
            if (!json_is_object(body)) {
                err.kind = PX_SQS_ESERVER;
                err.message = "answer is not a JSON object";
            }
        } else {
            const char *message = "";
            error_fields(json_is_object(body) ? body : NULL,
                         host->http_resp_header(resp, "x-amzn-query-error"), code, sizeof(code),
                         &message);
            err.kind = px_sqs_classify(status, code);
            err.code = code;
            err.message = message;
        }
    }
    deliver(call, &err, err.kind == PX_SQS_OK ? body : NULL);
    json_decref(body);
    free(call);
}

/* Sends body (borrowed, the JSON text of the request; NULL = could not be made) as `action`. */
static int start_call_body(px_sqs *c, px_sqs_call *call, const char *action, const char *body,
                           uint32_t timeout_ms, px_sqs_call **out)
{
    if (!c || !action || !*action || has_crlf(action)) {
        free(call);
        return PX_EINVAL;
    }
    size_t body_len = body ? strlen(body) : 0;
    char target[128], date[PX_SIGV4_DATE_LEN + 1], date_header[64];
    snprintf(target, sizeof(target), "X-Amz-Target: AmazonSQS.%s", action);
    px_sigv4_date(time(NULL), date);
    snprintf(date_header, sizeof(date_header), "X-Amz-Date: %s", date);
    /* Signed: every header sent but Authorization (Host and X-Amz-Date by the signer). */
    const char *signed_headers[] = {"Content-Type: application/x-amz-json-1.0", target,
                                    c->token_header, NULL};
    size_t auth_cap = strlen(c->signer.key_id) + PX_SIGV4_AUTH_OVERHEAD + 32;
    char *auth = malloc(auth_cap);
    int rc = PX_EINVAL;
    if (body && auth) {
        memcpy(auth, "Authorization: ", 15);
        if (px_sigv4_sign(&c->signer, "POST", c->host_header + 6, c->target, signed_headers,
                          body, body_len, date, auth + 15, auth_cap - 15) == 0) {
            rc = 0;
        }
    }
    const char *headers[] = {c->host_header, "Content-Type: application/x-amz-json-1.0", target,
                             date_header, auth, c->token_header, NULL};
    px_http_options opt = {
        .size = sizeof(opt),
        .method = "POST",
        .url = c->url,
        .headers = headers,
        .body = body,
        .body_len = body_len,
        .timeout_ms = timeout_ms ? timeout_ms : DEFAULT_TIMEOUT_MS,
        .flags = c->http_flags,
    };
    call->c = c;
    if (rc == 0) {
        rc = c->host->http_request(c->ctx, &opt, on_http, call, &call->http);
    }
    free(auth);
    if (rc < 0) {
        free(call);
        return rc;
    }
    call->next = c->calls;
    if (c->calls) {
        c->calls->prev = call;
    }
    c->calls = call;
    c->pending++;
    if (out) {
        *out = call;
    }
    return 0;
}

static int start_call(px_sqs *c, px_sqs_call *call, const char *action, const json_t *params,
                      uint32_t timeout_ms, px_sqs_call **out)
{
    if (!json_is_object(params)) {
        free(call);
        return PX_EINVAL;
    }
    char *body = json_dumps(params, JSON_COMPACT);
    int rc = start_call_body(c, call, action, body, timeout_ms, out);
    free(body);
    return rc;
}

int px_sqs_request(px_sqs *c, const char *action, const json_t *params, uint32_t timeout_ms,
                   px_sqs_result_cb cb, void *arg, px_sqs_call **out)
{
    px_sqs_call *call = calloc(1, sizeof(*call));
    if (!call) {
        return PX_EINVAL;
    }
    call->kind = CALL_GENERIC;
    call->result_cb = cb;
    call->arg = arg;
    return start_call(c, call, action, params, timeout_ms, out);
}

/* --- ReceiveMessage ------------------------------------------------------------------------ */

static json_t *receive_params(const px_sqs_receive_opts *opt, uint32_t max, uint32_t wait);

int px_sqs_receive(px_sqs *c, const px_sqs_receive_opts *opt, px_sqs_receive_cb cb, void *arg,
                   px_sqs_call **out)
{
    if (!c || !opt || !opt->queue_url || !*opt->queue_url || !cb) {
        return PX_EINVAL;
    }
    uint32_t max = opt->max_messages < 1 ? 1 : opt->max_messages;
    max = max > PX_SQS_MAX_BATCH ? PX_SQS_MAX_BATCH : max;
    uint32_t wait = opt->wait_seconds > PX_SQS_MAX_WAIT_S ? PX_SQS_MAX_WAIT_S : opt->wait_seconds;
    if (!c->recv_body || strcmp(c->recv_queue_url, opt->queue_url) != 0 ||
        c->recv_opts.max_messages != opt->max_messages ||
        c->recv_opts.wait_seconds != opt->wait_seconds ||
        c->recv_opts.visibility_timeout != opt->visibility_timeout ||
        c->recv_opts.all_attributes != opt->all_attributes) {
        json_t *p = receive_params(opt, max, wait);
        char *body = json_dumps(p, JSON_COMPACT);
        char *url = dup_str(opt->queue_url);
        json_decref(p);
        if (!body || !url) {
            free(body);
            free(url);
            return PX_EINVAL;
        }
        free(c->recv_body);
        free(c->recv_queue_url);
        c->recv_body = body;
        c->recv_queue_url = url;
        c->recv_opts = *opt;
        c->recv_opts.queue_url = NULL;
    }
    px_sqs_call *call = calloc(1, sizeof(*call));
    if (!call) {
        return PX_EINVAL;
    }
    call->kind = CALL_RECEIVE;
    call->receive_cb = cb;
    call->arg = arg;
    return start_call_body(c, call, "ReceiveMessage", c->recv_body,
                           wait * 1000u + RECEIVE_EXTRA_MS, out);
}

/* The ReceiveMessage parameters of opt (max and wait already clamped). Returns a new object. */
static json_t *receive_params(const px_sqs_receive_opts *opt, uint32_t max, uint32_t wait)
{
    json_t *p = json_object();
    json_object_set_new(p, "QueueUrl", json_string(opt->queue_url));
    json_object_set_new(p, "MaxNumberOfMessages", json_integer(max));
    json_object_set_new(p, "WaitTimeSeconds", json_integer(wait));
    if (opt->visibility_timeout >= 0) {
        int32_t v = opt->visibility_timeout;
        json_object_set_new(p, "VisibilityTimeout",
                            json_integer(v > (int32_t)PX_SQS_MAX_VISIBILITY_S
                                             ? (int32_t)PX_SQS_MAX_VISIBILITY_S
                                             : v));
    }
    if (opt->all_attributes) {
        json_object_set_new(p, "MessageSystemAttributeNames", json_pack("[s]", "All"));
        /* The deprecated name too: older endpoints and emulators only know it. */
        json_object_set_new(p, "AttributeNames", json_pack("[s]", "All"));
        json_object_set_new(p, "MessageAttributeNames", json_pack("[s]", "All"));
    }
    return p;
}

static const char *str_or(json_t *o, const char *key, const char *dflt)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : dflt;
}

static void deliver_receive(px_sqs_call *call, const px_sqs_error *err, json_t *result)
{
    if (err->kind != PX_SQS_OK) {
        call->receive_cb(err, NULL, 0, call->arg);
        return;
    }
    json_t *list = json_object_get(result, "Messages"); /* absent or [] when nothing came */
    size_t n = json_is_array(list) ? json_array_size(list) : 0;
    px_sqs_message msgs[PX_SQS_MAX_BATCH * 2];
    size_t k = 0;
    for (size_t i = 0; i < n && k < sizeof(msgs) / sizeof(msgs[0]); i++) {
        json_t *m = json_array_get(list, i);
        json_t *body = json_object_get(m, "Body");
        const char *handle = json_string_value(json_object_get(m, "ReceiptHandle"));
        if (!json_is_object(m) || !handle || !*handle) {
            continue;
        }
        json_t *attrs = json_object_get(m, "Attributes");
        json_t *mattrs = json_object_get(m, "MessageAttributes");
        msgs[k++] = (px_sqs_message){
            .message_id = str_or(m, "MessageId", ""),
            .receipt_handle = handle,
            .md5_of_body = str_or(m, "MD5OfBody", ""),
            .body = json_is_string(body) ? json_string_value(body) : "",
            .body_len = json_is_string(body) ? json_string_length(body) : 0,
            .attributes = json_is_object(attrs) ? attrs : NULL,
            .message_attributes = json_is_object(mattrs) ? mattrs : NULL,
        };
    }
    call->receive_cb(err, msgs, k, call->arg);
}

/* --- DeleteMessageBatch -------------------------------------------------------------------- */

/* Appends s (borrowed) as a JSON string, as json_dumps writes it: '"', '\\' and control
 * characters escaped, the rest as is. Returns the end of what was written; dst has room for
 * 6 x strlen(s) + 2 bytes. */
static char *put_json_string(char *dst, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    *dst++ = '"';
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            *dst++ = '\\';
            *dst++ = (char)c;
        } else if (c < 0x20) {
            *dst++ = '\\';
            switch (c) {
            case '\b': *dst++ = 'b'; break;
            case '\f': *dst++ = 'f'; break;
            case '\n': *dst++ = 'n'; break;
            case '\r': *dst++ = 'r'; break;
            case '\t': *dst++ = 't'; break;
            default:
                memcpy(dst, "u00", 3);
                dst[3] = hex[c >> 4];
                dst[4] = hex[c & 15];
                dst += 5;
                break;
            }
        } else {
            *dst++ = (char)c;
        }
    }
    *dst++ = '"';
    return dst;
}

/* {"QueueUrl":...,"Entries":[{"Id":"e0","ReceiptHandle":...},...]} written in one pass (what
 * json_dumps of the same object writes); NULL when a string is not UTF-8, as jansson refuses. */
static char *delete_batch_body(const char *queue_url, const char *const *handles, size_t n)
{
    size_t cap = 64 + 6 * strlen(queue_url);
    for (size_t i = 0; i < n; i++) {
        const char *h = handles[i] ? handles[i] : "";
        if (!px_utf8_valid(h, strlen(h))) {
            return NULL;
        }
        cap += 48 + 6 * strlen(h);
    }
    if (!px_utf8_valid(queue_url, strlen(queue_url))) {
        return NULL;
    }
    char *body = malloc(cap);
    if (!body) {
        return NULL;
    }
    char *p = body;
    static const char head[] = "{\"QueueUrl\":", entries[] = ",\"Entries\":[";
    memcpy(p, head, sizeof(head) - 1);
    p = put_json_string(p + sizeof(head) - 1, queue_url);
    memcpy(p, entries, sizeof(entries) - 1);
    p += sizeof(entries) - 1;
    for (size_t i = 0; i < n; i++) {
        p += sprintf(p, "%s{\"Id\":\"e%zu\",\"ReceiptHandle\":", i ? "," : "", i);
        p = put_json_string(p, handles[i] ? handles[i] : "");
        *p++ = '}';
    }
    memcpy(p, "]}", 3);
    return body;
}

int px_sqs_delete_batch(px_sqs *c, const char *queue_url, const char *const *handles, size_t n,
                        px_sqs_delete_cb cb, void *arg, px_sqs_call **out)
{
    if (!c || !queue_url || !handles || n == 0 || n > PX_SQS_MAX_BATCH || !cb) {
        return PX_EINVAL;
    }
    char *body = delete_batch_body(queue_url, handles, n);
    px_sqs_call *call = calloc(1, sizeof(*call));
    if (!call || !body) {
        free(call);
        free(body);
        return PX_EINVAL;
    }
    call->kind = CALL_DELETE;
    call->delete_cb = cb;
    call->arg = arg;
    call->nentries = n;
    int rc = start_call_body(c, call, "DeleteMessageBatch", body, 0, out);
    free(body);
    return rc;
}

/* Entry id "e<index>" back to its index, or -1. */
static long entry_index(const char *id, size_t n)
{
    if (!id || id[0] != 'e' || !id[1]) {
        return -1;
    }
    char *end;
    long i = strtol(id + 1, &end, 10);
    return (*end || i < 0 || (size_t)i >= n) ? -1 : i;
}

static void deliver_delete(px_sqs_call *call, const px_sqs_error *err, json_t *result)
{
    if (err->kind != PX_SQS_OK) {
        call->delete_cb(err, NULL, 0, call->arg);
        return;
    }
    size_t n = call->nentries;
    px_sqs_batch_failure failed[PX_SQS_MAX_BATCH];
    int seen[PX_SQS_MAX_BATCH] = {0};
    size_t nfailed = 0;
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(result, "Successful"), i, x) {
        long at = entry_index(json_string_value(json_object_get(x, "Id")), n);
        if (at >= 0) {
            seen[at] = 1;
        }
    }
    json_array_foreach(json_object_get(result, "Failed"), i, x) {
        long at = entry_index(json_string_value(json_object_get(x, "Id")), n);
        if (at < 0 || seen[at]) {
            continue;
        }
        seen[at] = 1;
        failed[nfailed++] = (px_sqs_batch_failure){
            .index = (size_t)at,
            .sender_fault = json_is_true(json_object_get(x, "SenderFault")),
            .code = str_or(x, "Code", ""),
            .message = str_or(x, "Message", ""),
        };
    }
    /* An entry SQS did not mention was not confirmed: report it so the caller may retry it. */
    for (size_t k = 0; k < n; k++) {
        if (!seen[k]) {
            failed[nfailed++] = (px_sqs_batch_failure){
                .index = k, .sender_fault = 0, .code = "Missing",
                .message = "entry missing from the answer"};
        }
    }
    call->delete_cb(err, nfailed ? failed : NULL, nfailed, call->arg);
}

/* --- ChangeMessageVisibility --------------------------------------------------------------- */

int px_sqs_change_visibility(px_sqs *c, const char *queue_url, const char *receipt_handle,
                             uint32_t seconds, px_sqs_result_cb cb, void *arg,
                             px_sqs_call **out)
{
    if (!c || !queue_url || !receipt_handle) {
        return PX_EINVAL;
    }
    json_t *p = json_pack("{s:s, s:s, s:I}", "QueueUrl", queue_url, "ReceiptHandle",
                          receipt_handle,
                          "VisibilityTimeout",
                          (json_int_t)(seconds > PX_SQS_MAX_VISIBILITY_S
                                           ? PX_SQS_MAX_VISIBILITY_S
                                           : seconds));
    int rc = px_sqs_request(c, "ChangeMessageVisibility", p, 0, cb, arg, out);
    json_decref(p);
    return rc;
}
