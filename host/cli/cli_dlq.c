/* `plexus dlq` (see cli_dlq.h). When a host of the config's data_dir answers on its admin API,
 * every command goes through it (a replay is then delivered at once); when nothing listens there
 * it opens the spool of the data_dir itself (offline). */
#include "clock.h"
#include "cli_dlq.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <uv.h>

#include "cli_admin.h"
#include "config.h"
#include "err.h"
#include "log.h"
#include "mem.h"
#include "store.h"
#include "store_open.h"

static const char *usage =
    "usage: plexus dlq list    [-c FILE] [--sink S] [--since T] [--limit N] [--json]\n"
    "       plexus dlq show    [-c FILE] ID\n"
    "       plexus dlq replay  [-c FILE] (ID... | --all [--sink S])\n"
    "       plexus dlq purge   [-c FILE] (ID... | --all [--sink S] [--before T])\n"
    "\n"
    "Dead letters are deliveries that were rejected by their sink or ran out of attempts, and\n"
    "events a source could not turn into deliveries. Each keeps the event, pipeline, sink,\n"
    "reason and every attempt's error. ID is the delivery's id, as the log shows it (dead\n"
    "letter id=ID); IDs are never given twice. replay queues them again with fresh attempts\n"
    "(as new deliveries, with new IDs); purge deletes them. T is a duration back from now\n"
    "(30m, 2h, 7d) or a date (2026-11-25 or 2026-11-25T10:00:00Z). While the host runs, the\n"
    "commands go through its admin API (host.admin.listen, or $PLEXUS_ADMIN) and replayed\n"
    "deliveries go out at once; when nothing listens there they work on the data directory\n"
    "directly.\n";

/* The running host's admin API, or NULL: work on the spool. */
static px_cli_admin *remote;

/* "30m" -> now - 30m; "2026-11-25" / "2026-11-25T10:00:00Z" -> that UTC time. */
static int parse_time(const char *s, int64_t *out)
{
    uint64_t ms;
    if (px_parse_duration(s, &ms) == 0) {
        *out = px_now_ms() - (int64_t)ms;
        return 0;
    }
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!end) {
        memset(&tm, 0, sizeof(tm));
        end = strptime(s, "%Y-%m-%d", &tm);
    }
    if (!end || (*end && strcmp(end, "Z") != 0)) {
        return PX_EINVAL;
    }
    *out = (int64_t)timegm(&tm) * 1000;
    return 0;
}

