/* The admin API (see admin.h): routes on a second px_http_server, the status document, the
 * scrape-time copy of figures into the metrics registry, and the dead-letter and reload actions.
 * Every handler answers before returning; the spool calls it makes are synchronous reads or
 * short waits for the writer thread. */
#include "clock.h"
#include "admin.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "admin_token.h"
#include "config_view.h"
#include "console_assets.h"
#include "consttime.h"
#include "runtime.h"
#include "err.h"
#include "http_server.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "route_explain.h"
#include "url.h"

#ifndef PX_VERSION
#define PX_VERSION "0.0.0"
#endif

#define DLQ_DEFAULT_LIMIT 1000
#define DATA_DIR_HEADER "X-Plexus-Data-Dir"
#define REFUSAL_LOG_MS 1000 /* at most one log line per second about refused requests */

typedef struct tap_client tap_client;

struct px_admin {
    px_runtime *d;
    tap_client *taps;    /* GET /admin/tap streams open (owned) */
    px_admin_reload_fn reload; /* what POST /admin/reload runs */
    void *reload_arg;
    px_http_server *srv; /* owned; NULL while no listener runs */
    char *listen;        /* the host.admin.listen srv was made for (owned; NULL = none) */
    char *token;         /* the bearer token in force (owned; secret); NULL with auth: none */
    size_t nretiring;    /* listeners replaced by a reload, still finishing their requests */
    int closing;         /* px_admin_close was called: free once every listener is closed */
    int srv_closing;     /* srv's close is under way */
    int64_t started_ms;
    int64_t refusal_logged_ms;
    uint64_t refusals_unlogged;
    char *data_dir;  /* realpath of the data directory, for the CLI's check (owned) */
    struct {
        px_metric *unauthorized;
        px_metric *unrouted, *duplicate, *refused, *mapping_errors, *pending, *dead, *inflight,
            *commits, *rows, *elided, *last_batch, *max_batch, *commit_last, *commit_max, *writable,
            *queued, *write_errors, *busy, *generation, *up, *http_requests, *http_conns,
            *start_time, *build_info;
    } m;
};

static json_t *iso_time(int64_t ms)
{
    if (ms <= 0) {
        return json_null();
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char buf[40];
    size_t n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, sizeof(buf) - n, ".%03dZ", (int)(ms % 1000));
    return json_string(buf);
}

/* --- answers ----------------------------------------------------------------------------- */

/* Answers with body (stolen) as compact JSON and a final newline. */
static void reply_json(px_http_request *req, int status, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(body);
    if (!text) {
        px_http_respond(req, 500, NULL, "{\"error\":\"encoding failed\"}\n", 28);
        return;
    }
    size_t len = strlen(text);
    text = px_xrealloc(text, len + 2);
    text[len++] = '\n';
    text[len] = '\0';
    px_http_respond(req, status, "application/json", text, len);
    free(text);
}

static void reply_error(px_http_request *req, int status, const char *msg)
{
    reply_json(req, status, json_pack("{ss}", "error", msg));
}

/* --- access ------------------------------------------------------------------------------ */

/* 1 when the query string carries a credential. It is refused even beside a right header: a
 * token in a URL ends up in proxy logs, shell history and Referer headers. */
static int token_in_query(px_http_request *req)
{
    const char *q = px_http_req_query(req);
    while (q && *q) {
        const char *end = strchr(q, '&');
        size_t len = end ? (size_t)(end - q) : strlen(q);
        const char *eq = memchr(q, '=', len);
        size_t klen = eq ? (size_t)(eq - q) : len;
        if ((klen == 12 && strncasecmp(q, "access_token", 12) == 0) ||
            (klen == 5 && strncasecmp(q, "token", 5) == 0)) {
            return 1;
        }
        q = end ? end + 1 : NULL;
    }
    return 0;
}

/* Why req is not let through: NULL when it may go on, else "missing", "invalid" or "query". */
static const char *refusal(px_admin *a, px_http_request *req)
{
    if (a->d->cfg && a->d->cfg->admin_auth == PX_ADMIN_AUTH_NONE) {
        return NULL;
    }
    if (token_in_query(req)) {
        return "query";
    }
    const char *auth = px_http_req_header(req, "Authorization");
    if (!auth) {
        return "missing";
    }
    if (strncasecmp(auth, "Bearer ", 7) != 0 || !a->token) {
        return "invalid";
    }
    const char *t = auth + 7;
    while (*t == ' ') {
        t++;
    }
    size_t len = strlen(t);
    while (len && t[len - 1] == ' ') {
        len--;
    }
    return px_ct_equal(t, len, a->token, strlen(a->token)) ? NULL : "invalid";
}

/* Counts every refusal and logs them, never what was presented, at most once a second. */
static void note_refusal(px_admin *a, px_http_request *req, const char *why)
{
    px_series_add(px_metric_at(a->m.unauthorized, &why), 1);
    int64_t now = px_now_ms();
    if (a->refusal_logged_ms && now - a->refusal_logged_ms < REFUSAL_LOG_MS) {
        a->refusals_unlogged++;
        return;
    }
    PX_LOG_WARN("admin", "request refused reason=%s method=%s path=%s peer=%s "
                "refused_unlogged=%llu", why, px_http_req_method(req), px_http_req_path(req),
                px_http_req_remote(req), (unsigned long long)a->refusals_unlogged);
    a->refusal_logged_ms = now;
    a->refusals_unlogged = 0;
}

/* Who may call a route: anyone (probes), anyone when host.admin.metrics_public (/metrics), or
 * a token holder. */
enum access { ACCESS_OPEN, ACCESS_METRICS, ACCESS_TOKEN };

/* 0 when the request may go on; otherwise it has been answered. */
static int gate(px_admin *a, px_http_request *req, enum access access)
{
    const char *why = refusal(a, req);
    int need_token = access == ACCESS_TOKEN ||
                     (access == ACCESS_METRICS && !(a->d->cfg && a->d->cfg->admin_metrics_public));
    if (why && (need_token || strcmp(why, "query") == 0)) {
        note_refusal(a, req, why);
        if (strcmp(why, "query") == 0) {
            px_http_set_header(req, "WWW-Authenticate",
                               "Bearer realm=\"plexus\", error=\"invalid_request\"");
            reply_error(req, 400, "a token in the query string is refused: send it in the "
                        "Authorization: Bearer header");
            return -1;
        }
        int missing = strcmp(why, "missing") == 0;
        px_http_set_header(req, "WWW-Authenticate",
                           missing ? "Bearer realm=\"plexus\""
                                   : "Bearer realm=\"plexus\", error=\"invalid_token\"");
        reply_error(req, 401, missing ? "a bearer token is required" : "invalid token");
        return -1;
    }
    /* The CLI names the data directory it means; a host serving another one says so rather
     * than acting on the wrong dead letters (and tells which one only to a token holder). */
    const char *dir = px_http_req_header(req, DATA_DIR_HEADER);
    if (dir && strcmp(dir, a->data_dir) != 0) {
        json_t *body = json_pack("{ss}", "error", "this host serves another data_dir");
        if (!why) {
            json_object_set_new(body, "data_dir", json_string(a->data_dir));
        }
        reply_json(req, 421, body);
        return -1;
    }
    return 0;
}

