/* Spool tests: puts and loads, marks, dead letters, dedupe, reopen, a crash in a child process,
 * group commit, back-pressure on a full database, paging. Each case runs its own uv loop in a
 * fresh temporary directory and checks that every handle was closed. */
#define _XOPEN_SOURCE 700
#include "../../host/store/keyset.c"
#include "../../host/store/spool.c"

#include <ftw.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"

/* ---- helpers -------------------------------------------------------------------------------- */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void rm_rf(const char *dir)
{
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

typedef struct fixture {
    char dir[64];
    uv_loop_t loop;
    px_spool *s;
} fixture;

static int fx_open(fixture *f, const px_spool_options *opt)
{
    char err[256] = "";
    int rc = px_spool_open(&f->loop, f->dir, opt, &f->s, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "open failed: %s\n", err);
    }
    return rc;
}

/* A fresh fixture: its directory and loop, the spool not open yet. */
static int fx_prepare(fixture *f)
{
    memset(f, 0, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/px_spool_XXXXXX");
    if (!mkdtemp(f->dir)) {
        return -1;
    }
    uv_loop_init(&f->loop);
    return 0;
}

static int fx_init(fixture *f, const px_spool_options *opt)
{
    return fx_prepare(f) < 0 ? -1 : fx_open(f, opt);
}

/* f's DIR/spool.db opened directly (NULL on failure), to build an older database by hand. */
static sqlite3 *fx_raw_db(const fixture *f)
{
    char path[96];
    snprintf(path, sizeof(path), "%s/spool.db", f->dir);
    sqlite3 *db = NULL;
    if (sqlite3_open(path, &db) != SQLITE_OK) {
        sqlite3_close(db);
        return NULL;
    }
    return db;
}

/* Closes the spool and runs the loop until its handle is closed. */
static void fx_close_spool(fixture *f)
{
    px_spool_close(f->s);
    f->s = NULL;
    uv_run(&f->loop, UV_RUN_DEFAULT);
}

/* Closes everything; returns uv_loop_close's result (0 = every handle closed). */
static int fx_done(fixture *f)
{
    if (f->s) {
        fx_close_spool(f);
    }
    int rc = uv_loop_close(&f->loop);
    rm_rf(f->dir);
    return rc;
}

/* Runs the loop until *count reaches want or 10 s pass. Returns 1 when reached. */
static int spin_until(fixture *f, const int *count, int want)
{
    uint64_t deadline = mono_ms() + 10000;
    while (*count < want && mono_ms() < deadline) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        if (*count < want) {
            usleep(200);
        }
    }
    return *count >= want;
}

typedef struct results {
    int n;
    int status[4096];
    int order[4096];
} results;

typedef struct put_ctx {
    results *r;
    int idx;
} put_ctx;

static void on_put(int status, void *arg)
{
    put_ctx *c = arg;
    c->r->status[c->idx] = status;
    c->r->order[c->r->n++] = c->idx;
}

static px_spool_event mk_event(const char *id, const char *source, const char *key,
                               const char *payload)
{
    px_spool_event ev = {
        .id = id,
        .type = "test.created",
        .source = source,
        .dedupe_key = key,
        .time_ms = 1700000000123,
        .payload = payload,
        .payload_len = strlen(payload),
        .meta = "{\"h\":\"v\"}",
        .hints = "{\"max_attempts\":3}",
    };
    return ev;
}

static px_spool_row mk_row(const char *sink, const char *params)
{
    px_spool_row r = {
        .pipeline = "p1",
        .sink = sink,
        .action = "create",
        .params = params,
        .params_len = params ? strlen(params) : 0,
    };
    return r;
}

typedef struct loaded {
    int n;
    int64_t ids[2048];
    char evid[2048][16];
    uint32_t attempts[2048];
    int64_t next_at[2048];
    char last_error[32];
    char payload[256];
    char params[128];
    char meta[64], hints[64], pipeline[16], action[16], type[32], source[16];
    int64_t time_ms;
} loaded;

static void on_load(const px_spool_loaded *d, void *arg)
{
    loaded *l = arg;
    if (l->n >= 2048) {
        return;
    }
    l->ids[l->n] = d->id;
    snprintf(l->evid[l->n], sizeof(l->evid[0]), "%s", d->ev.id);
    l->attempts[l->n] = d->attempts;
    l->next_at[l->n] = d->next_at_ms;
    if (l->n == 0) {
        snprintf(l->last_error, sizeof(l->last_error), "%s", d->last_error ? d->last_error : "");
        snprintf(l->payload, sizeof(l->payload), "%.*s", (int)d->ev.payload_len, d->ev.payload);
        snprintf(l->params, sizeof(l->params), "%s", d->params);
        snprintf(l->meta, sizeof(l->meta), "%s", d->ev.meta ? d->ev.meta : "(null)");
        snprintf(l->hints, sizeof(l->hints), "%s", d->ev.hints ? d->ev.hints : "(null)");
        snprintf(l->pipeline, sizeof(l->pipeline), "%s", d->pipeline);
        snprintf(l->action, sizeof(l->action), "%s", d->action);
        snprintf(l->type, sizeof(l->type), "%s", d->ev.type);
        snprintf(l->source, sizeof(l->source), "%s", d->ev.source);
        l->time_ms = d->ev.time_ms;
    }
    l->n++;
}

static int64_t count_rows(px_spool *s, const char *sql)
{
    return query_int(s->rdb, sql, -1);
}

/* Puts one event with one row for `sink`; returns the delivery id (or -1) after the commit. */
static int64_t put_one(fixture *f, const char *id, const char *sink, results *r, put_ctx *c)
{
    px_spool_event ev = mk_event(id, "src", NULL, "{\"a\":1}");
    px_spool_row row = mk_row(sink, "{\"x\":1}");
    int want = r->n + 1;
    if (px_spool_put(f->s, &ev, &row, 1, on_put, c) != 0 || !spin_until(f, &r->n, want)) {
        return -1;
    }
    return r->status[c->idx] == PX_SPOOL_STORED ? row.id : -1;
}

/* ---- cases ---------------------------------------------------------------------------------- */

static void test_put_and_load(void)
{
    fixture f;
    PX_ASSERT_INT_EQ(fx_init(&f, NULL), 0);
    static results r;
    memset(&r, 0, sizeof(r));
    put_ctx ctx[3];
    int64_t ids[3][2];
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof(id), "ev%d", i);
        px_spool_event ev = mk_event(id, "src", NULL, "{\"name\":\"Ana\",\"n\":[1,2,3]}");
        px_spool_row rows[2] = {mk_row("a", "{\"k\":\"v\"}"), mk_row("b", NULL)};
        ctx[i] = (put_ctx){&r, i};
        PX_ASSERT_INT_EQ(px_spool_put(f.s, &ev, rows, 2, on_put, &ctx[i]), 0);
        ids[i][0] = rows[0].id;
        ids[i][1] = rows[1].id;
        PX_ASSERT(rows[1].id > rows[0].id);
        PX_ASSERT(i == 0 || rows[0].id > ids[i - 1][1]);
    }
    PX_ASSERT_INT_EQ(r.n, 0); /* never inside put */
    PX_ASSERT(spin_until(&f, &r.n, 3));
    for (int i = 0; i < 3; i++) {
        PX_ASSERT_INT_EQ(r.order[i], i);
        PX_ASSERT_INT_EQ(r.status[i], PX_SPOOL_STORED);
    }
    static loaded l;
    memset(&l, 0, sizeof(l));
    PX_ASSERT_INT_EQ(px_spool_load(f.s, "a", 0, 100, on_load, &l), 3);
    for (int i = 0; i < 3; i++) {
        PX_ASSERT_INT_EQ(l.ids[i], ids[i][0]);
        char id[16];
        snprintf(id, sizeof(id), "ev%d", i);
        PX_ASSERT_STR_EQ(l.evid[i], id);
        PX_ASSERT_INT_EQ(l.attempts[i], 0);
    }
    PX_ASSERT_STR_EQ(l.payload, "{\"name\":\"Ana\",\"n\":[1,2,3]}");
    PX_ASSERT_STR_EQ(l.params, "{\"k\":\"v\"}");
    PX_ASSERT_STR_EQ(l.meta, "{\"h\":\"v\"}");
    PX_ASSERT_STR_EQ(l.hints, "{\"max_attempts\":3}");
    PX_ASSERT_STR_EQ(l.pipeline, "p1");
    PX_ASSERT_STR_EQ(l.action, "create");
    PX_ASSERT_STR_EQ(l.type, "test.created");
    PX_ASSERT_STR_EQ(l.source, "src");
    PX_ASSERT_INT_EQ(l.time_ms, 1700000000123);
    memset(&l, 0, sizeof(l));
    PX_ASSERT_INT_EQ(px_spool_load(f.s, "b", 0, 100, on_load, &l), 3);
    PX_ASSERT_STR_EQ(l.params, "{}");
    PX_ASSERT_INT_EQ(px_spool_load(f.s, "zzz", 0, 100, on_load, &l), 0);
    /* one event row shared by both deliveries */
    PX_ASSERT_INT_EQ(count_rows(f.s, "SELECT count(*) FROM events"), 3);
    PX_ASSERT_INT_EQ(fx_done(&f), 0);
}

typedef struct counts_seen {
    int64_t a, b;
    int calls;
} counts_seen;

static void on_count(const char *sink, int64_t n, void *arg)
{
    counts_seen *c = arg;
    c->calls++;
    if (strcmp(sink, "a") == 0) {
        c->a = n;
    } else if (strcmp(sink, "b") == 0) {
        c->b = n;
    }
}

static void test_mark_done(void)
{
    fixture f;
    PX_ASSERT_INT_EQ(fx_init(&f, NULL), 0);
    static results r;
    memset(&r, 0, sizeof(r));
    put_ctx c0 = {&r, 0}, c1 = {&r, 1};
    int64_t a = put_one(&f, "e1", "a", &r, &c0);
    int64_t b = put_one(&f, "e2", "b", &r, &c1);
    PX_ASSERT(a > 0 && b > a);
    counts_seen cs = {0};
    PX_ASSERT_INT_EQ(px_spool_pending_counts(f.s, on_count, &cs), 2);
    PX_ASSERT_INT_EQ(cs.a, 1);
    PX_ASSERT_INT_EQ(cs.b, 1);
    px_spool_mark_done(f.s, a, 1);
    px_spool_mark_done(f.s, 999999, 1); /* unknown: ignored */
    /* read-your-writes: the load waits for the queued mark */
    static loaded l;
    memset(&l, 0, sizeof(l));
    PX_ASSERT_INT_EQ(px_spool_load(f.s, "a", 0, 10, on_load, &l), 0);
    PX_ASSERT_INT_EQ(px_spool_load(f.s, "b", 0, 10, on_load, &l), 1);
    PX_ASSERT_INT_EQ(count_rows(f.s, "SELECT count(*) FROM events"), 1);
    cs = (counts_seen){0};
    PX_ASSERT_INT_EQ(px_spool_pending_counts(f.s, on_count, &cs), 1);
    PX_ASSERT_INT_EQ(cs.b, 1);
    PX_ASSERT_INT_EQ(cs.a, 0);
    PX_ASSERT_INT_EQ(fx_done(&f), 0);
}

/* A delivery done while its put still waits for the writer is never written, nor is its event
 * once every row of it was; the put still completes, and ids stay unique after a reopen. */