static void print_time(int64_t ms, char *buf, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

typedef struct dlq_args {
    const char *config, *sink, *since, *before;
    long limit;
    int all, json;
    int64_t *ids;
    size_t nids;
} dlq_args;

static int open_store(const dlq_args *a, uv_loop_t *loop, px_store **sp)
{
    char err[1024];
    px_config *cfg = NULL;
    if (px_config_load(a->config, &cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        return 78;
    }
    int rc = px_store_open_config(loop, cfg, sp, err, sizeof(err));
    px_config_destroy(cfg);
    if (rc < 0) {
        fprintf(stderr, "plexus: %s\n", err);
        return 1;
    }
    return 0;
}

static int do_list(px_store *sp, const dlq_args *a)
{
    int64_t since = 0;
    if (a->since && parse_time(a->since, &since) < 0) {
        fprintf(stderr, "plexus: --since: \"%s\" is neither a duration nor a date\n", a->since);
        return 2;
    }
    json_t *list = NULL;
    size_t limit = a->limit > 0 ? (size_t)a->limit : 0;
    int rc = remote ? px_cli_admin_dlq_list(remote, a->sink, since, limit, &list)
                    : px_store_dlq_list(sp, a->sink, since, limit, &list);
    if (rc < 0) {
        fprintf(stderr, "plexus: cannot read dead letters: %s\n", px_strerror(rc));
        return 1;
    }
    if (a->json) {
        char *s = json_dumps(list, JSON_INDENT(2));
        printf("%s\n", s);
        free(s);
    } else if (json_array_size(list) == 0) {
        printf("no dead letters\n");
    } else {
        printf("%-8s %-20s %-14s %-14s %-28s %4s  %s\n", "ID", "DIED", "PIPELINE", "SINK", "TYPE",
               "TRY", "REASON");
        size_t i;
        json_t *e;
        json_array_foreach(list, i, e) {
            char when[32];
            print_time(json_integer_value(json_object_get(e, "died_at")), when, sizeof(when));
            printf("%-8lld %-20s %-14s %-14s %-28s %4lld  %s\n",
                   (long long)json_integer_value(json_object_get(e, "id")), when,
                   json_string_value(json_object_get(e, "pipeline")),
                   json_string_value(json_object_get(e, "sink")),
                   json_string_value(json_object_get(e, "type")),
                   (long long)json_integer_value(json_object_get(e, "attempts")),
                   json_string_value(json_object_get(e, "reason")));
        }
    }
    json_decref(list);
    return 0;
}

static int do_show(px_store *sp, const dlq_args *a)
{
    if (a->nids != 1) {
        fprintf(stderr, "plexus: dlq show takes exactly one ID\n");
        return 2;
    }
    json_t *rec = NULL;
    int rc = remote ? px_cli_admin_dlq_show(remote, a->ids[0], &rec)
                    : px_store_dlq_show(sp, a->ids[0], &rec);
    if (rc == PX_ENOENT) {
        fprintf(stderr, "plexus: no dead letter %lld\n", (long long)a->ids[0]);
        return 1;
    }
    if (rc < 0) {
        fprintf(stderr, "plexus: cannot read dead letter: %s\n", px_strerror(rc));
        return 1;
    }
    char *s = json_dumps(rec, JSON_INDENT(2));
    printf("%s\n", s);
    free(s);
    json_decref(rec);
    return 0;
}

static int do_replay_purge(px_store *sp, const dlq_args *a, int replay)
{
    if (!a->nids && !a->all) {
        fprintf(stderr, "plexus: give dead letter IDs, or --all (with --sink to narrow it)\n");
        return 2;
    }
    int64_t before = 0;
    if (a->before && parse_time(a->before, &before) < 0) {
        fprintf(stderr, "plexus: --before: \"%s\" is neither a duration nor a date\n", a->before);
        return 2;
    }
    int n = remote && replay ? px_cli_admin_dlq_replay(remote, a->ids, a->nids, a->sink)
            : remote         ? px_cli_admin_dlq_purge(remote, a->ids, a->nids, a->sink, before)
            : replay         ? px_store_dlq_replay(sp, a->ids, a->nids, a->sink, NULL, NULL)
                             : px_store_dlq_purge(sp, a->ids, a->nids, a->sink, before);
    if (n < 0) {
        fprintf(stderr, "plexus: %s failed: %s\n", replay ? "replay" : "purge", px_strerror(n));
        return 1;
    }
    printf("%s %d dead letter%s\n", replay ? "replayed" : "purged", n, n == 1 ? "" : "s");
    return 0;
}

int px_cli_dlq(int argc, char **argv, const char *default_config)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"sink", required_argument, NULL, 's'},
        {"since", required_argument, NULL, 'S'},  {"before", required_argument, NULL, 'B'},
        {"limit", required_argument, NULL, 'n'},  {"all", no_argument, NULL, 'a'},
        {"json", no_argument, NULL, 'j'},         {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *verb = argv[1];
    dlq_args a = {.config = default_config};
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc - 1, argv + 1, "c:s:n:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': a.config = optarg; break;
        case 's': a.sink = optarg; break;
        case 'S': a.since = optarg; break;
        case 'B': a.before = optarg; break;
        case 'n': a.limit = strtol(optarg, NULL, 10); break;
        case 'a': a.all = 1; break;
        case 'j': a.json = 1; break;
        case 'h': fputs(usage, stdout); return 0;
        default: fputs(usage, stderr); return 2;
        }
    }
    int status = 0;
    for (int i = optind; i < argc - 1; i++) {
        char *end;
        long long id = strtoll(argv[1 + i], &end, 10);
        if (*end || id <= 0) {
            fprintf(stderr, "plexus: \"%s\" is not a dead letter ID\n", argv[1 + i]);
            free(a.ids);
            return 2;
        }
        a.ids = px_xrealloc(a.ids, (a.nids + 1) * sizeof(*a.ids));
        a.ids[a.nids++] = id;
    }
    int which = strcmp(verb, "list") == 0     ? 1
                : strcmp(verb, "show") == 0   ? 2
                : strcmp(verb, "replay") == 0 ? 3
                : strcmp(verb, "purge") == 0  ? 4
                                              : 0;
    if (!which) {
        fprintf(stderr, "plexus: unknown dlq command \"%s\"\n\n%s", verb, usage);
        free(a.ids);
        return 2;
    }
    px_log_set_level(PX_LOG_WARN);
    int probe = px_cli_admin_probe(a.config, &remote);
    uv_loop_t loop;
    uv_loop_init(&loop);
    px_store *sp = NULL;
    status = probe < 0 ? 1 : probe > 0 ? 0 : open_store(&a, &loop, &sp);
    if (status == 0) {
        switch (which) {
        case 1: status = do_list(sp, &a); break;
        case 2: status = do_show(sp, &a); break;
        default: status = do_replay_purge(sp, &a, which == 3); break;
        }
        px_store_close(sp);
    }
    px_cli_admin_close(remote);
    remote = NULL;
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    free(a.ids);
    return status;
}
