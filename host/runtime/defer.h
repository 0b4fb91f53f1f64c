/* A queue of callbacks to run on a later loop iteration, never inside the caller: what a module
 * uses to finish work outside a plugin's call into it. Loop thread only. */
#ifndef PX_DEFER_H
#define PX_DEFER_H

#include <uv.h>

typedef struct px_deferred px_deferred;

typedef struct px_defer {
    uv_async_t async;          /* wakes the loop; does not keep it alive */
    px_deferred *head, *tail;
} px_defer;

/* Prepares q (caller's memory, which must stay put until px_defer_close's handle closed). */
void px_defer_init(px_defer *q, uv_loop_t *loop);
/* Runs cb(arg) on a later loop iteration. */
void px_defer_push(px_defer *q, void (*cb)(void *arg), void *arg);
/* Runs the callbacks queued now (those they queue in turn wait for the next wake-up). */
void px_defer_run(px_defer *q);
/* Closes q's handle; callbacks still queued are not run (px_defer_run first to keep them). */
void px_defer_close(px_defer *q);

#endif
