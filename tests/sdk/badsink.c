/* A sink that breaks one rule of the SDK, chosen with -DFAULT=N, so that the test kit can be shown
 * to catch it (built out of tree by test_sdk.py against the installed SDK):
 *   0  none: a clean sink (control)
 *   1  starts a repeating timer and never stops it
 *   2  has drain() but never calls host->drained()
 *   3  completes a delivery twice
 *   4  keeps a delivery open through drain and completes it from a thread after destroy
 *   5  calls host->kv_set from a worker thread
 *   6  crashes (SIGSEGV) in deliver */
#define _POSIX_C_SOURCE 200809L /* nanosleep */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <plexus/sdk.h>

#ifndef FAULT
#define FAULT 0
#endif

static const px_host_api *host;

typedef struct bad {
    px_plugin_ctx *ctx;
    px_timer *tick;
    px_delivery *held;
    pthread_t worker;
    int has_worker;
} bad;

static volatile int destroyed;

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void on_tick(void *arg)
{
    (void)arg;
}

static void *late_worker(void *arg)
{
    bad *b = arg;
    px_delivery *d = b->held;
    while (!destroyed) {
        pause_ms(2);
    }
    pause_ms(5);
    host->complete(d, PX_OK, "too late", 0);
    return NULL;
}

static void *kv_worker(void *arg)
{
    bad *b = arg;
    json_t *v = json_true();
    host->kv_set(b->ctx, "from_thread", v);
    json_decref(v);
    return NULL;
}

static int bad_init(px_plugin_ctx *ctx, const json_t *config, void **state)
{
    (void)config;
    bad *b = calloc(1, sizeof(*b));
    b->ctx = ctx;
    *state = b;
    return 0;
}

static int bad_start(void *state)
{
    bad *b = state;
    if (FAULT == 1) {
        host->timer_start(b->ctx, 10, 10, on_tick, b, &b->tick);
    }
    if (FAULT == 5) {
        b->has_worker = pthread_create(&b->worker, NULL, kv_worker, b) == 0;
    }
    return 0;
}

static void bad_deliver(void *state, px_delivery *d)
{
    bad *b = state;
    if (FAULT == 6) {
        volatile int *nowhere = NULL;
        *nowhere = 1;
    }
    if (FAULT == 4) {
        b->held = d;
        pthread_t t;
        if (pthread_create(&t, NULL, late_worker, b) == 0) {
            pthread_detach(t);
        }
        return;
    }
    host->complete(d, PX_OK, "done", 0);
    if (FAULT == 3) {
        host->complete(d, PX_OK, "again", 0);
    }
}

static void bad_drain(void *state)
{
    bad *b = state;
    if (FAULT != 2) {
        host->drained(b->ctx);
    }
}

static void bad_destroy(void *state)
{
    bad *b = state;
    if (b->has_worker) {
        pthread_join(b->worker, NULL);
    }
    free(b);
    destroyed = 1;
}

static const px_plugin_desc desc = {
    PX_PLUGIN_DESC_INIT,
    .kind = PX_KIND_SINK,
    .name = "badsink",
    .version = "0.0.1",
    .description = "breaks one SDK rule on purpose",
    .init = bad_init,
    .start = bad_start,
    .deliver = bad_deliver,
    .drain = bad_drain,
    .destroy = bad_destroy,
};

PX_SDK_EXPORT const px_plugin_desc *PX_PLUGIN_ENTRY(const px_host_api *h)
{
    host = h;
    return &desc;
}
