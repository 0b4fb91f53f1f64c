/* The PostgreSQL store: the store interface (store.h) on one database shared by every host opened
 * with the same URL.
 *
 * Threads and connections. The loop thread queues puts, raw dead letters, marks and announcements
 * under `mu`; the writer thread owns the write connection and commits everything queued since its
 * previous commit in one transaction (group commit: one statement per table for the puts, the
 * marks pipelined, one round trip when no put has a dedupe key, two otherwise), then hands the
 * finished operations back to the loop through `async`, where their callbacks run in queue order.
 * Between batches the writer renews this host's heartbeat (every lease / 5), tops up the delivery
 * ids and prunes expired dedupe keys. The synchronous calls (claim, adopt, kv, dlq, locks, crash
 * charges, members) run on the loop thread over a second connection with a statement timeout,
 * after waiting for the writer to commit what was queued before them (read-your-writes).
 *
 * Ids. One sequence hands out blocks of PG_ID_BLOCK ids (its increment); the writer keeps at
 * least PG_ID_LOW ids in hand, so a put writes its rows' ids at once and never waits; a put that
 * finds none left is refused with PX_EBUSY. Blocks are taken in increasing order, so the ids of
 * one host increase; the rows of one put come from one block (contiguous ids). An event's key in
 * the database is the id of its first delivery (a raw dead letter's: its own id), known before
 * the commit, so a batch inserts its events and deliveries without reading anything back.
 *
 * Faults. A statement that fails because the database is away (connection lost, shut down, out
 * of disk, read-only) makes the store unwritable: puts are refused at once and the queued ones
 * complete with PX_EBUSY, marks are kept in order and committed once the writer, which reconnects
 * by itself with a backoff, finds the database again; the synchronous calls return PX_EBUSY at
 * once meanwhile. A deadlock or serialization failure runs the batch again; a statement refused
 * for its data (e.g. text that is not UTF-8) runs every operation of the batch alone, so only the
 * bad one fails (PX_ESPOOL). */
#include "store.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "err.h"
#include "log.h"
#include "mem.h"
#include "pg_conn.h"

#define PG_LOG "store"
#define PG_BATCH_MAX 1024
#define PG_DEFAULT_MAX_QUEUE 65536
#define PG_MAX_QUEUE_BYTES (64u << 20)
#define PG_ID_BLOCK 4096 /* the increment of the sequence delivery_ids (schema version 1) */
#define PG_ID_LOW (2 * PG_ID_BLOCK)
#define PG_ID_RANGES 16
#define PG_SYNC_TIMEOUT_MS 5000
#define PG_WRITE_TIMEOUT_MS 30000
#define PG_BACKOFF_MIN_MS 100
#define PG_BACKOFF_MAX_MS 2000
#define PG_PRUNE_INTERVAL_MS 60000
#define PG_DEFAULT_LEASE_MS 15000
#define PG_AGAIN_MAX 5
#define PG_NOW_MS "(extract(epoch from now()) * 1000)::bigint"

/* ---- schema ------------------------------------------------------------------------------- */

#define PG_STR_(x) #x
#define PG_STR(x) PG_STR_(x)

/* Each entry upgrades schema version i to i + 1, in one transaction. Append only; never edit a
 * shipped step. An event is kept while deliveries or dead letters refer to it (refs). */
static const char *const pg_migrations[] = {
    "CREATE SEQUENCE delivery_ids AS bigint MINVALUE 1 START 1 INCREMENT BY " PG_STR(PG_ID_BLOCK)
    ";"
    "CREATE SEQUENCE kv_versions AS bigint MINVALUE 1 START 1;"
    "CREATE TABLE events(eid bigint PRIMARY KEY, id text NOT NULL, type text NOT NULL, "
    "  source text NOT NULL, time_ms bigint NOT NULL, payload bytea NOT NULL, meta text, "
    "  hints text, refs bigint NOT NULL);"
    "CREATE INDEX events_unreferenced ON events(eid) WHERE refs <= 0;"
    "CREATE TABLE deliveries(id bigint PRIMARY KEY, event bigint NOT NULL, owner text NOT NULL, "
    "  pipeline text NOT NULL, sink text NOT NULL, action text NOT NULL, params text NOT NULL, "
    "  attempts bigint NOT NULL DEFAULT 0, next_at_ms bigint NOT NULL DEFAULT 0, "
    "  last_error text, crashes bigint NOT NULL DEFAULT 0);"
    "CREATE INDEX deliveries_owner ON deliveries(owner, sink, id);"
    "CREATE INDEX deliveries_sink ON deliveries(sink, id);"
    "CREATE TABLE attempts(delivery_id bigint NOT NULL, attempt bigint NOT NULL, "
    "  at_ms bigint NOT NULL, error text, PRIMARY KEY(delivery_id, attempt));"
    "CREATE TABLE dead_letters(id bigint PRIMARY KEY, delivery_id bigint NOT NULL, "
    "  event bigint NOT NULL, pipeline text NOT NULL, sink text NOT NULL, action text NOT NULL, "
    "  params text NOT NULL, reason text, attempts bigint NOT NULL, died_at bigint NOT NULL);"
    "CREATE INDEX dead_letters_sink ON dead_letters(sink, id);"
    "CREATE INDEX dead_letters_died ON dead_letters(died_at, id);"
    "CREATE TABLE dedupe(source text NOT NULL, key text NOT NULL, expires_at_ms bigint NOT NULL, "
    "  PRIMARY KEY(source, key));"
    "CREATE INDEX dedupe_expires ON dedupe(expires_at_ms);"
    "CREATE TABLE kv(instance text NOT NULL, key text NOT NULL, value text NOT NULL, "
    "  version bigint NOT NULL, PRIMARY KEY(instance, key));"
    "CREATE TABLE locks(name text PRIMARY KEY, holder text NOT NULL, "
    "  expires_at timestamptz NOT NULL);"
    "CREATE TABLE hosts(host_id text PRIMARY KEY, version text NOT NULL, "
    "  config_hash text NOT NULL, lease_ms bigint NOT NULL, started_at timestamptz NOT NULL, "
    "  heartbeat_at timestamptz NOT NULL);",
    /* 2: ordered sinks (a place in the commit order shared by every host) and clean stops */
    "CREATE SEQUENCE delivery_order AS bigint MINVALUE 1 START 1;"
    "ALTER TABLE deliveries ADD COLUMN seq bigint;"
    "CREATE INDEX deliveries_ordered ON deliveries(sink, seq) WHERE seq IS NOT NULL;"
    "ALTER TABLE hosts ADD COLUMN stopped_at timestamptz;",
};
#define PG_SCHEMA_VERSION ((int)(sizeof(pg_migrations) / sizeof(pg_migrations[0])))

/* Every host migrates under this advisory lock, so two hosts opening at once do not race. */
#define PG_MIGRATE_LOCK "7233349425870585857"
/* A transaction that puts ordered rows takes this lock (held to its commit) before it numbers
 * them: so the places it gives come after those of every commit before it, and before those of
 * every commit after it. */
#define PG_ORDER_LOCK "7233349425870585858"

/* ---- statements ------------------------------------------------------------------------------ */

#define PG_SQL_DEDUPE                                                                          \
    "INSERT INTO dedupe(source, key, expires_at_ms) SELECT u.source, u.key, " PG_NOW_MS        \
    " + $3::bigint FROM unnest($1::text[], $2::text[]) AS u(source, key) "                     \
    "ON CONFLICT (source, key) DO UPDATE SET expires_at_ms = EXCLUDED.expires_at_ms "          \
    "WHERE dedupe.expires_at_ms <= " PG_NOW_MS " RETURNING source, key"

#define PG_SQL_EVENTS                                                                          \
    "INSERT INTO events(eid, id, type, source, time_ms, payload, meta, hints, refs) "          \
    "SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[], "    \
    "$6::bytea[], $7::text[], $8::text[], $9::bigint[])"

/* Ordered rows are held by no host (owner '') and get their place in the commit order. */
#define PG_SQL_DELIVERIES_(lock)                                                               \
    "INSERT INTO deliveries(id, event, owner, pipeline, sink, action, params, seq) "           \
    "SELECT u.id, u.event, CASE WHEN u.ordered THEN '' ELSE $1::text END, u.pipeline, u.sink, " \
    "u.action, u.params, CASE WHEN u.ordered THEN nextval('delivery_order') END FROM unnest("  \
    "$2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bool[]) " \
    "AS u(id, event, pipeline, sink, action, params, ordered)" lock
#define PG_SQL_DELIVERIES PG_SQL_DELIVERIES_("")
/* the order lock is taken before the first row is numbered (the join needs its one row) */
#define PG_SQL_DELIVERIES_ORDERED                                                              \
    PG_SQL_DELIVERIES_(", (SELECT pg_advisory_xact_lock(" PG_ORDER_LOCK ")) AS l")

#define PG_SQL_DEAD_RAW                                                                        \
    "INSERT INTO dead_letters(id, delivery_id, event, pipeline, sink, action, params, reason, " \
    "attempts, died_at) SELECT u.id, 0, u.id, u.pipeline, u.sink, '', '{}', u.reason, 0, "     \
    "u.died_at FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[]) "   \
    "AS u(id, pipeline, sink, reason, died_at)"

/* Marks apply only to a delivery this host holds (owner: the last parameter).
 * $1 id, $2 owner. Returns the sink of the delivery deleted. */
#define PG_SQL_DONE                                                                            \
    "WITH d AS (DELETE FROM deliveries WHERE id = $1 AND owner = $2 RETURNING event, sink), "  \
    "a AS (DELETE FROM attempts WHERE delivery_id = $1 AND EXISTS (SELECT 1 FROM d)), "        \
    "u AS (UPDATE events SET refs = refs - 1 WHERE eid IN (SELECT event FROM d)) "             \
    "SELECT sink FROM d"

/* $1 id, $2 attempts, $3 next_at_ms, $4 error, $5 at_ms, $6 owner. Returns a row when applied. */
#define PG_SQL_RETRY                                                                           \
    "WITH u AS (UPDATE deliveries SET attempts = $2, next_at_ms = $3, last_error = $4 "        \
    "WHERE id = $1 AND owner = $6 RETURNING id) "                                              \
    "INSERT INTO attempts(delivery_id, attempt, at_ms, error) "                                \
    "SELECT id, $2::bigint, $5::bigint, $4::text FROM u "                                      \
    "ON CONFLICT (delivery_id, attempt) DO UPDATE "                                            \
    "SET at_ms = EXCLUDED.at_ms, error = EXCLUDED.error RETURNING delivery_id"

/* $1 id, $2 reason, $3 attempts, $4 died_at (the final attempt's time too), $5 owner. Returns
 * the sink. */
#define PG_SQL_DEAD                                                                            \
    "WITH d AS (DELETE FROM deliveries WHERE id = $1 AND owner = $5 "                          \
    "RETURNING id, event, pipeline, sink, action, params), "                                   \
    "x AS (INSERT INTO dead_letters(id, delivery_id, event, pipeline, sink, action, params, "  \
    "reason, attempts, died_at) SELECT id, id, event, pipeline, sink, action, params, "        \
    "$2::text, $3::bigint, $4::bigint FROM d), "                                               \
    "a AS (INSERT INTO attempts(delivery_id, attempt, at_ms, error) SELECT id, $3::bigint, "   \
    "$4::bigint, $2::text FROM d WHERE $3::bigint > 0 ON CONFLICT DO NOTHING) "                \
    "SELECT sink FROM d"

#define PG_SQL_ANNOUNCE "UPDATE hosts SET config_hash = $2 WHERE host_id = $1"

#define PG_SQL_UNREFERENCED "DELETE FROM events WHERE refs <= 0"

/* $1 host, $2 version, $3 config hash, $4 lease_ms; a restart starts anew */
#define PG_SQL_REGISTER                                                                        \
    "INSERT INTO hosts(host_id, version, config_hash, lease_ms, started_at, heartbeat_at) "    \
    "VALUES($1, $2, $3, $4, now(), now()) ON CONFLICT (host_id) DO UPDATE SET "                \
    "version = EXCLUDED.version, config_hash = EXCLUDED.config_hash, "                         \
    "lease_ms = EXCLUDED.lease_ms, started_at = now(), heartbeat_at = now(), stopped_at = NULL"

#define PG_SQL_HEARTBEAT                                                                       \
    "INSERT INTO hosts(host_id, version, config_hash, lease_ms, started_at, heartbeat_at) "    \
    "VALUES($1, $2, $3, $4, now(), now()) ON CONFLICT (host_id) DO UPDATE SET "                \
    "heartbeat_at = now(), lease_ms = EXCLUDED.lease_ms, stopped_at = NULL"

/* A clean stop: this host's claims may be adopted at once, its leads taken. $1 host. */
#define PG_SQL_STOPPED "UPDATE hosts SET stopped_at = now() WHERE host_id = $1"
#define PG_SQL_UNLEAD "DELETE FROM locks WHERE holder = $1 AND left(name, 9) = 'px_order:'"

#define PG_SQL_BLOCKS "SELECT nextval('delivery_ids') FROM generate_series(1, $1::int)"

#define PG_SQL_PRUNE                                                                           \
    "DELETE FROM dedupe WHERE ctid IN (SELECT ctid FROM dedupe WHERE expires_at_ms <= "        \
    PG_NOW_MS " LIMIT 10000)"

/* The columns of a delivery read back (claim, adopt), binary format; d: the deliveries' rows,
 * e: their events. */
#define PG_DELIVERY_COLS                                                                       \
    "d.id, d.pipeline, d.sink, d.action, d.params, d.attempts, d.next_at_ms, d.last_error, "   \
    "e.id, e.type, e.source, e.time_ms, e.payload, e.meta, e.hints"

