/* The store: everything the host keeps durably, behind one interface the runtime calls.
 *
 * What it holds:
 *   - events, each with the deliveries the router made of it (one per target sink), written as
 *     one unit together with the event's dedupe key;
 *   - per delivery, its attempts so far, the time of its next attempt and its attempt history;
 *   - dead letters: deliveries that will not be tried again, and raw events that never became
 *     deliveries, with their reason and history, until replayed or purged;
 *   - dedupe keys: (source, key) pairs, unique while their window lasts;
 *   - per-instance state: a JSON value per (instance, key), what plugins read and write through
 *     kv_get / kv_set.
 *
 * The words of the interface, and what they mean for a backend shared by several hosts:
 *   - A put is *persisted* when its callback says STORED: from then on the event survives a
 *     crash of this host. Backends group the puts of one loop turn into one commit (group commit)
 *     and report every put of that commit after it, on the loop, never inside the call.
 *   - Every delivery has an id, taken from one sequence shared by deliveries and dead letters:
 *     unique, increasing, never given twice, also across restarts and hosts. Within a sink the id
 *     is the ordering key: deliveries leave in id order.
 *   - A delivery is *claimed* by the host that holds it: the host that put it (which may deliver
 *     it before its put is persisted: see put) or the host that read it back with claim. A claim
 *     is a lease: a backend shared by several hosts renews the leases of this host's claims while
 *     the host is alive, and a claim whose lease expired (its host died) may be claimed by another
 *     host. Marking a delivery done, retry or dead ends the claim (a retry is claimable again at
 *     its next_at). A backend for one host holds every lease trivially.
 *   - Dedupe is a unique constraint on (source, key): a second put of the same pair within the
 *     window, from any host, completes as DUPLICATE and stores nothing.
 *
 * Calling convention: every function here is for the loop thread only (the thread of the loop
 * given at open); none blocks on the network. The px_store_* functions below are the interface:
 * each is one call through the backend's table (px_store_ops), so the per-event path costs a
 * function-pointer call over the backend's own code.
 *
 * The PostgreSQL backend answers the synchronous calls (claim, adopt, note_crash, kv, dlq, lock)
 * with one round trip on its own connection, bounded by a statement timeout, and refuses them at
 * once with PX_EBUSY while the database is known unreachable; puts and marks go through its
 * group-commit thread and never wait on the loop.
 *
 * Backends: store_sqlite.c (SQLite file DIR/spool.db: spool.c and state.c; the default),
 * store_pg.c (PostgreSQL, shared by several hosts) and store_memory.c (in memory: tests and the
 * plugin test kit). */
#ifndef PX_STORE_H
#define PX_STORE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

typedef struct px_store px_store;

/* An event as the store keeps it. Every pointer is borrowed for the call and copied. */
typedef struct px_store_event {
    const char *id, *type, *source; /* NUL-terminated; NULL is stored as "" */
    const char *dedupe_key;         /* NULL = none; a repeat (same source + key) within the window
                                       is a duplicate */
    int64_t time_ms;                /* event time, ms since the epoch */
    const char *payload;            /* JSON text, payload_len bytes (kept byte for byte) */
    size_t payload_len;
    const char *meta;               /* JSON object text or NULL */
    const char *hints;              /* JSON object text or NULL */
} px_store_event;

/* One delivery of an event to a sink. Strings borrowed for the call and copied. */
typedef struct px_store_row {
    const char *pipeline, *sink, *action; /* NULL is stored as "" */
    const char *params;                   /* JSON text, params_len bytes; NULL = "{}" */
    size_t params_len;
    int ordered; /* 1: the sink is ordered across hosts (see "Ordered sinks" below) */
    int64_t id;  /* OUT: assigned by px_store_put before it returns */
} px_store_row;

/* A delivery read back by a claim. Every pointer is valid only during the callback. ev.dedupe_key
 * is NULL; ev.meta / ev.hints are NULL when absent; ev.payload is NUL-terminated in addition to
 * payload_len. */
