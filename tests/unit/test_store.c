/* The store test suite: the store interface's contract (store.h), written once and run on every
 * backend: puts persisted after their call, claims in id order per sink, done / retry / dead,
 * dead letters listed, shown, replayed and purged with ids never given twice, dedupe, per-instance
 * state, counts; and, for the backends that keep data, persistence across a reopen.
 *
 * PostgreSQL: the cases run on it too when PX_TEST_PG_URL names a database (a URI with a
 * password; tests/integration/test_store_pg.py starts a throw-away cluster and runs this suite
 * against it), each case in a schema of its own; without it they are reported as skipped. The
 * cases of several hosts (two stores on one database) and of a database that goes away need it
 * too; the latter stop and start the server with the shell commands in PX_TEST_PG_STOP,
 * PX_TEST_PG_START and PX_TEST_PG_RESTART. */
#define _XOPEN_SOURCE 700
#include "../../host/store/keyset.c"
#include "../../host/store/spool.c"
#include "../../host/store/state.c"
#include "../../host/store/store_memory.c"
#include "../../host/store/store_sqlite.c"
#include "../../host/store/store_local.c"
#include "../../host/store/pg_conn.c"
#include "../../host/store/store_pg.c"

#include <ftw.h>
#include <unistd.h>

#include "test.h"

enum backend { SQLITE, MEMORY, PG };

typedef struct fixture {
    enum backend backend;
    uv_loop_t loop;
    char dir[64];
    px_store *s;
    px_store_options opt;
    char schema[64]; /* PG: the case's schema */
    char url[1024];  /* PG: PX_TEST_PG_URL with the schema as search_path */
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
    int rc;
    switch (f->backend) {
    case SQLITE:
        rc = px_store_open_sqlite(&f->loop, f->dir, &f->opt, &f->s, err, sizeof(err));
        break;
    case PG: rc = px_store_open_pg(&f->loop, f->url, &f->opt, &f->s, err, sizeof(err)); break;
    default: return px_store_open_memory(&f->loop, &f->opt, &f->s);
    }
    if (rc != 0) {
        fprintf(stderr, "open: %s\n", err);
    }
    return rc;
}

/* Runs sql on PX_TEST_PG_URL (the database itself, not a case's schema). 0 or -1 (printed). */
static int pg_admin(const char *sql)
{
    PGconn *c = PQconnectdb(getenv("PX_TEST_PG_URL"));
    PQclear(PQexec(c, "SET client_min_messages = warning"));
    PGresult *r = PQexec(c, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok) {
        fprintf(stderr, "%s: %s", sql, PQerrorMessage(c));
    }
    PQclear(r);
    PQfinish(c);
    return ok ? 0 : -1;
}

/* A fresh schema for the case and the URL that selects it. 0 or -1. */
static int pg_schema_new(fixture *f)
{
    static int n;
    const char *base = getenv("PX_TEST_PG_URL");
    snprintf(f->schema, sizeof(f->schema), "t%d_%d", (int)getpid(), ++n);
    snprintf(f->url, sizeof(f->url), "%s%soptions=-c%%20search_path%%3D%s", base,
             strchr(base, '?') ? "&" : "?", f->schema);
    char sql[160];
    snprintf(sql, sizeof(sql), "DROP SCHEMA IF EXISTS %s CASCADE; CREATE SCHEMA %s", f->schema,
             f->schema);
    return pg_admin(sql);
}

