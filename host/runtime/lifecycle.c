/* The runtime's life: build from config, start, graceful shutdown (see lifecycle.h). */
#include "lifecycle.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api.h"
#include "err.h"
#include "fsutil.h"
#include "log.h"
#include "mem.h"
#include "net.h"
#include "metrics.h"
#include "plugin_check.h"
#include "store_open.h"

/* Removes private plugin copies left by an earlier process of this data dir. */
static void clean_copies(const char *dir)
{
    DIR *dh = opendir(dir);
    if (!dh) {
        return;
    }
    struct dirent *de;
    while ((de = readdir(dh)) != NULL) {
        size_t len = strlen(de->d_name);
        if (len > 3 && strcmp(de->d_name + len - 3, ".so") == 0) {
            char *p = px_xasprintf("%s/%s", dir, de->d_name);
            unlink(p);
            free(p);
        }
    }
    closedir(dh);
}

/* The folders plugins are loaded from, as they were resolved. */
static void log_plugin_path(const px_config *cfg)
{
    for (size_t i = 0; i < cfg->nplugin_path; i++) {
        if (cfg->plugin_path_relative && i == cfg->plugin_path_relative_at) {
            PX_LOG_INFO("host", "plugin path folder=%s given=%s (relative: resolved against the "
                        "working directory)", cfg->plugin_path[i], cfg->plugin_path_relative);
        } else {
            PX_LOG_INFO("host", "plugin path folder=%s", cfg->plugin_path[i]);
        }
    }
    if (cfg->plugin_trust == PX_TRUST_PERMISSIVE) {
        PX_LOG_WARN("host", "host.plugin_trust is permissive: plugin files anyone may change are "
                    "loaded with a warning; use it only while developing");
    }
}

static void close_services(px_runtime *rt)
{
    px_dispatch_close(rt->dispatch);
    rt->dispatch = NULL;
    if (rt->http) {
        px_http_server_close(rt->http, NULL, NULL);
        rt->http = NULL;
    }
    if (rt->client) {
        px_http_client_close(rt->client, NULL, NULL);
        rt->client = NULL;
    }
    px_store_close(rt->store);
    rt->store = NULL;
}

static int open_services(px_runtime *rt, char *err, size_t errlen)
{
    const px_config *cfg = rt->cfg;
    px_router *router = NULL;
    int rc = px_router_create(cfg, &router, err, errlen);
    if (rc < 0) {
        return rc;
    }
    rt->router = px_router_box_new(router);
    /* data_dir holds the plugin copies and crash records whatever the store */
    rc = px_mkdirs(cfg->data_dir);
    if (rc < 0) {
        snprintf(err, errlen, "host.data_dir %s: cannot create: %s", cfg->data_dir,
                 px_strerror(rc));
        return rc;
    }
    if (!rt->store) {
        rc = px_store_open_config(rt->loop, cfg, &rt->store, err, errlen);
        if (rc < 0) {
            return rc;
        }
    }
    if (cfg->store_type == PX_STORE_POSTGRES) {
        px_metrics_set_host(px_metrics_global(), cfg->host_id);
    }
    px_sink_directory dir = px_runtime_directory(rt);
    px_dispatch_create(rt->loop, rt->store, &dir, &rt->dispatch);
    rc = px_http_client_create(rt->loop, &rt->client);
    if (rc < 0) {
        snprintf(err, errlen, "http client: %s", px_strerror(rc));
        return rc;
    }
    if (cfg->http_listen && *cfg->http_listen) {
        px_http_server_options ho = {.listen = cfg->http_listen,
                                     .max_body_bytes = cfg->http_max_body,
                                     .max_connections = cfg->http_max_conns,
                                     .request_timeout_ms = cfg->http_request_timeout_ms};
        char herr[256];
        rc = px_http_server_create(rt->loop, &ho, &rt->http, herr, sizeof(herr));
        if (rc < 0) {
            snprintf(err, errlen, "%s: host.http.listen %s: %s", cfg->path, cfg->http_listen,
                     herr);
            return rc;
        }
        PX_LOG_INFO("host", "http listening address=%s port=%d", cfg->http_listen,
                    px_http_server_port(rt->http));
    }
    return 0;
}