typedef struct px_store_delivery {
    int64_t id;
    const char *pipeline, *sink, *action;
    const char *params;     /* JSON text, NUL-terminated */
    uint32_t attempts;      /* attempts made so far (0 for a fresh delivery) */
    int64_t next_at_ms;     /* earliest time for the next attempt, ms since the epoch; 0 = now */
    const char *last_error; /* error of the latest attempt, or NULL */
    int64_t seq;            /* claim_ordered: the delivery's place in commit order; else 0 */
    px_store_event ev;
} px_store_delivery;

/* Put outcomes (besides < 0). */
enum { PX_STORE_STORED = 0, PX_STORE_DUPLICATE = 1 };

/* Completion of a put or dead_raw: PX_STORE_STORED (persisted), PX_STORE_DUPLICATE (dropped as a
 * repeat; nothing stored), or < 0, nothing stored: PX_EBUSY (store unwritable or unreachable,
 * closing: worth retrying later) or PX_ESPOOL (the backend refused this one operation; logged).
 * Runs on the loop thread, never inside the call that queued it. */
typedef void (*px_store_put_cb)(int status, void *arg);

/* Counters for status and metrics. Backends fill what applies to them and leave the rest 0. */
typedef struct px_store_stats {
    uint64_t commits;        /* transactions committed */
    uint64_t rows_committed; /* operations (puts, marks...) committed */
    uint64_t last_batch;     /* operations in the latest commit */
    uint64_t max_batch;      /* largest commit so far */
    double commit_ms_last, commit_ms_max; /* wall time of a commit incl. its statements */
    uint64_t duplicates;     /* puts dropped as duplicates */
    uint64_t elided;         /* deliveries done before their put was written: never written */
    uint64_t busy_refusals;  /* puts refused or failed with PX_EBUSY */
    uint64_t write_errors;   /* commits rolled back */
    uint64_t marks_refused;  /* marks dropped: the delivery was no longer held by this host */
    int writable;            /* 1 while writes succeed */
    size_t queued;           /* operations waiting for their commit */
} px_store_stats;

/* The operations a backend provides; `b` is the backend's own state (px_store.impl). Each is
 * documented at its px_store_* function below. Every slot is required. */
/* Which dead letters a listing selects, and which page of them (every field optional: NULL, 0). */
typedef struct px_dlq_query {
    const char *sink;     /* exact sink name (borrowed) */
    const char *pipeline; /* exact pipeline name (borrowed) */
    const char *reason;   /* text the reason contains, ASCII case ignored (borrowed) */
    int64_t since_ms;     /* died_at >= since_ms */
    int64_t until_ms;     /* died_at < until_ms; 0 = no bound */
    size_t offset;        /* matches skipped, latest first */
    size_t limit;         /* at most this many; 0 = no limit */
} px_dlq_query;

