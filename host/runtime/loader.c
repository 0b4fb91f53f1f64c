/* dlopen + ABI checks (see loader.h). */
#include "loader.h"

#include <dirent.h>
#include <errno.h>
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "mem.h"

#define BUILTIN_PREFIX "builtin:"
#define BUILTINS_MAX 4

static struct builtin {
    char *name;
    const px_plugin_desc *(*entry)(const px_host_api *);
} builtins[BUILTINS_MAX];

int px_loader_add_builtin(const char *name, const px_plugin_desc *(*entry)(const px_host_api *))
{
    for (size_t i = 0; i < BUILTINS_MAX; i++) {
        if (builtins[i].name && strcmp(builtins[i].name, name) == 0) {
            builtins[i].entry = entry;
            return 0;
        }
        if (!builtins[i].name) {
            builtins[i].name = px_xstrdup(name);
            builtins[i].entry = entry;
            return 0;
        }
    }
    return PX_ESTATE;
}

int px_loader_is_builtin(const char *file)
{
    return strncmp(file, BUILTIN_PREFIX, strlen(BUILTIN_PREFIX)) == 0;
}

static const struct builtin *builtin_named(const char *name)
{
    for (size_t i = 0; i < BUILTINS_MAX && builtins[i].name; i++) {
        if (strcmp(builtins[i].name, name) == 0) {
            return &builtins[i];
        }
    }
    return NULL;
}

/* An in-process plugin: its descriptor, no library. */
static int read_options(const char *file, const px_plugin_desc *d, px_option **out, char *err,
                        size_t errlen);

static int open_builtin(const char *file, const px_host_api *api, px_plugin_lib **out, char *err,
                        size_t errlen)
{
    const struct builtin *b = builtin_named(file + strlen(BUILTIN_PREFIX));
    const px_plugin_desc *desc = b ? b->entry(api) : NULL;
    if (!desc) {
        snprintf(err, errlen, "plugin %s: no such in-process plugin", file);
        return PX_EPLUGIN;
    }
    px_option *options = NULL;
    int rc = read_options(file, desc, &options, err, errlen);
    if (rc < 0) {
        return rc;
    }
    px_plugin_lib *lib = px_xcalloc(1, sizeof(*lib));
    lib->path = px_xstrdup(file);
    lib->desc = desc;
    lib->options = options;
    *out = lib;
    if (errlen) {
        err[0] = '\0';
    }
    return 0;
}

int px_loader_find(char *const *path, size_t n, const char *name, char **out)
{
    if (builtin_named(name)) {
        *out = px_xasprintf("%s%s", BUILTIN_PREFIX, name);
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        char *file = px_xasprintf("%s/%s.so", path[i], name);
        if (access(file, R_OK) == 0) {
            *out = file;
            return 0;
        }
        free(file);
    }
    return PX_ENOTFOUND;
}

static char *base_name_of(const char *file)
{
    const char *b = strrchr(file, '/');
    b = b ? b + 1 : file;
    size_t len = strlen(b);
    if (len > 3 && strcmp(b + len - 3, ".so") == 0) {
        len -= 3;
    }
    return px_xstrndup(b, len);
}

typedef const px_plugin_desc *(*entry_fn)(const px_host_api *);

/* A group write bit is harmless when the group is the owner's private one: the owner's primary
 * group, with no other member listed (user private groups, umask 002). */
static int group_is_owners_own(const struct stat *st)
{
    struct passwd pwbuf, *pw = NULL;
    struct group grbuf, *gr = NULL;
    char pwtext[4096], grtext[16384];
    if (getpwuid_r(st->st_uid, &pwbuf, pwtext, sizeof(pwtext), &pw) != 0 || !pw ||
        pw->pw_gid != st->st_gid) {
        return 0;
    }
    if (getgrgid_r(st->st_gid, &grbuf, grtext, sizeof(grtext), &gr) != 0 || !gr) {
        return 0;
    }
    for (char **m = gr->gr_mem; m && *m; m++) {
        if (strcmp(*m, pw->pw_name) != 0) {
            return 0;
        }
    }
    return 1;
}

/* One rule for files and folders: owned by root or us, writable by nobody else. `what` is "plugin"
 * or "plugin folder". */
