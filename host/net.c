/* Network glue between plugin generations and the HTTP server/client. */
#include "daemon.h"
#include "err.h"

int px_daemon_http_route(px_daemon *d, px_plugin_ctx *gen, const char *method, const char *path,
                         uint32_t flags, px_http_handler cb, void *arg)
{
    (void)d, (void)gen, (void)method, (void)path, (void)flags, (void)cb, (void)arg;
    return PX_ESTATE;
}

int px_daemon_http_request(px_daemon *d, px_plugin_ctx *gen, const px_http_options *opt,
                           px_http_response_cb cb, void *arg, px_http_call **out)
{
    (void)d, (void)gen, (void)opt, (void)cb, (void)arg, (void)out;
    return PX_ESTATE;
}

void px_daemon_http_fill(px_host_api *api)
{
    (void)api;
}

void px_daemon_release_gen(px_daemon *d, px_plugin_ctx *gen)
{
    (void)d, (void)gen;
}