/* Value of `key` in the query string (percent-decoded into buf). 1 when present. */
static int query_get(px_http_request *req, const char *key, char *buf, size_t buflen)
{
    const char *q = px_http_req_query(req);
    size_t klen = strlen(key);
    while (q && *q) {
        const char *end = strchr(q, '&');
        size_t len = end ? (size_t)(end - q) : strlen(q);
        if (len >= klen && strncmp(q, key, klen) == 0 && (len == klen || q[klen] == '=')) {
            const char *v = len == klen ? q + len : q + klen + 1;
            px_url_decode(v, (size_t)(q + len - v), buf, buflen);
            return 1;
        }
        q = end ? end + 1 : NULL;
    }
    return 0;
}

static int parse_i64(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno || v < 0) {
        return -1;
    }
    *out = v;
    return 0;
}

/* --- health ------------------------------------------------------------------------------ */

static const char *gen_state_name(int code)
{
    switch (code) {
    case PX_GEN_LOADED: return "loaded";
    case PX_GEN_RUNNING: return "running";
    case PX_GEN_STOPPING: return "stopping";
    case PX_GEN_DRAINED: return "drained";
    default: return "destroyed";
    }
}

static void on_healthz(px_http_request *req, void *arg)
{
    if (gate(arg, req, ACCESS_OPEN) == 0) {
        px_http_respond(req, 200, "text/plain; charset=utf-8", "ok\n", 3);
    }
}

/* Reasons the host is not ready, as a JSON array (new reference). */
static json_t *not_ready(px_admin *a)
{
    px_runtime *d = a->d;
    json_t *why = json_array();
    if (d->stopping) {
        json_array_append_new(why, json_string("host is stopping"));
    }
    for (size_t i = 0; i < d->ninstances; i++) {
        px_instance *inst = d->instances[i];
        if (!inst->gen || inst->gen->state_code != PX_GEN_RUNNING) {
            json_array_append_new(why, json_sprintf("instance %s is %s", inst->name,
                                                    inst->gen
                                                        ? gen_state_name(inst->gen->state_code)
                                                        : "not loaded"));
        }
    }
    if (!d->store || !px_store_writable(d->store)) {
        json_array_append_new(why, json_string("spool is not writable"));
    }
    return why;
}

static void on_readyz(px_http_request *req, void *arg)
{
    px_admin *a = arg;
    if (gate(a, req, ACCESS_OPEN) < 0) {
        return;
    }
    json_t *why = not_ready(a);
    int ready = json_array_size(why) == 0;
    reply_json(req, ready ? 200 : 503, json_pack("{sb so}", "ready", ready, "reasons", why));
}

/* --- metrics ----------------------------------------------------------------------------- */

static const char *const L_SINK[] = {"sink", NULL};

static void define_metrics(px_admin *a)
{
    px_metrics *m = px_metrics_global();
#define C(field, name, help, labels)                                                          \
    a->m.field = px_metrics_family(m, PX_METRIC_COUNTER, name, help, labels, NULL, 0)
#define G(field, name, help, labels)                                                          \
    a->m.field = px_metrics_family(m, PX_METRIC_GAUGE, name, help, labels, NULL, 0)
    C(unauthorized, "plexus_admin_unauthorized_total",
      "Admin API requests refused for a missing or wrong token, or one in the query string.",
      ((const char *[]){"reason", NULL}));
    static const char *const reasons[] = {"missing", "invalid", "query"};
    for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++) {
        px_metric_at(a->m.unauthorized, &reasons[i]);
    }
    C(unrouted, "plexus_events_unrouted_total", "Events no pipeline took.", NULL);
    C(duplicate, "plexus_events_duplicate_total",
      "Events dropped as repeats of a dedupe key within the window.", NULL);
    C(refused, "plexus_events_refused_total",
      "Events refused because the spool could not take them (back-pressure, disk full).", NULL);
    C(mapping_errors, "plexus_mapping_errors_total",
      "Targets whose mapping failed for an event (dead-lettered).", NULL);
    G(pending, "plexus_pending_deliveries", "Deliveries waiting in the spool, per sink.", L_SINK);
    G(dead, "plexus_dead_letters", "Dead letters in the spool.", NULL);
    G(inflight, "plexus_deliveries_inflight", "Deliveries handed to a sink and not answered.",
      L_SINK);
    C(commits, "plexus_spool_commits_total", "Spool transactions committed.", NULL);
    C(rows, "plexus_spool_rows_committed_total",
      "Spool operations (puts, outcome marks) committed.", NULL);
    C(elided, "plexus_spool_deliveries_elided_total",
      "Deliveries done before the spool writer reached them: never written.", NULL);
    G(last_batch, "plexus_spool_last_batch_rows", "Operations in the latest spool commit.", NULL);
    G(max_batch, "plexus_spool_max_batch_rows", "Largest spool commit so far, in operations.",
      NULL);
    G(commit_last, "plexus_spool_commit_last_seconds", "Duration of the latest spool commit.",
      NULL);
    G(commit_max, "plexus_spool_commit_max_seconds", "Longest spool commit so far.", NULL);
    G(writable, "plexus_spool_writable", "1 while the spool accepts writes, else 0.", NULL);
    G(queued, "plexus_spool_queued_operations", "Operations waiting for the spool writer.", NULL);
    C(write_errors, "plexus_spool_write_errors_total", "Spool batches rolled back.", NULL);
    C(busy, "plexus_spool_busy_refusals_total",
      "Spool puts refused or failed as busy (queue full, disk full).", NULL);
    G(generation, "plexus_plugin_generation",
      "Current generation of each plugin instance (increases on reload).",
      ((const char *[]){"instance", "plugin", "version", NULL}));
    G(up, "plexus_plugin_up", "1 when the instance's current generation is running, else 0.",
      ((const char *[]){"instance", NULL}));
    C(http_requests, "plexus_http_requests_total",
      "HTTP requests answered, by listener, route pattern and status.",
      ((const char *[]){"listener", "route", "status", NULL}));
    G(http_conns, "plexus_http_open_connections", "Open HTTP connections per listener.",
      ((const char *[]){"listener", NULL}));
    G(start_time, "plexus_start_time_seconds", "Start time of the host, seconds since the epoch.",
      NULL);
    G(build_info, "plexus_build_info", "Version and plugin ABI of the host (value 1).",
      ((const char *[]){"version", "abi", NULL}));
#undef C
#undef G
}

static void set1(px_metric *f, double v)
{
    px_series_set(px_metric_at(f, NULL), v);
}

static void on_pending_count(const char *sink, int64_t n, void *arg)
{
    px_admin *a = arg;
    px_series_set(px_metric_at(a->m.pending, &sink), (double)n);
}

static void on_sink_figures(const char *sink, size_t ready, size_t inflight, int failing,
                            void *arg)
{
    px_admin *a = arg;
    (void)ready, (void)failing;
    px_series_set(px_metric_at(a->m.inflight, &sink), (double)inflight);
}

