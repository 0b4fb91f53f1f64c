/* The SQLite store: the spool (spool.c) and the state (state.c) in DIR/spool.db behind the store
 * interface. Each operation is one direct call into spool.c or state.c: the adapter adds no copy
 * and no allocation. */
#include "store.h"

#include <stdio.h>
#include <stdlib.h>

#include "err.h"
#include "mem.h"
#include "spool.h"
#include "state.h"
#include "store_local.h"

typedef struct sqlite_store {
    px_store base;
    px_spool *spool; /* owned */
    px_state *state; /* owned */
    px_store_local local;
} sqlite_store;

static px_spool *sp(void *b)
{
    return ((sqlite_store *)b)->spool;
}

static void sq_close(void *b)
{
    sqlite_store *s = b;
    px_spool_close(s->spool);
    px_state_close(s->state);
    px_store_local_free(&s->local);
    free(s);
}

static int sq_put(void *b, const px_store_event *ev, px_store_row *rows, size_t n,
                  px_store_put_cb cb, void *arg)
{
    return px_spool_put(sp(b), ev, rows, n, cb, arg);
}

static int sq_dead_raw(void *b, const px_store_event *ev, const char *pipeline, const char *sink,
                       const char *reason, px_store_put_cb cb, void *arg)
{
    return px_spool_dead_raw(sp(b), ev, pipeline, sink, reason, cb, arg);
}

static void sq_mark_done(void *b, int64_t id, uint32_t attempts)
{
    px_spool_mark_done(sp(b), id, attempts);
}

static void sq_mark_retry(void *b, int64_t id, uint32_t attempts, int64_t next_at_ms,
                          const char *error)
{
    px_spool_mark_retry(sp(b), id, attempts, next_at_ms, error);
}

static void sq_mark_dead(void *b, int64_t id, uint32_t attempts, const char *reason)
{
    px_spool_mark_dead(sp(b), id, attempts, reason);
}

static int sq_note_crash(void *b, int64_t id, const char *reason, uint32_t max_crashes)
{
    return px_spool_note_crash(sp(b), id, reason, max_crashes);
}

/* One host: every lease is held, so a claim is a read of the sink's deliveries after the cursor. */
static int sq_claim(void *b, const char *sink, int64_t after_id, size_t max,
                    void (*cb)(const px_store_delivery *d, void *arg), void *arg)
{
    return px_spool_load(sp(b), sink, after_id, max, cb, arg);
}

static int64_t sq_pending(void *b, const char *sink)
{
    return px_spool_pending(sp(b), sink);
}

static int sq_pending_counts(void *b, void (*cb)(const char *sink, int64_t n, void *arg),
                             void *arg)
{
    return px_spool_pending_counts(sp(b), cb, arg);
}

static int sq_dlq_list(void *b, const px_dlq_query *q, json_t **out, int64_t *total)
{
    return px_spool_dlq_query(sp(b), q, out, total);
}

static int sq_dlq_show(void *b, int64_t id, json_t **out)
{
    return px_spool_dlq_show(sp(b), id, out);
}

static int sq_dlq_count(void *b, int64_t *n)
{
    return px_spool_dlq_count(sp(b), n);
}

static int sq_dlq_replay(void *b, const int64_t *ids, size_t n, const char *sink,
                         void (*cb)(int64_t id, const char *sink, void *arg), void *arg)
{
    return px_spool_dlq_replay(sp(b), ids, n, sink, cb, arg);
}

static int sq_dlq_purge(void *b, const int64_t *ids, size_t n, const char *sink,
                        int64_t before_ms)
{
    return px_spool_dlq_purge(sp(b), ids, n, sink, before_ms);
}

static json_t *sq_kv_get(void *b, const char *instance, const char *key)
{
    return px_state_get(((sqlite_store *)b)->state, instance, key);
}

static int sq_kv_set(void *b, const char *instance, const char *key, const json_t *value)
{
    return px_state_set(((sqlite_store *)b)->state, instance, key, value);
}

static void sq_get_stats(void *b, px_store_stats *st)
{
    px_spool_get_stats(sp(b), st);
}

static int sq_writable(void *b)
{
    return px_spool_writable(sp(b));
}

