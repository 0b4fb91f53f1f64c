/* Tests of host/http/http_client.c against peers on 127.0.0.1: a small HTTP/1.1 keep-alive server
 * written here on the same uv loop (it counts TCP connections), and tests/peers/sigv4_peer.py,
 * which recomputes AWS Signature V4 signatures. */
#include "../../host/http/http_client.c"

#include <signal.h>

#include "test.h"

#define SIGV4_PEER PX_TEST_DATA_DIR "/../../peers/sigv4_peer.py"
#define PEER_TLS_DIR PX_TEST_DATA_DIR "/../../peers/tls"

/* ---------------------------------------------------------------------------------------- */
/* Test server: Content-Length requests, keep-alive, a few fixed routes. */

typedef struct srv srv;

typedef struct srv_conn {
    uv_tcp_t tcp;
    srv *s;
    char *buf;
    size_t len, cap;
    struct srv_conn *prev, *next;
} srv_conn;

struct srv {
    uv_tcp_t tcp;
    uv_loop_t *loop;
    int port;
    int accepted; /* TCP connections accepted */
    int requests; /* requests parsed */
    srv_conn *conns;
};

typedef struct srv_write {
    uv_write_t req;
    char data[];
} srv_write;

static void conn_closed(uv_handle_t *h)
{
    srv_conn *c = h->data;
    free(c->buf);
    free(c);
}

static void conn_close(srv_conn *c)
{
    if (uv_is_closing((uv_handle_t *)&c->tcp)) {
        return;
    }
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        c->s->conns = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

static void on_srv_written(uv_write_t *req, int status)
{
    free(req);
}

static void srv_send(srv_conn *c, const char *data, size_t len)
{
    srv_write *w = px_xmalloc(sizeof(*w) + len);
    memcpy(w->data, data, len);
    uv_buf_t buf = uv_buf_init(w->data, (unsigned)len);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_srv_written) < 0) {
        free(w);
    }
}

static void srv_respond(srv_conn *c, int status, const char *extra_headers, const char *body,
                        size_t body_len, int head_only)
{
    char *head = px_xasprintf("HTTP/1.1 %d X\r\nContent-Length: %zu\r\n%s\r\n", status, body_len,
                              extra_headers);
    size_t hlen = strlen(head);
    size_t total = hlen + (head_only ? 0 : body_len);
    char *msg = px_xmalloc(total + 1);
    memcpy(msg, head, hlen);
    if (!head_only) {
        memcpy(msg + hlen, body, body_len);
    }
    srv_send(c, msg, total);
    free(msg);
    free(head);
}

/* Value of request header `name` in the header block [h, end), copied into out. */
static int req_header(const char *h, const char *end, const char *name, char *out, size_t outsz)
{
    size_t n = strlen(name);
    while (h < end) {
        const char *eol = memmem(h, (size_t)(end - h), "\r\n", 2);
        if (!eol) {
            eol = end;
        }
        if ((size_t)(eol - h) > n && strncasecmp(h, name, n) == 0 && h[n] == ':') {
            const char *v = h + n + 1;
            while (v < eol && *v == ' ') {
                v++;
            }
            snprintf(out, outsz, "%.*s", (int)(eol - v), v);
            return 1;
        }
        h = eol + 2;
    }
    return 0;
}

static void srv_handle(srv_conn *c, const char *method, const char *path, const char *hdrs,
                       const char *hdrs_end, const char *body, size_t body_len)
{
    int head = strcmp(method, "HEAD") == 0;
    c->s->requests++;
    if (strcmp(path, "/hang") == 0) {
        return; /* never answers */
    }
    if (strcmp(path, "/hello") == 0) {
        srv_respond(c, 200, "Content-Type: text/plain\r\nX-Multi: first\r\nx-multi: second\r\n",
                    "hello world", 11, head);
    } else if (strcmp(path, "/echo") == 0) {
        char custom[128] = "", ctype[128] = "";
        req_header(hdrs, hdrs_end, "X-Custom", custom, sizeof(custom));
        req_header(hdrs, hdrs_end, "Content-Type", ctype, sizeof(ctype));
        char *extra = px_xasprintf("X-Method: %s\r\nX-Echo: %s\r\nX-Echo-Type: %s\r\n", method,
                                   custom, ctype);
        srv_respond(c, 201, extra, body, body_len, head);
        free(extra);
    } else if (strncmp(path, "/n/", 3) == 0) {
        srv_respond(c, 200, "", path + 3, strlen(path + 3), head);
    } else if (strcmp(path, "/big") == 0) {
        char big[4096];
        memset(big, 'x', sizeof(big));
        srv_respond(c, 200, "", big, sizeof(big), head);
    } else if (strcmp(path, "/bigchunked") == 0) {
        /* No Content-Length: only the running total can catch the size. */
        size_t n = 4096;
        const char *hd = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n";
        char *msg = px_xmalloc(strlen(hd) + n + 16);
        size_t len = strlen(hd);
        memcpy(msg, hd, len);
        memset(msg + len, 'y', n);
        len += n;
        memcpy(msg + len, "\r\n0\r\n\r\n", 7);
        len += 7;
        srv_send(c, msg, len);
        free(msg);
    } else {
        srv_respond(c, 404, "", "not found", 9, head);
    }
}

