/* HTTP/1.1 server on libuv with http-parser: listener, connection state machine (idle, headers,
 * body, handler, writing, linger), limits and timeouts, the route table and per-route response
 * counters. Each connection owns reusable buffers (raw input, request strings, body, response
 * head), so a keep-alive request costs no allocation once they have grown. */
#include "http_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <http_parser.h>

#include "err.h"
#include "errbuf.h"
#include "log.h"
#include "mem.h"

#define MOD "http"

#define DEFAULT_MAX_HEADER_BYTES (16u * 1024)
#define DEFAULT_MAX_BODY_BYTES (1024u * 1024)
#define DEFAULT_HEADER_TIMEOUT_MS 10000
#define DEFAULT_IDLE_TIMEOUT_MS 60000
#define DEFAULT_REQUEST_TIMEOUT_MS 30000
#define DEFAULT_MAX_CONNECTIONS 1024
#define DEFAULT_SHUTDOWN_TIMEOUT_MS 5000

#define RBUF_SIZE (16u * 1024) /* raw input per connection */
#define MAX_HEADERS 100        /* more -> 431 */
#define LINGER_MS 2000         /* after our FIN, wait this long for the client's before closing */
#define KEEP_BUF_MAX (64u * 1024) /* per-connection buffers above this are released after use */
#define LISTEN_BACKLOG 511

/* A growable byte buffer, reused across requests. */
typedef struct gbuf {
    char *p;
    size_t len, cap;
} gbuf;

/* Response counters of one route pattern; never freed before the server, so requests can point
 * at it while routes come and go. */
typedef struct stat_code {
    int status;
    uint64_t count;
} stat_code;

typedef struct stat_route {
    char *name;
    stat_code *codes;
    size_t ncodes, cap;
} stat_route;

typedef struct route {
    char *method; /* NULL = any */
    char *path;
    size_t path_len;
    unsigned flags;
    px_http_handler cb;
    void *arg;
    const void *owner;
    stat_route *stat;
} route;

typedef struct conn conn;

typedef struct hdr_ent {
    uint32_t name, value; /* offsets into conn.sbuf */
} hdr_ent;

struct px_http_request {
    conn *c;
    const void *owner;
    stat_route *stat; /* metrics bucket: the matched route's pattern, or "unmatched" */
    const char *method;
    uint32_t url, path, query; /* offsets into conn.sbuf */
    unsigned keep_alive : 1, head : 1, http10 : 1;
};

enum conn_state {
    CS_IDLE,    /* waiting for the first byte of a request */
    CS_HEAD,    /* request line and headers */
    CS_BODY,    /* request body */
    CS_HANDLER, /* handed to a handler, waiting for px_http_respond */
    CS_WRITING, /* response queued on the socket */
    CS_STREAM,  /* a streamed answer (px_http_stream_start): input is discarded, EOF closes */
    CS_LINGER,  /* response sent, FIN sent: discarding input until the client's FIN */
    CS_CLOSED,  /* uv_close issued */
};

enum { LAST_NONE, LAST_URL, LAST_FIELD, LAST_VALUE };

enum { MATCH_OK = 0, MATCH_NONE = 404, MATCH_METHOD = 405 };

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;   /* one deadline per state: request (header, body progress and the whole
                         * request), idle, write, linger; see conn_timer */
    uv_write_t wreq;    /* the response */
    uv_write_t creq;    /* "100 Continue" */
    uv_shutdown_t sreq; /* FIN before closing */
    http_parser parser;
    px_http_server *srv; /* NULL once the server is gone (request still unanswered) */
    conn *prev, *next;   /* srv->conns */
    px_http_request req;
    struct sockaddr_storage peer;
    char remote[INET6_ADDRSTRLEN + 10];
    int state;
    int err_status;      /* set by a parser callback that fails on purpose */
    unsigned handles;    /* uv handles not yet closed */
    unsigned pending : 1, reading : 1, in_process : 1, closing : 1, rejected : 1,
        close_after : 1, timer_idle : 1, last_cb : 2;
    /* a streamed answer: obody holds the bytes not yet handed to the socket, head the ones of
     * the write in flight */
    unsigned streaming : 1, stream_writing : 1, stream_ending : 1, stream_chunked : 1;
    px_http_stream_closed_cb stream_closed; /* told once when the connection closes first */
    void *stream_arg;
    char *rbuf; /* raw input; [rpos, rlen) not parsed yet */
    size_t rlen, rpos;
    size_t hdr_bytes;
    gbuf sbuf; /* NUL-terminated request strings: url, header names and values, path, query */
    hdr_ent *hdrs;
    uint32_t nhdrs, hdrs_cap;
    gbuf body;
    gbuf head;  /* response head */
    gbuf obody; /* response body the socket did not take at once */
    gbuf xhdr;  /* response headers added with px_http_set_header */
    uint64_t deadline;  /* loop time by which the current request must be complete */
    uint64_t due;       /* loop time the current state's deadline falls due; 0 = none */
    uint64_t timer_at;  /* loop time the timer is set for, while it is active */
    uint64_t route_gen; /* route match cached at headers-complete, valid while gen unchanged */
    size_t route_idx;
    int route_match;
};

struct px_http_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_timer_t close_timer;
    px_http_server_options opt;
    int port;
    route *routes;
    size_t nroutes, routes_cap;
    uint64_t route_gen;
    stat_route **stats;
    size_t nstats;
    stat_route *unmatched;
    conn *conns;    /* every connection not yet freed, including unanswered ones already closed */
    size_t nopen;   /* connections whose handles are open */
    size_t nactive; /* of those, the ones not being refused */
    int closing, listener_closed, finishing;
    px_http_server_close_cb close_cb;
    void *close_arg;
    uint64_t date_expires;
    char date[64]; /* "Date: ...\r\n" */
    char scratch[RBUF_SIZE]; /* input discarded while lingering */
};

/* ---- small helpers ------------------------------------------------------------------------ */

static void gbuf_reserve(gbuf *b, size_t extra)
{
    if (b->len + extra <= b->cap) {
        return;
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra) {
        cap *= 2;
    }
    b->p = px_xrealloc(b->p, cap);
    b->cap = cap;
}

