/* amocrm cache: users, pipelines, steps (statuses), custom fields and tags of the connected
 * account, read from amoCRM page by page to the end and kept in kv "cache.<name>" in the seed's
 * models. Our IDs (the seed's primary keys) stay stable across refreshes; an item amoCRM no longer
 * lists is kept with Deleted set. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "client.h"

static const char *const cache_key[AMOCRM_C_COUNT] = {"cache.users", "cache.pipelines",
                                                      "cache.steps", "cache.fields", "cache.tags"};

enum { RAW_USERS, RAW_PIPELINES, RAW_FIELDS, RAW_TAGS, RAW_COUNT };

static const struct source {
    const char *path, *embedded, *entity;
    int raw, optional;
} sources[] = {
    {"/api/v4/users", "users", NULL, RAW_USERS, 0},
    {"/api/v4/leads/pipelines", "pipelines", NULL, RAW_PIPELINES, 0},
    {"/api/v4/leads/custom_fields", "custom_fields", "leads", RAW_FIELDS, 0},
    {"/api/v4/contacts/custom_fields", "custom_fields", "contacts", RAW_FIELDS, 0},
    {"/api/v4/companies/custom_fields", "custom_fields", "companies", RAW_FIELDS, 0},
    /* customers may be switched off on an account: a refusal there means "none" */
    {"/api/v4/customers/custom_fields", "custom_fields", "customers", RAW_FIELDS, 1},
    {"/api/v4/leads/tags", "tags", "leads", RAW_TAGS, 0},
    {"/api/v4/contacts/tags", "tags", "contacts", RAW_TAGS, 0},
    {"/api/v4/companies/tags", "tags", "companies", RAW_TAGS, 0},
    {"/api/v4/customers/tags", "tags", "customers", RAW_TAGS, 1},
};
#define NSOURCES (sizeof(sources) / sizeof(sources[0]))
#define MAX_PAGES 1000

struct amocrm_sync {
    amocrm *a;
    int mask;
    size_t src;
    int64_t page;
    int retries;
    json_t *raw[RAW_COUNT];
    px_timer *timer;
    amocrm_sync_cb cb;
    void *arg;
    amocrm_sync *next;
};

void amocrm_cache_load(amocrm *a)
{
    for (int c = 0; c < AMOCRM_C_COUNT; c++) {
        json_t *v = amocrm_host->kv_get_versioned(a->ctx, cache_key[c], &a->ver_cache[c]);
        if (!json_is_array(json_object_get(v, "items"))) {
            json_decref(v);
            v = json_pack("{s:i, s:[]}", "next_id", 1, "items");
        }
        a->cache[c] = v;
    }
}

void amocrm_cache_clear(amocrm *a)
{
    for (int c = 0; c < AMOCRM_C_COUNT; c++) {
        json_decref(a->cache[c]);
        a->cache[c] = json_pack("{s:i, s:[]}", "next_id", 1, "items");
        amocrm_host->kv_set(a->ctx, cache_key[c], NULL);
    }
}

static const char *id_key(int c)
{
    return c == AMOCRM_C_USERS ? "id" : "ID";
}

static int is_deleted(int c, const json_t *it)
{
    return json_is_true(json_object_get(it, c == AMOCRM_C_USERS ? "deleted" : "Deleted"));
}

