/* Per-instance key/value state in DIR/spool.db (see state.h). A connection of its own with a busy
 * timeout, so a spool commit in progress only delays a write; synchronous=FULL because a lost
 * write here (a rotated OAuth refresh token) cannot be redone. */
#include "fsutil.h"
#include "state.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sqlite3.h>
#include <uv.h>

#include "err.h"
#include "log.h"
#include "mem.h"
#include "spool.h"

#define STATE_MOD "state"

struct px_state {
    sqlite3 *db;
    sqlite3_stmt *get, *set, *del;
    sqlite3_stmt *get_v, *insert_v, *update_v, *delete_v;
};

/* the version a write gives: above every version the table holds or held (kv_clock keeps the
 * highest version deleted, by a trigger, so a re-created key never repeats one) */
#define NEXT_VERSION                                                                          \
    "(SELECT max(coalesce((SELECT max(version) FROM kv), 0), (SELECT last FROM kv_clock)) + 1)"

static int prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st)
{
    return sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL);
}

int px_state_open(const char *dir, px_state **out)
{
    if (!dir || !*dir || !out) {
        return PX_EINVAL;
    }
    int rc = px_mkdirs(dir);
    if (rc < 0) {
        PX_LOG_ERR(STATE_MOD, "cannot create state directory dir=%s err=%s", dir, uv_strerror(rc));
        return rc;
    }
    char *path = px_xasprintf("%s/spool.db", dir);
    px_state *st = px_xcalloc(1, sizeof(*st));
    if (sqlite3_open_v2(path, &st->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        goto fail;
    }
    sqlite3_busy_timeout(st->db, 5000);
    /* journal_mode=WAL is persistent in the file; setting it again is harmless. The WAL is the
     * spool's too: this connection cuts it back to the same size when it commits first after a
     * rewind (see spool.h). The table is created IF NOT EXISTS and user_version is left to the
     * spool's migrations. */
    char sql[320];
    snprintf(sql, sizeof(sql),
             "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA journal_size_limit=%u;"
             "CREATE TABLE IF NOT EXISTS kv(instance TEXT NOT NULL, key TEXT NOT NULL, "
             "value TEXT NOT NULL, PRIMARY KEY(instance, key)) WITHOUT ROWID;",
             PX_SPOOL_WAL_LIMIT_BYTES);
    if (sqlite3_exec(st->db, sql, NULL, NULL, NULL) != SQLITE_OK) {
        goto fail;
    }
    /* files written before versions existed get the column (every key at version 1); the error
     * for a file that has it already is the expected one */
    sqlite3_exec(st->db, "ALTER TABLE kv ADD COLUMN version INTEGER NOT NULL DEFAULT 1", NULL,
                 NULL, NULL);
    if (sqlite3_exec(st->db,
                     "CREATE TABLE IF NOT EXISTS kv_clock(last INTEGER NOT NULL);"
                     "INSERT INTO kv_clock SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM kv_clock);"
                     "CREATE TRIGGER IF NOT EXISTS kv_deleted AFTER DELETE ON kv BEGIN "
                     "UPDATE kv_clock SET last = max(last, old.version); END;",
                     NULL, NULL, NULL) != SQLITE_OK) {
        goto fail;
    }
    if (prepare(st->db, "SELECT value FROM kv WHERE instance=?1 AND key=?2", &st->get) !=
            SQLITE_OK ||
        prepare(st->db,
                "INSERT OR REPLACE INTO kv(instance, key, value, version) VALUES(?1,?2,?3,"
                NEXT_VERSION ")",
                &st->set) != SQLITE_OK ||
        prepare(st->db, "DELETE FROM kv WHERE instance=?1 AND key=?2", &st->del) != SQLITE_OK ||
        prepare(st->db, "SELECT value, version FROM kv WHERE instance=?1 AND key=?2",
                &st->get_v) != SQLITE_OK ||
        prepare(st->db,
                "INSERT INTO kv(instance, key, value, version) VALUES(?1,?2,?3," NEXT_VERSION
                ") ON CONFLICT DO NOTHING RETURNING version",
                &st->insert_v) != SQLITE_OK ||
        prepare(st->db,
                "UPDATE kv SET value=?3, version=" NEXT_VERSION
                " WHERE instance=?1 AND key=?2 AND version=?4 RETURNING version",
                &st->update_v) != SQLITE_OK ||
        prepare(st->db,
                "DELETE FROM kv WHERE instance=?1 AND key=?2 AND version=?4 RETURNING 0",
                &st->delete_v) != SQLITE_OK) {
        goto fail;
    }
    free(path);
    *out = st;
    return 0;
fail:
    PX_LOG_ERR(STATE_MOD, "cannot open state path=%s err=%s", path,
               st->db ? sqlite3_errmsg(st->db) : "out of memory");
    free(path);
    px_state_close(st);
    return PX_ESPOOL;
}

json_t *px_state_get(px_state *st, const char *instance, const char *key)
{
    if (!st || !instance || !key) {
        return NULL;
    }
    sqlite3_bind_text(st->get, 1, instance, -1, SQLITE_STATIC);
    sqlite3_bind_text(st->get, 2, key, -1, SQLITE_STATIC);
    json_t *v = NULL;
    int rc = sqlite3_step(st->get);
    if (rc == SQLITE_ROW) {
        json_error_t jerr;
        v = json_loadb((const char *)sqlite3_column_text(st->get, 0),
                       (size_t)sqlite3_column_bytes(st->get, 0), JSON_DECODE_ANY, &jerr);
        if (!v) {
            PX_LOG_ERR(STATE_MOD, "stored value is not json instance=%s key=%s err=%s", instance,
                       key, jerr.text);
        }
    } else if (rc != SQLITE_DONE) {
        PX_LOG_ERR(STATE_MOD, "read failed instance=%s key=%s err=%s", instance, key,
                   sqlite3_errmsg(st->db));
    }
    sqlite3_reset(st->get);
    sqlite3_clear_bindings(st->get);
    return v;
}

int px_state_set(px_state *st, const char *instance, const char *key, const json_t *value)
{
    if (!st || !instance || !key) {
        return PX_EINVAL;
    }
    char *text = NULL;
    sqlite3_stmt *q = st->del;
    if (value) {
        text = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!text) {
            return PX_EINVAL;
        }
        q = st->set;
        sqlite3_bind_text(q, 3, text, -1, SQLITE_STATIC);
    }
    sqlite3_bind_text(q, 1, instance, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, key, -1, SQLITE_STATIC);
    /* a single statement in autocommit mode is its own durable transaction */
    int rc = sqlite3_step(q);
    if (rc != SQLITE_DONE) {
        PX_LOG_ERR(STATE_MOD, "write failed instance=%s key=%s err=%s", instance, key,
                   sqlite3_errmsg(st->db));
    }
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    free(text);
    return rc == SQLITE_DONE ? 0 : PX_ESPOOL;
}

