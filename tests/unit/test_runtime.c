/* The runtime on a store its caller hands it (lifecycle.h: px_runtime_create_on_store): the real
 * ingest, router and dispatch carry events from testsource to testsink through the in-memory
 * store, and nothing is written to data_dir's SQLite spool. And the runtime with what a checking
 * host puts at its edges (px_runtime_create_with): in-process plugins (loader.h), the table
 * handed to plugins, and the watch hook told of every call into a generation. And
 * px_runtime_fire_timers, which runs the plugins' pending timers without waiting for them. Links
 * pxcore (the whole runtime). */
#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "api.h"
#include "config.h"
#include "lifecycle.h"
#include "loader.h"
#include "runtime.h"
#include "store.h"
#include "test.h"

enum { EVENTS = 5, DEADLINE_MS = 30000, POLL_MS = 10 };

typedef struct watch {
    px_runtime *rt;
    char out[128];
    uv_timer_t timer;
    uint64_t started;
    int lines;
} watch;

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static int count_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        return 0;
    }
    int n = 0, c;
    while ((c = fgetc(f)) != EOF) {
        n += c == '\n';
    }
    fclose(f);
    return n;
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* Polls the sink's file; once every event arrived (or the deadline passed) stops the runtime. */
static void on_poll(uv_timer_t *t)
{
    watch *w = t->data;
    w->lines = count_lines(w->out);
    if (w->lines >= EVENTS || uv_now(t->loop) - w->started > DEADLINE_MS) {
        uv_close((uv_handle_t *)t, NULL);
        px_runtime_shutdown(w->rt);
    }
}

/* Parses a config named `name` whose host block is data_dir `dir` with the test plugins' folder
 * and no HTTP and no admin listener, followed by `rest` (plugins and pipelines). NULL, with the
 * error printed, on failure. */
static px_config *host_config(const char *name, const char *dir, const char *rest)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    fprintf(f,
            "version: 1\n"
            "host: { data_dir: %s, plugin_path: %s, http: { listen: null },\n"
            "        admin: { listen: \"\", token: \"\" } }\n"
            "%s",
            dir, PX_TEST_PLUGIN_DIR, rest);
    fclose(f);
    char err[512] = "";
    px_config *cfg = NULL;
    if (px_config_parse(name, text, len, &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "  %s\n", err);
        cfg = NULL;
    }
    free(text);
    return cfg;
}

static void test_runtime_on_memory_store(void)
{
    char dir[64] = "/tmp/px_runtime_XXXXXX";
    PX_ASSERT(mkdtemp(dir) != NULL);
    /* one testsource emitting EVENTS events to one testsink */
    char rest[512];
    snprintf(rest, sizeof(rest),
             "plugins:\n"
             "  src: { plugin: testsource, config: { count: %d, ack_file: %s/acks } }\n"
             "  out: { plugin: testsink, config: { file: %s/out.jsonl } }\n"
             "pipelines:\n"
             "  - { name: p, from: src, to: { sink: out } }\n",
             EVENTS, dir, dir);
    px_config *cfg = host_config("test.yaml", dir, rest);
    PX_ASSERT(cfg != NULL);
    char err[512] = "";
    int rc;

    uv_loop_t loop;
    uv_loop_init(&loop);
    px_store_options so = {.dedupe_window_ms = cfg->dedupe_window_ms};
    px_store *store = NULL;
    PX_ASSERT_INT_EQ(px_store_open_memory(&loop, &so, &store), 0);
    watch w = {0};
    rc = px_runtime_create_on_store(&loop, cfg, store, &w.rt, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "  %s\n", err);
    }
    PX_ASSERT_INT_EQ(rc, 0);
    PX_ASSERT(w.rt->store == store);
    PX_ASSERT_INT_EQ(px_runtime_start(w.rt, err, sizeof(err)), 0);

    snprintf(w.out, sizeof(w.out), "%s/out.jsonl", dir);
    uv_timer_init(&loop, &w.timer);
    w.timer.data = &w;
    w.started = uv_now(&loop);
    uv_timer_start(&w.timer, on_poll, POLL_MS, POLL_MS);
    uv_run(&loop, UV_RUN_DEFAULT);
    px_runtime_destroy(w.rt);
    PX_ASSERT_INT_EQ(uv_loop_close(&loop), 0);

    char spool[128];
    snprintf(spool, sizeof(spool), "%s/spool.db", dir);
    int spool_written = file_exists(spool);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    PX_ASSERT_INT_EQ(w.lines, EVENTS);
    PX_ASSERT_INT_EQ(spool_written, 0);
}

/* --- edges: in-process plugins, a wrapped host table, the watch hook ------------------------ */

enum { EDGE_EVENTS = 3 };

