/* `plexus tap` (see cli_tap.h): GET /admin/tap with the filters as query parameters, each JSON
 * line printed as it arrives, readable or as is (--json). */
#include "cli_tap.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>

#include "cli_admin.h"
#include "err.h"
#include "mem.h"

static const char *usage_tap =
    "usage: plexus tap [-c FILE] [--admin ADDR] [--pipeline P] [--sink S] [--source I]\n"
    "                  [--limit N] [--json]\n"
    "\n"
    "Shows what the running host does, as it happens: each event it accepts (source, type, id,\n"
    "the pipelines it was routed to) and each delivery outcome (ok, retry with its reason, dead\n"
    "letter), secret values masked. Read from the admin API (GET /admin/tap) at FILE's\n"
    "host.admin.listen with its token, as `plexus status` does. A reader slower than the host\n"
    "loses records instead of slowing it; the stream says how many (\"dropped\").\n"
    "  -c, --config FILE   configuration file (default etc/plexus.yaml)\n"
    "  --admin ADDR        ask the host at HOST:PORT or http://HOST:PORT instead\n"
    "  --pipeline P        only events routed to pipeline P and P's deliveries\n"
    "  --sink S            only events routed to sink S and deliveries to S\n"
    "  --source I          only events from instance I and their deliveries\n"
    "  --limit N           stop after N records (events and outcomes)\n"
    "  --json              print the records as JSON lines, as the host sends them\n"
    "Exit status: 0 when the stream ended (--limit reached, the host stopping), 1 when the host\n"
    "could not be asked or refused, 2 usage error, 78 invalid configuration.\n";

typedef struct tap_args {
    const char *config, *admin, *pipeline, *sink, *source, *limit;
    int json, help;
} tap_args;

static int parse_args(int argc, char **argv, const char *default_config, tap_args *a)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},   {"admin", required_argument, NULL, 'A'},
        {"pipeline", required_argument, NULL, 'p'}, {"sink", required_argument, NULL, 's'},
        {"source", required_argument, NULL, 'S'},   {"limit", required_argument, NULL, 'n'},
        {"json", no_argument, NULL, 'j'},           {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    memset(a, 0, sizeof(*a));
    a->config = default_config;
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': a->config = optarg; break;
        case 'A': a->admin = optarg; break;
        case 'p': a->pipeline = optarg; break;
        case 's': a->sink = optarg; break;
        case 'S': a->source = optarg; break;
        case 'n': a->limit = optarg; break;
        case 'j': a->json = 1; break;
        case 'h': a->help = 1; break;
        default: return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "plexus: unexpected argument \"%s\"\n", argv[optind]);
        return -1;
    }
    if (a->limit) {
        char *end;
        long long n = strtoll(a->limit, &end, 10);
        if (!*a->limit || *end || n < 0) {
            fprintf(stderr, "plexus: --limit \"%s\": a number >= 0 expected\n", a->limit);
            return -1;
        }
    }
    return 0;
}

typedef struct tap_state {
    int json;
    int ended; /* the host sent its closing line */
} tap_state;

static const char *str(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static void clock_text(const json_t *o, char *buf, size_t len)
{
    long long ms = (long long)json_integer_value(json_object_get(o, "at"));
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    localtime_r(&t, &tm);
    size_t n = strftime(buf, len, "%H:%M:%S", &tm);
    snprintf(buf + n, len - n, ".%03lld", ms % 1000);
}

static void print_names(const json_t *list)
{
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v) {
        printf("%s%s", i ? ", " : "", json_string_value(v));
    }
}