static void test_done_before_commit_is_elided(void)
{
    fixture f;
    PX_ASSERT_INT_EQ(fx_init(&f, NULL), 0);
    static results r;
    memset(&r, 0, sizeof(r));
    put_ctx c0 = {&r, 0}, c1 = {&r, 1}, c2 = {&r, 2};
    px_spool_event e1 = mk_event("e1", "src", NULL, "{\"n\":1}");
    px_spool_row rows1[2] = {mk_row("a", NULL), mk_row("b", NULL)};
    px_spool_event e2 = mk_event("e2", "src", NULL, "{\"n\":2}");
    px_spool_row row2 = mk_row("a", NULL);
    /* Once asleep, the writer is woken only when the loop turns: both puts stay queued here. */
    for (int i = 0; i < 10000; i++) {
        pthread_mutex_lock(&f.s->mu);
        int asleep = f.s->writer_waiting;
        pthread_mutex_unlock(&f.s->mu);
        if (asleep) {
            break;
        }
        usleep(1000);
    }
    PX_ASSERT_INT_EQ(px_spool_put(f.s, &e1, rows1, 2, on_put, &c0), 0);
    PX_ASSERT_INT_EQ(px_spool_put(f.s, &e2, &row2, 1, on_put, &c1), 0);
    PX_ASSERT_INT_EQ(px_spool_pending(f.s, "a"), 2);
    px_spool_mark_done(f.s, rows1[0].id, 1);
    px_spool_mark_done(f.s, row2.id, 1);
    px_spool_mark_done(f.s, row2.id, 1); /* twice: still one */
    PX_ASSERT_INT_EQ(px_spool_pending(f.s, "a"), 0);
    PX_ASSERT_INT_EQ(px_spool_pending(f.s, "b"), 1);
    PX_ASSERT(spin_until(&f, &r.n, 2));
    PX_ASSERT_INT_EQ(r.status[0], PX_SPOOL_STORED);
    PX_ASSERT_INT_EQ(r.status[1], PX_SPOOL_STORED);
    PX_ASSERT_INT_EQ(count_rows(f.s, "SELECT count(*) FROM events"), 1);
    PX_ASSERT_INT_EQ(count_rows(f.s, "SELECT refs FROM events WHERE id='e1'"), 1);
    PX_ASSERT_INT_EQ(count_rows(f.s, "SELECT count(*) FROM deliveries"), 1);
    PX_ASSERT_INT_EQ(count_rows(f.s, "SELECT count(*) FROM deliveries WHERE sink='b'"), 1);
    px_spool_stats st;
    px_spool_get_stats(f.s, &st);
    PX_ASSERT_INT_EQ(st.elided, 2);
    PX_ASSERT_INT_EQ(st.rows_committed, 2); /* the two puts, no delete */
    /* committed now: a done mark deletes it the usual way */
    px_spool_mark_done(f.s, rows1[1].id, 1);
    static loaded l;
    memset(&l, 0, sizeof(l));
    PX_ASSERT_INT_EQ(px_spool_load(f.s, "b", 0, 10, on_load, &l), 0);
    PX_ASSERT_INT_EQ(count_rows(f.s, "SELECT count(*) FROM events"), 0);
    /* the highest id handed out was elided: a reopened spool still never reuses it */
    fx_close_spool(&f);
    PX_ASSERT_INT_EQ(fx_open(&f, NULL), 0);
    px_spool_event e3 = mk_event("e3", "src", NULL, "{\"n\":3}");
    px_spool_row row3 = mk_row("a", NULL);
    PX_ASSERT_INT_EQ(px_spool_put(f.s, &e3, &row3, 1, on_put, &c2), 0);
    PX_ASSERT(row3.id > row2.id);
    PX_ASSERT(spin_until(&f, &r.n, 3));
    PX_ASSERT_INT_EQ(fx_done(&f), 0);
}

/* Waits until the writer sleeps: from then on it wakes only when the loop turns. */
static void wait_writer_asleep(fixture *f)
{
    for (int i = 0; i < 10000; i++) {
        pthread_mutex_lock(&f->s->mu);
        int asleep = f->s->writer_waiting;
        pthread_mutex_unlock(&f->s->mu);
        if (asleep) {
            return;
        }
        usleep(1000);
    }
}

static int64_t wal_commits(fixture *f)
{
    pthread_mutex_lock(&f->s->ck_mu);
    int64_t n = (int64_t)f->s->ck_commits;
    pthread_mutex_unlock(&f->s->ck_mu);
    return n;
}

/* Delivery ids are reserved on disk in blocks: once one is, a commit whose deliveries were all
 * done before it writes no page (no WAL frame), and a reopen still never gives an id again. */
static void test_all_done_commit_writes_nothing(void)
{
    fixture f;
    PX_ASSERT_INT_EQ(fx_init(&f, NULL), 0);
    static results r;
    memset(&r, 0, sizeof(r));
    put_ctx c[4] = {{&r, 0}, {&r, 1}, {&r, 2}, {&r, 3}};
    int64_t last = 0;
    int64_t commits_after_first = 0;
    px_spool_stats st;
    uint64_t stat_commits_after_first = 0;
    for (int i = 0; i < 3; i++) {
        px_spool_event e = mk_event(i == 0 ? "e0" : i == 1 ? "e1" : "e2", "src", NULL, "{}");
        px_spool_row row = mk_row("a", NULL);
        wait_writer_asleep(&f);
        PX_ASSERT_INT_EQ(px_spool_put(f.s, &e, &row, 1, on_put, &c[i]), 0);
        px_spool_mark_done(f.s, row.id, 1);
        PX_ASSERT(spin_until(&f, &r.n, i + 1));
        PX_ASSERT_INT_EQ(r.status[i], PX_SPOOL_STORED);
        PX_ASSERT(row.id > last);
        last = row.id;
        if (i == 0) {
            commits_after_first = wal_commits(&f);
            px_spool_get_stats(f.s, &st);
            stat_commits_after_first = st.commits;
        }
    }
    px_spool_get_stats(f.s, &st);
    PX_ASSERT_INT_EQ(st.elided, 3);
    PX_ASSERT_INT_EQ(wal_commits(&f), commits_after_first);
    PX_ASSERT_INT_EQ(st.commits, stat_commits_after_first); /* and the statistic says so */
    PX_ASSERT_INT_EQ(count_rows(f.s, "SELECT count(*) FROM events"), 0);
    fx_close_spool(&f);
    PX_ASSERT_INT_EQ(fx_open(&f, NULL), 0);
    px_spool_event e3 = mk_event("e3", "src", NULL, "{}");
    px_spool_row row3 = mk_row("a", NULL);
    PX_ASSERT_INT_EQ(px_spool_put(f.s, &e3, &row3, 1, on_put, &c[3]), 0);
    PX_ASSERT(row3.id > last);
    PX_ASSERT(spin_until(&f, &r.n, 4));
    PX_ASSERT_INT_EQ(fx_done(&f), 0);
}

static void test_mark_retry(void)
{
    fixture f;
    PX_ASSERT_INT_EQ(fx_init(&f, NULL), 0);
    static results r;
    memset(&r, 0, sizeof(r));
    put_ctx c0 = {&r, 0};
    int64_t a = put_one(&f, "e1", "a", &r, &c0);
    PX_ASSERT(a > 0);
    px_spool_mark_retry(f.s, a, 1, 5000, "timeout");
    px_spool_mark_retry(f.s, a, 2, 9000, "http 503");
    static loaded l;
    memset(&l, 0, sizeof(l));
    PX_ASSERT_INT_EQ(px_spool_load(f.s, "a", 0, 10, on_load, &l), 1);
    PX_ASSERT_INT_EQ(l.attempts[0], 2);
    PX_ASSERT_INT_EQ(l.next_at[0], 9000);
    PX_ASSERT_STR_EQ(l.last_error, "http 503");
    PX_ASSERT_INT_EQ(count_rows(f.s, "SELECT count(*) FROM attempts"), 2);
    PX_ASSERT_INT_EQ(
        count_rows(f.s, "SELECT count(*) FROM attempts WHERE attempt=1 AND error='timeout'"), 1);
    px_spool_mark_done(f.s, a, 3); /* the third attempt: its history goes too */
    PX_ASSERT_INT_EQ(px_spool_load(f.s, "a", 0, 10, on_load, &l), 0);
    PX_ASSERT_INT_EQ(count_rows(f.s, "SELECT count(*) FROM attempts"), 0);
    PX_ASSERT_INT_EQ(fx_done(&f), 0);
}

static void test_dead_letters(void)
{
    fixture f;
    PX_ASSERT_INT_EQ(fx_init(&f, NULL), 0);
    static results r;
    memset(&r, 0, sizeof(r));
    put_ctx c[4] = {{&r, 0}, {&r, 1}, {&r, 2}, {&r, 3}};
    int64_t a1 = put_one(&f, "e1", "a", &r, &c[0]);
    int64_t a2 = put_one(&f, "e2", "a", &r, &c[1]);
    int64_t b1 = put_one(&f, "e3", "b", &r, &c[2]);
    PX_ASSERT(a1 > 0 && a2 > 0 && b1 > 0);
    px_spool_mark_retry(f.s, a1, 1, 100, "err one");
    px_spool_mark_retry(f.s, a1, 2, 200, "err two");
    px_spool_mark_dead(f.s, a1, 3, "exhausted: err three");
    px_spool_mark_dead(f.s, b1, 0, "rejected by sink");
    /* a poison message: not JSON, kept byte for byte */
    px_spool_event raw = mk_event("raw1", "src", NULL, "not json \x01");
    raw.meta = raw.hints = NULL;
    PX_ASSERT_INT_EQ(px_spool_dead_raw(f.s, &raw, NULL, NULL, "no job", on_put, &c[3]), 0);
    PX_ASSERT(spin_until(&f, &r.n, 4));
    PX_ASSERT_INT_EQ(r.status[3], PX_SPOOL_STORED);

    static loaded l;
    memset(&l, 0, sizeof(l));
    PX_ASSERT_INT_EQ(px_spool_load(f.s, "a", 0, 10, on_load, &l), 1);
    PX_ASSERT_INT_EQ(l.ids[0], a2);

    json_t *list = NULL;
    PX_ASSERT_INT_EQ(px_spool_dlq_list(f.s, NULL, 0, 0, &list), 0);
    PX_ASSERT_INT_EQ(json_array_size(list), 3);
    json_decref(list);
    PX_ASSERT_INT_EQ(px_spool_dlq_list(f.s, "a", 0, 0, &list), 0);
    PX_ASSERT_INT_EQ(json_array_size(list), 1);
    json_t *e = json_array_get(list, 0);
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(e, "reason")), "exhausted: err three");
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(e, "event_id")), "e1");
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(e, "pipeline")), "p1");
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(e, "attempts")), 3);
    int64_t dead_a1 = json_integer_value(json_object_get(e, "id"));
    int64_t died_at = json_integer_value(json_object_get(e, "died_at"));
    PX_ASSERT(died_at > 1600000000000);
    json_decref(list);
    PX_ASSERT_INT_EQ(px_spool_dlq_list(f.s, NULL, px_now_ms() + 60000, 0, &list), 0);
    PX_ASSERT_INT_EQ(json_array_size(list), 0);
    json_decref(list);
    PX_ASSERT_INT_EQ(px_spool_dlq_list(f.s, NULL, died_at, 2, &list), 0);
    PX_ASSERT_INT_EQ(json_array_size(list), 2); /* limit */
    json_decref(list);

    json_t *show = NULL;
    PX_ASSERT_INT_EQ(px_spool_dlq_show(f.s, dead_a1, &show), 0);
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(json_object_get(show, "payload"), "a")),
                     1);
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(json_object_get(show, "params"), "x")), 1);
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(json_object_get(show, "meta"), "h")), "v");
    json_t *hist = json_object_get(show, "history");
    PX_ASSERT_INT_EQ(json_array_size(hist), 3);
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(json_array_get(hist, 0), "error")),
                     "err one");
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(json_array_get(hist, 2), "error")),
                     "exhausted: err three");
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(json_array_get(hist, 1), "attempt")), 2);
    json_decref(show);

    PX_ASSERT_INT_EQ(px_spool_dlq_list(f.s, "", 0, 0, &list), 0);
    PX_ASSERT_INT_EQ(json_array_size(list), 1);
    int64_t raw_id = json_integer_value(json_object_get(json_array_get(list, 0), "id"));
    json_decref(list);
    PX_ASSERT_INT_EQ(px_spool_dlq_show(f.s, raw_id, &show), 0);
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(show, "payload")), "not json \x01");
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(show, "reason")), "no job");
    PX_ASSERT(json_is_null(json_object_get(show, "meta")));
    json_decref(show);
    PX_ASSERT_INT_EQ(px_spool_dlq_show(f.s, 424242, &show), PX_ENOENT);
    int64_t n = 0;
    PX_ASSERT_INT_EQ(px_spool_dlq_count(f.s, &n), 0);
    PX_ASSERT_INT_EQ(n, 3);
    PX_ASSERT_INT_EQ(fx_done(&f), 0);
}

