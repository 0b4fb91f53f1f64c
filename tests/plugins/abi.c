/* ABI fixtures: one source built several ways (see meson.build) to exercise every refusal of the
 * loader, and the older minors a host must keep loading. FIXTURE selects what is wrong with it (or
 * which older plugin it plays). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
#define AS_1_0 10       /* a 1.0 plugin: minor 0, the 1.0 descriptor; uses 1.0 calls only */
#define AS_1_1 11       /* a 1.1 plugin: minor 1, the same descriptor; event_payload_text */
#define BIG_OPTIONS 12  /* a later minor's px_option, larger than this host's (option_size) */
#define SET_ERROR 13    /* init refuses with set_error (1.2) */
#define NO_DESTROY 14
#define BAD_OPTION_SIZE 15
#define NEEDS_CAS 16    /* a 1.2 plugin that calls kv_cas in init */

static const px_host_api *host;
static px_plugin_desc desc; /* defined below */

/* The options as a plugin of a later minor would declare them: each entry carries a field this
 * host does not know, so only option_size lets the host walk the table. */
typedef struct later_option {
    px_option o;
    const char *later_field;
} later_option;

#if FIXTURE == BIG_OPTIONS
static const later_option options[] = {
    {{"first", PX_OPT_STRING, 0, "one", "the first option"}, "x"},
    {{"second", PX_OPT_INT, 0, "2", "the second option"}, "y"},
    {{NULL, 0, 0, NULL, NULL}, NULL},
};
#define OPTIONS (&options[0].o)
#else
static const px_option options[] = {
    {"first", PX_OPT_STRING, 0, "one", "the first option"},
    {"second", PX_OPT_INT, 0, "2", "the second option"},
    {NULL, 0, 0, NULL, NULL},
};
#define OPTIONS options
#endif

static int fx_init(px_plugin_ctx *ctx, const json_t *config, void **state)
{
    *state = ctx;
#if FIXTURE == NEEDS_CAS
    int64_t version = 0;
    json_t *v = json_true();
    int rc = host->kv_cas(ctx, "started", 0, v, &version);
    json_decref(v);
    return rc == PX_OK || rc == PX_ECONFLICT ? 0 : rc;
#elif FIXTURE == SET_ERROR
    host->set_error(ctx, "option first must name a known account, not \"%s\"",
                    json_string_value(json_object_get(config, "first")));
    return PX_EINVAL;
#else
    (void)config;
    return FIXTURE == INIT_FAILS ? PX_EINVAL : 0;
#endif
}

/* SET_ERROR's check refuses first = "bad" with set_error; others have none. */
static int fx_check(px_plugin_ctx *ctx, const json_t *config)
{
    const char *first = json_string_value(json_object_get(config, "first"));
    if (first && strcmp(first, "bad") == 0) {
        host->set_error(ctx, "option first: \"%s\" names no account (instance %s)", first,
                        host->instance_name(ctx));
        return PX_EINVAL;
    }
    return 0;
}

/* Completes every delivery, saying which ABI the plugin was built as and how it read the
 * payload. */
static void fx_deliver(void *state, px_delivery *d)
{
    (void)state;
    const px_event *ev = host->delivery_event(d);
    char reason[256];
#if FIXTURE == AS_1_1
    size_t len = 0;
    const char *text = PX_HAS(px_host_api, host, event_payload_text)
                           ? host->event_payload_text(ev, &len)
                           : "";
    snprintf(reason, sizeof(reason), "abi=%u.%u text=%.*s", desc.abi_major, desc.abi_minor,
             (int)len, text);
#else
    char *text = json_dumps(host->event_payload(ev), JSON_COMPACT | JSON_SORT_KEYS);
    snprintf(reason, sizeof(reason), "abi=%u.%u payload=%s", desc.abi_major, desc.abi_minor,
             text ? text : "");
    free(text);
#endif
    host->complete(d, PX_OK, reason, 0);
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
    .options = OPTIONS,
    .init = FIXTURE == NO_INIT ? NULL : fx_init,
    .deliver = fx_deliver,
    .destroy = FIXTURE == NO_DESTROY ? NULL : fx_destroy,
    .check = FIXTURE == SET_ERROR ? fx_check : NULL,
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
    host = h;
#if FIXTURE == WRONG_MAJOR_FIELD
    desc.abi_major = 2;
#elif FIXTURE == NEWER_MINOR
    desc.abi_minor = PX_SDK_ABI_MINOR + 1;
#elif FIXTURE == SMALL_STRUCT
    desc.size = 24;
#elif FIXTURE == BAD_JANSSON
    desc.jansson_major = JANSSON_MAJOR_VERSION + 1;
#elif FIXTURE == AS_1_0 || FIXTURE == AS_1_1
    /* The descriptor those minors had: it ends at import_state. What lies beyond in this
     * struct is garbage the host must not read. */
    desc.abi_minor = FIXTURE == AS_1_0 ? 0 : 1;
    desc.size = PX_PLUGIN_DESC_V1_0_SIZE;
    desc.option_size = 3;
#elif FIXTURE == BIG_OPTIONS
    desc.option_size = sizeof(later_option);
#elif FIXTURE == BAD_OPTION_SIZE
    desc.option_size = 3;
#endif
    return &desc;
}
#endif
