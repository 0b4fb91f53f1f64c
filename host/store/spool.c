/* The spool: SQLite outbox with one writer thread and group commit (see spool.h).
 * Threads: the loop thread queues operations under `mu`; the writer thread takes everything queued
 * (up to BATCH_MAX), runs it in one transaction on the write connection, then moves the finished
 * operations to the `done` list and wakes the loop with `async`, which runs the callbacks in queue
 * order. Reads use a read-only connection owned by the loop thread; WAL lets them run while the
 * writer commits. Pending deliveries live only on disk; the spool keeps a per-sink pending count
 * in memory (one entry per sink, not per row). */
#include "fsutil.h"
#include "clock.h"
#include "spool.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <sqlite3.h>
#include <zdict.h>
#include <zstd.h>

#include "config.h"
#include "err.h"
#include "keyset.h"
#include "log.h"
#include "mem.h"

#define BATCH_MAX 1024
#define DEFAULT_MAX_QUEUE 65536
#define MAX_QUEUE_BYTES (64u << 20) /* queued puts' copies, whatever max_queue says */
#define PROBE_INTERVAL_MS 500
#define PRUNE_INTERVAL_MS 60000
#define PRUNE_CHUNK 10000
#define DEFAULT_MERGE_AT 16384
/* zstd dictionary (spool.compress): made from the first DICT_SAMPLES payloads compressed */
#define DICT_SAMPLES 256
#define DICT_CAP (32 * 1024)
#define LOG_MOD "spool"

enum op_kind {
    OP_PUT = 1,
    OP_DEAD_RAW,
    OP_DONE,
    OP_RETRY,
    OP_DEAD,
    OP_REPLAY,
    OP_PURGE,
    OP_EXEC,
    OP_CRASH,
};

typedef struct op_row {
    const char *pipeline, *sink, *action, *params;
    size_t params_len;
    int64_t id;
    int elided; /* done before the writer took its put: never written (mu held to set) */
} op_row;

/* One queued operation. Puts and dead_raw copy everything into the same allocation as the op. */
typedef struct op {
    struct op *next;
    int kind;
    int status;   /* written by the writer */
    int finished; /* synchronous ops: set by the writer under mu */
    size_t bytes; /* size of the allocation (puts), for the queue's byte cap */
    px_spool_put_cb cb;
    void *arg;
    /* put / dead_raw */
    const char *ev_id, *type, *source, *dedupe_key, *payload, *meta, *hints;
    size_t payload_len;
    int64_t time_ms;
    op_row *rows;
    size_t nrows, nelided;
    const char *pipeline, *sink, *text; /* text: dead reason, retry error */
    /* marks */
    int64_t delivery_id;
    uint32_t attempts;
    int64_t next_at_ms;
    /* replay / purge / exec (synchronous: borrowed from the waiting caller) */
    const int64_t *ids;
    size_t nids;
    const char *filter_sink;
    int64_t before_ms;
    const char *sql;
    int64_t *new_ids; /* replay results, malloc'd by the writer, freed by the caller */
    char **new_sinks;
    size_t nnew, capnew;
    int64_t affected;
} op;

typedef struct sink_count {
    char *sink;
    int64_t n;
} sink_count;

typedef struct sink_counts {
    sink_count *v;
    size_t n, cap;
} sink_counts;

enum wstmt {
    W_DEDUPE_GET,
    W_RECENT_ADD,
    W_MERGE,
    W_RECENT_CLEAR,
    W_EVENT_INS,
    W_DELIV_INS,
    W_DONE_DEL,
    W_ATT_DEL,
    W_EVENT_UNREF,
    W_EVENT_DEL,
    W_EVENT_DEL_LAST,
    W_RETRY_UPD,
    W_ATT_INS,
    W_ATT_ADD,
    W_DEAD_FROM_DELIV,
    W_DEAD_INS,
    W_DEAD_GET,
    W_DEAD_DEL,
    W_HWM_SET,
    W_PRUNE,
    W_PROBE,
    W_CRASH_UPD,
    W_COUNT
};

static const char *const wsql[W_COUNT] = {
    [W_DEDUPE_GET] = "SELECT expires_at_ms FROM dedupe WHERE source=?1 AND key=?2",
    [W_RECENT_ADD] = "INSERT INTO dedupe_recent(source, key, expires_at_ms) VALUES(?1,?2,?3)",
    /* sorted, so each page of the dedupe index is written once per merge; a key set twice
     * (expired, then seen again) keeps its later expiry */
    [W_MERGE] = "INSERT OR REPLACE INTO dedupe(source, key, expires_at_ms) SELECT source, key, "
                "expires_at_ms FROM dedupe_recent WHERE expires_at_ms > ?1 "
                "ORDER BY source, key, seq",
    [W_RECENT_CLEAR] = "DELETE FROM dedupe_recent",
    [W_EVENT_INS] = "INSERT INTO events(id, type, source, time_ms, payload, meta, hints, refs, "
                    "codec) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9)",
    [W_DELIV_INS] = "INSERT INTO deliveries(id, event, pipeline, sink, action, params, attempts, "
                    "next_at_ms) VALUES(?1,?2,?3,?4,?5,?6,0,0)",
    [W_DONE_DEL] = "DELETE FROM deliveries WHERE id=?1 RETURNING event, sink",
    [W_ATT_DEL] = "DELETE FROM attempts WHERE delivery_id=?1",
    [W_EVENT_UNREF] = "UPDATE events SET refs=refs-1 WHERE eid=?1 RETURNING refs",
    [W_EVENT_DEL] = "DELETE FROM events WHERE eid=?1",
    [W_EVENT_DEL_LAST] = "DELETE FROM events WHERE eid=?1 AND refs<=1",
    [W_RETRY_UPD] = "UPDATE deliveries SET attempts=?2, next_at_ms=?3, last_error=?4 WHERE id=?1",
    [W_ATT_INS] = "INSERT OR REPLACE INTO attempts(delivery_id, attempt, at_ms, error) "
                  "VALUES(?1,?2,?3,?4)",
    [W_ATT_ADD] = "INSERT OR IGNORE INTO attempts(delivery_id, attempt, at_ms, error) "
                  "VALUES(?1,?2,?3,?4)",
    [W_DEAD_FROM_DELIV] = "INSERT INTO dead(id, delivery_id, event, pipeline, sink, action, "
                          "params, reason, attempts, died_at) SELECT id, id, event, pipeline, "
                          "sink, action, params, ?2, ?3, ?4 FROM deliveries WHERE id=?1",
    [W_DEAD_INS] = "INSERT INTO dead(id, delivery_id, event, pipeline, sink, action, params, "
                   "reason, attempts, died_at) VALUES(?6,0,?1,?2,?3,'','{}',?4,0,?5)",
    [W_DEAD_GET] = "SELECT delivery_id, event, pipeline, sink, action, params, died_at "
                   "FROM dead WHERE id=?1",
    [W_DEAD_DEL] = "DELETE FROM dead WHERE id=?1",
    [W_HWM_SET] = "INSERT OR REPLACE INTO meta(k, v) VALUES('last_delivery_id', ?1)",
    [W_PRUNE] = "DELETE FROM dedupe WHERE (source, key) IN (SELECT source, key FROM dedupe "
                "WHERE expires_at_ms <= ?1 LIMIT ?2)",
    [W_PROBE] = "INSERT OR REPLACE INTO meta(k, v) VALUES('probe', ?1)",
    [W_CRASH_UPD] = "UPDATE deliveries SET attempts=attempts+1, crashes=crashes+1, "
                    "last_error=?2 WHERE id=?1 RETURNING attempts, crashes",
};

struct px_spool {
    uv_loop_t *loop;
    uv_async_t async;
    uv_thread_t thread;
    char *path;
    sqlite3 *wdb; /* writer thread only (after open) */
    sqlite3 *rdb; /* loop thread only */
    sqlite3_stmt *rload; /* cached on rdb */
    sqlite3_stmt *wst[W_COUNT];
    uint64_t dedupe_window_ms;
    size_t max_queue;
    /* Dedupe keys (writer thread only). A new key is appended to dedupe_recent, in the same
     * transaction as its event, and held in `recent`, that table's index in memory; once
     * `merge_at` keys wait, they move in one sorted pass into dedupe, the table keyed by
     * (source, key) (merge_recent). A random key written straight into that big B-tree would
     * rewrite one of its pages per key and commit. */
    px_keyset *recent;
    size_t merge_at;

    pthread_mutex_t mu;
    pthread_cond_t cv_work; /* writer waits for work */
    pthread_cond_t cv_done; /* loop waits for synchronous ops / barriers */
    /* everything below is guarded by mu */
    op *q_head, *q_tail;    /* queued for the writer */
    size_t q_len, q_puts, q_bytes;
    op *retry_head, *retry_tail; /* marks that failed to commit */
    op *done_head, *done_tail;   /* finished, callbacks pending on the loop */
    uint64_t queued_seq, processed_seq;
    int64_t next_id;
    int64_t hwm_stored; /* writer thread only: meta's last_delivery_id, the ids reserved on disk */
    int writable;
    int stop;
    sink_counts pending; /* committed pending deliveries per sink */
    sink_counts queued_rows; /* deliveries of puts queued and not yet processed, per sink */
    /* Queued puts with rows, in queue (and so id) order: a delivery finished before the writer
     * takes its put is found here and never written (see px_spool_mark_done). A ring. */
    op **pq;
    size_t pq_head, pq_len, pq_cap;
    int writer_waiting; /* the writer sleeps on cv_work: enqueue must signal */
    px_spool_stats st;
    int closing; /* loop thread only */
    /* Queued ops wake the writer once per loop turn, just before the loop waits for I/O: what a
     * turn queues is committed together, and a delivery finished within the turn is elided. */
    uv_prepare_t kick;
    int kick_wanted;  /* loop thread only */
    int open_handles; /* async + kick, until both are closed */

    int wal_full; /* writer thread only: the WAL passed CHECKPOINT_BYTES at the last commit */
    int page_size; /* the database's, read at open (older files keep 4096) */
    /* payload compression (spool.compress): the writer's context and output buffer */
    int compress;
    ZSTD_CCtx *zc;
    char *zbuf;
    size_t zcap;
    /* the writer's dictionary (see make_dict): its row in dicts, or the samples it is made of */
    ZSTD_CDict *cdict;
    int64_t cdict_id;
    int dict_tried;
    char *samples;
    size_t samples_len, samples_cap, nsamples, sample_sizes[DICT_SAMPLES];
    /* the loop thread's: a compressed payload read back, valid until the next row, and the
     * dictionary of the last row that had one */
    ZSTD_DCtx *zd;
    char *rbuf;
    size_t rcap;
    ZSTD_DDict *ddict;
    int64_t ddict_id;
    /* The idle checkpoint runs on its own thread and connection, so truncating the WAL never
     * makes the writer wait (see checkpointer_main). */
    uv_thread_t ck_thread;
    sqlite3 *cdb;
    pthread_mutex_t ck_mu;
    pthread_cond_t ck_cv;
    int ck_stop;
    uint64_t ck_commits; /* commits so far (under ck_mu): none since the last look = idle */
};

static void pq_pop(px_spool *s, op *o);

/* The WAL's bound. SQLite rewinds the WAL to its start only when a write transaction begins
 * while every frame has been copied back into the database and no reader still uses the WAL;
 * the first commit after a rewind cuts the file back to PX_SPOOL_WAL_LIMIT_BYTES. A checkpoint
 * running beside the writer never gets there under a steady stream of commits: it is always a
 * few frames behind, and while it copies, a new transaction cannot rewind. So the writer copies
 * the WAL back itself once it holds CHECKPOINT_BYTES of frames (about 4 MiB), between
 * two batches; the file stays near 4 MiB plus one batch. A reader in the middle of a statement
 * can hold a checkpoint short of the end; reads are single short statements, so the next batch's
 * checkpoint finishes the job. Once the writer is idle, the checkpoint thread truncates the WAL
 * to nothing. */
#define CHECKPOINT_BYTES (4 << 20)
#define CHECKPOINT_EVERY_MS 1000 /* the checkpoint thread's look; no commit since = idle */

/* A new database's page size. Rows of a few KiB (an event's payload is stored inline up to a
 * page's size) share 16 KiB pages several to a page, where a 4 KiB page holds one 2 KiB event and
 * leaves the rest of the page empty; and a batch is written to the WAL in a quarter as many
 * frames. A database created before keeps its page size (it cannot change in WAL mode). */
#define NEW_PAGE_SIZE 16384
/* The writer's page cache: a batch's dirty pages (BATCH_MAX puts of a few KiB each, the pages
 * their deletes touch) fit, so a transaction is not spilled to the WAL before its commit. */
