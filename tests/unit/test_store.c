/* The store test suite: the store interface's contract (store.h), written once and run on every
 * backend: puts persisted after their call, claims in id order per sink, done / retry / dead,
 * dead letters listed, shown, replayed and purged with ids never given twice, dedupe, per-instance
 * state, counts; and, for the backends that keep data, persistence across a reopen. */
#define _XOPEN_SOURCE 700
#include "../../host/store/spool.c"
#include "../../host/store/state.c"
#include "../../host/store/store_memory.c"
#include "../../host/store/store_sqlite.c"
#include "../../host/store/store_local.c"

#include <ftw.h>
#include <unistd.h>

#include "test.h"

enum backend { SQLITE, MEMORY };

typedef struct fixture {
    enum backend backend;
    uv_loop_t loop;
    char dir[64];
    px_store *s;
    px_store_options opt;
} fixture;

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static int store_open(fixture *f)
{
    char err[256];
    f->s = NULL;
    return f->backend == SQLITE
               ? px_store_open_sqlite(&f->loop, f->dir, &f->opt, &f->s, err, sizeof(err))
               : px_store_open_memory(&f->loop, &f->opt, &f->s);
}

static void store_close(fixture *f)
{
    px_store_close(f->s);
    f->s = NULL;
    uv_run(&f->loop, UV_RUN_DEFAULT);
}