/* ---- state ---------------------------------------------------------------------------------- */

enum pg_kind { PG_PUT = 1, PG_DEAD_RAW, PG_DONE, PG_RETRY, PG_DEAD, PG_ANNOUNCE };

typedef struct pg_row {
    const char *pipeline, *sink, *action, *params;
    size_t params_len;
    int64_t id;
    int ordered; /* held by no host until the leader of its sink claims it */
    int elided;  /* done before the writer took its put: never written (mu held to set) */
} pg_row;

/* One queued operation; puts and raw dead letters copy everything into the op's allocation. */
typedef struct pg_op {
    struct pg_op *next;
    int kind;
    int status;    /* put / dead_raw: the outcome */
    int committed; /* writer: part of a committed transaction */
    int failed;    /* writer: failed alone (PX_ESPOOL) */
    int fresh;     /* writer: its dedupe key was recorded by this transaction */
    int refused;   /* writer: a mark that found its delivery no longer held by this host */
    size_t bytes;  /* the allocation (puts), for the queue's byte cap */
    px_store_put_cb cb;
    void *arg;
    const char *ev_id, *type, *source, *dedupe_key, *payload, *meta, *hints;
    size_t payload_len;
    int64_t time_ms;
    pg_row *rows;
    size_t nrows, nelided;
    const char *pipeline, *sink, *text; /* text: dead reason, retry error, config hash */
    int64_t id;                         /* marks: the delivery; dead_raw: the dead letter */
    uint32_t attempts;
    int64_t next_at_ms;
    int64_t at_ms; /* when the mark or the raw dead letter was made */
} pg_op;

typedef struct pg_count {
    char *sink;
    int64_t n;
} pg_count;

typedef struct pg_counts {
    pg_count *v;
    size_t n, cap;
} pg_counts;

typedef struct pg_range {
    int64_t next, end; /* ids [next, end) */
} pg_range;

typedef struct pg_store {
    px_store base;
    uv_loop_t *loop;
    uv_async_t async;
    uv_prepare_t kick;
    int open_handles;
    int kick_wanted; /* loop thread only */
    int closing;     /* loop thread only */
    uv_thread_t thread;
    char *url;    /* owned */
    char *where;  /* the URL without its password, for messages */
    px_pg_secrets secrets;
    char *host_id, *version;
    uint32_t lease_ms;
    uint64_t dedupe_window_ms;
    size_t max_queue;
    PGconn *wconn;    /* the writer thread's (after open) */
    PGconn *sconn;    /* the loop thread's */
    uint64_t s_epoch; /* the epoch sconn was opened in */
    px_pg_buf wbuf[9]; /* writer thread: array parameters */

    pthread_mutex_t mu;
    pthread_cond_t cv_work; /* the writer waits for work (CLOCK_MONOTONIC) */
    pthread_cond_t cv_done; /* the loop waits for the writer */
    /* everything below is guarded by mu */
    pg_op *q_head, *q_tail;
    size_t q_len, q_puts, q_bytes;
    pg_op *retry_head, *retry_tail; /* marks and announcements that failed to commit */
    pg_op *done_head, *done_tail;   /* finished, callbacks to run on the loop */
    uint64_t queued_seq, processed_seq;
    int writable;
    int stop;
    int writer_waiting;
    uint64_t epoch;        /* times the writer found the database again */
    int64_t last_renew_ms; /* monotonic: when the latest successful heartbeat was sent */
    char *config_hash;     /* the latest announced */
    pg_range ids[PG_ID_RANGES];
    size_t nranges;
    int64_t ids_avail, ids_high; /* ids in hand; end of the latest block taken */
    pg_counts pending;     /* this host's committed pending deliveries per sink */
    pg_counts queued_rows; /* deliveries of puts queued and not yet processed, per sink */
    pg_op **pq;            /* queued puts with rows, in id order: a ring (see pg_mark_done) */
    size_t pq_head, pq_len, pq_cap;
    px_store_stats st;
} pg_store;

static uint64_t pg_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- per-sink counts ------------------------------------------------------------------------ */

static void pg_counts_add(pg_counts *c, const char *sink, int64_t d)
{
    for (size_t i = 0; i < c->n; i++) {
        if (strcmp(c->v[i].sink, sink) == 0) {
            c->v[i].n += d;
            return;
        }
    }
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 8;
        c->v = px_xrealloc(c->v, c->cap * sizeof(*c->v));
    }
    c->v[c->n].sink = px_xstrdup(sink);
    c->v[c->n].n = d;
    c->n++;
}

static int64_t pg_counts_get(const pg_counts *c, const char *sink)
{
    for (size_t i = 0; i < c->n; i++) {
        if (strcmp(c->v[i].sink, sink) == 0) {
            return c->v[i].n;
        }
    }
    return 0;
}

static void pg_counts_clear(pg_counts *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->v[i].sink);
    }
    c->n = 0;
}

static void pg_counts_free(pg_counts *c)
{
    pg_counts_clear(c);
    free(c->v);
    memset(c, 0, sizeof(*c));
}

/* ---- ids ------------------------------------------------------------------------------------ */

/* Adds the block starting at `start`, unless it is not above every block taken so far (two
 * threads fetched blocks at once): ids only increase. mu held. */
static void pg_ids_add(pg_store *p, int64_t start)
{
    if (start < p->ids_high || p->nranges == PG_ID_RANGES) {
        return;
    }
    p->ids[p->nranges++] = (pg_range){start, start + PG_ID_BLOCK};
    p->ids_high = start + PG_ID_BLOCK;
    p->ids_avail += PG_ID_BLOCK;
}

/* Takes n contiguous ids (n <= PG_ID_BLOCK) into *first: from the oldest block that has n left,
 * the older ones' remainders dropped. Returns 0, or -1 when none has. mu held. */
static int pg_ids_take(pg_store *p, size_t n, int64_t *first)
{
    while (p->nranges > 0) {
        pg_range *r = &p->ids[0];
        if (r->end - r->next >= (int64_t)n) {
            *first = r->next;
            r->next += (int64_t)n;
            p->ids_avail -= (int64_t)n;
            return 0;
        }
        p->ids_avail -= r->end - r->next;
        memmove(p->ids, p->ids + 1, (p->nranges - 1) * sizeof(p->ids[0]));
        p->nranges--;
    }
    return -1;
}

/* Fetches k blocks on conn into the pool. Returns 0 or the failed result's fault. */
static int pg_fetch_blocks(pg_store *p, PGconn *conn, int k)
{
    char kb[16];
    snprintf(kb, sizeof(kb), "%d", k);
    const char *params[1] = {kb};
    PGresult *r = PQexecParams(conn, PG_SQL_BLOCKS, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        int f = px_pg_fault(conn, r);
        PQclear(r);
        return f;
    }
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < PQntuples(r); i++) {
        pg_ids_add(p, strtoll(PQgetvalue(r, i, 0), NULL, 10));
    }
    pthread_mutex_unlock(&p->mu);
    PQclear(r);
    return 0;
}

/* ---- the writer ------------------------------------------------------------------------------ */

static void pg_list_push(pg_op **head, pg_op **tail, pg_op *o)
{
    o->next = NULL;
    if (*tail) {
        (*tail)->next = o;
    } else {
        *head = o;
    }
    *tail = o;
}

static int pg_is_put(const pg_op *o)
{
    return o->kind == PG_PUT || o->kind == PG_DEAD_RAW;
}

/* Hands a finished op to the loop (marks carry no callback and are freed there too). mu held. */
static void pg_finish(pg_store *p, pg_op *o)
{
    pg_list_push(&p->done_head, &p->done_tail, o);
}

/* The writer lost the database: unwritable until it finds it again. mu held. */
static void pg_down_locked(pg_store *p, const char *why)
{
    if (p->writable) {
        PX_LOG_WARN(PG_LOG, "postgres store unwritable url=%s err=%s", p->where, why);
    }
    p->writable = 0;
    pthread_cond_broadcast(&p->cv_done);
}

/* A message for the failure on conn (res may be NULL), scrubbed. */
static void pg_errmsg(pg_store *p, PGconn *conn, const PGresult *res, char *out, size_t outlen)
{
    const char *m = res ? PQresultErrorMessage(res) : "";
    if (!m || !*m) {
        m = conn ? PQerrorMessage(conn) : "no connection";
    }
    px_pg_scrub(&p->secrets, m, out, outlen);
}

/* Opens the writer's connection with its prepared statements. NULL on failure (msg says why). */
static PGconn *pg_w_connect(pg_store *p, char *msg, size_t msglen)
{
    PGconn *c = px_pg_connect(p->url, PG_WRITE_TIMEOUT_MS, &p->secrets, msg, msglen);
    if (!c) {
        return NULL;
    }
    static const struct {
        const char *name, *sql;
    } stmts[] = {{"px_done", PG_SQL_DONE},
                 {"px_retry", PG_SQL_RETRY},
                 {"px_dead", PG_SQL_DEAD},
                 {"px_announce", PG_SQL_ANNOUNCE}};
    for (size_t i = 0; i < sizeof(stmts) / sizeof(stmts[0]); i++) {
        PGresult *r = PQprepare(c, stmts[i].name, stmts[i].sql, 0, NULL);
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok) {
            pg_errmsg(p, c, r, msg, msglen);
        }
        PQclear(r);
        if (!ok) {
            PQfinish(c);
            return NULL;
        }
    }
    return c;
}

typedef struct pg_keyed {
    pg_op *o;
    size_t seq; /* position in the batch: the first of equal keys wins */
} pg_keyed;

static int pg_keyed_cmp(const void *a, const void *b)
{
    const pg_keyed *x = a, *y = b;
    int c = strcmp(x->o->source, y->o->source);
    if (c == 0) {
        c = strcmp(x->o->dedupe_key, y->o->dedupe_key);
    }
    if (c == 0) {
        c = x->seq < y->seq ? -1 : x->seq > y->seq;
    }
    return c;
}

/* The result of the next statement of the pipeline (NULL when the connection broke); the NULL
 * that ends it is read too. */
static PGresult *pg_pipe_result(PGconn *c)
{
    PGresult *r = PQgetResult(c);
    if (r && PQresultStatus(r) != PGRES_PIPELINE_SYNC) {
        PGresult *extra;
        while ((extra = PQgetResult(c)) != NULL) {
            PQclear(extra);
        }
    }
    return r;
}

/* Reads one statement's result: 0 when its status is `want`, else the fault (the first one is
 * kept in *fault). Rows of done / dead marks (their sinks) go to delta as -1. Returns the number
 * of rows it returned (0 on a fault). */
static int pg_pipe_read(PGconn *c, ExecStatusType want, pg_counts *delta, int *fault,
                        char *msg, size_t msglen, pg_store *p)
{
    int rows = 0;
    PGresult *r = pg_pipe_result(c);
    if (!r || PQresultStatus(r) != want) {
        if (!*fault) {
            *fault = r ? px_pg_fault(c, r) : PX_PG_DOWN;
            if (PQresultStatus(r) == PGRES_PIPELINE_ABORTED) {
                *fault = PX_PG_DOWN; /* aborted without an error of its own: should not be */
            }
            pg_errmsg(p, c, r, msg, msglen);
        }
        PQclear(r);
        return 0;
    }
    if (want == PGRES_TUPLES_OK) {
        rows = PQntuples(r);
    }
    if (delta && want == PGRES_TUPLES_OK) {
        for (int i = 0; i < PQntuples(r); i++) {
            pg_counts_add(delta, PQgetvalue(r, i, 0), -1);
        }
    }
    PQclear(r);
    return rows;
}

/* Reads up to and including the pipeline's sync. 0, or -1 when the connection broke (or the
 * sync never comes: then the connection is dropped as well). */
static int pg_pipe_sync(PGconn *c)
{
    for (int nulls = 0;;) {
        PGresult *r = PQgetResult(c);
        if (!r) {
            if (PQstatus(c) != CONNECTION_OK || ++nulls > 2) {
                return -1;
            }
            continue;
        }
        nulls = 0;
        int sync = PQresultStatus(r) == PGRES_PIPELINE_SYNC;
        PQclear(r);
        if (sync) {
            return 0;
        }
    }
}

/* Records the batch's dedupe keys: the first of each (source, key) in the batch is offered to
 * the database, the later ones are duplicates of it; the database answers which keys were not
 * recorded yet (or had expired). Sends BEGIN first. Returns 0 or the fault. */