#define WRITER_CACHE_KIB 8192

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- per-sink pending counts ---------------------------------------------------------------- */

static void counts_add(sink_counts *c, const char *sink, int64_t d)
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

static void counts_clear(sink_counts *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->v[i].sink);
    }
    c->n = 0;
}

static void counts_free(sink_counts *c)
{
    counts_clear(c);
    free(c->v);
    c->v = NULL;
    c->cap = 0;
}

/* ---- schema --------------------------------------------------------------------------------- */

/* Each entry upgrades user_version i to i + 1. Append only; never edit a shipped step. Tables are
 * created IF NOT EXISTS so a file that already holds other modules' tables (kv) is fine. */
static const char *const migrations[] = {
    "CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS events(eid INTEGER PRIMARY KEY, id TEXT NOT NULL, "
    "  type TEXT NOT NULL, source TEXT NOT NULL, time_ms INTEGER NOT NULL, payload BLOB, "
    "  meta TEXT, hints TEXT, refs INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS deliveries(id INTEGER PRIMARY KEY, event INTEGER NOT NULL, "
    "  pipeline TEXT NOT NULL, sink TEXT NOT NULL, action TEXT NOT NULL, params TEXT NOT NULL, "
    "  attempts INTEGER NOT NULL DEFAULT 0, next_at_ms INTEGER NOT NULL DEFAULT 0, "
    "  last_error TEXT);"
    "CREATE INDEX IF NOT EXISTS deliveries_sink ON deliveries(sink, id);"
    "CREATE TABLE IF NOT EXISTS attempts(delivery_id INTEGER NOT NULL, attempt INTEGER NOT NULL, "
    "  at_ms INTEGER NOT NULL, error TEXT, PRIMARY KEY(delivery_id, attempt)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS dead(id INTEGER PRIMARY KEY, delivery_id INTEGER NOT NULL, "
    "  event INTEGER NOT NULL, pipeline TEXT NOT NULL, sink TEXT NOT NULL, "
    "  action TEXT NOT NULL, params TEXT NOT NULL, reason TEXT, "
    "  attempts INTEGER NOT NULL, died_at INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS dead_sink ON dead(sink, id);"
    "CREATE TABLE IF NOT EXISTS dedupe(source TEXT NOT NULL, key TEXT NOT NULL, "
    "  expires_at_ms INTEGER NOT NULL, PRIMARY KEY(source, key)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS dedupe_expires ON dedupe(expires_at_ms);",
    /* 2: crashes a delivery caused (crash marker), so a poison delivery is dead-lettered */
    "ALTER TABLE deliveries ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0;",
    /* 3: a dead letter's id is its delivery's id (raw ones take one from the same sequence), so
     * the id logged for a delivery is the one `plexus dlq` shows and none is given twice. Older
     * dead letters get their delivery's id (via negative ids: no clash midway), those without
     * one (raw) ids above every id given so far, and the sequence moves past them all. Listed by
     * time of death, hence the index. */
    "UPDATE dead SET id = -id;"
    "UPDATE OR IGNORE dead SET id = delivery_id WHERE delivery_id > 0;"
    "INSERT OR REPLACE INTO meta(k, v) SELECT 'last_delivery_id', max("
    "  coalesce((SELECT v FROM meta WHERE k = 'last_delivery_id'), 0),"
    "  coalesce((SELECT max(id) FROM deliveries), 0), coalesce((SELECT max(id) FROM dead), 0));"
    "UPDATE dead SET id = (SELECT v FROM meta WHERE k = 'last_delivery_id') - id WHERE id < 0;"
    "INSERT OR REPLACE INTO meta(k, v) SELECT 'last_delivery_id', max("
    "  (SELECT v FROM meta WHERE k = 'last_delivery_id'), coalesce((SELECT max(id) FROM dead), 0));"
    "CREATE INDEX IF NOT EXISTS dead_died ON dead(died_at, id);",
    /* 4: how an event's payload is stored: 0 as given, 1 a zstd frame of it (spool.compress);
     * rows of both kinds live side by side, whatever the setting is now */
    "ALTER TABLE events ADD COLUMN codec INTEGER NOT NULL DEFAULT 0;",
    /* 5: dedupe keys not yet merged into dedupe, in the order they came (see merge_recent) */
    "CREATE TABLE IF NOT EXISTS dedupe_recent(seq INTEGER PRIMARY KEY, source TEXT NOT NULL, "
    "  key TEXT NOT NULL, expires_at_ms INTEGER NOT NULL);",
    /* 6: zstd dictionaries: an event whose codec is 1 + n was compressed with dictionary n */
    "CREATE TABLE IF NOT EXISTS dicts(id INTEGER PRIMARY KEY, dict BLOB NOT NULL);",
};
#define SCHEMA_VERSION ((int)(sizeof(migrations) / sizeof(migrations[0])))

static int exec_sql(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        if (err) {
            snprintf(err, errlen, "sqlite: %s", msg ? msg : sqlite3_errstr(rc));
        }
        sqlite3_free(msg);
        return rc;
    }
    return SQLITE_OK;
}

static int64_t query_int(sqlite3 *db, const char *sql, int64_t dflt)
{
    sqlite3_stmt *st = NULL;
    int64_t v = dflt;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW &&
        sqlite3_column_type(st, 0) != SQLITE_NULL) {
        v = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    return v;
}

static int migrate(sqlite3 *db, const char *path, char *err, size_t errlen)
{
    if (exec_sql(db, "BEGIN IMMEDIATE", err, errlen) != SQLITE_OK) {
        return -1;
    }
    int version = (int)query_int(db, "PRAGMA user_version", 0);
    if (version > SCHEMA_VERSION) {
        snprintf(err, errlen, "%s: schema version %d is newer than this build's %d", path, version,
                 SCHEMA_VERSION);
        goto fail;
    }
    for (int v = version; v < SCHEMA_VERSION; v++) {
        if (exec_sql(db, migrations[v], err, errlen) != SQLITE_OK) {
            goto fail;
        }
    }
    if (version != SCHEMA_VERSION) {
        char sql[64];
        snprintf(sql, sizeof(sql), "PRAGMA user_version=%d", SCHEMA_VERSION);
        if (exec_sql(db, sql, err, errlen) != SQLITE_OK) {
            goto fail;
        }
    }
    if (exec_sql(db, "COMMIT", err, errlen) != SQLITE_OK) {
        goto fail;
    }
    return 0;
fail:
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

/* ---- the writer ----------------------------------------------------------------------------- */

/* Errors that say "the database cannot take writes now" (as opposed to one bad operation). */
static int is_transient(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_NOMEM:
    case SQLITE_READONLY:
    case SQLITE_CANTOPEN:
    case SQLITE_PROTOCOL:
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
    case SQLITE_INTERRUPT:
    case SQLITE_ABORT:
        return 1;
    default:
        return 0;
    }
}

static sqlite3_stmt *wstmt(px_spool *s, int which)
{
    sqlite3_stmt *st = s->wst[which];
    if (!st) {
        if (sqlite3_prepare_v3(s->wdb, wsql[which], -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) !=
            SQLITE_OK) {
            PX_LOG_ERR(LOG_MOD, "prepare failed stmt=%d err=%s", which, sqlite3_errmsg(s->wdb));
            return NULL;
        }
        s->wst[which] = st;
    }
    return st;
}

static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
    sqlite3_bind_text(st, i, v ? v : "", -1, SQLITE_STATIC);
}

static void bind_text_or_null(sqlite3_stmt *st, int i, const char *v)
{
    if (v) {
        sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
    } else {
        sqlite3_bind_null(st, i);
    }
}

