/* Network glue between plugin generations and the host's HTTP server and client: routes and
 * calls are tagged with the generation that made them, so a generation that goes away takes
 * exactly its own with it. A generation that is not yet its instance's current one (a reload in
 * progress) records its routes without taking them over; px_net_apply_routes switches them in one
 * step when the generation becomes current, and can switch an old one's back. Loop thread. */
#ifndef PX_NET_H
#define PX_NET_H

#include <stdint.h>

#include <plexus/sdk.h>

#include "http_client.h"
#include "http_server.h"

/* SDK http_route() of gen on http (NULL when host.http.listen is not set: refused). */
int px_net_route(px_http_server *http, px_plugin_ctx *gen, const char *method, const char *path,
                 uint32_t flags, px_http_handler cb, void *arg);
/* SDK http_request() of gen through client. */
int px_net_request(px_http_client *client, px_plugin_ctx *gen, const px_http_options *opt,
                   px_http_response_cb cb, void *arg, px_http_call **out);
/* Fills the SDK's HTTP accessors into api. */
void px_net_fill_api(px_host_api *api);
/* Points every route gen recorded at gen (it became, or became again, the current one). */
void px_net_apply_routes(px_http_server *http, px_plugin_ctx *gen);
/* Releases gen's routes, answers its unanswered requests and cancels its calls (http and client
 * may be NULL). */
void px_net_release_gen(px_http_server *http, px_http_client *client, px_plugin_ctx *gen);

#endif
