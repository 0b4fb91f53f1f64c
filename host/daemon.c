/* The running host: build from config, start, graceful shutdown (see daemon.h). */
#include "daemon.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "admin.h"
#include "err.h"
#include "http_client.h"
#include "http_server.h"
#include "log.h"
#include "mem.h"

px_router_box *px_router_box_ref(px_router_box *b)
{
    b->refs++;
    return b;
}

void px_router_box_unref(px_router_box *b)
{
    if (b && --b->refs == 0) {
        px_router_destroy(b->router);
        free(b);
    }
}

static const px_retry_policy default_policy = {
    .attempts = 10, .backoff_ms = 1000, .max_backoff_ms = 600000, .jitter = 0.2,
    .timeout_ms = 30000,
};

const px_retry_policy *px_daemon_policy(px_daemon *d, const char *pipeline)
{
    if (d->cfg && pipeline) {
        for (size_t i = 0; i < d->cfg->npipelines; i++) {
            if (strcmp(d->cfg->pipelines[i].name, pipeline) == 0) {
                return &d->cfg->pipelines[i].retry;
            }
        }
    }
    return &default_policy;
}

px_instance *px_daemon_instance(px_daemon *d, const char *name)
{
    for (size_t i = 0; i < d->ninstances; i++) {
        if (strcmp(d->instances[i]->name, name) == 0) {
            return d->instances[i];
        }
    }
    return NULL;
}

static void on_defer(uv_async_t *a)
{
    px_daemon *d = a->data;
    /* Take the list as it is now: callbacks deferring more work run on the next wake-up. */
    px_deferred *it = d->defer_head;
    d->defer_head = d->defer_tail = NULL;
    while (it) {
        px_deferred *next = it->next;
        it->cb(it->arg);
        free(it);
        it = next;
    }
}

void px_daemon_defer(px_daemon *d, void (*cb)(void *arg), void *arg)
{
    px_deferred *it = px_xmalloc(sizeof(*it));
    it->cb = cb;
    it->arg = arg;
    it->next = NULL;
    if (d->defer_tail) {
        d->defer_tail->next = it;
    } else {
        d->defer_head = it;
    }
    d->defer_tail = it;
    uv_async_send(&d->defer_async);
}

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

int px_daemon_validate_instance(const px_config *cfg, const px_instance_conf *ic,
                                const px_host_api *api, char **file_out, json_t **opts_out,
                                char *err, size_t errlen)
{
    char *file = NULL;
    if (px_loader_find(cfg->plugin_path, cfg->nplugin_path, ic->plugin, &file) < 0) {
        char dirs[512] = "";
        size_t used = 0;
        for (size_t i = 0; i < cfg->nplugin_path && used < sizeof(dirs); i++) {
            used += (size_t)snprintf(dirs + used, sizeof(dirs) - used, "%s%s", i ? ":" : "",
                                     cfg->plugin_path[i]);
        }
        snprintf(err, errlen, "%s:%d:%d: plugin \"%s\" of instance \"%s\" not found in "
                 "plugin_path (%s)", cfg->path, ic->line, ic->col, ic->plugin, ic->name, dirs);
        return PX_ENOTFOUND;
    }
    px_plugin_lib *lib = NULL;
    int rc = px_loader_open(file, ic->plugin, api, cfg->plugin_trust, &lib, err, errlen);
    if (rc < 0) {
        free(file);
        return rc;
    }
    if (*err) {
        PX_LOG_WARN("loader", "%s (host.plugin_trust: permissive)", err + strlen("warning: "));
    }
    json_t *opts = NULL;
    rc = px_config_options(cfg, ic, lib->desc->options, &opts, err, errlen);
    px_loader_close(lib);
    if (rc < 0) {
        free(file);
        return rc;
    }
    *file_out = file;
    *opts_out = opts;
    return 0;
}

