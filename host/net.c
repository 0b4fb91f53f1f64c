/* Network glue between plugin generations and the host's HTTP server and client: routes and
 * calls are tagged with the generation that made them, so a generation that goes away takes
 * exactly its own with it. */
#include <string.h>

#include "daemon.h"
#include "err.h"
#include "http_client.h"
#include "http_server.h"
#include "log.h"

int px_daemon_http_route(px_daemon *d, px_plugin_ctx *gen, const char *method, const char *path,
                         uint32_t flags, px_http_handler cb, void *arg)
{
    if (!d || !gen || !path || !cb) {
        return PX_EINVAL;
    }
    if (!d->http) {
        PX_LOG_WARN(gen->inst->name, "route %s needs host.http.listen, which is not set", path);
        return PX_ESTATE;
    }
    return px_http_server_route(d->http, method, path, flags, cb, arg, gen);
}

int px_daemon_http_request(px_daemon *d, px_plugin_ctx *gen, const px_http_options *opt,
                           px_http_response_cb cb, void *arg, px_http_call **out)
{
    if (!d || !gen || !d->client) {
        return PX_ESTATE;
    }
    if (gen->state_code == PX_GEN_DESTROYED) {
        return PX_ESTATE;
    }
    return px_http_client_request_owned(d->client, gen, opt, cb, arg, out);
}

void px_daemon_http_fill(px_host_api *api)
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

void px_daemon_release_gen(px_daemon *d, px_plugin_ctx *gen)
{
    if (d->http) {
        px_http_server_unroute_owner(d->http, gen);
        size_t n = px_http_server_fail_owner(d->http, gen, 503);
        if (n) {
            PX_LOG_WARN(gen->inst->name, "answered %zu unanswered requests with 503 at unload",
                        n);
        }
    }
    if (d->client) {
        px_http_client_cancel_owner(d->client, gen);
    }
}
