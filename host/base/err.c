/* Error code messages. */
#include "err.h"

#include <uv.h>

const char *px_strerror(int err)
{
    switch (err) {
    case PX_OK: return "ok";
    case PX_ERETRY: return "retry later";
    case PX_EREJECT: return "rejected";
    case PX_EINVAL: return "invalid argument";
    case PX_EBUSY: return "busy, try again later";
    case PX_ESTATE: return "not allowed in this state";
    case PX_ENOENT: return "no such entry";
#define XX(code, val, msg) case PX_##code: return msg;
    PX_ERRNO_MAP(XX)
#undef XX
    default: return uv_strerror(err);
    }
}