/* Runs case fn on a fresh store of backend b, then closes and removes everything. */
static void run_on(enum backend b, void (*fn)(fixture *f))
{
    fixture f = {.backend = b, .opt = {.dedupe_window_ms = 60000, .host_id = "host-a"}};
    snprintf(f.dir, sizeof(f.dir), "/tmp/px_store_XXXXXX");
    PX_ASSERT(mkdtemp(f.dir) != NULL);
    uv_loop_init(&f.loop);
    PX_ASSERT_INT_EQ(store_open(&f), 0);
    fn(&f);
    store_close(&f);
    PX_ASSERT_INT_EQ(uv_loop_close(&f.loop), 0);
    nftw(f.dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

typedef struct put_result {
    int calls, status;
} put_result;

static void on_put(int status, void *arg)
{
    put_result *r = arg;
    r->calls++;
    r->status = status;
}

static void wait_put(fixture *f, put_result *r)
{
    while (r->calls == 0) {
        uv_run(&f->loop, UV_RUN_ONCE);
    }
}

static px_store_event event(const char *id, const char *key)
{
    return (px_store_event){.id = id, .type = "t", .source = "src", .dedupe_key = key,
                            .time_ms = 1700000000000, .payload = "{\"n\":1}", .payload_len = 7,
                            .meta = "{\"m\":true}"};
}

/* Puts event id with one delivery per sink in sinks (NULL-terminated) and waits for the
 * commit. Returns the put's status; the delivery ids are stored in ids. */
static int put_wait(fixture *f, const char *id, const char *key, const char *const *sinks,
                    int64_t *ids)
{
    px_store_row rows[4];
    size_t n = 0;
    for (; sinks && sinks[n]; n++) {
        rows[n] = (px_store_row){.pipeline = "p", .sink = sinks[n], .action = "go",
                                 .params = "{\"a\":2}", .params_len = 7};
    }
    px_store_event ev = event(id, key);
    put_result r = {0, -1};
    int rc = px_store_put(f->s, &ev, rows, n, on_put, &r);
    if (rc != 0) {
        return rc;
    }
    wait_put(f, &r);
    for (size_t i = 0; ids && i < n; i++) {
        ids[i] = rows[i].id;
    }
    return r.status;
}

typedef struct claimed {
    int64_t ids[16];
    uint32_t attempts[16];
    int64_t next_at[16];
    char last_error[16][32];
    char payload[16][32];
    size_t n;
} claimed;

static void on_claim(const px_store_delivery *d, void *arg)
{
    claimed *c = arg;
    if (c->n < 16) {
        c->ids[c->n] = d->id;
        c->attempts[c->n] = d->attempts;
        c->next_at[c->n] = d->next_at_ms;
        snprintf(c->last_error[c->n], 32, "%s", d->last_error ? d->last_error : "(none)");
        snprintf(c->payload[c->n], 32, "%.*s", (int)d->ev.payload_len, d->ev.payload);
    }
    c->n++;
}

static const char *const ONLY_A[] = {"a", NULL};
static const char *const A_AND_B[] = {"a", "b", NULL};

/* --- cases ------------------------------------------------------------------------------- */

static void case_put_then_persisted(fixture *f)
{
    px_store_row rows[2] = {{.pipeline = "p", .sink = "a"}, {.pipeline = "p", .sink = "b"}};
    px_store_event ev = event("e1", NULL);
    put_result r = {0, -1};
    PX_ASSERT_INT_EQ(px_store_put(f->s, &ev, rows, 2, on_put, &r), 0);
    PX_ASSERT_INT_EQ(r.calls, 0); /* never inside the call */
    PX_ASSERT(rows[0].id > 0);
    PX_ASSERT(rows[1].id > rows[0].id);
    PX_ASSERT_INT_EQ(px_store_pending(f->s, "a"), 1);
    wait_put(f, &r);
    PX_ASSERT_INT_EQ(r.calls, 1);
    PX_ASSERT_INT_EQ(r.status, PX_STORE_STORED);
    PX_ASSERT_INT_EQ(px_store_pending(f->s, "b"), 1);
    PX_ASSERT_INT_EQ(px_store_put(f->s, NULL, rows, 1, on_put, &r), PX_EINVAL);
    px_store_stats st;
    px_store_get_stats(f->s, &st);
    PX_ASSERT(st.commits >= 1);
    PX_ASSERT_INT_EQ(px_store_writable(f->s), 1);
}

static void case_claim_in_order_per_sink(fixture *f)
{
    int64_t ids[3][2];
    PX_ASSERT_INT_EQ(put_wait(f, "e1", NULL, A_AND_B, ids[0]), PX_STORE_STORED);
    PX_ASSERT_INT_EQ(put_wait(f, "e2", NULL, ONLY_A, ids[1]), PX_STORE_STORED);
    PX_ASSERT_INT_EQ(put_wait(f, "e3", NULL, A_AND_B, ids[2]), PX_STORE_STORED);
    claimed c = {0};
    PX_ASSERT_INT_EQ(px_store_claim(f->s, "a", 0, 16, on_claim, &c), 3);
    PX_ASSERT_INT_EQ(c.ids[0], ids[0][0]);
    PX_ASSERT_INT_EQ(c.ids[1], ids[1][0]);
    PX_ASSERT_INT_EQ(c.ids[2], ids[2][0]);
    PX_ASSERT_STR_EQ(c.payload[0], "{\"n\":1}");
    /* the cursor and the batch size */
    claimed after = {0};
    PX_ASSERT_INT_EQ(px_store_claim(f->s, "a", ids[0][0], 1, on_claim, &after), 1);
    PX_ASSERT_INT_EQ(after.ids[0], ids[1][0]);
    claimed b = {0};
    PX_ASSERT_INT_EQ(px_store_claim(f->s, "b", 0, 16, on_claim, &b), 2);
    PX_ASSERT_INT_EQ(b.ids[0], ids[0][1]);
    PX_ASSERT_INT_EQ(b.ids[1], ids[2][1]);
    claimed none = {0};
    PX_ASSERT_INT_EQ(px_store_claim(f->s, "nobody", 0, 16, on_claim, &none), 0);
}

static void case_done_and_retry(fixture *f)
{
    int64_t id[2];
    PX_ASSERT_INT_EQ(put_wait(f, "e1", NULL, ONLY_A, &id[0]), PX_STORE_STORED);
    PX_ASSERT_INT_EQ(put_wait(f, "e2", NULL, ONLY_A, &id[1]), PX_STORE_STORED);
    px_store_mark_retry(f->s, id[0], 2, 4102444800000, "timeout");
    px_store_mark_done(f->s, id[1], 1);
    claimed c = {0};
    PX_ASSERT_INT_EQ(px_store_claim(f->s, "a", 0, 16, on_claim, &c), 1);
    PX_ASSERT_INT_EQ(c.ids[0], id[0]);
    PX_ASSERT_INT_EQ(c.attempts[0], 2);
    PX_ASSERT_INT_EQ(c.next_at[0], 4102444800000);
    PX_ASSERT_STR_EQ(c.last_error[0], "timeout");
    PX_ASSERT_INT_EQ(px_store_pending(f->s, "a"), 1);
    px_store_mark_done(f->s, id[0], 3);
    px_store_mark_done(f->s, 999999, 1); /* unknown: ignored */
    claimed none = {0};
    PX_ASSERT_INT_EQ(px_store_claim(f->s, "a", 0, 16, on_claim, &none), 0);
    PX_ASSERT_INT_EQ(px_store_pending(f->s, "a"), 0);
}

typedef struct replayed {
    int64_t ids[8];
    size_t n;
} replayed;

static void on_replayed(int64_t id, const char *sink, void *arg)
{
    replayed *r = arg;
    if (r->n < 8 && strcmp(sink, "a") == 0) {
        r->ids[r->n] = id;
    }
    r->n++;
}

static void case_dead_letters(fixture *f)
{
    int64_t id[2];
    PX_ASSERT_INT_EQ(put_wait(f, "e1", NULL, ONLY_A, &id[0]), PX_STORE_STORED);
    PX_ASSERT_INT_EQ(put_wait(f, "e2", NULL, ONLY_A, &id[1]), PX_STORE_STORED);
    px_store_mark_retry(f->s, id[0], 1, 0, "HTTP 500");
    px_store_mark_dead(f->s, id[0], 2, "gave up");
    px_store_event raw = event("r1", NULL);
    raw.payload = "not json";
    raw.payload_len = 8;
    put_result r = {0, -1};
    PX_ASSERT_INT_EQ(px_store_dead_raw(f->s, &raw, "p", NULL, "poison", on_put, &r), 0);
    wait_put(f, &r);
    PX_ASSERT_INT_EQ(r.status, PX_STORE_STORED);

    int64_t n = -1;
    PX_ASSERT_INT_EQ(px_store_dlq_count(f->s, &n), 0);
    PX_ASSERT_INT_EQ(n, 2);
    json_t *list = NULL;
    PX_ASSERT_INT_EQ(px_store_dlq_list(f->s, "a", 0, 0, &list), 0);
    PX_ASSERT_INT_EQ(json_array_size(list), 1);
    json_t *d = json_array_get(list, 0);
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(d, "id")), id[0]);
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(d, "reason")), "gave up");
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(d, "attempts")), 2);
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(d, "event_id")), "e1");
    json_decref(list);
    PX_ASSERT_INT_EQ(px_store_dlq_list(f->s, NULL, 0, 1, &list), 0);
    PX_ASSERT_INT_EQ(json_array_size(list), 1); /* limit */
    json_decref(list);

    json_t *rec = NULL;
    PX_ASSERT_INT_EQ(px_store_dlq_show(f->s, id[0], &rec), 0);
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(json_object_get(rec, "payload"), "n")), 1);
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(json_object_get(rec, "params"), "a")), 2);
    PX_ASSERT(json_is_true(json_object_get(json_object_get(rec, "meta"), "m")));
    PX_ASSERT(json_is_null(json_object_get(rec, "hints")));
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(rec, "time")), 1700000000000);
    json_t *hist = json_object_get(rec, "history");
    PX_ASSERT_INT_EQ(json_array_size(hist), 2); /* the retry, then the final attempt */
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(json_array_get(hist, 0), "error")),
                     "HTTP 500");
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(json_array_get(hist, 1), "attempt")), 2);
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(json_array_get(hist, 1), "error")),
                     "gave up");
    json_decref(rec);
    PX_ASSERT_INT_EQ(px_store_dlq_show(f->s, 424242, &rec), PX_ENOENT);

    /* replay: a fresh id, above every id given so far; the raw one is not replayable */
    replayed rp = {0};
    PX_ASSERT_INT_EQ(px_store_dlq_replay(f->s, NULL, 0, NULL, on_replayed, &rp), 1);
    PX_ASSERT_INT_EQ(rp.n, 1);
    PX_ASSERT(rp.ids[0] > id[1]);
    claimed c = {0};
    PX_ASSERT_INT_EQ(px_store_claim(f->s, "a", 0, 16, on_claim, &c), 2);
    PX_ASSERT_INT_EQ(c.ids[1], rp.ids[0]);
    PX_ASSERT_INT_EQ(c.attempts[1], 0);
    PX_ASSERT_INT_EQ(px_store_dlq_show(f->s, id[0], &rec), PX_ENOENT);

    /* dead again under its new id, then purged; ids are never given twice */
    px_store_mark_dead(f->s, rp.ids[0], 1, "again");
    PX_ASSERT_INT_EQ(px_store_dlq_purge(f->s, NULL, 0, "a", 0), 1);
    PX_ASSERT_INT_EQ(px_store_dlq_count(f->s, &n), 0);
    PX_ASSERT_INT_EQ(n, 1);
    int64_t later;
    PX_ASSERT_INT_EQ(put_wait(f, "e3", NULL, ONLY_A, &later), PX_STORE_STORED);
    PX_ASSERT(later > rp.ids[0]);
    PX_ASSERT_INT_EQ(px_store_dlq_purge(f->s, NULL, 0, NULL, 1), 0); /* died after 1 ms */
    PX_ASSERT_INT_EQ(px_store_dlq_purge(f->s, NULL, 0, NULL, 0), 1);
    PX_ASSERT_INT_EQ(px_store_dlq_count(f->s, &n), 0);
    PX_ASSERT_INT_EQ(n, 0);
}

