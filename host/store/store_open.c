/* Opening the store a configuration names (see store_open.h). */
#include "store_open.h"

#include "config.h"

int px_store_open_config(uv_loop_t *loop, const px_config *cfg, px_store **out, char *err,
                         size_t errlen)
{
    px_store_options so = {.durability = cfg->durability,
                           .dedupe_window_ms = cfg->dedupe_window_ms,
                           .compress = cfg->spool_compress,
                           .host_id = cfg->host_id,
                           .version = PX_VERSION,
                           .config_hash = cfg->hash,
                           .lease_ms = (uint32_t)cfg->store_lease_ms};
    if (cfg->store_type == PX_STORE_POSTGRES) {
        return px_store_open_pg(loop, cfg->store_url, &so, out, err, errlen);
    }
    return px_store_open_sqlite(loop, cfg->data_dir, &so, out, err, errlen);
}
