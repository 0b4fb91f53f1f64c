/* Routes and calls of plugin generations (see net.h). */
#include "net.h"

#include <stdlib.h>
#include <string.h>

#include "crash.h"
#include "err.h"
#include "instance.h"
#include "log.h"
#include "mem.h"

struct px_route_rec {
    char *method, *path;
    uint32_t flags;
    px_http_handler cb;
    void *arg;
    px_plugin_ctx *gen;
    struct px_route_rec *next;
};

/* Every plugin route is served through this, so a crash in a handler names its instance (and
 * the delivery px_dispatch_blame finds: a request comes from outside, so it names no cause). */
static void on_route(px_http_request *req, void *arg)
{
    struct px_route_rec *r = arg;
    px_crash_frame cf;
    px_gen_crash_enter(&cf, r->gen, "http_route", 0);
    r->cb(req, r->arg);
    px_crash_leave(&cf);
}

/* An outgoing call of a plugin: its callback runs in a crash frame charged to the delivery the
 * plugin was handling when it made the call. */
typedef struct call_rec {
    px_plugin_ctx *gen;
    px_http_response_cb cb;
    void *arg;
    uint64_t cause;
} call_rec;

static void on_response(int status, const px_http_response *resp, const char *error, void *arg)
{
    call_rec *c = arg;
    px_crash_frame cf;
    px_gen_crash_enter(&cf, c->gen, "http_response", c->cause);
    c->cb(status, resp, error, c->arg);
    px_crash_leave(&cf);
    free(c);
}

int px_net_route(px_http_server *http, px_plugin_ctx *gen, const char *method, const char *path,
                 uint32_t flags, px_http_handler cb, void *arg)
{
    if (!gen || !path || !cb || path[0] != '/') {
        return PX_EINVAL;
    }
    if (!http) {
        PX_LOG_WARN(gen->inst->name, "route %s needs host.http.listen, which is not set", path);
        return PX_ESTATE;
    }
    struct px_route_rec *r = px_xcalloc(1, sizeof(*r));
    r->method = px_xstrdup(method);
    r->path = px_xstrdup(path);
    r->flags = flags;
    r->cb = cb;
    r->arg = arg;
    r->gen = gen;
    if (gen == gen->inst->gen) {
        int rc = px_http_server_route(http, method, path, flags, on_route, r, gen);
        if (rc < 0) {
            free(r->method);
            free(r->path);
            free(r);
            return rc;
        }
    }
    r->next = gen->routes;
    gen->routes = r;
    return 0;
}

void px_net_apply_routes(px_http_server *http, px_plugin_ctx *gen)
{
    if (!http) {
        return;
    }
    for (struct px_route_rec *r = gen->routes; r; r = r->next) {
        px_http_server_route(http, r->method, r->path, r->flags, on_route, r, gen);
    }
}

int px_net_request(px_http_client *client, px_plugin_ctx *gen, const px_http_options *opt,
                   px_http_response_cb cb, void *arg, px_http_call **out)
{
    if (!gen || !client) {
        return PX_ESTATE;
    }
    if (gen->state_code == PX_GEN_DESTROYED) {
        return PX_ESTATE;
    }
    if (!cb) {
        return px_http_client_request_owned(client, gen, opt, NULL, arg, out);
    }
    call_rec *c = px_xmalloc(sizeof(*c));
    *c = (call_rec){gen, cb, arg, px_crash_cause(gen)};
    /* The client calls back exactly once when it accepts the call (cancelled calls included). */
    int rc = px_http_client_request_owned(client, gen, opt, on_response, c, out);
    if (rc < 0) {
        free(c);
    }
    return rc;
}

void px_net_fill_api(px_host_api *api)
{
    api->http_req_method = px_http_req_method;
    api->http_req_path = px_http_req_path;
    api->http_req_query = px_http_req_query;
    api->http_req_header = px_http_req_header;
    api->http_req_body = px_http_req_body;
    api->http_set_header = px_http_set_header;
    api->http_respond = px_http_respond;
    api->http_cancel = px_http_cancel;
    api->http_resp_header = px_http_resp_header;
    api->http_resp_body = px_http_resp_body;
}

void px_net_release_gen(px_http_server *http, px_http_client *client, px_plugin_ctx *gen)
{
    while (gen->routes) {
        struct px_route_rec *r = gen->routes;
        gen->routes = r->next;
        free(r->method);
        free(r->path);
        free(r);
    }
    if (http) {
        px_http_server_unroute_owner(http, gen);
        size_t n = px_http_server_fail_owner(http, gen, 503);
        if (n) {
            PX_LOG_WARN(gen->inst->name, "answered %zu unanswered requests with 503 at unload",
                        n);
        }
    }
    if (client) {
        px_http_client_cancel_owner(client, gen);
    }
}