static void gbuf_add(gbuf *b, const void *s, size_t n)
{
    if (n == 0) {
        return;
    }
    gbuf_reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void gbuf_adds(gbuf *b, const char *s) { gbuf_add(b, s, strlen(s)); }

static void gbuf_addc(gbuf *b, char ch) { gbuf_add(b, &ch, 1); }

static void gbuf_addu(gbuf *b, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    gbuf_add(b, tmp + i, sizeof tmp - i);
}

/* Keeps the buffer for the next request unless it grew large. */
static void gbuf_recycle(gbuf *b)
{
    b->len = 0;
    if (b->cap > KEEP_BUF_MAX) {
        free(b->p);
        b->p = NULL;
        b->cap = 0;
    }
}

static void gbuf_free(gbuf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* ---- metrics ------------------------------------------------------------------------------ */

static stat_route *stat_get(px_http_server *srv, const char *name)
{
    for (size_t i = 0; i < srv->nstats; i++) {
        if (strcmp(srv->stats[i]->name, name) == 0) {
            return srv->stats[i];
        }
    }
    stat_route *s = px_xcalloc(1, sizeof *s);
    s->name = px_xstrdup(name);
    srv->stats = px_xrealloc(srv->stats, (srv->nstats + 1) * sizeof *srv->stats);
    srv->stats[srv->nstats++] = s;
    return s;
}

static void stat_count(stat_route *s, int status)
{
    for (size_t i = 0; i < s->ncodes; i++) {
        if (s->codes[i].status == status) {
            s->codes[i].count++;
            return;
        }
    }
    if (s->ncodes == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 4;
        s->codes = px_xrealloc(s->codes, s->cap * sizeof *s->codes);
    }
    s->codes[s->ncodes++] = (stat_code){status, 1};
}

void px_http_server_foreach_stat(const px_http_server *srv, px_http_stat_cb cb, void *arg)
{
    for (size_t i = 0; i < srv->nstats; i++) {
        const stat_route *s = srv->stats[i];
        for (size_t j = 0; j < s->ncodes; j++) {
            cb(s->name, s->codes[j].status, s->codes[j].count, arg);
        }
    }
}

size_t px_http_server_connections(const px_http_server *srv) { return srv->nopen; }

int px_http_server_port(const px_http_server *srv) { return srv->port; }

/* ---- routes ------------------------------------------------------------------------------- */

static int method_eq(const char *a, const char *b)
{
    if (!a || !b) {
        return a == b;
    }
    return strcmp(a, b) == 0;
}

static int valid_token(const char *s)
{
    if (!*s) {
        return 0;
    }
    for (; *s; s++) {
        if (*s <= ' ' || *s >= 127 || strchr("()<>@,;:\\\"/[]?={}", *s)) {
            return 0;
        }
    }
    return 1;
}

int px_http_server_route(px_http_server *srv, const char *method, const char *path,
                         unsigned flags, px_http_handler cb, void *arg, const void *owner)
{
    if (!srv || !path || path[0] != '/' || !cb || (flags & ~(unsigned)PX_ROUTE_PREFIX) ||
        (method && !valid_token(method))) {
        return PX_EINVAL;
    }
    srv->route_gen++;
    for (size_t i = 0; i < srv->nroutes; i++) {
        route *r = &srv->routes[i];
        if (method_eq(r->method, method) && strcmp(r->path, path) == 0) {
            r->flags = flags;
            r->cb = cb;
            r->arg = arg;
            r->owner = owner;
            return 0;
        }
    }
    if (srv->nroutes == srv->routes_cap) {
        srv->routes_cap = srv->routes_cap ? srv->routes_cap * 2 : 8;
        srv->routes = px_xrealloc(srv->routes, srv->routes_cap * sizeof *srv->routes);
    }
    srv->routes[srv->nroutes++] = (route){
        .method = px_xstrdup(method),
        .path = px_xstrdup(path),
        .path_len = strlen(path),
        .flags = flags,
        .cb = cb,
        .arg = arg,
        .owner = owner,
        .stat = stat_get(srv, path),
    };
    return 0;
}

size_t px_http_server_unroute_owner(px_http_server *srv, const void *owner)
{
    size_t kept = 0, removed = 0;
    for (size_t i = 0; i < srv->nroutes; i++) {
        route *r = &srv->routes[i];
        if (r->owner == owner) {
            free(r->method);
            free(r->path);
            removed++;
        } else {
            srv->routes[kept++] = *r;
        }
    }
    srv->nroutes = kept;
    srv->route_gen++;
    return removed;
}

/* How well route r covers path: 0 = not at all, larger = more specific. */
static size_t route_score(const route *r, const char *path, size_t len)
{
    if (!(r->flags & PX_ROUTE_PREFIX)) {
        return len == r->path_len && memcmp(path, r->path, len) == 0 ? SIZE_MAX : 0;
    }
    if (len < r->path_len || memcmp(path, r->path, r->path_len) != 0) {
        return 0;
    }
    if (len == r->path_len || r->path[r->path_len - 1] == '/' || path[r->path_len] == '/') {
        return r->path_len;
    }
    return 0;
}

/* Finds the route for method + path. Returns MATCH_OK with *idx set, MATCH_NONE, or
 * MATCH_METHOD with the winning path's methods in allow (", "-separated). */
static int route_lookup(const px_http_server *srv, const char *method, const char *path,
                        size_t *idx, gbuf *allow)
{
    size_t len = strlen(path), best = 0;
    for (size_t i = 0; i < srv->nroutes; i++) {
        size_t s = route_score(&srv->routes[i], path, len);
        if (s > best) {
            best = s;
        }
    }
    if (best == 0) {
        return MATCH_NONE;
    }
    size_t any = SIZE_MAX, get = SIZE_MAX;
    int is_head = strcmp(method, "HEAD") == 0;
    for (size_t i = 0; i < srv->nroutes; i++) {
        const route *r = &srv->routes[i];
        if (route_score(r, path, len) != best) {
            continue;
        }
        if (!r->method) {
            any = i;
        } else if (strcmp(r->method, method) == 0) {
            *idx = i;
            return MATCH_OK;
        } else if (is_head && strcmp(r->method, "GET") == 0) {
            get = i;
        }
    }
    if (any != SIZE_MAX || get != SIZE_MAX) {
        *idx = any != SIZE_MAX ? any : get;
        return MATCH_OK;
    }
    if (allow) {
        for (size_t i = 0; i < srv->nroutes; i++) {
            const route *r = &srv->routes[i];
            if (route_score(r, path, len) == best) {
                if (allow->len) {
                    gbuf_adds(allow, ", ");
                }
                gbuf_adds(allow, r->method);
                if (strcmp(r->method, "GET") == 0) {
                    gbuf_adds(allow, ", HEAD");
                }
            }
        }
    }
    return MATCH_METHOD;
}

/* ---- connections: teardown ---------------------------------------------------------------- */

static const http_parser_settings parser_settings;
static void on_timer(uv_timer_t *t);

/* Sets the current state's deadline ms from now. A kept-alive request changes deadline three
 * times (request, handler, idle), and moving a libuv timer is a heap update each time, so the
 * timer is moved only when it must fire sooner; when it fires early it is set again for what is
 * left (on_timer). */
static void conn_timer(conn *c, uint64_t ms)
{
    uint64_t now = uv_now(c->srv->loop);
    c->due = now + ms;
    if (!uv_is_active((uv_handle_t *)&c->timer) || c->timer_at > c->due) {
        uv_timer_start(&c->timer, on_timer, ms, 0);
        c->timer_at = c->due;
    }
}

/* The current state has no deadline: a timer still set finds nothing due and stays idle. */
static void conn_timer_clear(conn *c)
{
    c->due = 0;
}

/* Starts the request's clock: it must be complete within request_timeout_ms from now. */
static void request_deadline_start(conn *c)
{
    c->deadline = uv_now(c->srv->loop) + c->srv->opt.request_timeout_ms;
}

/* While a request comes in: the next piece must come within header_timeout_ms and the whole
 * request before its deadline, whichever is sooner (the timer restarts on each read, the deadline
 * does not move, so a steady trickle cannot hold the connection). */
static void request_timer_start(conn *c)
{
    uint64_t now = uv_now(c->srv->loop);
    uint64_t left = c->deadline > now ? c->deadline - now : 0;
    uint64_t ms = c->srv->opt.header_timeout_ms;
    conn_timer(c, left < ms ? left : ms);
}
static void conn_process(conn *c);

static void conn_unlink(conn *c)
{
    if (!c->srv) {
        return;
    }
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        c->srv->conns = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    c->prev = c->next = NULL;
}

static void conn_free_buffers(conn *c)
{
    free(c->rbuf);
    c->rbuf = NULL;
    c->rlen = c->rpos = 0;
    gbuf_free(&c->head);
    gbuf_free(&c->obody);
}

static void conn_free(conn *c)
{
    conn_unlink(c);
    conn_free_buffers(c);
    gbuf_free(&c->sbuf);
    gbuf_free(&c->body);
    gbuf_free(&c->xhdr);
    free(c->hdrs);
    free(c);
}

static void server_free(px_http_server *srv)
{
    /* Connections left hold requests a handler has not answered: they outlive the server and
     * px_http_respond frees them. */
    for (conn *c = srv->conns, *next; c; c = next) {
        next = c->next;
        c->srv = NULL;
        c->prev = c->next = NULL;
    }
    for (size_t i = 0; i < srv->nroutes; i++) {
        free(srv->routes[i].method);
        free(srv->routes[i].path);
    }
    free(srv->routes);
    for (size_t i = 0; i < srv->nstats; i++) {
        free(srv->stats[i]->name);
        free(srv->stats[i]->codes);
        free(srv->stats[i]);
    }
    free(srv->stats);
    free(srv);
}

static void on_close_timer_closed(uv_handle_t *h)
{
    px_http_server *srv = h->data;
    px_http_server_close_cb cb = srv->close_cb;
    void *arg = srv->close_arg;
    server_free(srv);
    if (cb) {
        cb(arg);
    }
}

static void server_maybe_finish(px_http_server *srv)
{
    if (srv->closing && srv->listener_closed && srv->nopen == 0 && !srv->finishing) {
        srv->finishing = 1;
        uv_close((uv_handle_t *)&srv->close_timer, on_close_timer_closed);
    }
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    conn *c = h->data;
    if (--c->handles > 0) {
        return;
    }
    px_http_server *srv = c->srv;
    srv->nopen--;
    if (!c->rejected) {
        srv->nactive--;
    }
    px_http_stream_closed_cb closed = NULL;
    if (c->pending) {
        /* A handler still holds the request: keep what its accessors read. */
        conn_free_buffers(c);
        closed = c->streaming ? c->stream_closed : NULL;
        c->stream_closed = NULL;
    } else {
        conn_free(c);
    }
    server_maybe_finish(srv);
    if (closed) {
        /* last: the owner ends the stream from here, which frees c */
        closed(&c->req, c->stream_arg);
    }
}

static void conn_close(conn *c)
{
    if (c->closing) {
        return;
    }
    c->closing = 1;
    c->state = CS_CLOSED;
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
}

/* ---- connections: output ------------------------------------------------------------------ */

/* The Date header, formatted at most once a second (RFC 9110 IMF-fixdate, locale-free). */
static void date_refresh(px_http_server *srv)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    uint64_t now = uv_now(srv->loop);
    if (now < srv->date_expires && srv->date[0]) {
        return;
    }
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(srv->date, sizeof srv->date, "Date: %s, %02d %s %04d %02d:%02d:%02d GMT\r\n",
             days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900,
             tm.tm_hour, tm.tm_min, tm.tm_sec);
    srv->date_expires = now + 1000;
}

static const char *status_reason(int status)
{
    const char *s = http_status_str((enum http_status)status);
    return s[0] == '<' ? "Unknown" : s;
}

static void on_shutdown(uv_shutdown_t *req, int status) { (void)req, (void)status; }

static void start_reading(conn *c);

/* Response sent and the connection ends: send FIN, then wait (bounded) for the client's, so
 * unread input does not turn our close into a reset that could destroy the response. */
static void conn_linger(conn *c)
{
    c->state = CS_LINGER;
    free(c->rbuf);
    c->rbuf = NULL;
    c->rlen = c->rpos = 0;
    if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        conn_close(c);
        return;
    }
    conn_timer(c, LINGER_MS);
    start_reading(c);
}

