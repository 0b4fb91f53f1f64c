/* The constant-time compare the bundled plugins used to share from here now lives in pxutil
 * (util/consttime.h, px_ct_streq), one copy for the host and the plugins. */
#ifndef PX_PLUGINS_COMMON_H
#define PX_PLUGINS_COMMON_H

#include "consttime.h"

/* Former name of px_ct_streq, for the plugins that still call it so; to be removed with them. */
#define px_common_consttime_eq(a, b) px_ct_streq((a), (b))

#endif