static void case_dedupe_drops_repeat(fixture *f)
{
    PX_ASSERT_INT_EQ(put_wait(f, "e1", "k1", ONLY_A, NULL), PX_STORE_STORED);
    PX_ASSERT_INT_EQ(put_wait(f, "e1", "k1", ONLY_A, NULL), PX_STORE_DUPLICATE);
    PX_ASSERT_INT_EQ(put_wait(f, "e2", "k2", NULL, NULL), PX_STORE_STORED); /* key only */
    PX_ASSERT_INT_EQ(put_wait(f, "e2", "k2", ONLY_A, NULL), PX_STORE_DUPLICATE);
    PX_ASSERT_INT_EQ(put_wait(f, "e3", NULL, ONLY_A, NULL), PX_STORE_STORED);
    PX_ASSERT_INT_EQ(px_store_pending(f->s, "a"), 2);
    px_store_stats st;
    px_store_get_stats(f->s, &st);
    PX_ASSERT_INT_EQ(st.duplicates, 2);
}

static void case_kv_per_instance(fixture *f)
{
    PX_ASSERT(px_store_kv_get(f->s, "amo", "token") == NULL);
    json_t *v = json_pack("{s:s,s:i}", "access", "abc", "expires", 3600);
    PX_ASSERT_INT_EQ(px_store_kv_set(f->s, "amo", "token", v), 0);
    json_decref(v);
    json_t *s7 = json_integer(7);
    PX_ASSERT_INT_EQ(px_store_kv_set(f->s, "other", "token", s7), 0);
    json_decref(s7);
    json_t *g = px_store_kv_get(f->s, "amo", "token");
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(g, "access")), "abc");
    json_decref(g);
    g = px_store_kv_get(f->s, "other", "token");
    PX_ASSERT_INT_EQ(json_integer_value(g), 7);
    json_decref(g);
    PX_ASSERT_INT_EQ(px_store_kv_set(f->s, "amo", "token", NULL), 0);
    PX_ASSERT(px_store_kv_get(f->s, "amo", "token") == NULL);
    PX_ASSERT_INT_EQ(px_store_kv_set(f->s, NULL, "token", NULL), PX_EINVAL);
}