/* Steps a statement that returns no rows (or whose rows are ignored) and resets it. */
static int step_done(sqlite3_stmt *st)
{
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

#define PREP(var, which)                                                                      \
    sqlite3_stmt *var = wstmt(s, (which));                                                    \
    if (!var) {                                                                               \
        return SQLITE_ERROR;                                                                  \
    }

#define CHECK(expr)                                                                           \
    do {                                                                                      \
        int rc_ = (expr);                                                                     \
        if (rc_ != SQLITE_OK) {                                                               \
            return rc_;                                                                       \
        }                                                                                     \
    } while (0)

/* Drops one reference of event eid, deleting the event when nothing refers to it any more. */
static int event_unref(px_spool *s, int64_t eid)
{
    /* most events have one delivery: try the delete first, one statement instead of two */
    PREP(last, W_EVENT_DEL_LAST);
    sqlite3_bind_int64(last, 1, eid);
    CHECK(step_done(last));
    if (sqlite3_changes(s->wdb) > 0) {
        return SQLITE_OK;
    }
    PREP(up, W_EVENT_UNREF);
    sqlite3_bind_int64(up, 1, eid);
    int64_t refs = 1;
    int rc = sqlite3_step(up);
    if (rc == SQLITE_ROW) {
        refs = sqlite3_column_int64(up, 0);
    }
    CHECK(step_done(up));
    if (refs <= 0) {
        PREP(del, W_EVENT_DEL);
        sqlite3_bind_int64(del, 1, eid);
        CHECK(step_done(del));
    }
    return SQLITE_OK;
}

/* Payloads shorter than this are stored as given: a zstd frame's own bytes would eat the gain. */
#define COMPRESS_MIN 128
/* zstd's level: 1 is its fastest; JSON text still shrinks to a third or less. */
#define COMPRESS_LEVEL 1

/* Keeps a copy of payload p (n bytes) for the dictionary, until DICT_SAMPLES are kept. */
static void keep_sample(px_spool *s, const char *p, size_t n)
{
    if (s->dict_tried || s->nsamples == DICT_SAMPLES) {
        return;
    }
    if (s->samples_len + n > s->samples_cap) {
        s->samples_cap = 2 * (s->samples_len + n);
        s->samples = px_xrealloc(s->samples, s->samples_cap);
    }
    memcpy(s->samples + s->samples_len, p, n);
    s->samples_len += n;
    s->sample_sizes[s->nsamples++] = n;
}

/* The payload of o as stored: a zstd frame in s->zbuf when compression is on and makes it
 * smaller (*codec 1, or 1 + the dictionary's id when there is one), else the payload itself
 * (*codec = 0). Writer thread. */
static const char *stored_payload(px_spool *s, const op *o, size_t *len, int *codec)
{
    const char *p = o->payload ? o->payload : "";
    *len = o->payload_len;
    *codec = 0;
    if (!s->compress || o->payload_len < COMPRESS_MIN) {
        return p;
    }
    size_t bound = ZSTD_compressBound(o->payload_len);
    if (bound > s->zcap) {
        free(s->zbuf);
        s->zcap = bound;
        s->zbuf = px_xmalloc(bound);
    }
    if (!s->zc) {
        s->zc = ZSTD_createCCtx();
    }
    size_t n = 0;
    if (s->zc && s->cdict) {
        n = ZSTD_compress_usingCDict(s->zc, s->zbuf, s->zcap, p, o->payload_len, s->cdict);
    } else if (s->zc) {
        keep_sample(s, p, o->payload_len);
        n = ZSTD_compressCCtx(s->zc, s->zbuf, s->zcap, p, o->payload_len, COMPRESS_LEVEL);
    }
    if (!s->zc || ZSTD_isError(n) || n >= o->payload_len) {
        return p;
    }
    *len = n;
    *codec = s->cdict ? (int)(1 + s->cdict_id) : 1;
    return s->zbuf;
}

/* Small JSON payloads compress poorly alone: a dictionary holds what they share (keys, common
 * values). Once DICT_SAMPLES payloads are kept, the writer trains one from them (or, when zstd
 * finds them too few or too alike to train on, uses their last DICT_CAP bytes as it is), stores
 * it in dicts in a transaction of its own, and compresses every later payload with it. Made once
 * per spool file: a reopen takes the newest one back (load_dict). On failure, payloads stay
 * compressed without a dictionary. Writer thread, outside a batch. */
static void make_dict(px_spool *s)
{
    s->dict_tried = 1;
    char *dict = px_xmalloc(DICT_CAP);
    size_t n = ZDICT_trainFromBuffer(dict, DICT_CAP, s->samples, s->sample_sizes,
                                     (unsigned)s->nsamples);
    if (ZDICT_isError(n)) {
        n = s->samples_len < DICT_CAP ? s->samples_len : DICT_CAP;
        memcpy(dict, s->samples + s->samples_len - n, n);
    }
    free(s->samples);
    s->samples = NULL;
    s->samples_len = s->samples_cap = 0;
    sqlite3_stmt *st = NULL;
    int rc = exec_sql(s->wdb, "BEGIN IMMEDIATE", NULL, 0);
    if (rc == SQLITE_OK) {
        rc = sqlite3_prepare_v2(s->wdb, "INSERT INTO dicts(dict) VALUES(?1)", -1, &st, NULL);
    }
    if (rc == SQLITE_OK) {
        sqlite3_bind_blob64(st, 1, dict, n, SQLITE_STATIC);
        rc = step_done(st);
    }
    int64_t id = sqlite3_last_insert_rowid(s->wdb);
    sqlite3_finalize(st);
    if (rc == SQLITE_OK) {
        rc = exec_sql(s->wdb, "COMMIT", NULL, 0);
    }
    if (rc == SQLITE_OK) {
        s->cdict = ZSTD_createCDict(dict, n, COMPRESS_LEVEL);
        s->cdict_id = id;
        PX_LOG_INFO(LOG_MOD, "compression dictionary made id=%lld bytes=%zu samples=%zu",
                    (long long)id, n, s->nsamples);
    } else {
        PX_LOG_WARN(LOG_MOD, "compression dictionary not stored err=%s", sqlite3_errstr(rc));
        if (!sqlite3_get_autocommit(s->wdb)) {
            sqlite3_exec(s->wdb, "ROLLBACK", NULL, NULL, NULL);
        }
    }
    free(dict);
}

static int insert_event(px_spool *s, op *o, int refs, int64_t *eid)
{
    PREP(st, W_EVENT_INS);
    size_t plen;
    int codec;
    const char *payload = stored_payload(s, o, &plen, &codec);
    bind_text(st, 1, o->ev_id);
    bind_text(st, 2, o->type);
    bind_text(st, 3, o->source);
    sqlite3_bind_int64(st, 4, o->time_ms);
    sqlite3_bind_blob64(st, 5, payload, plen, SQLITE_STATIC);
    bind_text_or_null(st, 6, o->meta);
    bind_text_or_null(st, 7, o->hints);
    sqlite3_bind_int(st, 8, refs);
    sqlite3_bind_int(st, 9, codec);
    CHECK(step_done(st));
    *eid = sqlite3_last_insert_rowid(s->wdb);
    return SQLITE_OK;
}

static int run_put(px_spool *s, op *o, sink_counts *delta, int64_t *hwm)
{
    int64_t now = px_now_ms();
    if (o->dedupe_key && s->dedupe_window_ms > 0) {
        int64_t expires = 0;
        if (!px_keyset_get(s->recent, o->source, o->dedupe_key, &expires)) {
            PREP(get, W_DEDUPE_GET);
            bind_text(get, 1, o->source);
            bind_text(get, 2, o->dedupe_key);
            if (sqlite3_step(get) == SQLITE_ROW) {
                expires = sqlite3_column_int64(get, 0);
            }
            CHECK(step_done(get));
        }
        if (expires > now) {
            o->status = PX_SPOOL_DUPLICATE;
            return SQLITE_OK;
        }
        PREP(add, W_RECENT_ADD);
        bind_text(add, 1, o->source);
        bind_text(add, 2, o->dedupe_key);
        sqlite3_bind_int64(add, 3, now + (int64_t)s->dedupe_window_ms);
        CHECK(step_done(add));
        px_keyset_set(s->recent, o->source, o->dedupe_key, now + (int64_t)s->dedupe_window_ms);
    }
    o->status = PX_SPOOL_STORED;
    for (size_t i = 0; i < o->nrows; i++) {
        if (o->rows[i].id > *hwm) {
            *hwm = o->rows[i].id; /* ids stay unique across restarts, elided ones too */
        }
    }
    if (o->nrows == o->nelided) {
        return SQLITE_OK; /* nothing left to write but the dedupe key */
    }
    int64_t eid;
    CHECK(insert_event(s, o, (int)(o->nrows - o->nelided), &eid));
    PREP(ins, W_DELIV_INS);
    for (size_t i = 0; i < o->nrows; i++) {
        op_row *r = &o->rows[i];
        if (r->elided) {
            continue;
        }
        sqlite3_bind_int64(ins, 1, r->id);
        sqlite3_bind_int64(ins, 2, eid);
        bind_text(ins, 3, r->pipeline);
        bind_text(ins, 4, r->sink);
        bind_text(ins, 5, r->action);
        sqlite3_bind_text(ins, 6, r->params, (int)r->params_len, SQLITE_STATIC);
        CHECK(step_done(ins));
        counts_add(delta, r->sink, 1);
    }
    return SQLITE_OK;
}

static int run_dead_raw(px_spool *s, op *o, int64_t *hwm)
{
    int64_t eid;
    CHECK(insert_event(s, o, 1, &eid));
    PREP(st, W_DEAD_INS);
    sqlite3_bind_int64(st, 1, eid);
    sqlite3_bind_int64(st, 6, o->delivery_id);
    if (o->delivery_id > *hwm) {
        *hwm = o->delivery_id; /* like a delivery's: never given again */
    }
    bind_text(st, 2, o->pipeline);
    bind_text(st, 3, o->sink);
    bind_text(st, 4, o->text);
    sqlite3_bind_int64(st, 5, px_now_ms());
    CHECK(step_done(st));
    o->status = PX_SPOOL_STORED;
    return SQLITE_OK;
}

static int delete_attempts(px_spool *s, int64_t delivery_id)
{
    PREP(st, W_ATT_DEL);
    sqlite3_bind_int64(st, 1, delivery_id);
    return step_done(st);
}

static int add_attempt(px_spool *s, int64_t delivery_id, uint32_t attempt, const char *error)
{
    PREP(st, W_ATT_INS);
    sqlite3_bind_int64(st, 1, delivery_id);
    sqlite3_bind_int64(st, 2, attempt);
    sqlite3_bind_int64(st, 3, px_now_ms());
    bind_text_or_null(st, 4, error);
    return step_done(st);
}

/* Deletes delivery id; *found says whether it existed, *eid its event. */
static int delete_delivery(px_spool *s, int64_t id, sink_counts *delta, int *found, int64_t *eid)
{
    PREP(del, W_DONE_DEL);
    sqlite3_bind_int64(del, 1, id);
    *found = 0;
    int rc = sqlite3_step(del);
    if (rc == SQLITE_ROW) {
        *found = 1;
        *eid = sqlite3_column_int64(del, 0);
        counts_add(delta, (const char *)sqlite3_column_text(del, 1), -1);
    }
    return step_done(del);
}

static int run_done(px_spool *s, op *o, sink_counts *delta)
{
    int found;
    int64_t eid = 0;
    CHECK(delete_delivery(s, o->delivery_id, delta, &found, &eid));
    if (!found) {
        return SQLITE_OK;
    }
    if (o->attempts != 1) { /* a first attempt that succeeded has no history */
        CHECK(delete_attempts(s, o->delivery_id));
    }
    return event_unref(s, eid);
}

static int run_retry(px_spool *s, op *o)
{
    PREP(up, W_RETRY_UPD);
    sqlite3_bind_int64(up, 1, o->delivery_id);
    sqlite3_bind_int64(up, 2, o->attempts);
    sqlite3_bind_int64(up, 3, o->next_at_ms);
    bind_text_or_null(up, 4, o->text);
    CHECK(step_done(up));
    if (sqlite3_changes(s->wdb) == 0) {
        return SQLITE_OK;
    }
    return add_attempt(s, o->delivery_id, o->attempts, o->text);
}

static int run_dead(px_spool *s, op *o, sink_counts *delta)
{
    PREP(ins, W_DEAD_FROM_DELIV);
    sqlite3_bind_int64(ins, 1, o->delivery_id);
    bind_text(ins, 2, o->text);
    sqlite3_bind_int64(ins, 3, o->attempts);
    sqlite3_bind_int64(ins, 4, px_now_ms());
    CHECK(step_done(ins));
    if (sqlite3_changes(s->wdb) == 0) {
        return SQLITE_OK;
    }
    int found;
    int64_t eid = 0;
    CHECK(delete_delivery(s, o->delivery_id, delta, &found, &eid));
    if (o->attempts > 0) {
        /* the final attempt, unless mark_retry already recorded it */
        PREP(st, W_ATT_ADD);
        sqlite3_bind_int64(st, 1, o->delivery_id);
        sqlite3_bind_int64(st, 2, o->attempts);
        sqlite3_bind_int64(st, 3, px_now_ms());
        bind_text_or_null(st, 4, o->text);
        CHECK(step_done(st));
    }
    return SQLITE_OK;
}

/* A delivery crashed the process: one more attempt and crash; dead letter at max_crashes
 * (o->attempts carries the limit). o->status: the crash count, or PX_ENOENT. */
static int run_crash(px_spool *s, op *o, sink_counts *delta)
{
    PREP(up, W_CRASH_UPD);
    sqlite3_bind_int64(up, 1, o->delivery_id);
    bind_text(up, 2, o->text);
    int64_t attempts = 0, crashes = 0;
    int rc = sqlite3_step(up);
    int found = rc == SQLITE_ROW;
    if (found) {
        attempts = sqlite3_column_int64(up, 0);
        crashes = sqlite3_column_int64(up, 1);
    }
    CHECK(step_done(up));
    if (!found) {
        o->status = PX_ENOENT;
        return SQLITE_OK;
    }
    CHECK(add_attempt(s, o->delivery_id, (uint32_t)attempts, o->text));
    o->status = (int)crashes;
    if (crashes < (int64_t)o->attempts) {
        return SQLITE_OK;
    }
    char reason[512];
    snprintf(reason, sizeof(reason), "crashed the host %lld times; last: %s", (long long)crashes,
             o->text);
    op dead;
    memset(&dead, 0, sizeof(dead));
    dead.kind = OP_DEAD;
    dead.delivery_id = o->delivery_id;
    dead.attempts = (uint32_t)attempts;
    dead.text = reason;
    return run_dead(s, &dead, delta);
}

/* Handles one dead letter for replay (replay != 0) or purge. */
static int dlq_one(px_spool *s, op *o, int64_t dead_id, int replay, sink_counts *delta,
                   int64_t *hwm)
{
    PREP(get, W_DEAD_GET);
    sqlite3_bind_int64(get, 1, dead_id);
    int rc = sqlite3_step(get);
    if (rc != SQLITE_ROW) {
        return step_done(get);
    }
    int64_t delivery_id = sqlite3_column_int64(get, 0);
    int64_t eid = sqlite3_column_int64(get, 1);
    const char *sink = (const char *)sqlite3_column_text(get, 3);
    int64_t died_at = sqlite3_column_int64(get, 6);
    int skip = (o->filter_sink && strcmp(sink, o->filter_sink) != 0) ||
               (replay && sink[0] == '\0') ||
               (!replay && o->before_ms > 0 && died_at >= o->before_ms);
    if (skip) {
        return step_done(get);
    }
    if (replay) {
        pthread_mutex_lock(&s->mu);
        int64_t id = s->next_id++;
        pthread_mutex_unlock(&s->mu);
        sqlite3_stmt *ins = wstmt(s, W_DELIV_INS);
        if (!ins) {
            sqlite3_reset(get);
            return SQLITE_ERROR;
        }
        sqlite3_bind_int64(ins, 1, id);
        sqlite3_bind_int64(ins, 2, eid);
        sqlite3_bind_value(ins, 3, sqlite3_column_value(get, 2));
        sqlite3_bind_value(ins, 4, sqlite3_column_value(get, 3));
        sqlite3_bind_value(ins, 5, sqlite3_column_value(get, 4));
        sqlite3_bind_value(ins, 6, sqlite3_column_value(get, 5));
        rc = step_done(ins);
        if (rc != SQLITE_OK) {
            sqlite3_reset(get);
            return rc;
        }
        counts_add(delta, sink, 1);
        if (o->nnew == o->capnew) {
            o->capnew = o->capnew ? o->capnew * 2 : 16;
            o->new_ids = px_xrealloc(o->new_ids, o->capnew * sizeof(*o->new_ids));
            o->new_sinks = px_xrealloc(o->new_sinks, o->capnew * sizeof(*o->new_sinks));
        }
        o->new_ids[o->nnew] = id;
        o->new_sinks[o->nnew] = px_xstrdup(sink);
        o->nnew++;
        if (id > *hwm) {
            *hwm = id;
        }
    }
    CHECK(step_done(get));
    if (delivery_id > 0) {
        CHECK(delete_attempts(s, delivery_id));
    }
    PREP(del, W_DEAD_DEL);
    sqlite3_bind_int64(del, 1, dead_id);
    CHECK(step_done(del));
    if (!replay) {
        CHECK(event_unref(s, eid));
    }
    o->affected++;
    return SQLITE_OK;
}

static int run_dlq(px_spool *s, op *o, int replay, sink_counts *delta, int64_t *hwm)
{
    o->affected = 0;
    if (o->ids && o->nids > 0) {
        for (size_t i = 0; i < o->nids; i++) {
            CHECK(dlq_one(s, o, o->ids[i], replay, delta, hwm));
        }
        return SQLITE_OK;
    }
    /* all matching: walk the ids in chunks so the scan never runs over rows being deleted */
    int64_t after = 0;
    for (;;) {
        int64_t chunk[256];
        size_t n = 0;
        sqlite3_stmt *q = NULL;
        int rc = sqlite3_prepare_v2(s->wdb,
                                    o->filter_sink
                                        ? "SELECT id FROM dead WHERE sink=?2 AND id>?1 "
                                          "ORDER BY id LIMIT 256"
                                        : "SELECT id FROM dead WHERE id>?1 ORDER BY id LIMIT 256",
                                    -1, &q, NULL);
        if (rc != SQLITE_OK) {
            return rc;
        }
        sqlite3_bind_int64(q, 1, after);
        if (o->filter_sink) {
            sqlite3_bind_text(q, 2, o->filter_sink, -1, SQLITE_STATIC);
        }
        while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
            chunk[n++] = sqlite3_column_int64(q, 0);
        }
        sqlite3_finalize(q);
        if (rc != SQLITE_DONE) {
            return rc;
        }
        for (size_t i = 0; i < n; i++) {
            CHECK(dlq_one(s, o, chunk[i], replay, delta, hwm));
        }
        if (n < 256) {
            return SQLITE_OK;
        }
        after = chunk[n - 1];
    }
}