static int64_t jint(const json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

json_t *amocrm_cache_find(amocrm *a, int c, int64_t amo_id, int64_t pipeline_id, const char *entity)
{
    const char *ent_key = c == AMOCRM_C_FIELDS ? "EntityType" : "Entity";
    size_t i;
    json_t *it;
    json_array_foreach(json_object_get(a->cache[c], "items"), i, it) {
        if (is_deleted(c, it) || jint(it, c == AMOCRM_C_USERS ? "amoUserID" : "AmoID") != amo_id) {
            continue;
        }
        if (c == AMOCRM_C_STEPS && jint(it, "PipelineID") != pipeline_id) {
            continue;
        }
        const char *e = json_string_value(json_object_get(it, ent_key));
        if (entity && (!e || strcmp(e, entity) != 0)) {
            continue;
        }
        return it;
    }
    return NULL;
}

json_t *amocrm_cache_find_own(amocrm *a, int c, int64_t id)
{
    size_t i;
    json_t *it;
    json_array_foreach(json_object_get(a->cache[c], "items"), i, it) {
        if (!is_deleted(c, it) && jint(it, id_key(c)) == id) {
            return it;
        }
    }
    return NULL;
}

/* --- merging what amoCRM listed into the seed's models ------------------------------------- */

static void item_key(int c, const json_t *it, char *buf, size_t len)
{
    switch (c) {
    case AMOCRM_C_USERS:
        snprintf(buf, len, "%lld", (long long)jint(it, "amoUserID"));
        break;
    case AMOCRM_C_STEPS:
        snprintf(buf, len, "%lld:%lld", (long long)jint(it, "PipelineID"),
                 (long long)jint(it, "AmoID"));
        break;
    case AMOCRM_C_FIELDS:
    case AMOCRM_C_TAGS:
        snprintf(
            buf, len, "%s:%lld",
            json_string_value(json_object_get(it, c == AMOCRM_C_FIELDS ? "EntityType" : "Entity")),
            (long long)jint(it, "AmoID"));
        break;
    default:
        snprintf(buf, len, "%lld", (long long)jint(it, "AmoID"));
    }
}

static const char *str_or(const json_t *o, const char *k, const char *dflt)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : dflt;
}

typedef struct merge_job {
    int c;
    const json_t *fresh; /* borrowed */
} merge_job;

/* The cached collection `old` (borrowed; NULL = empty) with the items of j->fresh (items in our
 * model without ID/Deleted/CreatedAt, copied): known items keep their ID and creation time, new
 * ones take the next id, vanished ones are kept as deleted. A new reference. Runs again on the
 * newest stored value when another host stored the collection meanwhile, so the ids it hands out
 * stay unique across hosts. */
static json_t *merged(const json_t *old, void *arg)
{
    merge_job *j = arg;
    int c = j->c;
    json_t *fresh = json_deep_copy(j->fresh);
    int64_t next_id = jint(old, "next_id");
    if (next_id < 1) {
        next_id = 1;
    }
    json_t *by_key = json_object();
    size_t i;
    json_t *it;
    char key[160];
    json_array_foreach(json_object_get(old, "items"), i, it) {
        item_key(c, it, key, sizeof(key));
        json_object_set(by_key, key, it);
    }
    int64_t now = amocrm_now_ms();
    char iso[32];
    amocrm_iso_time(now, iso, sizeof(iso));
    json_t *items = json_array();
    json_array_foreach(fresh, i, it) {
        item_key(c, it, key, sizeof(key));
        json_t *was = json_object_get(by_key, key);
        json_t *created = c == AMOCRM_C_USERS ? json_string(iso) : json_integer(now / 1000);
        if (was) {
            json_object_set(it, id_key(c), json_object_get(was, id_key(c)));
            json_t *wc = json_object_get(was, c == AMOCRM_C_USERS ? "createdAt" : "CreatedAt");
            if (wc) {
                json_decref(created);
                created = json_incref(wc);
            }
            json_object_del(by_key, key);
        } else {
            json_object_set_new(it, id_key(c), json_integer(next_id++));
        }
        json_object_set_new(it, c == AMOCRM_C_USERS ? "deleted" : "Deleted", json_false());
        json_object_set_new(it, c == AMOCRM_C_USERS ? "createdAt" : "CreatedAt", created);
        json_array_append(items, it);
    }
    json_array_foreach(json_object_get(old, "items"), i, it) {
        item_key(c, it, key, sizeof(key));
        if (json_object_get(by_key, key)) { /* gone from amoCRM */
            json_t *gone = json_deep_copy(it);
            json_object_set_new(gone, c == AMOCRM_C_USERS ? "deleted" : "Deleted", json_true());
            json_array_append_new(items, gone);
        }
    }
    json_decref(by_key);
    json_decref(fresh);
    return json_pack("{s:I, s:I, s:o}", "next_id", (json_int_t)next_id, "synced_at",
                     (json_int_t)now, "items", items);
}