static int load_instances(px_runtime *rt, char *err, size_t errlen)
{
    const px_config *cfg = rt->cfg;
    rt->instances = px_xcalloc(cfg->ninstances ? cfg->ninstances : 1, sizeof(*rt->instances));
    for (size_t i = 0; i < cfg->ninstances; i++) {
        const px_instance_conf *ic = &cfg->instances[i];
        char *file = NULL;
        json_t *opts = NULL;
        int rc = px_plugin_check_instance(cfg, ic, rt->gens.api, &file, &opts, err, errlen);
        if (rc < 0) {
            return rc;
        }
        px_instance *inst = px_instance_create(&rt->gens, ic->name, ic->plugin, file, opts,
                                               ic->max_inflight);
        inst->ordered = ic->ordered;
        rt->instances[rt->ninstances++] = inst;
        free(file);
        json_decref(opts);
        rc = px_gen_load(inst, inst->file, rt->copy_dir, cfg->plugin_trust, &inst->gen, err,
                         errlen);
        if (rc < 0) {
            return rc;
        }
        px_net_apply_routes(rt->http, inst->gen);
        px_instance_note_file(inst);
        PX_LOG_INFO("host", "loaded instance=%s plugin=%s version=%s generation=%u",
                    inst->name, inst->plugin, inst->gen->lib->desc->version,
                    inst->gen->generation);
    }
    return px_plugin_check_roles(cfg, rt->gens.api, err, errlen);
}

static int build(px_runtime *rt, char *err, size_t errlen)
{
    int rc = open_services(rt, err, errlen);
    if (rc < 0) {
        return rc;
    }
    rt->copy_dir = px_xasprintf("%s/plugins", rt->cfg->data_dir);
    rc = px_gen_copy_dir_prepare(rt->copy_dir, err, errlen);
    if (rc < 0) {
        return rc;
    }
    clean_copies(rt->copy_dir);
    log_plugin_path(rt->cfg);
    return load_instances(rt, err, errlen);
}

int px_runtime_create(uv_loop_t *loop, px_config *cfg, px_runtime **out, char *err,
                      size_t errlen)
{
    return px_runtime_create_on_store(loop, cfg, NULL, out, err, errlen);
}

int px_runtime_create_on_store(uv_loop_t *loop, px_config *cfg, px_store *store,
                               px_runtime **out, char *err, size_t errlen)
{
    px_runtime_edges edges = {.store = store};
    return px_runtime_create_with(loop, cfg, &edges, out, err, errlen);
}

/* No store in edges: open_services opens the SQLite store in data_dir. */
int px_runtime_create_with(uv_loop_t *loop, px_config *cfg, const px_runtime_edges *edges,
                           px_runtime **out, char *err, size_t errlen)
{
    px_runtime *rt = px_xcalloc(1, sizeof(*rt));
    rt->loop = loop;
    rt->cfg = cfg;
    rt->store = edges ? edges->store : NULL;
    px_api_init(&rt->api);
    px_runtime_wire(rt);
    if (edges && edges->plugin_api) {
        rt->gens.api = edges->plugin_api;
    }
    if (edges) {
        rt->gens.watch = edges->watch;
        rt->gens.watch_arg = edges->watch_arg;
    }
    px_defer_init(&rt->defer, loop);
    px_tap_init(&rt->tap, 0);
    int rc = build(rt, err, errlen);
    if (rc == 0) {
        *out = rt;
        return 0;
    }
    rt->stopping = 2;
    for (size_t i = 0; i < rt->ninstances; i++) {
        if (rt->instances[i]->gen) {
            px_gen_close(rt->instances[i]->gen, NULL);
            rt->instances[i]->gen = NULL;
        }
    }
    close_services(rt);
    px_defer_close(&rt->defer);
    uv_run(loop, UV_RUN_DEFAULT);
    for (size_t i = 0; i < rt->ninstances; i++) {
        px_instance_destroy(rt->instances[i]);
    }
    free(rt->instances);
    px_router_box_unref(rt->router);
    px_tap_deinit(&rt->tap);
    free(rt->copy_dir);
    free(rt);
    px_config_destroy(cfg); /* stolen, even on failure */
    return rc;
}

static int is_pure_sink(const px_instance *inst)
{
    return !(inst->kind & PX_KIND_SOURCE);
}

