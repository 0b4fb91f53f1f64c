/* Deferred callbacks (see defer.h). */
#include "defer.h"

#include <stdlib.h>

#include "mem.h"

struct px_deferred {
    void (*cb)(void *arg);
    void *arg;
    px_deferred *next;
};

static void on_wake(uv_async_t *a)
{
    px_defer_run(a->data);
}

void px_defer_init(px_defer *q, uv_loop_t *loop)
{
    q->head = q->tail = NULL;
    uv_async_init(loop, &q->async, on_wake);
    q->async.data = q;
    uv_unref((uv_handle_t *)&q->async);
}

void px_defer_push(px_defer *q, void (*cb)(void *arg), void *arg)
{
    px_deferred *it = px_xmalloc(sizeof(*it));
    it->cb = cb;
    it->arg = arg;
    it->next = NULL;
    if (q->tail) {
        q->tail->next = it;
    } else {
        q->head = it;
    }
    q->tail = it;
    uv_async_send(&q->async);
}

void px_defer_run(px_defer *q)
{
    /* Take the list as it is now: callbacks deferring more work run on the next wake-up. */
    px_deferred *it = q->head;
    q->head = q->tail = NULL;
    while (it) {
        px_deferred *next = it->next;
        it->cb(it->arg);
        free(it);
        it = next;
    }
}

static void on_closed(uv_handle_t *h)
{
    (void)h;
}

void px_defer_close(px_defer *q)
{
    uv_close((uv_handle_t *)&q->async, on_closed);
}
