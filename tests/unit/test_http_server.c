/* HTTP server tests: the server runs on a uv loop in a background thread, listening on loopback
 * port 0; the test acts as the client with plain blocking sockets from the main thread. Work on
 * the loop (route changes, counters) goes through a uv_async_t and waits on a semaphore. */
#include "../../host/http/http_server.c"

#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "test.h"

/* ---- the server side ---------------------------------------------------------------------- */

typedef struct fixture {
    uv_loop_t loop;
    px_http_server *srv;
    uv_async_t async;
    uv_thread_t thread;
    uv_sem_t done;
    void (*fn)(void *arg);
    void *fn_arg;
    int port;
    int running; /* the loop thread runs */
    int closed;  /* close callback ran */
} fixture;

static fixture fx;
static int owner_a, owner_b, owner_hold, owner_host; /* addresses used as route owners */
static int async_started, async_done;                /* loop thread only */
static px_http_request *held[8];
static size_t nheld;

static void h_hello(px_http_request *req, void *arg)
{
    px_http_set_header(req, "X-Test", "yes");
    px_http_respond(req, 200, "text/plain", "hello", 5);
}

static void h_echo(px_http_request *req, void *arg)
{
    size_t len;
    const char *body = px_http_req_body(req, &len);
    const char *ct = px_http_req_header(req, "content-type");
    px_http_set_header(req, "X-Query", px_http_req_query(req));
    px_http_set_header(req, "X-Method", px_http_req_method(req));
    px_http_set_header(req, "X-Remote", px_http_req_remote(req));
    px_http_respond(req, 200, ct ? ct : "application/octet-stream", body, len);
}

/* Answers "<x-empty>|<X-B>" to show header storage and case-insensitive lookup. */
static void h_hdr(px_http_request *req, void *arg)
{
    const char *e = px_http_req_header(req, "x-empty");
    const char *b = px_http_req_header(req, "X-b");
    char out[256];
    int n = snprintf(out, sizeof out, "%s|%s", e ? e : "(null)", b ? b : "(null)");
    px_http_respond(req, 200, "text/plain", out, (size_t)n);
}

typedef struct async_req {
    uv_timer_t timer;
    px_http_request *req;
} async_req;

static void on_async_timer(uv_timer_t *t)
{
    async_req *a = t->data;
    char out[256];
    int n = snprintf(out, sizeof out, "async %s", px_http_req_path(a->req));
    px_http_respond(a->req, 200, "text/plain", out, (size_t)n);
    async_done++;
    uv_close((uv_handle_t *)t, (uv_close_cb)free);
}

/* Answers 100 ms later, from a timer, as a webhook does after the spool commit. */
static void h_async(px_http_request *req, void *arg)
{
    async_req *a = px_xcalloc(1, sizeof *a);
    a->req = req;
    uv_timer_init(&fx.loop, &a->timer);
    a->timer.data = a;
    uv_timer_start(&a->timer, on_async_timer, 100, 0);
    async_started++;
}

static void h_prefix(px_http_request *req, void *arg)
{
    char out[256];
    int n = snprintf(out, sizeof out, "prefix %s %s", px_http_req_path(req),
                     px_http_req_query(req));
    px_http_respond(req, 200, "text/plain", out, (size_t)n);
}

static void h_text(px_http_request *req, void *arg)
{
    px_http_respond(req, 200, "text/plain", arg, strlen(arg));
}

static void h_hold(px_http_request *req, void *arg)
{
    if (nheld < 8) {
        held[nheld++] = req;
    }
}

/* Answers with the status in the query: /status?204 */
static void h_status(px_http_request *req, void *arg)
{
    px_http_respond(req, atoi(px_http_req_query(req)), NULL, "{}", 2);
}

#define BIG_LEN (8u << 20)
static char *big_body;

/* A body far larger than the socket buffers: the write completes later. */
static void h_big(px_http_request *req, void *arg)
{
    px_http_respond(req, 200, "application/octet-stream", big_body, BIG_LEN);
}

static void on_async(uv_async_t *a)
{
    fx.fn(fx.fn_arg);
    uv_sem_post(&fx.done);
}

/* Runs fn(arg) on the loop thread and waits for it. */
static void on_loop(void (*fn)(void *), void *arg)
{
    fx.fn = fn;
    fx.fn_arg = arg;
    uv_async_send(&fx.async);
    uv_sem_wait(&fx.done);
}

static void loop_thread(void *arg) { uv_run(&fx.loop, UV_RUN_DEFAULT); }

static px_http_server_options test_options(void)
{
    return (px_http_server_options){
        .listen = "127.0.0.1:0",
        .max_header_bytes = 1024,
        .max_body_bytes = 1024,
        .header_timeout_ms = 300,
        .idle_timeout_ms = 2000,
        .max_connections = 64,
        .shutdown_timeout_ms = 3000,
    };
}

static int fx_stop(void);
static void cli_close_all(void);

static int fx_start(const px_http_server_options *opt)
{
    char err[256];
    signal(SIGPIPE, SIG_IGN);
    px_log_set_level(PX_LOG_WARN);
    cli_close_all(); /* after a failed case */
    if (fx.running) {
        fx_stop();
    }
    memset(&fx, 0, sizeof fx);
    async_started = async_done = 0;
    nheld = 0;
    uv_loop_init(&fx.loop);
    int rc = px_http_server_create(&fx.loop, opt, &fx.srv, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "create: %s\n", err);
        uv_loop_close(&fx.loop);
        return rc;
    }
    fx.port = px_http_server_port(fx.srv);
    px_http_server *s = fx.srv;
    px_http_server_route(s, "GET", "/hello", 0, h_hello, NULL, &owner_host);
    px_http_server_route(s, "POST", "/echo", 0, h_echo, NULL, &owner_host);
    px_http_server_route(s, NULL, "/hdr", 0, h_hdr, NULL, &owner_host);
    px_http_server_route(s, NULL, "/async", PX_ROUTE_PREFIX, h_async, NULL, &owner_host);
    px_http_server_route(s, "GET", "/files", PX_ROUTE_PREFIX, h_prefix, NULL, &owner_host);
    px_http_server_route(s, "GET", "/files/special", 0, h_text, "special", &owner_host);
    px_http_server_route(s, "GET", "/owned", 0, h_text, "a", &owner_a);
    px_http_server_route(s, "GET", "/only-a", 0, h_text, "only a", &owner_a);
    px_http_server_route(s, NULL, "/hold", 0, h_hold, NULL, &owner_hold);
    px_http_server_route(s, "GET", "/status", 0, h_status, NULL, &owner_host);
    px_http_server_route(s, "GET", "/big", 0, h_big, NULL, &owner_host);
    uv_async_init(&fx.loop, &fx.async, on_async);
    uv_sem_init(&fx.done, 0);
    uv_thread_create(&fx.thread, loop_thread, NULL);
    fx.running = 1;
    return 0;
}

