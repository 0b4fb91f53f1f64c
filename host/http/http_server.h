/* The host's HTTP/1.1 server: one listening socket, its connections, request parsing with
 * http-parser, the route table plugins and the host register into, limits and timeouts, and
 * per-route response counters for /metrics. Answers are asynchronous: a handler answers with
 * px_http_respond now or later. A connection parses no further request until the current one is
 * answered and written, so pipelined requests are answered in order.
 * Every function here is for the loop thread only (the thread of `loop` given to create). The
 * process must ignore SIGPIPE (libuv writes with write(2)), as main() does for every socket. */
#ifndef PX_HTTP_SERVER_H
#define PX_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include <plexus/sdk.h>
#include <uv.h>

typedef struct px_http_server px_http_server;

typedef struct px_http_server_options {
    const char *listen;           /* "127.0.0.1:8080", "[::1]:8080", "0.0.0.0:0" (port 0 =
                                     ephemeral); numeric addresses only; borrowed for create */
    size_t max_header_bytes;      /* request line + header names and values; 0 = 16 KiB;
                                     over it -> 431 and close (http-parser's own cap of
                                     80 KiB on the raw header block applies too) */
    size_t max_body_bytes;        /* decoded request body; 0 = 1 MiB; over it -> 413 and close */
    uint64_t header_timeout_ms;   /* headers (and then each body read) not in within it -> 408
                                     and close; a new connection that sends nothing is closed
                                     quietly; 0 = 10 s */
    uint64_t request_timeout_ms;  /* a whole request (headers and body) not in within it -> 408
                                     and close, however steadily it trickles in; counted from
                                     the accept for a connection's first request, from its first
                                     byte for the next ones; 0 = 30 s */
    uint64_t idle_timeout_ms;     /* keep-alive connection idle that long -> closed quietly; also
                                     bounds a stalled response write; 0 = 60 s */
    uint32_t max_connections;     /* beyond it a connection is accepted, answered 503 with
                                     "Connection: close" and closed; 0 = 1024 */
    uint64_t shutdown_timeout_ms; /* px_http_server_close waits that long for unanswered
                                     requests before closing their sockets; 0 = 5 s */
} px_http_server_options;

/* Binds and listens on opt->listen (opt borrowed). On success returns 0 and stores the server in
 * *out (owned by caller; px_http_server_close). On failure returns PX_EINVAL (bad option) or a
 * libuv error (UV_EADDRINUSE, UV_EADDRNOTAVAIL...) with a one-line message in err (errlen bytes,
 * NUL-terminated; err may be NULL) and leaves *out untouched. The socket is bound and listening
 * before any handle exists, so a failure leaves nothing on the loop to close. */
int px_http_server_create(uv_loop_t *loop, const px_http_server_options *opt,
                          px_http_server **out, char *err, size_t errlen);

/* The bound TCP port (useful after listening on port 0). */
int px_http_server_port(const px_http_server *srv);

/* Routes `method` (borrowed, copied; NULL = any method; case-sensitive, e.g. "POST") + `path`
 * (borrowed, copied; starts with '/') to cb(req, arg). flags: 0 or PX_ROUTE_PREFIX (path then
 * matches itself and "path/..."; a path ending in '/' matches everything under it). `owner`
 * (borrowed, compared by address only; may be NULL) tags the route for unroute/fail_owner and
 * px_http_req_owner. A route with the same method and path replaces the old one (its flags, cb,
 * arg and owner), which is how a reload repoints a route without touching any socket.
 * Matching: an exact route beats a prefix route, a longer prefix beats a shorter one; within the
 * winning path a route of the request's method beats a method-less one, and HEAD falls back to
 * GET. No route -> 404; the path matches but no method does -> 405 with Allow. Paths are matched
 * as received (no percent-decoding). Returns 0 or PX_EINVAL. */
int px_http_server_route(px_http_server *srv, const char *method, const char *path,
                         unsigned flags, px_http_handler cb, void *arg, const void *owner);

/* Removes every route whose owner is `owner` (borrowed). Requests already handed to the owner's
 * handlers are not touched (see fail_owner). Returns the number of routes removed. */
size_t px_http_server_unroute_owner(px_http_server *srv, const void *owner);

/* Answers every handed-out, still unanswered request of `owner` (borrowed) with `status` and a
 * {"error":...} body, releasing them: the owner must not touch those requests afterwards. Call
 * px_http_server_unroute_owner first, or a pipelined request behind one of them may reach the
 * owner's handler again. Returns the number of requests answered. */
size_t px_http_server_fail_owner(px_http_server *srv, const void *owner, int status);

/* Metrics: calls cb once per (route, status) pair seen so far, where route (valid for the call
 * only) is the registered path pattern or "unmatched" (404/405, and errors before a request
 * matched a route: 400, 408, 431, 503). Counts survive route removal. */
