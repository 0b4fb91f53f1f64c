/* Emit path: route, persist, acknowledge, dispatch (see ingest.h). */
#include "ingest.h"

#include <stdlib.h>
#include <string.h>

#include "runtime.h"
#include "err.h"
#include "event.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"

typedef struct pending_emit {
    px_runtime *rt;
    px_plugin_ctx *gen;
    px_event *ev;
    px_persisted_cb cb;
    void *arg;
    uint64_t cause;        /* px_crash_cause at emit */
    px_router_box *router; /* keeps the routes' strings alive */
    px_route *routes;
    size_t nroutes;
    px_store_row *rows;
    unsigned char *early; /* per route: handed to the dispatcher before the commit */
    int status;
} pending_emit;

static void pending_free(pending_emit *pe)
{
    px_routes_free(pe->routes, pe->nroutes);
    px_router_box_unref(pe->router);
    free(pe->rows);
    free(pe->early);
    px_event_unref(pe->ev);
    free(pe);
}

static void finish(pending_emit *pe)
{
    px_plugin_ctx *gen = pe->gen;
    /* A generation destroyed after a drain timeout no longer has code to call back. */
    if (pe->cb && gen->state_code != PX_GEN_DESTROYED) {
        px_crash_frame cf;
        px_gen_crash_enter(&cf, gen, "persisted", pe->cause);
        pe->cb(pe->status, pe->arg);
        px_crash_leave(&cf);
    }
    pending_free(pe);
    px_gen_emit_done(gen);
}

static void on_deferred(void *arg)
{
    finish(arg);
}

static void on_committed(int status, void *arg)
{
    pending_emit *pe = arg;
    px_runtime *rt = pe->rt;
    if (status == PX_STORE_DUPLICATE) {
        rt->events_duplicate++;
        PX_LOG_DEBUG("ingest", "duplicate dropped source=%s event=%s key=%s", pe->ev->source,
                     pe->ev->id, pe->ev->dedupe_key ? pe->ev->dedupe_key : "");
        pe->status = PX_OK;
    } else if (status < 0) {
        rt->events_refused++;
        pe->status = PX_EBUSY;
    } else {
        pe->status = PX_OK;
    }
    for (size_t i = 0; i < pe->nroutes; i++) {
        px_route *r = &pe->routes[i];
        if (r->error) {
            if (status == PX_STORE_STORED) {
                px_store_mark_dead(rt->store, pe->rows[i].id, 0, r->error);
            }
        } else if (pe->early[i]) {
            if (status < 0) {
                /* the sink may have it already; the source is told to retry (at-least-once) */
                px_dispatch_cancel(rt->dispatch, r->sink, pe->rows[i].id);
            }
        } else {
            px_dispatch_await(rt->dispatch, r->sink, -1);
            if (status == PX_STORE_STORED) {
                px_dispatch_add(rt->dispatch, pe->rows[i].id, pe->ev, r->pipeline, r->sink,
                                r->action, r->params, r->retry);
            }
        }
    }
    finish(pe);
}

/* The first attempt of a delivery does not wait for the commit of its put: when the sink
 * finishes it before the writer reaches the put, the spool never writes it (px_store_mark_done).
 * The source is still told "persisted" only after the commit, so nothing it acknowledges can be
 * lost; a put that then fails is retried by the source and the sink may see the event twice,
 * which at-least-once allows. Not for events with a dedupe key (a duplicate is known only at the
 * commit), nor while an older delivery of the same sink waits for its commit (it would be
 * overtaken), nor to the emitting instance itself (its deliver would run inside its emit). */
static void dispatch_routes(px_runtime *rt, pending_emit *pe, px_instance *src)
{
    px_event *ev = pe->ev;
    for (size_t i = 0; i < pe->nroutes; i++) {
        px_route *r = &pe->routes[i];
        if (r->error) {
            continue;
        }
        if (!ev->dedupe_key && strcmp(r->sink, src->name) != 0 &&
            px_dispatch_await(rt->dispatch, r->sink, 0)) {
            pe->early[i] = 1;
        } else {
            px_dispatch_await(rt->dispatch, r->sink, 1);
        }
    }
    for (size_t i = 0; i < pe->nroutes; i++) {
        px_route *r = &pe->routes[i];
        if (pe->early[i]) {
            px_dispatch_add(rt->dispatch, pe->rows[i].id, ev, r->pipeline, r->sink, r->action,
                            r->params, r->retry);
        }
    }
}

