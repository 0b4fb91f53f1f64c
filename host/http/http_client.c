/* Asynchronous HTTP client: libcurl's multi-socket interface on the host's libuv loop.
 *
 * curl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION -> one uv_poll_t each) and when
 * to wake it (CURLMOPT_TIMERFUNCTION -> one uv_timer_t); we feed readiness back through
 * curl_multi_socket_action and collect finished transfers with curl_multi_info_read. Every
 * finished call moves to a "done" queue, and user callbacks run only from deliver_done(), never
 * while curl is on the stack, so a callback may start, cancel or close anything.
 */
#include "http_client.h"

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "err.h"
#include "log.h"
#include "mem.h"

#define MODULE "http"
/* Response header bytes accepted per call (curl has its own, smaller, per-line limit). */
#define MAX_HEADER_BYTES (1024u * 1024u)
/* Finished calls' easy handles kept, reset, for the next requests (curl_easy_init and cleanup
 * cost more than curl_easy_reset). Every option is set again per request from the defaults. */
#define IDLE_EASY_MAX 16

enum call_state { CALL_ACTIVE = 1, CALL_DONE = 2 };

typedef struct resp_header {
    char *name;  /* owned; value follows in the same allocation */
    char *value; /* points into name's allocation */
} resp_header;

struct px_http_response {
    int status;
    resp_header *headers; /* owned array */
    size_t nheaders, capheaders, header_bytes;
    char *body; /* owned, NUL-terminated; NULL until the first byte */
    size_t body_len, body_cap;
};

struct px_http_call {
    px_http_client *client;
    CURL *easy;                   /* owned */
    struct curl_slist *headers;   /* owned */
    char *body;                   /* owned copy of the request body */
    const void *owner;            /* only compared */
    px_http_response_cb cb;
    void *arg;
    int state;                    /* enum call_state */
    int status;                   /* outcome once CALL_DONE */
    size_t max_body;
    int body_too_large;
    px_http_call *prev, *next;    /* client->active while CALL_ACTIVE */
    px_http_call *next_done;      /* client->done queue while CALL_DONE */
    struct px_http_response resp;
    char error[CURL_ERROR_SIZE];  /* outcome text when status < 0 */
    char errbuf[CURL_ERROR_SIZE]; /* CURLOPT_ERRORBUFFER */
};

typedef struct sock_watch {
    uv_poll_t poll;
    px_http_client *client;
    curl_socket_t fd;
    int closing;
    struct sock_watch *prev, *next; /* client->watches */
} sock_watch;

struct px_http_client {
    uv_loop_t *loop;     /* borrowed */
    CURLM *multi;        /* owned; NULL once torn down */
    uv_timer_t timer;    /* curl's timeout */
    uv_idle_t deliver;   /* runs deliver_done for calls finished outside a curl callback */
    size_t max_body;
    px_http_call *active; /* calls inside the multi handle */
    px_http_call *done_head, *done_tail;
    size_t pending;       /* active + done */
    sock_watch *watches;  /* uv_poll_t handles not yet closing */
    int open_handles;     /* uv handles not yet through their close callback */
    int delivering;
    int closing;
    CURL *idle_easy[IDLE_EASY_MAX]; /* owned, reset, out of the multi handle */
    size_t nidle_easy;
    int global_init;
    px_http_client_close_cb close_cb;
    void *close_arg;
};

/* ---------------------------------------------------------------------------------------- */
/* Call bookkeeping */

static void active_unlink(px_http_client *c, px_http_call *call)
{
    if (call->prev) {
        call->prev->next = call->next;
    } else {
        c->active = call->next;
    }
    if (call->next) {
        call->next->prev = call->prev;
    }
    call->prev = call->next = NULL;
}

static void set_error(px_http_call *call, int status, const char *text)
{
    call->status = status;
    snprintf(call->error, sizeof(call->error), "%s", text);
}

static void on_deliver(uv_idle_t *h);

/* Moves call to the done queue with its outcome already set. Runs no user code. */
static void enqueue_done(px_http_client *c, px_http_call *call)
{
    call->state = CALL_DONE;
    call->next_done = NULL;
    if (c->done_tail) {
        c->done_tail->next_done = call;
    } else {
        c->done_head = call;
    }
    c->done_tail = call;
    if (!c->closing) {
        uv_idle_start(&c->deliver, on_deliver); /* idempotent */
    }
}