static int run_op(px_spool *s, op *o, sink_counts *delta, int64_t *hwm)
{
    switch (o->kind) {
    case -OP_PUT:
    case -OP_DEAD_RAW:
    case -OP_DONE:
    case -OP_RETRY:
    case -OP_DEAD:
    case -OP_REPLAY:
    case -OP_PURGE:
    case -OP_CRASH: return SQLITE_OK; /* failed alone earlier: skipped */
    case OP_PUT: return run_put(s, o, delta, hwm);
    case OP_DEAD_RAW: return run_dead_raw(s, o, hwm);
    case OP_DONE: return run_done(s, o, delta);
    case OP_RETRY: return run_retry(s, o);
    case OP_DEAD: return run_dead(s, o, delta);
    case OP_REPLAY: return run_dlq(s, o, 1, delta, hwm);
    case OP_PURGE: return run_dlq(s, o, 0, delta, hwm);
    case OP_CRASH: return run_crash(s, o, delta);
    default: return SQLITE_MISUSE;
    }
}

static void reset_results(op *o)
{
    for (size_t i = 0; i < o->nnew; i++) {
        free(o->new_sinks[i]);
    }
    o->nnew = 0;
    o->affected = 0;
}

/* Delivery ids are reserved on disk this many at a time (meta's last_delivery_id is the highest
 * reserved, and a reopen starts above it), so ids stay unique across restarts while a commit
 * whose deliveries were all done before it (nothing else to write) writes no page at all. */
#define ID_RESERVE 65536

/* 1 when ops [first, end) leave nothing to write: puts whose deliveries were all done before the
 * writer took them, with no dedupe key to remember and ids already reserved on disk. */
static int writes_nothing(const px_spool *s, const op *first, const op *end)
{
    for (const op *o = first; o != end; o = o->next) {
        if (o->kind != OP_PUT || o->nelided != o->nrows ||
            (o->dedupe_key && s->dedupe_window_ms > 0)) {
            return 0;
        }
        for (size_t i = 0; i < o->nrows; i++) {
            if (o->rows[i].id > s->hwm_stored) {
                return 0;
            }
        }
    }
    return 1;
}

/* Runs ops [first, end) in one transaction (none when they write nothing; *wrote says which).
 * Returns SQLITE_OK when committed; otherwise rolled back, with *bad the op that failed (NULL when
 * BEGIN/COMMIT failed). */
static int run_txn(px_spool *s, op *first, op *end, sink_counts *delta, op **bad, int *wrote)
{
    int64_t hwm = 0;
    *bad = NULL;
    *wrote = 0;
    counts_clear(delta);
    if (writes_nothing(s, first, end)) {
        for (op *o = first; o != end; o = o->next) {
            o->status = PX_SPOOL_STORED;
        }
        return SQLITE_OK;
    }
    int rc = exec_sql(s->wdb, "BEGIN IMMEDIATE", NULL, 0);
    if (rc != SQLITE_OK) {
        return rc;
    }
    for (op *o = first; o != end; o = o->next) {
        rc = run_op(s, o, delta, &hwm);
        if (rc != SQLITE_OK) {
            *bad = o;
            goto fail;
        }
    }
    int64_t reserve = 0;
    if (hwm > s->hwm_stored) {
        reserve = hwm + ID_RESERVE;
        sqlite3_stmt *st = wstmt(s, W_HWM_SET);
        rc = st ? SQLITE_OK : SQLITE_ERROR;
        if (st) {
            sqlite3_bind_int64(st, 1, reserve);
            rc = step_done(st);
        }
        if (rc != SQLITE_OK) {
            goto fail;
        }
    }
    rc = exec_sql(s->wdb, "COMMIT", NULL, 0);
    if (rc != SQLITE_OK) {
        goto fail;
    }
    px_keyset_commit(s->recent);
    *wrote = 1;
    if (reserve > 0) {
        s->hwm_stored = reserve;
    }
    return SQLITE_OK;
fail:
    if (!sqlite3_get_autocommit(s->wdb)) {
        sqlite3_exec(s->wdb, "ROLLBACK", NULL, NULL, NULL);
    }
    px_keyset_rollback(s->recent);
    for (op *o = first; o != end; o = o->next) {
        reset_results(o);
    }
    counts_clear(delta);
    return rc;
}

static int is_mark(const op *o)
{
    return o->kind == OP_DONE || o->kind == OP_RETRY || o->kind == OP_DEAD;
}

/* Appends o to the list (head, tail). mu held or list private. */
static void list_push(op **head, op **tail, op *o)
{
    o->next = NULL;
    if (*tail) {
        (*tail)->next = o;
    } else {
        *head = o;
    }
    *tail = o;
}

/* Hands a finished op back: synchronous ops wake their caller, others go to the done list (marks
 * carry no callback and are freed there too). mu held. */
static void finish_op(px_spool *s, op *o)
{
    if (o->kind == OP_REPLAY || o->kind == OP_PURGE || o->kind == OP_EXEC ||
        o->kind == OP_CRASH) {
        o->finished = 1;
        return;
    }
    list_push(&s->done_head, &s->done_tail, o);
}

/* Writer side: commits the batch (a private list). On a transient failure the whole batch fails:
 * puts get PX_EBUSY, marks are kept for a later try (dropped only when closing), the spool turns
 * unwritable. On an error of one operation, the batch is re-run without it. */
static void process_batch(px_spool *s, op *batch, size_t nops, sink_counts *delta)
{
    struct timespec ta, tb;
    clock_gettime(CLOCK_MONOTONIC, &ta);
    op *bad = NULL;
    int wrote;
    int rc = run_txn(s, batch, NULL, delta, &bad, &wrote);
    /* a bad operation (constraint, too big...) fails alone and the rest is run again; each round
     * takes one operation out, so this ends */
    while (rc != SQLITE_OK && !is_transient(rc) && bad) {
        PX_LOG_ERR(LOG_MOD, "operation failed kind=%d err=%s", bad->kind, sqlite3_errstr(rc));
        bad->status = PX_ESPOOL;
        bad->kind = -bad->kind; /* skipped by run_op */
        rc = run_txn(s, batch, NULL, delta, &bad, &wrote);
    }
    clock_gettime(CLOCK_MONOTONIC, &tb);
    double ms = (double)(tb.tv_sec - ta.tv_sec) * 1e3 + (double)(tb.tv_nsec - ta.tv_nsec) / 1e6;

    pthread_mutex_lock(&s->mu);
    if (rc == SQLITE_OK) {
        if (!s->writable) {
            PX_LOG_INFO(LOG_MOD, "spool writable again");
        }
        s->writable = 1;
        for (size_t i = 0; i < delta->n; i++) {
            counts_add(&s->pending, delta->v[i].sink, delta->v[i].n);
        }
        s->st.commits += (uint64_t)wrote; /* a batch that wrote nothing committed nothing */
        s->st.rows_committed += nops;
        s->st.last_batch = nops;
        if (nops > s->st.max_batch) {
            s->st.max_batch = nops;
        }
        s->st.commit_ms_last = ms;
        if (ms > s->st.commit_ms_max) {
            s->st.commit_ms_max = ms;
        }
    } else {
        if (s->writable) {
            PX_LOG_WARN(LOG_MOD, "spool unwritable err=%s ops=%zu", sqlite3_errstr(rc), nops);
        }
        s->writable = 0;
        s->st.write_errors++;
    }
    op *next;
    for (op *o = batch; o; o = next) {
        next = o->next;
        if (o->kind == OP_PUT || o->kind == -OP_PUT) {
            /* processed (committed, duplicate or failed): no longer queued */
            for (size_t i = 0; i < o->nrows; i++) {
                if (!o->rows[i].elided) {
                    counts_add(&s->queued_rows, o->rows[i].sink, -1);
                }
            }
        }
        if (o->kind < 0) {
            o->kind = -o->kind;
            if (is_mark(o)) {
                free(o);
            } else {
                finish_op(s, o);
            }
            continue;
        }
        if (rc == SQLITE_OK) {
            if (o->kind == OP_PUT && o->status == PX_SPOOL_DUPLICATE) {
                s->st.duplicates++;
            }
            if (o->kind == OP_REPLAY || o->kind == OP_PURGE) {
                o->status = 0;
            }
            finish_op(s, o);
        } else if (is_mark(o) && !s->stop) {
            list_push(&s->retry_head, &s->retry_tail, o);
        } else if (is_mark(o)) {
            PX_LOG_WARN(LOG_MOD, "delivery update lost at close id=%lld (it will be redelivered)",
                        (long long)o->delivery_id);
            free(o);
        } else {
            o->status = PX_EBUSY;
            if (o->kind == OP_PUT || o->kind == OP_DEAD_RAW) {
                s->st.busy_refusals++;
            }
            finish_op(s, o);
        }
    }
    pthread_cond_broadcast(&s->cv_done);
    pthread_mutex_unlock(&s->mu);
    uv_async_send(&s->async);
}

static void prune(px_spool *s);

static void run_exec(px_spool *s, op *o)
{
    char *msg = NULL;
    int rc = SQLITE_OK;
    if (o->sql) {
        rc = sqlite3_exec(s->wdb, o->sql, NULL, NULL, &msg);
    } else {
        prune(s);
    }
    if (rc != SQLITE_OK) {
        PX_LOG_ERR(LOG_MOD, "exec failed err=%s", msg ? msg : sqlite3_errstr(rc));
    }
    sqlite3_free(msg);
    pthread_mutex_lock(&s->mu);
    o->status = rc == SQLITE_OK ? 0 : PX_ESPOOL;
    o->finished = 1;
    pthread_cond_broadcast(&s->cv_done);
    pthread_mutex_unlock(&s->mu);
}

/* A tiny write: does the database take writes again? */
static int probe(px_spool *s)
{
    sqlite3_stmt *st = wstmt(s, W_PROBE);
    if (!st || exec_sql(s->wdb, "BEGIN IMMEDIATE", NULL, 0) != SQLITE_OK) {
        return -1;
    }
    sqlite3_bind_int64(st, 1, px_now_ms());
    int rc = step_done(st);
    if (rc == SQLITE_OK) {
        rc = exec_sql(s->wdb, "COMMIT", NULL, 0);
    }
    if (rc != SQLITE_OK) {
        if (!sqlite3_get_autocommit(s->wdb)) {
            sqlite3_exec(s->wdb, "ROLLBACK", NULL, NULL, NULL);
        }
        return -1;
    }
    return 0;
}

/* Moves the keys waiting in dedupe_recent (all of them, expired ones dropped) into dedupe in one
 * transaction and empties both dedupe_recent and its index in memory. On failure nothing moved,
 * and the next batch or prune tries again. */
