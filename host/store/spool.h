/* The spool: the durable outbox between the router and the dispatcher. One SQLite database
 * DIR/spool.db in WAL mode holds events, their pending deliveries, each delivery's attempt history,
 * the dead letters and the dedupe keys. One writer thread owns the write connection and commits
 * everything queued since its last commit in one transaction (group commit); completion callbacks
 * come back to the loop thread through a uv_async_t and run there in queue order. Reads run
 * synchronously on the loop thread through a second, read-only connection.
 * Every function here is for the loop thread only (the thread of `loop` given to px_spool_open).
 * The runtime reaches it through the store interface (store.h, store_sqlite.c), never directly. */
#ifndef PX_SPOOL_H
#define PX_SPOOL_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "store.h"

typedef struct px_spool px_spool;

/* What the write-ahead log DIR/spool.db-wal is cut back to once checkpointed. Every connection
 * that writes to the file sets it (PRAGMA journal_size_limit): the cut is made by whichever of them
 * commits first after the WAL is rewound. */
#define PX_SPOOL_WAL_LIMIT_BYTES (4u << 20)

typedef struct px_spool_options {
    int durability;            /* enum px_durability (config.h): NORMAL -> synchronous=NORMAL,
                                  FSYNC -> synchronous=FULL (a flush per commit) */
    uint64_t dedupe_window_ms; /* how long a dedupe key is remembered; 0 = dedupe disabled */
    size_t max_queue;          /* puts (and dead_raw) queued and not yet committed before
                                  px_spool_put refuses with PX_EBUSY; 0 = 65536. Their copies
                                  are also capped at 64 MiB in total. */
    int compress;              /* enum px_compress (config.h): PX_COMPRESS_ZSTD stores payloads
                                  as zstd frames when that makes them smaller (each row says how
                                  it is stored, so rows of either kind are read back alike) */
    size_t dedupe_merge_at;    /* new dedupe keys held in memory (and appended on disk) before
                                  they are merged into the on-disk index; 0 = 16384 */
} px_spool_options;

/* Opens (creating `dir` (borrowed) and the database when missing, migrating an older schema) and
 * starts the writer thread. opt (borrowed) may be NULL for defaults. On success returns 0 and
 * stores the spool in *out (owned by caller; px_spool_close). On failure returns PX_ESPOOL (or a
 * libuv error for the directory) with a one-line message in err (errlen bytes, NUL-terminated)
 * and leaves *out untouched. */
int px_spool_open(uv_loop_t *loop, const char *dir, const px_spool_options *opt, px_spool **out,
                  char *err, size_t errlen);

/* Blocks until everything queued is committed (or failed), runs the pending callbacks, stops the
 * writer thread, closes both connections and uv_close()s the spool's handle. The loop must run
 * once more to finish closing; s is freed in the close callback, so it must not be used after
 * this call. NULL is a no-op. */
void px_spool_close(px_spool *s);

/* The values the spool stores are the store's (store.h). */
typedef px_store_event px_spool_event;

typedef px_store_row px_spool_row;

enum { PX_SPOOL_STORED = PX_STORE_STORED, PX_SPOOL_DUPLICATE = PX_STORE_DUPLICATE };

/* Completion of a put or dead_raw: PX_SPOOL_STORED (committed), PX_SPOOL_DUPLICATE (dropped as a
 * repeat; nothing stored), or < 0, nothing stored: PX_EBUSY (disk full, database locked, spool
 * closing: worth retrying later) or PX_ESPOOL (SQLite refused this one operation; logged). Runs
 * on the loop thread, never inside the call that queued it. */
typedef void (*px_spool_put_cb)(int status, void *arg);

/* Queues the event ev (borrowed) and its n delivery rows (borrowed; their `id` is written) as one
 * unit: either everything is committed or nothing. n may be 0: then only the dedupe key is
 * recorded (and cb still reports STORED or DUPLICATE). Returns 0 (cb will run exactly once), or
 * PX_EBUSY at once when the spool is known unwritable or the queue is full, or PX_EINVAL
 * (n > 0 with rows == NULL, or ev == NULL); cb will not run then. */
int px_spool_put(px_spool *s, const px_spool_event *ev, px_spool_row *rows, size_t n,
                 px_spool_put_cb cb, void *arg);

/* Delivery outcome updates: queued and committed in order with puts, no callback. A delivery
 * marked done while its put is still queued is dropped from the put instead: neither it nor (when
 * it was the event's last) the event is ever written, and the put still completes as usual.
 * mark_done's attempts: attempts made, this one included; 1 means no attempt history to delete. A crash before
 * the commit only means the delivery is delivered again (at-least-once). A mark that fails to
 * commit (disk full...) is kept by the writer and tried again until it commits or the spool
 * closes. Unknown ids are ignored. error / reason: borrowed, copied; NULL = "". */
void px_spool_mark_done(px_spool *s, int64_t delivery_id, uint32_t attempts);
void px_spool_mark_retry(px_spool *s, int64_t delivery_id, uint32_t attempts, int64_t next_at_ms,
                         const char *error);
/* Moves the delivery to the dead letters with reason, its attempt count and its whole attempt
 * history. The dead letter's id is the delivery's id (the one logged for the delivery). */
void px_spool_mark_dead(px_spool *s, int64_t delivery_id, uint32_t attempts, const char *reason);