json_t *px_state_get_versioned(px_state *st, const char *instance, const char *key,
                               int64_t *version)
{
    *version = 0;
    if (!st || !instance || !key) {
        return NULL;
    }
    sqlite3_stmt *q = st->get_v;
    sqlite3_bind_text(q, 1, instance, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, key, -1, SQLITE_STATIC);
    json_t *v = NULL;
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        v = json_loadb((const char *)sqlite3_column_text(q, 0), (size_t)sqlite3_column_bytes(q, 0),
                       JSON_DECODE_ANY, NULL);
        *version = v ? sqlite3_column_int64(q, 1) : 0;
        if (!v) {
            PX_LOG_ERR(STATE_MOD, "stored value is not json instance=%s key=%s", instance, key);
        }
    } else if (rc != SQLITE_DONE) {
        PX_LOG_ERR(STATE_MOD, "read failed instance=%s key=%s err=%s", instance, key,
                   sqlite3_errmsg(st->db));
    }
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    return v;
}

int px_state_cas(px_state *st, const char *instance, const char *key, int64_t expected,
                 const json_t *value, int64_t *version)
{
    if (!st || !instance || !key || expected < 0 || (!value && expected == 0)) {
        return PX_EINVAL;
    }
    char *text = NULL;
    if (value && !(text = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY))) {
        return PX_EINVAL;
    }
    sqlite3_stmt *q = !value ? st->delete_v : expected == 0 ? st->insert_v : st->update_v;
    sqlite3_bind_text(q, 1, instance, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, key, -1, SQLITE_STATIC);
    if (text) {
        sqlite3_bind_text(q, 3, text, -1, SQLITE_STATIC);
    }
    if (expected > 0) {
        sqlite3_bind_int64(q, 4, expected);
    }
    int rc = sqlite3_step(q), out = PX_ECONFLICT;
    if (rc == SQLITE_ROW) {
        if (version) {
            *version = sqlite3_column_int64(q, 0);
        }
        out = 0;
        rc = sqlite3_step(q);
    }
    if (rc != SQLITE_DONE) {
        PX_LOG_ERR(STATE_MOD, "write failed instance=%s key=%s err=%s", instance, key,
                   sqlite3_errmsg(st->db));
        out = PX_ESPOOL;
    }
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    free(text);
    return out;
}

void px_state_close(px_state *st)
{
    if (!st) {
        return;
    }
    sqlite3_finalize(st->get_v);
    sqlite3_finalize(st->insert_v);
    sqlite3_finalize(st->update_v);
    sqlite3_finalize(st->delete_v);
    sqlite3_finalize(st->get);
    sqlite3_finalize(st->set);
    sqlite3_finalize(st->del);
    sqlite3_close(st->db);
    free(st);
}