static void pg_schema_drop(fixture *f)
{
    char sql[128];
    snprintf(sql, sizeof(sql), "DROP SCHEMA IF EXISTS %s CASCADE", f->schema);
    pg_admin(sql);
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
    if (b == PG) {
        if (!getenv("PX_TEST_PG_URL")) {
            PX_SKIP("PX_TEST_PG_URL is not set (tests/integration/test_store_pg.py sets it)");
        }
        PX_ASSERT_INT_EQ(pg_schema_new(&f), 0);
    }
    snprintf(f.dir, sizeof(f.dir), "/tmp/px_store_XXXXXX");
    PX_ASSERT(mkdtemp(f.dir) != NULL);
    uv_loop_init(&f.loop);
    PX_ASSERT_INT_EQ(store_open(&f), 0);
    fn(&f);
    store_close(&f);
    PX_ASSERT_INT_EQ(uv_loop_close(&f.loop), 0);
    nftw(f.dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    if (b == PG) {
        pg_schema_drop(&f);
    }
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
static int put_on(fixture *f, px_store *s, const char *id, const char *key,
                  const char *const *sinks, int64_t *ids);

static int put_wait(fixture *f, const char *id, const char *key, const char *const *sinks,
                    int64_t *ids)
{
    return put_on(f, f->s, id, key, sinks, ids);
}

static int put_rows(fixture *f, px_store *s, const char *id, const char *key,
                    const char *const *sinks, int64_t *ids, int ordered);

/* put_wait on store s (of f's loop). */
static int put_on(fixture *f, px_store *s, const char *id, const char *key,
                  const char *const *sinks, int64_t *ids)
{
    return put_rows(f, s, id, key, sinks, ids, 0);
}

/* put_on with every row's `ordered` set to ordered. */
static int put_rows(fixture *f, px_store *s, const char *id, const char *key,
                    const char *const *sinks, int64_t *ids, int ordered)
{
    px_store_row rows[4];
    size_t n = 0;
    for (; sinks && sinks[n]; n++) {
        rows[n] = (px_store_row){.pipeline = "p", .sink = sinks[n], .action = "go",
                                 .params = "{\"a\":2}", .params_len = 7, .ordered = ordered};
    }
    px_store_event ev = event(id, key);
    put_result r = {0, -1};
    int rc = px_store_put(s, &ev, rows, n, on_put, &r);
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
    char raw[16][32]; /* the payload's bytes, payload_len of them */
    size_t payload_len[16];
    char params[16][32];
    int64_t seq[16];
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
        c->payload_len[c->n] = d->ev.payload_len;
        memcpy(c->raw[c->n], d->ev.payload, d->ev.payload_len < 32 ? d->ev.payload_len : 32);
        snprintf(c->params[c->n], 32, "%s", d->params);
        c->seq[c->n] = d->seq;
    }
    c->n++;
}

typedef struct id_set {
    int64_t ids[1024];
    size_t n;
} id_set;

static void on_claim_id(const px_store_delivery *d, void *arg)
{
    id_set *c = arg;
    if (c->n < 1024) {
        c->ids[c->n++] = d->id;
    }
}

static int id_set_has(const id_set *c, int64_t id)
{
    for (size_t i = 0; i < c->n; i++) {
        if (c->ids[i] == id) {
            return 1;
        }
    }
    return 0;
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
    /* queries: filters, a page of them, and how many they match in all */
    int64_t total = -1;
    px_dlq_query q = {.reason = "GAVE"};
    PX_ASSERT_INT_EQ(px_store_dlq_query(f->s, &q, &list, &total), 0);
    PX_ASSERT_INT_EQ(json_array_size(list), 1);
    PX_ASSERT_INT_EQ(total, 1);
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(json_array_get(list, 0), "id")), id[0]);
    json_decref(list);
    q = (px_dlq_query){.pipeline = "p", .offset = 1, .limit = 1};
    PX_ASSERT_INT_EQ(px_store_dlq_query(f->s, &q, &list, &total), 0);
    PX_ASSERT_INT_EQ(json_array_size(list), 1);
    PX_ASSERT_INT_EQ(total, 2);
    json_decref(list);
    q = (px_dlq_query){.sink = "a", .offset = 1};
    PX_ASSERT_INT_EQ(px_store_dlq_query(f->s, &q, &list, &total), 0);
    PX_ASSERT_INT_EQ(json_array_size(list), 0);
    PX_ASSERT_INT_EQ(total, 1);
    json_decref(list);
    q = (px_dlq_query){.pipeline = "nope"};
    PX_ASSERT_INT_EQ(px_store_dlq_query(f->s, &q, &list, &total), 0);
    PX_ASSERT_INT_EQ(json_array_size(list) + (size_t)total, 0);
    json_decref(list);
    q = (px_dlq_query){.until_ms = 1};
    PX_ASSERT_INT_EQ(px_store_dlq_query(f->s, &q, &list, &total), 0);
    PX_ASSERT_INT_EQ(json_array_size(list) + (size_t)total, 0);
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

/* One host: the lease holds, nothing is orphaned, the member list is this host (on PostgreSQL:
 * the only host of its database). */
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

#define ON_PG(name)                                                                           \
    static void test_##name##_pg(void)                                                        \
    {                                                                                         \
        run_on(PG, case_##name);                                                              \
    }

ON_PG(put_then_persisted)
ON_PG(claim_in_order_per_sink)
ON_PG(done_and_retry)
ON_PG(dead_letters)
ON_PG(dedupe_drops_repeat)
ON_PG(kv_per_instance)
ON_PG(counts)
ON_PG(crash_charged)
ON_PG(kv_cas)
ON_PG(locks)
ON_PG(one_host)
ON_PG(reopen_keeps_everything)

static void test_reopen_keeps_everything_sqlite(void)
{
    run_on(SQLITE, case_reopen_keeps_everything);
}

/* --- PostgreSQL only: several hosts on one database, a database that goes away -------------- */

static double timeout_scale(void)
{
    const char *s = getenv("PX_TEST_TIMEOUT_SCALE");
    double v = s ? atof(s) : 1;
    return v > 0 ? v : 1;
}

/* Runs the loop until pred(arg) holds, for at most ms (times PX_TEST_TIMEOUT_SCALE). Returns 1
 * when it held. */
static int poll_until(fixture *f, int (*pred)(void *arg), void *arg, int ms)
{
    uint64_t deadline = pg_mono_ms() + (uint64_t)(ms * timeout_scale());
    for (;;) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        if (pred(arg)) {
            return 1;
        }
        if (pg_mono_ms() >= deadline) {
            return 0;
        }
        usleep(10000);
    }
}

/* Another host on the case's database (NULL when it cannot open: printed). */
static px_store *open_host(fixture *f, const char *host_id, uint32_t lease_ms)
{
    px_store_options o = f->opt;
    o.host_id = host_id;
    o.lease_ms = lease_ms;
    px_store *s = NULL;
    char err[256];
    if (px_store_open_pg(&f->loop, f->url, &o, &s, err, sizeof(err)) != 0) {
        fprintf(stderr, "open %s: %s\n", host_id, err);
        return NULL;
    }
    return s;
}

static void close_host(fixture *f, px_store *s)
{
    px_store_close(s);
    uv_run(&f->loop, UV_RUN_NOWAIT);
}

typedef struct lock_try {
    px_store *s;
    const char *name, *holder;
} lock_try;

static int lock_taken(void *arg)
{
    lock_try *t = arg;
    return px_store_lock(t->s, t->name, t->holder, 60000) == 1;
}