static void merge_recent(px_spool *s)
{
    if (px_keyset_count(s->recent) == 0) {
        return;
    }
    sqlite3_stmt *merge = wstmt(s, W_MERGE), *clear = wstmt(s, W_RECENT_CLEAR);
    if (!merge || !clear || exec_sql(s->wdb, "BEGIN IMMEDIATE", NULL, 0) != SQLITE_OK) {
        return;
    }
    uint64_t t0 = mono_ms();
    sqlite3_bind_int64(merge, 1, px_now_ms());
    int rc = step_done(merge);
    if (rc == SQLITE_OK) {
        rc = step_done(clear);
    }
    if (rc == SQLITE_OK) {
        rc = exec_sql(s->wdb, "COMMIT", NULL, 0);
    }
    if (rc != SQLITE_OK) {
        PX_LOG_WARN(LOG_MOD, "dedupe keys not merged err=%s", sqlite3_errstr(rc));
        if (!sqlite3_get_autocommit(s->wdb)) {
            sqlite3_exec(s->wdb, "ROLLBACK", NULL, NULL, NULL);
        }
        return;
    }
    PX_LOG_DEBUG(LOG_MOD, "dedupe keys merged n=%zu ms=%llu", px_keyset_count(s->recent),
                 (unsigned long long)(mono_ms() - t0));
    px_keyset_clear(s->recent);
}

/* Deletes expired dedupe keys (those waiting in dedupe_recent by merging them first). */
static void prune(px_spool *s)
{
    merge_recent(s);
    sqlite3_stmt *st = wstmt(s, W_PRUNE);
    if (!st) {
        return;
    }
    for (int i = 0; i < 100; i++) {
        sqlite3_bind_int64(st, 1, px_now_ms());
        sqlite3_bind_int64(st, 2, PRUNE_CHUNK);
        if (step_done(st) != SQLITE_OK || sqlite3_changes(s->wdb) < PRUNE_CHUNK) {
            return;
        }
    }
}

static void timed_wait(px_spool *s, uint64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    s->writer_waiting = 1;
    pthread_cond_timedwait(&s->cv_work, &s->mu, &ts);
    s->writer_waiting = 0;
}

/* Writer thread, after each commit on wdb. */
static int on_wal_commit(void *arg, sqlite3 *db, const char *name, int frames)
{
    px_spool *s = arg;
    (void)db;
    (void)name;
    pthread_mutex_lock(&s->ck_mu);
    s->ck_commits++;
    pthread_mutex_unlock(&s->ck_mu);
    if ((int64_t)frames * s->page_size >= CHECKPOINT_BYTES) {
        s->wal_full = 1; /* checkpointed once the batch's callbacks are on their way */
    }
    return SQLITE_OK;
}

/* Writer thread: copies the WAL back into the database when the last commit left it full. No
 * commit can land meanwhile, so the next write transaction rewinds the WAL. Failures (a full
 * disk, a reader's snapshot in the way) leave wal_full set for the next batch to try again. */
static void checkpoint_if_full(px_spool *s)
{
    if (!s->wal_full) {
        return;
    }
    int frames = 0, copied = 0;
    int rc = sqlite3_wal_checkpoint_v2(s->wdb, NULL, SQLITE_CHECKPOINT_PASSIVE, &frames, &copied);
    s->wal_full = rc != SQLITE_OK || copied < frames;
}

/* Copies back what the writer left in the WAL and truncates the file to zero bytes. TRUNCATE
 * needs the write lock and no reader on the WAL: with no busy handler on cdb it never waits for
 * them, it fails (SQLITE_BUSY) and is tried again at the next look. */
static void checkpoint_idle(px_spool *s)
{
    int frames = 0;
    int rc = sqlite3_wal_checkpoint_v2(s->cdb, NULL, SQLITE_CHECKPOINT_PASSIVE, &frames, NULL);
    if (rc == SQLITE_OK && frames > 0) {
        sqlite3_wal_checkpoint_v2(s->cdb, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
    }
}

/* The checkpoint thread: once a second, when the writer has committed nothing since the previous
 * look, leaves the WAL empty, so an idle spool holds no more disk than its database needs (and a
 * spool unwritable for a full disk gets the WAL's space back). */
static void checkpointer_main(void *arg)
{
    px_spool *s = arg;
    uint64_t seen = 0; /* ck_commits at the previous look */
    pthread_mutex_lock(&s->ck_mu);
    while (!s->ck_stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += CHECKPOINT_EVERY_MS / 1000;
        pthread_cond_timedwait(&s->ck_cv, &s->ck_mu, &until);
        if (s->ck_stop) {
            break;
        }
        int idle = s->ck_commits == seen;
        seen = s->ck_commits;
        if (idle) {
            pthread_mutex_unlock(&s->ck_mu);
            checkpoint_idle(s);
            pthread_mutex_lock(&s->ck_mu);
        }
    }
    pthread_mutex_unlock(&s->ck_mu);
}

static void writer_main(void *arg)
{
    px_spool *s = arg;
    sink_counts delta = {0};
    uint64_t next_probe = 0, next_prune = mono_ms() + PRUNE_INTERVAL_MS;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        uint64_t now = mono_ms();
        /* a test hook first: it must run even while unwritable */
        if (s->q_head && s->q_head->kind == OP_EXEC) {
            op *o = s->q_head;
            s->q_head = o->next;
            if (!s->q_head) {
                s->q_tail = NULL;
            }
            s->q_len--;
            uint64_t seq_after = s->processed_seq + 1;
            pthread_mutex_unlock(&s->mu);
            run_exec(s, o);
            pthread_mutex_lock(&s->mu);
            s->processed_seq = seq_after;
            continue;
        }
        int have = s->q_head || s->retry_head;
        if (!have && s->stop) {
            break;
        }
        if (s->writable && !s->stop && now >= next_prune) {
            pthread_mutex_unlock(&s->mu);
            prune(s);
            pthread_mutex_lock(&s->mu);
            next_prune = mono_ms() + PRUNE_INTERVAL_MS;
            continue;
        }
        if (!s->writable && !s->stop) {
            if (now < next_probe) {
                timed_wait(s, next_probe - now);
                continue;
            }
            next_probe = now + PROBE_INTERVAL_MS;
            if (!have) {
                pthread_mutex_unlock(&s->mu);
                int ok = probe(s) == 0;
                pthread_mutex_lock(&s->mu);
                if (ok) {
                    PX_LOG_INFO(LOG_MOD, "spool writable again");
                    s->writable = 1;
                    pthread_cond_broadcast(&s->cv_done);
                }
                continue;
            }
        } else if (!have) {
            timed_wait(s, next_prune > now ? next_prune - now : 1);
            continue;
        }
        /* take the failed marks first (they were queued earlier), then the queue */
        op *batch = s->retry_head, *tail = s->retry_tail;
        size_t nops = 0;
        for (op *o = batch; o; o = o->next) {
            nops++;
        }
        s->retry_head = s->retry_tail = NULL;
        uint64_t seq = s->processed_seq;
        while (s->q_head && nops < BATCH_MAX && s->q_head->kind != OP_EXEC) {
            op *o = s->q_head;
            s->q_head = o->next;
            s->q_len--;
            if (o->kind == OP_PUT || o->kind == OP_DEAD_RAW) {
                s->q_puts--;
                s->q_bytes -= o->bytes;
            }
            if (o->kind == OP_PUT && o->nrows > 0) {
                pq_pop(s, o);
            }
            seq++;
            o->next = NULL;
            if (tail) {
                tail->next = o;
            } else {
                batch = o;
            }
            tail = o;
            nops++;
        }
        if (!s->q_head) {
            s->q_tail = NULL;
        }
        pthread_mutex_unlock(&s->mu);
        process_batch(s, batch, nops, &delta);
        pthread_mutex_lock(&s->mu);
        s->processed_seq = seq;
        pthread_cond_broadcast(&s->cv_done);
        if (!s->writable) {
            next_probe = mono_ms() + PROBE_INTERVAL_MS;
        }
        int merge = s->writable && px_keyset_count(s->recent) >= s->merge_at;
        int dict = s->writable && s->nsamples == DICT_SAMPLES && !s->dict_tried;
        pthread_mutex_unlock(&s->mu);
        if (merge) {
            merge_recent(s);
        }
        if (dict) {
            make_dict(s);
        }
        checkpoint_if_full(s);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    counts_free(&delta);
}

/* ---- loop side ------------------------------------------------------------------------------ */

static void run_done_callbacks(px_spool *s)
{
    pthread_mutex_lock(&s->mu);
    op *o = s->done_head;
    s->done_head = s->done_tail = NULL;
    pthread_mutex_unlock(&s->mu);
    while (o) {
        op *next = o->next;
        if (o->cb) {
            o->cb(o->status, o->arg);
        }
        free(o);
        o = next;
    }
}

static void on_async(uv_async_t *h)
{
    run_done_callbacks(h->data);
}

/* Wakes the writer when it sleeps (a signal per queued op would cost a futex call each). mu held. */
static void wake_writer(px_spool *s)
{
    if (s->writer_waiting) {
        pthread_cond_signal(&s->cv_work);
    }
}

/* Appends a put with rows to the ring of queued puts. mu held. */
static void pq_push(px_spool *s, op *o)
{
    if (s->pq_len == s->pq_cap) {
        size_t cap = s->pq_cap ? s->pq_cap * 2 : 256;
        op **v = px_xmalloc(cap * sizeof(*v));
        for (size_t i = 0; i < s->pq_len; i++) {
            v[i] = s->pq[(s->pq_head + i) % s->pq_cap];
        }
        free(s->pq);
        s->pq = v;
        s->pq_cap = cap;
        s->pq_head = 0;
    }
    s->pq[(s->pq_head + s->pq_len) % s->pq_cap] = o;
    s->pq_len++;
}

/* The writer took put o off the queue: it is the ring's oldest. mu held. */
static void pq_pop(px_spool *s, op *o)
{
    if (s->pq_len > 0 && s->pq[s->pq_head] == o) {
        s->pq_head = (s->pq_head + 1) % s->pq_cap;
        s->pq_len--;
    }
}

/* Queues o; wakes the writer. */
static void enqueue(px_spool *s, op *o)
{
    pthread_mutex_lock(&s->mu);
    list_push(&s->q_head, &s->q_tail, o);
    s->q_len++;
    if (o->kind == OP_PUT || o->kind == OP_DEAD_RAW) {
        s->q_puts++;
        s->q_bytes += o->bytes;
    }
    s->queued_seq++;
    pthread_mutex_unlock(&s->mu);
    s->kick_wanted = 1;
}

static void on_kick(uv_prepare_t *h)
{
    px_spool *s = h->data;
    if (s->kick_wanted) {
        s->kick_wanted = 0;
        pthread_mutex_lock(&s->mu);
        wake_writer(s);
        pthread_mutex_unlock(&s->mu);
    }
}

/* Wakes the writer now: the caller is about to wait for it. */
static void kick_now(px_spool *s)
{
    s->kick_wanted = 0;
    pthread_mutex_lock(&s->mu);
    wake_writer(s);
    pthread_mutex_unlock(&s->mu);
}

/* Queues a synchronous op and waits for the writer to finish it. */
static int run_sync(px_spool *s, op *o)
{
    o->finished = 0;
    enqueue(s, o);
    kick_now(s);
    pthread_mutex_lock(&s->mu);
    while (!o->finished) {
        pthread_cond_wait(&s->cv_done, &s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return o->status;
}

/* Waits until every op queued so far is processed (or the spool turns unwritable). */
static void barrier(px_spool *s)
{
    kick_now(s);
    pthread_mutex_lock(&s->mu);
    uint64_t target = s->queued_seq;
    while (s->processed_seq < target && s->writable) {
        pthread_cond_wait(&s->cv_done, &s->mu);
    }
    pthread_mutex_unlock(&s->mu);
}


/* Frees the compression contexts and buffers (their threads are done with them). */
static void free_codecs(px_spool *s)
{
    px_keyset_free(s->recent);
    ZSTD_freeCDict(s->cdict);
    ZSTD_freeDDict(s->ddict);
    free(s->samples);
    ZSTD_freeCCtx(s->zc);
    ZSTD_freeDCtx(s->zd);
    free(s->zbuf);
    free(s->rbuf);
}

static void on_close(uv_handle_t *h)
{
    px_spool *s = h->data;
    if (--s->open_handles > 0) {
        return;
    }
    free_codecs(s);
    counts_free(&s->pending);
    counts_free(&s->queued_rows);
    free(s->pq);
    pthread_cond_destroy(&s->cv_done);
    pthread_cond_destroy(&s->cv_work);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->ck_cv);
    pthread_mutex_destroy(&s->ck_mu);
    free(s->path);
    free(s);
}

static void close_handles(px_spool *s)
{
    uv_close((uv_handle_t *)&s->async, on_close);
    uv_close((uv_handle_t *)&s->kick, on_close);
}

/* Opens cdb, the checkpoint thread's connection. A connection learns that the file is in WAL
 * mode (and opens the WAL) only when it first reads it; until then a checkpoint through it does
 * nothing at all and reports -1 frames. So it reads the schema once here. Then no busy handler:
 * its checkpoints never wait for the writer or the readers (see checkpoint()). */
static int open_checkpointer(px_spool *s, char *err, size_t errlen)
{
    if (sqlite3_open_v2(s->path, &s->cdb, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        snprintf(err, errlen, "cannot open %s for checkpoints: %s", s->path,
                 s->cdb ? sqlite3_errmsg(s->cdb) : "out of memory");
        return -1;
    }
    sqlite3_busy_timeout(s->cdb, 5000);
    char e2[256];
    if (exec_sql(s->cdb, "SELECT count(*) FROM sqlite_schema", e2, sizeof(e2)) != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", s->path, e2);
        return -1;
    }
    sqlite3_busy_timeout(s->cdb, 0);
    return 0;
}

/* A spool with its fields, locks and conditions set, nothing opened yet. */
static px_spool *spool_new(uv_loop_t *loop, const char *dir, const px_spool_options *opt)
{
    px_spool *s = px_xcalloc(1, sizeof(*s));
    s->loop = loop;
    s->path = px_xasprintf("%s/spool.db", dir);
    s->dedupe_window_ms = opt->dedupe_window_ms;
    s->max_queue = opt->max_queue ? opt->max_queue : DEFAULT_MAX_QUEUE;
    s->compress = opt->compress == PX_COMPRESS_ZSTD;
    s->recent = px_keyset_new();
    s->merge_at = opt->dedupe_merge_at ? opt->dedupe_merge_at : DEFAULT_MERGE_AT;
    s->writable = 1;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv_work, NULL);
    pthread_cond_init(&s->cv_done, NULL);
    pthread_mutex_init(&s->ck_mu, NULL);
    pthread_cond_init(&s->ck_cv, NULL);
    return s;
}

/* Releases a spool whose threads and loop handles never started (closes whatever it opened). */
static void spool_free_unstarted(px_spool *s)
{
    sqlite3_close(s->cdb);
    sqlite3_close(s->rdb);
    sqlite3_close(s->wdb);
    free_codecs(s);
    pthread_cond_destroy(&s->ck_cv);
    pthread_mutex_destroy(&s->ck_mu);
    counts_free(&s->pending);
    counts_free(&s->queued_rows);
    free(s->pq);
    pthread_cond_destroy(&s->cv_done);
    pthread_cond_destroy(&s->cv_work);
    pthread_mutex_destroy(&s->mu);
    free(s->path);
    free(s);
}

/* Takes back the newest compression dictionary, if any (see make_dict). */
static void load_dict(px_spool *s)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->wdb, "SELECT id, dict FROM dicts ORDER BY id DESC LIMIT 1", -1, &st,
                           NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        s->cdict = ZSTD_createCDict(sqlite3_column_blob(st, 1),
                                    (size_t)sqlite3_column_bytes(st, 1), COMPRESS_LEVEL);
        s->cdict_id = sqlite3_column_int64(st, 0);
        s->dict_tried = s->cdict != NULL;
    }
    sqlite3_finalize(st);
}