static void on_server_closed(void *arg) { fx.closed = 1; }

static void stop_on_loop(void *arg)
{
    px_http_server_close(fx.srv, on_server_closed, NULL);
    uv_close((uv_handle_t *)&fx.async, NULL);
}

/* Closes the server, ends the loop thread; returns uv_loop_close() (0 = every handle closed). */
static int fx_stop(void)
{
    on_loop(stop_on_loop, NULL);
    uv_thread_join(&fx.thread);
    uv_sem_destroy(&fx.done);
    fx.running = 0;
    if (!fx.closed) {
        return -1;
    }
    return uv_loop_close(&fx.loop);
}

/* ---- the client side ---------------------------------------------------------------------- */

typedef struct client {
    int fd;
    size_t len;
    char buf[1 << 16];
} client;

typedef struct resp {
    int status;
    size_t body_len;
    char head[4096];
    char body[1 << 16];
} resp;

static int cli_open_family(client *c, int family, int port)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof ss);
    if (family == AF_INET6) {
        uv_ip6_addr("::1", port, (struct sockaddr_in6 *)&ss);
        sl = sizeof(struct sockaddr_in6);
    } else {
        uv_ip4_addr("127.0.0.1", port, (struct sockaddr_in *)&ss);
        sl = sizeof(struct sockaddr_in);
    }
    c->len = 0;
    c->fd = socket(family, SOCK_STREAM, 0);
    if (c->fd < 0) {
        return -1;
    }
    struct timeval tv = {.tv_sec = 5};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(c->fd, (struct sockaddr *)&ss, sl) != 0) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    return 0;
}

static int cli_open(client *c) { return cli_open_family(c, AF_INET, fx.port); }

static void cli_close(client *c)
{
    if (c->fd > 0) { /* 0: never opened (static storage) */
        close(c->fd);
        c->fd = -1;
    }
}

