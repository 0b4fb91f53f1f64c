/* `plexus route`: one event through the configuration's real router and mappings, printed for a
 * person or as JSON (see cli_route.h). The configuration is read and checked as `run` reads it;
 * plugins are not loaded, since routing needs none of them. */
#include "cli_route.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "clock.h"
#include "config.h"
#include "err.h"
#include "mem.h"
#include "route_explain.h"
#include "router.h"

#define EXIT_NO_ROUTE 1
#define EXIT_USAGE 2
#define EXIT_CONFIG 78

static const char *usage_route =
    "usage: plexus route [-c FILE] [--source NAME] [--type TYPE] [--id ID] [--time MS] [--json]\n"
    "                    EVENT.json\n"
    "\n"
    "Dry run: routes one event through FILE's pipelines (default etc/plexus.yaml) with the\n"
    "host's own router and mappings, and prints which pipelines take it (and why the others do\n"
    "not) and, per target, the sink, the action and the mapped `with:` as JSON, or the mapping\n"
    "error naming the field. The configuration is checked as `run` checks it; no plugin is\n"
    "loaded, nothing is stored or delivered.\n"
    "  EVENT.json          the event's payload (JSON); - reads standard input\n"
    "  --source NAME       the instance the event comes from (without it only pipelines with\n"
    "                      from: \"*\" can take it)\n"
    "  --type TYPE         the event type, e.g. ezzing.lead_has_been_registered\n"
    "  --id ID, --time MS  what /$event/id and /$event/time give (default dry-run, now)\n"
    "  --json              print the result as one JSON document\n"
    "Exit status: 0 routed, every mapping applied; 1 no pipeline takes the event, or a mapping\n"
    "failed; 2 usage error (arguments, EVENT.json unreadable or not JSON, an unknown --source);\n"
    "78 invalid configuration.\n";

typedef struct route_args {
    const char *config, *source, *type, *id, *time, *event;
    int json, help;
} route_args;

static int parse_route_args(int argc, char **argv, const char *default_config, route_args *a)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"source", required_argument, NULL, 's'},
        {"type", required_argument, NULL, 't'},   {"id", required_argument, NULL, 'i'},
        {"time", required_argument, NULL, 'T'},   {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    memset(a, 0, sizeof(*a));
    a->config = default_config;
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': a->config = optarg; break;
        case 's': a->source = optarg; break;
        case 't': a->type = optarg; break;
        case 'i': a->id = optarg; break;
        case 'T': a->time = optarg; break;
        case 'j': a->json = 1; break;
        case 'h': a->help = 1; break;
        default: return -1;
        }
    }
    if (a->help) {
        return 0;
    }
    if (optind < argc) {
        a->event = argv[optind++];
    }
    if (optind < argc) {
        fprintf(stderr, "plexus: unexpected argument \"%s\"\n", argv[optind]);
        return -1;
    }
    if (!a->event) {
        fprintf(stderr, "plexus: route needs an EVENT.json (the payload; - for standard input)\n");
        return -1;
    }
    return 0;
}

/* The payload from path (borrowed; "-" = stdin), or NULL after printing why. */
static json_t *read_payload(const char *path)
{
    json_error_t e;
    json_t *v = strcmp(path, "-") == 0 ? json_loadf(stdin, JSON_DECODE_ANY, &e)
                                       : json_load_file(path, JSON_DECODE_ANY, &e);
    if (!v) {
        fprintf(stderr, "%s:%d:%d: %s\n", strcmp(path, "-") == 0 ? "<stdin>" : path, e.line,
                e.column, e.text);
    }
    return v;
}

