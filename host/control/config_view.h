/* The configuration in force as the admin API shows it (GET /admin/config): host keys, plugin
 * instances with their validated options, and pipelines, with every secret masked. */
#ifndef PX_CONFIG_VIEW_H
#define PX_CONFIG_VIEW_H

#include <jansson.h>

typedef struct px_runtime px_runtime;

/* The effective configuration of rt (borrowed) as JSON (new reference): the values of options
 * the plugin declares PX_OPT_SECRET, the admin token and the store URL's password become "***",
 * and every string is masked like a log line (log.h) besides. {} when rt has no configuration. */
json_t *px_config_view_json(const px_runtime *rt);

#endif
