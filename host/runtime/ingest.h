/* Ingest: what happens to an event a source emits. The router decides its deliveries, the spool
 * commits the event with them as one unit, and only then is the source told "persisted" (so it
 * acknowledges upstream) and the deliveries handed to the dispatcher, with the event still in
 * memory for the first attempt. A delivery whose mapping failed is committed and dead-lettered
 * with the reason. Loop thread only. */
#ifndef PX_INGEST_H
#define PX_INGEST_H

#include <plexus/sdk.h>

typedef struct px_runtime px_runtime;

/* SDK emit(): steals ev. Returns 0 (cb, if any, will run exactly once, later) or < 0
 * (PX_ESTATE: the generation is gone; PX_EBUSY: the spool cannot take it now), cb not run. */
int px_ingest_emit(px_runtime *rt, px_plugin_ctx *gen, px_event *ev, px_persisted_cb cb, void *arg);

/* SDK dead_letter(): a source's poison message straight to the dead letters. Same contract as
 * px_ingest_emit for cb. */
int px_ingest_dead_letter(px_runtime *rt, px_plugin_ctx *gen, const char *raw, size_t len,
                          const json_t *meta, const char *reason, px_persisted_cb cb, void *arg);

#endif
