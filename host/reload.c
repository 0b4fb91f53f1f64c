/* Hot reload: new generations of plugin instances and configuration changes applied to a
 * running host without losing an event (see daemon.h, px_daemon_reload).
 *
 * A new generation is loaded from a private copy of the plugin file and initialised while the
 * old one keeps serving; only then does it become current (its HTTP routes take over the old
 * ones' paths in the same loop turn, new deliveries go to it), and the old one is stopped and
 * drained in the background: its in-flight deliveries finish or, past the drain timeout, are
 * retried on the new generation. A generation that fails to load, init or start is rolled back
 * and the old one keeps serving. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "admin.h"
#include "clock.h"
#include "daemon.h"
#include "err.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"

#define WATCH_DEBOUNCE_MS 300
#define WATCH_RETRY_MS 2000

/* --- old generations --------------------------------------------------------------------- */

static void on_retired_gen_closed(px_plugin_ctx *gen)
{
    px_daemon *d = gen->inst->daemon;
    px_instance *inst = gen->inst;
    /* A removed instance goes once its last generation is gone. */
    for (size_t i = 0; i < d->nretired; i++) {
        if (d->retired[i] == inst && !inst->gen) {
            d->retired[i] = d->retired[--d->nretired];
            px_instance_destroy(inst);
            break;
        }
    }
}

static void on_old_drained(px_plugin_ctx *gen, void *arg)
{
    px_daemon *d = arg;
    for (size_t i = 0; i < d->nretiring; i++) {
        if (d->retiring[i] == gen) {
            d->retiring[i] = d->retiring[--d->nretiring];
            break;
        }
    }
    PX_LOG_INFO(gen->inst->name, "generation %u drained, unloading", gen->generation);
    px_gen_close(gen, on_retired_gen_closed);
    if (d->dispatch) {
        px_dispatch_pump_all(d->dispatch);
    }
}

static void retire_gen(px_daemon *d, px_plugin_ctx *old)
{
    d->retiring = px_xrealloc(d->retiring, (d->nretiring + 1) * sizeof(*d->retiring));
    d->retiring[d->nretiring++] = old;
    px_gen_stop(old, d->cfg->drain_timeout_ms, on_old_drained, d);
}

void px_daemon_close_retiring(px_daemon *d)
{
    while (d->nretiring) {
        px_plugin_ctx *gen = d->retiring[--d->nretiring];
        px_gen_close(gen, on_retired_gen_closed);
    }
    free(d->retiring);
    d->retiring = NULL;
}

/* --- one instance -------------------------------------------------------------------------- */

/* Loads and initialises a new generation of inst from `file` with `config` (borrowed), not yet
 * current, judging the file by `cfg`'s plugin_trust (the configuration being applied). */
static int prepare(px_daemon *d, const px_config *cfg, px_instance *inst, const char *file,
                   json_t *config, px_plugin_ctx **out, char *err, size_t errlen)
{
    json_t *saved = inst->config;
    inst->config = config;
    int rc = px_gen_load(inst, file, d->copy_dir, cfg->plugin_trust, out, err, errlen);
    inst->config = saved;
    return rc;
}

/* Makes ng (prepared from file/config) inst's current generation and starts it; on failure the
 * old generation is current again, serving as before. */
static int switch_to(px_daemon *d, px_instance *inst, px_plugin_ctx *ng, const char *file,
                     json_t *config, uint32_t max_inflight, char *err, size_t errlen)
{
    px_plugin_ctx *old = inst->gen;
    uint32_t old_kind = old ? old->lib->desc->kind : 0;
    const px_plugin_desc *nd = ng->lib->desc;
    if (old && old->lib->desc->export_state && nd->import_state) {
        json_t *st = old->lib->desc->export_state(old->state);
        if (st) {
            int rc = nd->import_state(ng->state, st);
            json_decref(st);
            if (rc < 0) {
                PX_LOG_WARN(inst->name, "generation %u refused the state of generation %u",
                            ng->generation, old->generation);
            }
        }
    }
    inst->gen = ng;
    inst->kind = nd->kind;
    px_daemon_apply_routes(d, ng);
    int rc = px_gen_start(ng, err, errlen);
    if (rc < 0) {
        inst->gen = old;
        inst->kind = old_kind;
        if (old) {
            px_daemon_apply_routes(d, old);
        }
        px_gen_close(ng, NULL);
        return rc;
    }
    if (strcmp(inst->file, file) != 0) {
        free(inst->file);
        inst->file = px_xstrdup(file);
    }
    json_decref(inst->config);
    inst->config = json_incref(config);
    free(inst->config_text);
    inst->config_text = json_dumps(config, JSON_COMPACT | JSON_SORT_KEYS);
    inst->max_inflight = max_inflight ? max_inflight : 64;
    px_instance_note_file(inst);
    free(inst->last_error);
    inst->last_error = NULL;
    PX_LOG_INFO(inst->name, "generation %u serving (plugin %s %s)%s", ng->generation,
                inst->plugin, nd->version, old ? ", previous generation draining" : "");
    if (old) {
        retire_gen(d, old);
    }
    px_dispatch_pump_all(d->dispatch);
    return 0;
}