static void conn_reset_request(conn *c)
{
    c->req = (px_http_request){.c = c};
    gbuf_recycle(&c->body);
    gbuf_recycle(&c->obody);
    gbuf_recycle(&c->xhdr);
    gbuf_recycle(&c->sbuf);
    c->nhdrs = 0;
}

/* The response is on the wire (or in the kernel's buffer). */
static void conn_sent(conn *c)
{
    if (c->close_after || c->srv->closing) {
        conn_linger(c);
        return;
    }
    conn_reset_request(c);
    c->state = CS_IDLE;
    c->timer_idle = 1;
    conn_timer(c, c->srv->opt.idle_timeout_ms);
    start_reading(c);
    if (!c->closing && !c->in_process && c->rpos < c->rlen) {
        conn_process(c);
    }
}

static void on_write(uv_write_t *w, int status)
{
    conn *c = w->data;
    if (c->closing) {
        return;
    }
    if (status < 0) {
        conn_close(c);
        return;
    }
    conn_sent(c);
}

/* Writes one response: head and body as two buffers, written at once when the socket takes
 * them, otherwise the rest is copied (body is borrowed) and queued with one uv_write. */
static void conn_send(conn *c, int status, const char *ctype, const char *body, size_t len,
                      int keep, int head_only)
{
    px_http_server *srv = c->srv;
    gbuf *h = &c->head;
    int no_body = status == 204 || status == 304;
    date_refresh(srv);
    h->len = 0;
    gbuf_reserve(h, 160 + strlen(ctype) + c->xhdr.len);
    gbuf_adds(h, "HTTP/1.1 ");
    gbuf_addu(h, (uint64_t)status);
    gbuf_addc(h, ' ');
    gbuf_adds(h, status_reason(status));
    gbuf_adds(h, "\r\n");
    gbuf_adds(h, srv->date);
    if (!no_body) {
        gbuf_adds(h, "Content-Type: ");
        gbuf_adds(h, ctype);
        gbuf_adds(h, "\r\nContent-Length: ");
        gbuf_addu(h, len);
        gbuf_adds(h, "\r\n");
    }
    if (!keep) {
        gbuf_adds(h, "Connection: close\r\n");
    } else if (c->req.http10) {
        gbuf_adds(h, "Connection: keep-alive\r\n");
    }
    gbuf_add(h, c->xhdr.p, c->xhdr.len);
    gbuf_adds(h, "\r\n");
    if (no_body || head_only) {
        len = 0;
    }
    c->close_after = !keep;
    c->state = CS_WRITING;

    uv_buf_t bufs[2] = {uv_buf_init(h->p, (unsigned)h->len),
                        uv_buf_init((char *)body, (unsigned)len)};
    size_t total = h->len + len;
    int n = uv_try_write((uv_stream_t *)&c->tcp, bufs, len ? 2 : 1);
    if (n >= 0 && (size_t)n == total) {
        conn_sent(c);
        return;
    }
    if (n < 0 && n != UV_EAGAIN) {
        conn_close(c);
        return;
    }
    size_t done = n > 0 ? (size_t)n : 0;
    uv_buf_t wb[2];
    unsigned nb = 0;
    c->obody.len = 0;
    if (done < h->len) {
        wb[nb++] = uv_buf_init(h->p + done, (unsigned)(h->len - done));
        done = 0;
    } else {
        done -= h->len;
    }
    if (len > done) {
        gbuf_add(&c->obody, body + done, len - done);
        wb[nb++] = uv_buf_init(c->obody.p, (unsigned)c->obody.len);
    }
    c->wreq.data = c;
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, wb, nb, on_write) != 0) {
        conn_close(c);
        return;
    }
    conn_timer(c, srv->opt.idle_timeout_ms);
}