/* One host: nothing is ever orphaned. */
static int sq_adopt(void *b, const char *sink, size_t max,
                    void (*cb)(const px_store_delivery *d, void *arg), void *arg)
{
    (void)b, (void)sink, (void)max, (void)cb, (void)arg;
    return 0;
}

static int sq_leased(void *b)
{
    (void)b;
    return 1;
}

static px_store_local *loc(void *b)
{
    return &((sqlite_store *)b)->local;
}

static int sq_members(void *b, json_t **out)
{
    return px_store_local_members(loc(b), out);
}

static void sq_announce(void *b, const char *config_hash)
{
    px_store_local_announce(loc(b), config_hash);
}

static json_t *sq_kv_get_versioned(void *b, const char *instance, const char *key,
                                   int64_t *version)
{
    return px_state_get_versioned(((sqlite_store *)b)->state, instance, key, version);
}

static int sq_kv_cas(void *b, const char *instance, const char *key, int64_t expected,
                     const json_t *value, int64_t *version)
{
    return px_state_cas(((sqlite_store *)b)->state, instance, key, expected, value, version);
}

static int sq_lock(void *b, const char *name, const char *holder, uint32_t ttl_ms)
{
    return px_store_local_lock(loc(b), name, holder, ttl_ms);
}

static int sq_unlock(void *b, const char *name, const char *holder)
{
    return px_store_local_unlock(loc(b), name, holder);
}

static int sq_lead(void *b, const char *sink)
{
    (void)b;
    (void)sink;
    return 1; /* one host leads every ordered sink */
}

static int sq_claim_ordered(void *b, const char *sink, int64_t after_seq, size_t max,
                    void (*cb)(const px_store_delivery *d, void *arg), void *arg)
{
    return px_store_local_claim_ordered(b, sq_claim, sink, after_seq, max, cb, arg);
}

static const px_store_ops sqlite_ops = {
    .name = "sqlite",
    .close = sq_close,
    .put = sq_put,
    .dead_raw = sq_dead_raw,
    .mark_done = sq_mark_done,
    .mark_retry = sq_mark_retry,
    .mark_dead = sq_mark_dead,
    .note_crash = sq_note_crash,
    .claim = sq_claim,
    .pending = sq_pending,
    .pending_counts = sq_pending_counts,
    .dlq_list = sq_dlq_list,
    .dlq_show = sq_dlq_show,
    .dlq_count = sq_dlq_count,
    .dlq_replay = sq_dlq_replay,
    .dlq_purge = sq_dlq_purge,
    .kv_get = sq_kv_get,
    .kv_set = sq_kv_set,
    .get_stats = sq_get_stats,
    .writable = sq_writable,
    .adopt = sq_adopt,
    .leased = sq_leased,
    .members = sq_members,
    .announce = sq_announce,
    .kv_get_versioned = sq_kv_get_versioned,
    .kv_cas = sq_kv_cas,
    .lock = sq_lock,
    .unlock = sq_unlock,
    .lead = sq_lead,
    .claim_ordered = sq_claim_ordered,
};

int px_store_open_sqlite(uv_loop_t *loop, const char *dir, const px_store_options *opt,
                         px_store **out, char *err, size_t errlen)
{
    px_spool_options so = {0};
    if (opt) {
        so = (px_spool_options){.durability = opt->durability,
                                .dedupe_window_ms = opt->dedupe_window_ms,
                                .max_queue = opt->max_queue,
                                .compress = opt->compress};
    }
    px_spool *spool = NULL;
    int rc = px_spool_open(loop, dir, &so, &spool, err, errlen);
    if (rc != 0) {
        return rc;
    }
    px_state *state = NULL;
    rc = px_state_open(dir, &state);
    if (rc != 0) {
        snprintf(err, errlen, "state store in %s: %s", dir, px_strerror(rc));
        px_spool_close(spool);
        return rc;
    }
    sqlite_store *s = px_xcalloc(1, sizeof(*s));
    s->spool = spool;
    s->state = state;
    px_store_local_init(&s->local, opt);
    s->base.ops = &sqlite_ops;
    s->base.impl = s;
    *out = &s->base;
    return 0;
}

void px_store_close(px_store *s)
{
    if (s) {
        s->ops->close(s->impl);
    }
}
