/* The plexus command line: run, check, plugins, version (and their --help). Exit codes: 0 ok,
 * 1 runtime failure, 2 usage error, 78 invalid configuration (as sysexits' EX_CONFIG). */
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "cli_admin.h"
#include "cli_dlq.h"
#include "cli_plugin.h"
#include "cli_route.h"
#include "cli_tap.h"
#include "config.h"
#include "api.h"
#include "crash.h"
#include "err.h"
#include "loader.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "plugin_check.h"
#include "router.h"
#include "run.h"

#ifndef PX_VERSION
#define PX_VERSION "0.0.0"
#endif
#ifndef PX_DEFAULT_PLUGIN_PATH
#define PX_DEFAULT_PLUGIN_PATH "/usr/local/lib/plexus/plugins"
#endif
#define DEFAULT_CONFIG "etc/plexus.yaml"
#define EXIT_CONFIG 78

static const char *usage_main =
    "usage: plexus COMMAND [OPTIONS]\n"
    "\n"
    "commands:\n"
    "  run       run the host\n"
    "  check     validate a configuration and its plugins, start nothing\n"
    "  route     show what one event would become: pipelines, sinks, mapped with: (dry run)\n"
    "  test      run the pipeline tests of a configuration (dry runs with expectations)\n"
    "  plugins   list the plugins found on the plugin path\n"
    "  plugin    write a new plugin skeleton, or test a plugin file (plugin new|test)\n"
    "  dlq       list, show, replay or purge dead letters\n"
    "  status    show the running host's instances, pipelines and spool (admin API)\n"
    "  reload    reload the running host's configuration or one instance (admin API)\n"
    "  tap       show the running host's events and delivery outcomes live (admin API)\n"
    "  version   print the version and plugin ABI\n"
    "\n"
    "`plexus COMMAND --help` describes each command.\n";

static const char *usage_run =
    "usage: plexus run [-c FILE] [--log-level LEVEL] [--log-format FORMAT]\n"
    "\n"
    "Runs the host with configuration FILE (default " DEFAULT_CONFIG ").\n"
    "  -c, --config FILE     configuration file\n"
    "  --log-level LEVEL     error, warn, info or debug (overrides host.log.level)\n"
    "  --log-format FORMAT   json, text or auto (overrides host.log.format)\n"
    "SIGINT/SIGTERM stop gracefully: sources stop, in-flight work finishes, pending deliveries\n"
    "stay in the spool for the next start.\n";

static const char *usage_check =
    "usage: plexus check [-c FILE]\n"
    "\n"
    "Validates configuration FILE (default " DEFAULT_CONFIG "): YAML, host keys, pipelines, and\n"
    "each instance's plugin (found, trusted, ABI compatible) and options. Starts nothing.\n"
    "Exit status 0 when valid, 78 with one 'file:line:column: message' line when not;\n"
    "warnings (a relative plugin_path, untrusted files under plugin_trust: permissive, an admin\n"
    "API beyond loopback or without authentication) go to stderr and keep status 0.\n";

static const char *usage_plugins =
    "usage: plexus plugins [-c FILE] [-p DIR]... [--describe NAME]\n"
    "\n"
    "Lists the plugins on the plugin path (from -p, else from FILE's host.plugin_path, else\n"
    "from " DEFAULT_CONFIG "'s when that file exists, else the built-in path) with version, ABI\n"
    "and roles; --describe prints one plugin's options. A file (or its folder) that someone\n"
    "other than root or you may change is listed as refused and never opened as code (FILE's\n"
    "host.plugin_trust: permissive loads it with a warning). Exit status 1 when a plugin file\n"
    "is refused (or the --describe plugin is not found).\n";

typedef struct cli {
    const char *config;
    const char *log_level;
    const char *log_format;
    const char *describe;
    char **dirs;
    size_t ndirs;
    int help;
} cli;

static int parse_args(int argc, char **argv, cli *c)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"plugin-path", required_argument, NULL, 'p'},
        {"log-level", required_argument, NULL, 'L'},
        {"log-format", required_argument, NULL, 'F'},
        {"describe", required_argument, NULL, 'D'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "c:p:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': c->config = optarg; break;
        case 'p':
            c->dirs = px_xrealloc(c->dirs, (c->ndirs + 1) * sizeof(*c->dirs));
            c->dirs[c->ndirs++] = optarg;
            break;
        case 'L': c->log_level = optarg; break;
        case 'F': c->log_format = optarg; break;
        case 'D': c->describe = optarg; break;
        case 'h': c->help = 1; break;
        default: return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "plexus: unexpected argument \"%s\"\n", argv[optind]);
        return -1;
    }
    return 0;
}