/* An answer the server makes itself ({"error":"reason"}); the connection closes after it. */
static void conn_send_error(conn *c, int status, const char *reason)
{
    char body[128];
    int n = snprintf(body, sizeof body, "{\"error\":\"%s\"}", reason);
    stat_count(c->req.stat ? c->req.stat : c->srv->unmatched, status);
    c->xhdr.len = 0;
    conn_send(c, status, "application/json", body, (size_t)n, 0, 0);
}

static const char *error_reason(int status)
{
    switch (status) {
    case 400: return "bad request";
    case 404: return "not found";
    case 405: return "method not allowed";
    case 408: return "request timeout";
    case 413: return "body too large";
    case 431: return "headers too large";
    case 500: return "internal error";
    case 502: return "bad gateway";
    case 503: return "service unavailable";
    case 504: return "gateway timeout";
    default: return status >= 500 ? "server error" : "request failed";
    }
}

/* ---- connections: input ------------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn *c = h->data;
    (void)suggested;
    if (c->state == CS_LINGER || c->state == CS_STREAM) {
        *buf = uv_buf_init(c->srv->scratch, sizeof c->srv->scratch);
        return;
    }
    if (!c->rbuf) {
        c->rbuf = px_xmalloc(RBUF_SIZE);
    }
    if (c->rpos > 0) {
        memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
        c->rlen -= c->rpos;
        c->rpos = 0;
    }
    /* A full buffer (only while a request is outstanding) yields UV_ENOBUFS: stop reading. */
    *buf = uv_buf_init(c->rbuf + c->rlen, (unsigned)(RBUF_SIZE - c->rlen));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn *c = s->data;
    (void)buf;
    if (nread == 0) {
        return;
    }
    if (nread == UV_ENOBUFS) {
        uv_read_stop(s);
        c->reading = 0;
        return;
    }
    if (nread < 0) {
        /* EOF or error: the client is gone; an unanswered request stays valid until respond. */
        conn_close(c);
        return;
    }
    switch (c->state) {
    case CS_LINGER:
    case CS_STREAM:
        return;
    case CS_HANDLER:
    case CS_WRITING:
        c->rlen += (size_t)nread; /* the next pipelined request waits its turn */
        return;
    case CS_BODY:
        request_timer_start(c);
        break;
    default:
        break;
    }
    c->rlen += (size_t)nread;
    conn_process(c);
}

static void start_reading(conn *c)
{
    if (c->reading || c->closing) {
        return;
    }
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
        conn_close(c);
        return;
    }
    c->reading = 1;
}

static void on_timer(uv_timer_t *t)
{
    conn *c = t->data;
    if (c->due == 0) {
        return; /* the deadline it was set for is gone */
    }
    uint64_t now = uv_now(t->loop);
    if (now < c->due) {
        uv_timer_start(t, on_timer, c->due - now, 0); /* set early: the rest */
        c->timer_at = c->due;
        return;
    }
    c->due = 0;
    switch (c->state) {
    case CS_HEAD:
    case CS_BODY:
        PX_LOG_DEBUG(MOD, "request timeout state=%s", c->state == CS_HEAD ? "headers" : "body");
        conn_send_error(c, 408, "request timeout");
        break;
    case CS_HANDLER:
        break;
    default:
        conn_close(c);
        break;
    }
}

/* Hands a complete request to its route (or answers 404/405). Runs outside the parser. */
static void conn_dispatch(conn *c)
{
    px_http_server *srv = c->srv;
    px_http_request *req = &c->req;
    c->state = CS_HANDLER;
    c->pending = 1;
    conn_timer_clear(c);
    size_t idx = 0;
    int m = c->route_match;
    if (c->route_gen == srv->route_gen) {
        idx = c->route_idx;
    } else {
        m = route_lookup(srv, req->method, px_http_req_path(req), &idx, NULL);
    }
    if (m == MATCH_OK) {
        const route *r = &srv->routes[idx];
        px_http_handler cb = r->cb;
        void *arg = r->arg;
        req->owner = r->owner;
        req->stat = r->stat;
        cb(req, arg);
        return;
    }
    req->owner = NULL;
    req->stat = srv->unmatched;
    if (m == MATCH_METHOD) {
        gbuf allow = {0};
        route_lookup(srv, req->method, px_http_req_path(req), &idx, &allow);
        gbuf_addc(&allow, '\0');
        px_http_set_header(req, "Allow", allow.p);
        gbuf_free(&allow);
    }
    char body[64];
    int n = snprintf(body, sizeof body, "{\"error\":\"%s\"}", error_reason(m));
    px_http_respond(req, m, NULL, body, (size_t)n);
}