typedef struct px_store_ops {
    const char *name; /* "sqlite", "postgres", "memory" */
    int shared;       /* 1: several hosts may share the store (see "Several hosts") */
    void (*close)(void *b);
    int (*put)(void *b, const px_store_event *ev, px_store_row *rows, size_t n,
               px_store_put_cb cb, void *arg);
    int (*dead_raw)(void *b, const px_store_event *ev, const char *pipeline, const char *sink,
                    const char *reason, px_store_put_cb cb, void *arg);
    void (*mark_done)(void *b, int64_t id, uint32_t attempts);
    void (*mark_retry)(void *b, int64_t id, uint32_t attempts, int64_t next_at_ms,
                       const char *error);
    void (*mark_dead)(void *b, int64_t id, uint32_t attempts, const char *reason);
    int (*note_crash)(void *b, int64_t id, const char *reason, uint32_t max_crashes);
    int (*claim)(void *b, const char *sink, int64_t after_id, size_t max,
                 void (*cb)(const px_store_delivery *d, void *arg), void *arg);
    int64_t (*pending)(void *b, const char *sink);
    int (*pending_counts)(void *b, void (*cb)(const char *sink, int64_t n, void *arg), void *arg);
    int (*dlq_list)(void *b, const px_dlq_query *q, json_t **out, int64_t *total);
    int (*dlq_show)(void *b, int64_t id, json_t **out);
    int (*dlq_count)(void *b, int64_t *n);
    int (*dlq_replay)(void *b, const int64_t *ids, size_t n, const char *sink,
                      void (*cb)(int64_t id, const char *sink, void *arg), void *arg);
    int (*dlq_purge)(void *b, const int64_t *ids, size_t n, const char *sink, int64_t before_ms);
    json_t *(*kv_get)(void *b, const char *instance, const char *key);
    int (*kv_set)(void *b, const char *instance, const char *key, const json_t *value);
    void (*get_stats)(void *b, px_store_stats *st);
    int (*writable)(void *b);
    /* several hosts (see "Several hosts" below) */
    int (*adopt)(void *b, const char *sink, size_t max,
                 void (*cb)(const px_store_delivery *d, void *arg), void *arg);
    int (*leased)(void *b);
    int (*members)(void *b, json_t **out);
    void (*announce)(void *b, const char *config_hash);
    json_t *(*kv_get_versioned)(void *b, const char *instance, const char *key,
                                int64_t *version);
    int (*kv_cas)(void *b, const char *instance, const char *key, int64_t expected,
                  const json_t *value, int64_t *version);
    int (*lock)(void *b, const char *name, const char *holder, uint32_t ttl_ms);
    int (*unlock)(void *b, const char *name, const char *holder);
    int (*lead)(void *b, const char *sink);
    int (*claim_ordered)(void *b, const char *sink, int64_t after_seq, size_t max,
                         void (*cb)(const px_store_delivery *d, void *arg), void *arg);
} px_store_ops;

/* A store: a backend's table and state. Made by a px_store_open_* function. */
struct px_store {
    const px_store_ops *ops; /* static storage */
    void *impl;              /* owned by the store; freed by close */
};

/* What every backend is opened with. */
typedef struct px_store_options {
    int durability;            /* enum px_durability (config.h); a backend that cannot lose a
                                  commit ignores it */
    uint64_t dedupe_window_ms; /* how long a dedupe key is unique; 0 = dedupe disabled */
    size_t max_queue;          /* puts queued and not yet persisted before put refuses with
                                  PX_EBUSY; 0 = the backend's default */
    int compress;              /* enum px_compress (config.h): how the SQLite store keeps event
                                  payloads; other backends ignore it */
    /* what a backend shared by several hosts records of this one (borrowed for the open call;
       NULL = ""); one-host backends ignore them */
    const char *host_id;     /* unique per host; see config.h px_host_cfg.host_id */
    const char *version;     /* the host's version (PX_VERSION) */
    const char *config_hash; /* hash of the running configuration; announce() updates it */
    uint32_t lease_ms;       /* how long this host's claims outlive its last heartbeat; 0 = 15000 */
} px_store_options;

/* Opens the SQLite store in `dir` (borrowed; created when missing): the spool and the state in
 * DIR/spool.db, as spool.h and state.h describe them. opt (borrowed) may be NULL for defaults.
 * On success returns 0 and stores the store in *out (owned by caller; px_store_close). On
 * failure returns PX_ESPOOL or a libuv error with a one-line message in err (errlen bytes,
 * NUL-terminated) and leaves *out untouched. */
int px_store_open_sqlite(uv_loop_t *loop, const char *dir, const px_store_options *opt,
                         px_store **out, char *err, size_t errlen);

/* Opens the PostgreSQL store at `url` (a libpq connection string or URI, borrowed), shared by
 * every host opened with the same database: the schema is created or migrated on open (refused
 * with a one-line message when the database's schema is newer than this binary). opt->host_id
 * names this host among them. Same contract as px_store_open_sqlite otherwise; err never
 * contains the URL's password. */
int px_store_open_pg(uv_loop_t *loop, const char *url, const px_store_options *opt,
                     px_store **out, char *err, size_t errlen);