/* A config without plugin_path uses the built-in one. */
static void default_plugin_path(px_config *cfg)
{
    if (cfg->nplugin_path == 0) {
        cfg->plugin_path = px_xcalloc(1, sizeof(char *));
        cfg->plugin_path[0] = px_xstrdup(PX_DEFAULT_PLUGIN_PATH);
        cfg->nplugin_path = 1;
    }
}

static int load_config(const char *path, px_config **out)
{
    char err[1024];
    if (px_config_load(path, out, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    default_plugin_path(*out);
    return 0;
}

static int apply_log_settings(const px_config *cfg, const cli *c)
{
    const char *level = c->log_level ? c->log_level : cfg->log_level;
    const char *format = c->log_format ? c->log_format : cfg->log_format;
    int lv;
    if (level && px_log_parse_level(level, &lv) < 0) {
        fprintf(stderr, "plexus: unknown log level \"%s\" (error, warn, info, debug)\n", level);
        return -1;
    }
    if (level) {
        px_log_set_level(lv);
    }
    if (format) {
        if (strcmp(format, "json") == 0) {
            px_log_set_format(PX_LOG_FORMAT_JSON);
        } else if (strcmp(format, "text") == 0) {
            px_log_set_format(PX_LOG_FORMAT_TEXT);
        } else if (strcmp(format, "auto") == 0) {
            px_log_set_format(PX_LOG_FORMAT_AUTO);
        } else {
            fprintf(stderr, "plexus: unknown log format \"%s\" (json, text, auto)\n", format);
            return -1;
        }
    }
    return 0;
}

static int cmd_run(const cli *c)
{
    px_config *cfg = NULL;
    if (load_config(c->config ? c->config : DEFAULT_CONFIG, &cfg) < 0) {
        return EXIT_CONFIG;
    }
    if (apply_log_settings(cfg, c) < 0) {
        px_config_destroy(cfg);
        return 2;
    }
    /* Every event mixes many small jansson nodes with a few large buffers (payload text, spool
     * copies). With glibc's fastbins each large request consolidates the small freed chunks
     * first, which measured as the single largest cost of persisting an event; small sizes are
     * still served by the per-thread cache. */
    mallopt(M_MXFAST, 0);
    uv_loop_t loop;
    uv_loop_init(&loop);
    /* A plugin that kills the process leaves a crash marker naming what it was doing. */
    px_crash_install(cfg->data_dir);
    int exit_code = px_run(&loop, cfg);
    if (exit_code < 0) {
        px_crash_uninstall();
        uv_loop_close(&loop);
        return exit_code == PX_ECONFIG ? EXIT_CONFIG : 1;
    }
    px_crash_uninstall();
    px_metrics_global_free();
    if (uv_loop_close(&loop) != 0) {
        PX_LOG_WARN("host", "loop closed with handles still open");
    }
    px_log_clear_secrets();
    return exit_code;
}

/* A relative plugin_path resolves against the working directory: say so when that is not the
 * config file's own folder, where a reader of the file would look. */
static void warn_relative_plugin_path(const px_config *cfg)
{
    if (!cfg->plugin_path_relative) {
        return;
    }
    const char *slash = strrchr(cfg->path, '/');
    char *dir = slash ? px_xstrndup(cfg->path, (size_t)(slash - cfg->path + 1)) : px_xstrdup(".");
    char *conf_dir = realpath(dir, NULL), *cwd = realpath(".", NULL);
    if (!conf_dir || !cwd || strcmp(conf_dir, cwd) != 0) {
        fprintf(stderr, "%s:%d:%d: warning: host.plugin_path \"%s\" is relative: it resolves "
                "against the working directory, to %s, not against the config file's folder "
                "(%s); use an absolute path\n", cfg->path, cfg->plugin_path_line,
                cfg->plugin_path_col, cfg->plugin_path_relative,
                cfg->plugin_path[cfg->plugin_path_relative_at], conf_dir ? conf_dir : dir);
    }
    free(conf_dir);
    free(cwd);
    free(dir);
}

static int cmd_check(const cli *c)
{
    const char *path = c->config ? c->config : DEFAULT_CONFIG;
    px_config *cfg = NULL;
    if (load_config(path, &cfg) < 0) {
        return EXIT_CONFIG;
    }
    px_host_api api;
    px_api_init(&api);
    char err[1024];
    int rc = 0;
    for (size_t i = 0; i < cfg->ninstances && rc == 0; i++) {
        char *file = NULL;
        json_t *opts = NULL;
        rc = px_plugin_check_instance(cfg, &cfg->instances[i], &api, &file, &opts, err,
                                      sizeof(err));
        free(file);
        json_decref(opts);
    }
    px_router *router = NULL;
    if (rc == 0) {
        rc = px_plugin_check_roles(cfg, &api, err, sizeof(err));
    }
    if (rc == 0) {
        rc = px_router_create(cfg, &router, err, sizeof(err));
    }
    if (rc < 0) {
        fprintf(stderr, "%s\n", err);
        px_config_destroy(cfg);
        return EXIT_CONFIG;
    }
    warn_relative_plugin_path(cfg);
    char warn[512];
    if (px_config_admin_warning(cfg, warn, sizeof(warn))) {
        fprintf(stderr, "%s\n", warn);
    }
    printf("%s: ok (%zu plugin instances, %zu pipelines)\n", path, cfg->ninstances,
           cfg->npipelines);
    px_router_destroy(router);
    px_config_destroy(cfg);
    return 0;
}

static const char *type_name(uint32_t t)
{
    switch (t) {
    case PX_OPT_STRING: return "string";
    case PX_OPT_INT: return "int";
    case PX_OPT_NUMBER: return "number";
    case PX_OPT_BOOL: return "bool";
    case PX_OPT_DURATION: return "duration";
    case PX_OPT_SIZE: return "size";
    case PX_OPT_LIST: return "list";
    case PX_OPT_OBJECT: return "object";
    default: return "?";
    }
}

static const char *roles(uint32_t kind)
{
    if ((kind & PX_KIND_SOURCE) && (kind & PX_KIND_SINK)) {
        return "source+sink";
    }
    return (kind & PX_KIND_SOURCE) ? "source" : "sink";
}

typedef struct plugins_ctx {
    const char *describe;
    int found;
    int refused;
} plugins_ctx;

static void on_plugin(const char *file, const px_plugin_lib *lib, const char *err, void *arg)
{
    plugins_ctx *pc = arg;
    if (pc->describe) {
        if (!lib || strcmp(lib->desc->name, pc->describe) != 0 || pc->found) {
            return;
        }
        const px_plugin_desc *d = lib->desc;
        pc->found = 1;
        printf("%s %s (%s, ABI %u.%u)\n  %s\n  file: %s\n\noptions:\n", d->name, d->version,
               roles(d->kind), d->abi_major, d->abi_minor, d->description ? d->description : "",
               file);
        for (const px_option *o = lib->options; o && o->name; o++) {
            printf("  %-20s %-8s %s%s%s%s%s\n      %s\n", o->name, type_name(o->type),
                   (o->flags & PX_OPT_REQUIRED) ? "required" : "optional",
                   o->default_value ? ", default " : "", o->default_value ? o->default_value : "",
                   (o->flags & PX_OPT_SECRET) ? ", secret" : "", "", o->doc ? o->doc : "");
        }
        return;
    }
    pc->found++;
    if (lib && err && *err) {
        fprintf(stderr, "plexus: %s (host.plugin_trust: permissive)\n", err);
    }
    if (lib) {
        const px_plugin_desc *d = lib->desc;
        printf("%-16s %-10s ABI %u.%u  %-12s %s\n", d->name, d->version, d->abi_major,
               d->abi_minor, roles(d->kind), d->description ? d->description : "");
    } else {
        printf("%-16s refused: %s\n", file, err);
        pc->refused++;
    }
}

/* The plugin path searched, "dir1:dir2", for messages (owned by caller; free). */
static char *joined_dirs(char *const *dirs, size_t ndirs)
{
    char *out = px_xstrdup("");
    for (size_t i = 0; i < ndirs; i++) {
        char *next = px_xasprintf("%s%s%s", out, i ? ":" : "", dirs[i]);
        free(out);
        out = next;
    }
    return out;
}

static int cmd_plugins(const cli *c)
{
    px_config *cfg = NULL;
    char *const *dirs = c->dirs;
    size_t ndirs = c->ndirs;
    char *builtin = PX_DEFAULT_PLUGIN_PATH;
    /* Without -c, the configuration `run` would use, when there is one: run from a checkout, its
     * plugin path is the build's. */
    const char *config = c->config;
    if (!config && !ndirs && access(DEFAULT_CONFIG, F_OK) == 0) {
        config = DEFAULT_CONFIG;
    }
    int trust = PX_TRUST_STRICT;
    if (config) {
        if (load_config(config, &cfg) < 0) {
            return EXIT_CONFIG;
        }
        trust = cfg->plugin_trust;
    }
    if (!ndirs && cfg) {
        dirs = cfg->plugin_path;
        ndirs = cfg->nplugin_path;
    }
    if (!ndirs) {
        dirs = &builtin;
        ndirs = 1;
    }
    px_host_api api;
    px_api_init(&api);
    plugins_ctx pc = {c->describe, 0, 0};
    px_loader_scan(dirs, ndirs, &api, trust, on_plugin, &pc);
    char *where = joined_dirs(dirs, ndirs);
    px_config_destroy(cfg);
    int rc = 0;
    if (c->describe && !pc.found) {
        fprintf(stderr, "plexus: plugin \"%s\" not found on the plugin path (%s)\n", c->describe,
                where);
        rc = 1;
    } else if (!c->describe && !pc.found) {
        printf("no plugins found in %s\n", where);
    } else if (!c->describe && pc.refused) {
        fprintf(stderr, "plexus: %d plugin file%s refused\n", pc.refused,
                pc.refused == 1 ? "" : "s");
        rc = 1;
    }
    free(where);
    return rc;
}

int main(int argc, char **argv)
{
    /* A peer closing its socket must be an error code on the write, not the end of the process. */
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2) {
        fputs(usage_main, stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage_main, stdout);
        return 0;
    }
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("plexus %s (plugin ABI %d.%d, jansson %s, libuv %s)\n", PX_VERSION,
               PX_SDK_ABI_MAJOR, PX_SDK_ABI_MINOR, JANSSON_VERSION, uv_version_string());
        return 0;
    }
    if (strcmp(cmd, "dlq") == 0) {
        return px_cli_dlq(argc - 1, argv + 1, DEFAULT_CONFIG);
    }
    if (strcmp(cmd, "plugin") == 0) {
        return px_cli_plugin(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "route") == 0) {
        return px_cli_route(argc - 1, argv + 1, DEFAULT_CONFIG);
    }
    if (strcmp(cmd, "test") == 0) {
        return px_cli_test(argc - 1, argv + 1, DEFAULT_CONFIG);
    }
    if (strcmp(cmd, "tap") == 0) {
        return px_cli_tap(argc - 1, argv + 1, DEFAULT_CONFIG);
    }
    if (strcmp(cmd, "status") == 0) {
        return px_cli_status(argc - 1, argv + 1, DEFAULT_CONFIG);
    }
    if (strcmp(cmd, "reload") == 0) {
        return px_cli_reload(argc - 1, argv + 1, DEFAULT_CONFIG);
    }
    cli c = {0};
    const char *usage = strcmp(cmd, "run") == 0       ? usage_run
                        : strcmp(cmd, "check") == 0   ? usage_check
                        : strcmp(cmd, "plugins") == 0 ? usage_plugins
                                                      : NULL;
    if (!usage) {
        fprintf(stderr, "plexus: unknown command \"%s\"\n\n%s", cmd, usage_main);
        return 2;
    }
    int rc;
    if (parse_args(argc - 1, argv + 1, &c) < 0) {
        fputs(usage, stderr);
        rc = 2;
    } else if (c.help) {
        fputs(usage, stdout);
        rc = 0;
    } else if (strcmp(cmd, "run") == 0) {
        rc = cmd_run(&c);
    } else if (strcmp(cmd, "check") == 0) {
        rc = cmd_check(&c);
    } else {
        rc = cmd_plugins(&c);
    }
    free(c.dirs);
    return rc;
}
