/* ploomes: Ploomes CRM in and out. As a source it receives Ploomes webhooks on a route of the
 * host's HTTP listener (checked with the instance's validation key) and registers the configured
 * subscriptions with the account; as a sink it calls the Ploomes REST API with the account's
 * User-Key. One instance = one Ploomes account. This file owns options and lifecycle. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <plexus/sdk.h>

#include "ploomes_api.h"
#include "ploomes_hooks.h"

#define host ploomes_host

static const px_option options[] = {
    {"path", PX_OPT_STRING, 0, "/ploomes/webhook", "webhook route on the host HTTP listener"},
    {"validation_key", PX_OPT_STRING, PX_OPT_SECRET, NULL,
     "expected X-Ploomes-Validation-Key; unset = no webhook route"},
    {"max_body", PX_OPT_SIZE, 0, "10MiB", "largest webhook body accepted (413 above)"},
    {"user_key", PX_OPT_STRING, PX_OPT_SECRET, NULL, "the account's integration key (User-Key)"},
    {"base_url", PX_OPT_STRING, 0, "https://public-api2.ploomes.com", "Ploomes API base URL"},
    {"subscriptions", PX_OPT_LIST, 0, NULL,
     "webhooks to register, \"Entity.Action\" (names or ids), e.g. Contacts.Update"},
    {"callback_url", PX_OPT_STRING, 0, NULL, "public URL of the webhook route, for registration"},
    {"entity_ids", PX_OPT_OBJECT, 0, NULL, "extra entity name -> id map for subscriptions"},
    {"action_ids", PX_OPT_OBJECT, 0, NULL, "action name -> id map that overrides the lookup"},
    {"sync_retry", PX_OPT_DURATION, 0, "5s", "first delay after a failed registration, doubling"},
    {"page_size", PX_OPT_INT, 0, "300", "$top when listing webhooks"},
    {"rate_limit", PX_OPT_INT, 0, "120", "API requests per minute at most (0 = no limit)"},
    {"retry_after", PX_OPT_DURATION, 0, "30s", "wait after a 429 without Retry-After"},
    {"timeout", PX_OPT_DURATION, 0, "30s", "limit on one API request"},
    {NULL, 0, 0, NULL, NULL},
};

/* A non-empty string option as an owned copy, or NULL. */
static char *opt_str(const json_t *cfg, const char *key)
{
    const char *v = json_string_value(json_object_get(cfg, key));
    return v && *v ? px_xstrdup(v) : NULL;
}

static int64_t opt_int(const json_t *cfg, const char *key)
{
    return (int64_t)json_integer_value(json_object_get(cfg, key));
}

/* Positive integer in a decimal string, or 0. */
static int64_t parse_id(const char *s, size_t len)
{
    int64_t v = 0;
    if (len == 0 || len > 15) {
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)s[i])) {
            return 0;
        }
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* Id of an entity name: configured map first, then the ids the Ploomes documentation gives. */
static int64_t entity_id(ploomes *p, const char *name, size_t len)
{
    int64_t id = parse_id(name, len);
    if (id) {
        return id;
    }
    const char *key;
    json_t *v;
    json_object_foreach(p->entity_ids, key, v) {
        if (strlen(key) == len && strncasecmp(key, name, len) == 0 && json_is_integer(v) &&
            json_integer_value(v) > 0) {
            return (int64_t)json_integer_value(v);
        }
    }
    static const struct {
        const char *name;
        int64_t id;
    } known[] = {{"contacts", 1}, {"contact", 1}, {"deals", 2}, {"deal", 2}};
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        if (strlen(known[i].name) == len && strncasecmp(known[i].name, name, len) == 0) {
            return known[i].id;
        }
    }
    return 0;
}

static int parse_subs(ploomes *p, const json_t *list)
{
    size_t n = json_array_size(list);
    p->subs = px_xcalloc(n, sizeof(*p->subs));
    for (size_t i = 0; i < n; i++) {
        const char *text = json_string_value(json_array_get(list, i));
        const char *dot = text ? strchr(text, '.') : NULL;
        if (!dot || dot == text || !dot[1] || strchr(dot + 1, '.')) {
            host->log(p->ctx, PX_LOG_ERROR,
                      "subscription \"%s\" must be Entity.Action, e.g. Contacts.Update",
                      text ? text : "");
            return PX_EINVAL;
        }
        int64_t eid = entity_id(p, text, (size_t)(dot - text));
        if (!eid) {
            host->log(p->ctx, PX_LOG_ERROR,
                      "subscription \"%s\": unknown entity %.*s; give its id (e.g. 1.2) or map it "
                      "in entity_ids",
                      text, (int)(dot - text), text);
            return PX_EINVAL;
        }
        int dup = 0;
        for (size_t k = 0; k < p->nsubs; k++) {
            dup |= p->subs[k].entity_id == eid && strcasecmp(p->subs[k].action, dot + 1) == 0;
        }
        if (dup) {
            continue;
        }
        ploomes_sub *s = &p->subs[p->nsubs++];
        s->text = px_xstrdup(text);
        s->action = px_xstrdup(dot + 1);
        s->entity_id = eid;
    }
    return 0;
}

