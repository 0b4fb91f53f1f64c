/* The effective configuration, masked (see config_view.h). */
#include "config_view.h"

#include <string.h>

#include "log.h"
#include "runtime.h"

#define MASK "***"

static const char *durability_name(int d)
{
    return d == PX_DURABILITY_FSYNC ? "fsync" : "normal";
}

static json_t *host_json(const px_config *cfg)
{
    json_t *ppath = json_array();
    for (size_t i = 0; i < cfg->nplugin_path; i++) {
        json_array_append_new(ppath, json_string(cfg->plugin_path[i]));
    }
    json_t *admin = json_pack("{so ss so sb}", "listen",
                              cfg->admin_listen ? json_string(cfg->admin_listen) : json_null(),
                              "auth", cfg->admin_auth == PX_ADMIN_AUTH_NONE ? "none" : "token",
                              "token", cfg->admin_token ? json_string(MASK) : json_null(),
                              "metrics_public", cfg->admin_metrics_public);
    json_t *store = json_pack("{ss ss sI}", "type",
                              cfg->store_type == PX_STORE_POSTGRES ? "postgres" : "sqlite",
                              "host_id", cfg->host_id ? cfg->host_id : "", "lease_ms",
                              (json_int_t)cfg->store_lease_ms);
    /* The password is registered as a secret: the masking of every string hides it. */
    json_object_set_new(store, "url", cfg->store_url ? json_string(cfg->store_url) : json_null());
    json_t *http = json_pack("{so sI sI sI}", "listen",
                             cfg->http_listen ? json_string(cfg->http_listen) : json_null(),
                             "max_body", (json_int_t)cfg->http_max_body, "max_connections",
                             (json_int_t)cfg->http_max_conns, "request_timeout_ms",
                             (json_int_t)cfg->http_request_timeout_ms);
    return json_pack("{ss so so so so ss ss ss sI sI sI sb}", "data_dir", cfg->data_dir, "plugin_path",
                     ppath, "http", http, "admin", admin, "store", store, "durability",
                     durability_name(cfg->durability), "log_level",
                     cfg->log_level ? cfg->log_level : "info", "log_format",
                     cfg->log_format ? cfg->log_format : "auto", "dedupe_window_ms",
                     (json_int_t)cfg->dedupe_window_ms, "drain_timeout_ms",
                     (json_int_t)cfg->drain_timeout_ms, "max_crashes",
                     (json_int_t)cfg->max_crashes, "watch_plugins", cfg->watch_plugins);
}

/* The running instance named `name`, or NULL. */
static const px_instance *running(const px_runtime *rt, const char *name)
{
    for (size_t i = 0; i < rt->ninstances; i++) {
        if (strcmp(rt->instances[i]->name, name) == 0) {
            return rt->instances[i];
        }
    }
    return NULL;
}

/* The options of ic, validated when the instance runs, with its secret options masked. */
static json_t *options_json(const px_runtime *rt, const px_instance_conf *ic)
{
    const px_instance *inst = running(rt, ic->name);
    json_t *opts = json_deep_copy(inst && inst->config ? inst->config : ic->config);
    const px_option *o = inst && inst->gen && inst->gen->lib ? inst->gen->lib->options : NULL;
    for (; o && o->name; o++) {
        if ((o->flags & PX_OPT_SECRET) && json_object_get(opts, o->name) &&
            !json_is_null(json_object_get(opts, o->name))) {
            json_object_set_new(opts, o->name, json_string(MASK));
        }
    }
    return opts;
}

static json_t *instances_json(const px_runtime *rt, const px_config *cfg)
{
    json_t *out = json_object();
    for (size_t i = 0; i < cfg->ninstances; i++) {
        const px_instance_conf *ic = &cfg->instances[i];
        json_t *o = json_pack("{ss sI}", "plugin", ic->plugin, "max_inflight",
                              (json_int_t)ic->max_inflight);
        if (ic->max_pending) {
            json_object_set_new(o, "max_pending", json_integer((json_int_t)ic->max_pending));
        }
        if (ic->max_eps > 0) {
            json_object_set_new(o, "max_events_per_second", json_real(ic->max_eps));
        }
        json_object_set_new(o, "config", options_json(rt, ic));
        json_object_set_new(out, ic->name, o);
    }
    return out;
}

static json_t *when_json(const px_pipeline_conf *p)
{
    json_t *types = json_array();
    for (size_t i = 0; i < p->ntypes; i++) {
        json_array_append_new(types, json_string(p->types[i]));
    }
    json_t *match = json_array();
    for (size_t i = 0; i < p->nconds; i++) {
        const px_cond *c = &p->conds[i];
        const char *op = c->op == PX_COND_EQUALS ? "equals" : c->op == PX_COND_IN ? "in" : "exists";
        json_array_append_new(match, json_pack("{ss so}", "pointer", c->pointer, op,
                                               c->value ? json_deep_copy(c->value)
                                                        : json_null()));
    }
    return json_pack("{so so}", "type", types, "match", match);
}

static json_t *pipelines_json(const px_config *cfg)
{
    json_t *out = json_array();
    for (size_t i = 0; i < cfg->npipelines; i++) {
        const px_pipeline_conf *p = &cfg->pipelines[i];
        json_t *to = json_array();
        for (size_t t = 0; t < p->nto; t++) {
            json_array_append_new(to, json_pack("{ss ss so}", "sink", p->to[t].sink, "action",
                                                p->to[t].action ? p->to[t].action : "", "with",
                                                p->to[t].with ? json_deep_copy(p->to[t].with)
                                                              : json_object()));
        }
        json_t *retry = json_pack("{sI sI sI sf sI}", "attempts", (json_int_t)p->retry.attempts,
                                  "backoff_ms", (json_int_t)p->retry.backoff_ms,
                                  "max_backoff_ms", (json_int_t)p->retry.max_backoff_ms,
                                  "jitter", p->retry.jitter, "timeout_ms",
                                  (json_int_t)p->retry.timeout_ms);
        json_array_append_new(out, json_pack("{ss ss so so so}", "name", p->name, "from", p->from,
                                             "when", when_json(p), "to", to, "retry", retry));
    }
    return out;
}

json_t *px_config_view_json(const px_runtime *rt)
{
    const px_config *cfg = rt->cfg;
    if (!cfg) {
        return json_object();
    }
    json_t *out = json_pack("{ss ss si so so so}", "path", cfg->path ? cfg->path : "", "hash",
                            cfg->hash, "version", cfg->version, "host", host_json(cfg),
                            "plugins", instances_json(rt, cfg), "pipelines",
                            pipelines_json(cfg));
    px_log_redact_json(out);
    return out;
}
