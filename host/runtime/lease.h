/* A named lease on the store, kept: taken as soon as the store grants it, renewed while held,
 * reported when lost. What the SDK's lock_acquire runs on (locks.c), apart from plugins so that
 * it can be tested against any store. Loop thread only. */
#ifndef PX_LEASE_H
#define PX_LEASE_H

#include <stdint.h>

#include <uv.h>

#include "store.h"

typedef struct px_lease px_lease;

/* Called on the loop, never inside px_lease_start or px_lease_stop: PX_OK when the lease is now
 * held, PX_ECONFLICT when it was held and is lost. May call px_lease_stop on its own lease. */
typedef void (*px_lease_cb)(void *arg, int status);

/* Starts keeping lease `name` for `holder` (both borrowed, copied) on store (borrowed; outlives
 * the lease) with ttl_ms (>= 3): one px_store_lock now-ish (on the next loop turn), then every
 * ttl_ms / 3, while waiting and while held. A renewal that finds another holder loses the lease
 * at once; one that fails (store unreachable) loses it when the last success is 2/3 of ttl_ms
 * old, before another host may take it. Returns the lease (owned by caller; px_lease_stop). */
px_lease *px_lease_start(uv_loop_t *loop, px_store *store, const char *name, const char *holder,
                         uint32_t ttl_ms, px_lease_cb cb, void *arg);

/* Tries again now (on the next loop turn) instead of at the next period: the lease may have
 * been let go by another holder of this process. */
void px_lease_poke(px_lease *l);

/* 1 while held. */
int px_lease_held(const px_lease *l);

/* Stops: gives the lease up when held (px_store_unlock), calls cb no more, and frees l once its
 * timer handle is closed (the loop must run once more). Returns 1 when it was held. */
int px_lease_stop(px_lease *l);

#endif