static void set_failure(px_instance *inst, const char *err)
{
    free(inst->last_error);
    inst->last_error = px_xstrdup(err);
}

static int reload_instance(px_daemon *d, const char *name, char *err, size_t errlen)
{
    px_instance *inst = px_daemon_instance(d, name);
    const px_instance_conf *ic = px_config_instance(d->cfg, name);
    if (!inst || !ic) {
        snprintf(err, errlen, "no instance \"%s\"", name);
        return PX_ENOENT;
    }
    /* The new binary may declare other options: validate the config against it. */
    char *file = NULL;
    json_t *opts = NULL;
    int rc = px_daemon_validate_instance(d->cfg, ic, &d->api, &file, &opts, err, errlen);
    if (rc == 0) {
        px_plugin_ctx *ng = NULL;
        rc = prepare(d, d->cfg, inst, file, opts, &ng, err, errlen);
        if (rc == 0) {
            rc = switch_to(d, inst, ng, file, opts, ic->max_inflight, err, errlen);
        }
    }
    if (rc < 0) {
        set_failure(inst, err);
    }
    free(file);
    json_decref(opts);
    return rc;
}

/* --- the whole configuration ---------------------------------------------------------------- */

enum { KEEP, CHANGE, ADD };

typedef struct plan_item {
    const px_instance_conf *ic;
    px_instance *inst; /* existing one, for KEEP and CHANGE */
    int what;
    char *file;
    json_t *opts;
    px_plugin_ctx *ng;
} plan_item;

static void plan_free(plan_item *plan, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(plan[i].file);
        json_decref(plan[i].opts);
    }
    free(plan);
}

static int is_pure_sink_kind(uint32_t kind)
{
    return !(kind & PX_KIND_SOURCE);
}

