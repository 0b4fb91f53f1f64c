/* Per-instance key/value state (OAuth tokens, cursors, cached lookups): table kv(instance, key,
 * value) in the spool's database file DIR/spool.db, through a connection of its own. Values are
 * JSON. Writes are synchronous and durable (synchronous=FULL): committed before px_state_set
 * returns. The table is created IF NOT EXISTS and the spool's schema version is not touched, so the
 * spool and the state store can open the same file in any order. Loop thread only. */
#ifndef PX_STATE_H
#define PX_STATE_H

#include <stdint.h>

#include <jansson.h>

typedef struct px_state px_state;

/* Opens (creating `dir` (borrowed) and the database when missing) the store. On success returns 0
 * and stores it in *out (owned by caller; px_state_close); on failure returns PX_ESPOOL or a
 * libuv error and leaves *out untouched. */
int px_state_open(const char *dir, px_state **out);

/* Returns the value of (instance, key) (both borrowed) as a new reference, or NULL when absent
 * (or unreadable; logged). */
json_t *px_state_get(px_state *st, const char *instance, const char *key);

/* Stores value (borrowed; any JSON value, encoded with JSON_ENCODE_ANY) under (instance, key);
 * value NULL deletes the key. Returns 0 once committed, PX_EINVAL for NULL instance/key or an
 * unencodable value, PX_ESPOOL when the write failed (nothing changed then). */
int px_state_set(px_state *st, const char *instance, const char *key, const json_t *value);

/* Versioned access, for compare-and-set (see px_store_kv_cas in store.h): every write gives the
 * key a version greater than any the table holds, so a deleted and re-created key never repeats
 * one. get_versioned: as px_state_get, with the version in *version (0 when absent). cas: writes
 * value (NULL deletes) only when the key's version is still `expected` (0 = absent); returns 0 and
 * the new version in *version (may be NULL), PX_ECONFLICT, PX_EINVAL or PX_ESPOOL. */
json_t *px_state_get_versioned(px_state *st, const char *instance, const char *key,
                               int64_t *version);
int px_state_cas(px_state *st, const char *instance, const char *key, int64_t expected,
                 const json_t *value, int64_t *version);

/* Closes the connection and frees st. NULL is a no-op. */
void px_state_close(px_state *st);

#endif
