/* The runtime on a store its caller hands it (lifecycle.h: px_runtime_create_on_store): the real
 * ingest, router and dispatch carry events from testsource to testsink through the in-memory
 * store, and nothing is written to data_dir's SQLite spool. Links pxcore (the whole runtime). */
#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "config.h"
#include "lifecycle.h"
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

/* The config of one testsource emitting EVENTS events to one testsink, in dir. */
static char *config_text(const char *dir)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    fprintf(f,
            "version: 1\n"
            "host:\n"
            "  data_dir: %s\n"
            "  plugin_path: %s\n"
            "  http: { listen: null }\n"
            "  admin: { listen: \"\", token: \"\" }\n"
            "plugins:\n"
            "  src: { plugin: testsource, config: { count: %d, ack_file: %s/acks } }\n"
            "  out: { plugin: testsink, config: { file: %s/out.jsonl } }\n"
            "pipelines:\n"
            "  - { name: p, from: src, to: { sink: out } }\n",
            dir, PX_TEST_PLUGIN_DIR, EVENTS, dir, dir);
    fclose(f);
    return text;
}

static void test_runtime_on_memory_store(void)
{
    char dir[64] = "/tmp/px_runtime_XXXXXX";
    PX_ASSERT(mkdtemp(dir) != NULL);
    char *text = config_text(dir);
    char err[512] = "";
    px_config *cfg = NULL;
    int rc = px_config_parse("test.yaml", text, strlen(text), &cfg, err, sizeof(err));
    free(text);
    if (rc != 0) {
        fprintf(stderr, "  %s\n", err);
    }
    PX_ASSERT_INT_EQ(rc, 0);

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

PX_TEST_MAIN(PX_TEST(test_runtime_on_memory_store))
