/* Put throughput of one store backend, for bench/store.py: N puts of the payload in PAYLOAD_FILE
 * (one delivery each, a dedupe key each), PER_TURN per loop turn, as fast as the store takes them
 * (a put refused with PX_EBUSY is tried again next turn), at most MAX_IN_FLIGHT waiting for their
 * completion. Prints one line of figures: puts/s from
 * the first call to the last completion, commits, operations per commit, commits/s and the
 * slowest commit.
 * Usage: store_put sqlite DIR|postgres URL PAYLOAD_FILE N PER_TURN [fsync] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "err.h"
#include "store.h"

static int completed, stored, busy;

static void on_put(int status, void *arg)
{
    (void)arg;
    completed++;
    stored += status == PX_STORE_STORED;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        return NULL;
    }
    static char text[1 << 20];
    *len = fread(text, 1, sizeof(text), f);
    fclose(f);
    return text;
}

/* Puts waiting for their completion before the bench stops putting and waits. */
#define MAX_IN_FLIGHT 8192

/* Runs the loop once: blocks for completions when MAX_IN_FLIGHT are waiting (or every put is
 * made), else only polls, so puts go on while the store commits (as a source's would). */
static void turn(uv_loop_t *loop, int in_flight, int all_sent)
{
    if (in_flight >= MAX_IN_FLIGHT || (all_sent && in_flight > 0)) {
        uv_run(loop, UV_RUN_ONCE);
    } else {
        uv_run(loop, UV_RUN_NOWAIT);
        if (in_flight == 0 && busy) {
            usleep(200);
        }
    }
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: store_put sqlite DIR|postgres URL PAYLOAD_FILE N PER_TURN [fsync]\n");
        return 2;
    }
    size_t plen = 0;
    const char *payload = read_file(argv[3], &plen);
    int n = atoi(argv[4]), per_turn = atoi(argv[5]);
    if (!payload || n <= 0 || per_turn <= 0) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    px_store_options opt = {.durability = argc > 6 ? PX_DURABILITY_FSYNC : PX_DURABILITY_NORMAL,
                            .dedupe_window_ms = 3600000, .host_id = "bench", .version = "bench"};
    px_store *s = NULL;
    char err[512];
    int rc = strcmp(argv[1], "sqlite") == 0
                 ? px_store_open_sqlite(&loop, argv[2], &opt, &s, err, sizeof(err))
                 : px_store_open_pg(&loop, argv[2], &opt, &s, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "open: %s\n", err);
        return 1;
    }
    double t0 = now_s();
    for (int sent = 0; sent < n || completed < sent;) {
        for (int k = 0; k < per_turn && sent < n; k++) {
            char id[32], key[32];
            snprintf(id, sizeof(id), "ev-%d", sent);
            snprintf(key, sizeof(key), "key-%d", sent);
            px_store_event ev = {.id = id, .type = "bench", .source = "src", .dedupe_key = key,
                                 .time_ms = 1700000000000, .payload = payload,
                                 .payload_len = plen};
            px_store_row row = {.pipeline = "p", .sink = "out", .action = "send"};
            if (px_store_put(s, &ev, &row, 1, on_put, NULL) != 0) {
                busy++;
                break;
            }
            sent++;
        }
        turn(&loop, sent - completed, sent == n);
    }
    double t1 = now_s();
    px_store_stats st;
    px_store_get_stats(s, &st);
    printf("%s puts=%d stored=%d refused_busy=%d seconds=%.3f puts_per_s=%.0f commits=%llu "
           "ops_per_commit=%.1f commits_per_s=%.0f max_batch=%llu commit_ms_max=%.1f\n",
           argv[1], n, stored, busy, t1 - t0, n / (t1 - t0), (unsigned long long)st.commits,
           st.commits ? (double)st.rows_committed / (double)st.commits : 0.0,
           (double)st.commits / (t1 - t0), (unsigned long long)st.max_batch, st.commit_ms_max);
    px_store_close(s);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return stored == n ? 0 : 1;
}