static int pg_w_dedupe(pg_store *p, PGconn *c, pg_op *list, char *msg, size_t msglen)
{
    size_t nk = 0;
    for (pg_op *o = list; o; o = o->next) {
        nk += o->kind == PG_PUT && o->dedupe_key && p->dedupe_window_ms > 0;
    }
    if (!PQsendQueryParams(c, "BEGIN", 0, NULL, NULL, NULL, NULL, 0)) {
        return PX_PG_DOWN;
    }
    if (nk == 0) {
        return 0; /* BEGIN's result is read with the rest */
    }
    pg_keyed *k = px_xmalloc(nk * sizeof(*k));
    size_t i = 0, seq = 0;
    for (pg_op *o = list; o; o = o->next, seq++) {
        if (o->kind == PG_PUT && o->dedupe_key && p->dedupe_window_ms > 0) {
            k[i++] = (pg_keyed){o, seq};
        }
    }
    qsort(k, nk, sizeof(*k), pg_keyed_cmp);
    px_pg_buf *src = &p->wbuf[0], *key = &p->wbuf[1];
    px_pg_arr_open(src);
    px_pg_arr_open(key);
    size_t nu = 0;
    for (i = 0; i < nk; i++) {
        pg_op *o = k[i].o;
        if (i > 0 && strcmp(o->source, k[nu - 1].o->source) == 0 &&
            strcmp(o->dedupe_key, k[nu - 1].o->dedupe_key) == 0) {
            o->status = PX_STORE_DUPLICATE;
            continue;
        }
        k[nu++] = k[i]; /* sorted (source, key), unique */
        px_pg_arr_str(src, o->source);
        px_pg_arr_str(key, o->dedupe_key);
    }
    px_pg_arr_close(src);
    px_pg_arr_close(key);
    char window[24];
    snprintf(window, sizeof(window), "%llu", (unsigned long long)p->dedupe_window_ms);
    const char *params[3] = {src->p, key->p, window};
    int fault = 0;
    if (!PQsendQueryParams(c, PG_SQL_DEDUPE, 3, NULL, params, NULL, NULL, 0) ||
        !PQpipelineSync(c)) {
        free(k);
        return PX_PG_DOWN;
    }
    pg_pipe_read(c, PGRES_COMMAND_OK, NULL, &fault, msg, msglen, p);
    PGresult *r = pg_pipe_result(c);
    if (!fault && r && PQresultStatus(r) == PGRES_TUPLES_OK) {
        for (int row = 0; row < PQntuples(r); row++) {
            const char *s = PQgetvalue(r, row, 0), *kk = PQgetvalue(r, row, 1);
            size_t lo = 0, hi = nu;
            while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                int c2 = strcmp(k[mid].o->source, s);
                if (c2 == 0) {
                    c2 = strcmp(k[mid].o->dedupe_key, kk);
                }
                if (c2 == 0) {
                    k[mid].o->fresh = 1;
                    break;
                }
                if (c2 < 0) {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
        }
    } else if (!fault) {
        fault = r ? px_pg_fault(c, r) : PX_PG_DOWN;
        pg_errmsg(p, c, r, msg, msglen);
    }
    PQclear(r);
    for (i = 0; i < nu; i++) {
        if (!k[i].o->fresh) {
            k[i].o->status = PX_STORE_DUPLICATE;
        }
    }
    free(k);
    if (pg_pipe_sync(c) < 0 && !fault) {
        fault = PX_PG_DOWN;
    }
    return fault;
}

/* Whether put o writes its event: stored and not every delivery elided; dead_raw always. */
static int pg_writes_event(const pg_op *o)
{
    return o->kind == PG_DEAD_RAW ||
           (o->kind == PG_PUT && o->status == PX_STORE_STORED && o->nrows > o->nelided);
}

/* Sends the batch's inserts: events, deliveries, raw dead letters, one statement each. Returns
 * the number of statements sent, or -1 when the connection broke. */
static int pg_w_send_inserts(pg_store *p, PGconn *c, pg_op *list)
{
    px_pg_buf *b = p->wbuf;
    int sent = 0;
    size_t nev = 0, ndl = 0, nraw = 0;
    for (int i = 0; i < 9; i++) {
        px_pg_arr_open(&b[i]);
    }
    px_pg_barr_open(&b[5]); /* the payloads: binary */
    for (pg_op *o = list; o; o = o->next) {
        if (!pg_writes_event(o)) {
            continue;
        }
        nev++;
        px_pg_arr_i64(&b[0], o->kind == PG_DEAD_RAW ? o->id : o->rows[0].id);
        px_pg_arr_str(&b[1], o->ev_id ? o->ev_id : "");
        px_pg_arr_str(&b[2], o->type ? o->type : "");
        px_pg_arr_str(&b[3], o->source ? o->source : "");
        px_pg_arr_i64(&b[4], o->time_ms);
        px_pg_barr_bytea(&b[5], o->payload, o->payload_len);
        px_pg_arr_str(&b[6], o->meta);
        px_pg_arr_str(&b[7], o->hints);
        px_pg_arr_i64(&b[8], o->kind == PG_DEAD_RAW ? 1 : (int64_t)(o->nrows - o->nelided));
    }
    if (nev > 0) {
        const char *params[9];
        int lengths[9] = {0}, formats[9] = {0};
        for (int i = 0; i < 9; i++) {
            if (i == 5) {
                px_pg_barr_close(&b[i]);
                lengths[i] = (int)b[i].len;
                formats[i] = 1;
            } else {
                px_pg_arr_close(&b[i]);
            }
            params[i] = b[i].p;
        }
        if (!PQsendQueryParams(c, PG_SQL_EVENTS, 9, NULL, params, lengths, formats, 0)) {
            return -1;
        }
        sent++;
    }
    for (int i = 0; i < 7; i++) {
        px_pg_arr_open(&b[i]);
    }
    int ordered = 0;
    for (pg_op *o = list; o; o = o->next) {
        if (o->kind != PG_PUT || !pg_writes_event(o)) {
            continue;
        }
        for (size_t r = 0; r < o->nrows; r++) {
            pg_row *row = &o->rows[r];
            if (row->elided) {
                continue;
            }
            ndl++;
            px_pg_arr_i64(&b[0], row->id);
            px_pg_arr_i64(&b[1], o->rows[0].id);
            px_pg_arr_str(&b[2], row->pipeline);
            px_pg_arr_str(&b[3], row->sink);
            px_pg_arr_str(&b[4], row->action);
            px_pg_arr_text(&b[5], row->params, row->params_len);
            px_pg_arr_str(&b[6], row->ordered ? "t" : "f");
            ordered |= row->ordered;
        }
    }
    if (ndl > 0) {
        const char *params[8] = {p->host_id};
        for (int i = 0; i < 7; i++) {
            px_pg_arr_close(&b[i]);
            params[i + 1] = b[i].p;
        }
        if (!PQsendQueryParams(c, ordered ? PG_SQL_DELIVERIES_ORDERED : PG_SQL_DELIVERIES, 8,
                               NULL, params, NULL, NULL, 0)) {
            return -1;
        }
        sent++;
    }
    for (int i = 0; i < 5; i++) {
        px_pg_arr_open(&b[i]);
    }
    for (pg_op *o = list; o; o = o->next) {
        if (o->kind != PG_DEAD_RAW) {
            continue;
        }
        nraw++;
        px_pg_arr_i64(&b[0], o->id);
        px_pg_arr_str(&b[1], o->pipeline);
        px_pg_arr_str(&b[2], o->sink);
        px_pg_arr_str(&b[3], o->text);
        px_pg_arr_i64(&b[4], o->at_ms);
    }
    if (nraw > 0) {
        const char *params[5];
        for (int i = 0; i < 5; i++) {
            px_pg_arr_close(&b[i]);
            params[i] = b[i].p;
        }
        if (!PQsendQueryParams(c, PG_SQL_DEAD_RAW, 5, NULL, params, NULL, NULL, 0)) {
            return -1;
        }
        sent++;
    }
    return sent;
}

/* Sends mark or announcement o as a prepared statement. 0, or -1 when the connection broke. */
static int pg_w_send_mark(pg_store *p, PGconn *c, const pg_op *o)
{
    char id[24], att[24], next[24], at[24];
    snprintf(id, sizeof(id), "%lld", (long long)o->id);
    snprintf(att, sizeof(att), "%u", o->attempts);
    snprintf(next, sizeof(next), "%lld", (long long)o->next_at_ms);
    snprintf(at, sizeof(at), "%lld", (long long)o->at_ms);
    int ok = 0;
    switch (o->kind) {
    case PG_DONE: {
        const char *v[2] = {id, p->host_id};
        ok = PQsendQueryPrepared(c, "px_done", 2, v, NULL, NULL, 0);
        break;
    }
    case PG_RETRY: {
        const char *v[6] = {id, att, next, o->text, at, p->host_id};
        ok = PQsendQueryPrepared(c, "px_retry", 6, v, NULL, NULL, 0);
        break;
    }
    case PG_DEAD: {
        const char *v[5] = {id, o->text, att, at, p->host_id};
        ok = PQsendQueryPrepared(c, "px_dead", 5, v, NULL, NULL, 0);
        break;
    }
    case PG_ANNOUNCE: {
        const char *v[2] = {p->host_id, o->text};
        ok = PQsendQueryPrepared(c, "px_announce", 2, v, NULL, NULL, 0);
        break;
    }
    default: break;
    }
    return ok ? 0 : -1;
}

/* Runs the ops of `list` in one transaction on the writer's connection. Returns 0 when committed
 * (delta: the pending deliveries it added and removed per sink), or the fault (rolled back; the
 * connection is dropped when the database is away). */
static int pg_w_txn(pg_store *p, pg_op *list, pg_counts *delta, char *msg, size_t msglen)
{
    PGconn *c = p->wconn;
    pg_counts_clear(delta);
    msg[0] = '\0';
    if (!c) {
        snprintf(msg, msglen, "not connected");
        return PX_PG_DOWN;
    }
    int ndone = 0;
    for (pg_op *o = list; o; o = o->next) {
        o->status = PX_STORE_STORED;
        o->fresh = 0;
        o->refused = 0;
        ndone += o->kind == PG_DONE;
    }
    if (!PQenterPipelineMode(c)) {
        return PX_PG_DOWN;
    }
    int fault = pg_w_dedupe(p, c, list, msg, msglen);
    int keyed_sync = 0;
    for (pg_op *o = list; o && !keyed_sync; o = o->next) {
        keyed_sync = o->kind == PG_PUT && o->dedupe_key && p->dedupe_window_ms > 0;
    }
    int ninserts = 0;
    ExecStatusType *marks = NULL;
    pg_op **marked = NULL;
    size_t nmarks = 0;
    if (!fault) {
        ninserts = pg_w_send_inserts(p, c, list);
        if (ninserts < 0) {
            fault = PX_PG_DOWN;
        }
    }
    if (!fault) {
        for (pg_op *o = list; o; o = o->next) {
            nmarks += !pg_is_put(o);
        }
        marks = px_xmalloc((nmarks + 1) * sizeof(*marks));
        marked = px_xmalloc((nmarks + 1) * sizeof(*marked));
        nmarks = 0;
        for (pg_op *o = list; o && !fault; o = o->next) {
            if (pg_is_put(o)) {
                continue;
            }
            if (pg_w_send_mark(p, c, o) < 0) {
                fault = PX_PG_DOWN;
            }
            marked[nmarks] = o;
            marks[nmarks++] = o->kind == PG_ANNOUNCE ? PGRES_COMMAND_OK : PGRES_TUPLES_OK;
        }
    }
    if (!fault && ndone > 0 &&
        !PQsendQueryParams(c, PG_SQL_UNREFERENCED, 0, NULL, NULL, NULL, NULL, 0)) {
        fault = PX_PG_DOWN;
    }
    if (!fault && (!PQsendQueryParams(c, "COMMIT", 0, NULL, NULL, NULL, NULL, 0) ||
                   !PQpipelineSync(c))) {
        fault = PX_PG_DOWN;
    }
    if (!fault) {
        if (!keyed_sync) {
            pg_pipe_read(c, PGRES_COMMAND_OK, NULL, &fault, msg, msglen, p); /* BEGIN */
        }
        for (int i = 0; i < ninserts; i++) {
            pg_pipe_read(c, PGRES_COMMAND_OK, NULL, &fault, msg, msglen, p);
        }
        for (size_t i = 0; i < nmarks; i++) {
            pg_op *o = marked[i];
            int n = pg_pipe_read(c, marks[i], o->kind == PG_RETRY ? NULL : delta, &fault, msg,
                                 msglen, p);
            o->refused = !fault && o->kind != PG_ANNOUNCE && n == 0;
        }
        if (ndone > 0) {
            pg_pipe_read(c, PGRES_COMMAND_OK, NULL, &fault, msg, msglen, p);
        }
        pg_pipe_read(c, PGRES_COMMAND_OK, NULL, &fault, msg, msglen, p); /* COMMIT */
        if (pg_pipe_sync(c) < 0 && !fault) {
            fault = PX_PG_DOWN;
        }
    }
    free(marks);
    free(marked);
    if (fault == PX_PG_DOWN || !PQexitPipelineMode(c)) {
        PQfinish(c); /* whatever it was doing: a fresh connection for the next try */
        p->wconn = NULL;
        pg_counts_clear(delta);
        return PX_PG_DOWN;
    }
    if (fault) {
        PGresult *r = PQexec(c, "ROLLBACK");
        PQclear(r);
        pg_counts_clear(delta);
        return fault;
    }
    for (pg_op *o = list; o; o = o->next) {
        if (o->kind == PG_PUT && o->status == PX_STORE_STORED) {
            for (size_t r = 0; r < o->nrows; r++) {
                if (!o->rows[r].elided && !o->rows[r].ordered) {
                    pg_counts_add(delta, o->rows[r].sink, 1);
                }
            }
        }
    }
    return 0;
}

/* Runs `list` in one transaction, again after a deadlock, and on success counts the commit and
 * applies its delta. Returns 0 or the fault (PX_PG_AGAIN becomes PX_PG_BAD once tried enough). */
static int pg_w_commit(pg_store *p, pg_op *list, pg_counts *delta, char *msg, size_t msglen)
{
    struct timespec ta, tb;
    clock_gettime(CLOCK_MONOTONIC, &ta);
    int fault = pg_w_txn(p, list, delta, msg, msglen);
    for (int i = 0; fault == PX_PG_AGAIN && i < PG_AGAIN_MAX; i++) {
        fault = pg_w_txn(p, list, delta, msg, msglen);
    }
    if (fault) {
        return fault == PX_PG_AGAIN ? PX_PG_BAD : fault;
    }
    clock_gettime(CLOCK_MONOTONIC, &tb);
    double ms = (double)(tb.tv_sec - ta.tv_sec) * 1e3 + (double)(tb.tv_nsec - ta.tv_nsec) / 1e6;
    uint64_t n = 0;
    pthread_mutex_lock(&p->mu);
    for (pg_op *o = list; o; o = o->next) {
        o->committed = 1;
        n++;
        if (o->kind == PG_PUT && o->status == PX_STORE_DUPLICATE) {
            p->st.duplicates++;
        }
        if (o->refused) {
            p->st.marks_refused++;
            PX_LOG_WARN(PG_LOG, "delivery update dropped id=%lld kind=%s: not held by this host "
                        "(another host adopted it, or it is gone)", (long long)o->id,
                        o->kind == PG_DONE ? "done" : o->kind == PG_RETRY ? "retry" : "dead");
        }
    }
    for (size_t i = 0; i < delta->n; i++) {
        pg_counts_add(&p->pending, delta->v[i].sink, delta->v[i].n);
    }
    p->st.commits++;
    p->st.rows_committed += n;
    p->st.last_batch = n;
    if (n > p->st.max_batch) {
        p->st.max_batch = n;
    }
    p->st.commit_ms_last = ms;
    if (ms > p->st.commit_ms_max) {
        p->st.commit_ms_max = ms;
    }
    pthread_mutex_unlock(&p->mu);
    return 0;
}

/* Writer: commits the batch (a private list). When one operation's data is refused, every
 * operation runs alone and only the refused ones fail. When the database is away the store turns
 * unwritable: puts complete with PX_EBUSY, marks wait in order for the next try. */
static void pg_w_process(pg_store *p, pg_op *batch, pg_counts *delta)
{
    char msg[256];
    int fault = pg_w_commit(p, batch, delta, msg, sizeof(msg));
    if (fault == PX_PG_BAD) {
        PX_LOG_WARN(PG_LOG, "postgres batch refused, committing its operations one by one err=%s",
                    msg);
        fault = 0;
        for (pg_op *o = batch; o && !fault; o = o->next) {
            pg_op *next = o->next;
            o->next = NULL;
            int f = pg_w_commit(p, o, delta, msg, sizeof(msg));
            o->next = next;
            if (f == PX_PG_BAD) {
                PX_LOG_ERR(PG_LOG, "postgres operation failed kind=%d id=%lld err=%s", o->kind,
                           (long long)(o->kind == PG_PUT && o->nrows ? o->rows[0].id : o->id),
                           msg);
                o->failed = 1;
            } else if (f) {
                fault = f;
            }
        }
    }
    pthread_mutex_lock(&p->mu);
    if (fault) {
        p->st.write_errors++;
        pg_down_locked(p, msg);
    }
    pg_op *next;
    for (pg_op *o = batch; o; o = next) {
        next = o->next;
        if (o->kind == PG_PUT) {
            for (size_t i = 0; i < o->nrows; i++) {
                if (!o->rows[i].elided) {
                    pg_counts_add(&p->queued_rows, o->rows[i].sink, -1);
                }
            }
        }
        if (o->committed) {
            pg_finish(p, o);
        } else if (o->failed) {
            o->status = PX_ESPOOL;
            pg_finish(p, o);
        } else if (pg_is_put(o)) {
            o->status = PX_EBUSY;
            p->st.busy_refusals++;
            pg_finish(p, o);
        } else {
            pg_list_push(&p->retry_head, &p->retry_tail, o);
        }
    }
    pthread_cond_broadcast(&p->cv_done);
    pthread_mutex_unlock(&p->mu);
    uv_async_send(&p->async);
}

/* While unwritable: the queued puts complete with PX_EBUSY at once; marks and announcements move
 * to the retry list, in order. mu held. */
static void pg_fail_queued(pg_store *p)
{
    if (!p->q_head) {
        return;
    }
    pg_op *o = p->q_head, *next;
    p->q_head = p->q_tail = NULL;
    for (; o; o = next) {
        next = o->next;
        p->q_len--;
        p->processed_seq++;
        if (pg_is_put(o)) {
            p->q_puts--;
            p->q_bytes -= o->bytes;
            if (o->kind == PG_PUT && o->nrows > 0) {
                p->pq_head = (p->pq_head + 1) % p->pq_cap;
                p->pq_len--;
                for (size_t i = 0; i < o->nrows; i++) {
                    if (!o->rows[i].elided) {
                        pg_counts_add(&p->queued_rows, o->rows[i].sink, -1);
                    }
                }
            }
            o->status = PX_EBUSY;
            p->st.busy_refusals++;
            pg_finish(p, o);
        } else {
            pg_list_push(&p->retry_head, &p->retry_tail, o);
        }
    }
    pthread_cond_broadcast(&p->cv_done);
    uv_async_send(&p->async);
}

/* Closing while the database is away: what is left is given up. mu held. */
static void pg_drop_all(pg_store *p)
{
    pg_fail_queued(p);
    pg_op *o = p->retry_head, *next;
    p->retry_head = p->retry_tail = NULL;
    for (; o; o = next) {
        next = o->next;
        PX_LOG_WARN(PG_LOG, "delivery update lost at close id=%lld (it will be redelivered)",
                    (long long)o->id);
        free(o);
    }
}

/* Renews this host's lease. Returns 0 or the fault. */
static int pg_w_heartbeat(pg_store *p)
{
    char lease[16];
    snprintf(lease, sizeof(lease), "%u", p->lease_ms);
    pthread_mutex_lock(&p->mu);
    char *hash = px_xstrdup(p->config_hash);
    pthread_mutex_unlock(&p->mu);
    const char *params[4] = {p->host_id, p->version, hash, lease};
    PGresult *r = PQexecParams(p->wconn, PG_SQL_HEARTBEAT, 4, NULL, params, NULL, NULL, 0);
    int fault = PQresultStatus(r) == PGRES_COMMAND_OK ? 0 : px_pg_fault(p->wconn, r);
    PQclear(r);
    free(hash);
    return fault;
}

/* Finds the database again: a fresh connection (or the current one, when it still answers).
 * Returns 0 or -1 (msg says why). */
static int pg_w_recover(pg_store *p, char *msg, size_t msglen)
{
    if (p->wconn) {
        PGresult *r = PQexec(p->wconn, "SELECT 1");
        int ok = PQresultStatus(r) == PGRES_TUPLES_OK;
        PQclear(r);
        if (ok) {
            return 0;
        }
        PQfinish(p->wconn);
        p->wconn = NULL;
    }
    p->wconn = pg_w_connect(p, msg, msglen);
    return p->wconn ? 0 : -1;
}

/* Waits on cv_work for at most ms. mu held. */
static void pg_timed_wait(pg_store *p, uint64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    p->writer_waiting = 1;
    pthread_cond_timedwait(&p->cv_work, &p->mu, &ts);
    p->writer_waiting = 0;
}

/* Takes the retry list, then the queue, up to PG_BATCH_MAX operations. mu held. */
static pg_op *pg_take_batch(pg_store *p, uint64_t *seq)
{
    pg_op *batch = p->retry_head, *tail = p->retry_tail;
    size_t n = 0;
    for (pg_op *o = batch; o; o = o->next) {
        n++;
    }
    p->retry_head = p->retry_tail = NULL;
    *seq = p->processed_seq;
    while (p->q_head && n < PG_BATCH_MAX) {
        pg_op *o = p->q_head;
        p->q_head = o->next;
        p->q_len--;
        if (pg_is_put(o)) {
            p->q_puts--;
            p->q_bytes -= o->bytes;
        }
        if (o->kind == PG_PUT && o->nrows > 0) { /* the ring's oldest: elision ends here */
            p->pq_head = (p->pq_head + 1) % p->pq_cap;
            p->pq_len--;
        }
        (*seq)++;
        if (tail) {
            tail->next = o;
        } else {
            batch = o;
        }
        tail = o;
        o->next = NULL;
        n++;
    }
    if (!p->q_head) {
        p->q_tail = NULL;
    }
    return batch;
}

/* The writer's work between batches, when due: renew the lease, top up the ids, prune the
 * dedupe keys. Returns 1 when it did something (mu was released), 0 otherwise. mu held. */
static int pg_w_chores(pg_store *p, uint64_t now, uint64_t *next_beat, uint64_t *next_prune)
{
    if (now >= *next_beat) {
        pthread_mutex_unlock(&p->mu);
        int fault = pg_w_heartbeat(p);
        pthread_mutex_lock(&p->mu);
        if (fault == PX_PG_DOWN) {
            PQfinish(p->wconn);
            p->wconn = NULL;
            pg_down_locked(p, "heartbeat failed");
            return 1;
        }
        if (!fault) {
            p->last_renew_ms = (int64_t)now;
        }
        *next_beat = now + (p->lease_ms / 5 ? p->lease_ms / 5 : 1);
        return 1;
    }
    if (p->ids_avail < PG_ID_LOW) {
        int k = (int)((PG_ID_LOW - p->ids_avail) / PG_ID_BLOCK + 1);
        pthread_mutex_unlock(&p->mu);
        int fault = pg_fetch_blocks(p, p->wconn, k);
        pthread_mutex_lock(&p->mu);
        if (fault) {
            PQfinish(p->wconn);
            p->wconn = NULL;
            pg_down_locked(p, "cannot reserve delivery ids");
        }
        return 1;
    }
    if (now >= *next_prune) {
        *next_prune = now + PG_PRUNE_INTERVAL_MS;
        pthread_mutex_unlock(&p->mu);
        PGresult *r = PQexec(p->wconn, PG_SQL_PRUNE);
        PQclear(r);
        pthread_mutex_lock(&p->mu);
        return 1;
    }
    return 0;
}

static void pg_writer_main(void *arg)
{
    pg_store *p = arg;
    pg_counts delta = {0};
    uint64_t backoff = PG_BACKOFF_MIN_MS, next_try = 0;
    uint64_t next_beat = pg_mono_ms() + p->lease_ms / 5, next_prune = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        uint64_t now = pg_mono_ms();
        int have = p->q_head || p->retry_head;
        if (p->stop && (!have || !p->writable)) {
            pg_drop_all(p);
            break;
        }
        if (!p->writable) {
            pg_fail_queued(p);
            if (now < next_try) {
                pg_timed_wait(p, next_try - now);
                continue;
            }
            pthread_mutex_unlock(&p->mu);
            char msg[256] = "";
            int ok = pg_w_recover(p, msg, sizeof(msg)) == 0;
            pthread_mutex_lock(&p->mu);
            if (ok) {
                PX_LOG_INFO(PG_LOG, "postgres store writable again url=%s", p->where);
                p->writable = 1;
                p->epoch++;
                backoff = PG_BACKOFF_MIN_MS;
                next_beat = 0;
                pthread_cond_broadcast(&p->cv_done);
            } else {
                PX_LOG_DEBUG(PG_LOG, "postgres reconnect failed err=%s", msg);
                next_try = pg_mono_ms() + backoff;
                backoff = backoff * 2 > PG_BACKOFF_MAX_MS ? PG_BACKOFF_MAX_MS : backoff * 2;
            }
            continue;
        }
        if (!p->stop && pg_w_chores(p, now, &next_beat, &next_prune)) {
            continue;
        }
        if (!have) {
            pg_timed_wait(p, next_beat > now ? next_beat - now : 1);
            continue;
        }
        uint64_t seq;
        pg_op *batch = pg_take_batch(p, &seq);
        pthread_mutex_unlock(&p->mu);
        pg_w_process(p, batch, &delta);
        pthread_mutex_lock(&p->mu);
        if (seq > p->processed_seq) {
            p->processed_seq = seq;
        }
        pthread_cond_broadcast(&p->cv_done);
        if (!p->writable) {
            next_try = pg_mono_ms() + backoff;
        }
    }
    pthread_mutex_unlock(&p->mu);
    pg_counts_free(&delta);
}

