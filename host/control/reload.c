/* Hot reload: new generations of plugin instances and configuration changes applied to a
 * running host without losing an event (see reload.h).
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

#include "reload.h"

#include "clock.h"
#include "err.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "net.h"
#include "plugin_check.h"

/* --- one instance -------------------------------------------------------------------------- */

/* Loads and initialises a new generation of inst from `file` with `config` (borrowed), not yet
 * current, judging the file by `cfg`'s plugin_trust (the configuration being applied). */
static int prepare(px_runtime *rt, const px_config *cfg, px_instance *inst, const char *file,
                   json_t *config, px_plugin_ctx **out, char *err, size_t errlen)
{
    json_t *saved = inst->config;
    inst->config = config;
    int rc = px_gen_load(inst, file, rt->copy_dir, cfg->plugin_trust, out, err, errlen);
    inst->config = saved;
    return rc;
}

/* Makes ng (prepared from file/config) inst's current generation and starts it; on failure the
 * old generation is current again, serving as before. */
static int switch_to(px_runtime *rt, px_instance *inst, px_plugin_ctx *ng, const char *file,
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
    px_net_apply_routes(rt->http, ng);
    int rc = px_gen_start(ng, err, errlen);
    if (rc < 0) {
        inst->gen = old;
        inst->kind = old_kind;
        if (old) {
            px_net_apply_routes(rt->http, old);
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
        px_runtime_retire_gen(rt, old);
    }
    if (inst->kind & PX_KIND_SINK) {
        px_dispatch_serve(rt->dispatch, inst->name);
    }
    px_dispatch_pump_all(rt->dispatch);
    return 0;
}

static void set_failure(px_instance *inst, const char *err)
{
    free(inst->last_error);
    inst->last_error = px_xstrdup(err);
}

static int reload_instance(px_runtime *rt, const char *name, char *err, size_t errlen)
{
    px_instance *inst = px_runtime_instance(rt, name);
    const px_instance_conf *ic = px_config_instance(rt->cfg, name);
    if (!inst || !ic) {
        snprintf(err, errlen, "no instance \"%s\"", name);
        return PX_ENOENT;
    }
    /* The new binary may declare other options: validate the config against it. */
    char *file = NULL;
    json_t *opts = NULL;
    int rc = px_plugin_check_instance(rt->cfg, ic, rt->gens.api, &file, &opts, err, errlen);
    if (rc == 0) {
        px_plugin_ctx *ng = NULL;
        rc = prepare(rt, rt->cfg, inst, file, opts, &ng, err, errlen);
        if (rc == 0) {
            rc = switch_to(rt, inst, ng, file, opts, ic->max_inflight, err, errlen);
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

/* A config that names no plugin path gets the built-in one the running config got at start. */
static void inherit_plugin_path(px_config *ncfg, const px_config *old)
{
    if (ncfg->nplugin_path != 0) {
        return;
    }
    ncfg->plugin_path = px_xcalloc(old->nplugin_path, sizeof(char *));
    for (size_t i = 0; i < old->nplugin_path; i++) {
        ncfg->plugin_path[i] = px_xstrdup(old->plugin_path[i]);
    }
    ncfg->nplugin_path = old->nplugin_path;
}

/* Names into names[] (room for 4) the settings that changed but only a restart applies; returns
 * how many. */
static size_t restart_only_changes(const px_config *ncfg, const px_config *old,
                                   const char *names[4])
{
    size_t n = 0;
    if (strcmp(ncfg->data_dir, old->data_dir) != 0) {
        names[n++] = "host.data_dir";
    }
    if ((ncfg->http_listen ? ncfg->http_listen : "")[0] !=
            (old->http_listen ? old->http_listen : "")[0] ||
        (ncfg->http_listen && old->http_listen &&
         strcmp(ncfg->http_listen, old->http_listen) != 0)) {
        names[n++] = "host.http.listen";
    }
    if (ncfg->durability != old->durability) {
        names[n++] = "host.durability";
    }
    return n;
}

/* Checks each instance of ncfg and decides what the reload does with it (add, change or keep);
 * a kept instance takes its new max_inflight at once. */
static int plan_classify(px_runtime *rt, const px_config *ncfg, plan_item *plan, size_t nplan,
                         char *err, size_t errlen)
{
    for (size_t i = 0; i < nplan; i++) {
        plan_item *p = &plan[i];
        p->ic = &ncfg->instances[i];
        p->inst = px_runtime_instance(rt, p->ic->name);
        int rc = px_plugin_check_instance(ncfg, p->ic, rt->gens.api, &p->file, &p->opts, err,
                                          errlen);
        if (rc < 0) {
            return rc;
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
            p->inst->ordered = p->ic->ordered;
            if (same && p->inst->max_inflight != (p->ic->max_inflight ? p->ic->max_inflight : 64)) {
                p->inst->max_inflight = p->ic->max_inflight ? p->ic->max_inflight : 64;
            }
        }
    }
    return 0;
}

/* Loads the new generation of every added or changed instance; added instances need an instance
 * record before their generation can load. Stops at the first failure. */
static int plan_load_generations(px_runtime *rt, const px_config *ncfg, plan_item *plan,
                                 size_t nplan, char *err, size_t errlen)
{
    for (size_t i = 0; i < nplan; i++) {
        plan_item *p = &plan[i];
        if (p->what == KEEP) {
            continue;
        }
        if (p->what == ADD) {
            p->inst = px_instance_create(&rt->gens, p->ic->name, p->ic->plugin, p->file, p->opts,
                                         p->ic->max_inflight);
            p->inst->ordered = p->ic->ordered;
        }
        int rc = prepare(rt, ncfg, p->inst, p->file, p->opts, &p->ng, err, errlen);
        if (rc < 0 && p->what == ADD) {
            px_instance_destroy(p->inst);
            p->inst = NULL;
        } else if (rc < 0) {
            set_failure(p->inst, err); /* status shows why it still runs the old generation */
        }
        if (rc < 0) {
            return rc;
        }
    }
    return 0;
}

/* Closes every generation the plan loaded, for a reload that is refused. */
static void plan_abandon(px_runtime *rt, plan_item *plan, size_t nplan)
{
    for (size_t i = 0; i < nplan; i++) {
        if (!plan[i].ng) {
            continue;
        }
        if (plan[i].what == ADD) {
            /* Its generation holds the record until it closes. */
            px_runtime_retire_instance(rt, plan[i].inst);
        }
        px_gen_close(plan[i].ng, px_runtime_on_retired_gen_closed);
    }
}

typedef struct reload_counts {
    size_t changed, added, removed, kept;
} reload_counts;

/* Switches every added or changed instance to its new generation, sinks first so that the first
 * event of a new source finds them. A failed switch is recorded on the instance; the first one's
 * reason goes into first_err (size first_len). Returns whether any failed. */
static int plan_switch(px_runtime *rt, plan_item *plan, size_t nplan, reload_counts *counts,
                       char *first_err, size_t first_len)
{
    int failed = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < nplan; i++) {
            plan_item *p = &plan[i];
            if (p->what == KEEP || !p->ng ||
                is_pure_sink_kind(p->ng->lib->desc->kind) != (pass == 0)) {
                continue;
            }
            if (p->what == ADD) {
                rt->instances = px_xrealloc(rt->instances,
                                           (rt->ninstances + 1) * sizeof(*rt->instances));
                rt->instances[rt->ninstances++] = p->inst;
            }
            char e[512];
            if (switch_to(rt, p->inst, p->ng, p->file, p->opts, p->ic->max_inflight, e,
                          sizeof(e)) < 0) {
                set_failure(p->inst, e);
                if (!failed) {
                    snprintf(first_err, first_len, "%s", e);
                }
                failed = 1;
            } else if (p->what == ADD) {
                counts->added++;
            } else {
                counts->changed++;
            }
        }
    }
    return failed;
}

/* Stops and drains the instances ncfg no longer has; their pending deliveries stay in the spool.
 * Returns how many. */
static size_t remove_dropped_instances(px_runtime *rt, const px_config *ncfg)
{
    size_t removed = 0;
    for (size_t i = 0; i < rt->ninstances;) {
        px_instance *inst = rt->instances[i];
        if (px_config_instance(ncfg, inst->name)) {
            i++;
            continue;
        }
        rt->instances[i] = rt->instances[--rt->ninstances];
        px_runtime_retire_instance(rt, inst);
        px_plugin_ctx *gen = inst->gen;
        inst->gen = NULL;
        if (gen) {
            px_runtime_retire_gen(rt, gen);
        }
        removed++;
        PX_LOG_INFO("reload", "instance %s removed; its pending deliveries stay in the spool",
                    inst->name);
    }
    return removed;
}

/* Settings that only a restart can change keep their running values in ncfg. */
static void keep_restart_only(px_config *ncfg, const px_config *old, const char *const *names,
                              size_t n)
{
    if (!n) {
        return;
    }
    free(ncfg->data_dir);
    ncfg->data_dir = px_xstrdup(old->data_dir);
    free(ncfg->http_listen);
    ncfg->http_listen = px_xstrdup(old->http_listen);
    ncfg->durability = old->durability;
    for (size_t i = 0; i < n; i++) {
        PX_LOG_WARN("reload", "%s changed: it takes effect at the next restart", names[i]);
    }
}

static int reload_config(px_runtime *rt, px_admin *admin, char *err, size_t errlen)
{
    px_config *ncfg = NULL;
    int rc = px_config_load(rt->cfg->path, &ncfg, err, errlen);
    if (rc < 0) {
        return rc;
    }
    inherit_plugin_path(ncfg, rt->cfg);
    const char *restart_only[4] = {0};
    size_t nrestart = restart_only_changes(ncfg, rt->cfg, restart_only);

    /* 1. Validate everything and load every new generation; nothing changes yet. */
    plan_item *plan = px_xcalloc(ncfg->ninstances ? ncfg->ninstances : 1, sizeof(*plan));
    size_t nplan = ncfg->ninstances;
    px_router *router = NULL;
    rc = plan_classify(rt, ncfg, plan, nplan, err, errlen);
    if (rc == 0) {
        rc = px_plugin_check_roles(ncfg, rt->gens.api, err, errlen);
    }
    if (rc == 0) {
        rc = px_router_create(ncfg, &router, err, errlen);
    }
    if (rc == 0) {
        rc = plan_load_generations(rt, ncfg, plan, nplan, err, errlen);
    }
    /* The admin token and address are applied, or the reload is refused: never ignored. */
    px_admin_change *admin_change = NULL;
    if (rc == 0) {
        rc = px_admin_prepare(admin, ncfg, &admin_change, err, errlen);
    }
    if (rc < 0) {
        plan_abandon(rt, plan, nplan);
        px_router_destroy(router);
        plan_free(plan, nplan);
        px_config_destroy(ncfg);
        return rc;
    }

    /* 2. Switch the instances. */
    reload_counts counts = {0};
    char first_err[512] = "";
    int failed = plan_switch(rt, plan, nplan, &counts, first_err, sizeof(first_err));
    counts.removed = remove_dropped_instances(rt, ncfg);
    for (size_t i = 0; i < nplan; i++) {
        counts.kept += plan[i].what == KEEP;
    }

    /* 3. Pipelines: the new router and config take effect for the next event. */
    px_router_box_unref(rt->router);
    rt->router = px_router_box_new(router);
    px_config *old = rt->cfg;
    keep_restart_only(ncfg, old, restart_only, nrestart);
    rt->cfg = ncfg;
    px_store_announce(rt->store, ncfg->hash);
    px_admin_commit(admin, admin_change);
    px_config_destroy(old);
    px_dispatch_pump_all(rt->dispatch);
    plan_free(plan, nplan);
    PX_LOG_INFO("reload", "configuration applied changed=%zu added=%zu removed=%zu "
                "unchanged=%zu pipelines=%zu", counts.changed, counts.added, counts.removed,
                counts.kept, rt->cfg->npipelines);
    if (failed) {
        snprintf(err, errlen, "%s", first_err);
        return PX_EPLUGIN;
    }
    return 0;
}

/* Adds one reload to rt->reload_log, dropping the oldest beyond PX_RELOAD_LOG_MAX. The error is
 * kept masked: it may quote a plugin's message. */
static void note_reload(px_runtime *rt, const char *instance, const char *error)
{
    if (!rt->reload_log) {
        rt->reload_log = json_array();
    }
    char *masked = error ? px_log_redact(error) : NULL; /* NULL: nothing to mask */
    const char *shown = masked ? masked : error;
    json_t *e = json_pack("{sI so ss so}", "at", (json_int_t)rt->last_reload_ms, "instance",
                          instance ? json_string(instance) : json_null(), "result",
                          error ? "failed" : "ok", "error",
                          shown ? json_string(shown) : json_null());
    free(masked);
    json_array_append_new(rt->reload_log, e);
    while (json_array_size(rt->reload_log) > PX_RELOAD_LOG_MAX) {
        json_array_remove(rt->reload_log, 0);
    }
}

int px_reload(px_runtime *rt, px_admin *admin, const char *instance, char *err, size_t errlen)
{
    if (rt->stopping) {
        snprintf(err, errlen, "the host is stopping");
        return PX_ESTATE;
    }
    err[0] = '\0';
    int rc = instance ? reload_instance(rt, instance, err, errlen)
                      : reload_config(rt, admin, err, errlen);
    rt->last_reload_ms = px_now_ms();
    free(rt->last_reload_error);
    rt->last_reload_error = NULL;
    if (rc < 0) {
        rt->reloads_failed++;
        rt->last_reload_error = px_xstrdup(err);
        PX_LOG_ERR("reload", "reload%s%s failed, still running the previous one: %s",
                   instance ? " of " : "", instance ? instance : "", err);
    } else {
        rt->reloads_ok++;
    }
    px_metrics_reload(rc < 0 ? "failed" : "ok");
    note_reload(rt, instance, rc < 0 ? err : NULL);
    return rc;
}

/* --- watching the plugin path ------------------------------------------------------------- */

#define WATCH_DEBOUNCE_MS 300
#define WATCH_RETRY_MS 2000

static void on_watch_timer(uv_timer_t *t)
{
    px_plugin_watch *w = t->data;
    px_runtime *rt = w->rt;
    if (rt->stopping) {
        return;
    }
    int retry = 0;
    for (size_t i = 0; i < rt->ninstances; i++) {
        px_instance *inst = rt->instances[i];
        if (!px_instance_file_changed(inst)) {
            continue;
        }
        char err[512];
        PX_LOG_INFO("reload", "plugin file changed instance=%s file=%s", inst->name,
                    inst->file);
        if (px_reload(rt, w->admin, inst->name, err, sizeof(err)) < 0) {
            retry = 1; /* maybe still being written: try again later */
        }
    }
    if (retry) {
        uv_timer_start(&w->timer, on_watch_timer, WATCH_RETRY_MS, 0);
    }
}

static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
    px_plugin_watch *w = h->data;
    (void)events;
    if (status < 0 || !filename) {
        return;
    }
    size_t len = strlen(filename);
    if (len > 3 && strcmp(filename + len - 3, ".so") == 0) {
        uv_timer_start(&w->timer, on_watch_timer, WATCH_DEBOUNCE_MS, 0);
    }
}

void px_plugin_watch_start(px_plugin_watch *w, px_runtime *rt, px_admin *admin)
{
    const px_config *cfg = rt->cfg;
    if (!cfg->watch_plugins || w->watchers) {
        return;
    }
    w->rt = rt;
    w->admin = admin;
    uv_timer_init(rt->loop, &w->timer);
    w->timer.data = w;
    w->timer_open = 1;
    w->watchers = px_xcalloc(cfg->nplugin_path, sizeof(*w->watchers));
    for (size_t i = 0; i < cfg->nplugin_path; i++) {
        uv_fs_event_init(rt->loop, &w->watchers[i]);
        w->watchers[i].data = w;
        int rc = uv_fs_event_start(&w->watchers[i], on_fs_event, cfg->plugin_path[i], 0);
        if (rc < 0) {
            PX_LOG_WARN("reload", "cannot watch %s: %s", cfg->plugin_path[i], uv_strerror(rc));
        }
        w->nwatchers++;
    }
    PX_LOG_INFO("reload", "watching the plugin path for new builds");
}

static void on_watch_closed(uv_handle_t *h)
{
    px_plugin_watch *w = h->data;
    if (h == (uv_handle_t *)&w->timer) {
        return;
    }
    if (--w->nwatchers == 0) {
        free(w->watchers);
        w->watchers = NULL;
    }
}

void px_plugin_watch_stop(px_plugin_watch *w)
{
    if (!w->watchers) {
        return;
    }
    size_t n = w->nwatchers;
    for (size_t i = 0; i < n; i++) {
        uv_close((uv_handle_t *)&w->watchers[i], on_watch_closed);
    }
    if (w->timer_open) {
        uv_close((uv_handle_t *)&w->timer, on_watch_closed);
        w->timer_open = 0;
    }
}