static void conn_parse_error(conn *c, enum http_errno e)
{
    int status = c->err_status;
    if (!status) {
        status = e == HPE_HEADER_OVERFLOW ? 431 : 400;
    }
    PX_LOG_DEBUG(MOD, "bad request status=%d reason=%s", status,
                 c->err_status ? error_reason(status) : http_errno_description(e));
    conn_send_error(c, status, error_reason(status));
}

/* Parses buffered input until a request is complete (then dispatches it) or input runs out.
 * Not reentrant: a handler answering at once continues this loop with the next request. */
static void conn_process(conn *c)
{
    if (c->in_process) {
        return;
    }
    c->in_process = 1;
    while ((c->state == CS_IDLE || c->state == CS_HEAD || c->state == CS_BODY) &&
           c->rpos < c->rlen) {
        size_t n = http_parser_execute(&c->parser, &parser_settings, c->rbuf + c->rpos,
                                       c->rlen - c->rpos);
        c->rpos += n;
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (e == HPE_PAUSED) {
            http_parser_pause(&c->parser, 0);
            conn_dispatch(c);
            continue;
        }
        if (e != HPE_OK) {
            conn_parse_error(c, e);
            break;
        }
        if (c->rpos < c->rlen) {
            /* the parser stopped without a complete request: an upgrade it hands over */
            c->err_status = 400;
            conn_parse_error(c, e);
            break;
        }
    }
    if (c->rpos == c->rlen) {
        c->rpos = c->rlen = 0;
    }
    c->in_process = 0;
}

/* ---- parser callbacks --------------------------------------------------------------------- */

static int count_header_bytes(conn *c, size_t len)
{
    c->hdr_bytes += len;
    if (c->hdr_bytes > c->srv->opt.max_header_bytes) {
        c->err_status = 431;
        return -1;
    }
    return 0;
}

static void sbuf_terminate(conn *c)
{
    if (c->last_cb == LAST_VALUE) {
        /* header values lose trailing blanks */
        uint32_t start = c->hdrs[c->nhdrs - 1].value;
        while (c->sbuf.len > start &&
               (c->sbuf.p[c->sbuf.len - 1] == ' ' || c->sbuf.p[c->sbuf.len - 1] == '\t')) {
            c->sbuf.len--;
        }
    }
    gbuf_addc(&c->sbuf, '\0');
}

static int on_message_begin(http_parser *p)
{
    conn *c = p->data;
    c->state = CS_HEAD;
    c->sbuf.len = 0;
    c->body.len = 0;
    c->xhdr.len = 0;
    c->nhdrs = 0;
    c->hdr_bytes = 0;
    c->err_status = 0;
    c->last_cb = LAST_NONE;
    c->req = (px_http_request){.c = c};
    if (c->timer_idle) {
        /* the next request on a kept-alive connection starts its own clock; a new connection's
         * first request keeps the one it got at accept */
        c->timer_idle = 0;
        request_deadline_start(c);
        request_timer_start(c);
    }
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    conn *c = p->data;
    if (count_header_bytes(c, len) != 0) {
        return -1;
    }
    if (c->last_cb != LAST_URL) {
        c->last_cb = LAST_URL;
        c->req.url = (uint32_t)c->sbuf.len;
    }
    gbuf_add(&c->sbuf, at, len);
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    conn *c = p->data;
    if (count_header_bytes(c, len) != 0) {
        return -1;
    }
    if (c->last_cb != LAST_FIELD) {
        if (c->nhdrs == MAX_HEADERS) {
            c->err_status = 431;
            return -1;
        }
        if (c->last_cb != LAST_NONE) {
            sbuf_terminate(c);
        }
        if (c->nhdrs == c->hdrs_cap) {
            c->hdrs_cap = c->hdrs_cap ? c->hdrs_cap * 2 : 16;
            c->hdrs = px_xrealloc(c->hdrs, c->hdrs_cap * sizeof *c->hdrs);
        }
        c->hdrs[c->nhdrs++] = (hdr_ent){(uint32_t)c->sbuf.len, 0};
        c->last_cb = LAST_FIELD;
    }
    gbuf_add(&c->sbuf, at, len);
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    conn *c = p->data;
    if (count_header_bytes(c, len) != 0) {
        return -1;
    }
    if (c->last_cb != LAST_VALUE) {
        gbuf_addc(&c->sbuf, '\0');
        c->hdrs[c->nhdrs - 1].value = (uint32_t)c->sbuf.len;
        c->last_cb = LAST_VALUE;
    }
    gbuf_add(&c->sbuf, at, len);
    return 0;
}

static void on_continue_written(uv_write_t *w, int status)
{
    conn *c = w->data;
    if (status < 0 && !c->closing) {
        conn_close(c);
    }
}

