/* Plugin loader: finds <name>.so on the plugin path, dlopens it (RTLD_NOW | RTLD_LOCAL), calls the
 * entry symbol and checks the descriptor before anything else in the plugin runs. Every refusal is one
 * line naming the file and the versions involved; nothing a plugin returns is trusted before the
 * checks pass. Loop thread only (dlopen runs constructors). */
#ifndef PX_LOADER_H
#define PX_LOADER_H

#include <stddef.h>

#include <plexus/sdk.h>

typedef struct px_plugin_lib {
    char *path;                 /* file that was dlopened (owned) */
    void *dl;                   /* dlopen handle (owned) */
    const px_plugin_desc *desc; /* borrowed from the library: valid until px_loader_close */
} px_plugin_lib;

/* Looks for "<name>.so" in each directory of path[0..n). On success returns 0 and stores a new
 * string in *out (owned by caller; free). Returns PX_ENOTFOUND otherwise. */
int px_loader_find(char *const *path, size_t n, const char *name, char **out);

/* Loads `file` (borrowed) and checks it: entry symbol present, ABI major equal, descriptor size at
 * least the 1.0 size, minor not newer than the host's, jansson major equal, name equal to
 * `expected_name` (NULL = the file's base name without ".so"), mandatory callbacks present
 * (init, destroy; deliver for sinks). On success returns 0 and stores *out (owned by caller;
 * px_loader_close). On refusal returns PX_EABI or PX_EPLUGIN with one line in err. */
int px_loader_open(const char *file, const char *expected_name, const px_host_api *api,
                   px_plugin_lib **out, char *err, size_t errlen);

/* dlcloses and frees lib. NULL is a no-op. */
void px_loader_close(px_plugin_lib *lib);

/* Lists plugins found on the path: calls cb for each loadable file (lib borrowed for the call) or
 * with lib NULL and err set for a refused one. */
void px_loader_scan(char *const *path, size_t n, const px_host_api *api,
                    void (*cb)(const char *file, const px_plugin_lib *lib, const char *err,
                               void *arg),
                    void *arg);

#endif
