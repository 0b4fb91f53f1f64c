/* The SDK's named leases and cluster view for plugin generations (lock_acquire, lock_release,
 * cluster): names scoped to the instance, the holder being this host's generation, callbacks
 * run in crash frames of the generation. Leases run on lease.c. Loop thread only. */
#ifndef PX_LOCKS_H
#define PX_LOCKS_H

#include <stdint.h>

#include <plexus/sdk.h>
#include <uv.h>

#include "store.h"

/* As px_host_api.lock_acquire / lock_release / cluster, for gen on the runtime's loop and store
 * (both borrowed; store may be NULL: no store, PX_ESTATE). */
int px_locks_acquire(uv_loop_t *loop, px_store *store, px_plugin_ctx *gen, const char *name,
                     uint32_t ttl_ms, void (*cb)(void *arg, int status), void *arg);
int px_locks_release(px_plugin_ctx *gen, const char *name);
int px_locks_cluster(px_store *store, px_plugin_ctx *gen, px_cluster_info *info);

/* Gives up every lease gen holds or waits for (at its unload); no callback runs after. */
void px_locks_release_gen(px_plugin_ctx *gen);

#endif
