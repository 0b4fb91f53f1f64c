/* The runtime's directory, the hooks its modules reach it through, and its retiring
 * generations (see runtime.h). */
#include "runtime.h"

#include <stdlib.h>
#include <string.h>

#include "locks.h"
#include "log.h"
#include "mem.h"
#include "net.h"

static const px_retry_policy default_policy = {
    .attempts = 10, .backoff_ms = 1000, .max_backoff_ms = 600000, .jitter = 0.2,
    .timeout_ms = 30000,
};

const px_retry_policy *px_runtime_policy(px_runtime *rt, const char *pipeline)
{
    if (rt->cfg && pipeline) {
        for (size_t i = 0; i < rt->cfg->npipelines; i++) {
            if (strcmp(rt->cfg->pipelines[i].name, pipeline) == 0) {
                return &rt->cfg->pipelines[i].retry;
            }
        }
    }
    return &default_policy;
}

px_instance *px_runtime_instance(px_runtime *rt, const char *name)
{
    for (size_t i = 0; i < rt->ninstances; i++) {
        if (strcmp(rt->instances[i]->name, name) == 0) {
            return rt->instances[i];
        }
    }
    return NULL;
}

size_t px_runtime_fire_timers(px_runtime *rt)
{
    size_t fired = 0;
    for (size_t i = 0; i < rt->ninstances; i++) {
        px_plugin_ctx *gen = rt->instances[i]->gen;
        if (gen && gen->state_code != PX_GEN_DESTROYED) {
            fired += px_gen_fire_timers(gen);
        }
    }
    return fired;
}

/* --- hooks ------------------------------------------------------------------------------- */

static px_instance *dir_instance(void *owner, const char *name)
{
    return px_runtime_instance(owner, name);
}

static const px_retry_policy *dir_policy(void *owner, const char *pipeline)
{
    return px_runtime_policy(owner, pipeline);
}

px_sink_directory px_runtime_directory(px_runtime *rt)
{
    return (px_sink_directory){.owner = rt, .instance = dir_instance, .policy = dir_policy,
                               .tap = &rt->tap};
}

static void gen_crash_enter(void *owner, px_crash_frame *f, px_plugin_ctx *gen, const char *call,
                            uint64_t cause)
{
    px_runtime *rt = owner;
    px_dispatch_crash_enter(rt->dispatch, f, gen, call, cause);
}

static void gen_closing(void *owner, px_plugin_ctx *gen)
{
    px_runtime *rt = owner;
    if (rt->dispatch) {
        px_dispatch_reclaim(rt->dispatch, gen);
    }
    px_net_release_gen(rt->http, rt->client, gen);
    px_locks_release_gen(gen);
}

static void gen_destroyed(void *owner, px_plugin_ctx *gen)
{
    px_runtime *rt = owner;
    if (rt->dispatch) {
        px_dispatch_forget(rt->dispatch, gen);
    }
    px_net_release_gen(rt->http, rt->client, gen);
    px_locks_release_gen(gen);
}

void px_runtime_wire(px_runtime *rt)
{
    rt->gens = (px_gen_host){.loop = rt->loop, .api = &rt->api, .defer = &rt->defer,
                             .owner = rt, .crash_enter = gen_crash_enter,
                             .closing = gen_closing, .destroyed = gen_destroyed};
}

/* --- old generations --------------------------------------------------------------------- */

void px_runtime_on_retired_gen_closed(px_plugin_ctx *gen)
{
    px_runtime *rt = px_runtime_of(gen);
    px_instance *inst = gen->inst;
    /* A removed instance goes once its last generation is gone. */
    for (size_t i = 0; i < rt->nretired; i++) {
        if (rt->retired[i] == inst && !inst->gen) {
            rt->retired[i] = rt->retired[--rt->nretired];
            px_instance_destroy(inst);
            break;
        }
    }
}

static void on_old_drained(px_plugin_ctx *gen, void *arg)
{
    px_runtime *rt = arg;
    for (size_t i = 0; i < rt->nretiring; i++) {
        if (rt->retiring[i] == gen) {
            rt->retiring[i] = rt->retiring[--rt->nretiring];
            break;
        }
    }
    PX_LOG_INFO(gen->inst->name, "generation %u drained, unloading", gen->generation);
    px_gen_close(gen, px_runtime_on_retired_gen_closed);
    if (rt->dispatch) {
        px_dispatch_pump_all(rt->dispatch);
    }
}

void px_runtime_retire_gen(px_runtime *rt, px_plugin_ctx *old)
{
    rt->retiring = px_xrealloc(rt->retiring, (rt->nretiring + 1) * sizeof(*rt->retiring));
    rt->retiring[rt->nretiring++] = old;
    px_gen_stop(old, rt->cfg->drain_timeout_ms, on_old_drained, rt);
}

void px_runtime_retire_instance(px_runtime *rt, px_instance *inst)
{
    rt->retired = px_xrealloc(rt->retired, (rt->nretired + 1) * sizeof(*rt->retired));
    rt->retired[rt->nretired++] = inst;
}

void px_runtime_close_retiring(px_runtime *rt)
{
    while (rt->nretiring) {
        px_plugin_ctx *gen = rt->retiring[--rt->nretiring];
        px_gen_close(gen, px_runtime_on_retired_gen_closed);
    }
    free(rt->retiring);
    rt->retiring = NULL;
}