/* A delivery took the process down (a plugin crashed while handling it; see crash.h): counts the
 * crash as a failed attempt (attempts + 1, an attempt row with `reason` (borrowed, copied)) and
 * one more crash of this delivery; once it has caused max_crashes crashes (0 = 3) it is moved to
 * the dead letters with a reason naming the crash, so the host does not crash-loop on it.
 * Synchronous (start-up, before deliveries are read back). Returns the delivery's crash count so
 * far (>= 1; dead-lettered when >= max_crashes), PX_ENOENT when it is not pending (already done or
 * dead), PX_EBUSY when the spool is unwritable or closing, or PX_ESPOOL. */
int px_spool_note_crash(px_spool *s, int64_t delivery_id, const char *reason,
                        uint32_t max_crashes);

/* A pending delivery read back, for retries and recovery after a restart (store.h). */
typedef px_store_delivery px_spool_loaded;

/* Synchronous: calls cb for up to `max` pending deliveries of `sink` (borrowed) with
 * id > after_id, ordered by id. Returns the number loaded or < 0 (PX_ESPOOL). Only committed rows
 * are seen; before reading it waits for every operation queued before the call to be processed
 * by the writer (read-your-writes: a delivery marked done is not loaded again), unless the spool
 * is unwritable, in which case rows with marks still queued may appear. */
int px_spool_load(px_spool *s, const char *sink, int64_t after_id, size_t max,
                  void (*cb)(const px_spool_loaded *d, void *arg), void *arg);

/* Synchronous: calls cb(sink (valid during cb), n) once per sink with pending deliveries.
 * Returns the number of sinks or < 0. Same read-your-writes rule as px_spool_load. */
int px_spool_pending_counts(px_spool *s, void (*cb)(const char *sink, int64_t n, void *arg),
                            void *arg);

/* Pending deliveries of `sink` (borrowed): committed ones plus those of puts queued and not yet
 * committed. From in-memory counts (no query): cheap enough for every emit. */
int64_t px_spool_pending(px_spool *s, const char *sink);

/* Dead letters, as JSON (*out: new reference). A dead letter's id is its delivery's id (a raw
 * one's is taken from the same sequence): unique, never given again, also after a replay, a purge
 * or a restart. list: an array of
 * {id, event_id, type, source, pipeline, sink, action, reason, attempts, died_at} (died_at in ms
 * since the epoch), the latest to die first, filtered by sink (borrowed; NULL = all), since_ms (died_at >=
 * since_ms; 0 = all), at most limit entries (0 = no limit). show: one record with every list field
 * plus time, payload (parsed JSON, or the raw text as a string when it is not JSON), params, meta,
 * hints and history [{attempt, at, error}]. Both return 0, PX_ENOENT (show: no such id) or
 * PX_ESPOOL. */
int px_spool_dlq_list(px_spool *s, const char *sink, int64_t since_ms, size_t limit,
                      json_t **out);
/* One page of the dead letters q selects, and how many it selects in all (*total; may be NULL). */
int px_spool_dlq_query(px_spool *s, const px_dlq_query *q, json_t **out, int64_t *total);
int px_spool_dlq_show(px_spool *s, int64_t id, json_t **out);
/* Number of dead letters (for metrics). Returns 0 and stores it in *n, or PX_ESPOOL. */
int px_spool_dlq_count(px_spool *s, int64_t *n);

/* Replay: moves dead letters back to pending deliveries with fresh ids and attempts 0 (their
 * attempt history is dropped). ids (borrowed, n entries) select dead letter ids; ids NULL or
 * n == 0 selects all of `sink` (borrowed; NULL = any sink). Raw dead letters (sink "") are not
 * replayable and are skipped. Purge deletes the selected dead letters; before_ms > 0 narrows it
 * to those that died before that time. Both block until the writer has committed them, return the
 * count affected or < 0 (PX_EBUSY when the spool is unwritable), and replay calls cb(new delivery
 * id, sink (valid during cb), arg) for each re-queued row after the commit (cb may be NULL). */
int px_spool_dlq_replay(px_spool *s, const int64_t *ids, size_t n, const char *sink,
                        void (*cb)(int64_t id, const char *sink, void *arg), void *arg);
int px_spool_dlq_purge(px_spool *s, const int64_t *ids, size_t n, const char *sink,
                       int64_t before_ms);

/* Raw events that never became deliveries (a source's poison message: not JSON, no job...; or a
 * mapping that failed for one target) go straight to the dead letters with `reason`, the payload
 * kept byte for byte. pipeline and sink (borrowed; NULL = "") say where it was headed, when known.
 * Queued like put, same return values and callback (never DUPLICATE: the dedupe key is ignored). */
int px_spool_dead_raw(px_spool *s, const px_spool_event *ev, const char *pipeline,
                      const char *sink, const char *reason, px_spool_put_cb cb, void *arg);

typedef px_store_stats px_spool_stats;

/* Fills *st (caller's memory) with a snapshot. */
void px_spool_get_stats(px_spool *s, px_spool_stats *st);
/* 1 when the spool accepts puts, 0 while it is unwritable (probing every ~500 ms). */
int px_spool_writable(px_spool *s);

/* Internal, for tests: runs `sql` (borrowed) on the writer connection between two batches and
 * waits for it (e.g. "PRAGMA max_page_count=..." to simulate a full disk); sql NULL prunes the
 * expired dedupe keys now. Runs even while the spool is unwritable. Returns 0 or PX_ESPOOL. */
int px__spool_exec(px_spool *s, const char *sql);

#endif
