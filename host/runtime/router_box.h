/* A router shared by the runtime (while current) and the emits routed with it (until their
 * commit): a reload swaps in a new one while older emits still use the old one's strings. */
#ifndef PX_ROUTER_BOX_H
#define PX_ROUTER_BOX_H

#include <stddef.h>

#include "router.h"

typedef struct px_router_box {
    px_router *router; /* owned */
    size_t refs;
} px_router_box;

/* A box holding router (stolen) with one reference, the caller's. */
px_router_box *px_router_box_new(px_router *router);
px_router_box *px_router_box_ref(px_router_box *b);
void px_router_box_unref(px_router_box *b); /* NULL is a no-op */

#endif
