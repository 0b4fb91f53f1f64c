/* The running host: owns the loop services (spool, state, dispatcher, HTTP), the plugin
 * instances and the current router, and runs start-up and graceful shutdown. One per process;
 * loop thread only. */
#ifndef PX_DAEMON_H
#define PX_DAEMON_H

#include <stddef.h>
#include <stdint.h>

#include <plexus/sdk.h>
#include <uv.h>

#include "config.h"
#include "dispatch.h"
#include "instance.h"
#include "router.h"
#include "spool.h"
#include "state.h"

/* A router shared by the daemon (while current) and the emits routed with it (until their
 * commit): a reload swaps in a new one while older emits still use the old one's strings. */
typedef struct px_router_box {
    px_router *router; /* owned */
    size_t refs;
} px_router_box;

px_router_box *px_router_box_ref(px_router_box *b);
void px_router_box_unref(px_router_box *b); /* NULL is a no-op */

typedef struct px_deferred {
    void (*cb)(void *arg);
    void *arg;
    struct px_deferred *next;
} px_deferred;

struct px_daemon {
    uv_loop_t *loop;
    px_config *cfg;             /* owned: the config in force */
    px_router_box *router;      /* one reference owned */
    px_spool *spool;            /* owned */
    px_state *state;            /* owned */
    px_dispatch *dispatch;      /* owned */
    struct px_http_server *http;   /* owned: plugin routes; NULL without host.http.listen */
    struct px_http_client *client; /* owned: plugins' outgoing requests */
    struct px_admin *admin;        /* owned: admin API (its listener may be absent) */
    px_instance **instances;    /* owned */
    size_t ninstances;
    px_host_api api;            /* the table handed to plugins */
    char *copy_dir;             /* data_dir/plugins: private copies of loaded .so files */
    uv_signal_t sigint, sigterm, sighup;
    uv_async_t defer_async;     /* runs deferred callbacks on the next loop iteration */
    px_deferred *defer_head, *defer_tail;
    int stopping;
    int exit_code;
    size_t gens_open;           /* generations not yet closed (shutdown waits for 0) */
    uint64_t events_in, events_unrouted, events_duplicate, events_refused, mapping_errors;
    px_plugin_ctx **retiring;   /* old generations draining after a reload */
    size_t nretiring;
    px_instance **retired;      /* removed by a reload, freed once their generation closed */
    size_t nretired;
    uv_fs_event_t *watchers;    /* host.watch_plugins: one per plugin_path directory */
    size_t nwatchers;
    uv_timer_t watch_timer;     /* debounces file events */
    int watch_timer_open;
    uint64_t reloads_ok, reloads_failed;
    int64_t last_reload_ms;
    char *last_reload_error;    /* owned; NULL after a successful reload */
};

/* Reloads instance `instance` (borrowed) with a new generation of its plugin file, or, with
 * instance NULL, the whole configuration file: parse and validate all of it, then apply only the
 * difference (changed instances get a new generation, removed ones stop and drain, added ones
 * start, pipelines swap). A failure changes nothing and is reported in err. Returns 0 or < 0.
 * The old generations drain in the background after this returns. */
int px_daemon_reload(px_daemon *d, const char *instance, char *err, size_t errlen);
/* Closes old generations still draining (shutdown). */
void px_daemon_close_retiring(px_daemon *d);
/* Starts watching the plugin path when host.watch_plugins is set (reload.c). */
void px_daemon_watch_start(px_daemon *d);
void px_daemon_watch_stop(px_daemon *d);

/* Builds the host from cfg (stolen): opens the spool and state in data_dir, loads every instance
 * (options validated) and compiles the pipelines. Nothing is started. Returns 0 or < 0 with one
 * line in err; on failure everything created is released (the loop may need to run once). */
int px_daemon_create(uv_loop_t *loop, px_config *cfg, px_daemon **out, char *err, size_t errlen);
/* Starts sinks, then sources; installs SIGINT/SIGTERM (graceful stop) and SIGHUP handlers. */
int px_daemon_start(px_daemon *d, char *err, size_t errlen);
/* Graceful stop: sources stop and finish their emits, then sinks finish in-flight deliveries
 * (bounded by drain_timeout), then everything closes; uv_run returns when all is closed. */
void px_daemon_shutdown(px_daemon *d);
/* Frees what is left after uv_run returned. */
void px_daemon_destroy(px_daemon *d);

/* Finds instance ic's plugin on cfg's plugin path, checks its ABI and validates its options
 * without keeping it loaded. On success stores the file (owned; free) and the validated options
 * (new reference). Also reports what a bundled plugin is known to need and would only find out in
 * its init (routes without host.http.listen, a file in a missing or read-only directory), at the
 * option's position. Used by start-up, reload and `plexus check`. */
int px_daemon_validate_instance(const px_config *cfg, const px_instance_conf *ic,
                                const px_host_api *api, char **file_out, json_t **opts_out,
                                char *err, size_t errlen);

/* Checks that every pipeline's `from` is a source and every target a sink, by the roles their
 * plugins declare. Returns 0 or PX_ECONFIG with "file:line:column: message" in err. */
int px_daemon_check_roles(const px_config *cfg, const px_host_api *api, char *err, size_t errlen);

/* Instance by name (borrowed) or NULL. */
px_instance *px_daemon_instance(px_daemon *d, const char *name);
/* Runs cb(arg) on a later loop iteration (never inside the caller). */
void px_daemon_defer(px_daemon *d, void (*cb)(void *arg), void *arg);
/* Retry policy of pipeline `name` in the current config, or the default policy. */
const px_retry_policy *px_daemon_policy(px_daemon *d, const char *pipeline);

/* Network glue (net.c): HTTP routes and client calls bound to a generation, the SDK's HTTP
 * accessors, and releasing a generation's routes and calls when it goes away. */
int px_daemon_http_route(px_daemon *d, px_plugin_ctx *gen, const char *method, const char *path,
                         uint32_t flags, px_http_handler cb, void *arg);
int px_daemon_http_request(px_daemon *d, px_plugin_ctx *gen, const px_http_options *opt,
                           px_http_response_cb cb, void *arg, px_http_call **out);
void px_daemon_http_fill(px_host_api *api);
/* Points every route gen recorded at gen (it became, or became again, the current one). */
void px_daemon_apply_routes(px_daemon *d, px_plugin_ctx *gen);
void px_daemon_release_gen(px_daemon *d, px_plugin_ctx *gen);

/* Fills the SDK table (api.c). */
void px_api_init(px_host_api *api);
/* The daemon plugins talk to (set by px_daemon_create; one per process). */
extern px_daemon *px_the_daemon;

#endif