/* Takes an active call out of the multi handle; its outcome must be set by the caller. */
static void detach(px_http_client *c, px_http_call *call)
{
    active_unlink(c, call);
    if (c->multi) {
        curl_multi_remove_handle(c->multi, call->easy);
    }
}

/* An easy handle for a new call: a kept one (already reset) or a new one; NULL if curl fails. */
static CURL *easy_get(px_http_client *c)
{
    return c->nidle_easy > 0 ? c->idle_easy[--c->nidle_easy] : curl_easy_init();
}

/* Takes back the easy handle of a call out of the multi handle: kept for reuse, or freed. */
static void easy_put(px_http_client *c, CURL *easy)
{
    if (!c->closing && c->nidle_easy < IDLE_EASY_MAX) {
        curl_easy_reset(easy);
        c->idle_easy[c->nidle_easy++] = easy;
    } else {
        curl_easy_cleanup(easy);
    }
}

static void call_free(px_http_call *call)
{
    if (call->easy) {
        easy_put(call->client, call->easy);
    }
    curl_slist_free_all(call->headers);
    free(call->body);
    for (size_t i = 0; i < call->resp.nheaders; i++) {
        free(call->resp.headers[i].name);
    }
    free(call->resp.headers);
    free(call->resp.body);
    free(call);
}

/* Runs the callbacks of every done call. Not reentrant: a nested call (a callback cancelling or
 * closing) leaves its work to the outer loop, which picks it up before returning. */
static void deliver_done(px_http_client *c)
{
    if (c->delivering) {
        return;
    }
    c->delivering = 1;
    while (c->done_head) {
        px_http_call *call = c->done_head;
        c->done_head = call->next_done;
        if (!c->done_head) {
            c->done_tail = NULL;
        }
        c->pending--;
        if (call->cb) {
            if (call->status >= 0) {
                call->resp.status = call->status;
                call->cb(call->status, &call->resp, NULL, call->arg);
            } else {
                call->cb(call->status, NULL, call->error, call->arg);
            }
        }
        call_free(call);
    }
    c->delivering = 0;
}

static void on_deliver(uv_idle_t *h)
{
    px_http_client *c = h->data;
    deliver_done(c);
    uv_idle_stop(&c->deliver);
}

/* Translates a finished transfer into status + error text. */
static void finish_transfer(px_http_call *call, CURLcode rc)
{
    if (rc == CURLE_OK) {
        long code = 0;
        curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &code);
        if (code <= 0 || code > 999) {
            set_error(call, PX_EHTTP, "no HTTP status in the answer");
        } else {
            call->status = (int)code;
        }
        return;
    }
    const char *text = call->errbuf[0] ? call->errbuf : curl_easy_strerror(rc);
    int status = PX_EHTTP;
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        status = UV_ETIMEDOUT;
        break;
    case CURLE_COULDNT_RESOLVE_HOST:
        status = UV_EAI_NONAME;
        break;
    case CURLE_COULDNT_CONNECT: {
        long os_errno = 0;
        curl_easy_getinfo(call->easy, CURLINFO_OS_ERRNO, &os_errno);
        status = os_errno > 0 ? uv_translate_sys_error((int)os_errno) : UV_ECONNREFUSED;
        break;
    }
    case CURLE_WRITE_ERROR:
    case CURLE_FILESIZE_EXCEEDED:
        if (call->body_too_large || rc == CURLE_FILESIZE_EXCEEDED) {
            char msg[96];
            snprintf(msg, sizeof(msg), "response body too large (limit %zu bytes)",
                     call->max_body);
            set_error(call, PX_EHTTP, msg);
            return;
        }
        break;
    default:
        break;
    }
    set_error(call, status, text);
    PX_LOG_DEBUG(MODULE, "request failed status=%d curl=%d error=%s", status, (int)rc, text);
}

/* Moves every finished transfer to the done queue, then runs the callbacks. */
static void check_multi_info(px_http_client *c)
{
    CURLMsg *msg;
    int left;
    while (c->multi && (msg = curl_multi_info_read(c->multi, &left))) {
        if (msg->msg != CURLMSG_DONE) {
            continue;
        }
        px_http_call *call = NULL;
        CURLcode rc = msg->data.result;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&call);
        detach(c, call); /* msg is invalid from here on */
        finish_transfer(call, rc);
        enqueue_done(c, call);
    }
    deliver_done(c);
}

/* ---------------------------------------------------------------------------------------- */
/* curl <-> libuv glue */