/* --- limits ------------------------------------------------------------------------------- */

static const char *const LIMIT_LABELS[] = {"source", "limit", NULL};

#define LIMIT_LOG_EVERY_MS 10000

/* A limit refused an emit of source `src`: counted in plexus_events_limited_total; logged when
 * the source starts being refused, at most every LIMIT_LOG_EVERY_MS (a source at its rate limit
 * flips between refused and accepted all the time), and when it is accepted again after a logged
 * refusal (see limits_clear). */
static void limited(px_runtime *rt, px_instance *src, const char *limit, const char *detail)
{
    px_metric *f = px_metrics_family(px_metrics_global(), PX_METRIC_COUNTER,
                                     "plexus_events_limited_total",
                                     "Emits refused with back-pressure (PX_EBUSY) by a limit: "
                                     "max_pending of a sink the event was routed to, or "
                                     "max_events_per_second of the source.",
                                     LIMIT_LABELS, NULL, 0);
    const char *values[] = {src->name, limit};
    px_series_add(px_metric_at(f, values), 1);
    uint64_t now = uv_now(rt->loop);
    if (!src->limited && (!src->limit_log_ms || now - src->limit_log_ms >= LIMIT_LOG_EVERY_MS)) {
        src->limit_logged = 1;
        src->limit_log_ms = now ? now : 1;
        PX_LOG_WARN(src->name, "emits refused by a limit limit=%s %s", limit, detail);
    }
    src->limited = 1;
}

static void limits_clear(px_instance *src)
{
    if (src->limited) {
        src->limited = 0;
        if (src->limit_logged) {
            src->limit_logged = 0;
            PX_LOG_INFO(src->name, "emits accepted again");
        }
    }
}

/* The configured limit as a gauge, so it can be read beside the figure it caps. */
static void limit_gauge(const char *name, const char *help, const char *label, const char *inst,
                        double v)
{
    const char *labels[] = {label, NULL};
    px_metric *f = px_metrics_family(px_metrics_global(), PX_METRIC_GAUGE, name, help, labels,
                                     NULL, 0);
    px_series_set(px_metric_at(f, &inst), v);
}

/* max_events_per_second: a token bucket holding one second of events. */
static int rate_allows(px_runtime *rt, px_instance *src, double eps)
{
    uint64_t now = uv_now(rt->loop);
    double cap = eps < 1 ? 1 : eps;
    if (src->rate_at_ms == 0) {
        src->rate_tokens = cap;
    } else if (now > src->rate_at_ms) {
        src->rate_tokens += (double)(now - src->rate_at_ms) * eps / 1000.0;
        if (src->rate_tokens > cap) {
            src->rate_tokens = cap;
        }
    }
    src->rate_at_ms = now ? now : 1;
    limit_gauge("plexus_source_max_events_per_second",
                "Configured max_events_per_second of a source.", "source", src->name, eps);
    if (src->rate_tokens < 1) {
        return 0;
    }
    src->rate_tokens -= 1;
    return 1;
}

/* max_pending: 0 when every sink the event goes to is under its cap; else the first full one. */
static const char *full_sink(px_runtime *rt, const px_route *routes, size_t n, int64_t *pending,
                             uint64_t *cap)
{
    for (size_t i = 0; i < n; i++) {
        if (routes[i].error) {
            continue;
        }
        const px_instance_conf *ic = px_config_instance(rt->cfg, routes[i].sink);
        if (!ic || !ic->max_pending) {
            continue;
        }
        limit_gauge("plexus_sink_max_pending", "Configured max_pending of a sink.", "sink",
                    ic->name, (double)ic->max_pending);
        int64_t p = px_store_pending(rt->store, routes[i].sink);
        if (p >= (int64_t)ic->max_pending) {
            *pending = p;
            *cap = ic->max_pending;
            return routes[i].sink;
        }
    }
    return NULL;
}