/* Opens an empty store in memory on `loop`: nothing survives its close. Puts are persisted at the
 * next loop turn (a commit of everything put in this one). Same contract as the SQLite store
 * otherwise. Sized for tests: lookups by id are linear. Returns 0 and stores the store in *out
 * (owned by caller; px_store_close). */
int px_store_open_memory(uv_loop_t *loop, const px_store_options *opt, px_store **out);
/* As px_store_open_memory, sharing the cluster state of memory store `with` (borrowed; NULL =
 * a new cluster): the state and its versions (kv_*), the named leases and the member list
 * (each handle a member with opt->host_id; "self" is this handle) are common to every handle
 * opened with it, as on a store shared by several hosts; the spool (put, claim, dead letters,
 * dedupe) stays this handle's own. Each handle is closed on its own; the shared state goes with
 * the last. Lets several runtimes on one loop act as a cluster in tests. */
int px_store_open_memory_shared(uv_loop_t *loop, px_store *with, const px_store_options *opt,
                                px_store **out);

/* Completes every put queued (their callbacks run), then releases the backend; handles it owns
 * are uv_close()d, so the loop must run once more to finish. s must not be used after this call.
 * NULL is a no-op. */
void px_store_close(px_store *s);

/* Queues the event ev (borrowed) and its n delivery rows (borrowed; their `id` is written before
 * the call returns) as one unit: either everything is persisted or nothing. n may be 0: then only
 * the dedupe key is recorded (cb still reports STORED or DUPLICATE). The rows are claimed by this
 * host from the start: the runtime may deliver them before cb runs, and a delivery marked done
 * before its put was written need never be written at all (the put still completes as usual).
 * Returns 0 (cb will run exactly once), or PX_EBUSY at once when the store is known unwritable or
 * its queue is full, or PX_EINVAL (n > 0 with rows == NULL, or ev == NULL); cb will not run then. */
static inline int px_store_put(px_store *s, const px_store_event *ev, px_store_row *rows,
                               size_t n, px_store_put_cb cb, void *arg)
{
    return s->ops->put(s->impl, ev, rows, n, cb, arg);
}

/* Raw events that never became deliveries (a source's poison message; a mapping that failed for
 * one target) go straight to the dead letters with `reason`, the payload kept byte for byte.
 * pipeline and sink (borrowed; NULL = "") say where it was headed, when known. Queued like put,
 * same return values and callback (never DUPLICATE: the dedupe key is ignored). */
static inline int px_store_dead_raw(px_store *s, const px_store_event *ev, const char *pipeline,
                                    const char *sink, const char *reason, px_store_put_cb cb,
                                    void *arg)
{
    return s->ops->dead_raw(s->impl, ev, pipeline, sink, reason, cb, arg);
}

/* Outcomes of a claimed delivery; each ends the claim. Ordered with the puts (a mark never
 * overtakes the put of its delivery), no callback; a mark that fails to persist is kept and tried
 * again until it does or the store closes (a crash before it only means the delivery runs again:
 * at-least-once). Unknown ids are ignored. A backend shared by several hosts applies a mark only
 * while this host still holds the delivery (its owner is this host): a host cut off from the
 * database whose claim another host adopted meanwhile does not finish it; such a mark is logged,
 * counted (px_store_stats.marks_refused) and dropped. error / reason: borrowed, copied; NULL = "".
 * done: attempts made, this one included; the delivery and its history are deleted (and its
 * event, when it was the event's last). retry: attempts made so far; the delivery is claimable
 * again from next_at_ms, with an attempt {attempts, now, error} added to its history.
 * dead: moved to the dead letters with reason, its attempt count and its history; the dead
 * letter's id is the delivery's id. */
static inline void px_store_mark_done(px_store *s, int64_t id, uint32_t attempts)
{
    s->ops->mark_done(s->impl, id, attempts);
}
static inline void px_store_mark_retry(px_store *s, int64_t id, uint32_t attempts,
                                       int64_t next_at_ms, const char *error)
{
    s->ops->mark_retry(s->impl, id, attempts, next_at_ms, error);
}
static inline void px_store_mark_dead(px_store *s, int64_t id, uint32_t attempts,
                                      const char *reason)
{
    s->ops->mark_dead(s->impl, id, attempts, reason);
}