/* fresh: items in our model without ID/Deleted/CreatedAt (steals). */
static void merge(amocrm *a, int c, json_t *fresh)
{
    merge_job j = {c, fresh};
    json_t *nc = NULL;
    int64_t version = 0;
    if (amocrm_kv_update(a, cache_key[c], merged, &j, &nc, &version) != 0) {
        amocrm_host->log(a->ctx, PX_LOG_ERROR, "cannot store cache key=%s", cache_key[c]);
        nc = merged(a->cache[c], &j); /* served from memory until the store takes it */
    } else {
        a->ver_cache[c] = version;
    }
    json_decref(fresh);
    json_decref(a->cache[c]);
    a->cache[c] = nc;
}

static void merge_raw(amocrm *a, amocrm_sync *s)
{
    int64_t acc = jint(a->account, "amoID");
    size_t i, j;
    json_t *r, *st;
    if (s->mask & AMOCRM_SYNC_USERS) {
        json_t *fresh = json_array();
        json_array_foreach(s->raw[RAW_USERS], i, r) {
            json_t *rights = json_object_get(r, "rights");
            json_array_append_new(
                fresh, json_pack("{s:I, s:I, s:s, s:s, s:I, s:I}", "amoID", (json_int_t)acc,
                                 "amoUserID", (json_int_t)jint(r, "id"), "name",
                                 str_or(r, "name", ""), "email", str_or(r, "email", ""), "role",
                                 (json_int_t)jint(rights, "role_id"), "group",
                                 (json_int_t)jint(rights, "group_id")));
        }
        merge(a, AMOCRM_C_USERS, fresh);
    }
    if (s->mask & AMOCRM_SYNC_PIPELINES) {
        json_t *pipes = json_array(), *steps = json_array();
        json_array_foreach(s->raw[RAW_PIPELINES], i, r) {
            json_array_append_new(
                pipes, json_pack("{s:I, s:I, s:s, s:b}", "AmoID", (json_int_t)jint(r, "id"),
                                 "AccountID", (json_int_t)acc, "Name", str_or(r, "name", ""),
                                 "IsArchive", json_is_true(json_object_get(r, "is_archive"))));
            json_t *emb = json_object_get(json_object_get(r, "_embedded"), "statuses");
            json_array_foreach(emb, j, st) {
                json_array_append_new(
                    steps, json_pack("{s:I, s:I, s:I, s:s, s:s}", "AmoID",
                                     (json_int_t)jint(st, "id"), "PipelineID",
                                     (json_int_t)jint(r, "id"), "AccountID", (json_int_t)acc,
                                     "Name", str_or(st, "name", ""), "Color",
                                     str_or(st, "color", "")));
            }
        }
        merge(a, AMOCRM_C_PIPELINES, pipes);
        merge(a, AMOCRM_C_STEPS, steps);
    }
    if (s->mask & AMOCRM_SYNC_FIELDS) {
        json_t *fresh = json_array();
        json_array_foreach(s->raw[RAW_FIELDS], i, r) {
            json_t *enums = json_array();
            json_array_foreach(json_object_get(r, "enums"), j, st) {
                json_array_append_new(enums, json_pack("{s:I, s:s}", "id",
                                                       (json_int_t)jint(st, "id"), "value",
                                                       str_or(st, "value", "")));
            }
            json_array_append_new(
                fresh, json_pack("{s:I, s:s, s:I, s:s, s:s, s:s, s:o}", "AmoID",
                                 (json_int_t)jint(r, "id"), "Code", str_or(r, "code", ""),
                                 "AccountID", (json_int_t)acc, "Name", str_or(r, "name", ""),
                                 "EntityType", str_or(r, "_entity", ""), "Type",
                                 str_or(r, "type", ""), "Enums", enums));
        }
        merge(a, AMOCRM_C_FIELDS, fresh);
    }
    if (s->mask & AMOCRM_SYNC_TAGS) {
        json_t *fresh = json_array();
        json_array_foreach(s->raw[RAW_TAGS], i, r) {
            json_array_append_new(
                fresh, json_pack("{s:I, s:I, s:s, s:s, s:s}", "AmoID", (json_int_t)jint(r, "id"),
                                 "AccountID", (json_int_t)acc, "Entity", str_or(r, "_entity", ""),
                                 "Name", str_or(r, "name", ""), "Color",
                                 str_or(r, "color", "")));
        }
        merge(a, AMOCRM_C_TAGS, fresh);
    }
}