/* ---- loop side: queueing ------------------------------------------------------------------- */

static void pg_run_callbacks(pg_store *p)
{
    pthread_mutex_lock(&p->mu);
    pg_op *o = p->done_head;
    p->done_head = p->done_tail = NULL;
    pthread_mutex_unlock(&p->mu);
    while (o) {
        pg_op *next = o->next;
        if (o->cb) {
            o->cb(o->status, o->arg);
        }
        free(o);
        o = next;
    }
}

static void pg_on_async(uv_async_t *h)
{
    pg_run_callbacks(h->data);
}

/* Wakes the writer when it sleeps. mu held. */
static void pg_wake(pg_store *p)
{
    if (p->writer_waiting) {
        pthread_cond_signal(&p->cv_work);
    }
}

/* What a loop turn queued is committed together: the writer is woken once, before the loop
 * waits for I/O. */
static void pg_on_kick(uv_prepare_t *h)
{
    pg_store *p = h->data;
    if (p->kick_wanted) {
        p->kick_wanted = 0;
        pthread_mutex_lock(&p->mu);
        pg_wake(p);
        pthread_mutex_unlock(&p->mu);
    }
}

/* Waits until every operation queued so far is committed (or the store turns unwritable): the
 * marks kept while the database was away included. */
static void pg_barrier(pg_store *p)
{
    p->kick_wanted = 0;
    pthread_mutex_lock(&p->mu);
    pg_wake(p);
    uint64_t target = p->queued_seq;
    while ((p->processed_seq < target || p->retry_head) && p->writable) {
        pthread_cond_wait(&p->cv_done, &p->mu);
    }
    pthread_mutex_unlock(&p->mu);
}

/* Appends o to the queue. mu held. */
static void pg_enqueue_locked(pg_store *p, pg_op *o)
{
    pg_list_push(&p->q_head, &p->q_tail, o);
    p->q_len++;
    if (pg_is_put(o)) {
        p->q_puts++;
        p->q_bytes += o->bytes;
    }
    p->queued_seq++;
    p->kick_wanted = 1;
}

