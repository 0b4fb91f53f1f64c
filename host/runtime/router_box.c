/* Shared router references (see router_box.h). */
#include "router_box.h"

#include <stdlib.h>

#include "mem.h"

px_router_box *px_router_box_new(px_router *router)
{
    px_router_box *b = px_xcalloc(1, sizeof(*b));
    b->router = router;
    b->refs = 1;
    return b;
}

px_router_box *px_router_box_ref(px_router_box *b)
{
    b->refs++;
    return b;
}

void px_router_box_unref(px_router_box *b)
{
    if (b && --b->refs == 0) {
        px_router_destroy(b->router);
        free(b);
    }
}