static json_t *member(json_t *members, const char *host_id)
{
    size_t i;
    json_t *m;
    json_array_foreach(members, i, m) {
        if (strcmp(json_string_value(json_object_get(m, "host_id")), host_id) == 0) {
            return m;
        }
    }
    return NULL;
}

/* --- Memory only: handles sharing one cluster state --------------------------------------- */

/* Two memory handles over one cluster state: the state, its versions and the named leases are
 * common, each lists both members (itself "self"), the spool stays each handle's own, and the
 * shared state outlives the first handle closed. */
static void case_memory_shared(fixture *f)
{
    px_store_options o = f->opt;
    o.host_id = "host-b";
    px_store *b = NULL;
    PX_ASSERT_INT_EQ(px_store_open_memory_shared(&f->loop, f->s, &o, &b), 0);
    json_t *one = json_integer(1);
    int64_t v = 0;
    PX_ASSERT_INT_EQ(px_store_kv_cas(f->s, "duty", "starts", 0, one, &v), 0);
    PX_ASSERT(v > 0);
    PX_ASSERT_INT_EQ(px_store_kv_cas(b, "duty", "starts", 0, one, NULL), PX_ECONFLICT);
    int64_t vb = 0;
    json_t *got = px_store_kv_get_versioned(b, "duty", "starts", &vb);
    PX_ASSERT(got && json_equal(got, one));
    PX_ASSERT_INT_EQ(vb, v);
    json_decref(got);
    json_decref(one);
    PX_ASSERT_INT_EQ(px_store_lock(f->s, "duty/x", "host-a/1", 60000), 1);
    PX_ASSERT_INT_EQ(px_store_lock(b, "duty/x", "host-b/1", 60000), 0);
    json_t *m = NULL;
    PX_ASSERT_INT_EQ(px_store_members(b, &m), 0);
    PX_ASSERT_INT_EQ(json_array_size(m), 2);
    json_t *a_seen = member(m, "host-a"), *b_seen = member(m, "host-b");
    PX_ASSERT(a_seen && b_seen);
    PX_ASSERT(json_is_false(json_object_get(a_seen, "self")));
    PX_ASSERT(json_is_true(json_object_get(b_seen, "self")));
    json_decref(m);
    PX_ASSERT_INT_EQ(put_wait(f, "e1", "k1", ONLY_A, NULL), PX_STORE_STORED);
    PX_ASSERT_INT_EQ(px_store_pending(b, "a"), 0);
    PX_ASSERT_INT_EQ(px_store_pending(f->s, "a"), 1);
    store_close(f); /* the first handle goes; the second still sees the shared state */
    json_t *left = px_store_kv_get(b, "duty", "starts");
    PX_ASSERT(json_integer_value(left) == 1);
    json_decref(left);
    PX_ASSERT_INT_EQ(px_store_lock(b, "duty/x", "host-b/1", 60000), 0);
    PX_ASSERT_INT_EQ(px_store_members(b, &m), 0);
    PX_ASSERT_INT_EQ(json_array_size(m), 1);
    json_decref(m);
    f->s = b; /* closed by run_on */
}

static void test_memory_shared(void)
{
    run_on(MEMORY, case_memory_shared);
}

/* Two hosts on one database: a dedupe key is unique across them, each claims its own
 * deliveries, nothing is orphaned while both heartbeat, compare-and-set and named leases hold
 * between them, and each lists both. */