static void on_handle_closed(uv_handle_t *h)
{
    px_http_client *c;
    if (h->type == UV_POLL) {
        sock_watch *w = h->data;
        c = w->client;
        free(w);
    } else {
        c = h->data;
    }
    if (--c->open_handles == 0 && c->closing) {
        px_http_client_close_cb cb = c->close_cb;
        void *arg = c->close_arg;
        int global_init = c->global_init;
        free(c);
        if (global_init) {
            curl_global_cleanup();
        }
        if (cb) {
            cb(arg);
        }
    }
}

static void watch_close(px_http_client *c, sock_watch *w)
{
    if (w->closing) {
        return;
    }
    w->closing = 1;
    if (w->prev) {
        w->prev->next = w->next;
    } else {
        c->watches = w->next;
    }
    if (w->next) {
        w->next->prev = w->prev;
    }
    /* uv_close stops polling at once, before curl closes the descriptor. */
    uv_close((uv_handle_t *)&w->poll, on_handle_closed);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    sock_watch *w = h->data;
    px_http_client *c = w->client;
    int flags = 0, running = 0;
    if (status < 0) {
        flags = CURL_CSELECT_ERR;
    } else {
        if (events & UV_READABLE) {
            flags |= CURL_CSELECT_IN;
        }
        if (events & UV_WRITABLE) {
            flags |= CURL_CSELECT_OUT;
        }
    }
    /* w may be closed by curl's socket callback during this call: do not touch it after. */
    curl_multi_socket_action(c->multi, w->fd, flags, &running);
    check_multi_info(c);
}

static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    px_http_client *c = userp;
    sock_watch *w = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (w && !w->closing) {
            curl_multi_assign(c->multi, fd, NULL);
            watch_close(c, w);
        }
        return 0;
    }
    if (c->closing) {
        return 0;
    }
    if (!w) {
        w = px_xcalloc(1, sizeof(*w));
        int rc = uv_poll_init_socket(c->loop, &w->poll, fd);
        if (rc < 0) {
            PX_LOG_ERR(MODULE, "cannot watch socket fd=%d error=%s", (int)fd, uv_strerror(rc));
            free(w);
            return -1;
        }
        w->poll.data = w;
        w->client = c;
        w->fd = fd;
        w->next = c->watches;
        if (c->watches) {
            c->watches->prev = w;
        }
        c->watches = w;
        c->open_handles++;
        curl_multi_assign(c->multi, fd, w);
    }
    int events = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) {
        events |= UV_READABLE;
    }
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) {
        events |= UV_WRITABLE;
    }
    int rc = uv_poll_start(&w->poll, events, on_poll);
    if (rc < 0) {
        PX_LOG_ERR(MODULE, "cannot poll socket fd=%d error=%s", (int)fd, uv_strerror(rc));
        return -1;
    }
    return 0;
}