/* The configuration and its router, as `run` would build them, or EXIT_CONFIG after printing. */
static int load_router(const char *path, px_config **cfg, px_router **router)
{
    char err[1024];
    if (px_config_load(path, cfg, err, sizeof(err)) < 0 ||
        px_router_create(*cfg, router, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        px_config_destroy(*cfg);
        *cfg = NULL;
        return EXIT_CONFIG;
    }
    return 0;
}

/* An instance named name, or a usage error naming the ones there are. */
static int check_source(const px_config *cfg, const char *name)
{
    if (px_config_instance(cfg, name)) {
        return 0;
    }
    const char **names = px_xcalloc(cfg->ninstances + 1, sizeof(*names));
    for (size_t i = 0; i < cfg->ninstances; i++) {
        names[i] = cfg->instances[i].name;
    }
    char hint[160];
    fprintf(stderr, "plexus: --source \"%s\": %s declares no such instance%s\n", name, cfg->path,
            px_suggest(name, names, cfg->ninstances, hint, sizeof(hint)));
    free(names);
    return -1;
}

static void print_json_indented(const json_t *v, const char *indent)
{
    char *text = json_dumps(v, JSON_INDENT(2) | JSON_ENCODE_ANY);
    const char *line = text;
    while (line && *line) {
        const char *nl = strchr(line, '\n');
        int len = nl ? (int)(nl - line) : (int)strlen(line);
        printf("%s%.*s\n", indent, len, line);
        line = nl ? nl + 1 : NULL;
    }
    free(text);
}

static const char *str(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static void print_route(const json_t *doc)
{
    const json_t *ev = json_object_get(doc, "event");
    const char *source = json_string_value(json_object_get(ev, "source"));
    printf("event %s from %s (id %s)\n", *str(ev, "type") ? str(ev, "type") : "(no type)",
           source ? source : "(no source)", str(ev, "id"));
    printf("\npipelines\n");
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(doc, "pipelines"), i, p) {
        if (json_is_true(json_object_get(p, "matched"))) {
            printf("  %-28s matched\n", str(p, "name"));
        } else {
            printf("  %-28s no: %s\n", str(p, "name"), str(p, "reason"));
        }
    }
    const json_t *targets = json_object_get(doc, "targets");
    if (json_array_size(targets)) {
        printf("\ntargets\n");
    }
    json_array_foreach(targets, i, p) {
        const char *action = str(p, "action");
        printf("  %s -> %s%s%s%s\n", str(p, "pipeline"), str(p, "sink"), *action ? " (" : "",
               action, *action ? ")" : "");
        if (json_object_get(p, "error")) {
            printf("    MAPPING ERROR %s\n", str(p, "error"));
        } else {
            print_json_indented(json_object_get(p, "with"), "    ");
        }
    }
    size_t n = json_array_size(targets);
    long long errors = (long long)json_integer_value(json_object_get(doc, "errors"));
    if (n == 0) {
        printf("\nno route: no pipeline takes this event\n");
    } else if (errors) {
        printf("\n%lld of %zu target%s failed to map\n", errors, n, n == 1 ? "" : "s");
    } else {
        printf("\nrouted to %zu target%s\n", n, n == 1 ? "" : "s");
    }
}

int px_cli_route(int argc, char **argv, const char *default_config)
{
    route_args a;
    if (parse_route_args(argc, argv, default_config, &a) < 0) {
        fputs(usage_route, stderr);
        return EXIT_USAGE;
    }
    if (a.help) {
        fputs(usage_route, stdout);
        return 0;
    }
    long long time_ms = px_now_ms();
    if (a.time) {
        char *end;
        time_ms = strtoll(a.time, &end, 10);
        if (!*a.time || *end) {
            fprintf(stderr, "plexus: --time \"%s\": unix milliseconds expected\n", a.time);
            return EXIT_USAGE;
        }
    }
    px_config *cfg = NULL;
    px_router *router = NULL;
    if (load_router(a.config, &cfg, &router) != 0) {
        return EXIT_CONFIG;
    }
    int rc = EXIT_USAGE;
    json_t *payload = NULL;
    if (a.source && check_source(cfg, a.source) < 0) {
        goto done;
    }
    if (!(payload = read_payload(a.event))) {
        goto done;
    }
    px_route_input in = {
        .source = a.source ? px_xstrdup(a.source) : NULL,
        .type = px_xstrdup(a.type ? a.type : ""),
        .id = px_xstrdup(a.id ? a.id : "dry-run"),
        .time_ms = time_ms,
        .payload = payload,
    };
    json_t *doc = px_route_explain(router, &in);
    px_route_input_clear(&in);
    if (a.json) {
        char *text = json_dumps(doc, JSON_INDENT(2));
        printf("%s\n", text);
        free(text);
    } else {
        print_route(doc);
    }
    rc = json_array_size(json_object_get(doc, "targets")) > 0 &&
                 json_integer_value(json_object_get(doc, "errors")) == 0
             ? 0
             : EXIT_NO_ROUTE;
    json_decref(doc);
done:
    px_router_destroy(router);
    px_config_destroy(cfg);
    return rc;
}
