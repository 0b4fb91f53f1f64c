/* ABI fixtures: one source built several ways (see meson.build) to exercise every refusal of the
 * loader. FIXTURE selects what is wrong with it. */
#include <plexus/sdk.h>

#define OK 0
#define WRONG_MAJOR_SYMBOL 1 /* exports px_plugin_entry_v2 only */
#define WRONG_MAJOR_FIELD 2  /* v1 symbol, descriptor says 2.0 */
#define NEWER_MINOR 3
#define SMALL_STRUCT 4
#define BAD_JANSSON 5
#define WRONG_NAME 6
#define NO_ENTRY 7
#define INIT_FAILS 8
#define NO_INIT 9

static int fx_init(px_plugin_ctx *ctx, const json_t *config, void **state)
{
    (void)ctx, (void)config;
    *state = NULL;
    return FIXTURE == INIT_FAILS ? PX_EINVAL : 0;
}

static void fx_deliver(void *state, px_delivery *d)
{
    (void)state, (void)d;
}

static void fx_destroy(void *state)
{
    (void)state;
}

static px_plugin_desc desc __attribute__((used)) = {
    PX_PLUGIN_DESC_INIT,
    .kind = PX_KIND_SINK,
    .name = FIXTURE_NAME,
    .version = "0.0.1",
    .description = "ABI test fixture",
    .init = FIXTURE == NO_INIT ? NULL : fx_init,
    .deliver = fx_deliver,
    .destroy = fx_destroy,
};

#if FIXTURE == WRONG_MAJOR_SYMBOL
PX_SDK_EXPORT const px_plugin_desc *px_plugin_entry_v2(const px_host_api *h);
PX_SDK_EXPORT const px_plugin_desc *px_plugin_entry_v2(const px_host_api *h)
{
    (void)h;
    desc.abi_major = 2;
    return &desc;
}
#elif FIXTURE == NO_ENTRY
PX_SDK_EXPORT int not_a_plugin(void);
PX_SDK_EXPORT int not_a_plugin(void)
{
    return 0;
}
#else
PX_SDK_EXPORT const px_plugin_desc *PX_PLUGIN_ENTRY(const px_host_api *h)
{
    (void)h;
#if FIXTURE == WRONG_MAJOR_FIELD
    desc.abi_major = 2;
#elif FIXTURE == NEWER_MINOR
    desc.abi_minor = PX_SDK_ABI_MINOR + 1;
#elif FIXTURE == SMALL_STRUCT
    desc.size = 24;
#elif FIXTURE == BAD_JANSSON
    desc.jansson_major = JANSSON_MAJOR_VERSION + 1;
#endif
    return &desc;
}
#endif