/* A delivery took the process down (see crash.h): counts the crash as a failed attempt (attempts
 * + 1, an attempt with `reason` (borrowed)) and one more crash of this delivery; once it has caused
 * max_crashes crashes (0 = 3) it is moved to the dead letters, so the host does not crash-loop on
 * it. Synchronous (start-up, before claims). Returns the crash count so far (>= 1), PX_ENOENT when
 * the delivery is not pending, PX_EBUSY when the store is unwritable, or PX_ESPOOL. */
static inline int px_store_note_crash(px_store *s, int64_t id, const char *reason,
                                      uint32_t max_crashes)
{
    return s->ops->note_crash(s->impl, id, reason, max_crashes);
}

/* Claims up to `max` pending deliveries of `sink` (borrowed) with id > after_id, in id order (the
 * sink's ordering key), and calls cb for each: retries waiting for their next_at included (the
 * caller schedules them). after_id is the caller's cursor: the highest id it already holds.
 * Synchronous; sees every put and mark this host queued before the call (read-your-writes), and
 * never a delivery claimed by another host whose lease holds. Returns the number passed to cb,
 * or < 0 (PX_ESPOOL; PX_EBUSY when the store is unreachable). */
static inline int px_store_claim(px_store *s, const char *sink, int64_t after_id, size_t max,
                                 void (*cb)(const px_store_delivery *d, void *arg), void *arg)
{
    return s->ops->claim(s->impl, sink, after_id, max, cb, arg);
}

/* Pending deliveries of `sink` (borrowed), persisted ones plus those of puts queued: from
 * counters, cheap enough for every emit. */
static inline int64_t px_store_pending(px_store *s, const char *sink)
{
    return s->ops->pending(s->impl, sink);
}

/* Calls cb(sink (valid during cb), n) once per sink with pending deliveries. Returns the number
 * of sinks or < 0. */
static inline int px_store_pending_counts(px_store *s,
                                          void (*cb)(const char *sink, int64_t n, void *arg),
                                          void *arg)
{
    return s->ops->pending_counts(s->impl, cb, arg);
}

/* Dead letters, as JSON (*out: new reference), the same for every backend and every host.
 * list: an array of {id, event_id, type, source, pipeline, sink, action, reason, attempts,
 * died_at} (died_at in ms since the epoch), the latest to die first, filtered by sink (borrowed;
 * NULL = all), since_ms (died_at >= since_ms; 0 = all), at most limit entries (0 = no limit).
 * query: the same list for a px_dlq_query (one page of it), with the number of dead letters the
 * whole filter matches in *total (may be NULL).
 * show: one record with every list field plus time, payload (parsed JSON, or the raw text as a
 * string when it is not JSON), params, meta, hints and history [{attempt, at, error}]. Both
 * return 0, PX_ENOENT (show: no such id) or PX_ESPOOL. count: 0 and *n, or PX_ESPOOL. */
static inline int px_store_dlq_query(px_store *s, const px_dlq_query *q, json_t **out,
                                     int64_t *total)
{
    return s->ops->dlq_list(s->impl, q, out, total);
}
static inline int px_store_dlq_list(px_store *s, const char *sink, int64_t since_ms,
                                    size_t limit, json_t **out)
{
    px_dlq_query q = {.sink = sink, .since_ms = since_ms, .limit = limit};
    return px_store_dlq_query(s, &q, out, NULL);
}
static inline int px_store_dlq_show(px_store *s, int64_t id, json_t **out)
{
    return s->ops->dlq_show(s->impl, id, out);
}
static inline int px_store_dlq_count(px_store *s, int64_t *n)
{
    return s->ops->dlq_count(s->impl, n);
}

