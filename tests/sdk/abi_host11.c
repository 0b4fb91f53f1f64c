/* A host of the next plugin ABI minor, simulated: this file and the host's loader are compiled
 * by test_sdk.py against a copy of the SDK header with one field appended to px_host_api
 * (later_fn) and one to px_plugin_desc (later_cb), PX_SDK_ABI_MINOR one up. For each plugin file on
 * the command line it prints one JSON line: whether the loader accepted it, its refusal, and
 * whether the plugin's descriptor is large enough to hold later_cb (PX_HAS) — the host reads
 * that field only then. With --init it also runs init, so a plugin can call later_fn. */
#include "loader.c"

#include <stdio.h>

static int later_calls;

static void h_log(px_plugin_ctx *ctx, int level, const char *fmt, ...)
{
    (void)ctx, (void)level, (void)fmt;
}

static int h_later(px_plugin_ctx *ctx, int x)
{
    (void)ctx;
    later_calls++;
    return x + 1;
}

int main(int argc, char **argv)
{
    px_host_api api;
    memset(&api, 0, sizeof(api));
    api.abi_major = PX_SDK_ABI_MAJOR;
    api.abi_minor = PX_SDK_ABI_MINOR;
    api.size = sizeof(api);
    api.log = h_log;
    api.later_fn = h_later;
    int init = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--init") == 0) {
            init = 1;
            continue;
        }
        char err[512] = "";
        px_plugin_lib *lib = NULL;
        int rc = px_loader_open(argv[i], NULL, &api, PX_TRUST_STRICT, &lib, err, sizeof(err));
        json_t *line = json_pack("{s:s,s:b,s:s}", "file", argv[i], "loaded", rc == 0, "error",
                                 err);
        if (rc == 0) {
            const px_plugin_desc *d = lib->desc;
            int has = PX_HAS(px_plugin_desc, d, later_cb);
            json_object_set_new(line, "abi", json_sprintf("%u.%u", d->abi_major, d->abi_minor));
            json_object_set_new(line, "desc_size", json_integer(d->size));
            json_object_set_new(line, "has_later_cb", json_boolean(has));
            if (has && d->later_cb) {
                json_object_set_new(line, "later_cb", json_integer(d->later_cb(NULL)));
            }
            if (init) {
                void *state = NULL;
                json_t *cfg = json_object();
                later_calls = 0;
                if (d->init(NULL, cfg, &state) == 0) {
                    d->destroy(state);
                }
                json_decref(cfg);
                json_object_set_new(line, "later_fn_calls", json_integer(later_calls));
            }
            px_loader_close(lib);
        }
        char *text = json_dumps(line, JSON_COMPACT);
        printf("%s\n", text);
        free(text);
        json_decref(line);
    }
    printf("host ABI %d.%d, px_host_api %zu bytes, px_plugin_desc %zu bytes\n",
           PX_SDK_ABI_MAJOR, PX_SDK_ABI_MINOR, sizeof(px_host_api), sizeof(px_plugin_desc));
    return 0;
}
