/* The px_host_api table handed to plugins: thin adapters onto the runtime's modules, found
 * through the context each call names (see api.h). Every function checks its handle, so a
 * plugin's mistake is an error code, not a crash of the host. */
#include "api.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dispatch.h"
#include "err.h"
#include "event.h"
#include "ingest.h"
#include "json_check.h"
#include "locks.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "net.h"
#include "retry_after.h"
#include "runtime.h"
#include "clock.h"
#include "consttime.h"
#include "sha256.h"

static void api_log(px_plugin_ctx *ctx, int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    px_logv(level, ctx && ctx->inst ? ctx->inst->name : "plugin", fmt, ap);
    va_end(ap);
}

static const char *api_instance_name(px_plugin_ctx *ctx)
{
    return ctx ? ctx->inst->name : "";
}

static px_event *api_event_create(px_plugin_ctx *ctx, const char *type, json_t *payload)
{
    return px_event_create(ctx ? ctx->inst->name : "", type, payload);
}

static int api_emit(px_plugin_ctx *ctx, px_event *ev, px_persisted_cb cb, void *arg)
{
    if (!ctx) {
        px_event_unref(ev);
        return PX_EINVAL;
    }
    return px_ingest_emit(px_runtime_of(ctx), ctx, ev, cb, arg);
}

static void api_event_discard(px_event *ev)
{
    if (ev && !ev->emitted) {
        px_event_unref(ev);
    }
}

static const char *api_event_type(const px_event *ev) { return ev ? ev->type : NULL; }
static const char *api_event_id(const px_event *ev) { return ev ? ev->id : NULL; }
static const char *api_event_source(const px_event *ev) { return ev ? ev->source : NULL; }
static int64_t api_event_time_ms(const px_event *ev) { return ev ? ev->time_ms : 0; }
/* Events are immutable to plugins; parsing a text payload on first use only fills a cache. */
static json_t *api_event_payload(const px_event *ev)
{
    return ev ? px_event_payload((px_event *)ev) : NULL;
}

static const char *api_event_payload_text(const px_event *ev, size_t *len)
{
    return ev ? px_event_text((px_event *)ev, len) : NULL;
}

static const char *api_event_meta(const px_event *ev, const char *key)
{
    if (!ev || !ev->meta || !key) {
        return NULL;
    }
    return json_string_value(json_object_get(ev->meta, key));
}

/* What deliver() gave the plugin is a handle (dispatch.h): NULL once the delivery is complete. */
static px_delivery *open_delivery(px_delivery *handle)
{
    return px_dispatch_resolve(handle);
}

static const px_event *api_delivery_event(px_delivery *h)
{
    px_delivery *d = open_delivery(h);
    return d ? d->event : NULL;
}

static const char *api_delivery_action(px_delivery *h)
{
    px_delivery *d = open_delivery(h);
    return d ? d->action : NULL;
}

static json_t *api_delivery_params(px_delivery *h)
{
    px_delivery *d = open_delivery(h);
    return d ? d->params : NULL;
}

static const char *api_delivery_pipeline(px_delivery *h)
{
    px_delivery *d = open_delivery(h);
    return d ? d->pipeline : NULL;
}

static uint32_t api_delivery_attempt(px_delivery *h)
{
    px_delivery *d = open_delivery(h);
    return d ? d->attempt : 0;
}

static void api_complete(px_delivery *h, int status, const char *reason, uint64_t retry_after_ms)
{
    px_dispatch_complete(h, status, reason, retry_after_ms);
}

static int api_post(px_plugin_ctx *ctx, void (*cb)(void *arg), void *arg)
{
    return px_gen_post(ctx, cb, arg);
}

static json_t *api_kv_get(px_plugin_ctx *ctx, const char *key)
{
    px_store *store = ctx ? px_runtime_of(ctx)->store : NULL;
    if (!key || !store) {
        return NULL;
    }
    return px_store_kv_get(store, ctx->inst->name, key);
}

static int api_kv_set(px_plugin_ctx *ctx, const char *key, const json_t *value)
{
    px_store *store = ctx ? px_runtime_of(ctx)->store : NULL;
    if (!key || !store) {
        return PX_EINVAL;
    }
    return px_store_kv_set(store, ctx->inst->name, key, value);
}

