/* Checks of plugin instances against their plugins, without running them. */
#ifndef PX_PLUGIN_CHECK_H
#define PX_PLUGIN_CHECK_H

#include <stddef.h>

#include <jansson.h>
#include <plexus/sdk.h>

#include "config.h"

/* Finds instance ic's plugin on cfg's plugin path, checks its ABI and validates its options
 * without keeping it loaded. On success stores the file (owned; free) and the validated options
 * (new reference). Also reports what a bundled plugin is known to need and would only find out in
 * its init (routes without host.http.listen, a file in a missing or read-only directory), at the
 * option's position. Used by start-up, reload and `plexus check`. */
int px_plugin_check_instance(const px_config *cfg, const px_instance_conf *ic,
                             const px_host_api *api, char **file_out, json_t **opts_out,
                             char *err, size_t errlen);

/* Checks that every pipeline's `from` is a source and every target a sink, by the roles their
 * plugins declare. Returns 0 or PX_ECONFIG with "file:line:column: message" in err. */
int px_plugin_check_roles(const px_config *cfg, const px_host_api *api, char *err, size_t errlen);

#endif
