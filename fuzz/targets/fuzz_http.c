/* Fuzz target: the HTTP request path of the host's server (http-parser callbacks, header and body
 * limits, keep-alive and pipelining, routing, responses), driven through a real loopback TCP
 * connection: the input is written as the client's bytes, the client half-closes, and the loop
 * runs until the server has answered and closed (or a time bound passes). */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "http_server.h"
#include "log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uv_loop_t loop;
static px_http_server *srv;
static int port;

static void on_hook(px_http_request *req, void *arg)
{
    (void)arg;
    size_t len = 0;
    const char *body = px_http_req_body(req, &len);
    const char *ct = px_http_req_header(req, "Content-Type");
    const char *q = px_http_req_query(req);
    char reply[128];
    int n = snprintf(reply, sizeof(reply), "{\"len\":%zu,\"ct\":%d,\"q\":%zu,\"first\":%d}", len,
                     ct != NULL, q ? strlen(q) : 0, len ? (unsigned char)body[0] : -1);
    px_http_set_header(req, "X-Fuzz", px_http_req_method(req));
    px_http_respond(req, 202, NULL, reply, (size_t)n);
}

static void on_prefix(px_http_request *req, void *arg)
{
    (void)arg;
    const char *path = px_http_req_path(req);
    px_http_respond(req, 200, "text/plain", path, strlen(path));
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    px_log_set_level(-1);
    uv_loop_init(&loop);
    px_http_server_options o = {
        .listen = "127.0.0.1:0", .max_header_bytes = 4096, .max_body_bytes = 65536,
        .header_timeout_ms = 200, .idle_timeout_ms = 200, .max_connections = 8,
    };
    char err[256];
    if (px_http_server_create(&loop, &o, &srv, err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz_http: %s\n", err);
        abort();
    }
    port = px_http_server_port(srv);
    px_http_server_route(srv, "POST", "/hook", 0, on_hook, NULL, NULL);
    px_http_server_route(srv, NULL, "/api/", 0, on_prefix, NULL, NULL);
    px_http_server_route(srv, "GET", "/api/exact", 0, on_prefix, NULL, NULL);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        return 0;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return 0;
    }
    fcntl(fd, F_SETFL, O_NONBLOCK);
    size_t sent = 0;
    int wr_closed = 0;
    uint64_t deadline = uv_hrtime() + 1500ull * 1000000;
    char buf[65536];
    for (;;) {
        uv_run(&loop, UV_RUN_NOWAIT);
        if (sent < size) {
            ssize_t w = send(fd, data + sent, size - sent, MSG_NOSIGNAL);
            if (w > 0) {
                sent += (size_t)w;
            } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
                sent = size; /* the server closed on us */
            }
        } else if (!wr_closed) {
            shutdown(fd, SHUT_WR);
            wr_closed = 1;
        }
        ssize_t r = recv(fd, buf, sizeof(buf), 0);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
            break; /* answered and closed */
        }
        if (uv_hrtime() > deadline) {
            break;
        }
        if (r < 0) {
            struct pollfd pfd = {.fd = fd, .events = POLLIN};
            poll(&pfd, 1, 1);
        }
    }
    close(fd);
    /* let the server see the close and free the connection */
    for (int i = 0; i < 50 && px_http_server_connections(srv) > 0; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        usleep(200);
    }
    return 0;
}
