// Compiled by test_sdk.py with g++ -std=c++11 -Wall -Wextra -pedantic -Werror, then linked as a
// plugin and loaded by the host: the header works from C++ (extern "C" linkage of the entry).
#include <plexus/sdk.h>

namespace {

const px_host_api *host;

int cxx_init(px_plugin_ctx *ctx, const json_t *, void **state)
{
    *state = ctx;
    return PX_OK;
}

void cxx_deliver(void *, px_delivery *d)
{
    host->complete(d, PX_OK, "from c++", 0);
}

void cxx_destroy(void *) {}

px_plugin_desc make_desc()
{
    px_plugin_desc d = px_plugin_desc(); // zeroed; C++11 has no designated initializers
    d.abi_major = PX_SDK_ABI_MAJOR;
    d.abi_minor = PX_SDK_ABI_MINOR;
    d.size = sizeof(px_plugin_desc);
    d.jansson_major = JANSSON_MAJOR_VERSION;
    d.kind = PX_KIND_SINK;
    d.name = "header_cxx";
    d.version = "1.0.0";
    d.description = "C++ plugin";
    d.init = cxx_init;
    d.deliver = cxx_deliver;
    d.destroy = cxx_destroy;
    return d;
}

px_plugin_desc desc = make_desc();

} // namespace

PX_SDK_EXPORT const px_plugin_desc *PX_PLUGIN_ENTRY(const px_host_api *h)
{
    host = h;
    return PX_HAS(px_host_api, h, drained) ? &desc : nullptr;
}