/* Replay moves dead letters back to pending deliveries with fresh ids and attempts 0 (their
 * history dropped); purge deletes them. ids (borrowed, n entries) select dead letter ids; ids
 * NULL or n == 0 selects all of `sink` (borrowed; NULL = any sink). Raw dead letters (sink "")
 * are not replayable and are skipped. Purge's before_ms > 0 narrows it to those that died before
 * that time. Both return once persisted, with the count affected or < 0 (PX_EBUSY when the store
 * is unwritable); replay calls cb(new id, sink (valid during cb), arg) for each re-queued
 * delivery after it is persisted (cb may be NULL). */
static inline int px_store_dlq_replay(px_store *s, const int64_t *ids, size_t n, const char *sink,
                                      void (*cb)(int64_t id, const char *sink, void *arg),
                                      void *arg)
{
    return s->ops->dlq_replay(s->impl, ids, n, sink, cb, arg);
}
static inline int px_store_dlq_purge(px_store *s, const int64_t *ids, size_t n, const char *sink,
                                     int64_t before_ms)
{
    return s->ops->dlq_purge(s->impl, ids, n, sink, before_ms);
}

/* Per-instance state. get: the value of (instance, key) (both borrowed) as a new reference, or
 * NULL when absent (or unreadable; logged). set: stores value (borrowed; any JSON value) under
 * (instance, key), NULL deletes the key; returns 0 once persisted, PX_EINVAL for NULL
 * instance/key or an unencodable value, PX_ESPOOL when the write failed (nothing changed). */
static inline json_t *px_store_kv_get(px_store *s, const char *instance, const char *key)
{
    return s->ops->kv_get(s->impl, instance, key);
}
static inline int px_store_kv_set(px_store *s, const char *instance, const char *key,
                                  const json_t *value)
{
    return s->ops->kv_set(s->impl, instance, key, value);
}

/* Fills *st (caller's memory) with a snapshot of the counters. */
static inline void px_store_get_stats(px_store *s, px_store_stats *st)
{
    s->ops->get_stats(s->impl, st);
}

/* 1 when the store accepts puts, 0 while it is unwritable (the backend probes and recovers by
 * itself). */
static inline int px_store_writable(px_store *s)
{
    return s->ops->writable(s->impl);
}

/* --- Several hosts --------------------------------------------------------------------------
 * A backend shared by several hosts (PostgreSQL) keeps one row per host: its id, version, config
 * hash, start and last heartbeat. The backend renews this host's lease (its heartbeat) by itself,
 * on its own schedule, every lease_ms / 5 or so; the claims of a host whose heartbeat is older than
 * lease_ms are *orphaned* and any other host may adopt them. The one-host backends (SQLite,
 * memory) answer these trivially: nothing to adopt, the lease always held, one member. A clean
 * close marks this host's row stopped and gives up its named leases, so the other hosts adopt its
 * claims at once instead of after the lease. Adoption leaves ordered deliveries alone: the
 * leader of their sink claims them (see "Ordered sinks"). */

/* Claims up to `max` orphaned deliveries of `sink` (borrowed), whatever their id, and calls cb for
 * each, in id order, as px_store_claim does. Synchronous. Returns the number passed to cb or < 0
 * (PX_EBUSY when the store is unreachable). */
static inline int px_store_adopt(px_store *s, const char *sink, size_t max,
                                 void (*cb)(const px_store_delivery *d, void *arg), void *arg)
{
    return s->ops->adopt(s->impl, sink, max, cb, arg);
}

/* 1 while this host's lease holds, so it may start deliveries; 0 once its latest successful
 * renewal is older than the renewal deadline (shorter than the lease), so a host cut off from the
 * store stops delivering before another host may adopt its claims. */
static inline int px_store_leased(px_store *s)
{
    return s->ops->leased(s->impl);
}

/* The hosts sharing this store, as a new JSON array of {host_id, version, config_hash,
 * started_at, heartbeat_at (ms since the epoch), alive (bool: heartbeat within the lease), self
 * (bool)}, this host included. Returns 0 or < 0. */
static inline int px_store_members(px_store *s, json_t **out)
{
    return s->ops->members(s->impl, out);
}

