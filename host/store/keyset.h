/* The spool's recent dedupe keys, in memory: (source, key) -> expiry, the index of the
 * append-only table dedupe_recent. Keys come from outside (message ids, body fields), so they are
 * hashed with SipHash-1-3 under a key drawn at creation: no one can aim keys at one bucket.
 *
 * Sets are transactional: px_keyset_commit keeps the sets made since the last commit or rollback,
 * px_keyset_rollback undoes them, so the set always matches what the database committed. Entries
 * are never removed one by one; px_keyset_clear empties the set (after its keys moved on disk).
 * Owned by one thread (the spool's writer). */
#ifndef PX_KEYSET_H
#define PX_KEYSET_H

#include <stddef.h>
#include <stdint.h>

typedef struct px_keyset px_keyset;

/* Returns an empty set (owned by caller; px_keyset_free). */
px_keyset *px_keyset_new(void);
void px_keyset_free(px_keyset *ks);

/* 1 with *expires_ms when (source, key) (both borrowed, NUL-terminated) is held; 0 when not. */
int px_keyset_get(const px_keyset *ks, const char *source, const char *key, int64_t *expires_ms);

/* Holds (source, key) (copied) with expiry expires_ms, until the next rollback undoes it. */
void px_keyset_set(px_keyset *ks, const char *source, const char *key, int64_t expires_ms);

void px_keyset_commit(px_keyset *ks);
void px_keyset_rollback(px_keyset *ks);

/* Entries held, counting those a rollback emptied (they are reused by a later set). */
size_t px_keyset_count(const px_keyset *ks);

/* Forgets every entry (pending sets too). */
void px_keyset_clear(px_keyset *ks);

#endif