typedef struct edges_run {
    px_runtime *rt;
    px_host_api real;         /* what the wrapped table calls through to */
    px_plugin_ctx *src;       /* the in-process source's generation */
    int emits_seen;           /* emits that went through the wrapped table */
    int delivered;            /* deliveries the sink completed */
    char calls[512];          /* the watch hook's record of the sink's calls */
    uv_timer_t timer;
} edges_run;

static edges_run er;

static int wrapped_emit(px_plugin_ctx *ctx, px_event *ev, px_persisted_cb cb, void *arg)
{
    er.emits_seen++;
    return er.real.emit(ctx, ev, cb, arg);
}

static int src_init(px_plugin_ctx *ctx, const json_t *config, void **state)
{
    (void)config;
    er.src = ctx;
    *state = ctx;
    return 0;
}

static void edge_destroy(void *state)
{
    (void)state;
}

static const px_plugin_desc src_desc = {
    PX_PLUGIN_DESC_INIT, .kind = PX_KIND_SOURCE, .name = "edge_src", .version = "1",
    .init = src_init, .destroy = edge_destroy,
};

static const px_host_api *sink_host; /* the table the sink was given */

static int sink_init(px_plugin_ctx *ctx, const json_t *config, void **state)
{
    (void)config;
    *state = ctx;
    return 0;
}

static void sink_deliver(void *state, px_delivery *d)
{
    (void)state;
    er.delivered++;
    sink_host->complete(d, PX_OK, "", 0);
}

static const px_plugin_desc sink_desc = {
    PX_PLUGIN_DESC_INIT, .kind = PX_KIND_SINK, .name = "edge_sink", .version = "1",
    .init = sink_init, .deliver = sink_deliver, .destroy = edge_destroy,
};

static const px_plugin_desc *src_entry(const px_host_api *api)
{
    (void)api;
    return &src_desc;
}

static const px_plugin_desc *sink_entry(const px_host_api *api)
{
    sink_host = api;
    return &sink_desc;
}

static void on_edge_watch(void *arg, px_plugin_ctx *gen, const char *call, const void *what,
                          int after, int rc)
{
    (void)arg, (void)rc;
    if (strcmp(gen->inst->name, "out") != 0 || after) {
        return;
    }
    if (strcmp(call, "deliver") == 0 && !what) {
        return; /* a delivery always names its handle */
    }
    size_t n = strlen(er.calls);
    snprintf(er.calls + n, sizeof(er.calls) - n, "%s%s", n ? "," : "", call);
}

static void on_edge_tick(uv_timer_t *t)
{
    if (er.delivered >= EDGE_EVENTS || uv_now(t->loop) > DEADLINE_MS) {
        uv_close((uv_handle_t *)t, NULL);
        px_runtime_shutdown(er.rt);
    }
}

static void test_runtime_with_edges(void)
{
    char dir[64] = "/tmp/px_edges_XXXXXX";
    PX_ASSERT(mkdtemp(dir) != NULL);
    PX_ASSERT_INT_EQ(px_loader_add_builtin("edge_src", src_entry), 0);
    PX_ASSERT_INT_EQ(px_loader_add_builtin("edge_sink", sink_entry), 0);
    px_config *cfg = host_config(
        "edges.yaml", dir,
        "plugins:\n"
        "  in: { plugin: edge_src }\n"
        "  out: { plugin: edge_sink }\n"
        "pipelines:\n"
        "  - { name: p, from: in, to: { sink: out, with: { n: \"{{/n}}\" } } }\n");
    PX_ASSERT(cfg != NULL);
    char err[512] = "";

    uv_loop_t loop;
    uv_loop_init(&loop);
    px_store *store = NULL;
    PX_ASSERT_INT_EQ(px_store_open_memory(&loop, NULL, &store), 0);
    px_api_init(&er.real);
    px_host_api wrapped = er.real;
    wrapped.emit = wrapped_emit;
    px_runtime_edges edges = {.store = store, .plugin_api = &wrapped, .watch = on_edge_watch};
    int rc = px_runtime_create_with(&loop, cfg, &edges, &er.rt, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "  %s\n", err);
    }
    PX_ASSERT_INT_EQ(rc, 0);
    PX_ASSERT(sink_host == &wrapped);
    PX_ASSERT_INT_EQ(px_runtime_start(er.rt, err, sizeof(err)), 0);
    for (int i = 0; i < EDGE_EVENTS; i++) {
        px_event *ev = wrapped.event_create(er.src, "t", json_pack("{s:i}", "n", i));
        PX_ASSERT_INT_EQ(wrapped.emit(er.src, ev, NULL, NULL), 0);
    }
    uv_timer_init(&loop, &er.timer);
    uv_timer_start(&er.timer, on_edge_tick, POLL_MS, POLL_MS);
    uv_run(&loop, UV_RUN_DEFAULT);
    px_runtime_destroy(er.rt);
    PX_ASSERT_INT_EQ(uv_loop_close(&loop), 0);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);

    PX_ASSERT_INT_EQ(er.emits_seen, EDGE_EVENTS);
    PX_ASSERT_INT_EQ(er.delivered, EDGE_EVENTS);
    PX_ASSERT_STR_EQ(er.calls, "init,start,deliver,deliver,deliver,stop,destroy");
}