typedef struct counts {
    int64_t a, b;
    int sinks;
} counts;

/* Compare-and-set: a version read is the only one a write may start from; a deleted and
 * re-created key never gets an old version back. */
static void case_kv_cas(fixture *f)
{
    int64_t v0 = -1, v1 = 0, v2 = 0, v3 = 0;
    PX_ASSERT(px_store_kv_get_versioned(f->s, "amo", "refresh", &v0) == NULL);
    PX_ASSERT_INT_EQ(v0, 0);
    json_t *a = json_string("token-a"), *b = json_string("token-b");
    PX_ASSERT_INT_EQ(px_store_kv_cas(f->s, "amo", "refresh", 0, a, &v1), 0);
    PX_ASSERT(v1 > 0);
    PX_ASSERT_INT_EQ(px_store_kv_cas(f->s, "amo", "refresh", 0, b, NULL), PX_ECONFLICT);
    int64_t seen = 0;
    json_t *g = px_store_kv_get_versioned(f->s, "amo", "refresh", &seen);
    PX_ASSERT_STR_EQ(json_string_value(g), "token-a");
    PX_ASSERT_INT_EQ(seen, v1);
    json_decref(g);
    PX_ASSERT_INT_EQ(px_store_kv_cas(f->s, "amo", "refresh", v1, b, &v2), 0);
    PX_ASSERT(v2 > v1);
    /* a second writer that read v1 loses */
    PX_ASSERT_INT_EQ(px_store_kv_cas(f->s, "amo", "refresh", v1, a, NULL), PX_ECONFLICT);
    g = px_store_kv_get(f->s, "amo", "refresh");
    PX_ASSERT_STR_EQ(json_string_value(g), "token-b");
    json_decref(g);
    /* a plain set moves the version too */
    PX_ASSERT_INT_EQ(px_store_kv_set(f->s, "amo", "refresh", a), 0);
    PX_ASSERT_INT_EQ(px_store_kv_cas(f->s, "amo", "refresh", v2, b, NULL), PX_ECONFLICT);
    g = px_store_kv_get_versioned(f->s, "amo", "refresh", &v3);
    PX_ASSERT(v3 > v2);
    json_decref(g);
    /* delete by version, then re-create: the new version is above every old one */
    PX_ASSERT_INT_EQ(px_store_kv_cas(f->s, "amo", "refresh", v3, NULL, NULL), 0);
    PX_ASSERT(px_store_kv_get(f->s, "amo", "refresh") == NULL);
    int64_t v4 = 0;
    PX_ASSERT_INT_EQ(px_store_kv_cas(f->s, "amo", "refresh", 0, a, &v4), 0);
    PX_ASSERT(v4 > v3);
    PX_ASSERT_INT_EQ(px_store_kv_cas(f->s, "amo", "refresh", 0, NULL, NULL), PX_EINVAL);
    json_decref(a);
    json_decref(b);
}