static uint32_t kind_of(const px_config *cfg, const px_host_api *api, const char *instance)
{
    const px_instance_conf *ic = px_config_instance(cfg, instance);
    char *file = NULL;
    uint32_t kind = 0;
    char err[256];
    px_plugin_lib *lib = NULL;
    if (ic && px_loader_find(cfg->plugin_path, cfg->nplugin_path, ic->plugin, &file) == 0 &&
        px_loader_open(file, ic->plugin, api, cfg->plugin_trust, &lib, err, sizeof(err)) == 0) {
        kind = lib->desc->kind;
        px_loader_close(lib);
    }
    free(file);
    return kind;
}

int px_daemon_check_roles(const px_config *cfg, const px_host_api *api, char *err, size_t errlen)
{
    for (size_t i = 0; i < cfg->npipelines; i++) {
        const px_pipeline_conf *p = &cfg->pipelines[i];
        if (strcmp(p->from, "*") != 0) {
            uint32_t k = kind_of(cfg, api, p->from);
            if (k && !(k & PX_KIND_SOURCE)) {
                snprintf(err, errlen, "%s:%d:%d: pipeline \"%s\": \"%s\" is not a source (its "
                         "plugin only takes deliveries)", cfg->path, p->line, p->col, p->name,
                         p->from);
                return PX_ECONFIG;
            }
        }
        for (size_t t = 0; t < p->nto; t++) {
            uint32_t k = kind_of(cfg, api, p->to[t].sink);
            if (k && !(k & PX_KIND_SINK)) {
                snprintf(err, errlen, "%s:%d:%d: pipeline \"%s\": \"%s\" is not a sink (its "
                         "plugin only produces events)", cfg->path, p->to[t].line, p->to[t].col,
                         p->name, p->to[t].sink);
                return PX_ECONFIG;
            }
        }
    }
    return 0;
}

static void on_async_closed(uv_handle_t *h)
{
    (void)h;
}

static void close_network(px_daemon *d)
{
    px_admin_close(d->admin);
    d->admin = NULL;
    if (d->http) {
        px_http_server_close(d->http, NULL, NULL);
        d->http = NULL;
    }
    if (d->client) {
        px_http_client_close(d->client, NULL, NULL);
        d->client = NULL;
    }
}

