/* Compiled by test_sdk.py with -std=c99 and -std=c11, -Wall -Wextra -pedantic -Werror: the SDK
 * header, and a minimal plugin written against it, must compile cleanly in both. */
#include <plexus/sdk.h>

static const px_host_api *host;

static int t_init(px_plugin_ctx *ctx, const json_t *config, void **state)
{
    (void)config;
    *state = ctx;
    if (PX_HAS(px_host_api, host, dead_letter)) {
        host->log(ctx, PX_LOG_INFO, "ready %d", 1);
    }
    return PX_OK;
}

static void t_deliver(void *state, px_delivery *d)
{
    (void)state;
    host->complete(d, PX_OK, "", 0);
}

static void t_destroy(void *state)
{
    (void)state;
}

static const px_option options[] = {
    {"x", PX_OPT_STRING, PX_OPT_REQUIRED | PX_OPT_SECRET, NULL, "doc"},
    {NULL, 0, 0, NULL, NULL},
};

static const px_plugin_desc desc = {
    PX_PLUGIN_DESC_INIT,
    .kind = PX_KIND_SINK,
    .name = "header_c",
    .version = "1.0.0",
    .description = "header check",
    .options = options,
    .init = t_init,
    .deliver = t_deliver,
    .destroy = t_destroy,
};

PX_SDK_EXPORT const px_plugin_desc *PX_PLUGIN_ENTRY(const px_host_api *h)
{
    host = h;
    return PX_HAS(px_plugin_desc, &desc, import_state) ? &desc : NULL;
}
