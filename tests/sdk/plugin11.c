/* A plugin built against a copy of the SDK header one minor ahead (test_sdk.py appends
 * `later_fn` to px_host_api and `later_cb` to px_plugin_desc and sets PX_SDK_ABI_MINOR one up). It
 * uses the newer host function only when PX_HAS says the host has it. With -DNEEDS_ONLY_1_0 it
 * declares that it needs no more than ABI 1.0 (abi_minor 0), so the real (older) host loads it;
 * otherwise that host must refuse it as too new. */
#include <stdlib.h>

#include <plexus/sdk.h>

static const px_host_api *host;

static int p_init(px_plugin_ctx *ctx, const json_t *config, void **state)
{
    (void)config;
    *state = ctx;
    if (PX_HAS(px_host_api, host, later_fn)) {
        host->log(ctx, PX_LOG_INFO, "host has later_fn: %d", host->later_fn(ctx, 41));
    } else {
        host->log(ctx, PX_LOG_INFO, "host has no later_fn");
    }
    return 0;
}

static void p_deliver(void *state, px_delivery *d)
{
    (void)state;
    host->complete(d, PX_OK, "ok", 0);
}

static void p_destroy(void *state)
{
    (void)state;
}

static int p_later(void *state)
{
    (void)state;
    return 11;
}

static px_plugin_desc desc = {
    PX_PLUGIN_DESC_INIT,
    .kind = PX_KIND_SINK,
    .name = "plugin11",
    .version = "1.1.0",
    .description = "built against the next ABI minor",
    .init = p_init,
    .deliver = p_deliver,
    .destroy = p_destroy,
    .later_cb = p_later,
};

PX_SDK_EXPORT const px_plugin_desc *PX_PLUGIN_ENTRY(const px_host_api *h)
{
    host = h;
#ifdef NEEDS_ONLY_1_0
    desc.abi_minor = 0; /* works with any 1.x host: newer features are probed with PX_HAS */
#endif
    return &desc;
}