int px_daemon_create(uv_loop_t *loop, px_config *cfg, px_daemon **out, char *err, size_t errlen)
{
    px_daemon *d = px_xcalloc(1, sizeof(*d));
    d->loop = loop;
    d->cfg = cfg;
    px_api_init(&d->api);
    px_the_daemon = d;
    uv_async_init(loop, &d->defer_async, on_defer);
    d->defer_async.data = d;
    uv_unref((uv_handle_t *)&d->defer_async);

    px_router *router = NULL;
    int rc = px_router_create(cfg, &router, err, errlen);
    if (rc < 0) {
        goto fail;
    }
    d->router = px_xcalloc(1, sizeof(*d->router));
    d->router->router = router;
    d->router->refs = 1;
    px_spool_options so = {.durability = cfg->durability,
                           .dedupe_window_ms = cfg->dedupe_window_ms};
    rc = px_spool_open(loop, cfg->data_dir, &so, &d->spool, err, errlen);
    if (rc < 0) {
        goto fail;
    }
    rc = px_state_open(cfg->data_dir, &d->state);
    if (rc < 0) {
        snprintf(err, errlen, "state store in %s: %s", cfg->data_dir, px_strerror(rc));
        goto fail;
    }
    px_dispatch_create(d, &d->dispatch);
    rc = px_http_client_create(loop, &d->client);
    if (rc < 0) {
        snprintf(err, errlen, "http client: %s", px_strerror(rc));
        goto fail;
    }
    if (cfg->http_listen && *cfg->http_listen) {
        px_http_server_options ho = {.listen = cfg->http_listen,
                                     .max_body_bytes = cfg->http_max_body,
                                     .max_connections = cfg->http_max_conns,
                                     .request_timeout_ms = cfg->http_request_timeout_ms};
        char herr[256];
        rc = px_http_server_create(loop, &ho, &d->http, herr, sizeof(herr));
        if (rc < 0) {
            snprintf(err, errlen, "%s: host.http.listen %s: %s", cfg->path, cfg->http_listen,
                     herr);
            goto fail;
        }
        PX_LOG_INFO("host", "http listening address=%s port=%d", cfg->http_listen,
                    px_http_server_port(d->http));
    }
    px_admin_create(d, &d->admin); /* a failure is logged; the host runs without it */
    d->copy_dir = px_xasprintf("%s/plugins", cfg->data_dir);
    rc = px_gen_copy_dir_prepare(d->copy_dir, err, errlen);
    if (rc < 0) {
        goto fail;
    }
    clean_copies(d->copy_dir);
    log_plugin_path(cfg);

    d->instances = px_xcalloc(cfg->ninstances ? cfg->ninstances : 1, sizeof(*d->instances));
    for (size_t i = 0; i < cfg->ninstances; i++) {
        const px_instance_conf *ic = &cfg->instances[i];
        char *file = NULL;
        json_t *opts = NULL;
        rc = px_daemon_validate_instance(cfg, ic, &d->api, &file, &opts, err, errlen);
        if (rc < 0) {
            goto fail;
        }
        px_instance *inst = px_instance_create(d, ic->name, ic->plugin, file, opts,
                                               ic->max_inflight);
        d->instances[d->ninstances++] = inst;
        free(file);
        json_decref(opts);
        rc = px_gen_load(inst, inst->file, d->copy_dir, cfg->plugin_trust, &inst->gen, err,
                         errlen);
        if (rc < 0) {
            goto fail;
        }
        px_daemon_apply_routes(d, inst->gen);
        px_instance_note_file(inst);
        PX_LOG_INFO("host", "loaded instance=%s plugin=%s version=%s generation=%u",
                    inst->name, inst->plugin, inst->gen->lib->desc->version,
                    inst->gen->generation);
    }
    rc = px_daemon_check_roles(cfg, &d->api, err, errlen);
    if (rc < 0) {
        goto fail;
    }
    *out = d;
    return 0;

fail:
    d->stopping = 2;
    for (size_t i = 0; i < d->ninstances; i++) {
        if (d->instances[i]->gen) {
            px_gen_close(d->instances[i]->gen, NULL);
            d->instances[i]->gen = NULL;
        }
    }
    px_dispatch_close(d->dispatch);
    d->dispatch = NULL;
    close_network(d);
    px_spool_close(d->spool);
    d->spool = NULL;
    px_state_close(d->state);
    d->state = NULL;
    uv_close((uv_handle_t *)&d->defer_async, on_async_closed);
    uv_run(loop, UV_RUN_DEFAULT);
    for (size_t i = 0; i < d->ninstances; i++) {
        px_instance_destroy(d->instances[i]);
    }
    free(d->instances);
    px_router_box_unref(d->router);
    free(d->copy_dir);
    free(d);
    px_the_daemon = NULL;
    return rc;
}

static void on_signal(uv_signal_t *s, int signum)
{
    px_daemon *d = s->data;
    if (signum == SIGHUP) {
        char err[1024];
        PX_LOG_INFO("host", "SIGHUP: reloading configuration %s", d->cfg->path);
        px_daemon_reload(d, NULL, err, sizeof(err));
        return;
    }
    if (d->stopping) {
        PX_LOG_WARN("host", "second stop signal: exiting now; the spool keeps every "
                    "acknowledged event");
        _exit(1);
    }
    PX_LOG_INFO("host", "stop requested signal=%d", signum);
    px_daemon_shutdown(d);
}

static int is_pure_sink(const px_instance *inst)
{
    return !(inst->kind & PX_KIND_SOURCE);
}

static void on_pending_sink(const char *sink, int64_t n, void *arg)
{
    px_daemon *d = arg;
    PX_LOG_INFO("host", "resuming pending deliveries sink=%s count=%lld", sink, (long long)n);
    px_dispatch_kick(d->dispatch, sink);
}

