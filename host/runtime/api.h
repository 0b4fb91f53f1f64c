/* The px_host_api table handed to plugins: its functions find the runtime through the
 * px_plugin_ctx they are given (a delivery, through its handle). */
#ifndef PX_API_H
#define PX_API_H

#include <plexus/sdk.h>

/* Fills the SDK table. */
void px_api_init(px_host_api *api);

#endif
