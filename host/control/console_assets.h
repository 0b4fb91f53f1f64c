/* The web console's files (web/), compiled into the host by web/embed.py: served by the admin
 * listener without a token, since they hold no data; every call they make needs one. */
#ifndef PX_CONSOLE_ASSETS_H
#define PX_CONSOLE_ASSETS_H

#include <stddef.h>

typedef struct px_console_asset {
    const char *path;          /* "/" or "/console/NAME" */
    const char *type;          /* Content-Type */
    const unsigned char *data; /* len bytes (a NUL follows them) */
    size_t len;
} px_console_asset;

/* Ended by an entry whose path is NULL. */
extern const px_console_asset px_console_assets[];

#endif