typedef struct stat_ctx {
    px_admin *a;
    const char *listener;
} stat_ctx;

static void on_http_stat(const char *route, int status, uint64_t count, void *arg)
{
    stat_ctx *sc = arg;
    char code[16];
    snprintf(code, sizeof(code), "%d", status);
    px_series_set(px_metric_at(sc->a->m.http_requests,
                               (const char *[]){sc->listener, route, code}),
                  (double)count);
}

void px_admin_collect_metrics(px_admin *a)
{
    px_runtime *d = a->d;
    set1(a->m.unrouted, (double)d->events_unrouted);
    set1(a->m.duplicate, (double)d->events_duplicate);
    set1(a->m.refused, (double)d->events_refused);
    set1(a->m.mapping_errors, (double)d->mapping_errors);

    /* Figures whose label sets come and go are rebuilt from scratch. Every sink has a pending
     * series, 0 when the spool holds nothing for it. */
    px_metric_clear(a->m.pending);
    px_metric_clear(a->m.inflight);
    px_metric_clear(a->m.generation);
    px_metric_clear(a->m.up);
    px_metric_clear(a->m.http_requests);
    px_metric_clear(a->m.http_conns);
    for (size_t i = 0; i < d->ninstances; i++) {
        px_instance *inst = d->instances[i];
        const char *name = inst->name;
        px_plugin_ctx *gen = inst->gen;
        if (inst->kind & PX_KIND_SINK) {
            px_series_set(px_metric_at(a->m.pending, &name), 0);
            px_series_set(px_metric_at(a->m.inflight, &name), 0);
        }
        px_series_set(px_metric_at(a->m.up, &name),
                      gen && gen->state_code == PX_GEN_RUNNING ? 1 : 0);
        if (gen && gen->lib) {
            const char *labels[] = {name, inst->plugin, gen->lib->desc->version};
            px_series_set(px_metric_at(a->m.generation, labels), gen->generation);
        }
    }
    if (d->store) {
        px_store_pending_counts(d->store, on_pending_count, a);
        int64_t dead = 0;
        if (px_store_dlq_count(d->store, &dead) == 0) {
            set1(a->m.dead, (double)dead);
        }
        px_store_stats st;
        px_store_get_stats(d->store, &st);
        set1(a->m.commits, (double)st.commits);
        set1(a->m.rows, (double)st.rows_committed);
        set1(a->m.elided, (double)st.elided);
        set1(a->m.last_batch, (double)st.last_batch);
        set1(a->m.max_batch, (double)st.max_batch);
        set1(a->m.commit_last, st.commit_ms_last / 1000.0);
        set1(a->m.commit_max, st.commit_ms_max / 1000.0);
        set1(a->m.writable, st.writable ? 1 : 0);
        set1(a->m.queued, (double)st.queued);
        set1(a->m.write_errors, (double)st.write_errors);
        set1(a->m.busy, (double)st.busy_refusals);
    }
    if (d->dispatch) {
        px_dispatch_foreach_sink(d->dispatch, on_sink_figures, a);
    }
    const struct {
        const char *listener;
        px_http_server *srv;
    } servers[] = {{"http", d->http}, {"admin", a->srv}};
    for (size_t i = 0; i < 2; i++) {
        if (!servers[i].srv) {
            continue;
        }
        stat_ctx sc = {a, servers[i].listener};
        px_http_server_foreach_stat(servers[i].srv, on_http_stat, &sc);
        px_series_set(px_metric_at(a->m.http_conns, &servers[i].listener),
                      (double)px_http_server_connections(servers[i].srv));
    }
    set1(a->m.start_time, (double)a->started_ms / 1000.0);
    char abi[24];
    snprintf(abi, sizeof(abi), "%d.%d", PX_SDK_ABI_MAJOR, PX_SDK_ABI_MINOR);
    px_series_set(px_metric_at(a->m.build_info, (const char *[]){PX_VERSION, abi}), 1);
}

static void on_metrics(px_http_request *req, void *arg)
{
    px_admin *a = arg;
    if (gate(a, req, ACCESS_METRICS) < 0) {
        return;
    }
    px_admin_collect_metrics(a);
    size_t len = 0;
    char *text = px_metrics_render(px_metrics_global(), &len);
    px_http_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
    free(text);
}

/* --- status ------------------------------------------------------------------------------ */

static const char *kind_name(uint32_t kind)
{
    if ((kind & PX_KIND_SOURCE) && (kind & PX_KIND_SINK)) {
        return "source+sink";
    }
    if (kind & PX_KIND_SOURCE) {
        return "source";
    }
    return (kind & PX_KIND_SINK) ? "sink" : "";
}

static json_t *instance_json(const px_instance *inst, px_dispatch *disp)
{
    const px_plugin_ctx *gen = inst->gen;
    const px_plugin_desc *desc = gen && gen->lib ? gen->lib->desc : NULL;
    json_t *o = json_pack("{ss ss ss ss}", "name", inst->name, "plugin", inst->plugin, "file",
                          inst->file ? inst->file : "", "kind", kind_name(inst->kind));
    json_object_set_new(o, "version", desc ? json_string(desc->version) : json_null());
    json_object_set_new(o, "abi", desc ? json_sprintf("%u.%u", desc->abi_major, desc->abi_minor)
                                       : json_null());
    json_object_set_new(o, "generation", gen ? json_integer(gen->generation) : json_null());
    json_object_set_new(o, "state", json_string(gen ? gen_state_name(gen->state_code)
                                                    : "not loaded"));
    json_object_set_new(o, "loaded_at", gen ? iso_time(gen->loaded_at_ms) : json_null());
    json_object_set_new(o, "inflight", json_integer(gen ? (json_int_t)gen->inflight : 0));
    json_object_set_new(o, "max_inflight", json_integer(inst->max_inflight));
    /* A failed load or start, else the sink's last failed delivery while it has not recovered. */
    const char *err = inst->last_error;
    if (!err && (inst->kind & PX_KIND_SINK) && disp) {
        err = px_dispatch_sink_error(disp, inst->name);
    }
    json_object_set_new(o, "last_error", err ? json_string(err) : json_null());
    return o;
}

static json_t *pipeline_json(const px_pipeline_conf *p)
{
    json_t *types = json_array();
    for (size_t i = 0; i < p->ntypes; i++) {
        json_array_append_new(types, json_string(p->types[i]));
    }
    json_t *to = json_array();
    for (size_t i = 0; i < p->nto; i++) {
        json_array_append_new(to, json_pack("{ss ss}", "sink", p->to[i].sink, "action",
                                            p->to[i].action ? p->to[i].action : ""));
    }
    return json_pack("{ss ss so so si}", "name", p->name, "from", p->from, "types", types, "to",
                     to, "attempts", (int)p->retry.attempts);
}

static void on_pending_json(const char *sink, int64_t n, void *arg)
{
    json_object_set_new(arg, sink, json_integer(n));
}