/* Parses and answers every complete request in the buffer. */
static void srv_parse(srv_conn *c)
{
    for (;;) {
        char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
        if (!end) {
            return;
        }
        size_t head_len = (size_t)(end - c->buf) + 4;
        char *eol = memmem(c->buf, head_len, "\r\n", 2);
        char line[1024];
        snprintf(line, sizeof(line), "%.*s", (int)(eol - c->buf), c->buf);
        char method[32] = "", path[900] = "";
        if (sscanf(line, "%31s %899s", method, path) != 2) {
            conn_close(c);
            return;
        }
        char cl[32] = "0";
        req_header(eol + 2, end + 2, "Content-Length", cl, sizeof(cl));
        size_t body_len = strtoul(cl, NULL, 10);
        if (c->len < head_len + body_len) {
            return;
        }
        srv_handle(c, method, path, eol + 2, end + 2, c->buf + head_len, body_len);
        memmove(c->buf, c->buf + head_len + body_len, c->len - head_len - body_len);
        c->len -= head_len + body_len;
    }
}

static void srv_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    srv_conn *c = h->data;
    if (c->cap - c->len < 4096) {
        c->cap = c->cap ? c->cap * 2 : 8192;
        c->buf = px_xrealloc(c->buf, c->cap);
    }
    *buf = uv_buf_init(c->buf + c->len, (unsigned)(c->cap - c->len));
}

static void srv_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    srv_conn *c = stream->data;
    if (nread < 0) {
        conn_close(c);
        return;
    }
    c->len += (size_t)nread;
    srv_parse(c);
}

static void srv_on_connection(uv_stream_t *listener, int status)
{
    srv *s = listener->data;
    if (status < 0) {
        return;
    }
    srv_conn *c = px_xcalloc(1, sizeof(*c));
    c->s = s;
    uv_tcp_init(s->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) < 0) {
        uv_close((uv_handle_t *)&c->tcp, conn_closed);
        return;
    }
    s->accepted++;
    c->next = s->conns;
    if (s->conns) {
        s->conns->prev = c;
    }
    s->conns = c;
    uv_read_start((uv_stream_t *)&c->tcp, srv_alloc, srv_read);
}

static int srv_start(srv *s, uv_loop_t *loop)
{
    memset(s, 0, sizeof(*s));
    s->loop = loop;
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    uv_tcp_init(loop, &s->tcp);
    s->tcp.data = s;
    int rc = uv_tcp_bind(&s->tcp, (const struct sockaddr *)&addr, 0);
    if (rc == 0) {
        rc = uv_listen((uv_stream_t *)&s->tcp, 1024, srv_on_connection);
    }
    struct sockaddr_in bound;
    int len = sizeof(bound);
    if (rc == 0) {
        rc = uv_tcp_getsockname(&s->tcp, (struct sockaddr *)&bound, &len);
    }
    s->port = rc == 0 ? ntohs(bound.sin_port) : 0;
    return rc;
}