static size_t pg_slen(const char *s)
{
    return s ? strlen(s) + 1 : 0;
}

static const char *pg_put_str(char **cur, const char *s, size_t n_with_nul)
{
    if (!s) {
        return NULL;
    }
    char *d = *cur;
    memcpy(d, s, n_with_nul - 1);
    d[n_with_nul - 1] = '\0';
    *cur += n_with_nul;
    return d;
}

/* One allocation: the op, its rows, then every string. Rows' NULL strings become "". */
static pg_op *pg_op_from_event(const px_store_event *ev, const px_store_row *rows, size_t n,
                               const char *pipeline, const char *sink, const char *text)
{
    size_t len = sizeof(pg_op) + n * sizeof(pg_row);
    len += pg_slen(ev->id) + pg_slen(ev->type) + pg_slen(ev->source ? ev->source : "") +
           pg_slen(ev->dedupe_key) + pg_slen(ev->meta) + pg_slen(ev->hints) + ev->payload_len + 1;
    len += pg_slen(pipeline) + pg_slen(sink) + pg_slen(text);
    for (size_t i = 0; i < n; i++) {
        len += pg_slen(rows[i].pipeline ? rows[i].pipeline : "") +
               pg_slen(rows[i].sink ? rows[i].sink : "") +
               pg_slen(rows[i].action ? rows[i].action : "") +
               (rows[i].params ? rows[i].params_len : 2) + 1;
    }
    pg_op *o = px_xmalloc(len);
    memset(o, 0, sizeof(*o));
    o->bytes = len;
    o->rows = (pg_row *)(o + 1);
    o->nrows = n;
    char *cur = (char *)(o->rows + n);
    o->ev_id = pg_put_str(&cur, ev->id, pg_slen(ev->id));
    o->type = pg_put_str(&cur, ev->type, pg_slen(ev->type));
    const char *source = ev->source ? ev->source : "";
    o->source = pg_put_str(&cur, source, pg_slen(source));
    o->dedupe_key = pg_put_str(&cur, ev->dedupe_key, pg_slen(ev->dedupe_key));
    o->meta = pg_put_str(&cur, ev->meta, pg_slen(ev->meta));
    o->hints = pg_put_str(&cur, ev->hints, pg_slen(ev->hints));
    o->payload = pg_put_str(&cur, ev->payload ? ev->payload : "", ev->payload_len + 1);
    o->payload_len = ev->payload_len;
    o->time_ms = ev->time_ms;
    o->pipeline = pg_put_str(&cur, pipeline, pg_slen(pipeline));
    o->sink = pg_put_str(&cur, sink, pg_slen(sink));
    o->text = pg_put_str(&cur, text, pg_slen(text));
    for (size_t i = 0; i < n; i++) {
        pg_row *r = &o->rows[i];
        const char *pl = rows[i].pipeline ? rows[i].pipeline : "";
        const char *sk = rows[i].sink ? rows[i].sink : "";
        const char *ac = rows[i].action ? rows[i].action : "";
        r->elided = 0;
        r->ordered = rows[i].ordered != 0;
        r->pipeline = pg_put_str(&cur, pl, pg_slen(pl));
        r->sink = pg_put_str(&cur, sk, pg_slen(sk));
        r->action = pg_put_str(&cur, ac, pg_slen(ac));
        if (rows[i].params) {
            r->params = pg_put_str(&cur, rows[i].params, rows[i].params_len + 1);
            r->params_len = rows[i].params_len;
        } else {
            r->params = pg_put_str(&cur, "{}", 3);
            r->params_len = 2;
        }
    }
    return o;
}

/* Refuses a put at once when closing, unwritable or full. mu held. */
static int pg_admit(pg_store *p)
{
    if (p->closing || !p->writable || p->q_puts >= p->max_queue ||
        p->q_bytes >= PG_MAX_QUEUE_BYTES) {
        p->st.busy_refusals++;
        return PX_EBUSY;
    }
    return 0;
}

static void pg_pq_push(pg_store *p, pg_op *o)
{
    if (p->pq_len == p->pq_cap) {
        size_t cap = p->pq_cap ? p->pq_cap * 2 : 256;
        pg_op **v = px_xmalloc(cap * sizeof(*v));
        for (size_t i = 0; i < p->pq_len; i++) {
            v[i] = p->pq[(p->pq_head + i) % p->pq_cap];
        }
        free(p->pq);
        p->pq = v;
        p->pq_cap = cap;
        p->pq_head = 0;
    }
    p->pq[(p->pq_head + p->pq_len) % p->pq_cap] = o;
    p->pq_len++;
}

static int pg_put(void *b, const px_store_event *ev, px_store_row *rows, size_t n,
                  px_store_put_cb cb, void *arg)
{
    pg_store *p = b;
    if (!ev || (n > 0 && !rows) || n > PG_ID_BLOCK) {
        return PX_EINVAL;
    }
    pg_op *o = pg_op_from_event(ev, rows, n, NULL, NULL, NULL);
    o->kind = PG_PUT;
    o->cb = cb;
    o->arg = arg;
    pthread_mutex_lock(&p->mu);
    int64_t first = 0;
    int rc = pg_admit(p);
    if (rc == 0 && n > 0 && pg_ids_take(p, n, &first) < 0) {
        p->st.busy_refusals++;
        rc = PX_EBUSY;
    }
    if (rc != 0) {
        pg_wake(p);
        pthread_mutex_unlock(&p->mu);
        free(o);
        return rc;
    }
    for (size_t i = 0; i < n; i++) {
        rows[i].id = o->rows[i].id = first + (int64_t)i;
        pg_counts_add(&p->queued_rows, o->rows[i].sink, 1);
    }
    if (n > 0) {
        pg_pq_push(p, o);
    }
    pg_enqueue_locked(p, o);
    if (p->ids_avail < PG_ID_LOW) {
        pg_wake(p);
    }
    pthread_mutex_unlock(&p->mu);
    return 0;
}

static int pg_dead_raw(void *b, const px_store_event *ev, const char *pipeline, const char *sink,
                       const char *reason, px_store_put_cb cb, void *arg)
{
    pg_store *p = b;
    if (!ev) {
        return PX_EINVAL;
    }
    pg_op *o = pg_op_from_event(ev, NULL, 0, pipeline ? pipeline : "", sink ? sink : "",
                                reason ? reason : "");
    o->kind = PG_DEAD_RAW;
    o->cb = cb;
    o->arg = arg;
    o->at_ms = px_now_ms();
    pthread_mutex_lock(&p->mu);
    int rc = pg_admit(p);
    if (rc == 0 && pg_ids_take(p, 1, &o->id) < 0) {
        p->st.busy_refusals++;
        rc = PX_EBUSY;
    }
    if (rc == 0) {
        pg_enqueue_locked(p, o);
    } else {
        pg_wake(p);
    }
    pthread_mutex_unlock(&p->mu);
    if (rc != 0) {
        free(o);
    }
    return rc;
}

static void pg_queue_mark(pg_store *p, int kind, int64_t id, uint32_t attempts, int64_t next_at,
                          const char *text)
{
    if (p->closing) {
        return;
    }
    size_t tl = text ? strlen(text) + 1 : 0;
    pg_op *o = px_xmalloc(sizeof(*o) + tl);
    memset(o, 0, sizeof(*o));
    o->kind = kind;
    o->id = id;
    o->attempts = attempts;
    o->next_at_ms = next_at;
    o->at_ms = px_now_ms();
    if (text) {
        o->text = memcpy((char *)(o + 1), text, tl);
    }
    pthread_mutex_lock(&p->mu);
    pg_enqueue_locked(p, o);
    pthread_mutex_unlock(&p->mu);
}

/* The queued put holding delivery `id`, or NULL when the writer took it already. The ring is in
 * id order and each put's ids are contiguous. mu held. */
static pg_op *pg_pq_find(pg_store *p, int64_t id, size_t *row)
{
    size_t lo = 0, hi = p->pq_len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (p->pq[(p->pq_head + mid) % p->pq_cap]->rows[0].id <= id) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (lo == 0) {
        return NULL;
    }
    pg_op *o = p->pq[(p->pq_head + lo - 1) % p->pq_cap];
    if (id >= o->rows[0].id + (int64_t)o->nrows) {
        return NULL;
    }
    *row = (size_t)(id - o->rows[0].id);
    return o;
}

static void pg_mark_done(void *b, int64_t id, uint32_t attempts)
{
    pg_store *p = b;
    if (p->closing) {
        return;
    }
    pthread_mutex_lock(&p->mu);
    size_t i = 0;
    pg_op *o = pg_pq_find(p, id, &i);
    if (o) {
        /* delivered before its put was written: inserting and deleting it would cancel out */
        if (!o->rows[i].elided) {
            o->rows[i].elided = 1;
            o->nelided++;
            pg_counts_add(&p->queued_rows, o->rows[i].sink, -1);
            p->st.elided++;
        }
        pthread_mutex_unlock(&p->mu);
        return;
    }
    pthread_mutex_unlock(&p->mu);
    pg_queue_mark(p, PG_DONE, id, attempts, 0, NULL);
}

static void pg_mark_retry(void *b, int64_t id, uint32_t attempts, int64_t next_at_ms,
                          const char *error)
{
    pg_queue_mark(b, PG_RETRY, id, attempts, next_at_ms, error);
}

static void pg_mark_dead(void *b, int64_t id, uint32_t attempts, const char *reason)
{
    pg_queue_mark(b, PG_DEAD, id, attempts, 0, reason ? reason : "");
}

static void pg_announce(void *b, const char *config_hash)
{
    pg_store *p = b;
    const char *h = config_hash ? config_hash : "";
    pthread_mutex_lock(&p->mu);
    free(p->config_hash);
    p->config_hash = px_xstrdup(h);
    pthread_mutex_unlock(&p->mu);
    pg_queue_mark(p, PG_ANNOUNCE, 0, 0, 0, h);
}

/* ---- loop side: synchronous calls on the second connection --------------------------------- */

/* The synchronous connection lost the database: the store turns unwritable and the writer checks
 * and recovers. */
static void pg_s_lost(pg_store *p, const char *why)
{
    pthread_mutex_lock(&p->mu);
    pg_down_locked(p, why);
    pg_wake(p);
    pthread_mutex_unlock(&p->mu);
}

/* The synchronous connection, ready: PX_EBUSY at once while the database is known away; opened
 * again after the writer found the database again. */
static int pg_s_ready(pg_store *p)
{
    if (p->closing) {
        return PX_EBUSY;
    }
    pthread_mutex_lock(&p->mu);
    int writable = p->writable;
    uint64_t epoch = p->epoch;
    pthread_mutex_unlock(&p->mu);
    if (!writable) {
        return PX_EBUSY;
    }
    if (p->sconn && PQstatus(p->sconn) == CONNECTION_OK && p->s_epoch == epoch) {
        return 0;
    }
    PQfinish(p->sconn);
    char msg[256];
    p->sconn = px_pg_connect(p->url, PG_SYNC_TIMEOUT_MS, &p->secrets, msg, sizeof(msg));
    if (!p->sconn) {
        pg_s_lost(p, msg);
        return PX_EBUSY;
    }
    p->s_epoch = epoch;
    return 0;
}

/* A statement on the synchronous connection failed (r: its result, cleared here). Returns
 * PX_EBUSY (the database is away, or the statement ran out of time) or PX_ESPOOL (logged). */
static int pg_s_failed(pg_store *p, PGresult *r, const char *what)
{
    char msg[256];
    pg_errmsg(p, p->sconn, r, msg, sizeof(msg));
    int fault = px_pg_fault(p->sconn, r);
    PQclear(r);
    if (fault == PX_PG_DOWN) {
        PX_LOG_WARN(PG_LOG, "postgres %s failed err=%s", what, msg);
        if (PQstatus(p->sconn) != CONNECTION_OK) {
            PQfinish(p->sconn);
            p->sconn = NULL;
            pg_s_lost(p, msg);
        } else {
            PGresult *rb = PQexec(p->sconn, "ROLLBACK");
            PQclear(rb);
        }
        return PX_EBUSY;
    }
    PX_LOG_ERR(PG_LOG, "postgres %s failed err=%s", what, msg);
    if (PQtransactionStatus(p->sconn) != PQTRANS_IDLE) {
        PGresult *rb = PQexec(p->sconn, "ROLLBACK");
        PQclear(rb);
    }
    return PX_ESPOOL;
}

/* Runs sql with n text parameters on the synchronous connection; binary: rows in binary format.
 * Returns 0 with the result in *out (owned by caller: PQclear), or < 0. */
static int pg_s_exec(pg_store *p, const char *what, const char *sql, int n,
                     const char *const *params, int binary, PGresult **out)
{
    int rc = pg_s_ready(p);
    if (rc != 0) {
        return rc;
    }
    PGresult *r = PQexecParams(p->sconn, sql, n, NULL, params, NULL, NULL, binary);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        return pg_s_failed(p, r, what);
    }
    *out = r;
    return 0;
}

/* As pg_s_exec, for a statement whose result is not needed. */
static int pg_s_run(pg_store *p, const char *what, const char *sql, int n,
                    const char *const *params)
{
    PGresult *r = NULL;
    int rc = pg_s_exec(p, what, sql, n, params, 0, &r);
    PQclear(r);
    return rc;
}

