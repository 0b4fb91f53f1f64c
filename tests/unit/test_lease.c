/* Named leases (host/runtime/lease.c) on the in-memory store, seen through a wrapper that can make
 * the store unreachable for lock calls: a lease is taken when free, waited for while another
 * holder has it, renewed while held, reported lost when it cannot be renewed, taken again after,
 * and handed over at once when its holder lets go. Every wait polls for a condition with a
 * deadline; no assertion is on elapsed time. */
#include "../../host/runtime/lease.c"

#include <stdlib.h>

#include "test.h"

enum { TTL_MS = 90, DEADLINE_MS = 20000 };

/* The memory store, with lock calls refused (PX_EBUSY) while `down` is set. */
static px_store_ops wrapped_ops;
static const px_store_ops *memory_ops;
static const char *down; /* the holder whose lock calls fail as if the store were unreachable */
static int lock_calls;

static int wrapped_lock(void *b, const char *name, const char *holder, uint32_t ttl_ms)
{
    lock_calls++;
    return down && strcmp(down, holder) == 0 ? PX_EBUSY : memory_ops->lock(b, name, holder, ttl_ms);
}

typedef struct seen {
    int held;     /* latest status was PX_OK */
    int granted;  /* PX_OK reports */
    int lost;     /* PX_ECONFLICT reports */
    int other;    /* anything else */
} seen;

static void on_status(void *arg, int status)
{
    seen *s = arg;
    if (status == PX_OK) {
        s->granted++;
        s->held = 1;
    } else if (status == PX_ECONFLICT) {
        s->lost++;
        s->held = 0;
    } else {
        s->other++;
    }
}

static uv_loop_t loop;
static px_store *store;

static void open_store(void)
{
    uv_loop_init(&loop);
    px_store *mem = NULL;
    px_store_open_memory(&loop, NULL, &mem);
    memory_ops = mem->ops;
    wrapped_ops = *mem->ops;
    wrapped_ops.lock = wrapped_lock;
    mem->ops = &wrapped_ops;
    store = mem;
    down = NULL;
}

static void close_store(void)
{
    store->ops = memory_ops;
    px_store_close(store);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
}

/* Runs the loop until cond(arg) holds or the deadline passes; returns cond's last value. */
static int run_until(int (*cond)(void *arg), void *arg)
{
    uint64_t until = uv_now(&loop) + DEADLINE_MS;
    while (!cond(arg) && uv_now(&loop) < until) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    return cond(arg);
}

static int is_held(void *arg) { return ((seen *)arg)->held; }
static int is_lost(void *arg) { return ((seen *)arg)->lost > 0 && !((seen *)arg)->held; }
static int calls_over(void *arg) { return lock_calls >= *(int *)arg; }

static void test_one_holder_at_a_time_and_hand_over(void)
{
    open_store();
    seen a = {0}, b = {0};
    px_lease *la = px_lease_start(&loop, store, "inst/duty", "host/inst/1", TTL_MS, on_status, &a);
    PX_ASSERT(a.granted == 0); /* never inside start */
    PX_ASSERT(run_until(is_held, &a));
    px_lease *lb = px_lease_start(&loop, store, "inst/duty", "host/inst/2", TTL_MS, on_status, &b);
    /* Several renewals of a and tries of b: b never gets it while a holds it. */
    int target = lock_calls + 12;
    PX_ASSERT(run_until(calls_over, &target));
    PX_ASSERT(a.held && a.granted == 1 && a.lost == 0);
    PX_ASSERT(!b.held && b.granted == 0);
    PX_ASSERT(px_lease_held(la) && !px_lease_held(lb));
    /* a lets go: given up in the store at once, so b's next try (poked here) gets it. */
    PX_ASSERT_INT_EQ(px_lease_stop(la), 1);
    px_lease_poke(lb);
    PX_ASSERT(run_until(is_held, &b));
    PX_ASSERT(a.lost == 0 && a.other == 0 && b.other == 0);
    PX_ASSERT_INT_EQ(px_lease_stop(lb), 1);
    close_store();
}

/* A holder that cannot renew (its store calls fail) reports the lease lost before its ttl runs
 * out; another host takes it once the ttl ran out; the first, reachable again, waits and gets it
 * back when the second lets go. */
static void test_lost_when_not_renewed_and_taken_again(void)
{
    open_store();
    seen a = {0}, b = {0};
    px_lease *la = px_lease_start(&loop, store, "inst/duty", "host-a/inst/1", TTL_MS, on_status,
                                  &a);
    PX_ASSERT(run_until(is_held, &a));
    down = "host-a/inst/1";
    PX_ASSERT(run_until(is_lost, &a));
    PX_ASSERT_INT_EQ(a.lost, 1);
    px_lease *lb = px_lease_start(&loop, store, "inst/duty", "host-b/inst/1", TTL_MS, on_status,
                                  &b);
    PX_ASSERT(run_until(is_held, &b));
    PX_ASSERT(!a.held);
    down = NULL;
    int target = lock_calls + 9;
    PX_ASSERT(run_until(calls_over, &target));
    PX_ASSERT(!a.held && a.granted == 1 && a.lost == 1); /* b holds it: a waits */
    PX_ASSERT(b.held && b.lost == 0);
    PX_ASSERT_INT_EQ(px_lease_stop(lb), 1);
    PX_ASSERT(run_until(is_held, &a));
    PX_ASSERT_INT_EQ(a.granted, 2);
    PX_ASSERT_INT_EQ(px_lease_stop(la), 1);
    PX_ASSERT(a.other == 0 && b.other == 0);
    close_store();
}

/* A renewal that finds another holder loses the lease at once. */
static void test_lost_to_another_holder(void)
{
    open_store();
    seen a = {0};
    px_lease *la = px_lease_start(&loop, store, "inst/duty", "host-a/inst/1", TTL_MS, on_status,
                                  &a);
    PX_ASSERT(run_until(is_held, &a));
    /* Another holder takes it behind a's back (as a host would after a's ttl ran out). */
    PX_ASSERT_INT_EQ(memory_ops->unlock(store->impl, "inst/duty", "host-a/inst/1"), 0);
    PX_ASSERT_INT_EQ(memory_ops->lock(store->impl, "inst/duty", "host-b/inst/1", 60000), 1);
    PX_ASSERT(run_until(is_lost, &a));
    PX_ASSERT_INT_EQ(a.lost, 1);
    PX_ASSERT(!px_lease_held(la));
    PX_ASSERT_INT_EQ(px_lease_stop(la), 0);
    close_store();
}

/* A callback may stop its own lease; nothing is reported after a stop. */
static void on_status_then_stop(void *arg, int status)
{
    px_lease **l = arg;
    (void)status;
    px_lease_stop(*l);
    *l = NULL;
}

static int stopped(void *arg) { return *(px_lease **)arg == NULL; }

static void test_stop_inside_callback(void)
{
    open_store();
    px_lease *l = NULL;
    l = px_lease_start(&loop, store, "inst/duty", "h/inst/1", TTL_MS, on_status_then_stop, &l);
    PX_ASSERT(run_until(stopped, &l));
    /* Given up: another holder gets it at once. */
    PX_ASSERT_INT_EQ(memory_ops->lock(store->impl, "inst/duty", "other", 1000), 1);
    close_store();
}

PX_TEST_MAIN(PX_TEST(test_one_holder_at_a_time_and_hand_over),
             PX_TEST(test_lost_when_not_renewed_and_taken_again),
             PX_TEST(test_lost_to_another_holder), PX_TEST(test_stop_inside_callback))