static void srv_close(srv *s)
{
    while (s->conns) {
        conn_close(s->conns);
    }
    if (!uv_is_closing((uv_handle_t *)&s->tcp)) {
        uv_close((uv_handle_t *)&s->tcp, NULL);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Harness: one loop, one server, one client per case; finish() closes it all. */

typedef struct peer peer;

typedef struct tctx {
    uv_loop_t loop;
    srv s;
    px_http_client *client;
    uv_timer_t watchdog;
    uv_handle_t *extra[4]; /* more handles for finish() to close */
    int nextra;
    peer *peer;
    int finishing, client_closing, client_closed, watchdog_fired;
    int done, expected; /* callbacks seen / awaited */
    int in_call;        /* set while the test is inside a client function */
} tctx;

typedef struct result {
    tctx *t;
    int calls, status, inside;
    char error[CURL_ERROR_SIZE];
    char body[8192];
    size_t body_len;
    char multi[64], method[16], echo[128], echo_type[128], clen[16], ctype[64];
} result;

static void peer_stop(peer *p);

static void on_client_closed(void *arg)
{
    tctx *t = arg;
    t->client_closed = 1;
}

static void close_client(tctx *t)
{
    if (!t->client_closing) {
        t->client_closing = 1;
        px_http_client_close(t->client, on_client_closed, t);
    }
}

static void finish(tctx *t)
{
    if (t->finishing) {
        return;
    }
    t->finishing = 1;
    close_client(t);
    srv_close(&t->s);
    uv_close((uv_handle_t *)&t->watchdog, NULL);
    for (int i = 0; i < t->nextra; i++) {
        if (!uv_is_closing(t->extra[i])) {
            uv_close(t->extra[i], NULL);
        }
    }
    if (t->peer) {
        peer_stop(t->peer);
    }
}

static void on_watchdog(uv_timer_t *h)
{
    tctx *t = h->data;
    t->watchdog_fired = 1;
    fprintf(stderr, "watchdog: case did not finish (done=%d expected=%d)\n", t->done,
            t->expected);
    finish(t);
}

static int setup(tctx *t)
{
    signal(SIGPIPE, SIG_IGN);
    memset(t, 0, sizeof(*t));
    if (uv_loop_init(&t->loop) < 0 || srv_start(&t->s, &t->loop) < 0) {
        return -1;
    }
    uv_timer_init(&t->loop, &t->watchdog);
    t->watchdog.data = t;
    uv_timer_start(&t->watchdog, on_watchdog, 20000, 0);
    return px_http_client_create(&t->loop, &t->client);
}

/* Runs the loop until finish() closed everything; returns uv_loop_close(). */
static int run(tctx *t)
{
    uv_run(&t->loop, UV_RUN_DEFAULT);
    return uv_loop_close(&t->loop);
}

static void on_result(int status, const px_http_response *resp, const char *error, void *arg)
{
    result *r = arg;
    r->calls++;
    r->status = status;
    r->inside = r->t->in_call;
    if (status >= 0) {
        size_t len;
        const char *body = px_http_resp_body(resp, &len);
        r->body_len = len;
        snprintf(r->body, sizeof(r->body), "%.*s", (int)len, body);
        const char *v;
        if ((v = px_http_resp_header(resp, "X-Multi"))) {
            snprintf(r->multi, sizeof(r->multi), "%s", v);
        }
        if ((v = px_http_resp_header(resp, "x-method"))) {
            snprintf(r->method, sizeof(r->method), "%s", v);
        }
        if ((v = px_http_resp_header(resp, "X-ECHO"))) {
            snprintf(r->echo, sizeof(r->echo), "%s", v);
        }
        if ((v = px_http_resp_header(resp, "X-Echo-Type"))) {
            snprintf(r->echo_type, sizeof(r->echo_type), "%s", v);
        }
        if ((v = px_http_resp_header(resp, "content-length"))) {
            snprintf(r->clen, sizeof(r->clen), "%s", v);
        }
        if ((v = px_http_resp_header(resp, "Content-Type"))) {
            snprintf(r->ctype, sizeof(r->ctype), "%s", v);
        }
        if (px_http_resp_header(resp, "X-Absent")) {
            snprintf(r->error, sizeof(r->error), "absent header found");
        }
    } else {
        snprintf(r->error, sizeof(r->error), "%s", error ? error : "(null)");
        if (resp) {
            snprintf(r->body, sizeof(r->body), "resp set on error");
        }
    }
    if (++r->t->done == r->t->expected) {
        finish(r->t);
    }
}

static px_http_options opts(const char *url)
{
    px_http_options o;
    memset(&o, 0, sizeof(o));
    o.size = sizeof(o);
    o.url = url;
    return o;
}

static int request(tctx *t, const px_http_options *o, result *r, px_http_call **out)
{
    r->t = t;
    t->in_call = 1;
    int rc = px_http_client_request(t->client, o, on_result, r, out);
    t->in_call = 0;
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* Cases */

static void test_get_and_post_round_trip(void)
{
    tctx t;
    PX_ASSERT_INT_EQ(setup(&t), 0);
    char url_hello[64], url_echo[64], url_missing[64];
    snprintf(url_hello, sizeof(url_hello), "http://127.0.0.1:%d/hello", t.s.port);
    snprintf(url_echo, sizeof(url_echo), "http://127.0.0.1:%d/echo", t.s.port);
    snprintf(url_missing, sizeof(url_missing), "http://127.0.0.1:%d/missing", t.s.port);
    static result get, post, put, del, head, missing;
    memset(&get, 0, sizeof(get));
    memset(&post, 0, sizeof(post));
    memset(&put, 0, sizeof(put));
    memset(&del, 0, sizeof(del));
    memset(&head, 0, sizeof(head));
    memset(&missing, 0, sizeof(missing));

    px_http_options o = opts(url_hello);
    PX_ASSERT_INT_EQ(request(&t, &o, &get, NULL), 0);

    /* The body and headers are the caller's buffers, reused right after the call. */
    char body[64], hdr[64];
    snprintf(body, sizeof(body), "{\"lead\":42}");
    snprintf(hdr, sizeof(hdr), "X-Custom: abc 123");
    const char *headers[] = {hdr, "Content-Type: application/json", NULL};
    o = opts(url_echo);
    o.headers = headers;
    o.body = body;
    o.body_len = strlen(body);
    PX_ASSERT_INT_EQ(request(&t, &o, &post, NULL), 0);
    memset(body, 'Z', sizeof(body));
    memset(hdr, 'Z', sizeof(hdr) - 1);
    hdr[sizeof(hdr) - 1] = '\0';

    const char *put_headers[] = {"X-Custom: put", NULL};
    o = opts(url_echo);
    o.method = "PUT";
    o.headers = put_headers;
    o.body = "abc";
    o.body_len = 2; /* only "ab" */
    PX_ASSERT_INT_EQ(request(&t, &o, &put, NULL), 0);

    o = opts(url_echo);
    o.method = "DELETE";
    PX_ASSERT_INT_EQ(request(&t, &o, &del, NULL), 0);

    o = opts(url_hello);
    o.method = "HEAD";
    PX_ASSERT_INT_EQ(request(&t, &o, &head, NULL), 0);

    o = opts(url_missing);
    PX_ASSERT_INT_EQ(request(&t, &o, &missing, NULL), 0);

    t.expected = 6;
    PX_ASSERT_INT_EQ(t.done, 0); /* nothing ran inside request() */
    PX_ASSERT_INT_EQ(run(&t), 0);
    PX_ASSERT(!t.watchdog_fired);
    PX_ASSERT(t.client_closed);

    PX_ASSERT_INT_EQ(get.calls, 1);
    PX_ASSERT_INT_EQ(get.status, 200);
    PX_ASSERT_STR_EQ(get.body, "hello world");
    PX_ASSERT_INT_EQ(get.body_len, 11);
    PX_ASSERT_STR_EQ(get.multi, "second"); /* last value wins, any case */
    PX_ASSERT_STR_EQ(get.ctype, "text/plain");
    PX_ASSERT_STR_EQ(get.error, "");

    PX_ASSERT_INT_EQ(post.calls, 1);
    PX_ASSERT_INT_EQ(post.status, 201);
    PX_ASSERT_STR_EQ(post.method, "POST");
    PX_ASSERT_STR_EQ(post.echo, "abc 123");
    PX_ASSERT_STR_EQ(post.echo_type, "application/json");
    PX_ASSERT_STR_EQ(post.body, "{\"lead\":42}");

    PX_ASSERT_INT_EQ(put.status, 201);
    PX_ASSERT_STR_EQ(put.method, "PUT");
    PX_ASSERT_STR_EQ(put.echo, "put");
    PX_ASSERT_STR_EQ(put.body, "ab");

    PX_ASSERT_INT_EQ(del.status, 201);
    PX_ASSERT_STR_EQ(del.method, "DELETE");
    PX_ASSERT_INT_EQ(del.body_len, 0);

    PX_ASSERT_INT_EQ(head.status, 200);
    PX_ASSERT_STR_EQ(head.clen, "11");
    PX_ASSERT_INT_EQ(head.body_len, 0);

    PX_ASSERT_INT_EQ(missing.status, 404);
    PX_ASSERT_STR_EQ(missing.body, "not found");
    PX_ASSERT_INT_EQ(t.s.requests, 6);
}

#define BURST 1000

static void test_burst_reuses_connections(void)
{
    tctx t;
    PX_ASSERT_INT_EQ(setup(&t), 0);
    static result rs[BURST];
    memset(rs, 0, sizeof(rs));
    t.expected = BURST;
    for (int i = 0; i < BURST; i++) {
        char url[64];
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/n/%d", t.s.port, i);
        px_http_options o = opts(url);
        PX_ASSERT_INT_EQ(request(&t, &o, &rs[i], NULL), 0);
    }
    PX_ASSERT_INT_EQ(px_http_client_pending(t.client), BURST);
    PX_ASSERT_INT_EQ(run(&t), 0);
    PX_ASSERT(!t.watchdog_fired);
    for (int i = 0; i < BURST; i++) {
        char want[16];
        snprintf(want, sizeof(want), "%d", i);
        PX_ASSERT_INT_EQ(rs[i].calls, 1);
        PX_ASSERT_INT_EQ(rs[i].status, 200);
        PX_ASSERT_STR_EQ(rs[i].body, want);
    }
    PX_ASSERT_INT_EQ(t.s.requests, BURST);
    printf("  burst: %d requests over %d connections\n", BURST, t.s.accepted);
    PX_ASSERT(t.s.accepted >= 1);
    PX_ASSERT(t.s.accepted <= PX_HTTP_CLIENT_MAX_HOST_CONNECTIONS);
}

static int ticks;

static void on_tick(uv_timer_t *h)
{
    ticks++;
}

static void test_timeout_does_not_block_loop(void)
{
    tctx t;
    PX_ASSERT_INT_EQ(setup(&t), 0);
    uv_timer_t ticker;
    uv_timer_init(&t.loop, &ticker);
    uv_timer_start(&ticker, on_tick, 20, 20);
    t.extra[t.nextra++] = (uv_handle_t *)&ticker;
    ticks = 0;

    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/hang", t.s.port);
    static result r;
    memset(&r, 0, sizeof(r));
    px_http_options o = opts(url);
    o.timeout_ms = 300;
    t.expected = 1;
    uint64_t start = uv_now(&t.loop);
    PX_ASSERT_INT_EQ(request(&t, &o, &r, NULL), 0);
    PX_ASSERT_INT_EQ(run(&t), 0);
    PX_ASSERT(!t.watchdog_fired);
    PX_ASSERT_INT_EQ(r.calls, 1);
    PX_ASSERT_INT_EQ(r.status, UV_ETIMEDOUT);
    PX_ASSERT_STR_HAS(r.error, "timed out");
    PX_ASSERT_INT_EQ(t.s.requests, 1); /* the peer got the request and sat on it */
    printf("  timeout: ticks=%d during the wait\n", ticks);
    PX_ASSERT(ticks >= 5);
    PX_ASSERT(uv_now(&t.loop) - start >= 250);
}

static void test_connection_refused(void)
{
    tctx t;
    PX_ASSERT_INT_EQ(setup(&t), 0);
    /* Bound but not listening: a connect to it is refused, and nobody else can take the port. */
    uv_tcp_t closed;
    uv_tcp_init(&t.loop, &closed);
    t.extra[t.nextra++] = (uv_handle_t *)&closed;
    struct sockaddr_in addr, bound;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    PX_ASSERT_INT_EQ(uv_tcp_bind(&closed, (const struct sockaddr *)&addr, 0), 0);
    int len = sizeof(bound);
    PX_ASSERT_INT_EQ(uv_tcp_getsockname(&closed, (struct sockaddr *)&bound, &len), 0);

    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/x", ntohs(bound.sin_port));
    static result r;
    memset(&r, 0, sizeof(r));
    px_http_options o = opts(url);
    t.expected = 1;
    PX_ASSERT_INT_EQ(request(&t, &o, &r, NULL), 0);
    PX_ASSERT_INT_EQ(run(&t), 0);
    PX_ASSERT(!t.watchdog_fired);
    PX_ASSERT_INT_EQ(r.calls, 1);
    PX_ASSERT_INT_EQ(r.status, UV_ECONNREFUSED);
    PX_ASSERT(r.error[0] != '\0');
    PX_ASSERT_STR_EQ(r.body, ""); /* resp was NULL */
}

typedef struct cancel_case {
    tctx *t;
    px_http_call *call;
    int after_cancel; /* callbacks seen right after px_http_cancel returned */
} cancel_case;

static void on_cancel_timer(uv_timer_t *h)
{
    cancel_case *cc = h->data;
    cc->t->in_call = 1;
    px_http_cancel(cc->call);
    px_http_cancel(cc->call); /* again before the callback: nothing more */
    cc->t->in_call = 0;
    cc->after_cancel = cc->t->done;
}

static void test_cancel(void)
{
    tctx t;
    PX_ASSERT_INT_EQ(setup(&t), 0);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/hang", t.s.port);
    static result r;
    memset(&r, 0, sizeof(r));
    cancel_case cc = {.t = &t};
    px_http_options o = opts(url);
    t.expected = 1;
    PX_ASSERT_INT_EQ(request(&t, &o, &r, &cc.call), 0);
    PX_ASSERT(cc.call != NULL);

    uv_timer_t timer;
    uv_timer_init(&t.loop, &timer);
    timer.data = &cc;
    uv_timer_start(&timer, on_cancel_timer, 50, 0);
    t.extra[t.nextra++] = (uv_handle_t *)&timer;

    PX_ASSERT_INT_EQ(run(&t), 0);
    PX_ASSERT(!t.watchdog_fired);
    PX_ASSERT_INT_EQ(cc.after_cancel, 0); /* not run inside px_http_cancel */
    PX_ASSERT_INT_EQ(r.calls, 1);
    PX_ASSERT_INT_EQ(r.inside, 0);
    PX_ASSERT_INT_EQ(r.status, UV_ECANCELED);
    PX_ASSERT_STR_EQ(r.error, "cancelled");
}

typedef struct close_case {
    tctx *t;
    int done_after_close;
    int request_after_close;
    int closed_cb_after_close;
} close_case;

static void on_close_timer(uv_timer_t *h)
{
    close_case *cc = h->data;
    tctx *t = cc->t;
    close_client(t);
    cc->done_after_close = t->done;
    cc->closed_cb_after_close = t->client_closed;
    result dummy = {.t = t};
    px_http_options o = opts("http://127.0.0.1:1/");
    cc->request_after_close = px_http_client_request(t->client, &o, on_result, &dummy, NULL);
    finish(t);
}

static void test_close_cancels_in_flight(void)
{
    tctx t;
    PX_ASSERT_INT_EQ(setup(&t), 0);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/hang", t.s.port);
    static result rs[5];
    memset(rs, 0, sizeof(rs));
    t.expected = 6;
    for (int i = 0; i < 5; i++) {
        px_http_options o = opts(url);
        PX_ASSERT_INT_EQ(request(&t, &o, &rs[i], NULL), 0);
    }
    close_case cc = {.t = &t};
    uv_timer_t timer;
    uv_timer_init(&t.loop, &timer);
    timer.data = &cc;
    uv_timer_start(&timer, on_close_timer, 100, 0);
    t.extra[t.nextra++] = (uv_handle_t *)&timer;

    PX_ASSERT_INT_EQ(run(&t), 0); /* every handle of the client closed */
    PX_ASSERT(!t.watchdog_fired);
    PX_ASSERT_INT_EQ(cc.done_after_close, 5);   /* callbacks ran before close returned */
    PX_ASSERT_INT_EQ(cc.closed_cb_after_close, 0); /* close cb comes later */
    PX_ASSERT(t.client_closed);
    PX_ASSERT_INT_EQ(cc.request_after_close, PX_ESTATE);
    PX_ASSERT_INT_EQ(t.s.requests, 5);
    for (int i = 0; i < 5; i++) {
        PX_ASSERT_INT_EQ(rs[i].calls, 1);
        PX_ASSERT_INT_EQ(rs[i].status, UV_ECANCELED);
        PX_ASSERT_STR_EQ(rs[i].error, "cancelled");
    }
}

typedef struct owner_case {
    tctx *t;
    size_t cancelled;
    int done_after;
} owner_case;

static const int owner_a = 1, owner_b = 2;

static void on_owner_timer(uv_timer_t *h)
{
    owner_case *oc = h->data;
    oc->cancelled = px_http_client_cancel_owner(oc->t->client, &owner_a);
    oc->done_after = oc->t->done;
}

static void test_cancel_owner(void)
{
    tctx t;
    PX_ASSERT_INT_EQ(setup(&t), 0);
    char hang[64], hello[64];
    snprintf(hang, sizeof(hang), "http://127.0.0.1:%d/hang", t.s.port);
    snprintf(hello, sizeof(hello), "http://127.0.0.1:%d/hello", t.s.port);
    static result ra[3], rb;
    memset(ra, 0, sizeof(ra));
    memset(&rb, 0, sizeof(rb));
    t.expected = 4;
    for (int i = 0; i < 3; i++) {
        px_http_options o = opts(hang);
        ra[i].t = &t;
        PX_ASSERT_INT_EQ(
            px_http_client_request_owned(t.client, &owner_a, &o, on_result, &ra[i], NULL), 0);
    }
    px_http_options o = opts(hello);
    rb.t = &t;
    PX_ASSERT_INT_EQ(px_http_client_request_owned(t.client, &owner_b, &o, on_result, &rb, NULL),
                     0);
    owner_case oc = {.t = &t};
    uv_timer_t timer;
    uv_timer_init(&t.loop, &timer);
    timer.data = &oc;
    uv_timer_start(&timer, on_owner_timer, 100, 0);
    t.extra[t.nextra++] = (uv_handle_t *)&timer;

    PX_ASSERT_INT_EQ(run(&t), 0);
    PX_ASSERT(!t.watchdog_fired);
    PX_ASSERT_INT_EQ(oc.cancelled, 3);
    PX_ASSERT_INT_EQ(oc.done_after, 4); /* hello before, the three owner_a ones inside */
    for (int i = 0; i < 3; i++) {
        PX_ASSERT_INT_EQ(ra[i].calls, 1);
        PX_ASSERT_INT_EQ(ra[i].status, UV_ECANCELED);
    }
    PX_ASSERT_INT_EQ(rb.calls, 1);
    PX_ASSERT_INT_EQ(rb.status, 200);
}

static void test_options_size_and_validation(void)
{
    tctx t;
    PX_ASSERT_INT_EQ(setup(&t), 0);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/hello", t.s.port);
    static result ok, bad;
    memset(&ok, 0, sizeof(ok));
    memset(&bad, 0, sizeof(bad));

    /* A plugin built with a shorter px_http_options: fields past its size are garbage here
     * (a 1 ms timeout, a bogus SigV4 spec) and must not be read. */
    px_http_options o = opts(url);
    o.size = offsetof(px_http_options, timeout_ms);
    o.timeout_ms = 1;
    o.aws_sigv4 = "not\r\nvalid";
    PX_ASSERT_INT_EQ(request(&t, &o, &ok, NULL), 0);

    px_http_options b = opts(url);
    b.size = offsetof(px_http_options, url); /* no room for url */
    PX_ASSERT_INT_EQ(request(&t, &b, &bad, NULL), PX_EINVAL);
    b = opts(NULL);
    PX_ASSERT_INT_EQ(request(&t, &b, &bad, NULL), PX_EINVAL);
    const char *injected[] = {"X-A: 1\r\nX-B: 2", NULL};
    b = opts(url);
    b.headers = injected;
    PX_ASSERT_INT_EQ(request(&t, &b, &bad, NULL), PX_EINVAL);
    b = opts(url);
    b.method = "GET /x";
    PX_ASSERT_INT_EQ(request(&t, &b, &bad, NULL), PX_EINVAL);
    b = opts(url);
    b.aws_sigv4 = "aws:amz:us-east-1:sqs"; /* no key/secret */
    PX_ASSERT_INT_EQ(request(&t, &b, &bad, NULL), PX_EINVAL);

    t.expected = 1;
    PX_ASSERT_INT_EQ(run(&t), 0);
    PX_ASSERT(!t.watchdog_fired);
    PX_ASSERT_INT_EQ(ok.calls, 1);
    PX_ASSERT_INT_EQ(ok.status, 200);
    PX_ASSERT_INT_EQ(bad.calls, 0);
    PX_ASSERT_INT_EQ(t.s.requests, 1);
}

static void test_body_cap(void)
{
    tctx t;
    PX_ASSERT_INT_EQ(setup(&t), 0);
    px_http_client_set_max_body(t.client, 1024);
    char big[64], chunked[64], small[64];
    snprintf(big, sizeof(big), "http://127.0.0.1:%d/big", t.s.port);
    snprintf(chunked, sizeof(chunked), "http://127.0.0.1:%d/bigchunked", t.s.port);
    snprintf(small, sizeof(small), "http://127.0.0.1:%d/hello", t.s.port);
    static result rbig, rchunked, rsmall;
    memset(&rbig, 0, sizeof(rbig));
    memset(&rchunked, 0, sizeof(rchunked));
    memset(&rsmall, 0, sizeof(rsmall));
    px_http_options o = opts(big);
    PX_ASSERT_INT_EQ(request(&t, &o, &rbig, NULL), 0);
    o = opts(chunked);
    PX_ASSERT_INT_EQ(request(&t, &o, &rchunked, NULL), 0);
    o = opts(small);
    PX_ASSERT_INT_EQ(request(&t, &o, &rsmall, NULL), 0);
    t.expected = 3;
    PX_ASSERT_INT_EQ(run(&t), 0);
    PX_ASSERT(!t.watchdog_fired);
    PX_ASSERT_INT_EQ(rbig.status, PX_EHTTP);
    PX_ASSERT_STR_HAS(rbig.error, "too large");
    PX_ASSERT_INT_EQ(rchunked.status, PX_EHTTP);
    PX_ASSERT_STR_HAS(rchunked.error, "too large");
    PX_ASSERT_INT_EQ(rsmall.status, 200);
}

/* ---------------------------------------------------------------------------------------- */
/* AWS SigV4 against tests/peers/sigv4_peer.py */

#define AWS_KEY "AKIDEXAMPLE"
#define AWS_SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"

struct peer {
    tctx *t;
    uv_process_t proc;
    uv_pipe_t in, out;
    char buf[256];
    size_t len;
    int port, exited, stopping;
    int64_t exit_status;
    void (*on_ready)(peer *p);
};

static void peer_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    peer *p = h->data;
    *buf = uv_buf_init(p->buf + p->len, (unsigned)(sizeof(p->buf) - 1 - p->len));
}

static void peer_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    peer *p = s->data;
    if (nread < 0) {
        uv_read_stop(s);
        if (!p->port) {
            fprintf(stderr, "sigv4 peer ended before telling its port\n");
            finish(p->t);
        }
        return;
    }
    p->len += (size_t)nread;
    p->buf[p->len] = '\0';
    if (!p->port && strchr(p->buf, '\n') && sscanf(p->buf, "port=%d", &p->port) == 1) {
        uv_read_stop(s);
        p->on_ready(p);
    }
}

static void peer_exited(uv_process_t *proc, int64_t status, int sig)
{
    peer *p = proc->data;
    p->exited = 1;
    p->exit_status = status;
    uv_close((uv_handle_t *)proc, NULL);
    if (!p->port) {
        finish(p->t);
    }
}

/* Starts the peer; tls: serve HTTPS with the test certificate. */
static int peer_start(peer *p, tctx *t, int tls)
{
    p->t = t;
    t->peer = p;
    uv_pipe_init(&t->loop, &p->in, 0);
    uv_pipe_init(&t->loop, &p->out, 0);
    p->in.data = p->out.data = p->proc.data = p;
    char *args[] = {"python3", SIGV4_PEER, "--key", AWS_KEY, "--secret", AWS_SECRET,
                    "--region", "us-east-1", "--service", "sqs", NULL, NULL, NULL, NULL, NULL};
    if (tls) {
        args[10] = "--tls-cert";
        args[11] = PEER_TLS_DIR "/peer-cert.pem";
        args[12] = "--tls-key";
        args[13] = PEER_TLS_DIR "/peer-key.pem";
    }
    uv_stdio_container_t stdio[3];
    stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
    stdio[0].data.stream = (uv_stream_t *)&p->in;
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t *)&p->out;
    stdio[2].flags = UV_INHERIT_FD;
    stdio[2].data.fd = 2;
    uv_process_options_t po;
    memset(&po, 0, sizeof(po));
    po.file = "python3";
    po.args = args;
    po.exit_cb = peer_exited;
    po.stdio = stdio;
    po.stdio_count = 3;
    int rc = uv_spawn(&t->loop, &p->proc, &po);
    if (rc < 0) {
        fprintf(stderr, "cannot start python3: %s\n", uv_strerror(rc));
        uv_close((uv_handle_t *)&p->proc, NULL);
        uv_close((uv_handle_t *)&p->in, NULL);
        uv_close((uv_handle_t *)&p->out, NULL);
        p->exited = 1;
        p->stopping = 1;
        return rc;
    }
    return uv_read_start((uv_stream_t *)&p->out, peer_alloc, peer_read);
}