static void on_sink_json(const char *sink, size_t ready, size_t inflight, int failing, void *arg)
{
    json_array_append_new(arg, json_pack("{ss sI sI sb}", "sink", sink, "ready",
                                         (json_int_t)ready, "inflight", (json_int_t)inflight,
                                         "failing", failing));
}

static json_t *spool_json(px_store *sp)
{
    if (!sp) {
        return json_null();
    }
    px_store_stats st;
    px_store_get_stats(sp, &st);
    json_t *pending = json_object();
    px_store_pending_counts(sp, on_pending_json, pending);
    json_int_t total = 0;
    const char *k;
    json_t *v;
    json_object_foreach(pending, k, v) {
        total += json_integer_value(v);
    }
    int64_t dead = 0;
    json_t *o = json_pack("{sb sI sI sI sI sI sf sf sI sI sI sI}", "writable", st.writable,
                          "queued",
                          (json_int_t)st.queued, "commits", (json_int_t)st.commits,
                          "rows_committed", (json_int_t)st.rows_committed, "last_batch",
                          (json_int_t)st.last_batch, "max_batch", (json_int_t)st.max_batch,
                          "commit_ms_last", st.commit_ms_last, "commit_ms_max", st.commit_ms_max,
                          "duplicates", (json_int_t)st.duplicates, "busy_refusals",
                          (json_int_t)st.busy_refusals, "write_errors",
                          (json_int_t)st.write_errors, "elided", (json_int_t)st.elided);
    json_object_set_new(o, "pending", pending);
    json_object_set_new(o, "pending_total", json_integer(total));
    json_object_set_new(o, "dead_letters", px_store_dlq_count(sp, &dead) == 0
                                               ? json_integer(dead)
                                               : json_null());
    return o;
}

/* The hosts sharing the store (just this one on SQLite), with a warning when their configuration
 * files differ. */
static json_t *cluster_json(const px_runtime *d)
{
    json_t *o = json_pack("{ss ss ss}", "host_id", d->cfg ? d->cfg->host_id : "", "store",
                          d->store ? d->store->ops->name : "", "config_hash",
                          d->cfg ? d->cfg->hash : "");
    if (!d->store) {
        return o;
    }
    json_object_set_new(o, "leased", json_boolean(px_store_leased(d->store)));
    json_t *members = NULL;
    if (px_store_members(d->store, &members) < 0) {
        json_object_set_new(o, "members", json_null());
        return o;
    }
    size_t i, alive = 0;
    json_t *m;
    const char *first = NULL;
    int differ = 0;
    json_array_foreach(members, i, m) {
        if (!json_is_true(json_object_get(m, "alive"))) {
            continue;
        }
        alive++;
        const char *h = json_string_value(json_object_get(m, "config_hash"));
        if (h && first && strcmp(h, first) != 0) {
            differ = 1;
        }
        first = first ? first : h;
    }
    json_object_set_new(o, "members", members);
    json_object_set_new(o, "alive", json_integer((json_int_t)alive));
    if (differ) {
        json_object_set_new(o, "warning",
                            json_string("the hosts sharing this store run different "
                                        "configuration files (config_hash differs)"));
    }
    return o;
}

json_t *px_admin_status_json(px_admin *a)
{
    px_runtime *d = a->d;
    int64_t now = px_now_ms();
    json_t *st = json_object();
    json_object_set_new(st, "version", json_string(PX_VERSION));
    json_object_set_new(st, "abi", json_sprintf("%d.%d", PX_SDK_ABI_MAJOR, PX_SDK_ABI_MINOR));
    json_object_set_new(st, "pid", json_integer(getpid()));
    json_object_set_new(st, "started_at", iso_time(a->started_ms));
    json_object_set_new(st, "uptime_seconds", json_real((double)(now - a->started_ms) / 1000.0));
    json_object_set_new(st, "config", json_string(d->cfg ? d->cfg->path : ""));
    json_object_set_new(st, "data_dir", json_string(a->data_dir));
    json_t *ppath = json_array();
    for (size_t i = 0; d->cfg && i < d->cfg->nplugin_path; i++) {
        json_array_append_new(ppath, json_string(d->cfg->plugin_path[i]));
    }
    json_object_set_new(st, "plugin_path", ppath); /* absolute: as resolved at start */
    json_t *why = not_ready(a);
    json_object_set_new(st, "ready", json_boolean(json_array_size(why) == 0));
    json_object_set_new(st, "not_ready", why);
    json_object_set_new(st, "stopping", json_boolean(d->stopping != 0));

    json_t *insts = json_array();
    for (size_t i = 0; i < d->ninstances; i++) {
        json_array_append_new(insts, instance_json(d->instances[i], d->dispatch));
    }
    json_object_set_new(st, "instances", insts);
    json_t *pipes = json_array();
    for (size_t i = 0; d->cfg && i < d->cfg->npipelines; i++) {
        json_array_append_new(pipes, pipeline_json(&d->cfg->pipelines[i]));
    }
    json_object_set_new(st, "pipelines", pipes);
    json_object_set_new(st, "events",
                        json_pack("{sI sI sI sI sI}", "received", (json_int_t)d->events_in,
                                  "unrouted", (json_int_t)d->events_unrouted, "duplicate",
                                  (json_int_t)d->events_duplicate, "refused",
                                  (json_int_t)d->events_refused, "mapping_errors",
                                  (json_int_t)d->mapping_errors));
    json_object_set_new(st, "spool", spool_json(d->store));
    json_object_set_new(st, "cluster", cluster_json(d));
    if (d->dispatch) {
        px_dispatch_stats ds;
        px_dispatch_get_stats(d->dispatch, &ds);
        json_t *sinks = json_array();
        px_dispatch_foreach_sink(d->dispatch, on_sink_json, sinks);
        json_object_set_new(st, "dispatcher",
                            json_pack("{sI sI sI sI sI so}", "delivered",
                                      (json_int_t)ds.delivered, "retried", (json_int_t)ds.retried,
                                      "rejected", (json_int_t)ds.rejected, "dead",
                                      (json_int_t)ds.dead, "timeouts", (json_int_t)ds.timeouts,
                                      "sinks", sinks));
    } else {
        json_object_set_new(st, "dispatcher", json_null());
    }
    json_t *reload = json_pack("{sI sI}", "ok", (json_int_t)d->reloads_ok, "failed",
                               (json_int_t)d->reloads_failed);
    json_object_set_new(reload, "last_at", iso_time(d->last_reload_ms));
    json_object_set_new(reload, "last_error", d->last_reload_error
                                                  ? json_string(d->last_reload_error)
                                                  : json_null());
    json_object_set_new(st, "reload", reload);
    json_t *http = json_object();
    if (d->http) {
        json_object_set_new(http, "plugin",
                            json_pack("{si sI}", "port", px_http_server_port(d->http),
                                      "connections",
                                      (json_int_t)px_http_server_connections(d->http)));
    }
    if (a->srv) {
        json_object_set_new(http, "admin",
                            json_pack("{si sI}", "port", px_http_server_port(a->srv),
                                      "connections",
                                      (json_int_t)px_http_server_connections(a->srv)));
    }
    json_object_set_new(st, "http", http);
    return st;
}