/* Named leases: one holder at a time, renewable by it, free again after unlock. */
static void case_locks(fixture *f)
{
    PX_ASSERT_INT_EQ(px_store_lock(f->s, "amo/refresh", "host-a/1", 60000), 1);
    PX_ASSERT_INT_EQ(px_store_lock(f->s, "amo/refresh", "host-b/1", 60000), 0);
    PX_ASSERT_INT_EQ(px_store_lock(f->s, "amo/refresh", "host-a/1", 60000), 1);
    PX_ASSERT_INT_EQ(px_store_lock(f->s, "other", "host-b/1", 60000), 1);
    PX_ASSERT_INT_EQ(px_store_unlock(f->s, "amo/refresh", "host-b/1"), 0);
    PX_ASSERT_INT_EQ(px_store_lock(f->s, "amo/refresh", "host-b/1", 60000), 0);
    PX_ASSERT_INT_EQ(px_store_unlock(f->s, "amo/refresh", "host-a/1"), 0);
    PX_ASSERT_INT_EQ(px_store_lock(f->s, "amo/refresh", "host-b/1", 60000), 1);
    PX_ASSERT_INT_EQ(px_store_lock(f->s, "amo/refresh", "host-b/1", 0), PX_EINVAL);
}

/* One host: the lease holds, nothing is orphaned, the member list is this host. */
static void case_one_host(fixture *f)
{
    PX_ASSERT_INT_EQ(px_store_leased(f->s), 1);
    PX_ASSERT_INT_EQ(px_store_adopt(f->s, "out", 10, on_claim, NULL), 0);
    px_store_announce(f->s, "cfg-2");
    json_t *m = NULL;
    PX_ASSERT_INT_EQ(px_store_members(f->s, &m), 0);
    PX_ASSERT_INT_EQ(json_array_size(m), 1);
    json_t *me = json_array_get(m, 0);
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(me, "host_id")), "host-a");
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(me, "config_hash")), "cfg-2");
    PX_ASSERT(json_is_true(json_object_get(me, "self")));
    json_decref(m);
}

static void on_count(const char *sink, int64_t n, void *arg)
{
    counts *c = arg;
    c->sinks++;
    if (strcmp(sink, "a") == 0) {
        c->a = n;
    } else if (strcmp(sink, "b") == 0) {
        c->b = n;
    }
}

static void case_counts(fixture *f)
{
    int64_t ids[2];
    PX_ASSERT_INT_EQ(put_wait(f, "e1", NULL, A_AND_B, ids), PX_STORE_STORED);
    PX_ASSERT_INT_EQ(put_wait(f, "e2", NULL, ONLY_A, NULL), PX_STORE_STORED);
    px_store_mark_done(f->s, ids[1], 1);
    counts c = {0};
    PX_ASSERT_INT_EQ(px_store_pending_counts(f->s, on_count, &c), 1);
    PX_ASSERT_INT_EQ(c.sinks, 1);
    PX_ASSERT_INT_EQ(c.a, 2);
    PX_ASSERT_INT_EQ(c.b, 0);
}

