/* The store a configuration names: `host.store.type` picks the backend (SQLite in data_dir by
 * default, PostgreSQL at host.store.url), opened with the host's durability, dedupe window, id,
 * version, configuration hash and lease. */
#ifndef PX_STORE_OPEN_H
#define PX_STORE_OPEN_H

#include <stddef.h>

#include <uv.h>

#include "config.h"
#include "store.h"

/* Opens it on loop; cfg borrowed for the call. Returns 0 and the store in *out (owned by caller;
 * px_store_close), or < 0 with a one-line message in err (never holding the URL's password). */
int px_store_open_config(uv_loop_t *loop, const px_config *cfg, px_store **out, char *err,
                         size_t errlen);

#endif
