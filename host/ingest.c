/* Emit path: route, persist, acknowledge, dispatch (see ingest.h). */
#include "ingest.h"

#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "err.h"
#include "event.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"

typedef struct pending_emit {
    px_daemon *d;
    px_plugin_ctx *gen;
    px_event *ev;
    px_persisted_cb cb;
    void *arg;
    px_router_box *router; /* keeps the routes' strings alive */
    px_route *routes;
    size_t nroutes;
    px_spool_row *rows;
    int status;
} pending_emit;

static void pending_free(pending_emit *pe)
{
    px_routes_free(pe->routes, pe->nroutes);
    px_router_box_unref(pe->router);
    free(pe->rows);
    px_event_unref(pe->ev);
    free(pe);
}

static void finish(pending_emit *pe)
{
    px_plugin_ctx *gen = pe->gen;
    /* A generation destroyed after a drain timeout no longer has code to call back. */
    if (pe->cb && gen->state_code != PX_GEN_DESTROYED) {
        pe->cb(pe->status, pe->arg);
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
    px_daemon *d = pe->d;
    if (status == PX_SPOOL_DUPLICATE) {
        d->events_duplicate++;
        PX_LOG_DEBUG("ingest", "duplicate dropped source=%s event=%s key=%s", pe->ev->source,
                     pe->ev->id, pe->ev->dedupe_key ? pe->ev->dedupe_key : "");
        pe->status = PX_OK;
    } else if (status < 0) {
        d->events_refused++;
        pe->status = PX_EBUSY;
    } else {
        pe->status = PX_OK;
        for (size_t i = 0; i < pe->nroutes; i++) {
            px_route *r = &pe->routes[i];
            if (r->error) {
                px_spool_mark_dead(d->spool, pe->rows[i].id, 0, r->error);
                continue;
            }
            px_dispatch_add(d->dispatch, pe->rows[i].id, pe->ev, r->pipeline, r->sink, r->action,
                            r->params, r->retry);
        }
    }
    finish(pe);
}

/* Metadata a source copied from its input (request headers...) may carry a configured secret,
 * e.g. the bearer token a webhook was called with: mask it before the event is stored or handed to
 * a sink. Payloads are data and stay byte for byte. */
static void redact_json(json_t *j, int depth)
{
    if (depth > 16) {
        return;
    }
    if (json_is_object(j)) {
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v) {
            if (json_is_string(v)) {
                char *masked = px_log_redact(json_string_value(v));
                if (masked) {
                    /* a new value, not json_string_set: the old one may be shared */
                    json_object_set_new(j, k, json_string(masked));
                    free(masked);
                }
            } else {
                redact_json(v, depth + 1);
            }
        }
    } else if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) {
            if (json_is_string(v)) {
                char *masked = px_log_redact(json_string_value(v));
                if (masked) {
                    json_array_set_new(j, i, json_string(masked));
                    free(masked);
                }
            } else {
                redact_json(v, depth + 1);
            }
        }
    }
}