static void pg_delivery_from(const PGresult *r, int i, px_store_delivery *d)
{
    memset(d, 0, sizeof(*d));
    d->id = px_pg_int(r, i, 0);
    d->pipeline = px_pg_text(r, i, 1);
    d->sink = px_pg_text(r, i, 2);
    d->action = px_pg_text(r, i, 3);
    d->params = px_pg_text(r, i, 4);
    d->attempts = (uint32_t)px_pg_int(r, i, 5);
    d->next_at_ms = px_pg_int(r, i, 6);
    d->last_error = px_pg_text(r, i, 7);
    d->ev.id = px_pg_text(r, i, 8);
    d->ev.type = px_pg_text(r, i, 9);
    d->ev.source = px_pg_text(r, i, 10);
    d->ev.time_ms = px_pg_int(r, i, 11);
    d->ev.payload = px_pg_text(r, i, 12);
    d->ev.payload_len = (size_t)PQgetlength(r, i, 12);
    d->ev.meta = px_pg_text(r, i, 13);
    d->ev.hints = px_pg_text(r, i, 14);
}

static void pg_i64(char *buf, size_t len, int64_t v)
{
    snprintf(buf, len, "%lld", (long long)v);
}

static void pg_limit(char *buf, size_t len, size_t max)
{
    snprintf(buf, len, "%lld", (long long)(max > INT64_MAX ? INT64_MAX : (int64_t)max));
}

static int pg_claim(void *b, const char *sink, int64_t after_id, size_t max,
                    void (*cb)(const px_store_delivery *d, void *arg), void *arg)
{
    pg_store *p = b;
    if (!sink || !cb) {
        return PX_EINVAL;
    }
    pg_barrier(p);
    char after[24], lim[24];
    pg_i64(after, sizeof(after), after_id);
    pg_limit(lim, sizeof(lim), max);
    const char *params[4] = {p->host_id, sink, after, lim};
    PGresult *r = NULL;
    int rc = pg_s_exec(p, "claim",
                       "SELECT " PG_DELIVERY_COLS " FROM deliveries d JOIN events e "
                       "ON e.eid = d.event WHERE d.owner = $1 AND d.sink = $2 AND d.id > $3 "
                       "ORDER BY d.id LIMIT $4",
                       4, params, 1, &r);
    if (rc != 0) {
        return rc;
    }
    int n = PQntuples(r);
    for (int i = 0; i < n; i++) {
        px_store_delivery d;
        pg_delivery_from(r, i, &d);
        cb(&d, arg);
    }
    PQclear(r);
    return n;
}

static int pg_adopt(void *b, const char *sink, size_t max,
                    void (*cb)(const px_store_delivery *d, void *arg), void *arg)
{
    pg_store *p = b;
    if (!sink || !cb) {
        return PX_EINVAL;
    }
    pg_barrier(p);
    char lim[24];
    pg_limit(lim, sizeof(lim), max);
    const char *params[3] = {p->host_id, sink, lim};
    PGresult *r = NULL;
    int rc = pg_s_exec(
        p, "adopt",
        "WITH d AS (UPDATE deliveries SET owner = $1 WHERE id IN ("
        " SELECT o.id FROM deliveries o LEFT JOIN hosts h ON h.host_id = o.owner"
        " WHERE o.sink = $2 AND o.owner <> $1 AND o.seq IS NULL AND (h.host_id IS NULL OR"
        " h.stopped_at IS NOT NULL OR"
        " h.heartbeat_at < now() - h.lease_ms * interval '1 millisecond')"
        " ORDER BY o.id LIMIT $3 FOR UPDATE OF o SKIP LOCKED) RETURNING *) "
        "SELECT " PG_DELIVERY_COLS " FROM d JOIN events e ON e.eid = d.event ORDER BY d.id",
        3, params, 1, &r);
    if (rc != 0) {
        return rc;
    }
    int n = PQntuples(r);
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < n; i++) {
        pg_counts_add(&p->pending, px_pg_text(r, i, 2), 1);
    }
    pthread_mutex_unlock(&p->mu);
    if (n > 0) {
        PX_LOG_INFO(PG_LOG, "adopted orphaned deliveries sink=%s n=%d", sink, n);
    }
    for (int i = 0; i < n; i++) {
        px_store_delivery d;
        pg_delivery_from(r, i, &d);
        cb(&d, arg);
    }
    PQclear(r);
    return n;
}

static int pg_claim_ordered(void *b, const char *sink, int64_t after_seq, size_t max,
                            void (*cb)(const px_store_delivery *d, void *arg), void *arg)
{
    pg_store *p = b;
    if (!sink || !cb) {
        return PX_EINVAL;
    }
    pg_barrier(p);
    char after[24], lim[24];
    pg_i64(after, sizeof(after), after_seq);
    pg_limit(lim, sizeof(lim), max);
    const char *params[4] = {p->host_id, sink, after, lim};
    PGresult *r = NULL;
    int rc = pg_s_exec(
        p, "claim ordered",
        "WITH o AS (SELECT x.id, x.owner AS was FROM deliveries x WHERE x.sink = $2 AND "
        " x.seq > $3 ORDER BY x.seq LIMIT $4 FOR UPDATE), "
        "d AS (UPDATE deliveries x SET owner = $1 FROM o WHERE x.id = o.id "
        " RETURNING x.*, o.was) "
        "SELECT " PG_DELIVERY_COLS ", d.seq, d.was = $1 FROM d JOIN events e ON e.eid = d.event "
        "ORDER BY d.seq",
        4, params, 1, &r);
    if (rc != 0) {
        return rc;
    }
    int n = PQntuples(r);
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < n; i++) {
        if (!px_pg_int(r, i, 16)) { /* held by no host, or another: this host's now */
            pg_counts_add(&p->pending, px_pg_text(r, i, 2), 1);
        }
    }
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < n; i++) {
        px_store_delivery d;
        pg_delivery_from(r, i, &d);
        d.seq = px_pg_int(r, i, 15);
        cb(&d, arg);
    }
    PQclear(r);
    return n;
}

static int64_t pg_pending(void *b, const char *sink)
{
    pg_store *p = b;
    pthread_mutex_lock(&p->mu);
    int64_t n = pg_counts_get(&p->pending, sink) + pg_counts_get(&p->queued_rows, sink);
    pthread_mutex_unlock(&p->mu);
    return n;
}

static int pg_pending_counts(void *b, void (*cb)(const char *sink, int64_t n, void *arg),
                             void *arg)
{
    pg_store *p = b;
    if (!cb) {
        return PX_EINVAL;
    }
    pg_barrier(p);
    pg_counts copy = {0};
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < p->pending.n; i++) {
        int64_t n = p->pending.v[i].n + pg_counts_get(&p->queued_rows, p->pending.v[i].sink);
        if (n > 0) {
            pg_counts_add(&copy, p->pending.v[i].sink, n);
        }
    }
    pthread_mutex_unlock(&p->mu);
    for (size_t i = 0; i < copy.n; i++) {
        cb(copy.v[i].sink, copy.v[i].n, arg);
    }
    int n = (int)copy.n;
    pg_counts_free(&copy);
    return n;
}

/* note_crash: one more attempt and crash, dead-lettered at max_crashes. */
static int pg_note_crash(void *b, int64_t id, const char *reason, uint32_t max_crashes)
{
    pg_store *p = b;
    const char *why = reason ? reason : "crash";
    uint32_t max = max_crashes ? max_crashes : 3;
    pg_barrier(p);
    char ids[24], at[24];
    pg_i64(ids, sizeof(ids), id);
    pg_i64(at, sizeof(at), px_now_ms());
    int rc = pg_s_run(p, "note_crash", "BEGIN", 0, NULL);
    if (rc != 0) {
        return rc;
    }
    const char *up[2] = {ids, why};
    PGresult *r = NULL;
    rc = pg_s_exec(p, "note_crash",
                   "UPDATE deliveries SET attempts = attempts + 1, crashes = crashes + 1, "
                   "last_error = $2 WHERE id = $1 RETURNING attempts, crashes, sink",
                   2, up, 1, &r);
    if (rc != 0) {
        return rc;
    }
    if (PQntuples(r) == 0) {
        PQclear(r);
        pg_s_run(p, "note_crash", "ROLLBACK", 0, NULL);
        return PX_ENOENT;
    }
    int64_t attempts = px_pg_int(r, 0, 0), crashes = px_pg_int(r, 0, 1);
    char *sink = px_xstrdup(px_pg_text(r, 0, 2));
    PQclear(r);
    char att[24];
    pg_i64(att, sizeof(att), attempts);
    const char *ins[4] = {ids, att, at, why};
    rc = pg_s_run(p, "note_crash",
                  "INSERT INTO attempts(delivery_id, attempt, at_ms, error) "
                  "VALUES($1, $2, $3, $4) ON CONFLICT (delivery_id, attempt) DO UPDATE "
                  "SET at_ms = EXCLUDED.at_ms, error = EXCLUDED.error",
                  4, ins);
    int dead = rc == 0 && crashes >= (int64_t)max;
    if (dead) {
        char text[512];
        snprintf(text, sizeof(text), "crashed the host %lld times; last: %s", (long long)crashes,
                 why);
        const char *dp[5] = {ids, text, att, at, p->host_id};
        rc = pg_s_run(p, "note_crash", PG_SQL_DEAD, 5, dp);
    }
    if (rc == 0) {
        rc = pg_s_run(p, "note_crash", "COMMIT", 0, NULL);
    }
    if (rc == 0 && dead) {
        pthread_mutex_lock(&p->mu);
        pg_counts_add(&p->pending, sink, -1);
        pthread_mutex_unlock(&p->mu);
    }
    free(sink);
    return rc == 0 ? (int)crashes : rc;
}

/* ---- dead letters ---------------------------------------------------------------------------- */

#define PG_DLQ_COLS                                                                            \
    "SELECT x.id, e.id, e.type, e.source, x.pipeline, x.sink, x.action, x.reason, "            \
    "x.attempts, x.died_at, e.time_ms, e.payload, x.params, e.meta, e.hints, x.delivery_id "   \
    "FROM dead_letters x JOIN events e ON e.eid = x.event "

static json_t *pg_json_str(const PGresult *r, int i, int col)
{
    const char *t = px_pg_text(r, i, col);
    return t ? json_string(t) : json_null();
}

static json_t *pg_dlq_row(const PGresult *r, int i)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer(px_pg_int(r, i, 0)));
    json_object_set_new(o, "event_id", pg_json_str(r, i, 1));
    json_object_set_new(o, "type", pg_json_str(r, i, 2));
    json_object_set_new(o, "source", pg_json_str(r, i, 3));
    json_object_set_new(o, "pipeline", pg_json_str(r, i, 4));
    json_object_set_new(o, "sink", pg_json_str(r, i, 5));
    json_object_set_new(o, "action", pg_json_str(r, i, 6));
    json_object_set_new(o, "reason", pg_json_str(r, i, 7));
    json_object_set_new(o, "attempts", json_integer(px_pg_int(r, i, 8)));
    json_object_set_new(o, "died_at", json_integer(px_pg_int(r, i, 9)));
    return o;
}

/* The WHERE of a dead-letter query, on parameters $1..$5 (pg_dlq_params). */
#define PG_DLQ_WHERE                                                                          \
    "WHERE ($1::text IS NULL OR x.sink = $1) AND ($2::text IS NULL OR x.pipeline = $2) "      \
    "AND ($3::text IS NULL OR strpos(lower(x.reason), lower($3)) > 0) AND x.died_at >= $4 "   \
    "AND ($5::bigint = 0 OR x.died_at < $5) "

static int pg_dlq_list(void *b, const px_dlq_query *q, json_t **out, int64_t *total)
{
    pg_store *p = b;
    if (!q || !out) {
        return PX_EINVAL;
    }
    pg_barrier(p);
    char since[24], until[24], lim[24], off[24];
    pg_i64(since, sizeof(since), q->since_ms);
    pg_i64(until, sizeof(until), q->until_ms > 0 ? q->until_ms : 0);
    pg_limit(lim, sizeof(lim), q->limit);
    pg_limit(off, sizeof(off), q->offset);
    const char *params[7] = {q->sink, q->pipeline, q->reason && *q->reason ? q->reason : NULL,
                             since, until, q->limit ? lim : NULL, off};
    PGresult *r = NULL;
    int rc = pg_s_exec(p, "dlq list",
                       PG_DLQ_COLS PG_DLQ_WHERE "ORDER BY x.died_at DESC, x.id DESC LIMIT $6 "
                                                "OFFSET $7",
                       7, params, 1, &r);
    if (rc != 0) {
        return rc;
    }
    json_t *arr = json_array();
    for (int i = 0; i < PQntuples(r); i++) {
        json_array_append_new(arr, pg_dlq_row(r, i));
    }
    PQclear(r);
    if (total) {
        rc = pg_s_exec(p, "dlq count", "SELECT count(*) FROM dead_letters x " PG_DLQ_WHERE, 5,
                       params, 1, &r);
        if (rc != 0) {
            json_decref(arr);
            return rc;
        }
        *total = px_pg_int(r, 0, 0);
        PQclear(r);
    }
    *out = arr;
    return 0;
}

static json_t *pg_json_or_text(const PGresult *r, int i, int col)
{
    const char *t = px_pg_text(r, i, col);
    return px__store_json_or_text(t, t ? (size_t)PQgetlength(r, i, col) : 0);
}