static void case_pg_two_hosts(fixture *f)
{
    px_store *b = open_host(f, "host-b", 15000);
    PX_ASSERT(b != NULL);
    int64_t ida = 0, idb = 0;
    PX_ASSERT_INT_EQ(put_wait(f, "e1", "k1", ONLY_A, &ida), PX_STORE_STORED);
    PX_ASSERT_INT_EQ(put_on(f, b, "e1", "k1", ONLY_A, NULL), PX_STORE_DUPLICATE);
    PX_ASSERT_INT_EQ(put_on(f, b, "e2", "k2", ONLY_A, &idb), PX_STORE_STORED);
    PX_ASSERT(idb != ida);
    claimed ca = {0}, cb = {0}, none = {0};
    PX_ASSERT_INT_EQ(px_store_claim(f->s, "a", 0, 16, on_claim, &ca), 1);
    PX_ASSERT_INT_EQ(ca.ids[0], ida);
    PX_ASSERT_INT_EQ(px_store_claim(b, "a", 0, 16, on_claim, &cb), 1);
    PX_ASSERT_INT_EQ(cb.ids[0], idb);
    PX_ASSERT_INT_EQ(px_store_adopt(b, "a", 16, on_claim, &none), 0);
    PX_ASSERT_INT_EQ(px_store_pending(b, "a"), 1);

    /* compare-and-set: the host that read an old version loses */
    json_t *x = json_string("token-x"), *y = json_string("token-y");
    int64_t v1 = 0, vb = 0, v2 = 0;
    PX_ASSERT_INT_EQ(px_store_kv_cas(f->s, "amo", "refresh", 0, x, &v1), 0);
    json_t *g = px_store_kv_get_versioned(b, "amo", "refresh", &vb);
    PX_ASSERT_STR_EQ(json_string_value(g), "token-x");
    json_decref(g);
    PX_ASSERT_INT_EQ(vb, v1);
    PX_ASSERT_INT_EQ(px_store_kv_cas(b, "amo", "refresh", vb, y, &v2), 0);
    PX_ASSERT_INT_EQ(px_store_kv_cas(f->s, "amo", "refresh", v1, x, NULL), PX_ECONFLICT);
    PX_ASSERT_INT_EQ(px_store_kv_cas(b, "amo", "refresh", 0, x, NULL), PX_ECONFLICT);
    g = px_store_kv_get(f->s, "amo", "refresh");
    PX_ASSERT_STR_EQ(json_string_value(g), "token-y");
    json_decref(g);
    json_decref(x);
    json_decref(y);

    /* named leases: held by one host, refused to the other until released or run out */
    PX_ASSERT_INT_EQ(px_store_lock(f->s, "amo/refresh", "host-a/1", 60000), 1);
    PX_ASSERT_INT_EQ(px_store_lock(b, "amo/refresh", "host-b/1", 60000), 0);
    PX_ASSERT_INT_EQ(px_store_unlock(b, "amo/refresh", "host-b/1"), 0);
    PX_ASSERT_INT_EQ(px_store_lock(b, "amo/refresh", "host-b/1", 60000), 0);
    PX_ASSERT_INT_EQ(px_store_unlock(f->s, "amo/refresh", "host-a/1"), 0);
    PX_ASSERT_INT_EQ(px_store_lock(b, "amo/refresh", "host-b/1", 60000), 1);
    PX_ASSERT_INT_EQ(px_store_lock(f->s, "short", "host-a/1", 200), 1);
    lock_try t = {b, "short", "host-b/1"};
    PX_ASSERT(poll_until(f, lock_taken, &t, 10000));

    /* both hosts listed, both alive */
    px_store_announce(b, "cfg-b");
    json_t *m = NULL;
    PX_ASSERT_INT_EQ(px_store_members(b, &m), 0); /* after b's announcement */
    PX_ASSERT_INT_EQ(json_array_size(m), 2);
    json_t *ma = member(m, "host-a"), *mb = member(m, "host-b");
    PX_ASSERT(ma && mb);
    PX_ASSERT(json_is_false(json_object_get(ma, "self")));
    PX_ASSERT(json_is_true(json_object_get(mb, "self")));
    PX_ASSERT(json_is_true(json_object_get(ma, "alive")));
    PX_ASSERT(json_is_true(json_object_get(mb, "alive")));
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(mb, "config_hash")), "cfg-b");
    PX_ASSERT(json_integer_value(json_object_get(mb, "heartbeat_at")) > 0);
    json_decref(m);
    close_host(f, b);
}

typedef struct adoption {
    fixture *f;
    px_store *s;
    claimed c;
    int calls;
} adoption;

static int adopted_all(void *arg)
{
    adoption *a = arg;
    int n = px_store_adopt(a->s, "a", 2, on_claim, &a->c);
    a->calls += n > 0;
    return a->c.n >= 3;
}

typedef struct member_state {
    px_store *s;
    const char *host_id;
    int alive;
} member_state;

static int member_is(void *arg)
{
    member_state *ms = arg;
    json_t *m = NULL;
    if (px_store_members(ms->s, &m) != 0) {
        return 0;
    }
    json_t *me = member(m, ms->host_id);
    int ok = me && json_is_true(json_object_get(me, "alive")) == ms->alive;
    json_decref(m);
    return ok;
}

/* A host stops heartbeating (closed: as if it died): once its lease ran out another host adopts
 * its deliveries, in id order, at most `max` at a time; restarted with its id, the host gets
 * back by claim what was not adopted. */
static void case_pg_adopt_orphans(fixture *f)
{
    px_store *c = open_host(f, "host-c", 600);
    px_store *d = open_host(f, "host-d", 600);
    PX_ASSERT(c && d);
    int64_t ids[3], idb;
    PX_ASSERT_INT_EQ(put_on(f, c, "e1", NULL, ONLY_A, &ids[0]), PX_STORE_STORED);
    PX_ASSERT_INT_EQ(put_on(f, c, "e2", NULL, ONLY_A, &ids[1]), PX_STORE_STORED);
    PX_ASSERT_INT_EQ(put_on(f, c, "e3", NULL, ONLY_A, &ids[2]), PX_STORE_STORED);
    const char *const only_b[] = {"b", NULL};
    PX_ASSERT_INT_EQ(put_on(f, c, "e4", NULL, only_b, &idb), PX_STORE_STORED);
    PX_ASSERT_INT_EQ(px_store_leased(c), 1);
    claimed none = {0};
    PX_ASSERT_INT_EQ(px_store_adopt(d, "a", 16, on_claim, &none), 0); /* c heartbeats */
    close_host(f, c);

    member_state gone = {d, "host-c", 0};
    PX_ASSERT(poll_until(f, member_is, &gone, 10000));
    adoption a = {.f = f, .s = d};
    PX_ASSERT(poll_until(f, adopted_all, &a, 10000));
    PX_ASSERT_INT_EQ(a.c.n, 3);
    PX_ASSERT_INT_EQ(a.calls, 2); /* two, then one */
    PX_ASSERT_INT_EQ(a.c.ids[0], ids[0]);
    PX_ASSERT_INT_EQ(a.c.ids[1], ids[1]);
    PX_ASSERT_INT_EQ(a.c.ids[2], ids[2]);
    PX_ASSERT_STR_EQ(a.c.payload[2], "{\"n\":1}");
    PX_ASSERT_INT_EQ(px_store_pending(d, "a"), 3);
    claimed mine = {0};
    PX_ASSERT_INT_EQ(px_store_claim(d, "a", 0, 16, on_claim, &mine), 3);
    px_store_mark_done(d, ids[1], 1);

    c = open_host(f, "host-c", 600);
    PX_ASSERT(c != NULL);
    member_state back = {d, "host-c", 1};
    PX_ASSERT(member_is(&back));
    claimed cb = {0}, ca = {0};
    PX_ASSERT_INT_EQ(px_store_claim(c, "b", 0, 16, on_claim, &cb), 1);
    PX_ASSERT_INT_EQ(cb.ids[0], idb);
    PX_ASSERT_INT_EQ(px_store_claim(c, "a", 0, 16, on_claim, &ca), 0);
    PX_ASSERT_INT_EQ(px_store_pending(c, "b"), 1);
    close_host(f, c);
    claimed left = {0};
    PX_ASSERT_INT_EQ(px_store_claim(d, "a", 0, 16, on_claim, &left), 2);
    close_host(f, d);
}