typedef struct replayed {
    int n;
    int64_t ids[16];
    char sinks[16][8];
} replayed;

static void on_replay(int64_t id, const char *sink, void *arg)
{
    replayed *rp = arg;
    if (rp->n < 16) {
        rp->ids[rp->n] = id;
        snprintf(rp->sinks[rp->n], sizeof(rp->sinks[0]), "%s", sink);
        rp->n++;
    }
}

static void test_replay_and_purge(void)
{
    fixture f;
    PX_ASSERT_INT_EQ(fx_init(&f, NULL), 0);
    static results r;
    memset(&r, 0, sizeof(r));
    put_ctx c[5] = {{&r, 0}, {&r, 1}, {&r, 2}, {&r, 3}, {&r, 4}};
    int64_t d[4];
    const char *sinks[4] = {"a", "a", "b", "b"};
    for (int i = 0; i < 4; i++) {
        char id[8];
        snprintf(id, sizeof(id), "e%d", i);
        d[i] = put_one(&f, id, sinks[i], &r, &c[i]);
        PX_ASSERT(d[i] > 0);
        px_spool_mark_retry(f.s, d[i], 1, 0, "boom");
        px_spool_mark_dead(f.s, d[i], 2, "gave up");
    }
    px_spool_event raw = mk_event("raw", "src", NULL, "garbage");
    PX_ASSERT_INT_EQ(px_spool_dead_raw(f.s, &raw, "p1", "", "bad", on_put, &c[4]), 0);
    PX_ASSERT(spin_until(&f, &r.n, 5));
    json_t *list = NULL;
    PX_ASSERT_INT_EQ(px_spool_dlq_list(f.s, "a", 0, 0, &list), 0);
    PX_ASSERT_INT_EQ(json_array_size(list), 2);
    int64_t dead_a = json_integer_value(json_object_get(json_array_get(list, 0), "id"));
    json_decref(list);

    /* replay one by id */
    replayed rp = {0};
    PX_ASSERT_INT_EQ(px_spool_dlq_replay(f.s, &dead_a, 1, NULL, on_replay, &rp), 1);
    PX_ASSERT_INT_EQ(rp.n, 1);
    PX_ASSERT(rp.ids[0] > d[3]);
    PX_ASSERT_STR_EQ(rp.sinks[0], "a");
    static loaded l;
    memset(&l, 0, sizeof(l));
    PX_ASSERT_INT_EQ(px_spool_load(f.s, "a", 0, 10, on_load, &l), 1);
    PX_ASSERT_INT_EQ(l.ids[0], rp.ids[0]);
    PX_ASSERT_INT_EQ(l.attempts[0], 0);
    PX_ASSERT_STR_EQ(l.payload, "{\"a\":1}");
    /* replay everything of sink b; the raw one (sink "") is never replayed */
    rp = (replayed){0};
    PX_ASSERT_INT_EQ(px_spool_dlq_replay(f.s, NULL, 0, "b", on_replay, &rp), 2);
    PX_ASSERT_INT_EQ(rp.n, 2);
    PX_ASSERT(rp.ids[1] > rp.ids[0]);
    PX_ASSERT_INT_EQ(px_spool_dlq_replay(f.s, NULL, 0, NULL, NULL, NULL), 1); /* the other a */
    int64_t n = 0;
    PX_ASSERT_INT_EQ(px_spool_dlq_count(f.s, &n), 0);
    PX_ASSERT_INT_EQ(n, 1);
    PX_ASSERT_INT_EQ(count_rows(f.s, "SELECT count(*) FROM attempts"), 0);
    counts_seen cs = {0};
    PX_ASSERT_INT_EQ(px_spool_pending_counts(f.s, on_count, &cs), 2);
    PX_ASSERT_INT_EQ(cs.a, 2);
    PX_ASSERT_INT_EQ(cs.b, 2);

    /* dead again, then purge: by id, by before_ms, everything */
    memset(&l, 0, sizeof(l));
    PX_ASSERT_INT_EQ(px_spool_load(f.s, "a", 0, 10, on_load, &l), 2);
    px_spool_mark_dead(f.s, l.ids[0], 1, "again");
    px_spool_mark_dead(f.s, l.ids[1], 1, "again");
    PX_ASSERT_INT_EQ(px_spool_dlq_list(f.s, "a", 0, 0, &list), 0);
    PX_ASSERT_INT_EQ(json_array_size(list), 2);
    int64_t pid = json_integer_value(json_object_get(json_array_get(list, 0), "id"));
    json_decref(list);
    PX_ASSERT_INT_EQ(px_spool_dlq_purge(f.s, &pid, 1, NULL, 0), 1);
    PX_ASSERT_INT_EQ(px_spool_dlq_purge(f.s, NULL, 0, NULL, 1000), 0); /* died long after */
    PX_ASSERT_INT_EQ(px_spool_dlq_purge(f.s, NULL, 0, NULL, 0), 2);
    PX_ASSERT_INT_EQ(px_spool_dlq_count(f.s, &n), 0);
    PX_ASSERT_INT_EQ(n, 0);
    /* only the two b events are still referenced */
    PX_ASSERT_INT_EQ(count_rows(f.s, "SELECT count(*) FROM events"), 2);
    PX_ASSERT_INT_EQ(fx_done(&f), 0);
}

/* The dedupe keys on disk: those merged into dedupe and those waiting in dedupe_recent. */
#define ALL_KEYS                                                                                \
    "SELECT count(*) FROM (SELECT source, key FROM dedupe UNION ALL "                         \
    "SELECT source, key FROM dedupe_recent) "

static void test_dedupe(void)
{
    fixture f;
    px_spool_options opt = {.durability = PX_DURABILITY_NORMAL, .dedupe_window_ms = 60000};
    PX_ASSERT_INT_EQ(fx_init(&f, &opt), 0);
    static results r;
    memset(&r, 0, sizeof(r));
    put_ctx c[6];
    for (int i = 0; i < 6; i++) {
        c[i] = (put_ctx){&r, i};
    }
    px_spool_row row = mk_row("a", NULL);
    px_spool_event ev = mk_event("e1", "s1", "k1", "{}");
    PX_ASSERT_INT_EQ(px_spool_put(f.s, &ev, &row, 1, on_put, &c[0]), 0);
    PX_ASSERT_INT_EQ(px_spool_put(f.s, &ev, &row, 1, on_put, &c[1]), 0); /* same batch or not */
    ev.source = "s2";
    PX_ASSERT_INT_EQ(px_spool_put(f.s, &ev, &row, 1, on_put, &c[2]), 0);
    ev.source = "s1";
    ev.dedupe_key = "k2";
    PX_ASSERT_INT_EQ(px_spool_put(f.s, &ev, NULL, 0, on_put, &c[3]), 0); /* key only */
    PX_ASSERT_INT_EQ(px_spool_put(f.s, &ev, &row, 1, on_put, &c[4]), 0);
    PX_ASSERT(spin_until(&f, &r.n, 5));
    PX_ASSERT_INT_EQ(r.status[0], PX_SPOOL_STORED);
    PX_ASSERT_INT_EQ(r.status[1], PX_SPOOL_DUPLICATE);
    PX_ASSERT_INT_EQ(r.status[2], PX_SPOOL_STORED);
    PX_ASSERT_INT_EQ(r.status[3], PX_SPOOL_STORED);
    PX_ASSERT_INT_EQ(r.status[4], PX_SPOOL_DUPLICATE);
    static loaded l;
    memset(&l, 0, sizeof(l));
    PX_ASSERT_INT_EQ(px_spool_load(f.s, "a", 0, 10, on_load, &l), 2);
    px_spool_stats st;
    px_spool_get_stats(f.s, &st);
    PX_ASSERT_INT_EQ(st.duplicates, 2);
    fx_close_spool(&f);

    /* a tiny window: a repeat after it is stored again */
    opt.dedupe_window_ms = 30;
    PX_ASSERT_INT_EQ(fx_open(&f, &opt), 0);
    memset(&r, 0, sizeof(r));
    ev.dedupe_key = "k3";
    PX_ASSERT_INT_EQ(px_spool_put(f.s, &ev, &row, 1, on_put, &c[0]), 0);
    PX_ASSERT(spin_until(&f, &r.n, 1));
    usleep(80 * 1000);
    PX_ASSERT_INT_EQ(px_spool_put(f.s, &ev, &row, 1, on_put, &c[1]), 0);
    PX_ASSERT(spin_until(&f, &r.n, 2));
    PX_ASSERT_INT_EQ(r.status[0], PX_SPOOL_STORED);
    PX_ASSERT_INT_EQ(r.status[1], PX_SPOOL_STORED);
    /* expired keys are pruned, live ones kept (the expired key and its renewal wait side by side
     * in dedupe_recent until merged) */
    PX_ASSERT_INT_EQ(count_rows(f.s, ALL_KEYS "WHERE key='k3'"), 2);
    usleep(80 * 1000);
    PX_ASSERT_INT_EQ(px__spool_exec(f.s, NULL), 0);
    PX_ASSERT_INT_EQ(count_rows(f.s, ALL_KEYS "WHERE key='k3'"), 0);
    PX_ASSERT_INT_EQ(count_rows(f.s, ALL_KEYS "WHERE key='k1'"), 2);
    PX_ASSERT_INT_EQ(count_rows(f.s, "SELECT count(*) FROM dedupe_recent"), 0);
    PX_ASSERT_INT_EQ(fx_done(&f), 0);
}

/* The index in memory of the waiting keys: many entries (it grows), pairs that concatenate alike,
 * a rollback of new and of changed entries, and clear. */