/* --- sync jobs ----------------------------------------------------------------------------- */

static int wanted(const amocrm_sync *s, size_t i)
{
    static const int bit[RAW_COUNT] = {AMOCRM_SYNC_USERS, AMOCRM_SYNC_PIPELINES, AMOCRM_SYNC_FIELDS,
                                       AMOCRM_SYNC_TAGS};
    return (s->mask & bit[sources[i].raw]) != 0;
}

static void sync_free(amocrm *a, amocrm_sync *s)
{
    for (amocrm_sync **pp = &a->syncs; *pp; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    for (int r = 0; r < RAW_COUNT; r++) {
        json_decref(s->raw[r]);
    }
    if (s->timer) {
        amocrm_host->timer_stop(s->timer);
    }
    free(s);
}

static void sync_end(amocrm *a, amocrm_sync *s, int status, int ok, const char *why)
{
    amocrm_sync_cb cb = s->cb;
    void *arg = s->arg;
    if (ok) {
        merge_raw(a, s);
        amocrm_host->log(a->ctx, PX_LOG_INFO, "cache refreshed mask=%d", s->mask);
    } else if (status != AMOCRM_ESTOP) {
        amocrm_host->log(a->ctx, PX_LOG_WARN, "cache refresh failed mask=%d why=%s", s->mask, why);
    }
    sync_free(a, s);
    if (cb) {
        cb(a, status, ok, why, arg);
    }
}

static void sync_step(amocrm *a, amocrm_sync *s);

static void on_retry(void *arg)
{
    amocrm_sync *s = arg;
    amocrm_host->timer_stop(s->timer);
    s->timer = NULL;
    sync_step(s->a, s);
}

static void on_page(amocrm *a, int status, json_t *body, uint64_t ra, const char *err, void *arg)
{
    amocrm_sync *s = arg;
    const struct source *src = &sources[s->src];
    char why[256];
    if (status == AMOCRM_ESTOP) {
        sync_end(a, s, AMOCRM_ESTOP, 0, "stopping");
        return;
    }
    if (status == 200) {
        s->retries = 0;
        json_t *items = json_object_get(json_object_get(body, "_embedded"), src->embedded);
        size_t i;
        json_t *it;
        json_array_foreach(items, i, it) {
            json_t *copy = json_deep_copy(it);
            if (src->entity) {
                json_object_set_new(copy, "_entity", json_string(src->entity));
            }
            json_array_append_new(s->raw[src->raw], copy);
        }
        json_t *next = json_object_get(json_object_get(body, "_links"), "next");
        if (json_array_size(items) > 0 && next && s->page < MAX_PAGES) {
            s->page++;
        } else {
            s->src++;
            s->page = 1;
        }
        sync_step(a, s);
        return;
    }
    if (status == 204 || (src->optional && status >= 400 && status < 500 && status != 401 &&
                          status != 429)) {
        s->src++; /* 204: nothing (more) to list */
        s->page = 1;
        sync_step(a, s);
        return;
    }
    if (status == 429 && s->retries < 5) {
        s->retries++; /* same page again once amoCRM lets us */
        amocrm_host->timer_start(a->ctx, ra ? ra : 1000, 0, on_retry, s, &s->timer);
        return;
    }
    if (status < 0) {
        snprintf(why, sizeof(why), "%s page %lld: %s", src->path, (long long)s->page,
                 err ? err : "no answer");
    } else {
        snprintf(why, sizeof(why), "%s page %lld: amocrm status %d", src->path,
                 (long long)s->page, status);
    }
    sync_end(a, s, status, 0, why);
}

static void sync_step(amocrm *a, amocrm_sync *s)
{
    while (s->src < NSOURCES && !wanted(s, s->src)) {
        s->src++;
    }
    if (s->src >= NSOURCES) {
        sync_end(a, s, 200, 1, NULL);
        return;
    }
    char path[256];
    snprintf(path, sizeof(path), "%s?page=%lld&limit=%lld", sources[s->src].path,
             (long long)s->page, (long long)a->page_limit);
    amocrm_call_start(a, "GET", path, NULL, 0, on_page, s);
}

void amocrm_sync_start(amocrm *a, int mask, amocrm_sync_cb cb, void *arg)
{
    amocrm_sync *s = calloc(1, sizeof(*s));
    s->a = a;
    s->mask = mask;
    s->page = 1;
    s->cb = cb;
    s->arg = arg;
    for (int r = 0; r < RAW_COUNT; r++) {
        s->raw[r] = json_array();
    }
    s->next = a->syncs;
    a->syncs = s;
    sync_step(a, s);
}

void amocrm_sync_destroy(amocrm *a)
{
    while (a->syncs) {
        sync_end(a, a->syncs, AMOCRM_ESTOP, 0, "stopping");
    }
}

/* --- GET (a page of the cache) and PATCH (refresh from amoCRM) ------------------------------ */

static void on_patch_done(amocrm *a, int status, int ok, const char *why, void *arg)
{
    amocrm_hold *h = arg;
    if (status == AMOCRM_ESTOP) {
        amocrm_hold_drop(a, h);
    } else if (ok) {
        amocrm_hold_answer(a, h, 200, "Success");
    } else {
        amocrm_hold_answer(a, h, 500, why ? why : "refresh failed");
    }
}

/* Reads an optional positive integer query parameter; -1 when malformed. */
static int64_t query_int(const char *query, const char *name, int64_t dflt)
{
    char *v = amocrm_query_get(query, name);
    if (!v) {
        return dflt;
    }
    json_t *j = json_string(v);
    int64_t n = 0;
    int bad = !j || amocrm_json_int(j, &n) < 0 || n < 1;
    json_decref(j);
    free(v);
    return bad ? -1 : n;
}

void amocrm_api_list(amocrm *a, px_http_request *req, const char *method, int c)
{
    if (strcmp(method, "PATCH") == 0) {
        if (!amocrm_connected(a)) {
            amocrm_respond_msg(req, 500,
                               amocrm_is_stale(a) ? "amoCRM account is stale: reconnect it"
                                                  : "no amoCRM account connected");
            return;
        }
        static const int mask[AMOCRM_C_COUNT] = {AMOCRM_SYNC_USERS, AMOCRM_SYNC_PIPELINES,
                                                 AMOCRM_SYNC_PIPELINES, AMOCRM_SYNC_FIELDS,
                                                 AMOCRM_SYNC_TAGS};
        amocrm_sync_start(a, mask[c], on_patch_done, amocrm_hold_req(a, req));
        return;
    }
    const char *q = amocrm_host->http_req_query(req);
    int64_t page = query_int(q, "page", 1);
    int64_t size = query_int(q, "size", 25);
    int64_t pipeline = c == AMOCRM_C_STEPS ? query_int(q, "pipelineID", 0) : 0;
    if (page < 0 || size < 0 || size > 1000) {
        amocrm_respond_msg(req, 400, "page and size must be positive integers (size up to 1000)");
        return;
    }
    if (c == AMOCRM_C_STEPS && pipeline <= 0) {
        amocrm_respond_msg(req, 400, "pipelineID is required");
        return;
    }
    json_t *items = json_array();
    int64_t count = 0, from = (page - 1) * size;
    size_t i;
    json_t *it;
    json_array_foreach(json_object_get(a->cache[c], "items"), i, it) {
        if (is_deleted(c, it) || (c == AMOCRM_C_STEPS && jint(it, "PipelineID") != pipeline)) {
            continue;
        }
        if (count >= from && count < from + size) {
            json_t *out = json_deep_copy(it);
            json_array_append_new(items, out);
        }
        count++;
    }
    json_t *body = json_pack("{s:I, s:o}", "count", (json_int_t)count, "items", items);
    amocrm_respond_json(req, 200, body);
    json_decref(body);
}