int px_daemon_start(px_daemon *d, char *err, size_t errlen)
{
    /* Sinks first, so that the first event a source emits finds them running. */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < d->ninstances; i++) {
            px_instance *inst = d->instances[i];
            if (is_pure_sink(inst) != (pass == 0) || !inst->gen) {
                continue;
            }
            int rc = px_gen_start(inst->gen, err, errlen);
            if (rc < 0) {
                return rc;
            }
        }
    }
    /* Deliveries left pending by an earlier run (crash, stop, sink down) resume. */
    px_spool_pending_counts(d->spool, on_pending_sink, d);
    uv_signal_init(d->loop, &d->sigint);
    uv_signal_init(d->loop, &d->sigterm);
    uv_signal_init(d->loop, &d->sighup);
    d->sigint.data = d->sigterm.data = d->sighup.data = d;
    uv_signal_start(&d->sigint, on_signal, SIGINT);
    uv_signal_start(&d->sigterm, on_signal, SIGTERM);
    uv_signal_start(&d->sighup, on_signal, SIGHUP);
    px_daemon_watch_start(d);
    PX_LOG_INFO("host", "started instances=%zu pipelines=%zu data_dir=%s", d->ninstances,
                d->cfg->npipelines, d->cfg->data_dir);
    return 0;
}

/* --- shutdown ---------------------------------------------------------------------------- */

static void shutdown_phase(px_daemon *d);

static void on_gen_drained(px_plugin_ctx *gen, void *arg)
{
    px_daemon *d = arg;
    (void)gen;
    shutdown_phase(d);
}

static void on_handle_closed(uv_handle_t *h)
{
    (void)h;
}

static void close_everything(px_daemon *d)
{
    px_daemon_watch_stop(d);
    px_daemon_close_retiring(d);
    for (size_t i = 0; i < d->ninstances; i++) {
        px_instance *inst = d->instances[i];
        if (inst->gen) {
            px_gen_close(inst->gen, NULL);
            inst->gen = NULL;
        }
    }
    px_dispatch_close(d->dispatch);
    d->dispatch = NULL;
    close_network(d);
    px_spool_close(d->spool);
    d->spool = NULL;
    px_state_close(d->state);
    d->state = NULL;
    uv_close((uv_handle_t *)&d->sigint, on_handle_closed);
    uv_close((uv_handle_t *)&d->sigterm, on_handle_closed);
    uv_close((uv_handle_t *)&d->sighup, on_handle_closed);
    /* Deferred work still queued belongs to closed generations' emits: run it now so sources'
     * callbacks are not lost, then close the async. */
    on_defer(&d->defer_async);
    uv_close((uv_handle_t *)&d->defer_async, on_handle_closed);
    PX_LOG_INFO("host", "stopped");
}

/* Phase 1: sources stop and their emits settle. Phase 2: sinks finish in-flight deliveries.
 * Phase 3: close. Each phase waits for every generation of its kind to drain. */
static void shutdown_phase(px_daemon *d)
{
    for (;;) {
        int phase = d->stopping; /* 1 = sources, 2 = sinks, 3 = closing */
        if (phase >= 3) {
            return;
        }
        int waiting = 0;
        for (size_t i = 0; i < d->ninstances; i++) {
            px_instance *inst = d->instances[i];
            px_plugin_ctx *gen = inst->gen;
            if (!gen || is_pure_sink(inst) != (phase == 2)) {
                continue;
            }
            if (gen->state_code == PX_GEN_RUNNING || gen->state_code == PX_GEN_LOADED) {
                px_gen_stop(gen, d->cfg->drain_timeout_ms, on_gen_drained, d);
            }
            if (gen->state_code == PX_GEN_STOPPING) {
                waiting++;
            }
        }
        if (waiting) {
            return;
        }
        d->stopping++;
        if (d->stopping == 3) {
            close_everything(d);
            return;
        }
    }
}

void px_daemon_shutdown(px_daemon *d)
{
    if (d->stopping) {
        return;
    }
    d->stopping = 1;
    shutdown_phase(d);
}

void px_daemon_destroy(px_daemon *d)
{
    if (!d) {
        return;
    }
    for (size_t i = 0; i < d->nretired; i++) {
        px_instance_destroy(d->retired[i]);
    }
    free(d->retired);
    free(d->last_reload_error);
    for (size_t i = 0; i < d->ninstances; i++) {
        px_instance_destroy(d->instances[i]);
    }
    free(d->instances);
    px_router_box_unref(d->router);
    px_config_destroy(d->cfg);
    free(d->copy_dir);
    free(d);
    if (px_the_daemon == d) {
        px_the_daemon = NULL;
    }
}