static void test_keyset(void)
{
    px_keyset *ks = px_keyset_new();
    char key[32];
    int64_t exp = 0;
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        px_keyset_set(ks, "src", key, 1000 + i);
    }
    px_keyset_commit(ks);
    PX_ASSERT_INT_EQ(px_keyset_count(ks), 5000);
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        PX_ASSERT_INT_EQ(px_keyset_get(ks, "src", key, &exp), 1);
        PX_ASSERT_INT_EQ(exp, 1000 + i);
    }
    PX_ASSERT_INT_EQ(px_keyset_get(ks, "sr", "ck1", &exp), 0);
    px_keyset_set(ks, "ab", "c", 1);
    px_keyset_commit(ks);
    PX_ASSERT_INT_EQ(px_keyset_get(ks, "a", "bc", &exp), 0);
    PX_ASSERT_INT_EQ(px_keyset_get(ks, "ab", "c", &exp), 1);

    px_keyset_set(ks, "src", "k7", 7);     /* changed */
    px_keyset_set(ks, "src", "new", 8);    /* new */
    px_keyset_set(ks, "src", "k7", 9);     /* changed twice */
    for (int i = 5000; i < 6000; i++) { /* new, and the table grows meanwhile */
        snprintf(key, sizeof(key), "k%d", i);
        px_keyset_set(ks, "src", key, i);
    }
    PX_ASSERT_INT_EQ(px_keyset_get(ks, "src", "k7", &exp), 1);
    PX_ASSERT_INT_EQ(exp, 9);
    px_keyset_rollback(ks);
    PX_ASSERT_INT_EQ(px_keyset_get(ks, "src", "k7", &exp), 1);
    PX_ASSERT_INT_EQ(exp, 1007);
    PX_ASSERT_INT_EQ(px_keyset_get(ks, "src", "new", &exp), 0);
    PX_ASSERT_INT_EQ(px_keyset_get(ks, "src", "k5500", &exp), 0);
    PX_ASSERT_INT_EQ(px_keyset_get(ks, "src", "k4999", &exp), 1);
    px_keyset_set(ks, "src", "new", 10); /* an entry a rollback emptied takes a set again */
    px_keyset_commit(ks);
    PX_ASSERT_INT_EQ(px_keyset_get(ks, "src", "new", &exp), 1);
    PX_ASSERT_INT_EQ(exp, 10);
    px_keyset_clear(ks);
    PX_ASSERT_INT_EQ(px_keyset_count(ks), 0);
    PX_ASSERT_INT_EQ(px_keyset_get(ks, "src", "k1", &exp), 0);
    px_keyset_free(ks);
}

/* Puts one event with dedupe key `key` from source "s1"; returns its status after the commit. */
static int put_keyed(fixture *f, const char *id, const char *key)
{
    static results r;
    memset(&r, 0, sizeof(r));
    put_ctx c = {&r, 0};
    px_spool_event ev = mk_event(id, "s1", key, "{}");
    px_spool_row row = mk_row("a", NULL);
    if (px_spool_put(f->s, &ev, &row, 1, on_put, &c) != 0 || !spin_until(f, &r.n, 1)) {
        return -1;
    }
    return r.status[0];
}

/* New keys wait in dedupe_recent (and in memory) until merge_at of them are there, then move to
 * dedupe in one pass; a key is a repeat wherever it is, and after a reopen too. */
static void test_dedupe_keys_merged(void)
{
    fixture f;
    px_spool_options opt = {.durability = PX_DURABILITY_NORMAL, .dedupe_window_ms = 60000,
                            .dedupe_merge_at = 4};
    PX_ASSERT_INT_EQ(fx_init(&f, &opt), 0);
    char id[16], key[16];
    for (int i = 0; i < 10; i++) {
        snprintf(id, sizeof(id), "e%d", i);
        snprintf(key, sizeof(key), "k%d", i);
        PX_ASSERT_INT_EQ(put_keyed(&f, id, key), PX_SPOOL_STORED);
    }
    /* merged after the 4th and the 8th put's batch, each time before the next batch was taken */
    PX_ASSERT_INT_EQ(count_rows(f.s, ALL_KEYS), 10);
    PX_ASSERT_INT_EQ(count_rows(f.s, "SELECT count(*) FROM dedupe"), 8);
    PX_ASSERT_INT_EQ(count_rows(f.s, "SELECT count(*) FROM dedupe_recent"), 2);
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 10; i++) {
            snprintf(id, sizeof(id), "r%d", i);
            snprintf(key, sizeof(key), "k%d", i);
            PX_ASSERT_INT_EQ(put_keyed(&f, id, key), PX_SPOOL_DUPLICATE);
        }
        fx_close_spool(&f);
        PX_ASSERT_INT_EQ(fx_open(&f, &opt), 0); /* the waiting keys are read back */
    }
    PX_ASSERT_INT_EQ(put_keyed(&f, "e10", "k10"), PX_SPOOL_STORED);
    PX_ASSERT_INT_EQ(put_keyed(&f, "r10", "k10"), PX_SPOOL_DUPLICATE);
    PX_ASSERT_INT_EQ(fx_done(&f), 0);
}

/* Puts events fine1, poison (refused by a trigger) and fine2 from `source` in one batch, with
 * dedupe keys keys[i] (keys may be NULL), and waits for their three results in r. */
static int put_poisoned_batch(fixture *f, const char *source, const char *const *keys, results *r)
{
    if (px__spool_exec(f->s, "CREATE TEMP TRIGGER poison BEFORE INSERT ON events "
                             "WHEN NEW.id = 'poison' BEGIN SELECT RAISE(ABORT, 'poison'); END")) {
        return -1;
    }
    memset(r, 0, sizeof(*r));
    static put_ctx c[3];
    const char *ids[3] = {"fine1", "poison", "fine2"};
    for (int i = 0; i < 3; i++) {
        c[i] = (put_ctx){r, i};
        px_spool_event ev = mk_event(ids[i], source, keys ? keys[i] : NULL, "{}");
        px_spool_row row = mk_row("a", NULL);
        if (px_spool_put(f->s, &ev, &row, 1, on_put, &c[i]) != 0) {
            return -1;
        }
    }
    return spin_until(f, &r->n, 3) ? 0 : -1;
}

/* A batch rolled back forgets the keys it set: the operations run again find them new, and the
 * failed one's key stays free. */
static void test_dedupe_keys_rolled_back(void)
{
    fixture f;
    px_spool_options opt = {.durability = PX_DURABILITY_NORMAL, .dedupe_window_ms = 60000};
    PX_ASSERT_INT_EQ(fx_init(&f, &opt), 0);
    static results r;
    const char *keys[3] = {"ka", "kb", "kc"};
    PX_ASSERT_INT_EQ(put_poisoned_batch(&f, "s1", keys, &r), 0);
    PX_ASSERT_INT_EQ(r.status[0], PX_SPOOL_STORED);
    PX_ASSERT_INT_EQ(r.status[1], PX_ESPOOL);
    PX_ASSERT_INT_EQ(r.status[2], PX_SPOOL_STORED);
    PX_ASSERT_INT_EQ(put_keyed(&f, "again", "kb"), PX_SPOOL_STORED);
    PX_ASSERT_INT_EQ(put_keyed(&f, "again2", "ka"), PX_SPOOL_DUPLICATE);
    PX_ASSERT_INT_EQ(put_keyed(&f, "again3", "kc"), PX_SPOOL_DUPLICATE);
    PX_ASSERT_INT_EQ(count_rows(f.s, ALL_KEYS), 3);
    PX_ASSERT_INT_EQ(fx_done(&f), 0);
}

static void test_reopen(void)
{
    fixture f;
    PX_ASSERT_INT_EQ(fx_init(&f, NULL), 0);
    static results r;
    memset(&r, 0, sizeof(r));
    put_ctx c[3] = {{&r, 0}, {&r, 1}, {&r, 2}};
    int64_t a = put_one(&f, "e1", "a", &r, &c[0]);
    int64_t b = put_one(&f, "e2", "a", &r, &c[1]);
    PX_ASSERT(a > 0 && b > 0);
    px_spool_mark_retry(f.s, a, 1, 777, "first");
    px_spool_mark_dead(f.s, b, 1, "no");
    px_spool_mark_done(f.s, b, 1); /* already dead: ignored */
    fx_close_spool(&f);
    PX_ASSERT_INT_EQ(fx_open(&f, NULL), 0);
    static loaded l;
    memset(&l, 0, sizeof(l));
    PX_ASSERT_INT_EQ(px_spool_load(f.s, "a", 0, 10, on_load, &l), 1);
    PX_ASSERT_INT_EQ(l.ids[0], a);
    PX_ASSERT_INT_EQ(l.attempts[0], 1);
    PX_ASSERT_INT_EQ(l.next_at[0], 777);
    int64_t n = 0;
    PX_ASSERT_INT_EQ(px_spool_dlq_count(f.s, &n), 0);
    PX_ASSERT_INT_EQ(n, 1);
    /* ids keep growing even after the highest one is gone */
    px_spool_mark_done(f.s, a, 1);
    fx_close_spool(&f);
    PX_ASSERT_INT_EQ(fx_open(&f, NULL), 0);
    int64_t c3 = put_one(&f, "e3", "a", &r, &c[2]);
    PX_ASSERT(c3 > b);
    PX_ASSERT_INT_EQ(count_rows(f.s, "PRAGMA user_version"), SCHEMA_VERSION);
    PX_ASSERT_INT_EQ(fx_done(&f), 0);
}

/* The child puts events and dies right after its N-th callback, without closing. */
#define CRASH_PUTS 600
#define CRASH_AFTER 300

typedef struct crash_ctx {
    int fd;
    int seen;
    int idx[CRASH_PUTS];
} crash_ctx;

static crash_ctx *g_crash;

static void on_crash_put(int status, void *arg)
{
    int idx = *(int *)arg;
    if (status == PX_SPOOL_STORED) {
        if (write(g_crash->fd, &idx, sizeof(idx)) != (ssize_t)sizeof(idx)) {
            _exit(3);
        }
    }
    if (++g_crash->seen == CRASH_AFTER) {
        _exit(0);
    }
}

static void crash_child(const char *dir, int fd)
{
    static crash_ctx cc;
    g_crash = &cc;
    cc.fd = fd;
    uv_loop_t loop;
    uv_loop_init(&loop);
    px_spool *s = NULL;
    char err[256];
    if (px_spool_open(&loop, dir, NULL, &s, err, sizeof(err)) != 0) {
        _exit(2);
    }
    for (int i = 0; i < CRASH_PUTS; i++) {
        char id[16];
        snprintf(id, sizeof(id), "c%d", i);
        px_spool_event ev = mk_event(id, "src", NULL, "{\"crash\":true}");
        px_spool_row row = mk_row("a", NULL);
        cc.idx[i] = i;
        if (px_spool_put(s, &ev, &row, 1, on_crash_put, &cc.idx[i]) != 0) {
            _exit(4);
        }
        if (i % 50 == 49) {
            uv_run(&loop, UV_RUN_NOWAIT); /* let some batches complete while puts keep coming */
        }
    }
    for (;;) {
        uv_run(&loop, UV_RUN_ONCE);
    }
}