static void print_record(const json_t *o)
{
    const char *kind = str(o, "kind");
    char at[32];
    clock_text(o, at, sizeof(at));
    if (strcmp(kind, "event") == 0) {
        printf("%s event    %s from %s id=%s -> ", at, str(o, "type"), str(o, "source"),
               str(o, "id"));
        if (json_array_size(json_object_get(o, "pipelines"))) {
            print_names(json_object_get(o, "pipelines"));
            printf("\n");
        } else {
            printf("no pipeline\n");
        }
    } else if (strcmp(kind, "delivery") == 0) {
        const char *outcome = str(o, "outcome");
        long long attempt = (long long)json_integer_value(json_object_get(o, "attempt"));
        printf("%s %-8s %s -> %s event=%s", at, outcome, str(o, "pipeline"), str(o, "sink"),
               str(o, "event_id"));
        if (attempt) {
            printf(" attempt=%lld", attempt); /* 0: dead before any attempt (its mapping) */
        }
        if (strcmp(outcome, "retry") == 0) {
            printf(" in %lldms", (long long)json_integer_value(json_object_get(o, "retry_in_ms")));
        }
        if (strcmp(outcome, "ok") != 0 && json_object_get(o, "reason")) {
            printf(": %s", str(o, "reason"));
        }
        printf("\n");
    } else if (strcmp(kind, "dropped") == 0) {
        printf("--- dropped %lld records: this reader fell behind the host (%lld in all)\n",
               (long long)json_integer_value(json_object_get(o, "count")),
               (long long)json_integer_value(json_object_get(o, "total")));
    } else if (strcmp(kind, "tap") == 0) {
        long long limit = (long long)json_integer_value(json_object_get(o, "limit"));
        fprintf(stderr, "tapping: pipeline=%s sink=%s source=%s", *str(o, "pipeline")
                ? str(o, "pipeline") : "*", *str(o, "sink") ? str(o, "sink") : "*",
                *str(o, "source") ? str(o, "source") : "*");
        if (limit) {
            fprintf(stderr, " limit=%lld", limit);
        }
        fprintf(stderr, " (Ctrl-C to stop)\n");
    } else if (strcmp(kind, "end") == 0) {
        printf("--- end: %s (%lld records, %lld dropped)\n", str(o, "reason"),
               (long long)json_integer_value(json_object_get(o, "records")),
               (long long)json_integer_value(json_object_get(o, "dropped")));
    }
}

static int on_line(const char *line, size_t len, void *arg)
{
    tap_state *ts = arg;
    json_t *o = json_loadb(line, len, 0, NULL);
    if (json_is_object(o) && strcmp(str(o, "kind"), "end") == 0) {
        ts->ended = 1;
    }
    if (ts->json) {
        printf("%.*s\n", (int)len, line);
    } else if (json_is_object(o)) {
        print_record(o);
    }
    fflush(stdout);
    json_decref(o);
    return 0;
}

/* "&key=value" escaped, appended to *q (owned). */
static void add_param(char **q, const char *key, const char *value)
{
    if (!value) {
        return;
    }
    char *e = curl_easy_escape(NULL, value, 0);
    char *next = px_xasprintf("%s%s%s=%s", *q, **q ? "&" : "?", key, e ? e : "");
    curl_free(e);
    free(*q);
    *q = next;
}

int px_cli_tap(int argc, char **argv, const char *default_config)
{
    tap_args a;
    if (parse_args(argc, argv, default_config, &a) < 0) {
        fputs(usage_tap, stderr);
        return 2;
    }
    if (a.help) {
        fputs(usage_tap, stdout);
        return 0;
    }
    px_cli_admin *c = NULL;
    if (px_cli_admin_open(a.config, a.admin, &c) < 0) {
        return 78;
    }
    char *q = px_xstrdup("");
    add_param(&q, "pipeline", a.pipeline);
    add_param(&q, "sink", a.sink);
    add_param(&q, "source", a.source);
    add_param(&q, "limit", a.limit);
    char *path = px_xasprintf("/admin/tap%s", q);
    free(q);
    tap_state ts = {.json = a.json};
    long status = 0;
    json_t *body = NULL;
    char err[512];
    int rc = px_cli_admin_stream(c, path, on_line, &ts, &status, &body, err, sizeof(err));
    free(path);
    int exit_code = 1;
    if (rc < 0) {
        fprintf(stderr, "plexus: %s\n", err);
    } else if (status != 200) {
        px_cli_admin_refusal(c, status, body);
    } else if (!ts.ended) {
        fprintf(stderr, "plexus: the host closed the stream\n");
    } else {
        exit_code = 0;
    }
    json_decref(body);
    px_cli_admin_close(c);
    return exit_code;
}