static int judge(const char *what, const char *path, const struct stat *st, char *err,
                 size_t errlen)
{
    uid_t me = geteuid();
    if (st->st_uid != 0 && st->st_uid != me) {
        snprintf(err, errlen, "%s %s: refused: owned by uid %u, not by root or the user running "
                 "plexus (uid %u), who could change the code it runs; fix: chown %u %s (or set "
                 "host.plugin_trust: permissive while developing)", what, path,
                 (unsigned)st->st_uid, (unsigned)me, (unsigned)me, path);
        return PX_EPLUGIN;
    }
    const char *who = (st->st_mode & S_IWOTH) ? "everyone"
                      : ((st->st_mode & S_IWGRP) && !group_is_owners_own(st)) ? "its group"
                                                                                 : NULL;
    if (who) {
        snprintf(err, errlen, "%s %s: refused: writable by %s (mode %04o), who could change the "
                 "code plexus runs; fix: chmod go-w %s (or set host.plugin_trust: permissive while "
                 "developing)", what, path, who, (unsigned)(st->st_mode & 07777), path);
        return PX_EPLUGIN;
    }
    return 0;
}

static int judge_folder_of(const char *file, char *err, size_t errlen)
{
    const char *slash = strrchr(file, '/');
    char *dir = slash == file ? px_xstrdup("/")
                : slash       ? px_xstrndup(file, (size_t)(slash - file))
                              : px_xstrdup(".");
    struct stat st;
    int rc;
    if (stat(dir, &st) != 0) {
        snprintf(err, errlen, "plugin folder %s: cannot check: %s", dir, strerror(errno));
        rc = PX_EPLUGIN;
    } else {
        rc = judge("plugin folder", dir, &st, err, errlen);
    }
    free(dir);
    return rc;
}

int px_loader_check_trust(const char *file, int fd, char *err, size_t errlen)
{
    struct stat st;
    if ((fd >= 0 ? fstat(fd, &st) : stat(file, &st)) != 0) {
        snprintf(err, errlen, "plugin %s: cannot check: %s", file, strerror(errno));
        return PX_EPLUGIN;
    }
    int rc = judge("plugin", file, &st, err, errlen);
    if (rc == 0) {
        /* Whoever may write the folder may put another file under the same name. */
        rc = judge_folder_of(file, err, errlen);
    }
    struct stat lst;
    if (rc == 0 && lstat(file, &lst) == 0 && S_ISLNK(lst.st_mode)) {
        char *real = realpath(file, NULL);
        if (real) {
            rc = judge_folder_of(real, err, errlen);
            free(real);
        }
    }
    return rc;
}

/* A file still being written can be dlopen-able already (its loadable segments come first), so
 * check that it holds everything its ELF header announces before loading it. */
static int check_complete_elf(const char *file, char *err, size_t errlen)
{
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "plugin %s: cannot open: %s", file, strerror(errno));
        return PX_EPLUGIN;
    }
    struct stat st;
    Elf64_Ehdr eh;
    int ok = fstat(fd, &st) == 0 && read(fd, &eh, sizeof(eh)) == (ssize_t)sizeof(eh);
    close(fd);
    if (!ok || memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0) {
        snprintf(err, errlen, "plugin %s: cannot load: not an ELF shared object", file);
        return PX_EPLUGIN;
    }
    if (eh.e_ident[EI_CLASS] != ELFCLASS64) {
        return 0; /* let dlopen judge other classes */
    }
    uint64_t need = eh.e_shoff + (uint64_t)eh.e_shentsize * eh.e_shnum;
    uint64_t ph_end = eh.e_phoff + (uint64_t)eh.e_phentsize * eh.e_phnum;
    if (ph_end > need) {
        need = ph_end;
    }
    if ((uint64_t)st.st_size < need) {
        snprintf(err, errlen, "plugin %s: cannot load: file is incomplete (%lld of %llu bytes; "
                 "still being written?)", file, (long long)st.st_size, (unsigned long long)need);
        return PX_EPLUGIN;
    }
    return 0;
}

/* The plugin's option table, walked by its option_size (1.2; the 1.0 px_option before), copied
 * into this host's px_option: fields the plugin's struct lacks are zero, fields this host does
 * not know are left out. */