/* Conditions and mappings parse an event given as text only when they read its payload. */
static const json_t *lazy_payload(void *ev)
{
    return px_event_payload(ev);
}

int px_ingest_emit(px_runtime *rt, px_plugin_ctx *gen, px_event *ev, px_persisted_cb cb, void *arg)
{
    if (!ev) {
        return PX_EINVAL;
    }
    if (!gen || gen->state_code == PX_GEN_DESTROYED || rt->stopping > 1) {
        px_event_unref(ev);
        return PX_ESTATE;
    }
    free(ev->source);
    ev->source = px_xstrdup(gen->inst->name);
    ev->emitted = 1;
    const px_instance_conf *ic = rt->cfg ? px_config_instance(rt->cfg, gen->inst->name) : NULL;
    if (ic && ic->max_eps > 0 && !rate_allows(rt, gen->inst, ic->max_eps)) {
        char detail[64];
        snprintf(detail, sizeof(detail), "max_events_per_second=%g", ic->max_eps);
        limited(rt, gen->inst, "max_events_per_second", detail);
        px_event_unref(ev);
        return PX_EBUSY;
    }
    rt->events_in++;
    px_metrics_event_received(ev->source);

    pending_emit *pe = px_xcalloc(1, sizeof(*pe));
    pe->rt = rt;
    pe->gen = gen;
    pe->ev = ev;
    pe->cb = cb;
    pe->arg = arg;
    pe->cause = px_crash_cause(gen);
    px_mapping_env env = {.type = ev->type, .id = ev->id, .source = ev->source,
                          .time_ms = (long long)ev->time_ms, .payload_fn = lazy_payload,
                          .payload_arg = ev};
    pe->router = px_router_box_ref(rt->router);
    pe->nroutes = px_router_route(pe->router->router, ev->source, &env, &pe->routes);
    int64_t pending = 0;
    uint64_t cap = 0;
    const char *full = pe->nroutes ? full_sink(rt, pe->routes, pe->nroutes, &pending, &cap) : NULL;
    if (full) {
        char detail[320];
        snprintf(detail, sizeof(detail), "sink=%s pending=%lld max_pending=%llu", full,
                 (long long)pending, (unsigned long long)cap);
        limited(rt, gen->inst, "max_pending", detail);
        pe->ev = NULL;
        pending_free(pe);
        px_event_unref(ev);
        return PX_EBUSY;
    }
    limits_clear(gen->inst);

    if (pe->nroutes == 0 && !ev->dedupe_key) {
        rt->events_unrouted++;
        PX_LOG_DEBUG("ingest", "no pipeline source=%s type=%s event=%s", ev->source, ev->type,
                     ev->id);
        pe->status = PX_OK;
        gen->pending_emits++;
        if (px_tap_on(&rt->tap)) {
            px_tap_event(&rt->tap, ev, NULL, 0);
        }
        px_defer_push(&rt->defer, on_deferred, pe);
        return 0;
    }

    /* The source's own text when it gave it: serialising the payload again costs as much as
     * parsing it did. Kept in the event, for sinks that write text. */
    size_t payload_len;
    const char *payload = px_event_text(ev, &payload_len);
    char *meta = px_event_meta_json(ev);
    char *hints = px_event_hints_json(ev);
    px_store_event sev = {
        .id = ev->id, .type = ev->type, .source = ev->source, .dedupe_key = ev->dedupe_key,
        .time_ms = ev->time_ms, .payload = payload, .payload_len = payload_len,
        .meta = meta, .hints = hints,
    };
    char **params_text = NULL;
    if (pe->nroutes) {
        pe->rows = px_xcalloc(pe->nroutes, sizeof(*pe->rows));
        pe->early = px_xcalloc(pe->nroutes, sizeof(*pe->early));
        params_text = px_xcalloc(pe->nroutes, sizeof(*params_text));
    }
    for (size_t i = 0; i < pe->nroutes; i++) {
        px_route *r = &pe->routes[i];
        if (r->error) {
            rt->mapping_errors++;
        }
        /* no `with`: nothing to store ("{}" is read back) */
        params_text[i] = json_object_size(r->params) ? json_dumps(r->params, JSON_COMPACT) : NULL;
        const px_instance_conf *sic = px_config_instance(rt->cfg, r->sink);
        pe->rows[i] = (px_store_row){
            .pipeline = r->pipeline, .sink = r->sink, .action = r->action,
            .params = params_text[i], .params_len = params_text[i] ? strlen(params_text[i]) : 0,
            .ordered = sic && sic->ordered && !r->error,
        };
    }
    int rc = px_store_put(rt->store, &sev, pe->rows, pe->nroutes, on_committed, pe);
    for (size_t i = 0; i < pe->nroutes; i++) {
        free(params_text[i]);
    }
    free(params_text);
    free(meta);
    free(hints);
    if (rc < 0) {
        rt->events_refused++;
        pe->ev = NULL;
        pending_free(pe);
        px_event_unref(ev);
        return rc;
    }
    gen->pending_emits++;
    if (px_tap_on(&rt->tap)) {
        px_tap_event(&rt->tap, ev, pe->routes, pe->nroutes);
    }
    dispatch_routes(rt, pe, gen->inst);
    return 0;
}