static int on_headers_complete(http_parser *p)
{
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    conn *c = p->data;
    px_http_server *srv = c->srv;
    px_http_request *req = &c->req;
    if (c->last_cb == LAST_NONE || p->method == HTTP_CONNECT) {
        c->err_status = 400;
        return -1;
    }
    if (c->last_cb == LAST_FIELD) {
        gbuf_addc(&c->sbuf, '\0'); /* the parser reports empty values; stay safe anyway */
        c->hdrs[c->nhdrs - 1].value = (uint32_t)c->sbuf.len;
    }
    sbuf_terminate(c);
    c->last_cb = LAST_NONE;

    struct http_parser_url u;
    http_parser_url_init(&u);
    size_t ulen = strlen(c->sbuf.p + req->url);
    gbuf_reserve(&c->sbuf, ulen + 4); /* path and query copies come from sbuf itself */
    if (http_parser_parse_url(c->sbuf.p + req->url, ulen, 0, &u) != 0) {
        c->err_status = 400;
        return -1;
    }
    req->path = (uint32_t)c->sbuf.len;
    if (u.field_set & (1u << UF_PATH)) {
        gbuf_add(&c->sbuf, c->sbuf.p + req->url + u.field_data[UF_PATH].off,
                 u.field_data[UF_PATH].len);
    } else {
        gbuf_addc(&c->sbuf, '/');
    }
    gbuf_addc(&c->sbuf, '\0');
    req->query = (uint32_t)c->sbuf.len;
    if (u.field_set & (1u << UF_QUERY)) {
        gbuf_add(&c->sbuf, c->sbuf.p + req->url + u.field_data[UF_QUERY].off,
                 u.field_data[UF_QUERY].len);
    }
    gbuf_addc(&c->sbuf, '\0');

    req->method = http_method_str((enum http_method)p->method);
    req->head = p->method == HTTP_HEAD;
    req->http10 = p->http_major == 1 && p->http_minor == 0;
    /* no protocol upgrades here: answer, then close */
    req->keep_alive = http_should_keep_alive(p) && !p->upgrade;

    c->route_gen = srv->route_gen;
    c->route_match = route_lookup(srv, req->method, c->sbuf.p + req->path, &c->route_idx, NULL);
    req->stat = c->route_match == MATCH_OK ? srv->routes[c->route_idx].stat : srv->unmatched;

    int chunked = (p->flags & F_CHUNKED) != 0;
    uint64_t clen = chunked || p->content_length == ULLONG_MAX ? 0 : p->content_length;
    if (clen > srv->opt.max_body_bytes) {
        c->err_status = 413;
        return -1;
    }
    if (clen) {
        gbuf_reserve(&c->body, clen + 1);
    }
    if (chunked || clen) {
        c->state = CS_BODY;
        request_timer_start(c);
        const char *expect = px_http_req_header(req, "Expect");
        if (expect && strcasecmp(expect, "100-continue") == 0 && !req->http10) {
            uv_buf_t b = uv_buf_init((char *)cont, sizeof cont - 1);
            c->creq.data = c;
            if (uv_write(&c->creq, (uv_stream_t *)&c->tcp, &b, 1, on_continue_written) != 0) {
                c->err_status = 400;
                return -1;
            }
        }
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    conn *c = p->data;
    if (c->body.len + len > c->srv->opt.max_body_bytes) {
        c->err_status = 413;
        return -1;
    }
    gbuf_add(&c->body, at, len);
    return 0;
}

static int on_message_complete(http_parser *p)
{
    conn *c = p->data;
    gbuf_reserve(&c->body, 1);
    c->body.p[c->body.len] = '\0';
    /* stop here: the request is dispatched once the parser has returned */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- requests (SDK signatures) ------------------------------------------------------------ */

const char *px_http_req_method(px_http_request *req) { return req->method; }

const char *px_http_req_path(px_http_request *req) { return req->c->sbuf.p + req->path; }

const char *px_http_req_query(px_http_request *req) { return req->c->sbuf.p + req->query; }

const char *px_http_req_header(px_http_request *req, const char *name)
{
    conn *c = req->c;
    for (uint32_t i = 0; i < c->nhdrs; i++) {
        if (strcasecmp(c->sbuf.p + c->hdrs[i].name, name) == 0) {
            return c->sbuf.p + c->hdrs[i].value;
        }
    }
    return NULL;
}

const char *px_http_req_body(px_http_request *req, size_t *len)
{
    conn *c = req->c;
    if (len) {
        *len = c->body.len;
    }
    return c->body.p ? c->body.p : "";
}

const void *px_http_req_owner(px_http_request *req) { return req->owner; }

const char *px_http_req_remote(px_http_request *req)
{
    conn *c = req->c;
    if (c->remote[0]) {
        return c->remote;
    }
    char ip[INET6_ADDRSTRLEN] = "";
    if (c->peer.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&c->peer;
        uv_ip4_name(a, ip, sizeof ip);
        snprintf(c->remote, sizeof c->remote, "%s:%u", ip, ntohs(a->sin_port));
    } else if (c->peer.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&c->peer;
        uv_ip6_name(a, ip, sizeof ip);
        snprintf(c->remote, sizeof c->remote, "[%s]:%u", ip, ntohs(a->sin6_port));
    }
    return c->remote;
}

static int header_value_ok(const char *s)
{
    for (; *s; s++) {
        if (*s == '\r' || *s == '\n') {
            return 0;
        }
    }
    return 1;
}

int px_http_set_header(px_http_request *req, const char *name, const char *value)
{
    if (!req || !name || !value || !valid_token(name) || !header_value_ok(value)) {
        return PX_EINVAL;
    }
    if (strcasecmp(name, "Content-Length") == 0 || strcasecmp(name, "Connection") == 0 ||
        strcasecmp(name, "Transfer-Encoding") == 0 || strcasecmp(name, "Date") == 0) {
        return PX_EINVAL;
    }
    conn *c = req->c;
    if (!c->pending) {
        return PX_ESTATE;
    }
    gbuf_adds(&c->xhdr, name);
    gbuf_adds(&c->xhdr, ": ");
    gbuf_adds(&c->xhdr, value);
    gbuf_adds(&c->xhdr, "\r\n");
    return 0;
}

void px_http_respond(px_http_request *req, int status, const char *content_type,
                     const char *body, size_t len)
{
    if (!req) {
        return;
    }
    conn *c = req->c;
    if (!c->pending || c->streaming) {
        PX_LOG_WARN(MOD, "request answered twice status=%d", status);
        return;
    }
    c->pending = 0;
    if (status < 200 || status > 599) {
        status = 500;
    }
    if (c->srv) {
        stat_count(req->stat, status);
    }
    if (c->handles == 0) {
        conn_free(c); /* the client left while the handler worked */
        return;
    }
    if (c->closing) {
        return; /* the close callback frees it */
    }
    if (!content_type) {
        content_type = "application/json";
    } else if (!header_value_ok(content_type)) {
        content_type = "application/octet-stream"; /* no header injection through it */
    }
    conn_send(c, status, content_type, body ? body : "",
              body ? len : 0, req->keep_alive && !c->srv->closing, req->head);
}

/* ---- streamed answers --------------------------------------------------------------------- */

static void stream_flush(conn *c);

static void on_stream_write(uv_write_t *w, int status)
{
    conn *c = w->data;
    c->stream_writing = 0;
    if (c->closing) {
        return;
    }
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->obody.len) {
        stream_flush(c);
    } else if (c->stream_ending) {
        conn_linger(c);
    }
}

/* Hands what accumulated to the socket as one write, unless one is in flight (its callback
 * flushes the rest): a fast reader costs a write per loop turn, not per piece. */
static void stream_flush(conn *c)
{
    if (c->stream_writing || c->closing || c->obody.len == 0) {
        return;
    }
    gbuf in_flight = c->obody;
    c->obody = c->head;
    c->obody.len = 0;
    c->head = in_flight;
    uv_buf_t b = uv_buf_init(c->head.p, (unsigned)c->head.len);
    c->wreq.data = c;
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_stream_write) != 0) {
        conn_close(c);
        return;
    }
    c->stream_writing = 1;
}