int px_ingest_emit(px_daemon *d, px_plugin_ctx *gen, px_event *ev, px_persisted_cb cb, void *arg)
{
    if (!ev) {
        return PX_EINVAL;
    }
    if (!gen || gen->state_code == PX_GEN_DESTROYED || d->stopping > 1) {
        px_event_unref(ev);
        return PX_ESTATE;
    }
    free(ev->source);
    ev->source = px_xstrdup(gen->inst->name);
    ev->emitted = 1;
    redact_json(ev->meta, 0);
    d->events_in++;
    px_metrics_event_received(ev->source);

    pending_emit *pe = px_xcalloc(1, sizeof(*pe));
    pe->d = d;
    pe->gen = gen;
    pe->ev = ev;
    pe->cb = cb;
    pe->arg = arg;
    px_mapping_env env = {ev->payload, ev->type, ev->id, ev->source, (long long)ev->time_ms};
    pe->router = px_router_box_ref(d->router);
    pe->nroutes = px_router_route(pe->router->router, ev->source, &env, &pe->routes);

    if (pe->nroutes == 0 && !ev->dedupe_key) {
        d->events_unrouted++;
        PX_LOG_DEBUG("ingest", "no pipeline source=%s type=%s event=%s", ev->source, ev->type,
                     ev->id);
        pe->status = PX_OK;
        gen->pending_emits++;
        px_daemon_defer(d, on_deferred, pe);
        return 0;
    }

    char *payload = json_dumps(ev->payload, JSON_COMPACT | JSON_ENCODE_ANY);
    char *meta = ev->meta ? json_dumps(ev->meta, JSON_COMPACT) : NULL;
    char *hints = px_event_hints_json(ev);
    px_spool_event sev = {
        .id = ev->id, .type = ev->type, .source = ev->source, .dedupe_key = ev->dedupe_key,
        .time_ms = ev->time_ms, .payload = payload, .payload_len = payload ? strlen(payload) : 0,
        .meta = meta, .hints = hints,
    };
    char **params_text = NULL;
    if (pe->nroutes) {
        pe->rows = px_xcalloc(pe->nroutes, sizeof(*pe->rows));
        params_text = px_xcalloc(pe->nroutes, sizeof(*params_text));
    }
    for (size_t i = 0; i < pe->nroutes; i++) {
        px_route *r = &pe->routes[i];
        if (r->error) {
            d->mapping_errors++;
        }
        params_text[i] = r->params ? json_dumps(r->params, JSON_COMPACT) : NULL;
        pe->rows[i] = (px_spool_row){
            .pipeline = r->pipeline, .sink = r->sink, .action = r->action,
            .params = params_text[i], .params_len = params_text[i] ? strlen(params_text[i]) : 0,
        };
    }
    int rc = px_spool_put(d->spool, &sev, pe->rows, pe->nroutes, on_committed, pe);
    for (size_t i = 0; i < pe->nroutes; i++) {
        free(params_text[i]);
    }
    free(params_text);
    free(payload);
    free(meta);
    free(hints);
    if (rc < 0) {
        d->events_refused++;
        pe->ev = NULL;
        pending_free(pe);
        px_event_unref(ev);
        return rc;
    }
    gen->pending_emits++;
    return 0;
}

typedef struct pending_dead {
    px_plugin_ctx *gen;
    px_persisted_cb cb;
    void *arg;
} pending_dead;

static void on_dead_stored(int status, void *arg)
{
    pending_dead *pd = arg;
    px_plugin_ctx *gen = pd->gen;
    if (pd->cb && gen->state_code != PX_GEN_DESTROYED) {
        pd->cb(status < 0 ? PX_EBUSY : PX_OK, pd->arg);
    }
    free(pd);
    px_gen_emit_done(gen);
}

int px_ingest_dead_letter(px_daemon *d, px_plugin_ctx *gen, const char *raw, size_t len,
                          const json_t *meta, const char *reason, px_persisted_cb cb, void *arg)
{
    if (!gen || gen->state_code == PX_GEN_DESTROYED || d->stopping > 1) {
        return PX_ESTATE;
    }
    if (!raw && len) {
        return PX_EINVAL;
    }
    /* The id and time of a poison message are the host's: it never became an event. */
    px_event *ev = px_event_create(gen->inst->name, "poison", json_null());
    char *meta_text = json_is_object(meta) ? json_dumps(meta, JSON_COMPACT) : NULL;
    char *masked = px_log_redact(meta_text);
    if (masked) {
        free(meta_text);
        meta_text = masked;
    }
    char *reason_masked = px_log_redact(reason);
    if (reason_masked) {
        reason = reason_masked;
    }
    char *type = px_xasprintf("%s.poison", gen->inst->plugin);
    px_spool_event sev = {
        .id = ev->id, .type = type, .source = gen->inst->name, .time_ms = ev->time_ms,
        .payload = raw ? raw : "", .payload_len = len, .meta = meta_text,
    };
    pending_dead *pd = px_xcalloc(1, sizeof(*pd));
    pd->gen = gen;
    pd->cb = cb;
    pd->arg = arg;
    int rc = px_spool_dead_raw(d->spool, &sev, NULL, NULL, reason ? reason : "poison message",
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
