/* Checks of plugin instances against their plugins, without running them: used by start-up,
 * reload and `plexus check`. */
#include "plugin_check.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "instance.h"
#include "loader.h"
#include "log.h"
#include "mem.h"

/* --- what bundled plugins need, known without running them ------------------------------- */

enum { NEEDS_ROUTES = 1, NEEDS_WRITABLE_FILE = 2 };

/* What a bundled plugin will ask of the host or the machine in its init, so that check (which
 * starts nothing) reports it at the configuration's line rather than init's "invalid argument"
 * at run. Keyed by the plugin's declared name; `option` NULL means always, else only when that
 * option is a non-empty string (and it names the file). Other plugins are not second-guessed:
 * their init says what is wrong, and the host carries its reason into the error. */
static const struct known_need {
    const char *plugin, *option;
    int need;
} known_needs[] = {
    {"webhook", NULL, NEEDS_ROUTES},
    {"amocrm", NULL, NEEDS_ROUTES},
    {"ploomes", "validation_key", NEEDS_ROUTES},
    {"notification", "http_path", NEEDS_ROUTES},
    {"file", "path", NEEDS_WRITABLE_FILE},
};

/* Whether two directory names are the same directory as written ("./var/" and "var" are). */
static int same_dir(const char *a, const char *b)
{
    while (strncmp(a, "./", 2) == 0) {
        a += 2;
    }
    while (strncmp(b, "./", 2) == 0) {
        b += 2;
    }
    size_t la = strlen(a), lb = strlen(b);
    while (la > 1 && a[la - 1] == '/') {
        la--;
    }
    while (lb > 1 && b[lb - 1] == '/') {
        lb--;
    }
    return la == lb && strncmp(a, b, la) == 0;
}

/* A file to append to (created if missing): its directory must exist and take new files, as the
 * user running this; the data directory counts as existing, the host creates it before any init.
 * On failure writes why into why. */
static int file_writable(const px_config *cfg, const char *path, char *why, size_t len)
{
    struct stat st;
    if (stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode)) {
            snprintf(why, len, "%s is a directory", path);
            return -1;
        }
        if (access(path, W_OK) != 0) {
            snprintf(why, len, "%s is not writable: %s", path, strerror(errno));
            return -1;
        }
        return 0;
    }
    const char *slash = strrchr(path, '/');
    char *dir = slash == path ? px_xstrdup("/")
                : slash       ? px_xasprintf("%.*s", (int)(slash - path), path)
                              : px_xstrdup(".");
    int rc = -1;
    if (stat(dir, &st) != 0 && errno == ENOENT && same_dir(dir, cfg->data_dir)) {
        rc = 0;
    } else if (stat(dir, &st) != 0) {
        snprintf(why, len, "directory %s %s", dir,
                 errno == ENOENT ? "does not exist" : strerror(errno));
    } else if (!S_ISDIR(st.st_mode)) {
        snprintf(why, len, "%s is not a directory", dir);
    } else if (access(dir, W_OK | X_OK) != 0) {
        snprintf(why, len, "directory %s is not writable: %s", dir, strerror(errno));
    } else {
        rc = 0;
    }
    free(dir);
    return rc;
}

static int check_known_needs(const px_config *cfg, const px_instance_conf *ic,
                             const px_plugin_desc *desc, const json_t *opts, char *err,
                             size_t errlen)
{
    for (size_t i = 0; i < sizeof(known_needs) / sizeof(known_needs[0]); i++) {
        const struct known_need *k = &known_needs[i];
        const char *value = k->option ? json_string_value(json_object_get(opts, k->option))
                                      : NULL;
        if (strcmp(desc->name, k->plugin) != 0 || (k->option && (!value || !*value))) {
            continue;
        }
        int line = ic->line, col = ic->col;
        if (k->option) {
            px_config_option_mark(ic, k->option, &line, &col);
        }
        char why[512];
        if (k->need == NEEDS_ROUTES && !(cfg->http_listen && *cfg->http_listen)) {
            snprintf(err, errlen, "%s:%d:%d: plugin instance \"%s\": %s serves HTTP routes%s%s, "
                     "which need host.http.listen (not set)", cfg->path, line, col, ic->name,
                     k->plugin, k->option ? " with " : "", k->option ? k->option : "");
            return PX_ECONFIG;
        }
        if (k->need == NEEDS_WRITABLE_FILE && file_writable(cfg, value, why, sizeof(why)) < 0) {
            snprintf(err, errlen, "%s:%d:%d: plugin instance \"%s\": option \"%s\": cannot "
                     "create or append to %s: %s", cfg->path, line, col, ic->name, k->option,
                     value, why);
            return PX_ECONFIG;
        }
    }
    return 0;
}

/* The plugin's own judgement of its options (px_plugin_desc.check, 1.2), when it has one. Its
 * context names the instance and holds what set_error gives; it has no runtime behind it, which
 * is why check may call only the host functions that need none. */