/* The payload is kept byte for byte, NUL and bytes that are not UTF-8 included. */
static void case_pg_payload_bytes(fixture *f)
{
    static const char bytes[] = "\0\xff{\"a\":\"\\\"\"}\n\x01";
    px_store_event ev = event("e1", NULL);
    ev.payload = bytes;
    ev.payload_len = sizeof(bytes) - 1;
    px_store_row row = {.pipeline = "p", .sink = "a", .params = "{\"q\":\"\\\\\"}",
                        .params_len = 10};
    put_result r = {0, -1};
    PX_ASSERT_INT_EQ(px_store_put(f->s, &ev, &row, 1, on_put, &r), 0);
    wait_put(f, &r);
    PX_ASSERT_INT_EQ(r.status, PX_STORE_STORED);
    claimed c = {0};
    PX_ASSERT_INT_EQ(px_store_claim(f->s, "a", 0, 16, on_claim, &c), 1);
    PX_ASSERT_INT_EQ(c.payload_len[0], sizeof(bytes) - 1);
    PX_ASSERT(memcmp(c.raw[0], bytes, sizeof(bytes) - 1) == 0);
    PX_ASSERT_STR_EQ(c.params[0], "{\"q\":\"\\\\\"}");
}

/* A put whose data the database refuses (an event id that is not UTF-8) fails alone: the puts
 * committed with it are stored. */