static void test_crash_recovery(void)
{
    char dir[64];
    snprintf(dir, sizeof(dir), "/tmp/px_spool_XXXXXX");
    PX_ASSERT(mkdtemp(dir) != NULL);
    int p[2];
    PX_ASSERT_INT_EQ(pipe(p), 0);
    pid_t pid = fork();
    PX_ASSERT(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        crash_child(dir, p[1]);
        _exit(5);
    }
    close(p[1]);
    static int stored[CRASH_PUTS];
    int nstored = 0, idx;
    while (read(p[0], &idx, sizeof(idx)) == (ssize_t)sizeof(idx)) {
        if (nstored < CRASH_PUTS) {
            stored[nstored++] = idx;
        }
    }
    close(p[0]);
    int wst = 0;
    PX_ASSERT(waitpid(pid, &wst, 0) == pid);
    PX_ASSERT(WIFEXITED(wst));
    PX_ASSERT_INT_EQ(WEXITSTATUS(wst), 0);
    PX_ASSERT(nstored >= CRASH_AFTER - 1);

    fixture f;
    memset(&f, 0, sizeof(f));
    snprintf(f.dir, sizeof(f.dir), "%s", dir);
    uv_loop_init(&f.loop);
    PX_ASSERT_INT_EQ(fx_open(&f, NULL), 0);
    PX_ASSERT_INT_EQ(count_rows(f.s, "SELECT count(*) FROM pragma_integrity_check "
                                     "WHERE integrity_check <> 'ok'"),
                     0);
    static loaded l;
    memset(&l, 0, sizeof(l));
    int n = px_spool_load(f.s, "a", 0, 10000, on_load, &l);
    PX_ASSERT(n >= nstored);
    static char present[CRASH_PUTS];
    memset(present, 0, sizeof(present));
    for (int i = 0; i < l.n; i++) {
        present[atoi(l.evid[i] + 1)] = 1;
    }
    for (int i = 0; i < nstored; i++) {
        PX_ASSERT(present[stored[i]]);
    }
    PX_ASSERT_INT_EQ(fx_done(&f), 0);
}

static void test_group_commit(void)
{
    fixture f;
    PX_ASSERT_INT_EQ(fx_init(&f, NULL), 0);
    static results r;
    memset(&r, 0, sizeof(r));
    static put_ctx c[2000];
    for (int i = 0; i < 2000; i++) {
        char id[16];
        snprintf(id, sizeof(id), "g%d", i);
        px_spool_event ev = mk_event(id, "src", NULL, "{\"n\":1}");
        px_spool_row row = mk_row("a", NULL);
        c[i] = (put_ctx){&r, i};
        PX_ASSERT_INT_EQ(px_spool_put(f.s, &ev, &row, 1, on_put, &c[i]), 0);
    }
    PX_ASSERT(spin_until(&f, &r.n, 2000));
    for (int i = 0; i < 2000; i++) {
        PX_ASSERT_INT_EQ(r.order[i], i);
        PX_ASSERT_INT_EQ(r.status[i], PX_SPOOL_STORED);
    }
    px_spool_stats st;
    px_spool_get_stats(f.s, &st);
    PX_ASSERT(st.max_batch > 1);
    PX_ASSERT(st.max_batch <= BATCH_MAX);
    PX_ASSERT(st.commits < 2000);
    PX_ASSERT_INT_EQ(st.rows_committed, 2000);
    PX_ASSERT_INT_EQ(st.writable, 1);
    PX_ASSERT_INT_EQ(fx_done(&f), 0);
}

static void test_close_runs_pending_callbacks(void)
{
    fixture f;
    PX_ASSERT_INT_EQ(fx_init(&f, NULL), 0);
    static results r;
    memset(&r, 0, sizeof(r));
    put_ctx c[50];
    for (int i = 0; i < 50; i++) {
        px_spool_event ev = mk_event("x", "src", NULL, "{}");
        px_spool_row row = mk_row("a", NULL);
        c[i] = (put_ctx){&r, i};
        PX_ASSERT_INT_EQ(px_spool_put(f.s, &ev, &row, 1, on_put, &c[i]), 0);
    }
    px_spool_close(f.s);
    f.s = NULL;
    PX_ASSERT_INT_EQ(r.n, 50);
    for (int i = 0; i < 50; i++) {
        PX_ASSERT_INT_EQ(r.status[i], PX_SPOOL_STORED);
    }
    uv_run(&f.loop, UV_RUN_DEFAULT);
    PX_ASSERT_INT_EQ(fx_open(&f, NULL), 0);
    static loaded l;
    memset(&l, 0, sizeof(l));
    PX_ASSERT_INT_EQ(px_spool_load(f.s, "a", 0, 100, on_load, &l), 50);
    PX_ASSERT_INT_EQ(fx_done(&f), 0);
}

static void test_queue_limit(void)
{
    fixture f;
    px_spool_options opt = {.durability = PX_DURABILITY_FSYNC, .max_queue = 4};
    PX_ASSERT_INT_EQ(fx_init(&f, &opt), 0);
    static results r;
    memset(&r, 0, sizeof(r));
    put_ctx c[64];
    int accepted = 0, refused = 0;
    /* another connection holds the write lock: the writer blocks in its busy handler with its
     * first batch, so the queue fills up */
    sqlite3 *other = NULL;
    char path[128];
    snprintf(path, sizeof(path), "%s/spool.db", f.dir);
    PX_ASSERT_INT_EQ(sqlite3_open(path, &other), SQLITE_OK);
    PX_ASSERT_INT_EQ(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    for (int i = 0; i < 64; i++) {
        px_spool_event ev = mk_event("q", "src", NULL, "{}");
        px_spool_row row = mk_row("a", NULL);
        c[i] = (put_ctx){&r, i};
        int rc = px_spool_put(f.s, &ev, &row, 1, on_put, &c[accepted]);
        if (rc == 0) {
            accepted++;
        } else {
            PX_ASSERT_INT_EQ(rc, PX_EBUSY);
            refused++;
        }
    }
    sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(other);
    /* at most 4 queued, plus at most 4 taken by the blocked writer */
    PX_ASSERT(accepted >= 4 && accepted <= 8);
    PX_ASSERT_INT_EQ(refused, 64 - accepted);
    PX_ASSERT(spin_until(&f, &r.n, accepted));
    for (int i = 0; i < accepted; i++) {
        PX_ASSERT_INT_EQ(r.status[i], PX_SPOOL_STORED);
    }
    px_spool_stats st;
    px_spool_get_stats(f.s, &st);
    PX_ASSERT_INT_EQ(st.busy_refusals, (uint64_t)refused);
    PX_ASSERT_INT_EQ(fx_done(&f), 0);
}

static void test_backpressure_full_disk(void)
{
    fixture f;
    PX_ASSERT_INT_EQ(fx_init(&f, NULL), 0);
    static results r;
    memset(&r, 0, sizeof(r));
    static put_ctx c[4096];
    for (int i = 0; i < 4096; i++) {
        c[i] = (put_ctx){&r, i};
    }
    int64_t first = put_one(&f, "keep", "a", &r, &c[0]);
    PX_ASSERT(first > 0);
    int64_t pages = count_rows(f.s, "PRAGMA page_count");
    PX_ASSERT(pages > 0);
    char sql[64];
    snprintf(sql, sizeof(sql), "PRAGMA max_page_count=%lld", (long long)pages);
    PX_ASSERT_INT_EQ(px__spool_exec(f.s, sql), 0);

    /* big payloads until a commit fails */
    static char big[8192];
    memset(big, 'x', sizeof(big) - 3);
    big[0] = '"';
    big[sizeof(big) - 3] = '"';
    big[sizeof(big) - 2] = '\0';
    int queued = 1, busy_at_once = 0;
    for (int i = 1; i < 400 && !busy_at_once; i++) {
        px_spool_event ev = mk_event("big", "src", NULL, big);
        px_spool_row row = mk_row("a", NULL);
        int rc = px_spool_put(f.s, &ev, &row, 1, on_put, &c[queued]);
        if (rc == PX_EBUSY) {
            busy_at_once = 1;
            break;
        }
        PX_ASSERT_INT_EQ(rc, 0);
        queued++;
        if (!spin_until(&f, &r.n, queued)) {
            break;
        }
    }
    PX_ASSERT(spin_until(&f, &r.n, queued));
    int failed = 0;
    for (int i = 1; i < queued; i++) {
        if (r.status[i] == PX_EBUSY) {
            failed++;
        }
    }
    PX_ASSERT(failed >= 1);
    PX_ASSERT_INT_EQ(px_spool_writable(f.s), 0);
    px_spool_event ev = mk_event("later", "src", NULL, "{}");
    px_spool_row row = mk_row("a", NULL);
    PX_ASSERT_INT_EQ(px_spool_put(f.s, &ev, &row, 1, on_put, &c[queued]), PX_EBUSY);
    PX_ASSERT(px_spool_dlq_purge(f.s, NULL, 0, NULL, 0) == PX_EBUSY);
    /* a mark queued while unwritable is kept and committed later */
    px_spool_mark_retry(f.s, first, 1, 4242, "while full");

    /* lift the limit: a probe turns the spool writable again within about 500 ms */
    PX_ASSERT_INT_EQ(px__spool_exec(f.s, "PRAGMA max_page_count=1073741823"), 0);
    uint64_t deadline = mono_ms() + 10000;
    while (!px_spool_writable(f.s) && mono_ms() < deadline) {
        uv_run(&f.loop, UV_RUN_NOWAIT);
        usleep(10 * 1000);
    }
    PX_ASSERT_INT_EQ(px_spool_writable(f.s), 1);
    int64_t after = put_one(&f, "after", "a", &r, &c[queued]);
    PX_ASSERT(after > 0);
    static loaded l;
    memset(&l, 0, sizeof(l));
    int n = px_spool_load(f.s, "a", 0, 1000, on_load, &l);
    PX_ASSERT_INT_EQ(n, queued - failed + 1);
    PX_ASSERT_INT_EQ(l.ids[0], first);
    PX_ASSERT_STR_EQ(l.evid[0], "keep");
    PX_ASSERT_INT_EQ(l.attempts[0], 1);
    PX_ASSERT_INT_EQ(l.next_at[0], 4242);
    PX_ASSERT_STR_EQ(l.evid[n - 1], "after");
    px_spool_stats st;
    px_spool_get_stats(f.s, &st);
    PX_ASSERT(st.write_errors >= 1);
    PX_ASSERT(st.busy_refusals >= 2);
    PX_ASSERT_INT_EQ(count_rows(f.s, "SELECT count(*) FROM pragma_integrity_check "
                                     "WHERE integrity_check <> 'ok'"),
                     0);
    PX_ASSERT_INT_EQ(fx_done(&f), 0);
}

/* One operation SQLite refuses on its own (here a trigger on the writer connection) fails alone:
 * the rest of its batch commits and the spool stays writable. */
static void test_bad_operation_isolated(void)
{
    fixture f;
    PX_ASSERT_INT_EQ(fx_init(&f, NULL), 0);
    static results r;
    PX_ASSERT_INT_EQ(put_poisoned_batch(&f, "src", NULL, &r), 0);
    PX_ASSERT_INT_EQ(r.status[0], PX_SPOOL_STORED);
    PX_ASSERT_INT_EQ(r.status[1], PX_ESPOOL);
    PX_ASSERT_INT_EQ(r.status[2], PX_SPOOL_STORED);
    PX_ASSERT_INT_EQ(px_spool_writable(f.s), 1);
    static loaded l;
    memset(&l, 0, sizeof(l));
    PX_ASSERT_INT_EQ(px_spool_load(f.s, "a", 0, 10, on_load, &l), 2);
    PX_ASSERT_STR_EQ(l.evid[0], "fine1");
    PX_ASSERT_STR_EQ(l.evid[1], "fine2");
    PX_ASSERT_INT_EQ(fx_done(&f), 0);
}

static void test_paging(void)
{
    fixture f;
    PX_ASSERT_INT_EQ(fx_init(&f, NULL), 0);
    static results r;
    memset(&r, 0, sizeof(r));
    static put_ctx c[1000];
    for (int i = 0; i < 1000; i++) {
        char id[16];
        snprintf(id, sizeof(id), "p%d", i);
        px_spool_event ev = mk_event(id, "src", NULL, "{}");
        px_spool_row rows[2] = {mk_row(i % 2 ? "odd" : "even", NULL), mk_row("all", NULL)};
        c[i] = (put_ctx){&r, i};
        PX_ASSERT_INT_EQ(px_spool_put(f.s, &ev, rows, 2, on_put, &c[i]), 0);
    }
    PX_ASSERT(spin_until(&f, &r.n, 1000));
    static loaded l;
    int64_t after = 0, last = 0;
    int total = 0, pages = 0;
    for (;;) {
        memset(&l, 0, sizeof(l));
        int n = px_spool_load(f.s, "all", after, 128, on_load, &l);
        PX_ASSERT(n >= 0 && n <= 128);
        if (n == 0) {
            break;
        }
        for (int i = 0; i < n; i++) {
            PX_ASSERT(l.ids[i] > last);
            last = l.ids[i];
            char id[16];
            snprintf(id, sizeof(id), "p%d", total + i);
            PX_ASSERT_STR_EQ(l.evid[i], id);
        }
        total += n;
        pages++;
        after = l.ids[n - 1];
    }
    PX_ASSERT_INT_EQ(total, 1000);
    PX_ASSERT_INT_EQ(pages, 8);
    memset(&l, 0, sizeof(l));
    PX_ASSERT_INT_EQ(px_spool_load(f.s, "odd", 0, 1000, on_load, &l), 500);
    counts_seen cs = {0};
    PX_ASSERT_INT_EQ(px_spool_pending_counts(f.s, on_count, &cs), 3);
    PX_ASSERT_INT_EQ(fx_done(&f), 0);
}

static void test_open_errors(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    px_spool *s = NULL;
    char err[256] = "";
    PX_ASSERT(px_spool_open(&loop, "/proc/px_no_such/dir", NULL, &s, err, sizeof(err)) < 0);
    PX_ASSERT(s == NULL);
    PX_ASSERT_STR_HAS(err, "/proc/px_no_such/dir");
    /* a database from a newer build is refused */
    fixture f;
    PX_ASSERT_INT_EQ(fx_init(&f, NULL), 0);
    PX_ASSERT_INT_EQ(px__spool_exec(f.s, "PRAGMA user_version=99"), 0);
    fx_close_spool(&f);
    PX_ASSERT(fx_open(&f, NULL) < 0);
    PX_ASSERT(f.s == NULL);
    PX_ASSERT_INT_EQ(fx_done(&f), 0);
    PX_ASSERT_INT_EQ(uv_loop_close(&loop), 0);
}

/* A delivery that crashed the process: an attempt each time, dead letter at the limit. */
static void test_note_crash(void)
{
    fixture f;
    PX_ASSERT_INT_EQ(fx_init(&f, NULL), 0);
    static results r;
    memset(&r, 0, sizeof(r));
    put_ctx c0 = {&r, 0}, c1 = {&r, 1};
    int64_t a = put_one(&f, "e1", "a", &r, &c0);
    int64_t b = put_one(&f, "e2", "a", &r, &c1);
    PX_ASSERT(a > 0 && b > a);
    px_spool_mark_retry(f.s, a, 1, 0, "http 503");
    PX_ASSERT_INT_EQ(px_spool_note_crash(f.s, a, "crash: SIGSEGV in deliver of instance a", 3), 1);
    static loaded l;
    memset(&l, 0, sizeof(l));
    PX_ASSERT_INT_EQ(px_spool_load(f.s, "a", 0, 10, on_load, &l), 2);
    PX_ASSERT_INT_EQ(l.attempts[0], 2);
    PX_ASSERT_STR_HAS(l.last_error, "crash: SIGSEGV in deliver"); /* buffer cuts the rest */
    PX_ASSERT_INT_EQ(px_spool_note_crash(f.s, a, "crash: SIGABRT in deliver of instance a", 3), 2);
    PX_ASSERT_INT_EQ(px_spool_note_crash(f.s, a, "crash: SIGABRT in deliver of instance a", 3), 3);
    /* third crash: dead, with the whole history; the other delivery is untouched */
    memset(&l, 0, sizeof(l));
    PX_ASSERT_INT_EQ(px_spool_load(f.s, "a", 0, 10, on_load, &l), 1);
    PX_ASSERT_INT_EQ(l.ids[0], b);
    PX_ASSERT_INT_EQ(l.attempts[0], 0);
    json_t *list = NULL;
    PX_ASSERT_INT_EQ(px_spool_dlq_list(f.s, NULL, 0, 0, &list), 0);
    PX_ASSERT_INT_EQ(json_array_size(list), 1);
    json_t *dead = json_array_get(list, 0);
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(dead, "reason")),
                     "crashed the host 3 times; last: crash: SIGABRT in deliver of instance a");
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(dead, "attempts")), 4);
    json_t *shown = NULL;
    PX_ASSERT_INT_EQ(px_spool_dlq_show(f.s, json_integer_value(json_object_get(dead, "id")),
                                       &shown), 0);
    PX_ASSERT_INT_EQ(json_array_size(json_object_get(shown, "history")), 4);
    json_decref(shown);
    json_decref(list);
    counts_seen cs = {0};
    PX_ASSERT_INT_EQ(px_spool_pending_counts(f.s, on_count, &cs), 1);
    PX_ASSERT_INT_EQ(cs.a, 1);
    /* gone from the pending deliveries: nothing to charge */
    PX_ASSERT_INT_EQ(px_spool_note_crash(f.s, a, "crash", 3), PX_ENOENT);
    PX_ASSERT_INT_EQ(px_spool_note_crash(f.s, 987654, "crash", 3), PX_ENOENT);
    PX_ASSERT_INT_EQ(fx_done(&f), 0);
}