/* Fills the index in memory of the dedupe keys waiting in dedupe_recent. */
static int load_recent(px_spool *s, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->wdb, "SELECT source, key, expires_at_ms FROM dedupe_recent "
                                "ORDER BY seq", -1, &st, NULL);
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        px_keyset_set(s->recent, (const char *)sqlite3_column_text(st, 0),
                      (const char *)sqlite3_column_text(st, 1), sqlite3_column_int64(st, 2));
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    px_keyset_commit(s->recent);
    if (rc != SQLITE_DONE) {
        snprintf(err, errlen, "%s: cannot read dedupe keys: %s", s->path, sqlite3_errmsg(s->wdb));
        return -1;
    }
    return 0;
}

/* Opens the writer's connection in WAL mode with the chosen durability, brings the schema up to
 * date and picks the next delivery id above every one ever given. */
static int open_writer_db(px_spool *s, const px_spool_options *opt, char *err, size_t errlen)
{
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(s->path, &s->wdb, flags, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot open %s: %s", s->path,
                 s->wdb ? sqlite3_errmsg(s->wdb) : "out of memory");
        return -1;
    }
    sqlite3_busy_timeout(s->wdb, 5000);
    char sql[256];
    snprintf(sql, sizeof(sql),
             "PRAGMA page_size=%d; PRAGMA journal_mode=WAL; PRAGMA synchronous=%s;"
             "PRAGMA journal_size_limit=%u; PRAGMA wal_autocheckpoint=0; PRAGMA cache_size=-%d;",
             NEW_PAGE_SIZE, opt->durability == PX_DURABILITY_FSYNC ? "FULL" : "NORMAL",
             PX_SPOOL_WAL_LIMIT_BYTES, WRITER_CACHE_KIB);
    char e2[256];
    if (exec_sql(s->wdb, sql, e2, sizeof(e2)) != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", s->path, e2);
        return -1;
    }
    if (migrate(s->wdb, s->path, err, errlen) < 0) {
        return -1;
    }
    s->page_size = (int)query_int(s->wdb, "PRAGMA page_size", 4096);
    int64_t max_id = query_int(s->wdb, "SELECT max(id) FROM deliveries", 0);
    int64_t hwm = query_int(s->wdb, "SELECT v FROM meta WHERE k='last_delivery_id'", 0);
    s->next_id = (max_id > hwm ? max_id : hwm) + 1;
    s->hwm_stored = hwm;
    if (s->compress) {
        load_dict(s);
    }
    return load_recent(s, err, errlen);
}

/* Opens the read-only connection and counts the deliveries each sink has pending. */
static int open_reader_db(px_spool *s, char *err, size_t errlen)
{
    if (sqlite3_open_v2(s->path, &s->rdb, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        snprintf(err, errlen, "cannot open %s read-only: %s", s->path,
                 s->rdb ? sqlite3_errmsg(s->rdb) : "out of memory");
        return -1;
    }
    sqlite3_busy_timeout(s->rdb, 5000);
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(s->rdb, "SELECT sink, count(*) FROM deliveries GROUP BY sink", -1, &q,
                           NULL) != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", s->path, sqlite3_errmsg(s->rdb));
        return -1;
    }
    while (sqlite3_step(q) == SQLITE_ROW) {
        counts_add(&s->pending, (const char *)sqlite3_column_text(q, 0),
                   sqlite3_column_int64(q, 1));
    }
    sqlite3_finalize(q);
    return 0;
}

/* Starts the async handle that brings results back to the loop and the kick that flushes them. */
static int start_loop_handles(px_spool *s, char *err, size_t errlen)
{
    if (uv_async_init(s->loop, &s->async, on_async) != 0) {
        snprintf(err, errlen, "cannot create async handle");
        return -1;
    }
    s->async.data = s;
    uv_prepare_init(s->loop, &s->kick);
    s->kick.data = s;
    uv_prepare_start(&s->kick, on_kick);
    uv_unref((uv_handle_t *)&s->kick);
    s->open_handles = 2;
    return 0;
}

/* Starts the checkpoint and writer threads. On failure stops what started, closes the
 * connections and the loop handles (which frees s) and returns PX_ESPOOL. */
static int start_threads(px_spool *s, char *err, size_t errlen)
{
    if (uv_thread_create(&s->ck_thread, checkpointer_main, s) != 0) {
        snprintf(err, errlen, "cannot start the spool checkpoint thread");
        sqlite3_close(s->rdb);
        sqlite3_close(s->wdb);
        sqlite3_close(s->cdb);
        close_handles(s); /* frees s */
        return PX_ESPOOL;
    }
    if (uv_thread_create(&s->thread, writer_main, s) != 0) {
        snprintf(err, errlen, "cannot start the spool writer thread");
        pthread_mutex_lock(&s->ck_mu);
        s->ck_stop = 1;
        pthread_cond_signal(&s->ck_cv);
        pthread_mutex_unlock(&s->ck_mu);
        uv_thread_join(&s->ck_thread);
        sqlite3_close(s->rdb);
        sqlite3_close(s->wdb);
        sqlite3_close(s->cdb);
        close_handles(s); /* frees s */
        return PX_ESPOOL;
    }
    return 0;
}

int px_spool_open(uv_loop_t *loop, const char *dir, const px_spool_options *opt, px_spool **out,
                  char *err, size_t errlen)
{
    px_spool_options dflt = {.durability = PX_DURABILITY_NORMAL,
                             .dedupe_window_ms = 24ull * 3600 * 1000,
                             .max_queue = DEFAULT_MAX_QUEUE};
    if (!opt) {
        opt = &dflt;
    }
    int rc = px_mkdirs(dir);
    if (rc < 0) {
        snprintf(err, errlen, "cannot create spool directory %s: %s", dir ? dir : "(null)",
                 rc == PX_EINVAL ? "empty path" : uv_strerror(rc));
        return rc;
    }
    px_spool *s = spool_new(loop, dir, opt);
    if (open_writer_db(s, opt, err, errlen) < 0 || open_reader_db(s, err, errlen) < 0 ||
        open_checkpointer(s, err, errlen) < 0) {
        spool_free_unstarted(s);
        return PX_ESPOOL;
    }
    sqlite3_wal_hook(s->wdb, on_wal_commit, s);
    if (start_loop_handles(s, err, errlen) < 0) {
        spool_free_unstarted(s);
        return PX_ESPOOL;
    }
    if (start_threads(s, err, errlen) < 0) {
        return PX_ESPOOL;
    }
    *out = s;
    return 0;
}