static int pg_dlq_show(void *b, int64_t id, json_t **out)
{
    pg_store *p = b;
    if (!out) {
        return PX_EINVAL;
    }
    pg_barrier(p);
    char ids[24];
    pg_i64(ids, sizeof(ids), id);
    const char *params[1] = {ids};
    PGresult *r = NULL;
    int rc = pg_s_exec(p, "dlq show", PG_DLQ_COLS "WHERE x.id = $1", 1, params, 1, &r);
    if (rc != 0) {
        return rc;
    }
    if (PQntuples(r) == 0) {
        PQclear(r);
        return PX_ENOENT;
    }
    json_t *o = pg_dlq_row(r, 0);
    json_object_set_new(o, "time", json_integer(px_pg_int(r, 0, 10)));
    json_object_set_new(o, "payload", pg_json_or_text(r, 0, 11));
    json_object_set_new(o, "params", pg_json_or_text(r, 0, 12));
    json_object_set_new(o, "meta", pg_json_or_text(r, 0, 13));
    json_object_set_new(o, "hints", pg_json_or_text(r, 0, 14));
    int64_t delivery_id = px_pg_int(r, 0, 15);
    PQclear(r);
    json_t *hist = json_array();
    json_object_set_new(o, "history", hist);
    if (delivery_id > 0) {
        char did[24];
        pg_i64(did, sizeof(did), delivery_id);
        const char *hp[1] = {did};
        rc = pg_s_exec(p, "dlq show",
                       "SELECT attempt, at_ms, error FROM attempts WHERE delivery_id = $1 "
                       "ORDER BY attempt",
                       1, hp, 1, &r);
        if (rc != 0) {
            json_decref(o);
            return rc;
        }
        for (int i = 0; i < PQntuples(r); i++) {
            json_array_append_new(hist, json_pack("{s:I,s:I,s:o}", "attempt",
                                                  (json_int_t)px_pg_int(r, i, 0), "at",
                                                  (json_int_t)px_pg_int(r, i, 1), "error",
                                                  pg_json_str(r, i, 2)));
        }
        PQclear(r);
    }
    *out = o;
    return 0;
}

static int pg_dlq_count(void *b, int64_t *n)
{
    pg_store *p = b;
    if (!n) {
        return PX_EINVAL;
    }
    pg_barrier(p);
    PGresult *r = NULL;
    int rc = pg_s_exec(p, "dlq count", "SELECT count(*) FROM dead_letters", 0, NULL, 1, &r);
    if (rc != 0) {
        return rc;
    }
    *n = px_pg_int(r, 0, 0);
    PQclear(r);
    return 0;
}

/* ids (n entries; NULL or 0: none) as an array literal into b. */
static void pg_ids_literal(px_pg_buf *b, const int64_t *ids, size_t n)
{
    px_pg_arr_open(b);
    for (size_t i = 0; ids && i < n; i++) {
        px_pg_arr_i64(b, ids[i]);
    }
    px_pg_arr_close(b);
}

/* Takes one fresh id for a replay, fetching blocks on the synchronous connection when none is
 * in hand. Returns 0 or < 0. */
static int pg_replay_id(pg_store *p, int64_t *id)
{
    for (int tries = 0; tries < 3; tries++) {
        pthread_mutex_lock(&p->mu);
        int rc = pg_ids_take(p, 1, id);
        pthread_mutex_unlock(&p->mu);
        if (rc == 0) {
            return 0;
        }
        if (pg_fetch_blocks(p, p->sconn, 1) != 0) {
            return PX_EBUSY;
        }
    }
    return PX_EBUSY;
}

typedef struct pg_replayed {
    int64_t id;
    char *sink;
} pg_replayed;

static int pg_replayed_cmp(const void *a, const void *b)
{
    const pg_replayed *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

static int pg_dlq_replay(void *b, const int64_t *ids, size_t n, const char *sink,
                         void (*cb)(int64_t id, const char *sink, void *arg), void *arg)
{
    pg_store *p = b;
    pg_barrier(p);
    px_pg_buf sel = {0}, olds = {0}, news = {0};
    pg_ids_literal(&sel, ids, n);
    PGresult *r = NULL;
    int rc = pg_s_run(p, "dlq replay", "BEGIN", 0, NULL);
    if (rc == 0) {
        const char *params[2] = {sel.p, sink};
        rc = pg_s_exec(p, "dlq replay",
                       "SELECT id FROM dead_letters WHERE (cardinality($1::bigint[]) = 0 OR "
                       "id = ANY($1::bigint[])) AND ($2::text IS NULL OR sink = $2) AND "
                       "sink <> '' ORDER BY id FOR UPDATE",
                       2, params, 1, &r);
    }
    int count = 0;
    pg_replayed *got = NULL;
    if (rc == 0) {
        px_pg_arr_open(&olds);
        px_pg_arr_open(&news);
        for (int i = 0; i < PQntuples(r) && rc == 0; i++) {
            int64_t fresh = 0;
            rc = pg_replay_id(p, &fresh);
            px_pg_arr_i64(&olds, px_pg_int(r, i, 0));
            px_pg_arr_i64(&news, fresh);
        }
        px_pg_arr_close(&olds);
        px_pg_arr_close(&news);
        PQclear(r);
        r = NULL;
    }
    if (rc == 0) {
        const char *params[3] = {olds.p, news.p, p->host_id};
        rc = pg_s_exec(
            p, "dlq replay",
            "WITH m AS (SELECT * FROM unnest($1::bigint[], $2::bigint[]) AS m(old, new)), "
            "x AS (DELETE FROM dead_letters d USING m WHERE d.id = m.old RETURNING "
            "d.delivery_id, d.event, d.pipeline, d.sink, d.action, d.params, m.new), "
            "a AS (DELETE FROM attempts WHERE delivery_id IN "
            "(SELECT delivery_id FROM x WHERE delivery_id > 0)) "
            "INSERT INTO deliveries(id, event, owner, pipeline, sink, action, params) "
            "SELECT new, event, $3::text, pipeline, sink, action, params FROM x RETURNING id, sink",
            3, params, 1, &r);
    }
    if (rc == 0) {
        count = PQntuples(r);
        got = px_xcalloc((size_t)count + 1, sizeof(*got));
        for (int i = 0; i < count; i++) {
            got[i].id = px_pg_int(r, i, 0);
            got[i].sink = px_xstrdup(px_pg_text(r, i, 1));
        }
        PQclear(r);
        rc = pg_s_run(p, "dlq replay", "COMMIT", 0, NULL);
    } else if (p->sconn && PQtransactionStatus(p->sconn) != PQTRANS_IDLE) {
        PGresult *rb = PQexec(p->sconn, "ROLLBACK");
        PQclear(rb);
    }
    if (rc == 0 && count > 0) {
        qsort(got, (size_t)count, sizeof(*got), pg_replayed_cmp);
        pthread_mutex_lock(&p->mu);
        for (int i = 0; i < count; i++) {
            pg_counts_add(&p->pending, got[i].sink, 1);
        }
        pthread_mutex_unlock(&p->mu);
        for (int i = 0; cb && i < count; i++) {
            cb(got[i].id, got[i].sink, arg);
        }
    }
    for (int i = 0; got && i < count; i++) {
        free(got[i].sink);
    }
    free(got);
    px_pg_buf_free(&sel);
    px_pg_buf_free(&olds);
    px_pg_buf_free(&news);
    return rc == 0 ? count : rc;
}

static int pg_dlq_purge(void *b, const int64_t *ids, size_t n, const char *sink,
                        int64_t before_ms)
{
    pg_store *p = b;
    pg_barrier(p);
    px_pg_buf sel = {0};
    pg_ids_literal(&sel, ids, n);
    char before[24];
    pg_i64(before, sizeof(before), before_ms);
    int rc = pg_s_run(p, "dlq purge", "BEGIN", 0, NULL);
    PGresult *r = NULL;
    int count = 0;
    if (rc == 0) {
        const char *params[3] = {sel.p, sink, before};
        rc = pg_s_exec(
            p, "dlq purge",
            "WITH x AS (DELETE FROM dead_letters WHERE (cardinality($1::bigint[]) = 0 OR "
            "id = ANY($1::bigint[])) AND ($2::text IS NULL OR sink = $2) AND "
            "($3::bigint <= 0 OR died_at < $3) RETURNING delivery_id, event), "
            "a AS (DELETE FROM attempts WHERE delivery_id IN "
            "(SELECT delivery_id FROM x WHERE delivery_id > 0)), "
            "u AS (UPDATE events e SET refs = e.refs - c.n FROM "
            "(SELECT event, count(*) AS n FROM x GROUP BY event) c WHERE e.eid = c.event) "
            "SELECT count(*) FROM x",
            3, params, 1, &r);
    }
    if (rc == 0) {
        count = (int)px_pg_int(r, 0, 0);
        PQclear(r);
        rc = pg_s_run(p, "dlq purge", PG_SQL_UNREFERENCED, 0, NULL);
    }
    if (rc == 0) {
        rc = pg_s_run(p, "dlq purge", "COMMIT", 0, NULL);
    }
    px_pg_buf_free(&sel);
    return rc == 0 ? count : rc;
}

/* ---- state and locks ------------------------------------------------------------------------ */

static json_t *pg_kv_get_versioned(void *b, const char *instance, const char *key,
                                   int64_t *version)
{
    pg_store *p = b;
    *version = 0;
    if (!instance || !key) {
        return NULL;
    }
    const char *params[2] = {instance, key};
    PGresult *r = NULL;
    if (pg_s_exec(p, "kv get", "SELECT value, version FROM kv WHERE instance = $1 AND key = $2",
                  2, params, 1, &r) != 0) {
        return NULL;
    }
    json_t *v = NULL;
    if (PQntuples(r) == 1) {
        json_error_t jerr;
        v = json_loadb(PQgetvalue(r, 0, 0), (size_t)PQgetlength(r, 0, 0), JSON_DECODE_ANY,
                       &jerr);
        if (v) {
            *version = px_pg_int(r, 0, 1);
        } else {
            PX_LOG_ERR(PG_LOG, "stored value is not json instance=%s key=%s err=%s", instance,
                       key, jerr.text);
        }
    }
    PQclear(r);
    return v;
}

static json_t *pg_kv_get(void *b, const char *instance, const char *key)
{
    int64_t version;
    return pg_kv_get_versioned(b, instance, key, &version);
}

static int pg_kv_set(void *b, const char *instance, const char *key, const json_t *value)
{
    pg_store *p = b;
    if (!instance || !key) {
        return PX_EINVAL;
    }
    if (!value) {
        const char *params[2] = {instance, key};
        return pg_s_run(p, "kv set", "DELETE FROM kv WHERE instance = $1 AND key = $2", 2,
                        params);
    }
    char *text = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text) {
        return PX_EINVAL;
    }
    const char *params[3] = {instance, key, text};
    int rc = pg_s_run(p, "kv set",
                      "INSERT INTO kv(instance, key, value, version) VALUES($1, $2, $3, "
                      "nextval('kv_versions')) ON CONFLICT (instance, key) DO UPDATE SET "
                      "value = EXCLUDED.value, version = EXCLUDED.version",
                      3, params);
    free(text);
    return rc;
}

static int pg_kv_cas(void *b, const char *instance, const char *key, int64_t expected,
                     const json_t *value, int64_t *version)
{
    pg_store *p = b;
    if (!instance || !key || expected < 0 || (!value && expected == 0)) {
        return PX_EINVAL;
    }
    char *text = NULL;
    if (value && !(text = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY))) {
        return PX_EINVAL;
    }
    char exp[24];
    pg_i64(exp, sizeof(exp), expected);
    const char *params[4] = {instance, key, text, exp};
    const char *sql;
    int n = 4;
    if (!value) {
        sql = "DELETE FROM kv WHERE instance = $1 AND key = $2 AND version = $4 AND "
              "$3::text IS NULL RETURNING 0::bigint";
    } else if (expected == 0) {
        sql = "INSERT INTO kv(instance, key, value, version) VALUES($1, $2, $3, "
              "nextval('kv_versions')) ON CONFLICT DO NOTHING RETURNING version";
        n = 3;
    } else {
        sql = "UPDATE kv SET value = $3, version = nextval('kv_versions') WHERE instance = $1 "
              "AND key = $2 AND version = $4 RETURNING version";
    }
    PGresult *r = NULL;
    int rc = pg_s_exec(p, "kv cas", sql, n, params, 1, &r);
    free(text);
    if (rc != 0) {
        return rc;
    }
    rc = PX_ECONFLICT;
    if (PQntuples(r) == 1) {
        if (version) {
            *version = px_pg_int(r, 0, 0);
        }
        rc = 0;
    }
    PQclear(r);
    return rc;
}

static int pg_lock(void *b, const char *name, const char *holder, uint32_t ttl_ms)
{
    pg_store *p = b;
    if (!name || !holder || ttl_ms == 0) {
        return PX_EINVAL;
    }
    char ttl[16];
    snprintf(ttl, sizeof(ttl), "%u", ttl_ms);
    const char *params[3] = {name, holder, ttl};
    PGresult *r = NULL;
    int rc = pg_s_exec(p, "lock",
                       "INSERT INTO locks(name, holder, expires_at) VALUES($1, $2, "
                       "now() + $3::bigint * interval '1 millisecond') ON CONFLICT (name) DO "
                       "UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at "
                       "WHERE locks.holder = EXCLUDED.holder OR locks.expires_at <= now() "
                       "RETURNING 1",
                       3, params, 0, &r);
    if (rc != 0) {
        return rc;
    }
    rc = PQntuples(r) == 1;
    PQclear(r);
    return rc;
}

static int pg_unlock(void *b, const char *name, const char *holder)
{
    if (!name || !holder) {
        return PX_EINVAL;
    }
    const char *params[2] = {name, holder};
    return pg_s_run(b, "unlock", "DELETE FROM locks WHERE name = $1 AND holder = $2", 2,
                    params);
}

/* ---- several hosts ------------------------------------------------------------------------- */

/* The lead of an ordered sink: the named lease "px_order:SINK", held by this host's id for the
 * store's lease. */