#define STREAM_SNDBUF (64 * 1024) /* kernel buffer of a streamed answer: the owner's backlog
                                   * bound is what a slow reader can hold */

int px_http_stream_start(px_http_request *req, int status, const char *content_type,
                         px_http_stream_closed_cb on_closed, void *arg)
{
    conn *c = req->c;
    if (!c->pending || c->streaming || c->closing || !c->srv) {
        return PX_ESTATE;
    }
    if (status < 200 || status > 599) {
        status = 500;
    }
    stat_count(req->stat, status);
    c->streaming = 1;
    c->stream_closed = on_closed;
    c->stream_arg = arg;
    c->stream_chunked = !req->http10;
    c->close_after = 1;
    c->state = CS_STREAM;
    if (!content_type || !header_value_ok(content_type)) {
        content_type = "application/octet-stream";
    }
    px_http_server *srv = c->srv;
    gbuf *h = &c->obody;
    date_refresh(srv);
    h->len = 0;
    gbuf_adds(h, "HTTP/1.1 ");
    gbuf_addu(h, (uint64_t)status);
    gbuf_addc(h, ' ');
    gbuf_adds(h, status_reason(status));
    gbuf_adds(h, "\r\n");
    gbuf_adds(h, srv->date);
    gbuf_adds(h, "Content-Type: ");
    gbuf_adds(h, content_type);
    gbuf_adds(h, "\r\n");
    if (c->stream_chunked) {
        gbuf_adds(h, "Transfer-Encoding: chunked\r\n");
    }
    gbuf_adds(h, "Connection: close\r\nCache-Control: no-store\r\n");
    gbuf_add(h, c->xhdr.p, c->xhdr.len);
    gbuf_adds(h, "\r\n");
    int size = STREAM_SNDBUF;
    uv_send_buffer_size((uv_handle_t *)&c->tcp, &size);
    conn_timer_clear(c);
    start_reading(c); /* to see the client leave */
    stream_flush(c);
    return 0;
}

int px_http_stream_write(px_http_request *req, const char *data, size_t len)
{
    conn *c = req->c;
    if (!c->streaming || c->stream_ending || c->closing || !c->pending) {
        return PX_ESTATE;
    }
    if (len == 0) {
        return 0;
    }
    if (c->stream_chunked) {
        char size[24];
        int n = snprintf(size, sizeof size, "%zx\r\n", len);
        gbuf_add(&c->obody, size, (size_t)n);
    }
    gbuf_add(&c->obody, data, len);
    if (c->stream_chunked) {
        gbuf_add(&c->obody, "\r\n", 2);
    }
    stream_flush(c);
    return 0;
}

size_t px_http_stream_backlog(px_http_request *req)
{
    conn *c = req->c;
    if (!c->streaming || c->closing) {
        return 0;
    }
    size_t n = c->obody.len;
    if (c->stream_writing) {
        n += uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
    }
    return n;
}

void px_http_stream_end(px_http_request *req)
{
    conn *c = req->c;
    if (!c->streaming || !c->pending) {
        return;
    }
    c->pending = 0;
    c->stream_closed = NULL;
    if (c->handles == 0) {
        conn_free(c); /* closed already: the closed callback ran */
        return;
    }
    if (c->closing) {
        return; /* the close callback frees it */
    }
    c->stream_ending = 1;
    if (c->stream_chunked) {
        gbuf_adds(&c->obody, "0\r\n\r\n");
    }
    if (c->stream_writing) {
        return; /* its callback flushes the rest, then lingers */
    }
    if (c->obody.len) {
        stream_flush(c);
    } else {
        conn_linger(c);
    }
}

size_t px_http_server_fail_owner(px_http_server *srv, const void *owner, int status)
{
    /* Collected first: answering can free a connection or start its next request. */
    size_t n = 0;
    for (conn *c = srv->conns; c; c = c->next) {
        n += c->pending && !c->streaming && c->req.owner == owner;
    }
    if (n == 0) {
        return 0;
    }
    px_http_request **reqs = px_xmalloc(n * sizeof *reqs);
    size_t k = 0;
    for (conn *c = srv->conns; c; c = c->next) {
        if (c->pending && !c->streaming && c->req.owner == owner) {
            reqs[k++] = &c->req;
        }
    }
    char body[128];
    int blen = snprintf(body, sizeof body, "{\"error\":\"%s\"}", error_reason(status));
    for (size_t i = 0; i < k; i++) {
        reqs[i]->c->xhdr.len = 0;
        px_http_respond(reqs[i], status, NULL, body, (size_t)blen);
    }
    free(reqs);
    return k;
}

/* ---- listener ----------------------------------------------------------------------------- */

static void on_connection(uv_stream_t *ls, int status)
{
    px_http_server *srv = ls->data;
    if (status < 0) {
        PX_LOG_WARN(MOD, "accept failed err=%s", uv_strerror(status));
        return;
    }
    conn *c = px_xcalloc(1, sizeof *c);
    c->srv = srv;
    uv_tcp_init(srv->loop, &c->tcp);
    uv_timer_init(srv->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->handles = 2;
    c->next = srv->conns;
    if (srv->conns) {
        srv->conns->prev = c;
    }
    srv->conns = c;
    srv->nopen++;
    c->req.c = c;
    c->state = CS_IDLE;
    if (uv_accept(ls, (uv_stream_t *)&c->tcp) != 0) {
        c->rejected = 1;
        conn_close(c);
        return;
    }
    int alen = sizeof c->peer;
    uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&c->peer, &alen);
    if (srv->nactive >= srv->opt.max_connections) {
        c->rejected = 1;
        PX_LOG_DEBUG(MOD, "connection refused open=%zu max=%u", srv->nactive,
                     srv->opt.max_connections);
        conn_send_error(c, 503, "too many connections");
        return;
    }
    srv->nactive++;
    uv_tcp_nodelay(&c->tcp, 1);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    request_deadline_start(c);
    request_timer_start(c);
    start_reading(c);
}

