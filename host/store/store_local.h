/* What the one-host backends (SQLite, memory) share for the "several hosts" part of the store
 * interface (store.h): with one host there is nothing to adopt and the lease always holds; named
 * leases live in this process (no other process uses them), and the member list is this host. */
#ifndef PX_STORE_LOCAL_H
#define PX_STORE_LOCAL_H

#include <stdint.h>

#include <jansson.h>

#include "store.h"

typedef struct px_store_local {
    json_t *locks;     /* name -> {"holder": text, "until": ms since the epoch} */
    char *host_id;     /* owned */
    char *version;     /* owned */
    char *config_hash; /* owned */
    int64_t started_at;
} px_store_local;

/* Fills l (caller's memory) from opt (borrowed; may be NULL). */
void px_store_local_init(px_store_local *l, const px_store_options *opt);
/* Frees what l owns. */
void px_store_local_free(px_store_local *l);

/* The px_store_ops slots, on the px_store_local of a backend. */
int px_store_local_lock(px_store_local *l, const char *name, const char *holder, uint32_t ttl_ms);
int px_store_local_unlock(px_store_local *l, const char *name, const char *holder);
int px_store_local_members(px_store_local *l, json_t **out);
void px_store_local_announce(px_store_local *l, const char *config_hash);

/* px_store_claim_ordered on one host: claim(b, sink, after_seq, max) through a callback that sets
 * each delivery's seq to its id (one host: id order is arrival order). */
int px_store_local_claim_ordered(void *b,
                                 int (*claim)(void *b, const char *sink, int64_t after_id,
                                              size_t max,
                                              void (*cb)(const px_store_delivery *d, void *arg),
                                              void *arg),
                                 const char *sink, int64_t after_seq, size_t max,
                                 void (*cb)(const px_store_delivery *d, void *arg), void *arg);

#endif