static void on_status(px_http_request *req, void *arg)
{
    px_admin *a = arg;
    if (gate(a, req, ACCESS_TOKEN) == 0) {
        /* Errors in it quote what plugins logged: masked like a log line. */
        json_t *st = px_admin_status_json(a);
        px_log_redact_json(st);
        reply_json(req, 200, st);
    }
}

/* --- dead letters ------------------------------------------------------------------------ */

/* A number query parameter, when given: 0, or -1 when req was answered with a 400. */
static int query_i64(px_http_request *req, const char *key, int64_t *out, const char *msg)
{
    char buf[64];
    if (query_get(req, key, buf, sizeof(buf)) && parse_i64(buf, out) < 0) {
        reply_error(req, 400, msg);
        return -1;
    }
    return 0;
}

/* GET /admin/dlq: one page of the dead letters the filters select (sink, pipeline, reason text,
 * since and until in ms), latest first, with how many they select in all. */
static void on_dlq_list(px_http_request *req, void *arg)
{
    px_admin *a = arg;
    if (gate(a, req, ACCESS_TOKEN) < 0) {
        return;
    }
    char sink[256], pipeline[256], reason[256];
    int64_t since = 0, until = 0, offset = 0, limit = DLQ_DEFAULT_LIMIT;
    int has_sink = query_get(req, "sink", sink, sizeof(sink)) && sink[0];
    int has_pipe = query_get(req, "pipeline", pipeline, sizeof(pipeline)) && pipeline[0];
    int has_reason = query_get(req, "reason", reason, sizeof(reason)) && reason[0];
    if (query_i64(req, "since", &since, "since: milliseconds since the epoch expected") < 0 ||
        query_i64(req, "until", &until, "until: milliseconds since the epoch expected") < 0 ||
        query_i64(req, "offset", &offset, "offset: a number >= 0 expected") < 0 ||
        query_i64(req, "limit", &limit, "limit: a number >= 0 expected (0 = no limit)") < 0) {
        return;
    }
    px_dlq_query q = {.sink = has_sink ? sink : NULL, .pipeline = has_pipe ? pipeline : NULL,
                      .reason = has_reason ? reason : NULL, .since_ms = since, .until_ms = until,
                      .offset = (size_t)offset, .limit = (size_t)limit};
    json_t *list = NULL;
    int64_t total = 0;
    int rc = px_store_dlq_query(a->d->store, &q, &list, &total);
    if (rc < 0) {
        reply_error(req, 500, px_strerror(rc));
        return;
    }
    reply_json(req, 200, json_pack("{so sI sI sI}", "dead_letters", list, "total",
                                   (json_int_t)total, "offset", (json_int_t)offset, "limit",
                                   (json_int_t)limit));
}

static void on_dlq_show(px_http_request *req, void *arg)
{
    px_admin *a = arg;
    if (gate(a, req, ACCESS_TOKEN) < 0) {
        return;
    }
    const char *path = px_http_req_path(req);
    const char *tail = path + strlen("/admin/dlq/");
    int64_t id = 0;
    if (parse_i64(tail, &id) < 0 || id <= 0) {
        reply_error(req, 404, "no such dead letter");
        return;
    }
    json_t *rec = NULL;
    int rc = px_store_dlq_show(a->d->store, id, &rec);
    if (rc == PX_ENOENT) {
        reply_error(req, 404, "no such dead letter");
    } else if (rc < 0) {
        reply_error(req, 500, px_strerror(rc));
    } else {
        reply_json(req, 200, rec);
    }
}

/* The selection of a replay or purge body: {"ids":[...]} or {"all":true[,"sink":"x"]}. */
typedef struct selection {
    int64_t *ids;
    size_t nids;
    const char *sink; /* borrowed from body */
    int64_t before_ms;
    json_t *body;
} selection;

static int parse_selection(px_http_request *req, selection *sel, const char **why)
{
    memset(sel, 0, sizeof(*sel));
    size_t len = 0;
    const char *text = px_http_req_body(req, &len);
    json_error_t jerr;
    sel->body = json_loadb(text, len, 0, &jerr);
    if (!json_is_object(sel->body)) {
        *why = "a JSON object body is expected: {\"ids\":[...]} or {\"all\":true}";
        return -1;
    }
    json_t *ids = json_object_get(sel->body, "ids");
    json_t *all = json_object_get(sel->body, "all");
    json_t *sink = json_object_get(sel->body, "sink");
    json_t *before = json_object_get(sel->body, "before");
    if ((sink && !json_is_string(sink)) || (before && !json_is_integer(before))) {
        *why = "sink must be a string and before an integer (ms since the epoch)";
        return -1;
    }
    sel->sink = sink && json_string_length(sink) ? json_string_value(sink) : NULL;
    sel->before_ms = before ? json_integer_value(before) : 0;
    if (json_is_array(ids) && json_array_size(ids) > 0 && !json_is_true(all)) {
        sel->ids = px_xcalloc(json_array_size(ids), sizeof(*sel->ids));
        size_t i;
        json_t *v;
        json_array_foreach(ids, i, v) {
            if (!json_is_integer(v) || json_integer_value(v) <= 0) {
                *why = "ids must be positive integers";
                return -1;
            }
            sel->ids[sel->nids++] = json_integer_value(v);
        }
        return 0;
    }
    if (json_is_true(all) && !ids) {
        return 0;
    }
    *why = "give either a non-empty \"ids\" array or \"all\": true";
    return -1;
}

static void selection_free(selection *sel)
{
    free(sel->ids);
    json_decref(sel->body);
}

typedef struct replay_ctx {
    char **sinks;
    size_t nsinks;
} replay_ctx;

static void on_replayed(int64_t id, const char *sink, void *arg)
{
    replay_ctx *rc = arg;
    (void)id;
    for (size_t i = 0; i < rc->nsinks; i++) {
        if (strcmp(rc->sinks[i], sink) == 0) {
            return;
        }
    }
    rc->sinks = px_xrealloc(rc->sinks, (rc->nsinks + 1) * sizeof(*rc->sinks));
    rc->sinks[rc->nsinks++] = px_xstrdup(sink);
}

/* The gate and the selection of a dead-letter write: 0, or < 0 when req was answered. */
static int open_selection(px_admin *a, px_http_request *req, selection *sel)
{
    if (gate(a, req, ACCESS_TOKEN) < 0) {
        return -1;
    }
    const char *why = NULL;
    if (parse_selection(req, sel, &why) < 0) {
        selection_free(sel);
        reply_error(req, 400, why);
        return -1;
    }
    return 0;
}

