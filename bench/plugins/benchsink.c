/* benchsink: a sink for bench/spool.sh that does no work: `mode: ok` completes every delivery
 * at once and logs "bench sink done n=... mono_ns=..." when the `expect`-th one completes;
 * `mode: down` answers every delivery with retry after `retry_after`, as a sink that is down. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <plexus/sdk.h>

static const px_host_api *host;

typedef struct bsink {
    px_plugin_ctx *ctx;
    int down;
    int64_t expect, done, retry_after_ms;
} bsink;

static const px_option options[] = {
    {"mode", PX_OPT_STRING, 0, "ok", "ok or down"},
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

static void snk_deliver(void *state, px_delivery *d)
{
    bsink *s = state;
    if (s->down) {
        host->complete(d, PX_ERETRY, "down", (uint64_t)s->retry_after_ms);
        return;
    }
    host->complete(d, PX_OK, NULL, 0);
    if (++s->done == s->expect) {
        host->log(s->ctx, PX_LOG_INFO, "bench sink done n=%lld mono_ns=%lld", (long long)s->done,
                  mono_ns());
    }
}

static int snk_init(px_plugin_ctx *ctx, const json_t *cfg, void **state)
{
    bsink *s = calloc(1, sizeof(*s));
    if (!s) {
        return PX_EINVAL;
    }
    s->ctx = ctx;
    s->down = strcmp(json_string_value(json_object_get(cfg, "mode")), "down") == 0;
    s->expect = json_integer_value(json_object_get(cfg, "expect"));
    s->retry_after_ms = json_integer_value(json_object_get(cfg, "retry_after"));
    *state = s;
    return 0;
}

static void snk_destroy(void *state)
{
    free(state);
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