void px_spool_close(px_spool *s)
{
    if (!s || s->closing) {
        return;
    }
    s->closing = 1;
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_cond_signal(&s->cv_work);
    pthread_mutex_unlock(&s->mu);
    uv_thread_join(&s->thread);
    pthread_mutex_lock(&s->ck_mu);
    s->ck_stop = 1;
    pthread_cond_signal(&s->ck_cv);
    pthread_mutex_unlock(&s->ck_mu);
    uv_thread_join(&s->ck_thread);
    run_done_callbacks(s);
    PX_LOG_INFO(LOG_MOD, "spool closed commits=%llu ops=%llu elided=%llu",
                (unsigned long long)s->st.commits, (unsigned long long)s->st.rows_committed,
                (unsigned long long)s->st.elided);
    for (int i = 0; i < W_COUNT; i++) {
        sqlite3_finalize(s->wst[i]);
    }
    sqlite3_finalize(s->rload);
    sqlite3_close(s->cdb);
    /* Last out: copy the WAL back and truncate it, so a stopped host leaves one small file. */
    sqlite3_wal_checkpoint_v2(s->wdb, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
    sqlite3_close(s->wdb);
    sqlite3_close(s->rdb);
    close_handles(s);
}

/* ---- queueing ------------------------------------------------------------------------------- */

static size_t slen(const char *p)
{
    return p ? strlen(p) + 1 : 0;
}

/* Copies a string into the op's arena; NULL stays NULL. */
static const char *put_str(char **cur, const char *p, size_t n_with_nul)
{
    if (!p) {
        return NULL;
    }
    char *d = *cur;
    memcpy(d, p, n_with_nul - 1);
    d[n_with_nul - 1] = '\0';
    *cur += n_with_nul;
    return d;
}

/* One allocation: the op, its rows, then every string. */
static op *op_from_event(const px_spool_event *ev, const px_spool_row *rows, size_t n,
                         const char *pipeline, const char *sink, const char *text)
{
    size_t len = sizeof(op) + n * sizeof(op_row);
    len += slen(ev->id) + slen(ev->type) + slen(ev->source) + slen(ev->dedupe_key) +
           slen(ev->meta) + slen(ev->hints) + ev->payload_len + 1;
    len += slen(pipeline) + slen(sink) + slen(text);
    for (size_t i = 0; i < n; i++) {
        /* NULL strings of a row are stored as "": one byte each */
        len += (rows[i].pipeline ? slen(rows[i].pipeline) : 1) +
               (rows[i].sink ? slen(rows[i].sink) : 1) +
               (rows[i].action ? slen(rows[i].action) : 1) +
               (rows[i].params ? rows[i].params_len : 2) + 1;
    }
    op *o = px_xmalloc(len);
    memset(o, 0, sizeof(*o));
    o->bytes = len;
    o->rows = (op_row *)(o + 1);
    o->nrows = n;
    char *cur = (char *)(o->rows + n);
    o->ev_id = put_str(&cur, ev->id, slen(ev->id));
    o->type = put_str(&cur, ev->type, slen(ev->type));
    o->source = put_str(&cur, ev->source, slen(ev->source));
    o->dedupe_key = put_str(&cur, ev->dedupe_key, slen(ev->dedupe_key));
    o->meta = put_str(&cur, ev->meta, slen(ev->meta));
    o->hints = put_str(&cur, ev->hints, slen(ev->hints));
    o->payload = put_str(&cur, ev->payload ? ev->payload : "", ev->payload_len + 1);
    o->payload_len = ev->payload_len;
    o->time_ms = ev->time_ms;
    o->pipeline = put_str(&cur, pipeline, slen(pipeline));
    o->sink = put_str(&cur, sink, slen(sink));
    o->text = put_str(&cur, text, slen(text));
    for (size_t i = 0; i < n; i++) {
        op_row *r = &o->rows[i];
        r->elided = 0;
        r->pipeline = put_str(&cur, rows[i].pipeline ? rows[i].pipeline : "",
                              slen(rows[i].pipeline ? rows[i].pipeline : ""));
        r->sink = put_str(&cur, rows[i].sink ? rows[i].sink : "",
                          slen(rows[i].sink ? rows[i].sink : ""));
        r->action = put_str(&cur, rows[i].action ? rows[i].action : "",
                            slen(rows[i].action ? rows[i].action : ""));
        if (rows[i].params) {
            r->params = put_str(&cur, rows[i].params, rows[i].params_len + 1);
            r->params_len = rows[i].params_len;
        } else {
            r->params = put_str(&cur, "{}", 3);
            r->params_len = 2;
        }
    }
    return o;
}

/* Refuses a put at once when the spool is closing, unwritable or full. mu held. */
static int admit(px_spool *s)
{
    if (s->closing || !s->writable || s->q_puts >= s->max_queue ||
        s->q_bytes >= MAX_QUEUE_BYTES) {
        s->st.busy_refusals++;
        return PX_EBUSY;
    }
    return 0;
}

int px_spool_put(px_spool *s, const px_spool_event *ev, px_spool_row *rows, size_t n,
                 px_spool_put_cb cb, void *arg)
{
    if (!s || !ev || (n > 0 && !rows)) {
        return PX_EINVAL;
    }
    /* built before taking the lock, so a put locks once; a refused one was built for nothing */
    op *o = op_from_event(ev, rows, n, NULL, NULL, NULL);
    o->kind = OP_PUT;
    o->cb = cb;
    o->arg = arg;
    pthread_mutex_lock(&s->mu);
    int rc = admit(s);
    if (rc < 0) {
        pthread_mutex_unlock(&s->mu);
        free(o);
        return rc;
    }
    for (size_t i = 0; i < n; i++) {
        rows[i].id = o->rows[i].id = s->next_id++;
        counts_add(&s->queued_rows, o->rows[i].sink, 1);
    }
    if (n > 0) {
        pq_push(s, o);
    }
    list_push(&s->q_head, &s->q_tail, o);
    s->q_len++;
    s->q_puts++;
    s->q_bytes += o->bytes;
    s->queued_seq++;
    pthread_mutex_unlock(&s->mu);
    s->kick_wanted = 1;
    return 0;
}

int px_spool_dead_raw(px_spool *s, const px_spool_event *ev, const char *pipeline,
                      const char *sink, const char *reason, px_spool_put_cb cb, void *arg)
{
    if (!s || !ev) {
        return PX_EINVAL;
    }
    pthread_mutex_lock(&s->mu);
    int rc = admit(s);
    pthread_mutex_unlock(&s->mu);
    if (rc < 0) {
        return rc;
    }
    op *o = op_from_event(ev, NULL, 0, pipeline ? pipeline : "", sink ? sink : "",
                          reason ? reason : "");
    o->kind = OP_DEAD_RAW;
    o->cb = cb;
    o->arg = arg;
    pthread_mutex_lock(&s->mu);
    o->delivery_id = s->next_id++; /* the dead letter's id, from the deliveries' sequence */
    pthread_mutex_unlock(&s->mu);
    enqueue(s, o);
    return 0;
}

static void queue_mark(px_spool *s, int kind, int64_t id, uint32_t attempts, int64_t next_at,
                       const char *text)
{
    if (!s || s->closing) {
        return;
    }
    size_t tl = text ? strlen(text) + 1 : 0;
    op *o = px_xmalloc(sizeof(op) + tl);
    memset(o, 0, sizeof(*o));
    o->kind = kind;
    o->delivery_id = id;
    o->attempts = attempts;
    o->next_at_ms = next_at;
    if (text) {
        char *d = (char *)(o + 1);
        memcpy(d, text, tl);
        o->text = d;
    }
    enqueue(s, o);
}

/* The queued put holding delivery `id`, or NULL when the writer has taken it already (or never
 * had it). Binary search: the ring is in id order. mu held. */
static op *pq_find(px_spool *s, int64_t id, size_t *row)
{
    size_t lo = 0, hi = s->pq_len;
    while (lo < hi) { /* first entry whose first id is > id */
        size_t mid = lo + (hi - lo) / 2;
        if (s->pq[(s->pq_head + mid) % s->pq_cap]->rows[0].id <= id) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (lo == 0) {
        return NULL;
    }
    op *o = s->pq[(s->pq_head + lo - 1) % s->pq_cap];
    if (id >= o->rows[0].id + (int64_t)o->nrows) {
        return NULL;
    }
    *row = (size_t)(id - o->rows[0].id);
    return o;
}

void px_spool_mark_done(px_spool *s, int64_t delivery_id, uint32_t attempts)
{
    if (!s || s->closing) {
        return;
    }
    pthread_mutex_lock(&s->mu);
    size_t i = 0;
    op *o = pq_find(s, delivery_id, &i);
    if (o) {
        /* Delivered before its put was written: inserting and deleting it would cancel out. */
        if (!o->rows[i].elided) {
            o->rows[i].elided = 1;
            o->nelided++;
            counts_add(&s->queued_rows, o->rows[i].sink, -1);
            s->st.elided++;
        }
        pthread_mutex_unlock(&s->mu);
        return;
    }
    pthread_mutex_unlock(&s->mu);
    queue_mark(s, OP_DONE, delivery_id, attempts, 0, NULL);
}

void px_spool_mark_retry(px_spool *s, int64_t delivery_id, uint32_t attempts, int64_t next_at_ms,
                         const char *error)
{
    queue_mark(s, OP_RETRY, delivery_id, attempts, next_at_ms, error);
}

void px_spool_mark_dead(px_spool *s, int64_t delivery_id, uint32_t attempts, const char *reason)
{
    queue_mark(s, OP_DEAD, delivery_id, attempts, 0, reason ? reason : "");
}

static int dlq_sync(px_spool *s, int kind, const int64_t *ids, size_t n, const char *sink,
                    int64_t before_ms, void (*cb)(int64_t, const char *, void *), void *arg)
{
    if (!s) {
        return PX_EINVAL;
    }
    if (s->closing || !px_spool_writable(s)) {
        return PX_EBUSY;
    }
    op o;
    memset(&o, 0, sizeof(o));
    o.kind = kind;
    o.ids = ids;
    o.nids = ids ? n : 0;
    o.filter_sink = sink;
    o.before_ms = before_ms;
    int rc = run_sync(s, &o);
    if (rc == 0) {
        rc = (int)o.affected;
        for (size_t i = 0; i < o.nnew; i++) {
            if (cb) {
                cb(o.new_ids[i], o.new_sinks[i], arg);
            }
        }
    }
    for (size_t i = 0; i < o.nnew; i++) {
        free(o.new_sinks[i]);
    }
    free(o.new_ids);
    free(o.new_sinks);
    return rc;
}

int px_spool_dlq_replay(px_spool *s, const int64_t *ids, size_t n, const char *sink,
                        void (*cb)(int64_t id, const char *sink, void *arg), void *arg)
{
    return dlq_sync(s, OP_REPLAY, ids, n, sink, 0, cb, arg);
}

int px_spool_dlq_purge(px_spool *s, const int64_t *ids, size_t n, const char *sink,
                       int64_t before_ms)
{
    return dlq_sync(s, OP_PURGE, ids, n, sink, before_ms, NULL, NULL);
}

int px_spool_note_crash(px_spool *s, int64_t delivery_id, const char *reason,
                        uint32_t max_crashes)
{
    if (!s) {
        return PX_EINVAL;
    }
    if (s->closing || !px_spool_writable(s)) {
        return PX_EBUSY;
    }
    op o;
    memset(&o, 0, sizeof(o));
    o.kind = OP_CRASH;
    o.delivery_id = delivery_id;
    o.attempts = max_crashes ? max_crashes : 3;
    o.text = reason ? reason : "crash";
    return run_sync(s, &o);
}

int px__spool_exec(px_spool *s, const char *sql)
{
    if (!s || s->closing) {
        return PX_EINVAL;
    }
    op o;
    memset(&o, 0, sizeof(o));
    o.kind = OP_EXEC;
    o.sql = sql;
    return run_sync(s, &o);
}

/* ---- reads (loop thread, read-only connection) ---------------------------------------------- */

static const char *col_text(sqlite3_stmt *st, int i)
{
    return (const char *)sqlite3_column_text(st, i);
}

/* The reader's copy of dictionary id, loaded from dicts when the last one was another. */
static ZSTD_DDict *reader_dict(px_spool *s, int64_t id)
{
    if (s->ddict && s->ddict_id == id) {
        return s->ddict;
    }
    ZSTD_freeDDict(s->ddict);
    s->ddict = NULL;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->rdb, "SELECT dict FROM dicts WHERE id=?1", -1, &st, NULL) ==
        SQLITE_OK) {
        sqlite3_bind_int64(st, 1, id);
        if (sqlite3_step(st) == SQLITE_ROW) {
            s->ddict = ZSTD_createDDict(sqlite3_column_blob(st, 0),
                                        (size_t)sqlite3_column_bytes(st, 0));
            s->ddict_id = id;
        }
    }
    sqlite3_finalize(st);
    return s->ddict;
}

/* The payload stored as a zstd frame in column `col` of the row st is on, with its codec (1, or
 * 1 + the id of its dictionary), as it was put: decompressed into s->rbuf, valid until the next
 * call, NUL-terminated; *len its length. NULL when the frame does not decompress (logged). */
static const char *unpack_payload(px_spool *s, sqlite3_stmt *st, int col, int64_t codec,
                                  size_t *len)
{
    const char *p = (const char *)sqlite3_column_blob(st, col);
    size_t n = (size_t)sqlite3_column_bytes(st, col);
    unsigned long long size = ZSTD_getFrameContentSize(p, n);
    if (!s->zd) {
        s->zd = ZSTD_createDCtx();
    }
    if (!p || !s->zd || size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN ||
        size >= SIZE_MAX) {
        PX_LOG_ERR(LOG_MOD, "stored payload does not decompress bytes=%zu", n);
        return NULL;
    }
    if (size + 1 > s->rcap) {
        free(s->rbuf);
        s->rcap = (size_t)size + 1;
        s->rbuf = px_xmalloc(s->rcap);
    }
    ZSTD_DDict *dict = codec > 1 ? reader_dict(s, codec - 1) : NULL;
    if (codec > 1 && !dict) {
        PX_LOG_ERR(LOG_MOD, "stored payload's dictionary is missing id=%lld", (long long)codec - 1);
        return NULL;
    }
    size_t got = dict ? ZSTD_decompress_usingDDict(s->zd, s->rbuf, s->rcap, p, n, dict)
                      : ZSTD_decompressDCtx(s->zd, s->rbuf, s->rcap, p, n);
    if (ZSTD_isError(got) || got != size) {
        PX_LOG_ERR(LOG_MOD, "stored payload does not decompress bytes=%zu err=%s", n,
                   ZSTD_isError(got) ? ZSTD_getErrorName(got) : "size");
        return NULL;
    }
    s->rbuf[got] = '\0';
    *len = got;
    return s->rbuf;
}