static int parse_listen(const char *s, struct sockaddr_storage *ss, char *err, size_t errlen)
{
    char host[INET6_ADDRSTRLEN];
    const char *port;
    size_t hlen;
    memset(ss, 0, sizeof *ss);
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end || end[1] != ':') {
            goto bad;
        }
        hlen = (size_t)(end - s - 1);
        port = end + 2;
        if (hlen == 0 || hlen >= sizeof host) {
            goto bad;
        }
        memcpy(host, s + 1, hlen);
    } else {
        const char *colon = strrchr(s, ':');
        if (!colon) {
            goto bad;
        }
        hlen = (size_t)(colon - s);
        port = colon + 1;
        if (hlen == 0 || hlen >= sizeof host) {
            goto bad;
        }
        memcpy(host, s, hlen);
    }
    host[hlen] = '\0';
    if (!*port || strlen(port) > 5 || strspn(port, "0123456789") != strlen(port)) {
        goto bad;
    }
    long pn = strtol(port, NULL, 10);
    if (pn > 65535) {
        goto bad;
    }
    if (s[0] == '[') {
        if (uv_ip6_addr(host, (int)pn, (struct sockaddr_in6 *)ss) != 0) {
            goto bad;
        }
    } else if (uv_ip4_addr(host, (int)pn, (struct sockaddr_in *)ss) != 0) {
        goto bad;
    }
    return 0;
bad:
    px_errf(err, errlen, "invalid listen address '%s' (want IPv4:port or [IPv6]:port)", s);
    return PX_EINVAL;
}

static void on_listener_closed(uv_handle_t *h)
{
    px_http_server *srv = h->data;
    srv->listener_closed = 1;
    server_maybe_finish(srv);
}

int px_http_server_create(uv_loop_t *loop, const px_http_server_options *opt,
                          px_http_server **out, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    int fd = -1, rc;
    if (!loop || !opt || !out || !opt->listen) {
        px_errf(err, errlen, "missing listen address");
        return PX_EINVAL;
    }
    if ((rc = parse_listen(opt->listen, &ss, err, errlen)) != 0) {
        return rc;
    }
    /* The socket is made and bound before any uv handle exists, so a failure leaves nothing
     * on the loop to close. */
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rc = -errno;
        goto fail;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    socklen_t sl = ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                            : sizeof(struct sockaddr_in);
    if (bind(fd, (struct sockaddr *)&ss, sl) != 0 || listen(fd, LISTEN_BACKLOG) != 0) {
        rc = -errno;
        goto fail;
    }
    struct sockaddr_storage bound;
    sl = sizeof bound;
    if (getsockname(fd, (struct sockaddr *)&bound, &sl) != 0) {
        rc = -errno;
        goto fail;
    }

    px_http_server *srv = px_xcalloc(1, sizeof *srv);
    srv->loop = loop;
    srv->opt = *opt;
    srv->opt.listen = NULL;
    if (!srv->opt.max_header_bytes) {
        srv->opt.max_header_bytes = DEFAULT_MAX_HEADER_BYTES;
    }
    if (!srv->opt.max_body_bytes) {
        srv->opt.max_body_bytes = DEFAULT_MAX_BODY_BYTES;
    }
    if (!srv->opt.header_timeout_ms) {
        srv->opt.header_timeout_ms = DEFAULT_HEADER_TIMEOUT_MS;
    }
    if (!srv->opt.request_timeout_ms) {
        srv->opt.request_timeout_ms = DEFAULT_REQUEST_TIMEOUT_MS;
    }
    if (!srv->opt.idle_timeout_ms) {
        srv->opt.idle_timeout_ms = DEFAULT_IDLE_TIMEOUT_MS;
    }
    if (!srv->opt.max_connections) {
        srv->opt.max_connections = DEFAULT_MAX_CONNECTIONS;
    }
    if (!srv->opt.shutdown_timeout_ms) {
        srv->opt.shutdown_timeout_ms = DEFAULT_SHUTDOWN_TIMEOUT_MS;
    }
    srv->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                  : ((struct sockaddr_in *)&bound)->sin_port);
    srv->unmatched = stat_get(srv, "unmatched");
    uv_tcp_init(loop, &srv->listener);
    uv_timer_init(loop, &srv->close_timer);
    srv->listener.data = srv;
    srv->close_timer.data = srv;
    if ((rc = uv_tcp_open(&srv->listener, fd)) == 0) {
        fd = -1; /* the handle owns it now */
        rc = uv_listen((uv_stream_t *)&srv->listener, LISTEN_BACKLOG, on_connection);
    }
    if (rc != 0) {
        /* Cannot happen for a socket that is already listening; release it the async way. */
        px_errf(err, errlen, "listen %s failed: %s", opt->listen, uv_strerror(rc));
        if (fd >= 0) {
            close(fd);
        }
        px_http_server_close(srv, NULL, NULL);
        return rc;
    }
    PX_LOG_INFO(MOD, "listening addr=%s port=%d", opt->listen, srv->port);
    *out = srv;
    return 0;

fail:
    px_errf(err, errlen, "listen %s failed: %s", opt->listen, uv_strerror(rc));
    if (fd >= 0) {
        close(fd);
    }
    return rc;
}

static void on_close_timeout(uv_timer_t *t)
{
    px_http_server *srv = t->data;
    size_t n = 0;
    for (conn *c = srv->conns, *next; c; c = next) {
        next = c->next;
        if (!c->closing && c->handles) {
            n += c->pending;
            conn_close(c);
        }
    }
    if (n) {
        PX_LOG_WARN(MOD, "closed connections with unanswered requests count=%zu", n);
    }
}

/* keep_partial: a request whose first bytes arrived may finish arriving (see retire). */
static void server_close(px_http_server *srv, px_http_server_close_cb cb, void *arg,
                         int keep_partial)
{
    if (!srv || srv->closing) {
        return;
    }
    srv->closing = 1;
    srv->close_cb = cb;
    srv->close_arg = arg;
    uv_close((uv_handle_t *)&srv->listener, on_listener_closed);
    for (conn *c = srv->conns, *next; c; c = next) {
        next = c->next;
        int partial = c->state == CS_HEAD || c->state == CS_BODY;
        int ended_stream = c->state == CS_STREAM && c->stream_ending; /* flushing its last bytes */
        if (!c->closing && c->handles && c->state != CS_HANDLER && c->state != CS_WRITING &&
            !ended_stream && !(keep_partial && partial)) {
            conn_close(c);
        }
    }
    uv_timer_start(&srv->close_timer, on_close_timeout, srv->opt.shutdown_timeout_ms, 0);
    server_maybe_finish(srv);
}

void px_http_server_close(px_http_server *srv, px_http_server_close_cb cb, void *arg)
{
    server_close(srv, cb, arg, 0);
}

void px_http_server_retire(px_http_server *srv, px_http_server_close_cb cb, void *arg)
{
    server_close(srv, cb, arg, 1);
}