typedef void (*px_http_stat_cb)(const char *route, int status, uint64_t count, void *arg);
void px_http_server_foreach_stat(const px_http_server *srv, px_http_stat_cb cb, void *arg);

/* Open client connections (including those being refused with 503 or closing). */
size_t px_http_server_connections(const px_http_server *srv);

/* Stops listening, closes idle and half-received connections now, lets requests already handed
 * to a handler be answered (their answer carries "Connection: close") for up to
 * shutdown_timeout_ms, then closes every remaining socket. cb(arg) (may be NULL) runs once every
 * handle of the server is closed; srv is freed just before it and must not be used after this
 * call. A request still unanswered when its socket closes stays valid until its handler calls
 * px_http_respond, which then only releases it. NULL is a no-op. */
typedef void (*px_http_server_close_cb)(void *arg);
void px_http_server_close(px_http_server *srv, px_http_server_close_cb cb, void *arg);

/* As px_http_server_close, for a listener another one replaces (a reload moving an address):
 * a request whose first bytes have arrived may also finish arriving and is answered (with
 * "Connection: close"), within its request timeout and shutdown_timeout_ms. */
void px_http_server_retire(px_http_server *srv, px_http_server_close_cb cb, void *arg);

/* --- Requests: exactly the SDK's px_host_api signatures (see <plexus/sdk.h>) -------------------
 * A request is valid from its handler call until px_http_respond on it, even if the client has
 * disconnected meanwhile. Every string returned is valid until then. */
const char *px_http_req_method(px_http_request *req);           /* "GET", "POST"... */
const char *px_http_req_path(px_http_request *req);             /* without the query string */
const char *px_http_req_query(px_http_request *req);            /* after '?', or "" */
/* First header named `name` (borrowed; case-insensitive), or NULL when absent. */
const char *px_http_req_header(px_http_request *req, const char *name);
/* The decoded body (NUL-terminated for convenience; "" when empty); *len (may be NULL) gets its
 * length. */
const char *px_http_req_body(px_http_request *req, size_t *len);
/* Adds a response header (both borrowed, copied) before px_http_respond. Returns PX_EINVAL for a
 * name or value with CR/LF, an empty name, or a header the server owns (Content-Length,
 * Connection, Transfer-Encoding, Date); PX_ESTATE after respond. */
int px_http_set_header(px_http_request *req, const char *name, const char *value);
/* Answers and releases req (invalid afterwards). status outside 200..599 becomes 500;
 * content_type (borrowed) NULL = "application/json"; body (borrowed, len bytes) is copied if the
 * socket cannot take it at once. If the client is gone, nothing is written. */
void px_http_respond(px_http_request *req, int status, const char *content_type,
                     const char *body, size_t len);

/* --- Streamed answers (host only): a body written piece by piece, e.g. lines of JSON --------
 * The head goes out with Transfer-Encoding: chunked (an HTTP/1.0 client gets the bytes up to the
 * close) and Connection: close; the connection ends with the stream. Pieces written while the
 * socket is busy are joined and written at once when it frees up. */

/* Runs once if the connection closes before px_http_stream_end (the client left, a write
 * failed, the server closed): the owner must call px_http_stream_end(req) (now or later), which
 * then only releases req. */
typedef void (*px_http_stream_closed_cb)(px_http_request *req, void *arg);

/* Answers req with status and content_type (borrowed; NULL or with CR/LF:
 * application/octet-stream) and keeps it open for px_http_stream_write. The connection's kernel
 * send buffer is made small, so that what a slow reader leaves unread shows in
 * px_http_stream_backlog. Returns 0, or PX_ESTATE when req is answered or its client gone
 * (answer it with px_http_respond then). */
int px_http_stream_start(px_http_request *req, int status, const char *content_type,
                         px_http_stream_closed_cb on_closed, void *arg);
/* Appends data (len bytes, borrowed, copied) to the stream. Returns 0, or PX_ESTATE when the
 * stream is ending or its connection closed. Never blocks: memory grows with what the reader
 * leaves, which the caller bounds with px_http_stream_backlog. */
int px_http_stream_write(px_http_request *req, const char *data, size_t len);
/* Bytes written to the stream that the socket has not taken yet. */
size_t px_http_stream_backlog(px_http_request *req);
/* Ends the stream (the last piece, then the connection closes) and releases req (invalid
 * afterwards). */
void px_http_stream_end(px_http_request *req);

/* Host-only request accessors. */
const void *px_http_req_owner(px_http_request *req); /* the owner of the route it matched */
/* The peer as "1.2.3.4:5678" or "[::1]:5678" (valid until respond); "" if unknown. */
const char *px_http_req_remote(px_http_request *req);

#endif
