/* The runtime: the loop services plugins run on (store, dispatcher, HTTP server and
 * client), the plugin instances and the router in force, with the figures the admin API shows.
 * Its modules (instances, ingest, dispatch, the host API) reach it through the hooks and owner
 * pointer it fills in, never through a global. lifecycle.h builds, starts and stops it; reload.h
 * changes it. One per process; loop thread only. */
#ifndef PX_RUNTIME_H
#define PX_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#include <plexus/sdk.h>
#include <uv.h>

#include "config.h"
#include "defer.h"
#include "dispatch.h"
#include "http_client.h"
#include "http_server.h"
#include "instance.h"
#include "router_box.h"
#include "store.h"
#include "tap.h"

#define PX_RELOAD_LOG_MAX 50 /* reloads the runtime remembers for the admin API */

typedef struct px_runtime {
    uv_loop_t *loop;
    px_config *cfg;             /* owned: the config in force */
    px_router_box *router;      /* one reference owned */
    px_store *store;            /* owned: spool and state (store.h) */
    px_dispatch *dispatch;      /* owned */
    px_http_server *http;       /* owned: plugin routes; NULL without host.http.listen */
    px_http_client *client;     /* owned: plugins' outgoing requests */
    px_instance **instances;    /* owned */
    size_t ninstances;
    px_host_api api;            /* the table handed to plugins */
    px_gen_host gens;           /* what generations reach the runtime through */
    char *copy_dir;             /* data_dir/plugins: private copies of loaded .so files */
    px_defer defer;             /* callbacks run on a later loop iteration */
    px_tap tap;                 /* live view of events and outcomes (GET /admin/tap) */
    int stopping;               /* 0 running; 1 sources, 2 sinks draining; 3 closing */
    uint64_t events_in, events_unrouted, events_duplicate, events_refused, mapping_errors;
    px_plugin_ctx **retiring;   /* old generations draining after a reload */
    size_t nretiring;
    px_instance **retired;      /* removed by a reload, freed once their generation closed */
    size_t nretired;
    uint64_t reloads_ok, reloads_failed;
    int64_t last_reload_ms;
    char *last_reload_error;    /* owned; NULL after a successful reload */
    json_t *reload_log;         /* the latest reloads, oldest first, at most PX_RELOAD_LOG_MAX:
                                 * [{at, instance, result, error}] (owned; NULL before the first) */
    void (*on_close)(void *arg); /* run when the shutdown closes everything (may be NULL) */
    void *on_close_arg;
} px_runtime;

/* Fills in what rt's modules reach it through (rt->gens, the dispatcher's directory): called
 * once, before any instance is created. */
void px_runtime_wire(px_runtime *rt);
/* The dispatcher's directory of sinks and pipelines for rt. */
px_sink_directory px_runtime_directory(px_runtime *rt);

/* The runtime gen belongs to. */
static inline px_runtime *px_runtime_of(px_plugin_ctx *gen)
{
    return gen->inst->host->owner;
}

/* Runs every pending timer of every instance's current generation now (px_gen_fire_timers):
 * the seam through which the fuzz targets drive timer-driven plugin paths without waiting.
 * Returns how many ran. */
size_t px_runtime_fire_timers(px_runtime *rt);

/* Instance by name (borrowed) or NULL. */
px_instance *px_runtime_instance(px_runtime *rt, const char *name);
/* Retry policy of pipeline `name` in the current config, or the default policy. */
const px_retry_policy *px_runtime_policy(px_runtime *rt, const char *pipeline);

/* Stops gen (no longer its instance's current generation) and closes it once it drained. */
void px_runtime_retire_gen(px_runtime *rt, px_plugin_ctx *gen);
/* Keeps inst (no longer in rt->instances) until its last generation closed. */
void px_runtime_retire_instance(px_runtime *rt, px_instance *inst);
/* Closes old generations still draining (shutdown). */
void px_runtime_close_retiring(px_runtime *rt);
/* px_gen_close callback for a generation of a retired instance: frees the instance with it. */
void px_runtime_on_retired_gen_closed(px_plugin_ctx *gen);

#endif