static void ploomes_free(ploomes *p)
{
    for (size_t i = 0; i < p->nsubs; i++) {
        free(p->subs[i].text);
        free(p->subs[i].action);
    }
    free(p->subs);
    json_decref(p->entity_ids);
    json_decref(p->action_ids);
    free(p->path);
    free(p->sync_path);
    free(p->validation_key);
    free(p->user_key);
    free(p->base_url);
    free(p->callback_url);
    free(p);
}

/* Reports drained to the host once no work is left during drain; installed as call_ended. */
static void check_drained(ploomes *p)
{
    if (p->draining && !p->drained_sent && ploomes_api_idle(p)) {
        p->drained_sent = 1;
        host->drained(p->ctx);
    }
}

static int ploomes_init(px_plugin_ctx *ctx, const json_t *cfg, void **state)
{
    ploomes *p = px_xcalloc(1, sizeof(*p));
    p->ctx = ctx;
    p->call_ended = check_drained;
    p->path = opt_str(cfg, "path");
    p->validation_key = opt_str(cfg, "validation_key");
    p->user_key = opt_str(cfg, "user_key");
    p->base_url = opt_str(cfg, "base_url");
    p->callback_url = opt_str(cfg, "callback_url");
    p->max_body = opt_int(cfg, "max_body");
    p->timeout_ms = opt_int(cfg, "timeout");
    p->retry_after_ms = opt_int(cfg, "retry_after");
    p->sync_retry_ms = opt_int(cfg, "sync_retry");
    p->page_size = opt_int(cfg, "page_size");
    p->rate_limit = opt_int(cfg, "rate_limit");
    json_t *o = json_object_get(cfg, "entity_ids");
    p->entity_ids = json_is_object(o) ? json_incref(o) : json_object();
    o = json_object_get(cfg, "action_ids");
    p->action_ids = json_is_object(o) ? json_incref(o) : json_object();

    if (!p->path || p->path[0] != '/') {
        host->log(ctx, PX_LOG_ERROR, "path must start with '/'");
        goto fail;
    }
    size_t pl = strlen(p->path);
    while (pl > 1 && p->path[pl - 1] == '/') {
        p->path[--pl] = '\0';
    }
    p->sync_path = px_xcalloc(1, pl + sizeof("/sync"));
    snprintf(p->sync_path, pl + sizeof("/sync"), "%s/sync", p->path);
    if (!p->base_url || (strncmp(p->base_url, "http://", 7) != 0 &&
                         strncmp(p->base_url, "https://", 8) != 0)) {
        host->log(ctx, PX_LOG_ERROR, "base_url must be an http:// or https:// URL");
        goto fail;
    }
    size_t bl = strlen(p->base_url);
    while (bl > 0 && p->base_url[bl - 1] == '/') {
        p->base_url[--bl] = '\0';
    }
    if (p->page_size < 1 || p->page_size > 1000) {
        host->log(ctx, PX_LOG_ERROR, "page_size must be 1..1000, not %lld",
                  (long long)p->page_size);
        goto fail;
    }
    if (p->rate_limit < 0) {
        host->log(ctx, PX_LOG_ERROR, "rate_limit must not be negative");
        goto fail;
    }
    if (p->sync_retry_ms < 1) {
        p->sync_retry_ms = 1;
    }
    if (parse_subs(p, json_object_get(cfg, "subscriptions")) < 0) {
        goto fail;
    }
    if (p->nsubs > 0 && (!p->callback_url || !p->user_key || !p->validation_key)) {
        host->log(ctx, PX_LOG_ERROR,
                  "subscriptions need callback_url, user_key and validation_key");
        goto fail;
    }
    if (p->validation_key && ploomes_hooks_route(p) < 0) {
        goto fail;
    }
    *state = p;
    return 0;
fail:
    ploomes_free(p);
    return PX_EINVAL;
}

static int ploomes_start(void *state)
{
    ploomes *p = state;
    p->started = 1;
    if (p->nsubs > 0) {
        ploomes_sync_start(p);
    }
    return 0;
}

static void ploomes_stop(void *state)
{
    ploomes *p = state;
    if (p->stopping) {
        return;
    }
    p->stopping = 1;
    ploomes_hooks_stop(p);
    ploomes_api_stop(p);
}

static void ploomes_drain(void *state)
{
    ploomes *p = state;
    ploomes_stop(p);
    p->draining = 1;
    check_drained(p);
}

static void ploomes_destroy(void *state)
{
    ploomes *p = state;
    ploomes_stop(p);
    ploomes_hooks_destroy(p);
    ploomes_api_destroy(p);
    ploomes_free(p);
}

static const px_plugin_desc desc = {
    PX_PLUGIN_DESC_INIT,
    .kind = PX_KIND_SOURCE | PX_KIND_SINK,
    .name = "ploomes",
    .version = "1.0.0",
    .description = "Ploomes CRM: webhooks in (with registration), REST API actions out",
    .options = options,
    .init = ploomes_init,
    .start = ploomes_start,
    .deliver = ploomes_deliver,
    .stop = ploomes_stop,
    .drain = ploomes_drain,
    .destroy = ploomes_destroy,
};

PX_SDK_EXPORT const px_plugin_desc *PX_PLUGIN_ENTRY(const px_host_api *h)
{
    ploomes_host = h;
    return &desc;
}
