/* The runtime's life (runtime.h): built from a config, started, stopped gracefully. Loop thread
 * only. */
#ifndef PX_LIFECYCLE_H
#define PX_LIFECYCLE_H

#include <stddef.h>

#include <uv.h>

#include "config.h"
#include "runtime.h"

/* Builds the runtime from cfg (stolen): opens the spool and state in data_dir, the HTTP server
 * and client, loads every instance (options validated) and compiles the pipelines. Nothing is
 * started. Returns 0 or < 0 with one line in err; on failure everything created is released
 * (the loop is run until it is). */
int px_runtime_create(uv_loop_t *loop, px_config *cfg, px_runtime **out, char *err,
                      size_t errlen);
/* As px_runtime_create, on a store the caller opened on `loop` (e.g. px_store_open_memory)
 * instead of the SQLite store in data_dir. store is stolen: the runtime closes it with its other
 * services (at shutdown, or on failure here), as it closes the one it opens itself. data_dir is
 * still used for the private plugin copies. */
int px_runtime_create_on_store(uv_loop_t *loop, px_config *cfg, px_store *store,
                               px_runtime **out, char *err, size_t errlen);
/* What a host that checks plugins (the test kit) puts at the runtime's edges. */
typedef struct px_runtime_edges {
    px_store *store;               /* stolen, as for px_runtime_create_on_store; NULL = SQLite */
    const px_host_api *plugin_api; /* the table handed to plugins instead of rt->api (borrowed;
                                    * outlives the runtime): shims calling through to rt->api's
                                    * functions (px_api_init); NULL = rt->api */
    void (*watch)(void *arg, px_plugin_ctx *gen, const char *call, const void *what, int after,
                  int rc);         /* px_gen_host.watch; NULL = none */
    void *watch_arg;
} px_runtime_edges;

/* As px_runtime_create, with `edges` (borrowed; NULL = none). */
int px_runtime_create_with(uv_loop_t *loop, px_config *cfg, const px_runtime_edges *edges,
                           px_runtime **out, char *err, size_t errlen);
/* Starts sinks, then sources, and resumes the deliveries the spool holds. */
int px_runtime_start(px_runtime *rt, char *err, size_t errlen);
/* Graceful stop: sources stop and finish their emits, then sinks finish in-flight deliveries
 * (bounded by drain_timeout), then everything closes (rt->on_close first); uv_run returns when
 * all is closed. A second call does nothing. */
void px_runtime_shutdown(px_runtime *rt);
/* Frees what is left after uv_run returned. NULL is a no-op. */
void px_runtime_destroy(px_runtime *rt);

#endif