typedef struct pending_dead {
    px_plugin_ctx *gen;
    px_persisted_cb cb;
    void *arg;
    uint64_t cause; /* px_crash_cause at dead_letter */
} pending_dead;

static void on_dead_stored(int status, void *arg)
{
    pending_dead *pd = arg;
    px_plugin_ctx *gen = pd->gen;
    if (pd->cb && gen->state_code != PX_GEN_DESTROYED) {
        px_crash_frame cf;
        px_gen_crash_enter(&cf, gen, "persisted", pd->cause);
        pd->cb(status < 0 ? PX_EBUSY : PX_OK, pd->arg);
        px_crash_leave(&cf);
    }
    free(pd);
    px_gen_emit_done(gen);
}

int px_ingest_dead_letter(px_runtime *rt, px_plugin_ctx *gen, const char *raw, size_t len,
                          const json_t *meta, const char *reason, px_persisted_cb cb, void *arg)
{
    if (!gen || gen->state_code == PX_GEN_DESTROYED || rt->stopping > 1) {
        return PX_ESTATE;
    }
    if (!raw && len) {
        return PX_EINVAL;
    }
    /* The id and time of a poison message are the host's: it never became an event. */
    px_event *ev = px_event_create(gen->inst->name, "poison", json_null());
    /* The metadata is the message's, kept byte for byte; the reason is the plugin's error text,
     * masked like a log line. */
    char *meta_text = json_is_object(meta) ? json_dumps(meta, JSON_COMPACT) : NULL;
    char *reason_masked = px_log_redact(reason);
    if (reason_masked) {
        reason = reason_masked;
    }
    char *type = px_xasprintf("%s.poison", gen->inst->plugin);
    px_store_event sev = {
        .id = ev->id, .type = type, .source = gen->inst->name, .time_ms = ev->time_ms,
        .payload = raw ? raw : "", .payload_len = len, .meta = meta_text,
    };
    pending_dead *pd = px_xcalloc(1, sizeof(*pd));
    pd->gen = gen;
    pd->cb = cb;
    pd->arg = arg;
    pd->cause = px_crash_cause(gen);
    int rc = px_store_dead_raw(rt->store, &sev, NULL, NULL, reason ? reason : "poison message",
                               on_dead_stored, pd);
    free(meta_text);
    free(type);
    px_event_unref(ev);
    if (rc < 0) {
        free(reason_masked);
        free(pd);
        return rc;
    }
    gen->pending_emits++;
    PX_LOG_WARN(gen->inst->name, "poison message dead-lettered bytes=%zu reason=%s", len,
                reason ? reason : "");
    free(reason_masked);
    return 0;
}