/* Records this host's new configuration hash (borrowed) after a reload. */
static inline void px_store_announce(px_store *s, const char *config_hash)
{
    s->ops->announce(s->impl, config_hash);
}

/* Versioned state, for compare-and-set between hosts. kv_get_versioned: as px_store_kv_get, and
 * *version (not NULL) gets the value's version: > 0, changed by every set, 0 when absent.
 * kv_cas: stores value (borrowed; NULL deletes) under (instance, key) only when its version is
 * still `expected` (0 = only when absent); returns 0 and the new version in *version (may be
 * NULL; 0 after a delete), PX_ECONFLICT when the version moved (nothing changed), PX_EINVAL,
 * PX_ESPOOL or PX_EBUSY. */
static inline json_t *px_store_kv_get_versioned(px_store *s, const char *instance,
                                                const char *key, int64_t *version)
{
    return s->ops->kv_get_versioned(s->impl, instance, key, version);
}
static inline int px_store_kv_cas(px_store *s, const char *instance, const char *key,
                                  int64_t expected, const json_t *value, int64_t *version)
{
    return s->ops->kv_cas(s->impl, instance, key, expected, value, version);
}

/* Named leases. lock: takes or renews `name` (borrowed) for `holder` (borrowed; unique per holder,
 * e.g. host id + instance + generation) for ttl_ms; returns 1 when the holder now holds it, 0 when
 * another holder does (and its ttl has not run out), < 0 on error (PX_EBUSY: unreachable). unlock:
 * gives it up when `holder` holds it; returns 0 (also when it did not hold it) or < 0. */
static inline int px_store_lock(px_store *s, const char *name, const char *holder,
                                uint32_t ttl_ms)
{
    return s->ops->lock(s->impl, name, holder, ttl_ms);
}
static inline int px_store_unlock(px_store *s, const char *name, const char *holder)
{
    return s->ops->unlock(s->impl, name, holder);
}

/* --- Ordered sinks ---------------------------------------------------------------------------
 * A sink configured `ordered: true` delivers in arrival order across every host sharing the store,
 * by one host at a time, its leader. A row put with `ordered` set is held by no host until the
 * leader claims it: a shared backend gives it, in the transaction that commits it, a place in one
 * commit order shared by every host (later commits get higher places: it is the arrival order,
 * whatever host put it), and the runtime does not deliver it from its put; the leader reads it
 * back with px_store_claim_ordered. A one-host backend ignores `ordered`: id order is arrival
 * order there, and px_store_lead always answers 1.
 * The leader's claims are a lease like this host's others: a host that stops (or whose lease
 * lapses) loses the lead after lease_ms, and the next host to ask for it takes it; a clean close
 * gives it up at once. */

/* Takes or renews the lead of ordered sink `sink` (borrowed) for this host, for the store's lease.
 * Returns 1 while this host leads it, 0 while another does, < 0 (PX_EBUSY: unreachable). */
static inline int px_store_lead(px_store *s, const char *sink)
{
    return s->ops->lead(s->impl, sink);
}

/* As px_store_claim, for the leader of an ordered sink: claims up to `max` pending deliveries of
 * `sink` put with `ordered` by any host (or held by a host whose lease lapsed), whose place in the
 * commit order is after after_seq, in that order, and calls cb for each with d->seq set: the
 * caller's cursor is the highest seq it holds. Deliveries held in memory by a previous leader
 * that is still alive are claimed too: only call this while px_store_lead answers 1. One-host
 * backends: px_store_claim with seq = id. Returns the number passed to cb or < 0. */
static inline int px_store_claim_ordered(px_store *s, const char *sink, int64_t after_seq,
                                         size_t max,
                                         void (*cb)(const px_store_delivery *d, void *arg),
                                         void *arg)
{
    return s->ops->claim_ordered(s->impl, sink, after_seq, max, cb, arg);
}

/* Internal, shared by the backends: JSON text p (len bytes; NULL gives null) parsed, or as a
 * string when it is not JSON, or {"base64": ...} when it is not even UTF-8. New reference. */
json_t *px__store_json_or_text(const char *p, size_t len);

#endif