static void peer_stop(peer *p)
{
    if (p->stopping) {
        return;
    }
    p->stopping = 1;
    if (!p->exited) {
        uv_process_kill(&p->proc, SIGTERM);
    }
    uv_close((uv_handle_t *)&p->in, NULL); /* EOF on its stdin ends it too */
    uv_close((uv_handle_t *)&p->out, NULL);
}

static result sig_ok, sig_bad_secret, sig_get, sig_unsigned;

static void sigv4_send(peer *p, const char *method, const char *path, const char *body,
                       const char *secret, result *r)
{
    char url[160];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", p->port, path);
    static const char *form[] = {"Content-Type: application/x-www-form-urlencoded", NULL};
    px_http_options o = opts(url);
    o.method = method;
    if (body) {
        o.body = body;
        o.body_len = strlen(body);
        o.headers = form;
    }
    if (secret) {
        o.aws_sigv4 = "aws:amz:us-east-1:sqs";
        o.aws_key = AWS_KEY;
        o.aws_secret = secret;
    }
    if (request(p->t, &o, r, NULL) < 0) {
        fprintf(stderr, "sigv4 request refused\n");
        finish(p->t);
    }
}

static void sigv4_ready(peer *p)
{
    const char *queue = "/123456789012/test-queue";
    const char *send = "Action=SendMessage&MessageBody=hello%20world&Version=2012-11-05";
    sigv4_send(p, "POST", queue, send, AWS_SECRET, &sig_ok);
    sigv4_send(p, "POST", queue, send, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEX", &sig_bad_secret);
    sigv4_send(p, "GET",
               "/123456789012/test-queue?Action=GetQueueAttributes&AttributeName.1=All",
               NULL, AWS_SECRET, &sig_get);
    sigv4_send(p, "POST", queue, send, NULL, &sig_unsigned);
}

static void test_aws_sigv4(void)
{
    tctx t;
    PX_ASSERT_INT_EQ(setup(&t), 0);
    memset(&sig_ok, 0, sizeof(sig_ok));
    memset(&sig_bad_secret, 0, sizeof(sig_bad_secret));
    memset(&sig_get, 0, sizeof(sig_get));
    memset(&sig_unsigned, 0, sizeof(sig_unsigned));
    static peer p;
    memset(&p, 0, sizeof(p));
    p.on_ready = sigv4_ready;
    t.expected = 4;
    if (peer_start(&p, &t, 0) < 0) {
        finish(&t);
    }
    PX_ASSERT_INT_EQ(run(&t), 0);
    PX_ASSERT(!t.watchdog_fired);
    PX_ASSERT(p.port > 0);

    PX_ASSERT_INT_EQ(sig_ok.calls, 1);
    PX_ASSERT_STR_EQ(sig_ok.body, "signature ok");
    PX_ASSERT_INT_EQ(sig_ok.status, 200);
    PX_ASSERT_INT_EQ(sig_get.status, 200);
    PX_ASSERT_STR_EQ(sig_get.body, "signature ok");
    /* The same request signed with another secret is refused: the check can fail. */
    PX_ASSERT_INT_EQ(sig_bad_secret.status, 403);
    PX_ASSERT_STR_EQ(sig_bad_secret.body, "signature mismatch");
    PX_ASSERT_INT_EQ(sig_unsigned.status, 403);
    PX_ASSERT_STR_EQ(sig_unsigned.body, "missing authorization");
}

static result tls_default, tls_insecure;

static void tls_ready(peer *p)
{
    char url[64];
    snprintf(url, sizeof(url), "https://127.0.0.1:%d/ping", p->port);
    px_http_options o = opts(url);
    if (request(p->t, &o, &tls_default, NULL) < 0) {
        finish(p->t);
        return;
    }
    o.flags = PX_HTTP_INSECURE;
    if (request(p->t, &o, &tls_insecure, NULL) < 0) {
        finish(p->t);
    }
}

/* The peer's certificate is self-signed: refused unless the request opts out of verification. */
static void test_tls_verification(void)
{
    tctx t;
    PX_ASSERT_INT_EQ(setup(&t), 0);
    memset(&tls_default, 0, sizeof(tls_default));
    memset(&tls_insecure, 0, sizeof(tls_insecure));
    static peer p;
    memset(&p, 0, sizeof(p));
    p.on_ready = tls_ready;
    t.expected = 2;
    if (peer_start(&p, &t, 1) < 0) {
        finish(&t);
    }
    PX_ASSERT_INT_EQ(run(&t), 0);
    PX_ASSERT(!t.watchdog_fired);
    PX_ASSERT(p.port > 0);
    PX_ASSERT_INT_EQ(tls_default.calls, 1);
    PX_ASSERT_INT_EQ(tls_default.status, PX_EHTTP);
    PX_ASSERT_STR_HAS(tls_default.error, "certificate");
    PX_ASSERT_INT_EQ(tls_insecure.calls, 1);
    PX_ASSERT_INT_EQ(tls_insecure.status, 200);
    PX_ASSERT_STR_EQ(tls_insecure.body, "pong");
}

typedef struct nested_case {
    tctx *t;
    int done_when_close_returned;
    int pending_when_close_returned;
} nested_case;

static nested_case nested;
static result nested_first, nested_rest[3];

/* A response callback that closes the client while other calls are in flight. */
static void on_first_then_close(int status, const px_http_response *resp, const char *error,
                                void *arg)
{
    on_result(status, resp, error, arg);
    close_client(nested.t);
    nested.done_when_close_returned = nested.t->done;
    nested.pending_when_close_returned = (int)px_http_client_pending(nested.t->client);
}

static void test_close_from_callback(void)
{
    tctx t;
    PX_ASSERT_INT_EQ(setup(&t), 0);
    memset(&nested, 0, sizeof(nested));
    memset(&nested_first, 0, sizeof(nested_first));
    memset(nested_rest, 0, sizeof(nested_rest));
    nested.t = &t;
    char hang[64], hello[64];
    snprintf(hang, sizeof(hang), "http://127.0.0.1:%d/hang", t.s.port);
    snprintf(hello, sizeof(hello), "http://127.0.0.1:%d/hello", t.s.port);
    for (int i = 0; i < 3; i++) {
        px_http_options o = opts(hang);
        PX_ASSERT_INT_EQ(request(&t, &o, &nested_rest[i], NULL), 0);
    }
    px_http_options o = opts(hello);
    nested_first.t = &t;
    PX_ASSERT_INT_EQ(px_http_client_request(t.client, &o, on_first_then_close, &nested_first,
                                            NULL), 0);
    t.expected = 4;
    PX_ASSERT_INT_EQ(run(&t), 0);
    PX_ASSERT(!t.watchdog_fired);
    PX_ASSERT(t.client_closed);
    PX_ASSERT_INT_EQ(nested_first.status, 200);
    /* Inside a callback the cancelled ones wait until it returns, then all run. */
    PX_ASSERT_INT_EQ(nested.done_when_close_returned, 1);
    PX_ASSERT_INT_EQ(nested.pending_when_close_returned, 3);
    for (int i = 0; i < 3; i++) {
        PX_ASSERT_INT_EQ(nested_rest[i].calls, 1);
        PX_ASSERT_INT_EQ(nested_rest[i].status, UV_ECANCELED);
    }
}

PX_TEST_MAIN(PX_TEST(test_get_and_post_round_trip), PX_TEST(test_burst_reuses_connections),
             PX_TEST(test_timeout_does_not_block_loop), PX_TEST(test_connection_refused),
             PX_TEST(test_cancel), PX_TEST(test_close_cancels_in_flight),
             PX_TEST(test_cancel_owner), PX_TEST(test_options_size_and_validation),
             PX_TEST(test_body_cap), PX_TEST(test_aws_sigv4), PX_TEST(test_tls_verification),
             PX_TEST(test_close_from_callback))