/* The per-sink pending figure used by max_pending counts queued puts before their commit. */
static void test_pending_accessor(void)
{
    fixture f;
    PX_ASSERT_INT_EQ(fx_init(&f, NULL), 0);
    static results r;
    memset(&r, 0, sizeof(r));
    put_ctx ctx[3] = {{&r, 0}, {&r, 1}, {&r, 2}};
    px_spool_event ev = mk_event("e1", "src", NULL, "{}");
    px_spool_row rows[2] = {mk_row("a", NULL), mk_row("b", NULL)};
    PX_ASSERT_INT_EQ(px_spool_put(f.s, &ev, rows, 2, on_put, &ctx[0]), 0);
    px_spool_row row = mk_row("a", NULL);
    PX_ASSERT_INT_EQ(px_spool_put(f.s, &ev, &row, 1, on_put, &ctx[1]), 0);
    /* queued or committed: counted either way, never twice */
    int64_t a = px_spool_pending(f.s, "a");
    PX_ASSERT_INT_EQ(a, 2);
    PX_ASSERT_INT_EQ(px_spool_pending(f.s, "b"), 1);
    PX_ASSERT_INT_EQ(px_spool_pending(f.s, "zzz"), 0);
    PX_ASSERT(spin_until(&f, &r.n, 2));
    PX_ASSERT_INT_EQ(px_spool_pending(f.s, "a"), 2);
    px_spool_mark_done(f.s, rows[0].id, 1);
    px_spool_mark_dead(f.s, row.id, 1, "gone");
    static loaded l;
    PX_ASSERT_INT_EQ(px_spool_load(f.s, "a", 0, 10, on_load, &l), 0); /* waits for the marks */
    PX_ASSERT_INT_EQ(px_spool_pending(f.s, "a"), 0);
    PX_ASSERT_INT_EQ(px_spool_pending(f.s, "b"), 1);
    /* a duplicate put is no longer queued once processed */
    px_spool_event dup = mk_event("e2", "src", "k1", "{}");
    PX_ASSERT_INT_EQ(px_spool_put(f.s, &dup, &row, 1, on_put, &ctx[2]), 0);
    PX_ASSERT(spin_until(&f, &r.n, 3));
    PX_ASSERT_INT_EQ(px_spool_pending(f.s, "a"), 1);
    PX_ASSERT_INT_EQ(fx_done(&f), 0);
}

/* Dead letter ids, highest first, into ids (at most max); returns how many. */
static size_t dead_ids(fixture *f, int64_t *ids, size_t max)
{
    json_t *list = NULL;
    if (px_spool_dlq_list(f->s, NULL, 0, 0, &list) != 0) {
        return 0;
    }
    size_t n = 0, i;
    json_t *e;
    json_array_foreach(list, i, e) {
        if (n < max) {
            ids[n++] = json_integer_value(json_object_get(e, "id"));
        }
    }
    json_decref(list);
    for (size_t a = 1; a < n; a++) { /* the list is by time of death: sort by id */
        for (size_t b = a; b > 0 && ids[b - 1] < ids[b]; b--) {
            int64_t t = ids[b];
            ids[b] = ids[b - 1];
            ids[b - 1] = t;
        }
    }
    return n;
}

/* A dead letter's id is its delivery's id, the one the dispatcher logs with "dead letter id=";
 * raw dead letters take theirs from the same sequence. None is given twice: not after a replay
 * deleted the highest, not after a reopen. */
static void test_dead_letter_ids(void)
{
    fixture f;
    PX_ASSERT_INT_EQ(fx_init(&f, NULL), 0);
    static results r;
    memset(&r, 0, sizeof(r));
    put_ctx c[10];
    for (int i = 0; i < 10; i++) {
        c[i] = (put_ctx){&r, i};
    }
    for (int i = 0; i < 3; i++) { /* delivered: dead letter ids and delivery ids part ways */
        int64_t id = put_one(&f, "e0", "b", &r, &c[i]);
        PX_ASSERT(id > 0);
        px_spool_mark_done(f.s, id, 1);
    }
    int64_t a1 = put_one(&f, "e1", "a", &r, &c[3]);
    int64_t a2 = put_one(&f, "e2", "a", &r, &c[4]);
    int64_t a3 = put_one(&f, "e3", "a", &r, &c[5]);
    PX_ASSERT(a1 > 0 && a2 > a1 && a3 > a2);
    px_spool_mark_dead(f.s, a1, 1, "rejected");
    px_spool_mark_dead(f.s, a2, 1, "rejected");
    int64_t ids[8];
    PX_ASSERT_INT_EQ(dead_ids(&f, ids, 8), 2);
    PX_ASSERT_INT_EQ(ids[0], a2);
    PX_ASSERT_INT_EQ(ids[1], a1);
    json_t *shown = NULL;
    PX_ASSERT_INT_EQ(px_spool_dlq_show(f.s, a1, &shown), 0);
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(shown, "event_id")), "e1");
    json_decref(shown);

    /* replaying the highest frees its id: it is not given to the next dead letter */
    replayed rp = {0};
    PX_ASSERT_INT_EQ(px_spool_dlq_replay(f.s, &a2, 1, NULL, on_replay, &rp), 1);
    PX_ASSERT_INT_EQ(rp.n, 1);
    px_spool_mark_dead(f.s, a3, 1, "rejected");
    PX_ASSERT_INT_EQ(dead_ids(&f, ids, 8), 2);
    PX_ASSERT_INT_EQ(ids[0], a3);
    PX_ASSERT(ids[0] > a2);
    px_spool_mark_dead(f.s, rp.ids[0], 1, "rejected again");
    PX_ASSERT_INT_EQ(dead_ids(&f, ids, 8), 3);
    PX_ASSERT_INT_EQ(ids[0], rp.ids[0]);
    PX_ASSERT(rp.ids[0] > a3);
    px_spool_event raw = mk_event("raw", "src", NULL, "garbage");
    PX_ASSERT_INT_EQ(px_spool_dead_raw(f.s, &raw, NULL, NULL, "bad", on_put, &c[6]), 0);
    PX_ASSERT(spin_until(&f, &r.n, 7));
    PX_ASSERT_INT_EQ(dead_ids(&f, ids, 8), 4);
    int64_t raw_id = ids[0];
    PX_ASSERT(raw_id > rp.ids[0]);

    /* the highest replayed and purged, then a reopen: still never given again */
    int64_t top = raw_id;
    PX_ASSERT_INT_EQ(px_spool_dlq_purge(f.s, &top, 1, NULL, 0), 1);
    rp = (replayed){0};
    PX_ASSERT_INT_EQ(px_spool_dlq_replay(f.s, &ids[1], 1, NULL, on_replay, &rp), 1);
    px_spool_mark_done(f.s, rp.ids[0], 1);
    fx_close_spool(&f);
    PX_ASSERT_INT_EQ(fx_open(&f, NULL), 0);
    int64_t a4 = put_one(&f, "e4", "a", &r, &c[7]);
    PX_ASSERT(a4 > rp.ids[0] && a4 > raw_id);
    px_spool_mark_dead(f.s, a4, 1, "rejected");
    PX_ASSERT_INT_EQ(dead_ids(&f, ids, 8), 3);
    PX_ASSERT_INT_EQ(ids[0], a4);
    PX_ASSERT_INT_EQ(fx_done(&f), 0);
}