static void case_pg_bad_put_fails_alone(fixture *f)
{
    px_store_event ev[3] = {event("e1", "k1"), event("e\xff\xfe", "k2"), event("e3", "k3")};
    px_store_row rows[3];
    put_result r[3] = {{0, -1}, {0, -1}, {0, -1}};
    for (int i = 0; i < 3; i++) {
        rows[i] = (px_store_row){.pipeline = "p", .sink = "a"};
        PX_ASSERT_INT_EQ(px_store_put(f->s, &ev[i], &rows[i], 1, on_put, &r[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        wait_put(f, &r[i]);
    }
    PX_ASSERT_INT_EQ(r[0].status, PX_STORE_STORED);
    PX_ASSERT_INT_EQ(r[1].status, PX_ESPOOL);
    PX_ASSERT_INT_EQ(r[2].status, PX_STORE_STORED);
    claimed c = {0};
    PX_ASSERT_INT_EQ(px_store_claim(f->s, "a", 0, 16, on_claim, &c), 2);
    PX_ASSERT_INT_EQ(c.ids[0], rows[0].id);
    PX_ASSERT_INT_EQ(c.ids[1], rows[2].id);
    PX_ASSERT_INT_EQ(px_store_writable(f->s), 1);
    PX_ASSERT_INT_EQ(put_wait(f, "e4", "k2", ONLY_A, NULL), PX_STORE_STORED); /* k2 not kept */
}

/* A database whose schema is newer than this build is refused with one line; the URL's
 * password appears in no message. */
static void case_pg_refusals(fixture *f)
{
    char sql[128], err[512];
    snprintf(sql, sizeof(sql), "UPDATE %s.schema_version SET version = 99", f->schema);
    PX_ASSERT_INT_EQ(pg_admin(sql), 0);
    px_store *s = NULL;
    PX_ASSERT_INT_EQ(px_store_open_pg(&f->loop, f->url, &f->opt, &s, err, sizeof(err)),
                     PX_ESPOOL);
    PX_ASSERT_STR_HAS(err, "schema version 99 is newer than this build's 2");
    PX_ASSERT(strchr(err, '\n') == NULL);

    /* the password is the one between "user:" and "@" in the URI */
    const char *base = getenv("PX_TEST_PG_URL");
    const char *at = strchr(base, '@'), *colon = strchr(strstr(base, "://") + 3, ':');
    PX_ASSERT(at && colon && colon < at);
    char password[128], url[1024];
    snprintf(password, sizeof(password), "%.*s", (int)(at - colon - 1), colon + 1);
    snprintf(url, sizeof(url), "%.*s:not-the-password-42%s", (int)(colon - base), base, at);
    PX_ASSERT_INT_EQ(px_store_open_pg(&f->loop, url, &f->opt, &s, err, sizeof(err)), PX_ESPOOL);
    PX_ASSERT_STR_HAS(err, "password authentication failed");
    PX_ASSERT(strstr(err, "not-the-password-42") == NULL);
    PX_ASSERT_STR_HAS(err, "***");
    snprintf(url, sizeof(url), "%s_no_such_db", base);
    PX_ASSERT_INT_EQ(px_store_open_pg(&f->loop, url, &f->opt, &s, err, sizeof(err)), PX_ESPOOL);
    PX_ASSERT_STR_HAS(err, "no_such_db");
    PX_ASSERT(strstr(err, password) == NULL);
}

static int run_cmd(const char *env)
{
    const char *cmd = getenv(env);
    return cmd && system(cmd) == 0 ? 0 : -1;
}

static int store_down(void *arg)
{
    fixture *f = arg;
    return !px_store_writable(f->s) && !px_store_leased(f->s);
}

static int store_up(void *arg)
{
    fixture *f = arg;
    return px_store_writable(f->s) && px_store_leased(f->s);
}

typedef struct stored_set {
    int64_t ids[256];
    put_result r[256];
    size_t n;
} stored_set;

/* The database restarts while puts are committed, then stops for a while and starts again:
 * every put completes STORED or PX_EBUSY and none that said STORED is lost; while it is down
 * puts are refused at once, the synchronous calls answer PX_EBUSY at once and the lease runs out;
 * a mark made meanwhile is kept and committed once the store is writable again, by itself. */
static void case_pg_database_restarts(fixture *f)
{
    if (!getenv("PX_TEST_PG_STOP") || !getenv("PX_TEST_PG_START") ||
        !getenv("PX_TEST_PG_RESTART")) {
        PX_SKIP("PX_TEST_PG_STOP, PX_TEST_PG_START and PX_TEST_PG_RESTART are not set");
    }
    store_close(f);
    f->opt.lease_ms = 1000;
    PX_ASSERT_INT_EQ(store_open(f), 0);
    static stored_set set;
    memset(&set, 0, sizeof(set));
    int64_t first = 0;
    PX_ASSERT_INT_EQ(put_wait(f, "first", NULL, ONLY_A, &first), PX_STORE_STORED);
    for (; set.n < 200; set.n++) {
        px_store_event ev = event("r", NULL);
        px_store_row row = {.pipeline = "p", .sink = "a"};
        set.r[set.n].status = -1;
        int rc = px_store_put(f->s, &ev, &row, 1, on_put, &set.r[set.n]);
        if (rc != 0) { /* the writer found the database gone already */
            PX_ASSERT_INT_EQ(rc, PX_EBUSY);
            set.r[set.n] = (put_result){1, PX_EBUSY};
        }
        set.ids[set.n] = row.id;
        if (set.n == 100) {
            uv_run(&f->loop, UV_RUN_NOWAIT); /* the writer takes the first hundred */
            PX_ASSERT_INT_EQ(run_cmd("PX_TEST_PG_RESTART"), 0);
        }
    }
    size_t refused = 0;
    for (size_t i = 0; i < set.n; i++) {
        wait_put(f, &set.r[i]);
        PX_ASSERT(set.r[i].status == PX_STORE_STORED || set.r[i].status == PX_EBUSY);
        refused += set.r[i].status == PX_EBUSY;
    }
    fprintf(stderr, "restart mid-put: %zu of %zu puts refused with PX_EBUSY\n", refused, set.n);
    PX_ASSERT(poll_until(f, store_up, f, 30000));

    /* stopped: refused at once, the lease runs out; the mark waits */
    PX_ASSERT_INT_EQ(run_cmd("PX_TEST_PG_STOP"), 0);
    PX_ASSERT(poll_until(f, store_down, f, 30000));
    px_store_mark_done(f->s, first, 1);
    px_store_event ev = event("refused", NULL);
    px_store_row row = {.pipeline = "p", .sink = "a"};
    put_result r = {0, -1};
    PX_ASSERT_INT_EQ(px_store_put(f->s, &ev, &row, 1, on_put, &r), PX_EBUSY);
    claimed none = {0};
    PX_ASSERT_INT_EQ(px_store_claim(f->s, "a", 0, 16, on_claim, &none), PX_EBUSY);
    int64_t n = 0;
    PX_ASSERT_INT_EQ(px_store_dlq_count(f->s, &n), PX_EBUSY);
    json_t *v = json_true();
    PX_ASSERT_INT_EQ(px_store_kv_set(f->s, "i", "k", v), PX_EBUSY);
    PX_ASSERT_INT_EQ(px_store_lock(f->s, "l", "h", 1000), PX_EBUSY);
    json_decref(v);
    PX_ASSERT_INT_EQ(run_cmd("PX_TEST_PG_START"), 0);
    PX_ASSERT(poll_until(f, store_up, f, 30000));

    /* back: every STORED put is there, the mark went through */
    PX_ASSERT_INT_EQ(put_wait(f, "after", NULL, ONLY_A, NULL), PX_STORE_STORED);
    static id_set all;
    memset(&all, 0, sizeof(all));
    int got = px_store_claim(f->s, "a", 0, 1000, on_claim_id, &all);
    PX_ASSERT(got > 0);
    size_t stored = 0;
    for (size_t i = 0; i < set.n; i++) {
        if (set.r[i].status == PX_STORE_STORED) {
            stored++;
            PX_ASSERT(id_set_has(&all, set.ids[i]));
        }
    }
    PX_ASSERT(!id_set_has(&all, first));
    PX_ASSERT_INT_EQ((size_t)got, stored + 1);
    PX_ASSERT_INT_EQ(px_store_pending(f->s, "a"), (int64_t)stored + 1);
    px_store_stats st;
    px_store_get_stats(f->s, &st);
    PX_ASSERT(st.write_errors + st.busy_refusals > 0);
}

/* Sets host_id's heartbeat an hour back in the case's schema, as if it had been cut off from
 * the database for that long while still running. 0 or -1. */
static int pg_age_host(fixture *f, const char *host_id)
{
    char sql[256];
    snprintf(sql, sizeof(sql),
             "UPDATE %s.hosts SET heartbeat_at = now() - interval '1 hour' WHERE host_id = '%s'",
             f->schema, host_id);
    return pg_admin(sql);
}

/* A host whose lease lapsed while it was cut off does not finish what another host adopted
 * meanwhile: its done, retry and dead marks are refused (counted, logged) and change nothing. */
static void case_pg_marks_check_owner(fixture *f)
{
    px_store *e = open_host(f, "host-e", 60000);
    px_store *g = open_host(f, "host-g", 60000);
    PX_ASSERT(e && g);
    int64_t ids[3];
    PX_ASSERT_INT_EQ(put_on(f, e, "e1", NULL, ONLY_A, &ids[0]), PX_STORE_STORED);
    PX_ASSERT_INT_EQ(put_on(f, e, "e2", NULL, ONLY_A, &ids[1]), PX_STORE_STORED);
    PX_ASSERT_INT_EQ(put_on(f, e, "e3", NULL, ONLY_A, &ids[2]), PX_STORE_STORED);
    claimed mine = {0}, adopted = {0};
    PX_ASSERT_INT_EQ(px_store_claim(e, "a", 0, 16, on_claim, &mine), 3);
    PX_ASSERT_INT_EQ(pg_age_host(f, "host-e"), 0);
    PX_ASSERT_INT_EQ(px_store_adopt(g, "a", 16, on_claim, &adopted), 3);
    PX_ASSERT_INT_EQ(px_store_pending(g, "a"), 3);

    px_store_mark_done(e, ids[0], 1);
    px_store_mark_retry(e, ids[1], 1, 0, "late");
    px_store_mark_dead(e, ids[2], 1, "late");
    claimed none = {0};
    PX_ASSERT_INT_EQ(px_store_claim(e, "a", 0, 16, on_claim, &none), 0); /* after the marks */
    px_store_stats st;
    px_store_get_stats(e, &st);
    PX_ASSERT_INT_EQ(st.marks_refused, 3);
    int64_t dead = -1;
    PX_ASSERT_INT_EQ(px_store_dlq_count(g, &dead), 0);
    PX_ASSERT_INT_EQ(dead, 0);
    claimed still = {0};
    PX_ASSERT_INT_EQ(px_store_claim(g, "a", 0, 16, on_claim, &still), 3);
    PX_ASSERT_INT_EQ(still.attempts[1], 0);

    /* the host that holds them finishes them */
    px_store_mark_done(g, ids[0], 1);
    px_store_mark_retry(g, ids[1], 1, 0, "once");
    px_store_mark_dead(g, ids[2], 1, "gone");
    claimed left = {0};
    PX_ASSERT_INT_EQ(px_store_claim(g, "a", 0, 16, on_claim, &left), 1);
    PX_ASSERT_INT_EQ(left.attempts[0], 1);
    PX_ASSERT_INT_EQ(px_store_pending(g, "a"), 1);
    px_store_get_stats(g, &st);
    PX_ASSERT_INT_EQ(st.marks_refused, 0);
    close_host(f, e);
    close_host(f, g);
}

/* A clean close gives this host's claims and leads away at once: another host adopts them and
 * takes the lead without waiting for the (long) lease, with its pending counts right; the host
 * back under its id holds nothing of what was adopted. */
static void case_pg_clean_stop_releases(fixture *f)
{
    px_store *h = open_host(f, "host-h", 60000);
    px_store *i = open_host(f, "host-i", 60000);
    PX_ASSERT(h && i);
    int64_t ids[2];
    PX_ASSERT_INT_EQ(put_on(f, h, "e1", NULL, ONLY_A, &ids[0]), PX_STORE_STORED);
    PX_ASSERT_INT_EQ(put_on(f, h, "e2", NULL, ONLY_A, &ids[1]), PX_STORE_STORED);
    PX_ASSERT_INT_EQ(px_store_lead(h, "o"), 1);
    PX_ASSERT_INT_EQ(px_store_lead(i, "o"), 0);
    claimed none = {0};
    PX_ASSERT_INT_EQ(px_store_adopt(i, "a", 16, on_claim, &none), 0);
    close_host(f, h);

    claimed got = {0};
    PX_ASSERT_INT_EQ(px_store_adopt(i, "a", 16, on_claim, &got), 2);
    PX_ASSERT_INT_EQ(got.ids[0], ids[0]);
    PX_ASSERT_INT_EQ(px_store_pending(i, "a"), 2);
    PX_ASSERT_INT_EQ(px_store_lead(i, "o"), 1);
    member_state gone = {i, "host-h", 0};
    PX_ASSERT(member_is(&gone));
    px_store_mark_done(i, ids[0], 1);
    claimed held = {0};
    PX_ASSERT_INT_EQ(px_store_claim(i, "a", 0, 16, on_claim, &held), 1); /* after the mark */
    PX_ASSERT_INT_EQ(px_store_pending(i, "a"), 1);
    counts c = {0};
    PX_ASSERT_INT_EQ(px_store_pending_counts(i, on_count, &c), 1);
    PX_ASSERT_INT_EQ(c.a, 1);

    h = open_host(f, "host-h", 60000);
    PX_ASSERT(h != NULL);
    member_state back = {i, "host-h", 1};
    PX_ASSERT(member_is(&back));
    PX_ASSERT_INT_EQ(px_store_pending(h, "a"), 0);
    PX_ASSERT_INT_EQ(px_store_lead(h, "o"), 0);
    close_host(f, h);
    close_host(f, i);
}

/* An ordered sink: rows put by any host are held by none until the leader claims them, in the
 * order of their commits (not their ids: each host takes ids from its own blocks); hosts that do
 * not lead neither claim nor adopt them; once the leader stops, the next leader claims what is
 * left, in the same order. */
static void case_pg_ordered(fixture *f)
{
    px_store *j = open_host(f, "host-j", 60000);
    px_store *k = open_host(f, "host-k", 60000);
    PX_ASSERT(j && k);
    const char *const only_o[] = {"o", NULL};
    int64_t id1, id2, id3;
    PX_ASSERT_INT_EQ(put_rows(f, j, "e1", NULL, only_o, &id1, 1), PX_STORE_STORED);
    PX_ASSERT_INT_EQ(put_rows(f, k, "e2", NULL, only_o, &id2, 1), PX_STORE_STORED);
    PX_ASSERT_INT_EQ(put_rows(f, j, "e3", NULL, only_o, &id3, 1), PX_STORE_STORED);
    PX_ASSERT(id3 < id2); /* j's block is below k's: id order is not arrival order */
    claimed none = {0};
    PX_ASSERT_INT_EQ(px_store_claim(k, "o", 0, 16, on_claim, &none), 0);
    PX_ASSERT_INT_EQ(px_store_claim(j, "o", 0, 16, on_claim, &none), 0);
    PX_ASSERT_INT_EQ(px_store_adopt(k, "o", 16, on_claim, &none), 0);
    PX_ASSERT_INT_EQ(px_store_pending(k, "o"), 0);

    PX_ASSERT_INT_EQ(px_store_lead(j, "o"), 1);
    PX_ASSERT_INT_EQ(px_store_lead(k, "o"), 0);
    claimed c = {0};
    PX_ASSERT_INT_EQ(px_store_claim_ordered(j, "o", 0, 16, on_claim, &c), 3);
    PX_ASSERT_INT_EQ(c.ids[0], id1);
    PX_ASSERT_INT_EQ(c.ids[1], id2);
    PX_ASSERT_INT_EQ(c.ids[2], id3);
    PX_ASSERT(c.seq[0] > 0 && c.seq[0] < c.seq[1] && c.seq[1] < c.seq[2]);
    PX_ASSERT_INT_EQ(px_store_pending(j, "o"), 3);
    claimed after = {0};
    PX_ASSERT_INT_EQ(px_store_claim_ordered(j, "o", c.seq[0], 16, on_claim, &after), 2);
    PX_ASSERT_INT_EQ(px_store_pending(j, "o"), 3); /* claimed again: still counted once */
    px_store_mark_done(j, id1, 1);
    PX_ASSERT_INT_EQ(px_store_adopt(k, "o", 16, on_claim, &none), 0);
    claimed held = {0};
    PX_ASSERT_INT_EQ(px_store_claim(j, "o", 0, 16, on_claim, &held), 2); /* after the mark */
    PX_ASSERT_INT_EQ(px_store_pending(j, "o"), 2);
    close_host(f, j);

    PX_ASSERT_INT_EQ(px_store_lead(k, "o"), 1);
    claimed rest = {0};
    PX_ASSERT_INT_EQ(px_store_claim_ordered(k, "o", 0, 16, on_claim, &rest), 2);
    PX_ASSERT_INT_EQ(rest.ids[0], id2);
    PX_ASSERT_INT_EQ(rest.ids[1], id3);
    PX_ASSERT_INT_EQ(px_store_pending(k, "o"), 2);
    close_host(f, k);
}

ON_PG(pg_two_hosts)
ON_PG(pg_adopt_orphans)
ON_PG(pg_payload_bytes)
ON_PG(pg_bad_put_fails_alone)
ON_PG(pg_refusals)
ON_PG(pg_database_restarts)
ON_PG(pg_marks_check_owner)
ON_PG(pg_clean_stop_releases)
ON_PG(pg_ordered)

#define PG_CASES                                                                              \
    PX_TEST(test_pg_two_hosts_pg), PX_TEST(test_pg_adopt_orphans_pg),                         \
        PX_TEST(test_pg_payload_bytes_pg), PX_TEST(test_pg_bad_put_fails_alone_pg),           \
        PX_TEST(test_pg_refusals_pg), PX_TEST(test_pg_database_restarts_pg),                  \
        PX_TEST(test_pg_marks_check_owner_pg), PX_TEST(test_pg_clean_stop_releases_pg),       \
        PX_TEST(test_pg_ordered_pg)

#define ALL(name)                                                                             \
    PX_TEST(test_##name##_sqlite), PX_TEST(test_##name##_memory), PX_TEST(test_##name##_pg)

PX_TEST_MAIN(ALL(put_then_persisted), ALL(claim_in_order_per_sink), ALL(done_and_retry),
             ALL(dead_letters), ALL(dedupe_drops_repeat), ALL(kv_per_instance), ALL(counts),
             ALL(crash_charged), ALL(kv_cas), ALL(locks), ALL(one_host),
             PX_TEST(test_reopen_keeps_everything_sqlite), PX_TEST(test_reopen_keeps_everything_pg),
             PX_TEST(test_memory_shared), PG_CASES)
