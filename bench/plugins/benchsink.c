/* benchsink: a sink for bench/spool.sh that does no work: `mode: ok` completes every delivery
 * at once and logs "bench sink done n=... mono_ns=..." when the `expect`-th one completes;
 * `mode: later` completes them from a 1 ms timer instead, as a sink answering over the network
 * would (after the spool has written them); `mode: down` answers every delivery with retry after
 * `retry_after`, as a sink that is down. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <plexus/sdk.h>

static const px_host_api *host;

typedef struct bsink {
    px_plugin_ctx *ctx;
    int down, later;
    int64_t expect, done, retry_after_ms;
    px_delivery **held; /* mode later: waiting for the next tick */
    size_t nheld, capheld;
    px_timer *tick;
} bsink;

static const px_option options[] = {
    {"mode", PX_OPT_STRING, 0, "ok", "ok, later or down"},
    {"expect", PX_OPT_INT, 0, "0", "log when this many deliveries completed"},
    {"retry_after", PX_OPT_DURATION, 0, "1h", "with mode down: retry after this long"},
    {NULL, 0, 0, NULL, NULL},
};

static long long mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void finish(bsink *s, px_delivery *d)
{
    host->complete(d, PX_OK, NULL, 0);
    if (++s->done == s->expect) {
        host->log(s->ctx, PX_LOG_INFO, "bench sink done n=%lld mono_ns=%lld", (long long)s->done,
                  mono_ns());
    }
}

static void on_tick(void *arg)
{
    bsink *s = arg;
    size_t n = s->nheld;
    s->nheld = 0;
    for (size_t i = 0; i < n; i++) {
        finish(s, s->held[i]);
    }
}

static void snk_deliver(void *state, px_delivery *d)
{
    bsink *s = state;
    if (s->down) {
        host->complete(d, PX_ERETRY, "down", (uint64_t)s->retry_after_ms);
        return;
    }
    if (!s->later) {
        finish(s, d);
        return;
    }
    if (s->nheld == s->capheld) {
        size_t cap = s->capheld ? s->capheld * 2 : 1024;
        px_delivery **v = realloc(s->held, cap * sizeof(*v));
        if (!v) {
            host->complete(d, PX_ERETRY, "out of memory", 0);
            return;
        }
        s->held = v;
        s->capheld = cap;
    }
    s->held[s->nheld++] = d;
}

static int snk_init(px_plugin_ctx *ctx, const json_t *cfg, void **state)
{
    bsink *s = calloc(1, sizeof(*s));
    if (!s) {
        return PX_EINVAL;
    }
    s->ctx = ctx;
    const char *mode = json_string_value(json_object_get(cfg, "mode"));
    s->down = strcmp(mode, "down") == 0;
    s->later = strcmp(mode, "later") == 0;
    if (s->later && host->timer_start(ctx, 1, 1, on_tick, s, &s->tick) < 0) {
        free(s);
        return PX_EINVAL;
    }
    s->expect = json_integer_value(json_object_get(cfg, "expect"));
    s->retry_after_ms = json_integer_value(json_object_get(cfg, "retry_after"));
    *state = s;
    return 0;
}

static void snk_destroy(void *state)
{
    bsink *s = state;
    if (s->tick) {
        host->timer_stop(s->tick);
    }
    free(s->held);
    free(s);
}

static const px_plugin_desc desc = {
    PX_PLUGIN_DESC_INIT,
    .kind = PX_KIND_SINK,
    .name = "benchsink",
    .version = "1.0.0",
    .description = "benchmark sink: completes at once, or is down",
    .options = options,
    .init = snk_init,
    .deliver = snk_deliver,
    .destroy = snk_destroy,
};

PX_SDK_EXPORT const px_plugin_desc *PX_PLUGIN_ENTRY(const px_host_api *h)
{
    host = h;
    return &desc;
}