static void on_dlq_replay(px_http_request *req, void *arg)
{
    px_admin *a = arg;
    selection sel;
    if (open_selection(a, req, &sel) < 0) {
        return;
    }
    replay_ctx rc = {0};
    int n = px_store_dlq_replay(a->d->store, sel.ids, sel.nids, sel.sink, on_replayed, &rc);
    selection_free(&sel);
    json_t *sinks = json_array();
    for (size_t i = 0; i < rc.nsinks; i++) {
        /* The running host delivers them now rather than at its next start. */
        if (a->d->dispatch && !a->d->stopping) {
            px_dispatch_kick(a->d->dispatch, rc.sinks[i]);
        }
        json_array_append_new(sinks, json_string(rc.sinks[i]));
        free(rc.sinks[i]);
    }
    free(rc.sinks);
    if (n < 0) {
        json_decref(sinks);
        reply_error(req, n == PX_EBUSY ? 503 : 500, px_strerror(n));
        return;
    }
    PX_LOG_INFO("admin", "dead letters replayed count=%d", n);
    reply_json(req, 200, json_pack("{si so}", "replayed", n, "sinks", sinks));
}

static void on_dlq_purge(px_http_request *req, void *arg)
{
    px_admin *a = arg;
    selection sel;
    if (open_selection(a, req, &sel) < 0) {
        return;
    }
    int n = px_store_dlq_purge(a->d->store, sel.ids, sel.nids, sel.sink, sel.before_ms);
    selection_free(&sel);
    if (n < 0) {
        reply_error(req, n == PX_EBUSY ? 503 : 500, px_strerror(n));
        return;
    }
    PX_LOG_INFO("admin", "dead letters purged count=%d", n);
    reply_json(req, 200, json_pack("{si}", "purged", n));
}

/* --- reload ------------------------------------------------------------------------------ */

static void on_reload(px_http_request *req, void *arg)
{
    px_admin *a = arg;
    if (gate(a, req, ACCESS_TOKEN) < 0) {
        return;
    }
    char inst[256];
    int has = query_get(req, "instance", inst, sizeof(inst)) && inst[0];
    char err[1024] = "";
    int rc = a->reload(a->reload_arg, has ? inst : NULL, err, sizeof(err));
    json_t *body = json_object();
    json_object_set_new(body, "instance", has ? json_string(inst) : json_null());
    if (rc == 0) {
        json_object_set_new(body, "result", json_string("ok"));
        if (err[0]) {
            json_object_set_new(body, "message", json_string(err));
        }
        reply_json(req, 200, body);
        return;
    }
    json_object_set_new(body, "result", json_string("failed"));
    json_object_set_new(body, "error", json_string(err[0] ? err : px_strerror(rc)));
    int status = (rc == PX_ENOTFOUND || rc == PX_ENOENT)                  ? 404
                 : (rc == PX_ESTATE || rc == PX_ECONFIG || rc == PX_EBUSY) ? 409
                 : rc == PX_EINVAL                                         ? 400
                                                                           : 500;
    reply_json(req, status, body);
}

/* GET /admin/reloads: the latest reloads (PX_RELOAD_LOG_MAX at most), latest first, with the
 * counts since the start. */
static void on_reloads(px_http_request *req, void *arg)
{
    px_admin *a = arg;
    if (gate(a, req, ACCESS_TOKEN) < 0) {
        return;
    }
    px_runtime *d = a->d;
    json_t *list = json_array();
    for (size_t i = json_array_size(d->reload_log); i > 0; i--) {
        json_t *e = json_deep_copy(json_array_get(d->reload_log, i - 1));
        json_object_set_new(e, "at", iso_time(json_integer_value(json_object_get(e, "at"))));
        json_array_append_new(list, e);
    }
    reply_json(req, 200, json_pack("{so sI sI}", "reloads", list, "ok",
                                   (json_int_t)d->reloads_ok, "failed",
                                   (json_int_t)d->reloads_failed));
}

/* GET /admin/config: the configuration in force, secrets masked (config_view.h). */
static void on_config(px_http_request *req, void *arg)
{
    px_admin *a = arg;
    if (gate(a, req, ACCESS_TOKEN) == 0) {
        reply_json(req, 200, px_config_view_json(a->d));
    }
}

/* --- console ------------------------------------------------------------------------------ */

/* What the console's pages may do: load their own scripts and styles and call this listener,
 * nothing else (no inline script, no other origin, no framing). */
#define CONSOLE_CSP                                                                           \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "         \
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

/* GET / and /console/NAME: the console's files (console_assets.h), open to anyone: they hold no
 * data, and each call they make carries the token the operator typed. */
static void on_console(px_http_request *req, void *arg)
{
    px_admin *a = arg;
    if (gate(a, req, ACCESS_OPEN) < 0) {
        return;
    }
    const char *path = px_http_req_path(req);
    for (const px_console_asset *f = px_console_assets; f->path; f++) {
        if (strcmp(f->path, path) == 0) {
            px_http_set_header(req, "Content-Security-Policy", CONSOLE_CSP);
            px_http_set_header(req, "X-Content-Type-Options", "nosniff");
            px_http_set_header(req, "X-Frame-Options", "DENY");
            px_http_set_header(req, "Referrer-Policy", "no-referrer");
            px_http_set_header(req, "Cache-Control", "no-cache");
            px_http_respond(req, 200, f->type, (const char *)f->data, f->len);
            return;
        }
    }
    reply_error(req, 404, "not found");
}

/* --- route (dry run) ---------------------------------------------------------------------- */

/* POST /admin/route: what the running host's pipelines would make of the event in the body
 * (route_explain.h), with nothing stored or delivered. */
static void on_route(px_http_request *req, void *arg)
{
    px_admin *a = arg;
    if (gate(a, req, ACCESS_TOKEN) < 0) {
        return;
    }
    if (!a->d->router || !a->d->cfg) {
        reply_error(req, 503, "no configuration in force");
        return;
    }
    size_t len = 0;
    const char *text = px_http_req_body(req, &len);
    json_error_t jerr;
    json_t *doc = json_loadb(text, len, 0, &jerr);
    px_route_input in;
    char err[512];
    if (!doc) {
        reply_json(req, 400, json_pack("{ss}", "error", "a JSON object body is expected: "
                                       "{\"source\", \"type\", \"payload\", ...}"));
        return;
    }
    int rc = px_route_input_parse(doc, px_now_ms(), &in, err, sizeof(err));
    json_decref(doc);
    if (rc < 0) {
        reply_error(req, 400, err);
        return;
    }
    if (in.source && !px_config_instance(a->d->cfg, in.source)) {
        snprintf(err, sizeof(err), "source \"%.200s\": no such instance", in.source);
        px_route_input_clear(&in);
        reply_error(req, 400, err);
        return;
    }
    json_t *out = px_route_explain(a->d->router->router, &in);
    px_route_input_clear(&in);
    /* a with: template may quote a secret of the configuration */
    px_log_redact_json(out);
    reply_json(req, 200, out);
}

/* --- tap ---------------------------------------------------------------------------------- */

/* One GET /admin/tap: a streamed answer fed by the runtime's tap hub (tap.h). */
struct tap_client {
    px_admin *a;
    px_http_request *req; /* streaming; NULL once ended */
    px_tap_sub *sub;      /* NULL once closed */
    tap_client *next;
};

static int tap_write(void *arg, const char *line, size_t len)
{
    tap_client *tc = arg;
    return tc->req ? px_http_stream_write(tc->req, line, len) : PX_ESTATE;
}