static void on_timer(uv_timer_t *h)
{
    px_http_client *c = h->data;
    int running = 0;
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_multi_info(c);
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    px_http_client *c = userp;
    if (c->closing) {
        return 0;
    }
    if (timeout_ms < 0) {
        uv_timer_stop(&c->timer);
    } else {
        uv_timer_start(&c->timer, on_timer, (uint64_t)timeout_ms, 0);
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Response collection */

static size_t on_body(char *data, size_t size, size_t nmemb, void *userp)
{
    px_http_call *call = userp;
    struct px_http_response *r = &call->resp;
    size_t n = size * nmemb;
    if (n > call->max_body - r->body_len) {
        call->body_too_large = 1;
        return 0; /* curl fails the transfer with CURLE_WRITE_ERROR */
    }
    if (r->body_len + n + 1 > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap : 1024;
        while (cap < r->body_len + n + 1) {
            cap *= 2;
        }
        r->body = px_xrealloc(r->body, cap);
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, data, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
    return n;
}

static void headers_clear(struct px_http_response *r)
{
    for (size_t i = 0; i < r->nheaders; i++) {
        free(r->headers[i].name);
    }
    r->nheaders = 0;
    r->header_bytes = 0;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *userp)
{
    px_http_call *call = userp;
    struct px_http_response *r = &call->resp;
    size_t n = size * nmemb, len = n;
    r->header_bytes += n;
    if (r->header_bytes > MAX_HEADER_BYTES) {
        return 0;
    }
    while (len > 0 && (data[len - 1] == '\r' || data[len - 1] == '\n')) {
        len--;
    }
    if (len >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        /* A new status line: an interim (1xx) answer's headers are dropped. */
        size_t bytes = r->header_bytes;
        headers_clear(r);
        r->header_bytes = bytes;
        return n;
    }
    if (len == 0) {
        return n;
    }
    if ((data[0] == ' ' || data[0] == '\t') && r->nheaders > 0) {
        /* Obsolete line folding: the line continues the previous header's value. */
        resp_header *h = &r->headers[r->nheaders - 1];
        size_t name_len = strlen(h->name), value_len = strlen(h->value);
        while (len > 0 && (*data == ' ' || *data == '\t')) {
            data++;
            len--;
        }
        char *joined = px_xmalloc(name_len + 1 + value_len + 1 + len + 1);
        memcpy(joined, h->name, name_len + 1);
        char *v = joined + name_len + 1;
        memcpy(v, h->value, value_len);
        v[value_len] = ' ';
        memcpy(v + value_len + 1, data, len);
        v[value_len + 1 + len] = '\0';
        free(h->name);
        h->name = joined;
        h->value = v;
        return n;
    }
    const char *colon = memchr(data, ':', len);
    if (!colon || colon == data) {
        return n; /* not a header line: ignore rather than fail the whole answer */
    }
    size_t name_len = (size_t)(colon - data);
    const char *v = colon + 1, *end = data + len;
    while (v < end && (*v == ' ' || *v == '\t')) {
        v++;
    }
    while (end > v && (end[-1] == ' ' || end[-1] == '\t')) {
        end--;
    }
    size_t value_len = (size_t)(end - v);
    if (r->nheaders == r->capheaders) {
        r->capheaders = r->capheaders ? r->capheaders * 2 : 16;
        r->headers = px_xrealloc(r->headers, r->capheaders * sizeof(*r->headers));
    }
    char *buf = px_xmalloc(name_len + 1 + value_len + 1);
    memcpy(buf, data, name_len);
    buf[name_len] = '\0';
    memcpy(buf + name_len + 1, v, value_len);
    buf[name_len + 1 + value_len] = '\0';
    r->headers[r->nheaders].name = buf;
    r->headers[r->nheaders].value = buf + name_len + 1;
    r->nheaders++;
    return n;
}

const char *px_http_resp_header(const px_http_response *resp, const char *name)
{
    if (!resp || !name) {
        return NULL;
    }
    for (size_t i = resp->nheaders; i > 0; i--) {
        if (strcasecmp(resp->headers[i - 1].name, name) == 0) {
            return resp->headers[i - 1].value;
        }
    }
    return NULL;
}

const char *px_http_resp_body(const px_http_response *resp, size_t *len)
{
    if (len) {
        *len = resp && resp->body ? resp->body_len : 0;
    }
    return resp && resp->body ? resp->body : "";
}

/* ---------------------------------------------------------------------------------------- */
/* Requests */

static int has_crlf(const char *s)
{
    return strpbrk(s, "\r\n") != NULL;
}

static int is_token(const char *s)
{
    if (!*s) {
        return 0;
    }
    for (; *s; s++) {
        if (!isalnum((unsigned char)*s) && !strchr("!#$%&'*+-.^_`|~", *s)) {
            return 0;
        }
    }
    return 1;
}

/* Header names the caller set, to keep curl from adding its own. */
static int has_header(const char *const *headers, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; headers && headers[i]; i++) {
        if (strncasecmp(headers[i], name, n) == 0 &&
            (headers[i][n] == ':' || headers[i][n] == ';')) {
            return 1;
        }
    }
    return 0;
}

#define SETOPT(opt, val)                                                                      \
    do {                                                                                      \
        CURLcode rc_ = curl_easy_setopt(easy, (opt), (val));                                  \
        if (rc_ != CURLE_OK) {                                                                \
            PX_LOG_ERR(MODULE, "curl option failed option=%s error=%s", #opt,                \
                       curl_easy_strerror(rc_));                                              \
            goto fail;                                                                        \
        }                                                                                     \
    } while (0)

/* Fills call->easy from opt. Returns 0, PX_EINVAL for a bad option, PX_EHTTP when curl refused
 * an option (a curl build without a needed feature). */
static int setup_easy(px_http_call *call, const px_http_options *opt)
{
    const char *method = PX_HAS(px_http_options, opt, method) ? opt->method : NULL;
    const char *const *headers = PX_HAS(px_http_options, opt, headers) ? opt->headers : NULL;
    const char *body = PX_HAS(px_http_options, opt, body) ? opt->body : NULL;
    size_t body_len = PX_HAS(px_http_options, opt, body_len) && body ? opt->body_len : 0;
    uint32_t timeout_ms = PX_HAS(px_http_options, opt, timeout_ms) ? opt->timeout_ms : 0;
    const char *sigv4 = PX_HAS(px_http_options, opt, aws_sigv4) ? opt->aws_sigv4 : NULL;
    const char *key = PX_HAS(px_http_options, opt, aws_key) ? opt->aws_key : NULL;
    const char *secret = PX_HAS(px_http_options, opt, aws_secret) ? opt->aws_secret : NULL;
    uint32_t flags = PX_HAS(px_http_options, opt, flags) ? opt->flags : 0;

    if (!opt->url || !*opt->url || has_crlf(opt->url) || (method && !is_token(method))) {
        return PX_EINVAL;
    }
    for (size_t i = 0; headers && headers[i]; i++) {
        if (has_crlf(headers[i]) || !strchr(headers[i], ':')) {
            return PX_EINVAL;
        }
    }
    if (sigv4 && (has_crlf(sigv4) || !key || !secret)) {
        return PX_EINVAL;
    }

    CURL *easy = call->easy;
    SETOPT(CURLOPT_PRIVATE, (char *)call);
    SETOPT(CURLOPT_ERRORBUFFER, call->errbuf);
    SETOPT(CURLOPT_NOSIGNAL, 1L);
    SETOPT(CURLOPT_URL, opt->url);
#if LIBCURL_VERSION_NUM >= 0x075500
    SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
#else
    SETOPT(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
    SETOPT(CURLOPT_TIMEOUT_MS, (long)(timeout_ms ? timeout_ms : PX_HTTP_CLIENT_DEFAULT_TIMEOUT_MS));
    SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
    SETOPT(CURLOPT_SSL_VERIFYPEER, (flags & PX_HTTP_INSECURE) ? 0L : 1L);
    SETOPT(CURLOPT_SSL_VERIFYHOST, (flags & PX_HTTP_INSECURE) ? 0L : 2L);
    SETOPT(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)call->max_body);
    SETOPT(CURLOPT_WRITEFUNCTION, on_body);
    SETOPT(CURLOPT_WRITEDATA, call);
    SETOPT(CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(CURLOPT_HEADERDATA, call);
    SETOPT(CURLOPT_USERAGENT, "plexus");

    if (!method) {
        method = body ? "POST" : "GET";
    }
    if (body) {
        /* Our own copy: the caller's buffer is borrowed for the request() call only. */
        call->body = px_xmalloc(body_len + 1);
        memcpy(call->body, body, body_len);
        call->body[body_len] = '\0';
        SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        SETOPT(CURLOPT_POSTFIELDS, call->body);
        if (strcmp(method, "POST") != 0) {
            SETOPT(CURLOPT_CUSTOMREQUEST, method);
        }
    } else if (strcmp(method, "HEAD") == 0) {
        SETOPT(CURLOPT_NOBODY, 1L);
    } else if (strcmp(method, "GET") == 0) {
        SETOPT(CURLOPT_HTTPGET, 1L);
    } else {
        SETOPT(CURLOPT_CUSTOMREQUEST, method);
    }

    for (size_t i = 0; headers && headers[i]; i++) {
        struct curl_slist *l = curl_slist_append(call->headers, headers[i]);
        if (!l) {
            goto fail;
        }
        call->headers = l;
    }
    if (body && sigv4) {
        /* curl signs every header of the list, even a "Name:" that removes one, so the removal
         * below would break the signature: let curl send the body without waiting instead. */
        SETOPT(CURLOPT_EXPECT_100_TIMEOUT_MS, 0L);
    } else if (body && !has_header(headers, "Expect")) {
        /* No "Expect: 100-continue" round trip before large bodies. */
        struct curl_slist *l = curl_slist_append(call->headers, "Expect:");
        if (!l) {
            goto fail;
        }
        call->headers = l;
    }
    if (call->headers) {
        SETOPT(CURLOPT_HTTPHEADER, call->headers);
    }

    if (sigv4) {
        SETOPT(CURLOPT_AWS_SIGV4, sigv4);
        SETOPT(CURLOPT_USERNAME, key);
        SETOPT(CURLOPT_PASSWORD, secret);
    }
    return 0;

fail:
    return PX_EHTTP;
}

int px_http_client_request_owned(px_http_client *c, const void *owner, const px_http_options *opt,
                                 px_http_response_cb cb, void *arg, px_http_call **out)
{
    if (!c || !opt || !PX_HAS(px_http_options, opt, url)) {
        return PX_EINVAL;
    }
    if (c->closing) {
        return PX_ESTATE;
    }
    px_http_call *call = px_xcalloc(1, sizeof(*call));
    call->client = c;
    call->owner = owner;
    call->cb = cb;
    call->arg = arg;
    call->max_body = c->max_body;
    call->easy = easy_get(c);
    if (!call->easy) {
        call_free(call);
        return PX_EHTTP;
    }
    int rc = setup_easy(call, opt);
    if (rc < 0) {
        call_free(call);
        return rc;
    }

    c->pending++;
    call->state = CALL_ACTIVE;
    call->next = c->active;
    if (c->active) {
        c->active->prev = call;
    }
    c->active = call;
    /* Adding only schedules work (curl asks for a 0 ms timer): nothing runs inside this call. */
    CURLMcode mrc = curl_multi_add_handle(c->multi, call->easy);
    if (mrc != CURLM_OK) {
        active_unlink(c, call);
        set_error(call, PX_EHTTP, curl_multi_strerror(mrc));
        enqueue_done(c, call); /* the callback still runs, later, on the loop */
    }
    if (out) {
        *out = call;
    }
    return 0;
}

int px_http_client_request(px_http_client *c, const px_http_options *opt, px_http_response_cb cb,
                           void *arg, px_http_call **out)
{
    return px_http_client_request_owned(c, NULL, opt, cb, arg, out);
}

void px_http_cancel(px_http_call *call)
{
    if (!call || call->state != CALL_ACTIVE) {
        return;
    }
    px_http_client *c = call->client;
    detach(c, call);
    set_error(call, UV_ECANCELED, "cancelled");
    enqueue_done(c, call);
}

size_t px_http_client_cancel_owner(px_http_client *c, const void *owner)
{
    size_t n = 0;
    if (!c) {
        return 0;
    }
    px_http_call *call = c->active, *next;
    for (; call; call = next) {
        next = call->next;
        if (call->owner == owner) {
            detach(c, call);
            set_error(call, UV_ECANCELED, "cancelled");
            enqueue_done(c, call);
            n++;
        }
    }
    deliver_done(c);
    return n;
}

size_t px_http_client_pending(const px_http_client *c)
{
    return c->pending;
}

void px_http_client_set_max_body(px_http_client *c, size_t max_body)
{
    c->max_body = max_body ? max_body : PX_HTTP_CLIENT_MAX_BODY;
}

/* ---------------------------------------------------------------------------------------- */
/* Life cycle */

int px_http_client_create(uv_loop_t *loop, px_http_client **out)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        PX_LOG_ERR(MODULE, "curl global init failed");
        return PX_EHTTP;
    }
    px_http_client *c = px_xcalloc(1, sizeof(*c));
    c->global_init = 1;
    c->loop = loop;
    c->max_body = PX_HTTP_CLIENT_MAX_BODY;
    c->multi = curl_multi_init();
    if (!c->multi) {
        PX_LOG_ERR(MODULE, "curl multi init failed");
        goto fail;
    }
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
                      (long)PX_HTTP_CLIENT_MAX_HOST_CONNECTIONS);
    curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, (long)PX_HTTP_CLIENT_MAX_CACHED_CONNECTIONS);

    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    uv_idle_init(loop, &c->deliver);
    c->deliver.data = c;
    c->open_handles = 2;

    curl_version_info_data *vi = curl_version_info(CURLVERSION_NOW);
    if (!(vi->features & CURL_VERSION_ASYNCHDNS)) {
        PX_LOG_WARN(MODULE, "libcurl resolves names synchronously: lookups block the loop");
    }
    *out = c;
    return 0;

fail:
    free(c);
    curl_global_cleanup();
    return PX_EHTTP;
}

void px_http_client_close(px_http_client *c, px_http_client_close_cb cb, void *arg)
{
    if (!c || c->closing) {
        return;
    }
    c->closing = 1;
    c->close_cb = cb;
    c->close_arg = arg;

    while (c->active) {
        px_http_call *call = c->active;
        detach(c, call);
        set_error(call, UV_ECANCELED, "cancelled");
        enqueue_done(c, call);
    }
    deliver_done(c);

    /* Stop watching before curl closes its cached connections' descriptors. */
    while (c->watches) {
        watch_close(c, c->watches);
    }
    curl_multi_cleanup(c->multi); /* every easy handle was removed above */
    c->multi = NULL;
    while (c->nidle_easy > 0) {
        curl_easy_cleanup(c->idle_easy[--c->nidle_easy]);
    }
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->deliver, on_handle_closed);
}