static void api_counter_add(px_plugin_ctx *ctx, const char *name, const char *labels,
                            double delta)
{
    px_metrics_plugin_counter(ctx && ctx->inst ? ctx->inst->name : NULL, name, labels, delta);
}

static void api_gauge_set(px_plugin_ctx *ctx, const char *name, const char *labels, double value)
{
    px_metrics_plugin_gauge(ctx && ctx->inst ? ctx->inst->name : NULL, name, labels, value);
}

static void api_drained(px_plugin_ctx *ctx)
{
    if (!ctx) {
        return;
    }
    ctx->drain_reported = 1;
    px_gen_check_drained(ctx);
}

static int api_dead_letter(px_plugin_ctx *ctx, const char *raw, size_t len, const json_t *meta,
                           const char *reason, px_persisted_cb cb, void *arg)
{
    if (!ctx) {
        return PX_EINVAL;
    }
    return px_ingest_dead_letter(px_runtime_of(ctx), ctx, raw, len, meta, reason, cb, arg);
}

static int api_http_route(px_plugin_ctx *ctx, const char *method, const char *path,
                          uint32_t flags, px_http_handler cb, void *arg)
{
    return px_net_route(ctx ? px_runtime_of(ctx)->http : NULL, ctx, method, path, flags, cb, arg);
}

static int api_http_request(px_plugin_ctx *ctx, const px_http_options *opt,
                            px_http_response_cb cb, void *arg, px_http_call **out)
{
    return px_net_request(ctx ? px_runtime_of(ctx)->client : NULL, ctx, opt, cb, arg, out);
}

static int api_event_set_raw(px_event *ev, const char *json, size_t len)
{
    if (!ev || ev->emitted) {
        return PX_ESTATE;
    }
    if (!json) {
        return PX_EINVAL;
    }
    px_event_set_text(ev, json, len);
    return 0;
}

static void set_error(json_error_t *error, const char *text)
{
    if (error) {
        memset(error, 0, sizeof(*error));
        error->line = error->column = -1;
        snprintf(error->text, sizeof(error->text), "%s", text);
        snprintf(error->source, sizeof(error->source), "<event_create_text>");
    }
}

static px_event *api_event_create_text(px_plugin_ctx *ctx, const char *type, const char *json,
                                       size_t len, size_t flags, json_error_t *error)
{
    if (!ctx || !type || !*type || (!json && len)) {
        set_error(error, "bad argument: context, type and text are required");
        return NULL;
    }
    if (!json) {
        json = "";
    }
    if (px_json_check(json, len, flags) == PX_JSON_OK) {
        return px_event_create_text(ctx->inst->name, type, json, len, flags);
    }
    /* Not certainly JSON: jansson decides, and says why not. The tree it built is kept. */
    json_error_t local;
    json_t *payload = json_loadb(json, len, flags, error ? error : &local);
    if (!payload) {
        return NULL;
    }
    px_event *ev = px_event_create(ctx->inst->name, type, payload);
    px_event_set_text(ev, json, len);
    return ev;
}

/* --- ABI 1.2 --------------------------------------------------------------------------- */

static void api_vlog(px_plugin_ctx *ctx, int level, const char *fmt, va_list ap)
{
    px_logv(level, ctx && ctx->inst ? ctx->inst->name : "plugin", fmt, ap);
}

static void api_set_error(px_plugin_ctx *ctx, const char *fmt, ...)
{
    if (!fmt) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    char *text = NULL;
    if (vasprintf(&text, fmt, ap) < 0) {
        text = NULL;
    }
    va_end(ap);
    if (!text) {
        return;
    }
    px_log(PX_LOG_ERROR, ctx && ctx->inst ? ctx->inst->name : "plugin", "%s", text);
    if (ctx) {
        char *masked = px_log_redact(text);
        free(ctx->error);
        ctx->error = masked ? masked : px_xstrdup(text);
    }
    free(text);
}

