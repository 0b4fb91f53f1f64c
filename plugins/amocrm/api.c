/* amocrm admin API: one prefix route on the host's HTTP listener, dispatched here to the seed's
 * endpoints. Everything but amoCRM's own callbacks (/webhook/create, /webhook/delete) needs
 * "Authorization: Bearer <api_token>". Message bodies are JSON strings, as the seed says. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "amocrm.h"
#include "common.h"

static int hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

static char *decode(const char *s, size_t n)
{
    char *out = malloc(n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '+') {
            out[o++] = ' ';
        } else if (s[i] == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 &&
                   hexval(s[i + 2]) >= 0) {
            out[o++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return out;
}

char *amo_query_get(const char *query, const char *name)
{
    size_t nlen = strlen(name);
    const char *p = query;
    while (p && *p) {
        const char *end = strchr(p, '&');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        size_t klen = eq ? (size_t)(eq - p) : len;
        char *key = decode(p, klen);
        int hit = strlen(key) == nlen && memcmp(key, name, nlen) == 0;
        free(key);
        if (hit) {
            return eq ? decode(eq + 1, len - klen - 1) : strdup("");
        }
        p = end ? end + 1 : NULL;
    }
    return NULL;
}

void amo_url_encode(const char *s, char *buf, size_t len, size_t *o)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s && *o + 4 < len; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~') {
            buf[(*o)++] = (char)c;
        } else {
            buf[(*o)++] = '%';
            buf[(*o)++] = hex[c >> 4];
            buf[(*o)++] = hex[c & 15];
        }
    }
    if (*o < len) {
        buf[*o] = '\0';
    }
}

static int authorized(amo *a, px_http_request *req)
{
    const char *h = amo_host->http_req_header(req, "Authorization");
    if (!h || strncmp(h, "Bearer ", 7) != 0) {
        return 0;
    }
    h += 7;
    while (*h == ' ') {
        h++;
    }
    return px_common_consttime_eq(h, a->api_token);
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
    amo_host->http_set_header(req, "Allow", allow);
    amo_respond_msg(req, 405, "Method Not Allowed");
    return 0;
}

static const struct {
    const char *path;
    int c;
} lists[] = {
    {"/users", AMO_C_USERS}, {"/pipelines", AMO_C_PIPELINES}, {"/steps", AMO_C_STEPS},
    {"/fields", AMO_C_FIELDS}, {"/tags", AMO_C_TAGS},
};

static void on_request(px_http_request *req, void *arg)
{
    amo *a = arg;
    const char *path = amo_host->http_req_path(req);
    const char *method = amo_host->http_req_method(req);
    const char *rest = path + strlen(a->prefix);
    if (strcmp(rest, "/webhook/create") == 0) {
        if (method_in(req, method, "GET")) {
            amo_api_webhook_create(a, req);
        }
        return;
    }
    if (strcmp(rest, "/webhook/delete") == 0) {
        if (method_in(req, method, "GET")) {
            amo_api_webhook_delete(a, req);
        }
        return;
    }
    if (!authorized(a, req)) {
        amo_host->http_set_header(req, "WWW-Authenticate", "Bearer");
        amo_respond_msg(req, 401, "Unauthorized");
        return;
    }
    if (strcmp(rest, "/account") == 0) {
        if (method_in(req, method, "GET, POST, DELETE")) {
            amo_api_account(a, req, method);
        }
        return;
    }
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
        if (strcmp(rest, lists[i].path) == 0) {
            if (method_in(req, method, "GET, PATCH")) {
                amo_api_list(a, req, method, lists[i].c);
            }
            return;
        }
    }
    if (strncmp(rest, "/rules/", 7) == 0 && rest[7] && !strchr(rest + 7, '/')) {
        if (method_in(req, method, "GET, POST, PATCH")) {
            amo_api_rules(a, req, method, rest + 7);
        }
        return;
    }
    amo_respond_msg(req, 404, "Not Found");
}

static void hold_unlink(amo *a, amo_hold *h)
{
    if (h->prev) {
        h->prev->next = h->next;
    } else if (a->holds == h) {
        a->holds = h->next;
    }
    if (h->next) {
        h->next->prev = h->prev;
    }
    h->prev = h->next = NULL;
}

amo_hold *amo_hold_req(amo *a, px_http_request *req)
{
    amo_hold *h = calloc(1, sizeof(*h));
    h->req = req;
    h->next = a->holds;
    if (a->holds) {
        a->holds->prev = h;
    }
    a->holds = h;
    return h;
}

void amo_hold_answer(amo *a, amo_hold *h, int status, const char *msg)
{
    if (h->req) {
        hold_unlink(a, h);
        amo_respond_msg(h->req, status, msg);
    }
    free(h);
}

void amo_hold_drop(amo *a, amo_hold *h)
{
    if (h->req) {
        hold_unlink(a, h);
    }
    free(h);
}

void amo_hold_release_all(amo *a)
{
    while (a->holds) {
        amo_hold *h = a->holds;
        hold_unlink(a, h);
        px_http_request *req = h->req;
        h->req = NULL;
        amo_respond_msg(req, 503, "shutting down: try again");
    }
}

int amo_api_register(amo *a)
{
    /* The root prefix is "": its route is "/", which matches every path under it. */
    return amo_host->http_route(a->ctx, NULL, a->prefix[0] ? a->prefix : "/", PX_ROUTE_PREFIX,
                                on_request, a);
}