static int check_by_plugin(const px_config *cfg, const px_instance_conf *ic,
                           const px_plugin_lib *lib, const json_t *opts, char *err,
                           size_t errlen)
{
    const px_plugin_desc *d = lib->desc;
    if (!PX_HAS(px_plugin_desc, d, check) || !d->check) {
        return 0;
    }
    px_gen_host none = {0};
    px_instance inst = {.host = &none, .name = ic->name, .plugin = ic->plugin};
    px_plugin_ctx ctx = {.inst = &inst, .state_code = PX_GEN_LOADED};
    px_log_capture_begin(ic->name);
    int rc = d->check(&ctx, opts);
    char *logged = px_log_capture_end();
    if (rc < 0) {
        const char *reason = ctx.error ? ctx.error : logged;
        snprintf(err, errlen, "%s:%d:%d: plugin instance \"%s\": check failed: %s%s%s%s",
                 cfg->path, ic->line, ic->col, ic->name, reason ? reason : "",
                 reason ? " (" : "", px_strerror(rc), reason ? ")" : "");
    }
    free(ctx.error);
    free(logged);
    return rc < 0 ? PX_ECONFIG : 0;
}

int px_plugin_check_instance(const px_config *cfg, const px_instance_conf *ic,
                             const px_host_api *api, char **file_out, json_t **opts_out,
                             char *err, size_t errlen)
{
    char *file = NULL;
    if (px_loader_find(cfg->plugin_path, cfg->nplugin_path, ic->plugin, &file) < 0) {
        char dirs[512] = "";
        size_t used = 0;
        for (size_t i = 0; i < cfg->nplugin_path && used < sizeof(dirs); i++) {
            used += (size_t)snprintf(dirs + used, sizeof(dirs) - used, "%s%s", i ? ":" : "",
                                     cfg->plugin_path[i]);
        }
        snprintf(err, errlen, "%s:%d:%d: plugin \"%s\" of instance \"%s\" not found in "
                 "plugin_path (%s)", cfg->path, ic->line, ic->col, ic->plugin, ic->name, dirs);
        return PX_ENOTFOUND;
    }
    px_plugin_lib *lib = NULL;
    int rc = px_loader_open(file, ic->plugin, api, cfg->plugin_trust, &lib, err, errlen);
    if (rc < 0) {
        free(file);
        return rc;
    }
    if (*err) {
        PX_LOG_WARN("loader", "%s (host.plugin_trust: permissive)", err + strlen("warning: "));
    }
    json_t *opts = NULL;
    rc = px_config_options(cfg, ic, lib->options, &opts, err, errlen);
    if (rc == 0) {
        rc = check_known_needs(cfg, ic, lib->desc, opts, err, errlen);
    }
    if (rc == 0) {
        rc = check_by_plugin(cfg, ic, lib, opts, err, errlen);
    }
    px_loader_close(lib);
    if (rc < 0) {
        json_decref(opts);
        free(file);
        return rc;
    }
    *file_out = file;
    *opts_out = opts;
    return 0;
}

static uint32_t kind_of(const px_config *cfg, const px_host_api *api, const char *instance)
{
    const px_instance_conf *ic = px_config_instance(cfg, instance);
    char *file = NULL;
    uint32_t kind = 0;
    char err[256];
    px_plugin_lib *lib = NULL;
    if (ic && px_loader_find(cfg->plugin_path, cfg->nplugin_path, ic->plugin, &file) == 0 &&
        px_loader_open(file, ic->plugin, api, cfg->plugin_trust, &lib, err, sizeof(err)) == 0) {
        kind = lib->desc->kind;
        px_loader_close(lib);
    }
    free(file);
    return kind;
}

int px_plugin_check_roles(const px_config *cfg, const px_host_api *api, char *err, size_t errlen)
{
    for (size_t i = 0; i < cfg->npipelines; i++) {
        const px_pipeline_conf *p = &cfg->pipelines[i];
        if (strcmp(p->from, "*") != 0) {
            uint32_t k = kind_of(cfg, api, p->from);
            if (k && !(k & PX_KIND_SOURCE)) {
                snprintf(err, errlen, "%s:%d:%d: pipeline \"%s\": \"%s\" is not a source (its "
                         "plugin only takes deliveries)", cfg->path, p->line, p->col, p->name,
                         p->from);
                return PX_ECONFIG;
            }
        }
        for (size_t t = 0; t < p->nto; t++) {
            uint32_t k = kind_of(cfg, api, p->to[t].sink);
            if (k && !(k & PX_KIND_SINK)) {
                snprintf(err, errlen, "%s:%d:%d: pipeline \"%s\": \"%s\" is not a sink (its "
                         "plugin only produces events)", cfg->path, p->to[t].line, p->to[t].col,
                         p->name, p->to[t].sink);
                return PX_ECONFIG;
            }
        }
    }
    return 0;
}