static void on_pending_sink(const char *sink, int64_t n, void *arg)
{
    px_runtime *rt = arg;
    PX_LOG_INFO("host", "resuming pending deliveries sink=%s count=%lld", sink, (long long)n);
    px_dispatch_kick(rt->dispatch, sink);
}

int px_runtime_start(px_runtime *rt, char *err, size_t errlen)
{
    /* Sinks first, so that the first event a source emits finds them running. */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < rt->ninstances; i++) {
            px_instance *inst = rt->instances[i];
            if (is_pure_sink(inst) != (pass == 0) || !inst->gen) {
                continue;
            }
            int rc = px_gen_start(inst->gen, err, errlen);
            if (rc < 0) {
                return rc;
            }
        }
    }
    for (size_t i = 0; i < rt->ninstances; i++) {
        if (rt->instances[i]->kind & PX_KIND_SINK) {
            px_dispatch_serve(rt->dispatch, rt->instances[i]->name);
        }
    }
    /* Deliveries left pending by an earlier run (crash, stop, sink down) resume. */
    px_store_pending_counts(rt->store, on_pending_sink, rt);
    PX_LOG_INFO("host", "started instances=%zu pipelines=%zu data_dir=%s", rt->ninstances,
                rt->cfg->npipelines, rt->cfg->data_dir);
    return 0;
}

/* --- shutdown ---------------------------------------------------------------------------- */

static void shutdown_phase(px_runtime *rt);

static void on_gen_drained(px_plugin_ctx *gen, void *arg)
{
    (void)gen;
    shutdown_phase(arg);
}

static void close_everything(px_runtime *rt)
{
    if (rt->on_close) {
        rt->on_close(rt->on_close_arg);
    }
    px_runtime_close_retiring(rt);
    for (size_t i = 0; i < rt->ninstances; i++) {
        px_instance *inst = rt->instances[i];
        if (inst->gen) {
            px_gen_close(inst->gen, NULL);
            inst->gen = NULL;
        }
    }
    close_services(rt);
    /* Deferred work still queued belongs to closed generations' emits: run it now so sources'
     * callbacks are not lost, then close the queue. */
    px_defer_run(&rt->defer);
    px_defer_close(&rt->defer);
    PX_LOG_INFO("host", "stopped");
}

/* Phase 1: sources stop and their emits settle. Phase 2: sinks finish in-flight deliveries.
 * Phase 3: close. Each phase waits for every generation of its kind to drain. */
static void shutdown_phase(px_runtime *rt)
{
    for (;;) {
        int phase = rt->stopping; /* 1 = sources, 2 = sinks, 3 = closing */
        if (phase >= 3) {
            return;
        }
        int waiting = 0;
        for (size_t i = 0; i < rt->ninstances; i++) {
            px_instance *inst = rt->instances[i];
            px_plugin_ctx *gen = inst->gen;
            if (!gen || is_pure_sink(inst) != (phase == 2)) {
                continue;
            }
            if (gen->state_code == PX_GEN_RUNNING || gen->state_code == PX_GEN_LOADED) {
                px_gen_stop(gen, rt->cfg->drain_timeout_ms, on_gen_drained, rt);
            }
            if (gen->state_code == PX_GEN_STOPPING) {
                waiting++;
            }
        }
        if (waiting) {
            return;
        }
        rt->stopping++;
        if (rt->stopping == 3) {
            close_everything(rt);
            return;
        }
    }
}

void px_runtime_shutdown(px_runtime *rt)
{
    if (rt->stopping) {
        return;
    }
    rt->stopping = 1;
    shutdown_phase(rt);
}

void px_runtime_destroy(px_runtime *rt)
{
    if (!rt) {
        return;
    }
    for (size_t i = 0; i < rt->nretired; i++) {
        px_instance_destroy(rt->retired[i]);
    }
    free(rt->retired);
    free(rt->last_reload_error);
    json_decref(rt->reload_log);
    for (size_t i = 0; i < rt->ninstances; i++) {
        px_instance_destroy(rt->instances[i]);
    }
    free(rt->instances);
    px_router_box_unref(rt->router);
    px_tap_deinit(&rt->tap);
    px_config_destroy(rt->cfg);
    free(rt->copy_dir);
    free(rt);
}
