/* amocrm cache: users, pipelines, steps, custom fields and tags of the connected account, read
 * from amoCRM (client.h) and kept in kv; the admin API's list endpoints. */
#ifndef AMOCRM_CACHE_H
#define AMOCRM_CACHE_H

#include "core.h"

/* Done callback of a cache sync. ok = 1 when every list was read to the end; why (borrowed)
 * tells what failed otherwise. status is AMOCRM_ESTOP when the instance is going away. */
typedef void (*amocrm_sync_cb)(amocrm *a, int status, int ok, const char *why, void *arg);

enum {
    AMOCRM_SYNC_USERS = 1,
    AMOCRM_SYNC_PIPELINES = 2,
    AMOCRM_SYNC_FIELDS = 4,
    AMOCRM_SYNC_TAGS = 8
};
#define AMOCRM_SYNC_ALL \
    (AMOCRM_SYNC_USERS | AMOCRM_SYNC_PIPELINES | AMOCRM_SYNC_FIELDS | AMOCRM_SYNC_TAGS)

void amocrm_cache_load(amocrm *a);
/* Clears every cached collection (kv too). */
void amocrm_cache_clear(amocrm *a);
/* Starts reading `mask` collections from amoCRM to the end; cb (may be NULL) runs once. */
void amocrm_sync_start(amocrm *a, int mask, amocrm_sync_cb cb, void *arg);
/* GET (list a page) and PATCH (refresh) for collection `c` (AMOCRM_C_*). */
void amocrm_api_list(amocrm *a, px_http_request *req, const char *method, int c);
/* Finds a live (not deleted) cached item of collection c by its amoCRM id (and, for steps,
 * pipeline id; for fields and tags, entity "leads"/"contacts"/"companies"/"customers"; pass
 * NULL/0 otherwise). Borrowed, valid until the cache changes; NULL when absent. */
json_t *amocrm_cache_find(amocrm *a, int c, int64_t amo_id, int64_t pipeline_id,
                          const char *entity);
/* Same, by our own ID (the seed's primary key). */
json_t *amocrm_cache_find_own(amocrm *a, int c, int64_t id);
/* Ends every sync job with AMOCRM_ESTOP (destroy()). */
void amocrm_sync_destroy(amocrm *a);

#endif