static int reload_config(px_daemon *d, char *err, size_t errlen)
{
    px_config *ncfg = NULL;
    int rc = px_config_load(d->cfg->path, &ncfg, err, errlen);
    if (rc < 0) {
        return rc;
    }
    if (ncfg->nplugin_path == 0) {
        /* The built-in path the running config got at start. */
        ncfg->plugin_path = px_xcalloc(d->cfg->nplugin_path, sizeof(char *));
        for (size_t i = 0; i < d->cfg->nplugin_path; i++) {
            ncfg->plugin_path[i] = px_xstrdup(d->cfg->plugin_path[i]);
        }
        ncfg->nplugin_path = d->cfg->nplugin_path;
    }
    const char *restart_only[4] = {0};
    size_t nrestart = 0;
    if (strcmp(ncfg->data_dir, d->cfg->data_dir) != 0) {
        restart_only[nrestart++] = "host.data_dir";
    }
    if ((ncfg->http_listen ? ncfg->http_listen : "")[0] !=
            (d->cfg->http_listen ? d->cfg->http_listen : "")[0] ||
        (ncfg->http_listen && d->cfg->http_listen &&
         strcmp(ncfg->http_listen, d->cfg->http_listen) != 0)) {
        restart_only[nrestart++] = "host.http.listen";
    }
    if (ncfg->durability != d->cfg->durability) {
        restart_only[nrestart++] = "host.durability";
    }

    /* 1. Validate everything and load every new generation; nothing changes yet. */
    plan_item *plan = px_xcalloc(ncfg->ninstances ? ncfg->ninstances : 1, sizeof(*plan));
    size_t nplan = ncfg->ninstances;
    px_router *router = NULL;
    for (size_t i = 0; i < nplan && rc == 0; i++) {
        plan_item *p = &plan[i];
        p->ic = &ncfg->instances[i];
        p->inst = px_daemon_instance(d, p->ic->name);
        rc = px_daemon_validate_instance(ncfg, p->ic, &d->api, &p->file, &p->opts, err, errlen);
        if (rc < 0) {
            break;
        }
        if (!p->inst) {
            p->what = ADD;
        } else {
            char *text = json_dumps(p->opts, JSON_COMPACT | JSON_SORT_KEYS);
            int same = strcmp(p->inst->plugin, p->ic->plugin) == 0 &&
                       strcmp(p->inst->file, p->file) == 0 && !px_instance_file_changed(p->inst) &&
                       strcmp(text, p->inst->config_text) == 0;
            free(text);
            p->what = same ? KEEP : CHANGE;
            if (same && p->inst->max_inflight != (p->ic->max_inflight ? p->ic->max_inflight : 64)) {
                p->inst->max_inflight = p->ic->max_inflight ? p->ic->max_inflight : 64;
            }
        }
    }
    if (rc == 0) {
        rc = px_daemon_check_roles(ncfg, &d->api, err, errlen);
    }
    if (rc == 0) {
        rc = px_router_create(ncfg, &router, err, errlen);
    }
    /* Added instances need an instance record before their generation can load. */
    for (size_t i = 0; i < nplan && rc == 0; i++) {
        plan_item *p = &plan[i];
        if (p->what == KEEP) {
            continue;
        }
        if (p->what == ADD) {
            p->inst = px_instance_create(d, p->ic->name, p->ic->plugin, p->file, p->opts,
                                         p->ic->max_inflight);
        }
        rc = prepare(d, ncfg, p->inst, p->file, p->opts, &p->ng, err, errlen);
        if (rc < 0 && p->what == ADD) {
            px_instance_destroy(p->inst);
            p->inst = NULL;
        } else if (rc < 0) {
            set_failure(p->inst, err); /* status shows why it still runs the old generation */
        }
    }
    /* The admin token and address are applied, or the reload is refused: never ignored. */
    px_admin_change *admin_change = NULL;
    if (rc == 0) {
        rc = px_admin_prepare(d->admin, ncfg, &admin_change, err, errlen);
    }
    if (rc < 0) {
        for (size_t i = 0; i < nplan; i++) {
            if (!plan[i].ng) {
                continue;
            }
            if (plan[i].what == ADD) {
                /* Its generation holds the record until it closes. */
                d->retired = px_xrealloc(d->retired, (d->nretired + 1) * sizeof(*d->retired));
                d->retired[d->nretired++] = plan[i].inst;
            }
            px_gen_close(plan[i].ng, on_retired_gen_closed);
        }
        px_router_destroy(router);
        plan_free(plan, nplan);
        px_config_destroy(ncfg);
        return rc;
    }

    /* 2. Switch: sinks first so that the first event of a new source finds them. */
    size_t changed = 0, added = 0, removed = 0, kept = 0;
    int failed = 0;
    char first_err[512] = "";
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < nplan; i++) {
            plan_item *p = &plan[i];
            if (p->what == KEEP || !p->ng ||
                is_pure_sink_kind(p->ng->lib->desc->kind) != (pass == 0)) {
                continue;
            }
            if (p->what == ADD) {
                d->instances = px_xrealloc(d->instances,
                                           (d->ninstances + 1) * sizeof(*d->instances));
                d->instances[d->ninstances++] = p->inst;
            }
            char e[512];
            if (switch_to(d, p->inst, p->ng, p->file, p->opts, p->ic->max_inflight, e,
                          sizeof(e)) < 0) {
                set_failure(p->inst, e);
                if (!failed) {
                    snprintf(first_err, sizeof(first_err), "%s", e);
                }
                failed = 1;
            } else if (p->what == ADD) {
                added++;
            } else {
                changed++;
            }
        }
    }
    /* Removed instances: stop and drain; their pending deliveries stay in the spool. */
    for (size_t i = 0; i < d->ninstances;) {
        px_instance *inst = d->instances[i];
        if (px_config_instance(ncfg, inst->name)) {
            i++;
            continue;
        }
        d->instances[i] = d->instances[--d->ninstances];
        d->retired = px_xrealloc(d->retired, (d->nretired + 1) * sizeof(*d->retired));
        d->retired[d->nretired++] = inst;
        px_plugin_ctx *gen = inst->gen;
        inst->gen = NULL;
        if (gen) {
            retire_gen(d, gen);
        }
        removed++;
        PX_LOG_INFO("reload", "instance %s removed; its pending deliveries stay in the spool",
                    inst->name);
    }
    for (size_t i = 0; i < nplan; i++) {
        kept += plan[i].what == KEEP;
    }

    /* 3. Pipelines: the new router and config take effect for the next event. */
    px_router_box *box = px_xcalloc(1, sizeof(*box));
    box->router = router;
    box->refs = 1;
    px_router_box_unref(d->router);
    d->router = box;
    px_config *old = d->cfg;
    /* Settings that only a restart can change keep their running values. */
    if (nrestart) {
        free(ncfg->data_dir);
        ncfg->data_dir = px_xstrdup(old->data_dir);
        free(ncfg->http_listen);
        ncfg->http_listen = px_xstrdup(old->http_listen);
        ncfg->durability = old->durability;
        for (size_t i = 0; i < nrestart; i++) {
            PX_LOG_WARN("reload", "%s changed: it takes effect at the next restart",
                        restart_only[i]);
        }
    }
    d->cfg = ncfg;
    px_admin_commit(d->admin, admin_change);
    px_config_destroy(old);
    px_dispatch_pump_all(d->dispatch);
    plan_free(plan, nplan);
    PX_LOG_INFO("reload", "configuration applied changed=%zu added=%zu removed=%zu "
                "unchanged=%zu pipelines=%zu", changed, added, removed, kept, d->cfg->npipelines);
    if (failed) {
        snprintf(err, errlen, "%s", first_err);
        return PX_EPLUGIN;
    }
    return 0;
}

