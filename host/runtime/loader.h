/* Plugin loader: finds <name>.so on the plugin path, dlopens it (RTLD_NOW | RTLD_LOCAL), calls the
 * entry symbol and checks the descriptor before anything else in the plugin runs. Every refusal is one
 * line naming the file and the versions involved; nothing a plugin returns is trusted before the
 * checks pass. Before any dlopen the file and its folder must be trusted, as sudo and OpenSSH
 * judge their files: owned by root or the running user and writable by nobody else, since
 * dlopen runs the file's constructors with the host's rights. Loop thread only. */
#ifndef PX_LOADER_H
#define PX_LOADER_H

#include <stddef.h>

#include <plexus/sdk.h>

/* What an untrusted plugin file gets (host.plugin_trust). */
enum px_plugin_trust {
    PX_TRUST_STRICT = 0,     /* refused (the default) */
    PX_TRUST_PERMISSIVE = 1, /* loaded, with a warning: for development only */
};

typedef struct px_plugin_lib {
    char *path;                 /* file that was dlopened (owned) */
    void *dl;                   /* dlopen handle (owned) */
    const px_plugin_desc *desc; /* borrowed from the library: valid until px_loader_close */
    px_option *options;         /* desc->options read by its option_size into this host's
                                   px_option, { NULL }-terminated (owned; the strings are the
                                   library's); what the host reads instead of desc->options */
} px_plugin_lib;

/* In-process plugins, for a host that puts plugins of its own at its edges (the test kit's source
 * of deliveries and collector of emits): `entry` (static storage) is found under `name`
 * (borrowed, copied) before the plugin path, as the file "builtin:NAME", and opened without a
 * file: no dlopen, no trust or ELF check, no private copy. Returns 0, or PX_ESTATE when the table
 * (4 entries) is full. Loop thread; before any load. */
int px_loader_add_builtin(const char *name, const px_plugin_desc *(*entry)(const px_host_api *));
/* 1 when `file` names an in-process plugin ("builtin:NAME"), else 0. */
int px_loader_is_builtin(const char *file);

/* Looks for "<name>.so" in each directory of path[0..n). On success returns 0 and stores a new
 * string in *out (owned by caller; free). Returns PX_ENOTFOUND otherwise. */
int px_loader_find(char *const *path, size_t n, const char *name, char **out);

/* Judges plugin `file` (borrowed) and its folder (and, for a symlink, the folder of its target):
 * each must be owned by root or the running user and not writable by group or others; a file or
 * folder writable by its group passes when that group is the owner's own private group (no other
 * member), as Debian's OpenSSH allows. When fd >= 0 the file is judged by fstat(fd), the bytes
 * about to be read. Returns 0 when trusted, else PX_EPLUGIN with one line in err naming the file
 * or folder, what is wrong and the fix. Logs nothing; any thread. */
int px_loader_check_trust(const char *file, int fd, char *err, size_t errlen);

/* Loads `file` (borrowed) and checks it: trusted (px_loader_check_trust; with `trust`
 * PX_TRUST_PERMISSIVE an untrusted file is loaded and the refusal is left in err as a warning
 * starting "warning: ", else err is empty on success), entry symbol present, ABI major equal,
 * descriptor size at least the 1.0 size, minor not newer than the host's, jansson major equal,
 * name equal to `expected_name` (NULL = the file's base name without ".so"), mandatory callbacks
 * present (init, destroy; deliver for sinks; the refusal names the one missing), options
 * readable (option_size, 1.2, at least the 1.0 px_option). On success returns 0 and stores *out (owned by
 * caller; px_loader_close). On refusal returns PX_EABI or PX_EPLUGIN with one line in err. */
int px_loader_open(const char *file, const char *expected_name, const px_host_api *api, int trust,
                   px_plugin_lib **out, char *err, size_t errlen);

/* dlcloses and frees lib. NULL is a no-op. */
void px_loader_close(px_plugin_lib *lib);

/* Lists plugins found on the path: calls cb for each loadable file (lib borrowed for the call; err
 * a warning or "") or with lib NULL and err set for a refused one. Untrusted files are judged by
 * `trust` as in px_loader_open, before anything of them runs. */
void px_loader_scan(char *const *path, size_t n, const px_host_api *api, int trust,
                    void (*cb)(const char *file, const px_plugin_lib *lib, const char *err,
                               void *arg),
                    void *arg);

#endif