static void case_crash_charged(fixture *f)
{
    int64_t id;
    PX_ASSERT_INT_EQ(put_wait(f, "e1", NULL, ONLY_A, &id), PX_STORE_STORED);
    PX_ASSERT_INT_EQ(px_store_note_crash(f->s, id, "SIGSEGV", 2), 1);
    PX_ASSERT_INT_EQ(px_store_note_crash(f->s, id, "SIGSEGV", 2), 2);
    PX_ASSERT_INT_EQ(px_store_note_crash(f->s, id, "SIGSEGV", 2), PX_ENOENT);
    json_t *rec = NULL;
    PX_ASSERT_INT_EQ(px_store_dlq_show(f->s, id, &rec), 0);
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(rec, "reason")),
                     "crashed the host 2 times; last: SIGSEGV");
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(rec, "attempts")), 2);
    PX_ASSERT_INT_EQ(json_array_size(json_object_get(rec, "history")), 2);
    json_decref(rec);
}

static void case_reopen_keeps_everything(fixture *f)
{
    int64_t id[2];
    PX_ASSERT_INT_EQ(put_wait(f, "e1", "k1", A_AND_B, id), PX_STORE_STORED);
    px_store_mark_dead(f->s, id[1], 1, "no");
    json_t *v = json_string("cursor-9");
    PX_ASSERT_INT_EQ(px_store_kv_set(f->s, "src", "cursor", v), 0);
    json_decref(v);
    store_close(f);
    PX_ASSERT_INT_EQ(store_open(f), 0);
    claimed c = {0};
    PX_ASSERT_INT_EQ(px_store_claim(f->s, "a", 0, 16, on_claim, &c), 1);
    PX_ASSERT_INT_EQ(c.ids[0], id[0]);
    int64_t n = 0;
    PX_ASSERT_INT_EQ(px_store_dlq_count(f->s, &n), 0);
    PX_ASSERT_INT_EQ(n, 1);
    json_t *g = px_store_kv_get(f->s, "src", "cursor");
    PX_ASSERT_STR_EQ(json_string_value(g), "cursor-9");
    json_decref(g);
    PX_ASSERT_INT_EQ(put_wait(f, "e1", "k1", ONLY_A, NULL), PX_STORE_DUPLICATE);
    int64_t later;
    PX_ASSERT_INT_EQ(put_wait(f, "e2", NULL, ONLY_A, &later), PX_STORE_STORED);
    PX_ASSERT(later > id[1]); /* ids are not given again after a restart */
}

/* --- every case on every backend --------------------------------------------------------- */

#define ON_BOTH(name)                                                                         \
    static void test_##name##_sqlite(void)                                                    \
    {                                                                                         \
        run_on(SQLITE, case_##name);                                                          \
    }                                                                                         \
    static void test_##name##_memory(void)                                                    \
    {                                                                                         \
        run_on(MEMORY, case_##name);                                                          \
    }

ON_BOTH(put_then_persisted)
ON_BOTH(claim_in_order_per_sink)
ON_BOTH(done_and_retry)
ON_BOTH(dead_letters)
ON_BOTH(dedupe_drops_repeat)
ON_BOTH(kv_per_instance)
ON_BOTH(counts)
ON_BOTH(crash_charged)
ON_BOTH(kv_cas)
ON_BOTH(locks)
ON_BOTH(one_host)

static void test_reopen_keeps_everything_sqlite(void)
{
    run_on(SQLITE, case_reopen_keeps_everything);
}

#define BOTH(name) PX_TEST(test_##name##_sqlite), PX_TEST(test_##name##_memory)

PX_TEST_MAIN(BOTH(put_then_persisted), BOTH(claim_in_order_per_sink), BOTH(done_and_retry),
             BOTH(dead_letters), BOTH(dedupe_drops_repeat), BOTH(kv_per_instance), BOTH(counts),
             BOTH(crash_charged), BOTH(kv_cas), BOTH(locks), BOTH(one_host),
             PX_TEST(test_reopen_keeps_everything_sqlite))