static int cli_send_n(client *c, const char *s, size_t n)
{
    while (n) {
        ssize_t w = send(c->fd, s, n, MSG_NOSIGNAL);
        if (w <= 0) {
            return -1;
        }
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

static int cli_send(client *c, const char *s) { return cli_send_n(c, s, strlen(s)); }

static int cli_fill(client *c)
{
    if (c->len == sizeof c->buf) {
        return -1;
    }
    ssize_t n = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
    if (n <= 0) {
        return -1;
    }
    c->len += (size_t)n;
    return 0;
}

/* Value of header `name` in r (case-insensitive), or NULL. Four rotating result buffers. */
static const char *resp_header(const resp *r, const char *name)
{
    static char vals[4][512];
    static int slot;
    size_t n = strlen(name);
    const char *line = strstr(r->head, "\r\n");
    while (line && line[2] != '\r') {
        line += 2;
        if (strncasecmp(line, name, n) == 0 && line[n] == ':') {
            const char *v = line + n + 1;
            while (*v == ' ') {
                v++;
            }
            const char *e = strstr(v, "\r\n");
            char *out = vals[slot++ % 4];
            snprintf(out, sizeof vals[0], "%.*s", (int)(e - v), v);
            return out;
        }
        line = strstr(line, "\r\n");
    }
    return NULL;
}

/* Reads one response (no body when head_only). Returns 0, or -1 on EOF, timeout or junk. */
static int cli_read_ex(client *c, resp *r, int head_only)
{
    char *end;
    memset(r, 0, offsetof(resp, body) + 1);
    while (!(end = memmem(c->buf, c->len, "\r\n\r\n", 4))) {
        if (cli_fill(c) != 0) {
            return -1;
        }
    }
    size_t hlen = (size_t)(end - c->buf) + 4;
    if (hlen >= sizeof r->head) {
        return -1;
    }
    memcpy(r->head, c->buf, hlen);
    r->head[hlen] = '\0';
    if (sscanf(r->head, "HTTP/1.1 %d", &r->status) != 1) {
        return -1;
    }
    const char *cl = resp_header(r, "Content-Length");
    size_t blen = cl ? strtoul(cl, NULL, 10) : 0;
    if (head_only || r->status < 200) {
        blen = 0;
    }
    if (blen >= sizeof r->body) {
        return -1;
    }
    while (c->len < hlen + blen) {
        if (cli_fill(c) != 0) {
            return -1;
        }
    }
    memcpy(r->body, c->buf + hlen, blen);
    r->body[blen] = '\0';
    r->body_len = blen;
    memmove(c->buf, c->buf + hlen + blen, c->len - hlen - blen);
    c->len -= hlen + blen;
    return 0;
}

static int cli_read(client *c, resp *r) { return cli_read_ex(c, r, 0); }

/* 1 when the server closed the connection (nothing more to read). */
static int cli_eof(client *c)
{
    if (c->len) {
        return 0;
    }
    char b[64];
    ssize_t n = recv(c->fd, b, sizeof b, 0);
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

/* One request on a fresh connection. */
static int fetch(const char *request, resp *r)
{
    static client c;
    if (cli_open(&c) != 0) {
        return -1;
    }
    int rc = cli_send(&c, request) == 0 ? cli_read(&c, r) : -1;
    cli_close(&c);
    return rc;
}

static resp R, R2; /* big: kept off the stack */
static client C, C2, C3;

static void cli_close_all(void)
{
    cli_close(&C);
    cli_close(&C2);
    cli_close(&C3);
}

#define GET_HELLO "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"

/* The server still answers a normal client. */
static int still_serves(void)
{
    return fetch(GET_HELLO, &R2) == 0 && R2.status == 200 && strcmp(R2.body, "hello") == 0;
}

/* Waits (bounded) until the loop-side counter reaches want. */
static int counter;
static void read_counter(void *arg) { counter = *(int *)arg; }

static int wait_counter(int *var, int want)
{
    for (int i = 0; i < 500; i++) {
        on_loop(read_counter, var);
        if (counter >= want) {
            return 1;
        }
        usleep(10000);
    }
    return 0;
}

/* ---- cases -------------------------------------------------------------------------------- */

static void test_get_200(void)
{
    px_http_server_options o = test_options();
    PX_ASSERT_INT_EQ(fx_start(&o), 0);
    PX_ASSERT(fx.port > 0);
    PX_ASSERT_INT_EQ(fetch(GET_HELLO, &R), 0);
    PX_ASSERT_INT_EQ(R.status, 200);
    PX_ASSERT_STR_EQ(R.body, "hello");
    PX_ASSERT_STR_EQ(resp_header(&R, "Content-Length"), "5");
    PX_ASSERT_STR_EQ(resp_header(&R, "Content-Type"), "text/plain");
    PX_ASSERT_STR_EQ(resp_header(&R, "X-Test"), "yes");
    const char *date = resp_header(&R, "Date"); /* e.g. "Sun, 06 Nov 1994 08:49:37 GMT" */
    PX_ASSERT(date != NULL);
    PX_ASSERT_INT_EQ(strlen(date), 29);
    PX_ASSERT_STR_EQ(date + 25, " GMT");
    PX_ASSERT(resp_header(&R, "Connection") == NULL);
    PX_ASSERT_INT_EQ(fx_stop(), 0);
}

static void test_bad_options(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    px_http_server *srv = NULL;
    char err[128] = "";
    px_http_server_options o = test_options();
    o.listen = "localhost";
    PX_ASSERT_INT_EQ(px_http_server_create(&loop, &o, &srv, err, sizeof err), PX_EINVAL);
    PX_ASSERT_STR_HAS(err, "invalid listen address");
    o.listen = "[::1:80";
    PX_ASSERT_INT_EQ(px_http_server_create(&loop, &o, &srv, err, sizeof err), PX_EINVAL);
    o.listen = "127.0.0.1:70000";
    PX_ASSERT_INT_EQ(px_http_server_create(&loop, &o, &srv, err, sizeof err), PX_EINVAL);
    o.listen = "192.0.2.1:0"; /* not an address of this machine */
    PX_ASSERT_INT_EQ(px_http_server_create(&loop, &o, &srv, err, sizeof err), UV_EADDRNOTAVAIL);
    PX_ASSERT(srv == NULL);
    PX_ASSERT_INT_EQ(uv_loop_close(&loop), 0);
}

static void test_post_echo(void)
{
    px_http_server_options o = test_options();
    PX_ASSERT_INT_EQ(fx_start(&o), 0);
    PX_ASSERT_INT_EQ(fetch("POST /echo?x=1&y=2 HTTP/1.1\r\nHost: t\r\nContent-Type: text/x-test\r\n"
                           "Content-Length: 9\r\n\r\nping-pong",
                           &R),
                     0);
    PX_ASSERT_INT_EQ(R.status, 200);
    PX_ASSERT_STR_EQ(R.body, "ping-pong");
    PX_ASSERT_STR_EQ(resp_header(&R, "Content-Length"), "9");
    PX_ASSERT_STR_EQ(resp_header(&R, "Content-Type"), "text/x-test");
    PX_ASSERT_STR_EQ(resp_header(&R, "X-Query"), "x=1&y=2");
    PX_ASSERT_STR_EQ(resp_header(&R, "X-Method"), "POST");
    PX_ASSERT(strncmp(resp_header(&R, "X-Remote"), "127.0.0.1:", 10) == 0);
    /* empty body */
    PX_ASSERT_INT_EQ(fetch("POST /echo HTTP/1.1\r\nContent-Length: 0\r\n\r\n", &R), 0);
    PX_ASSERT_INT_EQ(R.status, 200);
    PX_ASSERT_STR_EQ(resp_header(&R, "Content-Length"), "0");
    /* header storage: empty value, case-insensitive names, trailing blanks trimmed */
    PX_ASSERT_INT_EQ(fetch("GET /hdr HTTP/1.1\r\nX-Empty:\r\nx-B:  two  \r\n\r\n", &R), 0);
    PX_ASSERT_STR_EQ(R.body, "|two");
    PX_ASSERT_INT_EQ(fx_stop(), 0);
}

static void test_keep_alive(void)
{
    px_http_server_options o = test_options();
    PX_ASSERT_INT_EQ(fx_start(&o), 0);
    PX_ASSERT_INT_EQ(cli_open(&C), 0);
    for (int i = 0; i < 3; i++) {
        PX_ASSERT_INT_EQ(cli_send(&C, GET_HELLO), 0);
        PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
        PX_ASSERT_INT_EQ(R.status, 200);
        PX_ASSERT_STR_EQ(R.body, "hello");
        PX_ASSERT(resp_header(&R, "Connection") == NULL);
    }
    /* a 404 keeps the connection too */
    PX_ASSERT_INT_EQ(cli_send(&C, "GET /nope HTTP/1.1\r\n\r\n" GET_HELLO), 0);
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_INT_EQ(R.status, 404);
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_INT_EQ(R.status, 200);
    cli_close(&C);
    PX_ASSERT_INT_EQ(fx_stop(), 0);
}

static void test_pipelined(void)
{
    px_http_server_options o = test_options();
    PX_ASSERT_INT_EQ(fx_start(&o), 0);
    PX_ASSERT_INT_EQ(cli_open(&C), 0);
    PX_ASSERT_INT_EQ(cli_send(&C, GET_HELLO "POST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
                                  "GET /files/x HTTP/1.1\r\n\r\n"),
                     0);
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_STR_EQ(R.body, "hello");
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_STR_EQ(R.body, "abc");
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_STR_EQ(R.body, "prefix /files/x ");

    /* the first answered later, from a timer: the second still comes second */
    PX_ASSERT_INT_EQ(cli_send(&C, "GET /async/1 HTTP/1.1\r\n\r\n" GET_HELLO), 0);
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_STR_EQ(R.body, "async /async/1");
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_STR_EQ(R.body, "hello");

    /* more pipelined input than the connection buffers while the first request waits */
    static char big[64 * 1024];
    size_t n = (size_t)snprintf(big, sizeof big, "GET /async/2 HTTP/1.1\r\n\r\n");
    for (int i = 0; i < 800; i++) {
        n += (size_t)snprintf(big + n, sizeof big - n,
                              "POST /echo HTTP/1.1\r\nContent-Length: 8\r\n\r\nreq-%04d", i);
    }
    PX_ASSERT(n > 2 * RBUF_SIZE);
    PX_ASSERT_INT_EQ(cli_send_n(&C, big, n), 0);
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_STR_EQ(R.body, "async /async/2");
    for (int i = 0; i < 800; i++) {
        char want[16];
        snprintf(want, sizeof want, "req-%04d", i);
        PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
        PX_ASSERT_STR_EQ(R.body, want);
    }
    cli_close(&C);
    PX_ASSERT_INT_EQ(fx_stop(), 0);
}

static void test_chunked_body(void)
{
    px_http_server_options o = test_options();
    PX_ASSERT_INT_EQ(fx_start(&o), 0);
    PX_ASSERT_INT_EQ(cli_open(&C), 0);
    PX_ASSERT_INT_EQ(cli_send(&C, "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                                  "5\r\nhello\r\n"),
                     0);
    usleep(20000); /* let the chunks arrive in separate reads */
    PX_ASSERT_INT_EQ(cli_send(&C, "6;ext=1\r\n world\r\n0\r\n\r\n"), 0);
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_INT_EQ(R.status, 200);
    PX_ASSERT_STR_EQ(R.body, "hello world");
    PX_ASSERT_STR_EQ(resp_header(&R, "Content-Length"), "11");
    /* the connection goes on */
    PX_ASSERT_INT_EQ(cli_send(&C, GET_HELLO), 0);
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_INT_EQ(R.status, 200);
    cli_close(&C);
    PX_ASSERT_INT_EQ(fx_stop(), 0);
}

static void test_body_too_large(void)
{
    static char req[4096];
    px_http_server_options o = test_options();
    PX_ASSERT_INT_EQ(fx_start(&o), 0);

    /* exactly the limit passes */
    int n = snprintf(req, sizeof req, "POST /echo HTTP/1.1\r\nContent-Length: 1024\r\n\r\n");
    memset(req + n, 'x', 1024);
    req[n + 1024] = '\0';
    PX_ASSERT_INT_EQ(fetch(req, &R), 0);
    PX_ASSERT_INT_EQ(R.status, 200);
    PX_ASSERT_INT_EQ(R.body_len, 1024);

    /* one byte over, announced by Content-Length */
    n = snprintf(req, sizeof req, "POST /echo HTTP/1.1\r\nContent-Length: 1025\r\n\r\n");
    memset(req + n, 'x', 1025);
    req[n + 1025] = '\0';
    PX_ASSERT_INT_EQ(cli_open(&C), 0);
    PX_ASSERT_INT_EQ(cli_send(&C, req), 0);
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_INT_EQ(R.status, 413);
    PX_ASSERT_STR_EQ(resp_header(&R, "Connection"), "close");
    PX_ASSERT_STR_EQ(R.body, "{\"error\":\"body too large\"}");
    PX_ASSERT(cli_eof(&C));
    cli_close(&C);

    /* one byte over, found while decoding chunks */
    n = snprintf(req, sizeof req,
                 "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n200\r\n");
    memset(req + n, 'y', 512);
    n += 512;
    n += snprintf(req + n, sizeof req - (size_t)n, "\r\n201\r\n");
    memset(req + n, 'y', 513);
    n += 513;
    snprintf(req + n, sizeof req - (size_t)n, "\r\n0\r\n\r\n");
    PX_ASSERT_INT_EQ(cli_open(&C), 0);
    PX_ASSERT_INT_EQ(cli_send(&C, req), 0);
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_INT_EQ(R.status, 413);
    PX_ASSERT(cli_eof(&C));
    cli_close(&C);

    PX_ASSERT(still_serves());
    PX_ASSERT_INT_EQ(fx_stop(), 0);
}

static void test_header_too_large(void)
{
    static char req[4096];
    px_http_server_options o = test_options();
    PX_ASSERT_INT_EQ(fx_start(&o), 0);
    int n = snprintf(req, sizeof req, "GET /hello HTTP/1.1\r\nX-Big: ");
    memset(req + n, 'a', 2000);
    snprintf(req + n + 2000, sizeof req - (size_t)n - 2000, "\r\n\r\n");
    PX_ASSERT_INT_EQ(cli_open(&C), 0);
    PX_ASSERT_INT_EQ(cli_send(&C, req), 0);
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_INT_EQ(R.status, 431);
    PX_ASSERT_STR_EQ(resp_header(&R, "Connection"), "close");
    PX_ASSERT_STR_HAS(R.body, "\"error\"");
    PX_ASSERT(cli_eof(&C));
    cli_close(&C);

    /* too many small headers */
    n = snprintf(req, sizeof req, "GET /hello HTTP/1.1\r\n");
    for (int i = 0; i < 120; i++) {
        n += snprintf(req + n, sizeof req - (size_t)n, "A%d:\r\n", i);
    }
    snprintf(req + n, sizeof req - (size_t)n, "\r\n");
    PX_ASSERT_INT_EQ(fetch(req, &R), 0);
    PX_ASSERT_INT_EQ(R.status, 431);

    PX_ASSERT(still_serves());
    PX_ASSERT_INT_EQ(fx_stop(), 0);
}

static void test_malformed(void)
{
    static const char *bad[] = {
        "BLAH / HTTP/1.1\r\n\r\n",
        "GET /hello XTTP/1.1\r\n\r\n",
        "GET /hello HTTP/1.1\r\nBad Header\r\n\r\n",
        "POST /echo HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "CONNECT example.com:443 HTTP/1.1\r\n\r\n",
    };
    px_http_server_options o = test_options();
    PX_ASSERT_INT_EQ(fx_start(&o), 0);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        PX_ASSERT_INT_EQ(cli_open(&C), 0);
        PX_ASSERT_INT_EQ(cli_send(&C, bad[i]), 0);
        PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
        if (R.status != 400) {
            fprintf(stderr, "case %zu: status %d\n", i, R.status);
        }
        PX_ASSERT_INT_EQ(R.status, 400);
        PX_ASSERT_STR_EQ(R.body, "{\"error\":\"bad request\"}");
        PX_ASSERT(cli_eof(&C));
        cli_close(&C);
        PX_ASSERT(still_serves());
    }
    /* a bad request after a good one on the same connection */
    PX_ASSERT_INT_EQ(cli_open(&C), 0);
    PX_ASSERT_INT_EQ(cli_send(&C, GET_HELLO "\x01\x02\r\n\r\n"), 0);
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_INT_EQ(R.status, 200);
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_INT_EQ(R.status, 400);
    PX_ASSERT(cli_eof(&C));
    cli_close(&C);
    PX_ASSERT_INT_EQ(fx_stop(), 0);
}

static void test_timeouts(void)
{
    px_http_server_options o = test_options();
    o.idle_timeout_ms = 400;
    PX_ASSERT_INT_EQ(fx_start(&o), 0);

    /* headers trickling in: the deadline counts from the first byte, not from the last */
    PX_ASSERT_INT_EQ(cli_open(&C), 0);
    PX_ASSERT_INT_EQ(cli_send(&C, "GET /hello HTTP/1.1\r\n"), 0);
    for (int i = 0; i < 4; i++) {
        usleep(100000);
        cli_send(&C, "X-Slow: 1\r\n"); /* may fail once the server gave up */
    }
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_INT_EQ(R.status, 408);
    PX_ASSERT_STR_EQ(resp_header(&R, "Connection"), "close");
    PX_ASSERT_STR_EQ(R.body, "{\"error\":\"request timeout\"}");
    PX_ASSERT(cli_eof(&C));
    cli_close(&C);

    /* a body that stops arriving */
    PX_ASSERT_INT_EQ(cli_open(&C), 0);
    PX_ASSERT_INT_EQ(cli_send(&C, "POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"), 0);
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_INT_EQ(R.status, 408);
    PX_ASSERT(cli_eof(&C));
    cli_close(&C);

    /* a connection that never sends anything is closed without an answer */
    PX_ASSERT_INT_EQ(cli_open(&C), 0);
    PX_ASSERT(cli_eof(&C));
    cli_close(&C);

    /* an idle keep-alive connection is closed quietly */
    PX_ASSERT_INT_EQ(cli_open(&C), 0);
    PX_ASSERT_INT_EQ(cli_send(&C, GET_HELLO), 0);
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_INT_EQ(R.status, 200);
    PX_ASSERT(cli_eof(&C));
    cli_close(&C);

    PX_ASSERT(still_serves());
    PX_ASSERT_INT_EQ(fx_stop(), 0);
}

/* Sends the body one byte at a time, each well within the header timeout, until the server
 * answers or closes. Returns how many bytes went out. */
static int trickle_until_answered(client *c, int max_bytes)
{
    int sent = 0;
    for (; sent < max_bytes; sent++) {
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        if (poll(&pfd, 1, 20) != 0 || cli_send(c, "x") != 0) {
            break;
        }
    }
    return sent;
}

static void test_request_deadline(void)
{
    px_http_server_options o = test_options();
    o.header_timeout_ms = 2000; /* each byte comes well within it... */
    o.request_timeout_ms = 300; /* ...but the whole request does not */
    o.idle_timeout_ms = 10000;
    PX_ASSERT_INT_EQ(fx_start(&o), 0);

    /* a body trickling in steadily is cut at the request's deadline, not held as long as it
     * keeps coming (500 bytes at 20 ms each would take 10 s) */
    PX_ASSERT_INT_EQ(cli_open(&C), 0);
    PX_ASSERT_INT_EQ(cli_send(&C, "POST /echo HTTP/1.1\r\nContent-Length: 1000\r\n\r\n"), 0);
    int sent = trickle_until_answered(&C, 500);
    PX_ASSERT(sent < 500);
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_INT_EQ(R.status, 408);
    PX_ASSERT_STR_EQ(resp_header(&R, "Connection"), "close");
    PX_ASSERT_STR_EQ(R.body, "{\"error\":\"request timeout\"}");
    PX_ASSERT(cli_eof(&C));
    cli_close(&C);
    PX_ASSERT(still_serves());

    /* the next request on a kept-alive connection gets a deadline of its own */
    PX_ASSERT_INT_EQ(cli_open(&C), 0);
    PX_ASSERT_INT_EQ(cli_send(&C, GET_HELLO), 0);
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_INT_EQ(R.status, 200);
    usleep((useconds_t)(o.request_timeout_ms + 100) * 1000);
    PX_ASSERT_INT_EQ(cli_send(&C, "POST /echo HTTP/1.1\r\nContent-Length: 2\r\n\r\nok"), 0);
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_INT_EQ(R.status, 200);
    PX_ASSERT_STR_EQ(R.body, "ok");
    cli_close(&C);

    PX_ASSERT_INT_EQ(fx_stop(), 0);
}

static size_t nconns;
static void read_conns(void *arg) { nconns = px_http_server_connections(fx.srv); }

static void test_max_connections(void)
{
    px_http_server_options o = test_options();
    o.max_connections = 2;
    PX_ASSERT_INT_EQ(fx_start(&o), 0);
    PX_ASSERT_INT_EQ(cli_open(&C), 0);
    PX_ASSERT_INT_EQ(cli_open(&C2), 0);
    PX_ASSERT_INT_EQ(cli_send(&C, GET_HELLO), 0);
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_INT_EQ(R.status, 200);
    PX_ASSERT_INT_EQ(cli_send(&C2, GET_HELLO), 0);
    PX_ASSERT_INT_EQ(cli_read(&C2, &R), 0);
    PX_ASSERT_INT_EQ(R.status, 200);
    on_loop(read_conns, NULL);
    PX_ASSERT_INT_EQ(nconns, 2);

    PX_ASSERT_INT_EQ(cli_open(&C3), 0);
    PX_ASSERT_INT_EQ(cli_read(&C3, &R), 0);
    PX_ASSERT_INT_EQ(R.status, 503);
    PX_ASSERT_STR_EQ(resp_header(&R, "Connection"), "close");
    PX_ASSERT_STR_EQ(R.body, "{\"error\":\"too many connections\"}");
    PX_ASSERT(cli_eof(&C3));
    cli_close(&C3);

    /* the two admitted connections still work */
    PX_ASSERT_INT_EQ(cli_send(&C, GET_HELLO), 0);
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_INT_EQ(R.status, 200);

    /* once one leaves, a newcomer is served (poll: the server notices the close a bit later) */
    cli_close(&C);
    int ok = 0;
    for (int i = 0; i < 200 && !ok; i++) {
        if (fetch(GET_HELLO, &R) == 0 && R.status == 200) {
            ok = 1;
        } else {
            usleep(10000);
        }
    }
    PX_ASSERT(ok);
    cli_close(&C2);
    PX_ASSERT_INT_EQ(fx_stop(), 0);
}

static void route_put_echo(void *arg)
{
    px_http_server_route(fx.srv, "PUT", "/echo", 0, h_echo, NULL, &owner_host);
}

static void test_404_405(void)
{
    px_http_server_options o = test_options();
    PX_ASSERT_INT_EQ(fx_start(&o), 0);
    PX_ASSERT_INT_EQ(fetch("GET /nope HTTP/1.1\r\n\r\n", &R), 0);
    PX_ASSERT_INT_EQ(R.status, 404);
    PX_ASSERT_STR_EQ(resp_header(&R, "Content-Type"), "application/json");
    PX_ASSERT_STR_EQ(R.body, "{\"error\":\"not found\"}");
    PX_ASSERT_INT_EQ(fetch("DELETE /hello HTTP/1.1\r\n\r\n", &R), 0);
    PX_ASSERT_INT_EQ(R.status, 405);
    PX_ASSERT_STR_EQ(resp_header(&R, "Allow"), "GET, HEAD");
    PX_ASSERT_STR_EQ(R.body, "{\"error\":\"method not allowed\"}");
    PX_ASSERT_INT_EQ(fetch("GET /echo HTTP/1.1\r\n\r\n", &R), 0);
    PX_ASSERT_INT_EQ(R.status, 405);
    PX_ASSERT_STR_EQ(resp_header(&R, "Allow"), "POST");
    on_loop(route_put_echo, NULL);
    PX_ASSERT_INT_EQ(fetch("GET /echo HTTP/1.1\r\n\r\n", &R), 0);
    PX_ASSERT_INT_EQ(R.status, 405);
    PX_ASSERT_STR_EQ(resp_header(&R, "Allow"), "POST, PUT");
    /* prefix boundaries */
    PX_ASSERT_INT_EQ(fetch("GET /filesx HTTP/1.1\r\n\r\n", &R), 0);
    PX_ASSERT_INT_EQ(R.status, 404);
    PX_ASSERT_INT_EQ(fetch("GET /hello/x HTTP/1.1\r\n\r\n", &R), 0);
    PX_ASSERT_INT_EQ(R.status, 404);
    PX_ASSERT_INT_EQ(fx_stop(), 0);
}

static void test_prefix_and_head(void)
{
    px_http_server_options o = test_options();
    PX_ASSERT_INT_EQ(fx_start(&o), 0);
    PX_ASSERT_INT_EQ(fetch("GET /files HTTP/1.1\r\n\r\n", &R), 0);
    PX_ASSERT_STR_EQ(R.body, "prefix /files ");
    PX_ASSERT_INT_EQ(fetch("GET /files/a/b?x=1 HTTP/1.1\r\n\r\n", &R), 0);
    PX_ASSERT_STR_EQ(R.body, "prefix /files/a/b x=1");
    PX_ASSERT_INT_EQ(fetch("GET http://t/files/abs?q HTTP/1.1\r\n\r\n", &R), 0);
    PX_ASSERT_STR_EQ(R.body, "prefix /files/abs q");
    /* exact beats prefix */
    PX_ASSERT_INT_EQ(fetch("GET /files/special HTTP/1.1\r\n\r\n", &R), 0);
    PX_ASSERT_STR_EQ(R.body, "special");
    PX_ASSERT_INT_EQ(fetch("GET /files/special/more HTTP/1.1\r\n\r\n", &R), 0);
    PX_ASSERT_STR_EQ(R.body, "prefix /files/special/more ");
    /* HEAD: GET's headers, no body; the next pipelined response follows directly */
    PX_ASSERT_INT_EQ(cli_open(&C), 0);
    PX_ASSERT_INT_EQ(cli_send(&C, "HEAD /hello HTTP/1.1\r\n\r\n" GET_HELLO), 0);
    PX_ASSERT_INT_EQ(cli_read_ex(&C, &R, 1), 0);
    PX_ASSERT_INT_EQ(R.status, 200);
    PX_ASSERT_STR_EQ(resp_header(&R, "Content-Length"), "5");
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_STR_EQ(R.body, "hello");
    cli_close(&C);
    PX_ASSERT_INT_EQ(fx_stop(), 0);
}

static void test_connection_close(void)
{
    px_http_server_options o = test_options();
    PX_ASSERT_INT_EQ(fx_start(&o), 0);
    PX_ASSERT_INT_EQ(cli_open(&C), 0);
    PX_ASSERT_INT_EQ(cli_send(&C, "GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n"), 0);
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_INT_EQ(R.status, 200);
    PX_ASSERT_STR_EQ(R.body, "hello");
    PX_ASSERT_STR_EQ(resp_header(&R, "Connection"), "close");
    PX_ASSERT(cli_eof(&C));
    cli_close(&C);
    PX_ASSERT_INT_EQ(fx_stop(), 0);
}

static void test_http10(void)
{
    px_http_server_options o = test_options();
    PX_ASSERT_INT_EQ(fx_start(&o), 0);
    PX_ASSERT_INT_EQ(cli_open(&C), 0);
    PX_ASSERT_INT_EQ(cli_send(&C, "GET /hello HTTP/1.0\r\n\r\n"), 0);
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_INT_EQ(R.status, 200);
    PX_ASSERT_STR_EQ(R.body, "hello");
    PX_ASSERT_STR_EQ(resp_header(&R, "Connection"), "close");
    PX_ASSERT(cli_eof(&C));
    cli_close(&C);

    /* HTTP/1.0 asking for keep-alive gets it */
    PX_ASSERT_INT_EQ(cli_open(&C), 0);
    for (int i = 0; i < 2; i++) {
        PX_ASSERT_INT_EQ(cli_send(&C, "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), 0);
        PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
        PX_ASSERT_INT_EQ(R.status, 200);
        PX_ASSERT_STR_EQ(resp_header(&R, "Connection"), "keep-alive");
    }
    cli_close(&C);
    PX_ASSERT_INT_EQ(fx_stop(), 0);
}

static int npending;
static void count_pending(void *arg)
{
    npending = 0;
    for (conn *c = fx.srv->conns; c; c = c->next) {
        npending += c->pending;
    }
}

static void test_disconnect_while_pending(void)
{
    px_http_server_options o = test_options();
    PX_ASSERT_INT_EQ(fx_start(&o), 0);
    PX_ASSERT_INT_EQ(cli_open(&C), 0);
    PX_ASSERT_INT_EQ(cli_send(&C, "GET /async/gone HTTP/1.1\r\n\r\n"), 0);
    PX_ASSERT(wait_counter(&async_started, 1));
    cli_close(&C);
    /* the handler answers after the client left: nothing to write, the request is freed */
    PX_ASSERT(wait_counter(&async_done, 1));
    on_loop(count_pending, NULL);
    PX_ASSERT_INT_EQ(npending, 0);
    PX_ASSERT(still_serves());
    PX_ASSERT_INT_EQ(fx_stop(), 0);
}

static void test_ipv6(void)
{
    px_http_server_options o = test_options();
    o.listen = "[::1]:0";
    int rc = fx_start(&o);
    if (rc == UV_EADDRNOTAVAIL || rc == UV_EAFNOSUPPORT) {
        PX_SKIP("no ::1 on this machine");
    }
    PX_ASSERT_INT_EQ(rc, 0);
    PX_ASSERT_INT_EQ(cli_open_family(&C, AF_INET6, fx.port), 0);
    PX_ASSERT_INT_EQ(cli_send(&C, "POST /echo HTTP/1.1\r\nContent-Length: 2\r\n\r\nv6"), 0);
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_INT_EQ(R.status, 200);
    PX_ASSERT_STR_EQ(R.body, "v6");
    PX_ASSERT(strncmp(resp_header(&R, "X-Remote"), "[::1]:", 6) == 0);
    cli_close(&C);
    PX_ASSERT_INT_EQ(fx_stop(), 0);
}

static size_t nremoved;
static int route_rc;
static void route_b(void *arg)
{
    route_rc = px_http_server_route(fx.srv, "GET", "/owned", 0, h_text, "b", &owner_b);
}
static void unroute(void *arg) { nremoved = px_http_server_unroute_owner(fx.srv, arg); }

static void test_route_replace(void)
{
    px_http_server_options o = test_options();
    PX_ASSERT_INT_EQ(fx_start(&o), 0);
    PX_ASSERT_INT_EQ(fetch("GET /owned HTTP/1.1\r\n\r\n", &R), 0);
    PX_ASSERT_STR_EQ(R.body, "a");
    /* a keep-alive connection opened before the replacement sees the new route */
    PX_ASSERT_INT_EQ(cli_open(&C), 0);
    PX_ASSERT_INT_EQ(cli_send(&C, "GET /owned HTTP/1.1\r\n\r\n"), 0);
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_STR_EQ(R.body, "a");
    on_loop(route_b, NULL);
    PX_ASSERT_INT_EQ(route_rc, 0);
    PX_ASSERT_INT_EQ(cli_send(&C, "GET /owned HTTP/1.1\r\n\r\n"), 0);
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_STR_EQ(R.body, "b");
    /* dropping the old owner leaves the replaced route alone */
    on_loop(unroute, &owner_a);
    PX_ASSERT_INT_EQ(nremoved, 1); /* "/only-a"; "/owned" belongs to b now */
    PX_ASSERT_INT_EQ(cli_send(&C, "GET /only-a HTTP/1.1\r\n\r\nGET /owned HTTP/1.1\r\n\r\n"), 0);
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_INT_EQ(R.status, 404);
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_STR_EQ(R.body, "b");
    on_loop(unroute, &owner_b);
    PX_ASSERT_INT_EQ(nremoved, 1);
    PX_ASSERT_INT_EQ(cli_send(&C, "GET /owned HTTP/1.1\r\n\r\n"), 0);
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_INT_EQ(R.status, 404);
    cli_close(&C);
    PX_ASSERT_INT_EQ(fx_stop(), 0);
}

static void test_defaults_and_bad_routes(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    px_http_server *srv;
    px_http_server_options o2 = {.listen = "127.0.0.1:0"};
    PX_ASSERT_INT_EQ(px_http_server_create(&loop, &o2, &srv, NULL, 0), 0);
    PX_ASSERT_INT_EQ(srv->opt.max_header_bytes, 16 * 1024);
    PX_ASSERT_INT_EQ(srv->opt.max_body_bytes, 1024 * 1024);
    PX_ASSERT_INT_EQ(srv->opt.header_timeout_ms, 10000);
    PX_ASSERT_INT_EQ(srv->opt.idle_timeout_ms, 60000);
    PX_ASSERT_INT_EQ(srv->opt.request_timeout_ms, 30000);
    PX_ASSERT_INT_EQ(srv->opt.max_connections, 1024);
    PX_ASSERT_INT_EQ(px_http_server_connections(srv), 0);
    PX_ASSERT_INT_EQ(px_http_server_route(srv, "GET", "nope", 0, h_hello, NULL, NULL), PX_EINVAL);
    PX_ASSERT_INT_EQ(px_http_server_route(srv, "G T", "/x", 0, h_hello, NULL, NULL), PX_EINVAL);
    PX_ASSERT_INT_EQ(px_http_server_route(srv, "GET", "/x", 0x80, h_hello, NULL, NULL), PX_EINVAL);
    PX_ASSERT_INT_EQ(px_http_server_route(srv, "GET", "/x", 0, NULL, NULL, NULL), PX_EINVAL);
    px_http_server_close(srv, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    PX_ASSERT_INT_EQ(uv_loop_close(&loop), 0);
}

static void test_expect_continue(void)
{
    static char req[4096];
    px_http_server_options o = test_options();
    PX_ASSERT_INT_EQ(fx_start(&o), 0);
    PX_ASSERT_INT_EQ(cli_open(&C), 0);
    PX_ASSERT_INT_EQ(cli_send(&C, "POST /echo HTTP/1.1\r\nExpect: 100-continue\r\n"
                                  "Content-Length: 5\r\n\r\n"),
                     0);
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_INT_EQ(R.status, 100);
    PX_ASSERT_INT_EQ(cli_send(&C, "abcde"), 0);
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_INT_EQ(R.status, 200);
    PX_ASSERT_STR_EQ(R.body, "abcde");
    cli_close(&C);

    /* too large: refused at once, no 100 */
    PX_ASSERT_INT_EQ(cli_open(&C), 0);
    snprintf(req, sizeof req, "POST /echo HTTP/1.1\r\nExpect: 100-continue\r\n"
                              "Content-Length: 5000\r\n\r\n");
    PX_ASSERT_INT_EQ(cli_send(&C, req), 0);
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_INT_EQ(R.status, 413);
    PX_ASSERT(cli_eof(&C));
    cli_close(&C);
    PX_ASSERT_INT_EQ(fx_stop(), 0);
}

static size_t nfailed;
static void fail_hold(void *arg)
{
    px_http_server_unroute_owner(fx.srv, &owner_hold);
    nfailed = px_http_server_fail_owner(fx.srv, &owner_hold, 503);
}

static int nheld_seen;
static void read_nheld(void *arg) { nheld_seen = (int)nheld; }

static void test_fail_owner(void)
{
    px_http_server_options o = test_options();
    PX_ASSERT_INT_EQ(fx_start(&o), 0);
    PX_ASSERT_INT_EQ(cli_open(&C), 0);
    PX_ASSERT_INT_EQ(cli_open(&C2), 0);
    PX_ASSERT_INT_EQ(cli_send(&C, "POST /hold HTTP/1.1\r\nContent-Length: 1\r\n\r\nx"), 0);
    PX_ASSERT_INT_EQ(cli_send(&C2, "GET /hold HTTP/1.1\r\n\r\n"), 0);
    int ok = 0;
    for (int i = 0; i < 500 && !ok; i++) {
        on_loop(read_nheld, NULL);
        ok = nheld_seen == 2;
        usleep(ok ? 0 : 10000);
    }
    PX_ASSERT(ok);
    on_loop(fail_hold, NULL);
    PX_ASSERT_INT_EQ(nfailed, 2);
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_INT_EQ(R.status, 503);
    PX_ASSERT_STR_EQ(R.body, "{\"error\":\"service unavailable\"}");
    PX_ASSERT_INT_EQ(cli_read(&C2, &R), 0);
    PX_ASSERT_INT_EQ(R.status, 503);
    /* the connection stays usable, the route is gone */
    PX_ASSERT_INT_EQ(cli_send(&C, "GET /hold HTTP/1.1\r\n\r\n"), 0);
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_INT_EQ(R.status, 404);
    cli_close(&C);
    cli_close(&C2);
    PX_ASSERT_INT_EQ(fx_stop(), 0);
}

static int stat_hello_200, stat_unmatched_404, stat_unmatched_400, stat_async_200;
static void on_stat(const char *name, int status, uint64_t count, void *arg)
{
    if (strcmp(name, "/hello") == 0 && status == 200) {
        stat_hello_200 = (int)count;
    } else if (strcmp(name, "unmatched") == 0 && status == 404) {
        stat_unmatched_404 = (int)count;
    } else if (strcmp(name, "unmatched") == 0 && status == 400) {
        stat_unmatched_400 = (int)count;
    } else if (strcmp(name, "/async") == 0 && status == 200) {
        stat_async_200 = (int)count;
    }
}
static void read_stats(void *arg) { px_http_server_foreach_stat(fx.srv, on_stat, NULL); }

static void test_metrics(void)
{
    px_http_server_options o = test_options();
    PX_ASSERT_INT_EQ(fx_start(&o), 0);
    PX_ASSERT(still_serves());
    PX_ASSERT(still_serves());
    PX_ASSERT_INT_EQ(fetch("GET /nope HTTP/1.1\r\n\r\n", &R), 0);
    PX_ASSERT_INT_EQ(fetch("GET /async/m HTTP/1.1\r\n\r\n", &R), 0);
    PX_ASSERT_INT_EQ(fetch("NOPE\r\n\r\n", &R), 0);
    PX_ASSERT_INT_EQ(R.status, 400);
    on_loop(read_stats, NULL);
    PX_ASSERT_INT_EQ(stat_hello_200, 2);
    PX_ASSERT_INT_EQ(stat_unmatched_404, 1);
    PX_ASSERT_INT_EQ(stat_unmatched_400, 1);
    PX_ASSERT_INT_EQ(stat_async_200, 1);
    PX_ASSERT_INT_EQ(fx_stop(), 0);
}

/* Closing the server lets a request already with its handler be answered, then closes. */
static void test_close_with_pending(void)
{
    px_http_server_options o = test_options();
    PX_ASSERT_INT_EQ(fx_start(&o), 0);
    PX_ASSERT_INT_EQ(cli_open(&C), 0);
    PX_ASSERT_INT_EQ(cli_open(&C2), 0); /* idle: closed at once */
    PX_ASSERT_INT_EQ(cli_send(&C, "GET /async/last HTTP/1.1\r\n\r\n"), 0);
    PX_ASSERT(wait_counter(&async_started, 1));
    PX_ASSERT_INT_EQ(fx_stop(), 0);
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_INT_EQ(R.status, 200);
    PX_ASSERT_STR_EQ(R.body, "async /async/last");
    PX_ASSERT_STR_EQ(resp_header(&R, "Connection"), "close");
    PX_ASSERT(cli_eof(&C));
    PX_ASSERT(cli_eof(&C2));
    cli_close(&C);
    cli_close(&C2);
}

static void test_statuses(void)
{
    px_http_server_options o = test_options();
    PX_ASSERT_INT_EQ(fx_start(&o), 0);
    PX_ASSERT_INT_EQ(cli_open(&C), 0);
    /* 204: no body, no Content-Length; the connection goes on */
    PX_ASSERT_INT_EQ(cli_send(&C, "GET /status?204 HTTP/1.1\r\n\r\n"), 0);
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_INT_EQ(R.status, 204);
    PX_ASSERT(resp_header(&R, "Content-Length") == NULL);
    /* nonsense status -> 500 */
    PX_ASSERT_INT_EQ(cli_send(&C, "GET /status?42 HTTP/1.1\r\n\r\n"), 0);
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_INT_EQ(R.status, 500);
    PX_ASSERT_INT_EQ(cli_send(&C, "GET /status?599 HTTP/1.1\r\n\r\n"), 0);
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_INT_EQ(R.status, 599);
    PX_ASSERT_STR_EQ(R.body, "{}");
    cli_close(&C);
    PX_ASSERT_INT_EQ(fx_stop(), 0);
}

static void test_large_response(void)
{
    static char chunk[1 << 16];
    big_body = px_xmalloc(BIG_LEN);
    for (size_t i = 0; i < BIG_LEN; i++) {
        big_body[i] = (char)('a' + i % 26);
    }
    px_http_server_options o = test_options();
    PX_ASSERT_INT_EQ(fx_start(&o), 0);
    PX_ASSERT_INT_EQ(cli_open(&C), 0);
    PX_ASSERT_INT_EQ(cli_send(&C, "GET /big HTTP/1.1\r\n\r\n" GET_HELLO), 0);
    /* the head, then the body read in pieces and compared */
    char *end;
    while (!(end = memmem(C.buf, C.len, "\r\n\r\n", 4))) {
        PX_ASSERT_INT_EQ(cli_fill(&C), 0);
    }
    PX_ASSERT(strncmp(C.buf, "HTTP/1.1 200 OK\r\n", 17) == 0);
    PX_ASSERT(memmem(C.buf, (size_t)(end - C.buf) + 2, "Content-Length: 8388608\r\n", 25));
    size_t have = C.len - (size_t)(end + 4 - C.buf), got = 0;
    memmove(C.buf, end + 4, have);
    C.len = have;
    int same = 1;
    while (got < BIG_LEN) {
        if (C.len == 0) {
            ssize_t n = recv(C.fd, chunk, sizeof chunk, 0);
            PX_ASSERT(n > 0);
            memcpy(C.buf, chunk, (size_t)n);
            C.len = (size_t)n;
        }
        size_t take = C.len < BIG_LEN - got ? C.len : BIG_LEN - got;
        same &= memcmp(C.buf, big_body + got, take) == 0;
        got += take;
        memmove(C.buf, C.buf + take, C.len - take);
        C.len -= take;
    }
    PX_ASSERT(same);
    /* the pipelined request behind it is answered after the long write */
    PX_ASSERT_INT_EQ(cli_read(&C, &R), 0);
    PX_ASSERT_STR_EQ(R.body, "hello");
    cli_close(&C);
    PX_ASSERT_INT_EQ(fx_stop(), 0);
    free(big_body);
    big_body = NULL;
}

/* A handler that never answers: close gives up after shutdown_timeout_ms, the client sees the
 * connection end, and the late answer (after the server is gone) only frees the request. */
static void test_close_timeout(void)
{
    px_http_server_options o = test_options();
    o.shutdown_timeout_ms = 200;
    PX_ASSERT_INT_EQ(fx_start(&o), 0);
    PX_ASSERT_INT_EQ(cli_open(&C), 0);
    PX_ASSERT_INT_EQ(cli_send(&C, "GET /hold HTTP/1.1\r\n\r\n"), 0);
    int ok = 0;
    for (int i = 0; i < 500 && !ok; i++) {
        on_loop(read_nheld, NULL);
        ok = nheld_seen == 1;
        usleep(ok ? 0 : 10000);
    }
    PX_ASSERT(ok);
    PX_ASSERT_INT_EQ(fx_stop(), 0);
    PX_ASSERT(cli_eof(&C));
    cli_close(&C);
    PX_ASSERT_STR_EQ(px_http_req_path(held[0]), "/hold");
    px_http_respond(held[0], 200, NULL, "late", 4);
}

PX_TEST_MAIN(PX_TEST(test_get_200), PX_TEST(test_bad_options), PX_TEST(test_post_echo),
             PX_TEST(test_keep_alive), PX_TEST(test_pipelined), PX_TEST(test_chunked_body),
             PX_TEST(test_body_too_large), PX_TEST(test_header_too_large),
             PX_TEST(test_malformed), PX_TEST(test_timeouts), PX_TEST(test_request_deadline),
             PX_TEST(test_max_connections),
             PX_TEST(test_404_405), PX_TEST(test_prefix_and_head),
             PX_TEST(test_connection_close), PX_TEST(test_http10),
             PX_TEST(test_disconnect_while_pending), PX_TEST(test_ipv6),
             PX_TEST(test_route_replace), PX_TEST(test_defaults_and_bad_routes),
             PX_TEST(test_expect_continue), PX_TEST(test_fail_owner), PX_TEST(test_metrics),
             PX_TEST(test_close_with_pending),
             PX_TEST(test_statuses), PX_TEST(test_large_response), PX_TEST(test_close_timeout))