static size_t tap_backlog(void *arg)
{
    tap_client *tc = arg;
    return tc->req ? px_http_stream_backlog(tc->req) : 0;
}

/* Ends tc: a closing line (when its connection still stands) saying why and what was dropped,
 * the end of the stream, and tc itself. */
static void tap_finish(tap_client *tc, const char *why)
{
    px_admin *a = tc->a;
    for (tap_client **pp = &a->taps; *pp; pp = &(*pp)->next) {
        if (*pp == tc) {
            *pp = tc->next;
            break;
        }
    }
    uint64_t dropped = tc->sub ? px_tap_dropped(tc->sub) : 0;
    uint64_t written = tc->sub ? px_tap_written(tc->sub) : 0;
    px_tap_close(&a->d->tap, tc->sub);
    if (tc->req) {
        if (why) {
            char line[160];
            int n = snprintf(line, sizeof(line), "{\"kind\":\"end\",\"reason\":\"%s\","
                             "\"records\":%llu,\"dropped\":%llu}\n", why,
                             (unsigned long long)written, (unsigned long long)dropped);
            px_http_stream_write(tc->req, line, (size_t)n);
        }
        px_http_stream_end(tc->req);
    }
    PX_LOG_INFO("admin", "tap closed reason=%s records=%llu dropped=%llu",
                why ? why : "reader left", (unsigned long long)written, (unsigned long long)dropped);
    free(tc);
}

static void on_tap_done(void *arg)
{
    tap_finish(arg, "limit");
}

static void on_tap_gone(px_http_request *req, void *arg)
{
    (void)req;
    tap_finish(arg, NULL);
}

/* A filter naming something the configuration does not have is a typo: refused, not silent. */
static const char *tap_unknown(const px_config *cfg, const char *pipeline, const char *sink,
                               const char *source)
{
    if (pipeline) {
        size_t i = 0;
        while (i < cfg->npipelines && strcmp(cfg->pipelines[i].name, pipeline) != 0) {
            i++;
        }
        if (i == cfg->npipelines) {
            return "pipeline: no such pipeline";
        }
    }
    if (sink && !px_config_instance(cfg, sink)) {
        return "sink: no such instance";
    }
    if (source && !px_config_instance(cfg, source)) {
        return "source: no such instance";
    }
    return NULL;
}

static void on_tap(px_http_request *req, void *arg)
{
    px_admin *a = arg;
    if (gate(a, req, ACCESS_TOKEN) < 0) {
        return;
    }
    char pipeline[256], sink[256], source[256], buf[64];
    int has_p = query_get(req, "pipeline", pipeline, sizeof(pipeline)) && pipeline[0];
    int has_k = query_get(req, "sink", sink, sizeof(sink)) && sink[0];
    int has_s = query_get(req, "source", source, sizeof(source)) && source[0];
    int64_t limit = 0;
    if (query_get(req, "limit", buf, sizeof(buf)) && parse_i64(buf, &limit) < 0) {
        reply_error(req, 400, "limit: a number >= 0 expected (0 = no limit)");
        return;
    }
    const char *unknown = a->d->cfg ? tap_unknown(a->d->cfg, has_p ? pipeline : NULL,
                                                  has_k ? sink : NULL, has_s ? source : NULL)
                                    : NULL;
    if (unknown) {
        reply_error(req, 400, unknown);
        return;
    }
    tap_client *tc = px_xcalloc(1, sizeof(*tc));
    tc->a = a;
    tc->req = req;
    px_tap_filter f = {.pipeline = has_p ? pipeline : NULL, .sink = has_k ? sink : NULL,
                       .source = has_s ? source : NULL, .limit = (uint64_t)limit};
    px_tap_writer w = {.write = tap_write, .backlog = tap_backlog, .done = on_tap_done,
                       .arg = tc};
    if (px_tap_open(&a->d->tap, &f, &w, &tc->sub) < 0) {
        free(tc);
        char msg[96];
        snprintf(msg, sizeof(msg), "%d taps are open, the most there may be", PX_TAP_MAX_SUBS);
        reply_error(req, 429, msg);
        return;
    }
    if (px_http_stream_start(req, 200, "application/x-ndjson", on_tap_gone, tc) < 0) {
        px_tap_close(&a->d->tap, tc->sub);
        free(tc);
        px_http_respond(req, 500, NULL, "{\"error\":\"gone\"}", 16);
        return;
    }
    tc->next = a->taps;
    a->taps = tc;
    json_t *hello = json_pack("{ss so so so sI sI}", "kind", "tap", "pipeline",
                              has_p ? json_string(pipeline) : json_null(), "sink",
                              has_k ? json_string(sink) : json_null(), "source",
                              has_s ? json_string(source) : json_null(), "limit",
                              (json_int_t)limit, "max_backlog",
                              (json_int_t)a->d->tap.max_backlog);
    char *text = json_dumps(hello, JSON_COMPACT);
    json_decref(hello);
    if (text) {
        px_http_stream_write(req, text, strlen(text));
        px_http_stream_write(req, "\n", 1);
        free(text);
    }
    PX_LOG_INFO("admin", "tap opened peer=%s pipeline=%s sink=%s source=%s limit=%lld",
                px_http_req_remote(req), has_p ? pipeline : "*", has_k ? sink : "*",
                has_s ? source : "*", (long long)limit);
}

/* --- lifecycle --------------------------------------------------------------------------- */

/* The token cfg asks for: host.admin.token, else the token file in data_dir (borrowed; the one
 * the host runs on, which only a restart changes), made on first use; NULL in *out with auth:
 * none. 0, or < 0 with one line in err. */
static int resolve_token(const px_config *cfg, const char *data_dir, char **out, char *err,
                         size_t errlen)
{
    *out = NULL;
    if (cfg->admin_auth == PX_ADMIN_AUTH_NONE) {
        return 0;
    }
    if (cfg->admin_token) {
        *out = px_xstrdup(cfg->admin_token);
        return 0;
    }
    int created = 0;
    int rc = px_admin_token_load(data_dir, 1, out, &created, err, errlen);
    if (rc < 0) {
        return rc;
    }
    px_log_add_secret(*out);
    if (created) {
        PX_LOG_INFO("host", "admin token created file=%s/%s mode=0600", data_dir,
                    PX_ADMIN_TOKEN_FILE);
    }
    return 0;
}

static void add_routes(px_admin *a, px_http_server *srv)
{
    static const struct {
        const char *method, *path;
        unsigned flags;
        px_http_handler cb;
    } routes[] = {
        {"GET", "/healthz", 0, on_healthz},
        {"GET", "/readyz", 0, on_readyz},
        {"GET", "/metrics", 0, on_metrics},
        {"GET", "/admin/status", 0, on_status},
        {"GET", "/admin/dlq", 0, on_dlq_list},
        {"GET", "/admin/dlq/", PX_ROUTE_PREFIX, on_dlq_show},
        {"POST", "/admin/dlq/replay", 0, on_dlq_replay},
        {"POST", "/admin/dlq/purge", 0, on_dlq_purge},
        {"POST", "/admin/reload", 0, on_reload},
        {"POST", "/admin/route", 0, on_route},
        {"GET", "/admin/tap", 0, on_tap},
        {"GET", "/admin/reloads", 0, on_reloads},
        {"GET", "/admin/config", 0, on_config},
        {"GET", "/", 0, on_console},
        {"GET", "/console/", PX_ROUTE_PREFIX, on_console},
    };
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        px_http_server_route(srv, routes[i].method, routes[i].path, routes[i].flags,
                             routes[i].cb, a, a);
    }
}