static int pg_lead(void *b, const char *sink)
{
    pg_store *p = b;
    if (!sink) {
        return PX_EINVAL;
    }
    size_t n = strlen(sink) + 10;
    char *name = px_xmalloc(n);
    snprintf(name, n, "px_order:%s", sink);
    int rc = pg_lock(p, name, p->host_id, p->lease_ms);
    free(name);
    return rc;
}

static int pg_leased(void *b)
{
    pg_store *p = b;
    pthread_mutex_lock(&p->mu);
    int64_t last = p->last_renew_ms;
    pthread_mutex_unlock(&p->mu);
    return (int64_t)pg_mono_ms() - last < (int64_t)p->lease_ms * 3 / 5;
}

static int pg_members(void *b, json_t **out)
{
    pg_store *p = b;
    if (!out) {
        return PX_EINVAL;
    }
    pg_barrier(p); /* an announcement queued before is written */
    PGresult *r = NULL;
    int rc = pg_s_exec(p, "members",
                       "SELECT host_id, version, config_hash, "
                       "(extract(epoch from started_at) * 1000)::bigint, "
                       "(extract(epoch from heartbeat_at) * 1000)::bigint, "
                       "heartbeat_at >= now() - lease_ms * interval '1 millisecond' AND "
                       "stopped_at IS NULL FROM hosts ORDER BY host_id",
                       0, NULL, 1, &r);
    if (rc != 0) {
        return rc;
    }
    json_t *arr = json_array();
    for (int i = 0; i < PQntuples(r); i++) {
        const char *id = px_pg_text(r, i, 0);
        json_array_append_new(
            arr, json_pack("{s:s, s:s, s:s, s:I, s:I, s:b, s:b}", "host_id", id, "version",
                           px_pg_text(r, i, 1), "config_hash", px_pg_text(r, i, 2), "started_at",
                           (json_int_t)px_pg_int(r, i, 3), "heartbeat_at",
                           (json_int_t)px_pg_int(r, i, 4), "alive", (int)px_pg_int(r, i, 5),
                           "self", strcmp(id, p->host_id) == 0));
    }
    PQclear(r);
    *out = arr;
    return 0;
}

static void pg_get_stats(void *b, px_store_stats *st)
{
    pg_store *p = b;
    pthread_mutex_lock(&p->mu);
    *st = p->st;
    st->writable = p->writable;
    st->queued = p->q_len;
    pthread_mutex_unlock(&p->mu);
}

static int pg_writable(void *b)
{
    pg_store *p = b;
    pthread_mutex_lock(&p->mu);
    int w = p->writable;
    pthread_mutex_unlock(&p->mu);
    return w;
}

/* ---- open and close -------------------------------------------------------------------------- */

static void pg_free(pg_store *p)
{
    PQfinish(p->wconn);
    PQfinish(p->sconn);
    for (size_t i = 0; i < sizeof(p->wbuf) / sizeof(p->wbuf[0]); i++) {
        px_pg_buf_free(&p->wbuf[i]);
    }
    pg_counts_free(&p->pending);
    pg_counts_free(&p->queued_rows);
    free(p->pq);
    pthread_cond_destroy(&p->cv_done);
    pthread_cond_destroy(&p->cv_work);
    pthread_mutex_destroy(&p->mu);
    px_pg_secrets_free(&p->secrets);
    free(p->url);
    free(p->where);
    free(p->host_id);
    free(p->version);
    free(p->config_hash);
    free(p);
}

static void pg_on_close(uv_handle_t *h)
{
    pg_store *p = h->data;
    if (--p->open_handles == 0) {
        pg_free(p);
    }
}

/* A clean stop: this host's row is marked stopped and its leads given up, so the other hosts
 * adopt its claims and take its ordered sinks at once. Skipped while the database is away (they
 * then wait for the lease). Writer stopped. */
static void pg_mark_stopped(pg_store *p)
{
    if (!p->writable || !p->wconn) {
        return;
    }
    const char *params[1] = {p->host_id};
    PGresult *r = PQexecParams(p->wconn, PG_SQL_STOPPED, 1, NULL, params, NULL, NULL, 0);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (ok) {
        r = PQexecParams(p->wconn, PG_SQL_UNLEAD, 1, NULL, params, NULL, NULL, 0);
        ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
    }
    if (!ok) {
        char msg[256];
        pg_errmsg(p, p->wconn, NULL, msg, sizeof(msg));
        PX_LOG_WARN(PG_LOG, "postgres: could not record this host's stop err=%s", msg);
    }
}

static void pg_close(void *b)
{
    pg_store *p = b;
    if (p->closing) {
        return;
    }
    p->closing = 1;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_signal(&p->cv_work);
    pthread_mutex_unlock(&p->mu);
    uv_thread_join(&p->thread);
    pg_run_callbacks(p);
    pg_mark_stopped(p);
    PX_LOG_INFO(PG_LOG, "postgres store closed commits=%llu ops=%llu elided=%llu",
                (unsigned long long)p->st.commits, (unsigned long long)p->st.rows_committed,
                (unsigned long long)p->st.elided);
    PQfinish(p->wconn);
    p->wconn = NULL;
    PQfinish(p->sconn);
    p->sconn = NULL;
    uv_close((uv_handle_t *)&p->async, pg_on_close);
    uv_close((uv_handle_t *)&p->kick, pg_on_close);
}

static const px_store_ops pg_ops = {
    .name = "postgres",
    .shared = 1,
    .close = pg_close,
    .put = pg_put,
    .dead_raw = pg_dead_raw,
    .mark_done = pg_mark_done,
    .mark_retry = pg_mark_retry,
    .mark_dead = pg_mark_dead,
    .note_crash = pg_note_crash,
    .claim = pg_claim,
    .pending = pg_pending,
    .pending_counts = pg_pending_counts,
    .dlq_list = pg_dlq_list,
    .dlq_show = pg_dlq_show,
    .dlq_count = pg_dlq_count,
    .dlq_replay = pg_dlq_replay,
    .dlq_purge = pg_dlq_purge,
    .kv_get = pg_kv_get,
    .kv_set = pg_kv_set,
    .get_stats = pg_get_stats,
    .writable = pg_writable,
    .adopt = pg_adopt,
    .leased = pg_leased,
    .members = pg_members,
    .announce = pg_announce,
    .kv_get_versioned = pg_kv_get_versioned,
    .kv_cas = pg_kv_cas,
    .lock = pg_lock,
    .unlock = pg_unlock,
    .lead = pg_lead,
    .claim_ordered = pg_claim_ordered,
};

/* Runs sql (no parameters, maybe several statements) on conn; on failure the reason in err. */
static int pg_exec_open(pg_store *p, PGconn *conn, const char *sql, char *err, size_t errlen)
{
    PGresult *r = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        char msg[256];
        pg_errmsg(p, conn, r, msg, sizeof(msg));
        snprintf(err, errlen, "postgres %s: %s", p->where, msg);
        PQclear(r);
        return -1;
    }
    PQclear(r);
    return 0;
}

/* Brings the schema to this build's version, under an advisory lock; refuses a newer one. */
static int pg_migrate(pg_store *p, char *err, size_t errlen)
{
    PGconn *c = p->sconn;
    if (pg_exec_open(p, c,
                     "BEGIN; SELECT pg_advisory_xact_lock(" PG_MIGRATE_LOCK ");"
                     "CREATE TABLE IF NOT EXISTS schema_version(version integer NOT NULL)",
                     err, errlen) < 0) {
        return -1;
    }
    PGresult *r = PQexec(c, "SELECT coalesce(max(version), 0) FROM schema_version");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        PQclear(r);
        pg_exec_open(p, c, "ROLLBACK", err, errlen);
        snprintf(err, errlen, "postgres %s: cannot read the schema version", p->where);
        return -1;
    }
    int version = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    if (version > PG_SCHEMA_VERSION) {
        PQclear(PQexec(c, "ROLLBACK"));
        snprintf(err, errlen,
                 "postgres %s: schema version %d is newer than this build's %d (upgrade plexus)",
                 p->where, version, PG_SCHEMA_VERSION);
        return -1;
    }
    for (int v = version; v < PG_SCHEMA_VERSION; v++) {
        if (pg_exec_open(p, c, pg_migrations[v], err, errlen) < 0) {
            PQclear(PQexec(c, "ROLLBACK"));
            return -1;
        }
    }
    if (version != PG_SCHEMA_VERSION) {
        char sql[96];
        snprintf(sql, sizeof(sql),
                 "DELETE FROM schema_version; INSERT INTO schema_version VALUES(%d)",
                 PG_SCHEMA_VERSION);
        if (pg_exec_open(p, c, sql, err, errlen) < 0) {
            PQclear(PQexec(c, "ROLLBACK"));
            return -1;
        }
        PX_LOG_INFO(PG_LOG, "postgres schema migrated url=%s from=%d to=%d", p->where, version,
                    PG_SCHEMA_VERSION);
    }
    return pg_exec_open(p, c, "COMMIT", err, errlen);
}

/* Records this host (started now, alive), counts its pending deliveries and takes its first ids. */
static int pg_register(pg_store *p, char *err, size_t errlen)
{
    char lease[16];
    snprintf(lease, sizeof(lease), "%u", p->lease_ms);
    const char *params[4] = {p->host_id, p->version, p->config_hash, lease};
    p->last_renew_ms = (int64_t)pg_mono_ms();
    PGresult *r = PQexecParams(p->sconn, PG_SQL_REGISTER, 4, NULL, params, NULL, NULL, 0);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    const char *own[1] = {p->host_id};
    if (ok) {
        r = PQexecParams(p->sconn,
                         "SELECT sink, count(*) FROM deliveries WHERE owner = $1 GROUP BY sink",
                         1, NULL, own, NULL, NULL, 0);
        ok = PQresultStatus(r) == PGRES_TUPLES_OK;
        for (int i = 0; ok && i < PQntuples(r); i++) {
            pg_counts_add(&p->pending, PQgetvalue(r, i, 0), strtoll(PQgetvalue(r, i, 1), NULL, 10));
        }
        PQclear(r);
    }
    if (ok) {
        ok = pg_fetch_blocks(p, p->sconn, PG_ID_LOW / PG_ID_BLOCK) == 0;
    }
    if (!ok) {
        char msg[256];
        pg_errmsg(p, p->sconn, NULL, msg, sizeof(msg));
        snprintf(err, errlen, "postgres %s: cannot register host %s: %s", p->where, p->host_id,
                 msg);
        return -1;
    }
    return 0;
}

static pg_store *pg_new(uv_loop_t *loop, const char *url, const px_store_options *opt)
{
    pg_store *p = px_xcalloc(1, sizeof(*p));
    p->loop = loop;
    p->url = px_xstrdup(url);
    px_pg_secrets_init(&p->secrets, url);
    char where[512];
    px_pg_scrub(&p->secrets, url, where, sizeof(where));
    p->where = px_xstrdup(where);
    p->host_id = px_xstrdup(opt && opt->host_id ? opt->host_id : "");
    p->version = px_xstrdup(opt && opt->version ? opt->version : "");
    p->config_hash = px_xstrdup(opt && opt->config_hash ? opt->config_hash : "");
    p->lease_ms = opt && opt->lease_ms ? opt->lease_ms : PG_DEFAULT_LEASE_MS;
    p->dedupe_window_ms = opt ? opt->dedupe_window_ms : 24ull * 3600 * 1000;
    p->max_queue = opt && opt->max_queue ? opt->max_queue : PG_DEFAULT_MAX_QUEUE;
    p->writable = 1;
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv_work, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&p->cv_done, NULL);
    p->base.ops = &pg_ops;
    p->base.impl = p;
    return p;
}

int px_store_open_pg(uv_loop_t *loop, const char *url, const px_store_options *opt,
                     px_store **out, char *err, size_t errlen)
{
    if (!url || !*url) {
        snprintf(err, errlen, "postgres: no URL");
        return PX_ESPOOL;
    }
    pg_store *p = pg_new(loop, url, opt);
    if (!*p->host_id) {
        snprintf(err, errlen, "postgres %s: a host id is needed to share the store", p->where);
        pg_free(p);
        return PX_ESPOOL;
    }
    char msg[256];
    p->sconn = px_pg_connect(url, PG_SYNC_TIMEOUT_MS, &p->secrets, msg, sizeof(msg));
    if (!p->sconn) {
        snprintf(err, errlen, "postgres %s: %s", p->where, msg);
        pg_free(p);
        return PX_ESPOOL;
    }
    if (pg_migrate(p, err, errlen) < 0 || pg_register(p, err, errlen) < 0) {
        pg_free(p);
        return PX_ESPOOL;
    }
    p->wconn = pg_w_connect(p, msg, sizeof(msg));
    if (!p->wconn) {
        snprintf(err, errlen, "postgres %s: %s", p->where, msg);
        pg_free(p);
        return PX_ESPOOL;
    }
    if (uv_async_init(loop, &p->async, pg_on_async) != 0) {
        snprintf(err, errlen, "postgres store: cannot create async handle");
        pg_free(p);
        return PX_ESPOOL;
    }
    p->async.data = p;
    uv_prepare_init(loop, &p->kick);
    p->kick.data = p;
    uv_prepare_start(&p->kick, pg_on_kick);
    uv_unref((uv_handle_t *)&p->kick);
    p->open_handles = 2;
    if (uv_thread_create(&p->thread, pg_writer_main, p) != 0) {
        snprintf(err, errlen, "postgres store: cannot start the writer thread");
        uv_close((uv_handle_t *)&p->async, pg_on_close);
        uv_close((uv_handle_t *)&p->kick, pg_on_close); /* frees p */
        return PX_ESPOOL;
    }
    PX_LOG_INFO(PG_LOG, "postgres store open url=%s host=%s lease_ms=%u", p->where, p->host_id,
                p->lease_ms);
    *out = &p->base;
    return 0;
}
