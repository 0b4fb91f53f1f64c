/* amocrm cache: users, pipelines, steps, custom fields and tags of the connected account, read
 * from amoCRM (client.h) and kept in kv; the admin API's list endpoints. */
#ifndef PX_AMOCRM_CACHE_H
#define PX_AMOCRM_CACHE_H

#include "core.h"

/* Done callback of a cache sync. ok = 1 when every list was read to the end; why (borrowed)
 * tells what failed otherwise. status is AMO_ESTOP when the instance is going away. */
typedef void (*amo_sync_cb)(amo *a, int status, int ok, const char *why, void *arg);

enum { AMO_SYNC_USERS = 1, AMO_SYNC_PIPELINES = 2, AMO_SYNC_FIELDS = 4, AMO_SYNC_TAGS = 8 };
#define AMO_SYNC_ALL (AMO_SYNC_USERS | AMO_SYNC_PIPELINES | AMO_SYNC_FIELDS | AMO_SYNC_TAGS)

void amo_cache_load(amo *a);
/* Clears every cached collection (kv too). */
void amo_cache_clear(amo *a);
/* Starts reading `mask` collections from amoCRM to the end; cb (may be NULL) runs once. */
void amo_sync_start(amo *a, int mask, amo_sync_cb cb, void *arg);
/* GET (list a page) and PATCH (refresh) for collection `c` (AMO_C_*). */
void amo_api_list(amo *a, px_http_request *req, const char *method, int c);
/* Finds a live (not deleted) cached item of collection c by its amoCRM id (and, for steps,
 * pipeline id; for fields and tags, entity "leads"/"contacts"/"companies"/"customers"; pass
 * NULL/0 otherwise). Borrowed, valid until the cache changes; NULL when absent. */
json_t *amo_cache_find(amo *a, int c, int64_t amo_id, int64_t pipeline_id, const char *entity);
/* Same, by our own ID (the seed's primary key). */
json_t *amo_cache_find_own(amo *a, int c, int64_t id);
/* Ends every sync job with AMO_ESTOP (destroy()). */
void amo_sync_destroy(amo *a);

#endif