static json_t *api_kv_get_versioned(px_plugin_ctx *ctx, const char *key, int64_t *version)
{
    px_store *store = ctx ? px_runtime_of(ctx)->store : NULL;
    if (version) {
        *version = 0;
    }
    if (!key || !store || !version) {
        return NULL;
    }
    return px_store_kv_get_versioned(store, ctx->inst->name, key, version);
}

static int api_kv_cas(px_plugin_ctx *ctx, const char *key, int64_t expected_version,
                      const json_t *value, int64_t *new_version)
{
    px_store *store = ctx ? px_runtime_of(ctx)->store : NULL;
    if (!key || !store || expected_version < 0) {
        return PX_EINVAL;
    }
    return px_store_kv_cas(store, ctx->inst->name, key, expected_version, value, new_version);
}

static void api_sha256(const void *data, size_t len, uint8_t *out)
{
    px_sha256(data, len, out);
}

static void api_hmac_sha256(const void *key, size_t key_len, const void *data, size_t len,
                            uint8_t *out)
{
    px_hmac_sha256(key, key_len, data, len, out);
}

static int64_t api_retry_after_ms(const char *value)
{
    return px_retry_after_ms(value, px_now_ms());
}

static const json_t *api_event_payload_const(const px_event *ev)
{
    return api_event_payload(ev);
}

static const json_t *api_delivery_params_const(px_delivery *d)
{
    return api_delivery_params(d);
}

static int api_lock_acquire(px_plugin_ctx *gen, const char *name, uint32_t ttl_ms,
                            void (*cb)(void *arg, int status), void *arg)
{
    if (!gen) {
        return PX_EINVAL;
    }
    px_runtime *rt = px_runtime_of(gen);
    return px_locks_acquire(rt->loop, rt->store, gen, name, ttl_ms, cb, arg);
}

static int api_cluster(px_plugin_ctx *gen, px_cluster_info *info)
{
    return gen ? px_locks_cluster(px_runtime_of(gen)->store, gen, info) : PX_EINVAL;
}

void px_api_init(px_host_api *api)
{
    memset(api, 0, sizeof(*api));
    api->abi_major = PX_SDK_ABI_MAJOR;
    api->abi_minor = PX_SDK_ABI_MINOR;
    api->size = sizeof(*api);
    api->log = api_log;
    api->instance_name = api_instance_name;
    api->event_create = api_event_create;
    api->event_set = px_event_set;
    api->event_set_hint = px_event_set_hint;
    api->event_set_meta = px_event_set_meta;
    api->emit = api_emit;
    api->event_discard = api_event_discard;
    api->event_type = api_event_type;
    api->event_id = api_event_id;
    api->event_source = api_event_source;
    api->event_meta = api_event_meta;
    api->event_time_ms = api_event_time_ms;
    api->event_payload = api_event_payload;
    api->delivery_event = api_delivery_event;
    api->delivery_action = api_delivery_action;
    api->delivery_params = api_delivery_params;
    api->delivery_pipeline = api_delivery_pipeline;
    api->delivery_attempt = api_delivery_attempt;
    api->complete = api_complete;
    api->post = api_post;
    api->timer_start = px_gen_timer_start;
    api->timer_stop = px_gen_timer_stop;
    api->http_route = api_http_route;
    api->http_request = api_http_request;
    px_net_fill_api(api);
    api->kv_get = api_kv_get;
    api->kv_set = api_kv_set;
    api->counter_add = api_counter_add;
    api->gauge_set = api_gauge_set;
    api->drained = api_drained;
    api->dead_letter = api_dead_letter;
    api->event_set_raw = api_event_set_raw;
    api->event_create_text = api_event_create_text;
    api->event_payload_text = api_event_payload_text;
    api->set_error = api_set_error;
    api->vlog = api_vlog;
    api->kv_get_versioned = api_kv_get_versioned;
    api->kv_cas = api_kv_cas;
    api->lock_acquire = api_lock_acquire;
    api->lock_release = px_locks_release;
    api->cluster = api_cluster;
    api->sha256 = api_sha256;
    api->hmac_sha256 = api_hmac_sha256;
    api->ct_equal = px_ct_equal;
    api->retry_after_ms = api_retry_after_ms;
    api->event_payload_const = api_event_payload_const;
    api->delivery_params_const = api_delivery_params_const;
}
