/* amocrm admin API: one prefix route on the host's HTTP listener, dispatched here to the seed's
 * endpoints. Everything but amoCRM's own callbacks (/webhook/create, /webhook/delete) needs
 * "Authorization: Bearer <api_token>". Message bodies are JSON strings, as the seed says. */
#include <stdio.h>
#include <string.h>

#include "api.h"
#include "account.h"
#include "cache.h"
#include "client.h"
#include "rules.h"
#include "consttime.h"

static int authorized(amocrm *a, px_http_request *req)
{
    const char *h = amocrm_host->http_req_header(req, "Authorization");
    if (!h || strncmp(h, "Bearer ", 7) != 0) {
        return 0;
    }
    h += 7;
    while (*h == ' ') {
        h++;
    }
    return px_ct_streq(h, a->api_token);
}

static int method_in(px_http_request *req, const char *method, const char *allow)
{
    char list[64];
    snprintf(list, sizeof(list), "%s", allow);
    for (char *save = NULL, *m = strtok_r(list, ", ", &save); m; m = strtok_r(NULL, ", ", &save)) {
        if (strcmp(m, method) == 0) {
            return 1;
        }
    }
    amocrm_host->http_set_header(req, "Allow", allow);
    amocrm_respond_msg(req, 405, "Method Not Allowed");
    return 0;
}

static const struct {
    const char *path;
    int c;
} lists[] = {
    {"/users", AMOCRM_C_USERS}, {"/pipelines", AMOCRM_C_PIPELINES}, {"/steps", AMOCRM_C_STEPS},
    {"/fields", AMOCRM_C_FIELDS}, {"/tags", AMOCRM_C_TAGS},
};

/* Before answering: what other hosts sharing the store changed (account, tokens, caches,
 * rules) is read again, so that every host answers alike. */
static void shared_sync(amocrm *a)
{
    if (amocrm_shared_sync(a, 1)) {
        amocrm_gauges(a);
    }
    amocrm_client_reread(a);
}

static void on_request(px_http_request *req, void *arg)
{
    amocrm *a = arg;
    const char *path = amocrm_host->http_req_path(req);
    const char *method = amocrm_host->http_req_method(req);
    const char *rest = path + strlen(a->prefix);
    if (strcmp(rest, "/webhook/create") == 0) {
        if (method_in(req, method, "GET")) {
            amocrm_api_webhook_create(a, req);
        }
        return;
    }
    if (strcmp(rest, "/webhook/delete") == 0) {
        if (method_in(req, method, "GET")) {
            shared_sync(a);
            amocrm_api_webhook_delete(a, req);
        }
        return;
    }
    if (!authorized(a, req)) {
        amocrm_host->http_set_header(req, "WWW-Authenticate", "Bearer");
        amocrm_respond_msg(req, 401, "Unauthorized");
        return;
    }
    shared_sync(a);
    if (strcmp(rest, "/account") == 0) {
        if (method_in(req, method, "GET, POST, DELETE")) {
            amocrm_api_account(a, req, method);
        }
        return;
    }
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
        if (strcmp(rest, lists[i].path) == 0) {
            if (method_in(req, method, "GET, PATCH")) {
                amocrm_api_list(a, req, method, lists[i].c);
            }
            return;
        }
    }
    if (strncmp(rest, "/rules/", 7) == 0 && rest[7] && !strchr(rest + 7, '/')) {
        if (method_in(req, method, "GET, POST, PATCH")) {
            amocrm_api_rules(a, req, method, rest + 7);
        }
        return;
    }
    amocrm_respond_msg(req, 404, "Not Found");
}

int amocrm_api_register(amocrm *a)
{
    /* The root prefix is "": its route is "/", which matches every path under it. */
    return amocrm_host->http_route(a->ctx, NULL, a->prefix[0] ? a->prefix : "/", PX_ROUTE_PREFIX,
                                   on_request, a);
}