/* A source that starts, at start, a one-shot and a repeating timer an hour away and a one-shot it
 * stops at once; the repeating one starts a one-shot of its own the first time it runs. */
static struct {
    const px_host_api *api;
    px_plugin_ctx *ctx;
    px_timer *once, *every, *stopped, *late;
    int once_runs, every_runs, stopped_runs, late_runs;
} tk;

static void on_once(void *arg)
{
    (void)arg;
    tk.once_runs++;
}

static void on_stopped(void *arg)
{
    (void)arg;
    tk.stopped_runs++;
}

static void on_late(void *arg)
{
    (void)arg;
    tk.late_runs++;
}

static void on_every(void *arg)
{
    (void)arg;
    if (tk.every_runs++ == 0) {
        tk.api->timer_start(tk.ctx, 3600000, 0, on_late, NULL, &tk.late);
    }
}

static int tick_init(px_plugin_ctx *ctx, const json_t *config, void **state)
{
    (void)config;
    tk.ctx = ctx;
    *state = ctx;
    return 0;
}

static int tick_start(void *state)
{
    (void)state;
    tk.api->timer_start(tk.ctx, 3600000, 0, on_once, NULL, &tk.once);
    tk.api->timer_start(tk.ctx, 3600000, 3600000, on_every, NULL, &tk.every);
    tk.api->timer_start(tk.ctx, 3600000, 0, on_stopped, NULL, &tk.stopped);
    tk.api->timer_stop(tk.stopped);
    return 0;
}

static const px_plugin_desc tick_desc = {
    PX_PLUGIN_DESC_INIT, .kind = PX_KIND_SOURCE, .name = "tick_src", .version = "1",
    .init = tick_init, .start = tick_start, .destroy = edge_destroy,
};

static const px_plugin_desc *tick_entry(const px_host_api *api)
{
    tk.api = api;
    return &tick_desc;
}

static void test_runtime_fire_timers(void)
{
    char dir[64] = "/tmp/px_ticks_XXXXXX";
    PX_ASSERT(mkdtemp(dir) != NULL);
    PX_ASSERT_INT_EQ(px_loader_add_builtin("tick_src", tick_entry), 0);
    px_config *cfg = host_config("ticks.yaml", dir, "plugins:\n  ticks: { plugin: tick_src }\n");
    PX_ASSERT(cfg != NULL);
    char err[512] = "";
    uv_loop_t loop;
    uv_loop_init(&loop);
    px_store *store = NULL;
    PX_ASSERT_INT_EQ(px_store_open_memory(&loop, NULL, &store), 0);
    px_runtime_edges edges = {.store = store};
    px_runtime *rt = NULL;
    PX_ASSERT_INT_EQ(px_runtime_create_with(&loop, cfg, &edges, &rt, err, sizeof(err)), 0);
    PX_ASSERT_INT_EQ(px_runtime_start(rt, err, sizeof(err)), 0);

    /* the one-shot and the repeating one; not the stopped one, nor one started meanwhile */
    PX_ASSERT_INT_EQ((int)px_runtime_fire_timers(rt), 2);
    PX_ASSERT_INT_EQ(tk.once_runs, 1);
    PX_ASSERT_INT_EQ(tk.every_runs, 1);
    PX_ASSERT_INT_EQ(tk.stopped_runs, 0);
    PX_ASSERT_INT_EQ(tk.late_runs, 0);
    /* a fired one-shot is no longer pending; the repeating one and the late one are */
    PX_ASSERT_INT_EQ((int)px_runtime_fire_timers(rt), 2);
    PX_ASSERT_INT_EQ(tk.once_runs, 1);
    PX_ASSERT_INT_EQ(tk.every_runs, 2);
    PX_ASSERT_INT_EQ(tk.late_runs, 1);
    PX_ASSERT_INT_EQ((int)px_runtime_fire_timers(rt), 1);
    PX_ASSERT_INT_EQ(tk.every_runs, 3);

    px_runtime_shutdown(rt);
    uv_run(&loop, UV_RUN_DEFAULT);
    px_runtime_destroy(rt);
    PX_ASSERT_INT_EQ(uv_loop_close(&loop), 0);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

PX_TEST_MAIN(PX_TEST(test_runtime_on_memory_store), PX_TEST(test_runtime_with_edges),
             PX_TEST(test_runtime_fire_timers))
