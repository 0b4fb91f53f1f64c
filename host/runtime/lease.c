/* Named leases kept on the store (see lease.h). */
#include "lease.h"

#include <stdlib.h>

#include "err.h"
#include "mem.h"

struct px_lease {
    uv_timer_t timer; /* data = the lease; closing it frees the lease */
    px_store *store;
    char *name, *holder;
    uint32_t ttl_ms;
    px_lease_cb cb;
    void *arg;
    int held;
    int stopped;
    uint64_t last_ok; /* loop time of the latest grant */
};

static void attempt(uv_timer_t *t);

static uint64_t period(const px_lease *l)
{
    return l->ttl_ms / 3 ? l->ttl_ms / 3 : 1;
}

static void report(px_lease *l, int held)
{
    l->held = held;
    l->cb(l->arg, held ? PX_OK : PX_ECONFLICT);
}

static void attempt(uv_timer_t *t)
{
    px_lease *l = t->data;
    int rc = px_store_lock(l->store, l->name, l->holder, l->ttl_ms);
    uint64_t now = uv_now(t->loop);
    if (rc == 1) {
        l->last_ok = now;
        if (!l->held) {
            report(l, 1);
        }
    } else if (l->held && (rc == 0 || now - l->last_ok >= l->ttl_ms - period(l))) {
        report(l, 0);
    }
    if (!l->stopped) {
        uv_timer_start(&l->timer, attempt, period(l), 0);
    }
}

px_lease *px_lease_start(uv_loop_t *loop, px_store *store, const char *name, const char *holder,
                         uint32_t ttl_ms, px_lease_cb cb, void *arg)
{
    px_lease *l = px_xcalloc(1, sizeof(*l));
    l->store = store;
    l->name = px_xstrdup(name);
    l->holder = px_xstrdup(holder);
    l->ttl_ms = ttl_ms;
    l->cb = cb;
    l->arg = arg;
    uv_timer_init(loop, &l->timer);
    l->timer.data = l;
    uv_timer_start(&l->timer, attempt, 0, 0);
    return l;
}

void px_lease_poke(px_lease *l)
{
    if (l && !l->stopped) {
        uv_timer_start(&l->timer, attempt, 0, 0);
    }
}

int px_lease_held(const px_lease *l)
{
    return l && l->held;
}

static void on_closed(uv_handle_t *h)
{
    px_lease *l = h->data;
    free(l->name);
    free(l->holder);
    free(l);
}

int px_lease_stop(px_lease *l)
{
    if (!l || l->stopped) {
        return 0;
    }
    int was = l->held;
    l->stopped = 1;
    l->held = 0;
    if (was) {
        px_store_unlock(l->store, l->name, l->holder);
    }
    uv_timer_stop(&l->timer);
    uv_close((uv_handle_t *)&l->timer, on_closed);
    return was;
}