static int read_options(const char *file, const px_plugin_desc *d, px_option **out, char *err,
                        size_t errlen)
{
    size_t stride = PX_OPTION_V1_0_SIZE;
    if (PX_HAS(px_plugin_desc, d, option_size) && d->option_size) {
        stride = d->option_size;
    }
    if (stride < PX_OPTION_V1_0_SIZE || stride % sizeof(void *) != 0) {
        snprintf(err, errlen, "plugin %s: option_size is %zu bytes, ABI %u.%u needs a multiple "
                 "of %zu of at least %zu (ABI %d.%d host)", file, stride, d->abi_major,
                 d->abi_minor, sizeof(void *), (size_t)PX_OPTION_V1_0_SIZE, PX_SDK_ABI_MAJOR,
                 PX_SDK_ABI_MINOR);
        return PX_EABI;
    }
    const char *base = (const char *)d->options;
    size_t n = 0;
    while (base && ((const px_option *)(const void *)(base + n * stride))->name) {
        n++;
    }
    px_option *opts = px_xcalloc(n + 1, sizeof(*opts));
    size_t copy = stride < sizeof(px_option) ? stride : sizeof(px_option);
    for (size_t i = 0; i < n; i++) {
        memcpy(&opts[i], base + i * stride, copy);
    }
    *out = opts;
    return 0;
}

int px_loader_open(const char *file, const char *expected_name, const px_host_api *api, int trust,
                   px_plugin_lib **out, char *err, size_t errlen)
{
    if (px_loader_is_builtin(file)) {
        return open_builtin(file, api, out, err, errlen);
    }
    int rc = PX_EABI;
    /* The host's ABI is the table it hands out: a host may speak an older minor than this
     * header's (tests simulate one). */
    int host_minor = api ? (int)api->abi_minor : PX_SDK_ABI_MINOR;
    char *want = expected_name ? px_xstrdup(expected_name) : base_name_of(file);
    void *dl = NULL;
    char warning[512] = "";
    rc = px_loader_check_trust(file, -1, err, errlen);
    if (rc < 0 && trust != PX_TRUST_PERMISSIVE) {
        goto fail;
    }
    if (rc < 0) {
        snprintf(warning, sizeof(warning), "warning: %s", err);
    }
    rc = check_complete_elf(file, err, errlen);
    if (rc < 0) {
        goto fail;
    }
    rc = PX_EABI;
    dl = dlopen(file, RTLD_NOW | RTLD_LOCAL);
    if (!dl) {
        snprintf(err, errlen, "plugin %s: cannot load: %s", file, dlerror());
        rc = PX_EPLUGIN;
        goto fail;
    }
    /* The entry symbol carries the ABI major: a plugin built for another major has a different
     * symbol, so look for any px_plugin_entry_vN to name its version in the refusal. */
    void *sym = dlsym(dl, PX_PLUGIN_ENTRY_NAME);
    if (!sym) {
        for (int major = 0; major < 16; major++) {
            char name[32];
            snprintf(name, sizeof(name), "px_plugin_entry_v%d", major);
            if (major != PX_SDK_ABI_MAJOR && dlsym(dl, name)) {
                snprintf(err, errlen,
                         "plugin %s: built for plugin ABI %d.x, this host speaks ABI %d.%d", file,
                         major, PX_SDK_ABI_MAJOR, host_minor);
                goto fail;
            }
        }
        snprintf(err, errlen, "plugin %s: no entry symbol %s (not a Plexus plugin, or built for "
                 "another ABI; host ABI %d.%d)", file, PX_PLUGIN_ENTRY_NAME, PX_SDK_ABI_MAJOR,
                 host_minor);
        goto fail;
    }
    entry_fn entry;
    memcpy(&entry, &sym, sizeof(entry));
    const px_plugin_desc *d = entry(api);
    if (!d) {
        snprintf(err, errlen, "plugin %s: entry returned no descriptor", file);
        rc = PX_EPLUGIN;
        goto fail;
    }
    if (d->abi_major != PX_SDK_ABI_MAJOR) {
        snprintf(err, errlen, "plugin %s: built for plugin ABI %u.%u, this host speaks ABI %d.%d",
                 file, d->abi_major, d->abi_minor, PX_SDK_ABI_MAJOR, host_minor);
        goto fail;
    }
    if ((int)d->abi_minor > host_minor) {
        snprintf(err, errlen,
                 "plugin %s: built for plugin ABI %u.%u, newer than this host's ABI %d.%d; "
                 "upgrade the host", file, d->abi_major, d->abi_minor, PX_SDK_ABI_MAJOR,
                 host_minor);
        goto fail;
    }
    if (d->size < PX_PLUGIN_DESC_V1_0_SIZE) {
        snprintf(err, errlen,
                 "plugin %s: descriptor is %u bytes, ABI %u.%u needs at least %zu (ABI %d.%d host)",
                 file, d->size, d->abi_major, d->abi_minor, (size_t)PX_PLUGIN_DESC_V1_0_SIZE,
                 PX_SDK_ABI_MAJOR, host_minor);
        goto fail;
    }
    if (d->jansson_major != JANSSON_MAJOR_VERSION) {
        snprintf(err, errlen, "plugin %s: built with jansson %u.x, this host uses jansson %d.x "
                 "(plugin ABI %u.%u, host %d.%d)", file, d->jansson_major, JANSSON_MAJOR_VERSION,
                 d->abi_major, d->abi_minor, PX_SDK_ABI_MAJOR, host_minor);
        goto fail;
    }
    if (!d->name || strcmp(d->name, want) != 0) {
        snprintf(err, errlen, "plugin %s: descriptor names itself \"%s\", expected \"%s\" "
                 "(the file name must match; plugin ABI %u.%u)", file, d->name ? d->name : "",
                 want, d->abi_major, d->abi_minor);
        rc = PX_EPLUGIN;
        goto fail;
    }
    const char *missing = !(d->kind & (PX_KIND_SOURCE | PX_KIND_SINK)) ? NULL
                          : !d->init                                      ? "init"
                          : !d->destroy                                   ? "destroy"
                          : (d->kind & PX_KIND_SINK) && !d->deliver       ? "deliver"
                                                                          : "";
    if (!missing) {
        snprintf(err, errlen, "plugin %s: descriptor declares no role (kind must have "
                 "PX_KIND_SOURCE or PX_KIND_SINK; plugin ABI %u.%u)", file, d->abi_major,
                 d->abi_minor);
        rc = PX_EPLUGIN;
        goto fail;
    }
    if (*missing) {
        snprintf(err, errlen, "plugin %s: descriptor lacks the mandatory callback %s (%s; "
                 "plugin ABI %u.%u)", file, missing,
                 strcmp(missing, "deliver") == 0 ? "a sink must have deliver"
                                                 : "every plugin must have init and destroy",
                 d->abi_major, d->abi_minor);
        rc = PX_EPLUGIN;
        goto fail;
    }
    px_option *options = NULL;
    rc = read_options(file, d, &options, err, errlen);
    if (rc < 0) {
        goto fail;
    }
    px_plugin_lib *lib = px_xcalloc(1, sizeof(*lib));
    lib->path = px_xstrdup(file);
    lib->dl = dl;
    lib->desc = d;
    lib->options = options;
    *out = lib;
    snprintf(err, errlen, "%s", warning);
    free(want);
    return 0;

fail:
    if (dl) {
        dlclose(dl);
    }
    free(want);
    return rc;
}