/* Dead letters stored before ids were delivery ids: renumbered to their delivery's id (raw ones
 * above every id given so far), readable with their history; the sequence moves past them. */
static void test_dead_letter_ids_migrated(void)
{
    fixture f;
    PX_ASSERT_INT_EQ(fx_prepare(&f), 0);
    sqlite3 *db = fx_raw_db(&f);
    PX_ASSERT(db != NULL);
    PX_ASSERT_INT_EQ(exec_sql(db, migrations[0], NULL, 0), SQLITE_OK);
    PX_ASSERT_INT_EQ(exec_sql(db, migrations[1], NULL, 0), SQLITE_OK);
    /* schema 2: delivery 2 still pending; dead letters 1 and 2 (deliveries 6 and 9, delivery 6
     * with two attempts) and 3 (raw) */
    PX_ASSERT_INT_EQ(
        exec_sql(db,
                 "PRAGMA user_version=2;"
                 "INSERT INTO events(eid, id, type, source, time_ms, payload, refs) VALUES"
                 " (1, 'e2', 't', 's', 1, '{}', 1), (2, 'e6', 't', 's', 1, '{}', 1),"
                 " (3, 'e9', 't', 's', 1, '{}', 1), (4, 'raw', 't', 's', 1, 'x', 1);"
                 "INSERT INTO deliveries(id, event, pipeline, sink, action, params) VALUES"
                 " (2, 1, 'p', 'a', '', '{}');"
                 "INSERT INTO dead(id, delivery_id, event, pipeline, sink, action, params, reason,"
                 " attempts, died_at) VALUES (1, 6, 2, 'p', 'a', '', '{}', 'no', 2, 100),"
                 " (2, 9, 3, 'p', 'a', '', '{}', 'no', 1, 200),"
                 " (3, 0, 4, '', '', '', '{}', 'poison', 0, 300);"
                 "INSERT INTO attempts(delivery_id, attempt, at_ms, error) VALUES"
                 " (6, 1, 50, 'one'), (6, 2, 100, 'two');"
                 "INSERT INTO meta(k, v) VALUES('last_delivery_id', 9);",
                 NULL, 0),
        SQLITE_OK);
    sqlite3_close(db);

    PX_ASSERT_INT_EQ(fx_open(&f, NULL), 0);
    PX_ASSERT_INT_EQ(count_rows(f.s, "PRAGMA user_version"), SCHEMA_VERSION);
    int64_t ids[8];
    PX_ASSERT_INT_EQ(dead_ids(&f, ids, 8), 3);
    PX_ASSERT_INT_EQ(ids[0], 12); /* raw: above the highest id given (9) */
    PX_ASSERT_INT_EQ(ids[1], 9);
    PX_ASSERT_INT_EQ(ids[2], 6);
    json_t *shown = NULL;
    PX_ASSERT_INT_EQ(px_spool_dlq_show(f.s, 6, &shown), 0);
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(shown, "event_id")), "e6");
    PX_ASSERT_INT_EQ(json_array_size(json_object_get(shown, "history")), 2);
    json_decref(shown);
    PX_ASSERT_INT_EQ(px_spool_dlq_show(f.s, 12, &shown), 0);
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(shown, "reason")), "poison");
    json_decref(shown);
    /* the pending delivery 2 dies under its own id, which no dead letter holds any more */
    px_spool_mark_dead(f.s, 2, 1, "rejected");
    PX_ASSERT_INT_EQ(dead_ids(&f, ids, 8), 4);
    PX_ASSERT_INT_EQ(ids[3], 2);
    static results r;
    memset(&r, 0, sizeof(r));
    put_ctx c = {&r, 0};
    PX_ASSERT(put_one(&f, "e10", "a", &r, &c) > 12);
    PX_ASSERT_INT_EQ(fx_done(&f), 0);
}

static int64_t wal_bytes(const fixture *f)
{
    char path[96];
    snprintf(path, sizeof(path), "%s/spool.db-wal", f->dir);
    struct stat sb;
    return stat(path, &sb) == 0 ? (int64_t)sb.st_size : 0;
}

/* Some 16 MB written and deleted again in groups, as a healthy sink would: the WAL file stays
 * near its limit instead of growing with what passed through, and once the writer is idle the
 * checkpoint thread truncates it. */
static void test_wal_bounded(void)
{
    enum { GROUP = 100, GROUPS = 40 };
    fixture f;
    PX_ASSERT_INT_EQ(fx_init(&f, NULL), 0);
    static results r;
    static char payload[4096];
    memset(payload, 'x', sizeof(payload) - 1);
    memcpy(payload, "{\"b\":\"", 6);
    memcpy(payload + sizeof(payload) - 3, "\"}", 3);
    put_ctx c[GROUP];
    px_spool_row rows[GROUP];
    int64_t wal_max = 0;
    for (int g = 0; g < GROUPS; g++) {
        memset(&r, 0, sizeof(r));
        for (int i = 0; i < GROUP; i++) {
            c[i] = (put_ctx){&r, i};
            px_spool_event ev = mk_event("e", "src", NULL, payload);
            rows[i] = mk_row("a", NULL);
            PX_ASSERT_INT_EQ(px_spool_put(f.s, &ev, &rows[i], 1, on_put, &c[i]), 0);
        }
        PX_ASSERT(spin_until(&f, &r.n, GROUP));
        for (int i = 0; i < GROUP; i++) {
            PX_ASSERT_INT_EQ(r.status[i], PX_SPOOL_STORED);
            px_spool_mark_done(f.s, rows[i].id, 1);
        }
        int64_t n = 0;
        PX_ASSERT_INT_EQ(px_spool_dlq_count(f.s, &n), 0); /* waits for the marks */
        int64_t w = wal_bytes(&f);
        wal_max = w > wal_max ? w : wal_max;
    }
    PX_ASSERT_INT_EQ(count_rows(f.s, "SELECT count(*) FROM events"), 0);
    PX_ASSERT(wal_max > 0);
    PX_ASSERT(wal_max <= (int64_t)PX_SPOOL_WAL_LIMIT_BYTES + (2 << 20)); /* + about a group */
    uint64_t deadline = mono_ms() + 20000;
    while (wal_bytes(&f) > 0 && mono_ms() < deadline) {
        uv_run(&f.loop, UV_RUN_NOWAIT);
        usleep(10 * 1000);
    }
    PX_ASSERT_INT_EQ(wal_bytes(&f), 0);
    PX_ASSERT_INT_EQ(fx_done(&f), 0);
}

/* ---- payload compression and the schema before it ------------------------------------------ */

typedef struct loaded_bytes {
    int n;
    int64_t ids[8];
    size_t len[8];
    char payload[8][8192];
} loaded_bytes;

static void on_load_bytes(const px_spool_loaded *d, void *arg)
{
    loaded_bytes *l = arg;
    if (l->n >= 8 || d->ev.payload_len > sizeof(l->payload[0])) {
        return;
    }
    l->ids[l->n] = d->id;
    l->len[l->n] = d->ev.payload_len;
    memcpy(l->payload[l->n], d->ev.payload, d->ev.payload_len);
    l->n++;
}

/* A JSON text of about 3 KB (compresses well), a short one, and bytes that are not text. */
static size_t sample_payload(int which, char *buf, size_t cap)
{
    if (which == 0) {
        size_t n = (size_t)snprintf(buf, cap, "{\"items\":[");
        for (int i = 0; i < 40; i++) {
            n += (size_t)snprintf(buf + n, cap - n, "%s{\"sku\":\"A-%04d\",\"qty\":%d,\"note\":"
                                  "\"the same words again\"}", i ? "," : "", i * 7, i);
        }
        n += (size_t)snprintf(buf + n, cap - n, "]}");
        return n;
    }
    if (which == 1) {
        return (size_t)snprintf(buf, cap, "{\"a\":1}");
    }
    for (size_t i = 0; i < 600; i++) {
        buf[i] = (char)((i * 131 + 7) & 0xff); /* NULs and bytes above 0x7f included */
    }
    return 600;
}

static int64_t put_payload(fixture *f, const char *id, const char *payload, size_t len,
                           results *r, put_ctx *c)
{
    px_spool_event ev = mk_event(id, "src", NULL, "");
    ev.payload = payload;
    ev.payload_len = len;
    px_spool_row row = mk_row("z", NULL);
    int want = r->n + 1;
    if (px_spool_put(f->s, &ev, &row, 1, on_put, c) != 0 || !spin_until(f, &r->n, want)) {
        return -1;
    }
    return r->status[c->idx] == PX_SPOOL_STORED ? row.id : -1;
}

/* With compress: zstd, a payload worth compressing is stored as a smaller zstd frame and read
 * back byte for byte, by load and by dlq show; a short one is stored as given. Reopened without
 * compression, the compressed rows still read back and new rows are stored as given. */