int px_daemon_reload(px_daemon *d, const char *instance, char *err, size_t errlen)
{
    if (d->stopping) {
        snprintf(err, errlen, "the host is stopping");
        return PX_ESTATE;
    }
    err[0] = '\0';
    int rc = instance ? reload_instance(d, instance, err, errlen) : reload_config(d, err, errlen);
    d->last_reload_ms = px_now_ms();
    free(d->last_reload_error);
    d->last_reload_error = NULL;
    if (rc < 0) {
        d->reloads_failed++;
        d->last_reload_error = px_xstrdup(err);
        PX_LOG_ERR("reload", "reload%s%s failed, still running the previous one: %s",
                   instance ? " of " : "", instance ? instance : "", err);
    } else {
        d->reloads_ok++;
    }
    px_metrics_reload(rc < 0 ? "failed" : "ok");
    return rc;
}

/* --- watching the plugin path ------------------------------------------------------------- */

static void on_watch_timer(uv_timer_t *t)
{
    px_daemon *d = t->data;
    if (d->stopping) {
        return;
    }
    int retry = 0;
    for (size_t i = 0; i < d->ninstances; i++) {
        px_instance *inst = d->instances[i];
        if (!px_instance_file_changed(inst)) {
            continue;
        }
        char err[512];
        PX_LOG_INFO("reload", "plugin file changed instance=%s file=%s", inst->name,
                    inst->file);
        if (px_daemon_reload(d, inst->name, err, sizeof(err)) < 0) {
            retry = 1; /* maybe still being written: try again later */
        }
    }
    if (retry) {
        uv_timer_start(&d->watch_timer, on_watch_timer, WATCH_RETRY_MS, 0);
    }
}

static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
    px_daemon *d = h->data;
    (void)events;
    if (status < 0 || !filename) {
        return;
    }
    size_t len = strlen(filename);
    if (len > 3 && strcmp(filename + len - 3, ".so") == 0) {
        uv_timer_start(&d->watch_timer, on_watch_timer, WATCH_DEBOUNCE_MS, 0);
    }
}

void px_daemon_watch_start(px_daemon *d)
{
    if (!d->cfg->watch_plugins || d->watchers) {
        return;
    }
    uv_timer_init(d->loop, &d->watch_timer);
    d->watch_timer.data = d;
    d->watch_timer_open = 1;
    d->watchers = px_xcalloc(d->cfg->nplugin_path, sizeof(*d->watchers));
    for (size_t i = 0; i < d->cfg->nplugin_path; i++) {
        uv_fs_event_init(d->loop, &d->watchers[i]);
        d->watchers[i].data = d;
        int rc = uv_fs_event_start(&d->watchers[i], on_fs_event, d->cfg->plugin_path[i], 0);
        if (rc < 0) {
            PX_LOG_WARN("reload", "cannot watch %s: %s", d->cfg->plugin_path[i],
                        uv_strerror(rc));
        }
        d->nwatchers++;
    }
    PX_LOG_INFO("reload", "watching the plugin path for new builds");
}

static void on_watch_closed(uv_handle_t *h)
{
    px_daemon *d = h->data;
    if (h == (uv_handle_t *)&d->watch_timer) {
        return;
    }
    if (--d->nwatchers == 0) {
        free(d->watchers);
        d->watchers = NULL;
    }
}

void px_daemon_watch_stop(px_daemon *d)
{
    if (!d->watchers) {
        return;
    }
    size_t n = d->nwatchers;
    for (size_t i = 0; i < n; i++) {
        uv_close((uv_handle_t *)&d->watchers[i], on_watch_closed);
    }
    if (d->watch_timer_open) {
        uv_close((uv_handle_t *)&d->watch_timer, on_watch_closed);
        d->watch_timer_open = 0;
    }
}