void px_loader_close(px_plugin_lib *lib)
{
    if (!lib) {
        return;
    }
    if (lib->dl) {
        dlclose(lib->dl);
    }
    free(lib->options);
    free(lib->path);
    free(lib);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void px_loader_scan(char *const *path, size_t n, const px_host_api *api, int trust,
                    void (*cb)(const char *file, const px_plugin_lib *lib, const char *err,
                               void *arg),
                    void *arg)
{
    for (size_t i = 0; i < n; i++) {
        DIR *dir = opendir(path[i]);
        if (!dir) {
            continue;
        }
        char **files = NULL;
        size_t nfiles = 0;
        struct dirent *de;
        while ((de = readdir(dir)) != NULL) {
            size_t len = strlen(de->d_name);
            if (len > 3 && strcmp(de->d_name + len - 3, ".so") == 0) {
                files = px_xrealloc(files, (nfiles + 1) * sizeof(*files));
                files[nfiles++] = px_xasprintf("%s/%s", path[i], de->d_name);
            }
        }
        closedir(dir);
        qsort(files, nfiles, sizeof(*files), cmp_str);
        for (size_t f = 0; f < nfiles; f++) {
            char err[512];
            px_plugin_lib *lib = NULL;
            if (px_loader_open(files[f], NULL, api, trust, &lib, err, sizeof(err)) == 0) {
                cb(files[f], lib, err, arg);
                px_loader_close(lib);
            } else {
                cb(files[f], NULL, err, arg);
            }
            free(files[f]);
        }
        free(files);
    }
}