static int bind_listener(px_runtime *d, const char *listen, px_http_server **out, char *err,
                         size_t errlen)
{
    px_http_server_options ho = {.listen = listen, .max_connections = 64};
    return px_http_server_create(d->loop, &ho, out, err, errlen);
}

/* The listening line names where the token comes from (never the token itself). */
static void log_listening(px_admin *a, const px_config *cfg)
{
    const char *source = cfg->admin_auth == PX_ADMIN_AUTH_NONE ? "auth=none"
                         : cfg->admin_token                    ? "auth=token source=config"
                                                               : NULL;
    if (source) {
        PX_LOG_INFO("host", "admin listening address=%s port=%d %s", a->listen,
                    px_http_server_port(a->srv), source);
    } else {
        PX_LOG_INFO("host", "admin listening address=%s port=%d auth=token source=file "
                    "file=%s/%s", a->listen, px_http_server_port(a->srv), a->data_dir,
                    PX_ADMIN_TOKEN_FILE);
    }
    char warn[512];
    if (px_config_admin_warning(cfg, warn, sizeof(warn))) {
        PX_LOG_WARN("host", "%s", warn);
    }
}

int px_admin_create(px_runtime *d, px_admin_reload_fn reload, void *reload_arg, px_admin **out)
{
    *out = NULL;
    const px_config *cfg = d->cfg;
    if (!cfg) {
        return 0;
    }
    px_admin *a = px_xcalloc(1, sizeof(*a));
    a->d = d;
    a->reload = reload;
    a->reload_arg = reload_arg;
    a->started_ms = px_now_ms();
    char real[PATH_MAX];
    a->data_dir = px_xstrdup(realpath(cfg->data_dir, real) ? real : cfg->data_dir);
    define_metrics(a);
    *out = a;
    if (!cfg->admin_listen || !*cfg->admin_listen) {
        return 0;
    }
    a->listen = px_xstrdup(cfg->admin_listen);
    char err[1024];
    int rc = resolve_token(cfg, cfg->data_dir, &a->token, err, sizeof(err));
    if (rc < 0) {
        PX_LOG_ERR("host", "admin API not started: %s", err);
        return rc;
    }
    rc = bind_listener(d, cfg->admin_listen, &a->srv, err, sizeof(err));
    if (rc < 0) {
        PX_LOG_ERR("host", "admin listener failed address=%s error=\"%s\"; running without the "
                   "admin API", cfg->admin_listen, err);
        return rc;
    }
    add_routes(a, a->srv);
    log_listening(a, cfg);
    return 0;
}

int px_admin_port(const px_admin *a)
{
    return a && a->srv ? px_http_server_port(a->srv) : 0;
}

struct px_admin_change {
    char *token;          /* owned */
    int rebind;           /* the listener changes (to srv, or to none) */
    char *listen;         /* owned; NULL = none */
    px_http_server *srv;  /* owned until committed */
};

static int same_listen(const char *x, const char *y)
{
    return strcmp(x ? x : "", y ? y : "") == 0;
}

int px_admin_prepare(px_admin *a, const px_config *ncfg, px_admin_change **out, char *err,
                     size_t errlen)
{
    *out = NULL;
    if (!a) {
        return 0;
    }
    const char *listen = ncfg->admin_listen && *ncfg->admin_listen ? ncfg->admin_listen : NULL;
    px_admin_change *ch = px_xcalloc(1, sizeof(*ch));
    char e[768];
    int rc = listen ? resolve_token(ncfg, a->d->cfg->data_dir, &ch->token, e, sizeof(e)) : 0;
    if (rc < 0) {
        snprintf(err, errlen, "admin token: %s", e);
        px_admin_abort(ch);
        return rc;
    }
    int changed = !same_listen(listen, a->listen);
    if (changed || (listen && !a->srv)) {
        ch->rebind = 1;
        ch->listen = listen ? px_xstrdup(listen) : NULL;
        rc = listen ? bind_listener(a->d, listen, &ch->srv, e, sizeof(e)) : 0;
        if (rc < 0 && changed) {
            snprintf(err, errlen, "host.admin.listen %s: %s; the admin API stays at %s (a "
                     "restart applies an address the running listener holds)", listen, e,
                     a->listen && a->srv ? a->listen : "none");
            px_admin_abort(ch);
            return PX_ECONFIG;
        }
        if (rc < 0) {
            PX_LOG_WARN("reload", "admin listener still failing address=%s error=\"%s\"",
                        listen, e);
            ch->rebind = 0;
        }
    }
    *out = ch;
    return 0;
}

void px_admin_abort(px_admin_change *ch)
{
    if (!ch) {
        return;
    }
    px_http_server_close(ch->srv, NULL, NULL);
    free(ch->listen);
    free(ch->token);
    free(ch);
}

static void admin_free(px_admin *a)
{
    free(a->data_dir);
    free(a->listen);
    free(a->token);
    free(a);
}

static void on_retired_closed(void *arg)
{
    px_admin *a = arg;
    a->nretiring--;
    if (a->closing && !a->srv_closing && a->nretiring == 0) {
        admin_free(a);
    }
}

void px_admin_commit(px_admin *a, px_admin_change *ch)
{
    if (!a || !ch) {
        return;
    }
    free(a->token);
    a->token = ch->token;
    ch->token = NULL;
    if (ch->rebind) {
        if (a->srv) {
            /* The old listener stops accepting now; requests it took are answered first. */
            PX_LOG_INFO("host", "admin listener closing address=%s port=%d", a->listen,
                        px_http_server_port(a->srv));
            a->nretiring++;
            px_http_server_retire(a->srv, on_retired_closed, a);
        }
        a->srv = ch->srv;
        ch->srv = NULL;
        free(a->listen);
        a->listen = ch->listen;
        ch->listen = NULL;
        if (a->srv) {
            add_routes(a, a->srv);
            log_listening(a, a->d->cfg);
        }
    }
    px_admin_abort(ch);
}

static void on_srv_closed(void *arg)
{
    px_admin *a = arg;
    a->srv_closing = 0;
    if (a->nretiring == 0) {
        admin_free(a);
    }
}

void px_admin_close(px_admin *a)
{
    if (!a) {
        return;
    }
    while (a->taps) {
        tap_finish(a->taps, "host stopping");
    }
    a->closing = 1;
    if (!a->srv) {
        on_srv_closed(a);
        return;
    }
    a->srv_closing = 1;
    px_http_server *srv = a->srv;
    a->srv = NULL;
    px_http_server_close(srv, on_srv_closed, a);
}