static void test_compressed_payloads(void)
{
    px_spool_options zopt = {.durability = PX_DURABILITY_NORMAL, .compress = PX_COMPRESS_ZSTD};
    fixture f;
    PX_ASSERT_INT_EQ(fx_init(&f, &zopt), 0);
    static char p[4][8192];
    size_t plen[4];
    for (int i = 0; i < 3; i++) {
        plen[i] = sample_payload(i, p[i], sizeof(p[i]));
    }
    static results r;
    memset(&r, 0, sizeof(r));
    put_ctx c[4] = {{&r, 0}, {&r, 1}, {&r, 2}, {&r, 3}};
    int64_t ids[4];
    for (int i = 0; i < 3; i++) {
        char evid[8];
        snprintf(evid, sizeof(evid), "z%d", i);
        ids[i] = put_payload(&f, evid, p[i], plen[i], &r, &c[i]);
        PX_ASSERT(ids[i] > 0);
    }
    PX_ASSERT_INT_EQ(count_rows(f.s, "SELECT codec FROM events WHERE id='z0'"), 1);
    PX_ASSERT(count_rows(f.s, "SELECT length(payload) FROM events WHERE id='z0'") <
              (int64_t)plen[0] / 3);
    PX_ASSERT_INT_EQ(count_rows(f.s, "SELECT codec FROM events WHERE id='z1'"), 0);
    static loaded_bytes l;
    memset(&l, 0, sizeof(l));
    PX_ASSERT_INT_EQ(px_spool_load(f.s, "z", 0, 10, on_load_bytes, &l), 3);
    for (int i = 0; i < 3; i++) {
        PX_ASSERT_INT_EQ(l.ids[i], ids[i]);
        PX_ASSERT_INT_EQ(l.len[i], plen[i]);
        PX_ASSERT(memcmp(l.payload[i], p[i], plen[i]) == 0);
    }
    fx_close_spool(&f);

    PX_ASSERT_INT_EQ(fx_open(&f, NULL), 0); /* compression off now */
    plen[3] = sample_payload(0, p[3], sizeof(p[3]));
    ids[3] = put_payload(&f, "z3", p[3], plen[3], &r, &c[3]);
    PX_ASSERT(ids[3] > 0);
    PX_ASSERT_INT_EQ(count_rows(f.s, "SELECT codec FROM events WHERE id='z3'"), 0);
    PX_ASSERT_INT_EQ(count_rows(f.s, "SELECT length(payload) FROM events WHERE id='z3'"),
                     (int64_t)plen[3]);
    memset(&l, 0, sizeof(l));
    PX_ASSERT_INT_EQ(px_spool_load(f.s, "z", 0, 10, on_load_bytes, &l), 4);
    for (int i = 0; i < 4; i++) {
        PX_ASSERT_INT_EQ(l.len[i], plen[i]);
        PX_ASSERT(memcmp(l.payload[i], p[i], plen[i]) == 0);
    }
    /* a dead letter shows the payload as it was put */
    px_spool_mark_dead(f.s, ids[0], 1, "no");
    json_t *shown = NULL;
    PX_ASSERT_INT_EQ(px_spool_dlq_show(f.s, ids[0], &shown), 0);
    json_t *want = json_loadb(p[0], plen[0], 0, NULL);
    PX_ASSERT(want != NULL);
    PX_ASSERT(json_equal(json_object_get(shown, "payload"), want));
    json_decref(want);
    json_decref(shown);
    PX_ASSERT_INT_EQ(fx_done(&f), 0);
}

/* Payload i of a stream that shares its shape and most words, as events of one type do. */
static size_t shaped_payload(int i, char *buf, size_t cap)
{
    return (size_t)snprintf(buf, cap,
                            "{\"order\":%d,\"customer\":{\"name\":\"customer %d\",\"email\":"
                            "\"c%d@example.com\",\"city\":\"madrid\"},\"status\":\"created\","
                            "\"items\":[{\"sku\":\"A-%04d\",\"qty\":%d}],\"total\":%d.%02d}",
                            1000 + i, i * 7, i, i * 13 % 10000, i % 9 + 1, i * 31 % 977, i % 100);
}

typedef struct shaped_check {
    int n, wrong;
} shaped_check;

/* Counts the rows loaded and those whose payload is not shaped_payload(their event's number). */
static void on_load_shaped(const px_spool_loaded *d, void *arg)
{
    shaped_check *c = arg;
    char want[512];
    size_t n = shaped_payload(atoi(d->ev.id + 1), want, sizeof(want));
    c->n++;
    if (d->ev.payload_len != n || memcmp(d->ev.payload, want, n) != 0) {
        c->wrong++;
    }
}

/* With compress: zstd, the first DICT_SAMPLES payloads make a dictionary, stored in dicts, and
 * the payloads after them are compressed with it (codec 1 + its id), smaller than without; each
 * reads back byte for byte (load, dlq show), after a reopen with compression on (the same
 * dictionary is taken back, none is made again) or off. */
static void test_compression_dictionary(void)
{
    px_spool_options zopt = {.durability = PX_DURABILITY_NORMAL, .compress = PX_COMPRESS_ZSTD};
    fixture f;
    PX_ASSERT_INT_EQ(fx_init(&f, &zopt), 0);
    enum { N = DICT_SAMPLES + 40 };
    static results r;
    memset(&r, 0, sizeof(r));
    static put_ctx c[N + 1];
    int64_t last_id = 0;
    for (int i = 0; i <= N; i++) {
        char evid[16], p[512];
        snprintf(evid, sizeof(evid), "d%d", i);
        size_t n = shaped_payload(i, p, sizeof(p));
        c[i] = (put_ctx){&r, i};
        last_id = put_payload(&f, evid, p, n, &r, &c[i]);
        PX_ASSERT(last_id > 0);
        if (i == N - 1) {
            fx_close_spool(&f); /* the last one after a reopen */
            PX_ASSERT_INT_EQ(fx_open(&f, &zopt), 0);
        }
    }
    PX_ASSERT_INT_EQ(count_rows(f.s, "SELECT count(*) FROM dicts"), 1);
    PX_ASSERT_INT_EQ(count_rows(f.s, "SELECT count(*) FROM events WHERE codec = 1"),
                     DICT_SAMPLES);
    PX_ASSERT_INT_EQ(count_rows(f.s, "SELECT count(*) FROM events WHERE codec = 2"),
                     N + 1 - DICT_SAMPLES);
    int64_t plain = count_rows(f.s, "SELECT avg(length(payload)) FROM events WHERE codec = 1");
    int64_t with_dict = count_rows(f.s, "SELECT avg(length(payload)) FROM events WHERE codec = 2");
    PX_ASSERT(with_dict * 2 < plain);
    static shaped_check sc;
    memset(&sc, 0, sizeof(sc));
    PX_ASSERT_INT_EQ(px_spool_load(f.s, "z", 0, N + 10, on_load_shaped, &sc), N + 1);
    PX_ASSERT_INT_EQ(sc.n, N + 1);
    PX_ASSERT_INT_EQ(sc.wrong, 0);
    fx_close_spool(&f);

    PX_ASSERT_INT_EQ(fx_open(&f, NULL), 0); /* compression off now */
    memset(&sc, 0, sizeof(sc));
    PX_ASSERT_INT_EQ(px_spool_load(f.s, "z", 0, N + 10, on_load_shaped, &sc), N + 1);
    PX_ASSERT_INT_EQ(sc.wrong, 0);
    px_spool_mark_dead(f.s, last_id, 1, "no");
    json_t *shown = NULL;
    PX_ASSERT_INT_EQ(px_spool_dlq_show(f.s, last_id, &shown), 0);
    char p[512];
    json_t *want = json_loadb(p, shaped_payload(N, p, sizeof(p)), 0, NULL);
    PX_ASSERT(want != NULL);
    PX_ASSERT(json_equal(json_object_get(shown, "payload"), want));
    json_decref(want);
    json_decref(shown);
    PX_ASSERT_INT_EQ(fx_done(&f), 0);
}

/* A database of schema 3 (4 KiB pages, no codec column) opens with its pending event, which
 * reads back as it was; it keeps its page size; new rows in it may be compressed. A new database
 * gets 16 KiB pages. */
static void test_schema3_migrated(void)
{
    fixture f;
    PX_ASSERT_INT_EQ(fx_prepare(&f), 0);
    sqlite3 *db = fx_raw_db(&f);
    PX_ASSERT(db != NULL);
    PX_ASSERT_INT_EQ(exec_sql(db, "PRAGMA page_size=4096; PRAGMA journal_mode=WAL;", NULL, 0),
                     SQLITE_OK);
    for (int v = 0; v < 3; v++) {
        PX_ASSERT_INT_EQ(exec_sql(db, migrations[v], NULL, 0), SQLITE_OK);
    }
    PX_ASSERT_INT_EQ(
        exec_sql(db,
                 "PRAGMA user_version=3;"
                 "INSERT INTO events(eid, id, type, source, time_ms, payload, refs) VALUES"
                 " (1, 'old', 't', 's', 1, CAST('{\"kept\":true}' AS BLOB), 1);"
                 "INSERT INTO deliveries(id, event, pipeline, sink, action, params) VALUES"
                 " (5, 1, 'p', 'z', '', '{}');"
                 "INSERT OR REPLACE INTO meta(k, v) VALUES('last_delivery_id', 5);",
                 NULL, 0),
        SQLITE_OK);
    sqlite3_close(db);

    px_spool_options zopt = {.durability = PX_DURABILITY_NORMAL, .compress = PX_COMPRESS_ZSTD};
    PX_ASSERT_INT_EQ(fx_open(&f, &zopt), 0);
    PX_ASSERT_INT_EQ(count_rows(f.s, "PRAGMA user_version"), SCHEMA_VERSION);
    PX_ASSERT_INT_EQ(count_rows(f.s, "PRAGMA page_size"), 4096);
    PX_ASSERT_INT_EQ(count_rows(f.s, "SELECT codec FROM events WHERE id='old'"), 0);
    static char p[8192];
    size_t plen = sample_payload(0, p, sizeof(p));
    static results r;
    memset(&r, 0, sizeof(r));
    put_ctx c = {&r, 0};
    int64_t id = put_payload(&f, "new", p, plen, &r, &c);
    PX_ASSERT(id > 5);
    PX_ASSERT_INT_EQ(count_rows(f.s, "SELECT codec FROM events WHERE id='new'"), 1);
    static loaded_bytes l;
    memset(&l, 0, sizeof(l));
    PX_ASSERT_INT_EQ(px_spool_load(f.s, "z", 0, 10, on_load_bytes, &l), 2);
    PX_ASSERT_INT_EQ(l.ids[0], 5);
    PX_ASSERT_INT_EQ(l.len[0], strlen("{\"kept\":true}"));
    PX_ASSERT(memcmp(l.payload[0], "{\"kept\":true}", l.len[0]) == 0);
    PX_ASSERT_INT_EQ(l.len[1], plen);
    PX_ASSERT(memcmp(l.payload[1], p, plen) == 0);
    PX_ASSERT_INT_EQ(fx_done(&f), 0);

    PX_ASSERT_INT_EQ(fx_init(&f, NULL), 0);
    PX_ASSERT_INT_EQ(count_rows(f.s, "PRAGMA page_size"), NEW_PAGE_SIZE);
    PX_ASSERT_INT_EQ(fx_done(&f), 0);
}

PX_TEST_MAIN(PX_TEST(test_put_and_load), PX_TEST(test_mark_done),
             PX_TEST(test_done_before_commit_is_elided),
             PX_TEST(test_all_done_commit_writes_nothing), PX_TEST(test_mark_retry),
             PX_TEST(test_dead_letters), PX_TEST(test_replay_and_purge), PX_TEST(test_dedupe), PX_TEST(test_keyset),
             PX_TEST(test_dedupe_keys_merged), PX_TEST(test_dedupe_keys_rolled_back),
             PX_TEST(test_reopen), PX_TEST(test_crash_recovery), PX_TEST(test_group_commit),
             PX_TEST(test_close_runs_pending_callbacks), PX_TEST(test_queue_limit),
             PX_TEST(test_backpressure_full_disk), PX_TEST(test_bad_operation_isolated),
             PX_TEST(test_paging),
             PX_TEST(test_open_errors), PX_TEST(test_note_crash),
             PX_TEST(test_pending_accessor), PX_TEST(test_wal_bounded),
             PX_TEST(test_dead_letter_ids), PX_TEST(test_dead_letter_ids_migrated),
             PX_TEST(test_compressed_payloads),
             PX_TEST(test_compression_dictionary), PX_TEST(test_schema3_migrated))
