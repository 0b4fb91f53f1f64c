/* Error codes of the host. 0 is success, < 0 an error: libuv's negative errno values pass through
 * unchanged; the project's own codes start at -5000 (the SDK's PX_E* results live in that range
 * too, see <plexus/sdk.h>). */
#ifndef PX_ERR_H
#define PX_ERR_H

#include <plexus/sdk.h>

#define PX_ERRNO_MAP(XX)                                                                      \
    XX(ECONFIG, -5100, "invalid configuration")                                                \
    XX(EABI, -5101, "plugin ABI mismatch")                                                     \
    XX(EPLUGIN, -5102, "plugin failed")                                                        \
    XX(EHTTP, -5103, "HTTP error")                                                             \
    XX(ESPOOL, -5104, "spool error")                                                           \
    XX(ENOTFOUND, -5105, "not found")

enum {
#define XX(code, val, msg) PX_##code = val,
    PX_ERRNO_MAP(XX)
#undef XX
};

/* Message for any PX_E*, SDK result or libuv error code; static storage. */
const char *px_strerror(int err);

#endif