int px_spool_load(px_spool *s, const char *sink, int64_t after_id, size_t max,
                  void (*cb)(const px_spool_loaded *d, void *arg), void *arg)
{
    if (!s || !sink || !cb) {
        return PX_EINVAL;
    }
    barrier(s);
    static const char sql[] =
        "SELECT d.id, d.pipeline, d.sink, d.action, d.params, d.attempts, d.next_at_ms, "
        "d.last_error, e.id, e.type, e.source, e.time_ms, e.payload, e.meta, e.hints, e.codec "
        "FROM deliveries d JOIN events e ON e.eid = d.event "
        "WHERE d.sink = ?1 AND d.id > ?2 ORDER BY d.id LIMIT ?3";
    if (!s->rload &&
        sqlite3_prepare_v3(s->rdb, sql, -1, SQLITE_PREPARE_PERSISTENT, &s->rload, NULL) !=
            SQLITE_OK) {
        PX_LOG_ERR(LOG_MOD, "load failed err=%s", sqlite3_errmsg(s->rdb));
        return PX_ESPOOL;
    }
    sqlite3_stmt *st = s->rload;
    sqlite3_bind_text(st, 1, sink, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, after_id);
    sqlite3_bind_int64(st, 3, max > INT64_MAX ? INT64_MAX : (int64_t)max);
    int n = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        px_spool_loaded d;
        memset(&d, 0, sizeof(d));
        d.id = sqlite3_column_int64(st, 0);
        d.pipeline = col_text(st, 1);
        d.sink = col_text(st, 2);
        d.action = col_text(st, 3);
        d.params = col_text(st, 4);
        d.attempts = (uint32_t)sqlite3_column_int64(st, 5);
        d.next_at_ms = sqlite3_column_int64(st, 6);
        d.last_error = col_text(st, 7);
        d.ev.id = col_text(st, 8);
        d.ev.type = col_text(st, 9);
        d.ev.source = col_text(st, 10);
        d.ev.time_ms = sqlite3_column_int64(st, 11);
        if (sqlite3_column_int64(st, 15) > 0) {
            d.ev.payload = unpack_payload(s, st, 12, sqlite3_column_int64(st, 15),
                                          &d.ev.payload_len);
            if (!d.ev.payload) {
                rc = SQLITE_CORRUPT;
                break;
            }
        } else {
            d.ev.payload = col_text(st, 12);
            d.ev.payload_len = (size_t)sqlite3_column_bytes(st, 12);
        }
        if (!d.ev.payload) {
            d.ev.payload = "";
        }
        d.ev.meta = col_text(st, 13);
        d.ev.hints = col_text(st, 14);
        cb(&d, arg);
        n++;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        PX_LOG_ERR(LOG_MOD, "load failed err=%s", sqlite3_errstr(rc));
        return PX_ESPOOL;
    }
    return n;
}

int px_spool_pending_counts(px_spool *s, void (*cb)(const char *sink, int64_t n, void *arg),
                            void *arg)
{
    if (!s || !cb) {
        return PX_EINVAL;
    }
    barrier(s);
    sink_counts copy = {0};
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->pending.n; i++) {
        if (s->pending.v[i].n > 0) {
            counts_add(&copy, s->pending.v[i].sink, s->pending.v[i].n);
        }
    }
    pthread_mutex_unlock(&s->mu);
    for (size_t i = 0; i < copy.n; i++) {
        cb(copy.v[i].sink, copy.v[i].n, arg);
    }
    int n = (int)copy.n;
    counts_free(&copy);
    return n;
}

/* Parsed JSON text, or the text itself as a string; bytes that are not UTF-8 as base64 under
 * {"base64": "..."}. New reference. */
static int64_t count_of(const sink_counts *c, const char *sink)
{
    for (size_t i = 0; i < c->n; i++) {
        if (strcmp(c->v[i].sink, sink) == 0) {
            return c->v[i].n;
        }
    }
    return 0;
}

int64_t px_spool_pending(px_spool *s, const char *sink)
{
    pthread_mutex_lock(&s->mu);
    int64_t n = count_of(&s->pending, sink) + count_of(&s->queued_rows, sink);
    pthread_mutex_unlock(&s->mu);
    return n;
}

json_t *px__store_json_or_text(const char *p, size_t len)
{
    if (!p) {
        return json_null();
    }
    json_t *v = json_loadb(p, len, JSON_DECODE_ANY, NULL);
    if (v) {
        return v;
    }
    v = json_stringn(p, len);
    if (v) {
        return v;
    }
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = px_xmalloc((len + 2) / 3 * 4 + 1);
    size_t o = 0;
    const unsigned char *u = (const unsigned char *)p;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t w = (uint32_t)u[i] << 16;
        if (i + 1 < len) {
            w |= (uint32_t)u[i + 1] << 8;
        }
        if (i + 2 < len) {
            w |= u[i + 2];
        }
        out[o++] = b64[(w >> 18) & 63];
        out[o++] = b64[(w >> 12) & 63];
        out[o++] = i + 1 < len ? b64[(w >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? b64[w & 63] : '=';
    }
    out[o] = '\0';
    v = json_pack("{s:s}", "base64", out);
    free(out);
    return v;
}

static json_t *col_json_str(sqlite3_stmt *st, int i)
{
    const char *t = col_text(st, i);
    return t ? json_string(t) : json_null();
}

/* Columns shared by list and show. */
#define DLQ_COLS                                                                              \
    "SELECT x.id, e.id, e.type, e.source, x.pipeline, x.sink, x.action, x.reason, x.attempts, " \
    "x.died_at, e.time_ms, e.payload, x.params, e.meta, e.hints, x.delivery_id, e.codec "     \
    "FROM dead x JOIN events e ON e.eid = x.event "

static json_t *dlq_row(sqlite3_stmt *st)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer(sqlite3_column_int64(st, 0)));
    json_object_set_new(o, "event_id", col_json_str(st, 1));
    json_object_set_new(o, "type", col_json_str(st, 2));
    json_object_set_new(o, "source", col_json_str(st, 3));
    json_object_set_new(o, "pipeline", col_json_str(st, 4));
    json_object_set_new(o, "sink", col_json_str(st, 5));
    json_object_set_new(o, "action", col_json_str(st, 6));
    json_object_set_new(o, "reason", col_json_str(st, 7));
    json_object_set_new(o, "attempts", json_integer(sqlite3_column_int64(st, 8)));
    json_object_set_new(o, "died_at", json_integer(sqlite3_column_int64(st, 9)));
    return o;
}

/* The WHERE of a dead-letter query, its parameters ?1..?5 bound by dlq_bind. */
#define DLQ_WHERE                                                                             \
    "WHERE (?1 IS NULL OR x.sink = ?1) AND (?2 IS NULL OR x.pipeline = ?2) "                  \
    "AND (?3 IS NULL OR instr(lower(x.reason), lower(?3)) > 0) AND x.died_at >= ?4 "          \
    "AND (?5 = 0 OR x.died_at < ?5) "

static void dlq_bind(sqlite3_stmt *st, const px_dlq_query *q)
{
    bind_text_or_null(st, 1, q->sink);
    bind_text_or_null(st, 2, q->pipeline);
    bind_text_or_null(st, 3, q->reason && *q->reason ? q->reason : NULL);
    sqlite3_bind_int64(st, 4, q->since_ms);
    sqlite3_bind_int64(st, 5, q->until_ms > 0 ? q->until_ms : 0);
}

static int64_t clamp_i64(size_t n)
{
    return n > INT64_MAX ? INT64_MAX : (int64_t)n;
}

static int dlq_total(px_spool *s, const px_dlq_query *q, int64_t *total)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->rdb, "SELECT count(*) FROM dead x " DLQ_WHERE, -1, &st, NULL) !=
        SQLITE_OK) {
        PX_LOG_ERR(LOG_MOD, "dlq count failed err=%s", sqlite3_errmsg(s->rdb));
        return PX_ESPOOL;
    }
    dlq_bind(st, q);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *total = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : PX_ESPOOL;
}

int px_spool_dlq_query(px_spool *s, const px_dlq_query *q, json_t **out, int64_t *total)
{
    if (!s || !q || !out) {
        return PX_EINVAL;
    }
    barrier(s);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->rdb,
                           DLQ_COLS DLQ_WHERE "ORDER BY x.died_at DESC, x.id DESC LIMIT ?6 "
                                              "OFFSET ?7",
                           -1, &st, NULL) != SQLITE_OK) {
        PX_LOG_ERR(LOG_MOD, "dlq list failed err=%s", sqlite3_errmsg(s->rdb));
        return PX_ESPOOL;
    }
    dlq_bind(st, q);
    sqlite3_bind_int64(st, 6, q->limit == 0 ? INT64_MAX : clamp_i64(q->limit));
    sqlite3_bind_int64(st, 7, clamp_i64(q->offset));
    json_t *arr = json_array();
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_array_append_new(arr, dlq_row(st));
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE || (total && dlq_total(s, q, total) < 0)) {
        json_decref(arr);
        return PX_ESPOOL;
    }
    *out = arr;
    return 0;
}

int px_spool_dlq_list(px_spool *s, const char *sink, int64_t since_ms, size_t limit, json_t **out)
{
    px_dlq_query q = {.sink = sink, .since_ms = since_ms, .limit = limit};
    return px_spool_dlq_query(s, &q, out, NULL);
}

int px_spool_dlq_show(px_spool *s, int64_t id, json_t **out)
{
    if (!s || !out) {
        return PX_EINVAL;
    }
    barrier(s);
    sqlite3_stmt *st = NULL, *hq = NULL;
    json_t *o = NULL;
    int rc = PX_ESPOOL;
    if (sqlite3_prepare_v2(s->rdb, DLQ_COLS "WHERE x.id = ?1", -1, &st, NULL) != SQLITE_OK) {
        goto done;
    }
    sqlite3_bind_int64(st, 1, id);
    int src = sqlite3_step(st);
    if (src == SQLITE_DONE) {
        rc = PX_ENOENT;
        goto done;
    }
    if (src != SQLITE_ROW) {
        goto done;
    }
    o = dlq_row(st);
    json_object_set_new(o, "time", json_integer(sqlite3_column_int64(st, 10)));
    const char *payload = (const char *)sqlite3_column_blob(st, 11);
    size_t plen = (size_t)sqlite3_column_bytes(st, 11);
    if (sqlite3_column_int64(st, 16) > 0 &&
        !(payload = unpack_payload(s, st, 11, sqlite3_column_int64(st, 16), &plen))) {
        goto done;
    }
    json_object_set_new(o, "payload", px__store_json_or_text(payload, plen));
    const char *t = col_text(st, 12);
    json_object_set_new(o, "params", px__store_json_or_text(t, t ? strlen(t) : 0));
    t = col_text(st, 13);
    json_object_set_new(o, "meta", px__store_json_or_text(t, t ? strlen(t) : 0));
    t = col_text(st, 14);
    json_object_set_new(o, "hints", px__store_json_or_text(t, t ? strlen(t) : 0));
    int64_t delivery_id = sqlite3_column_int64(st, 15);
    json_t *hist = json_array();
    json_object_set_new(o, "history", hist);
    if (delivery_id > 0) {
        if (sqlite3_prepare_v2(s->rdb,
                               "SELECT attempt, at_ms, error FROM attempts WHERE delivery_id=?1 "
                               "ORDER BY attempt",
                               -1, &hq, NULL) != SQLITE_OK) {
            goto done;
        }
        sqlite3_bind_int64(hq, 1, delivery_id);
        int hrc;
        while ((hrc = sqlite3_step(hq)) == SQLITE_ROW) {
            json_array_append_new(hist, json_pack("{s:I,s:I,s:o}", "attempt",
                                                  (json_int_t)sqlite3_column_int64(hq, 0), "at",
                                                  (json_int_t)sqlite3_column_int64(hq, 1),
                                                  "error", col_json_str(hq, 2)));
        }
        if (hrc != SQLITE_DONE) {
            goto done;
        }
    }
    *out = o;
    o = NULL;
    rc = 0;
done:
    if (rc == PX_ESPOOL) {
        PX_LOG_ERR(LOG_MOD, "dlq show failed id=%lld err=%s", (long long)id,
                   sqlite3_errmsg(s->rdb));
    }
    json_decref(o);
    sqlite3_finalize(hq);
    sqlite3_finalize(st);
    return rc;
}

int px_spool_dlq_count(px_spool *s, int64_t *n)
{
    if (!s || !n) {
        return PX_EINVAL;
    }
    barrier(s);
    int64_t v = query_int(s->rdb, "SELECT count(*) FROM dead", -1);
    if (v < 0) {
        return PX_ESPOOL;
    }
    *n = v;
    return 0;
}

void px_spool_get_stats(px_spool *s, px_spool_stats *st)
{
    pthread_mutex_lock(&s->mu);
    *st = s->st;
    st->writable = s->writable;
    st->queued = s->q_len;
    pthread_mutex_unlock(&s->mu);
}

int px_spool_writable(px_spool *s)
{
    pthread_mutex_lock(&s->mu);
    int w = s->writable;
    pthread_mutex_unlock(&s->mu);
    return w;
}
