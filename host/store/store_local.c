/* The one-host half of the "several hosts" interface (see store_local.h). */
#include "store_local.h"

#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "err.h"
#include "mem.h"

void px_store_local_init(px_store_local *l, const px_store_options *opt)
{
    l->locks = json_object();
    l->host_id = px_xstrdup(opt && opt->host_id ? opt->host_id : "");
    l->version = px_xstrdup(opt && opt->version ? opt->version : "");
    l->config_hash = px_xstrdup(opt && opt->config_hash ? opt->config_hash : "");
    l->started_at = px_now_ms();
}

void px_store_local_free(px_store_local *l)
{
    json_decref(l->locks);
    free(l->host_id);
    free(l->version);
    free(l->config_hash);
}

int px_store_local_lock(px_store_local *l, const char *name, const char *holder, uint32_t ttl_ms)
{
    if (!name || !holder || ttl_ms == 0) {
        return PX_EINVAL;
    }
    int64_t now = px_now_ms();
    json_t *cur = json_object_get(l->locks, name);
    if (cur && strcmp(json_string_value(json_object_get(cur, "holder")), holder) != 0 &&
        json_integer_value(json_object_get(cur, "until")) > now) {
        return 0;
    }
    json_object_set_new(l->locks, name,
                        json_pack("{s:s, s:I}", "holder", holder, "until",
                                  (json_int_t)(now + (int64_t)ttl_ms)));
    return 1;
}

int px_store_local_unlock(px_store_local *l, const char *name, const char *holder)
{
    if (!name || !holder) {
        return PX_EINVAL;
    }
    json_t *cur = json_object_get(l->locks, name);
    if (cur && strcmp(json_string_value(json_object_get(cur, "holder")), holder) == 0) {
        json_object_del(l->locks, name);
    }
    return 0;
}

int px_store_local_members(px_store_local *l, json_t **out)
{
    int64_t now = px_now_ms();
    *out = json_pack("[{s:s, s:s, s:s, s:I, s:I, s:b, s:b}]", "host_id", l->host_id, "version",
                     l->version, "config_hash", l->config_hash, "started_at",
                     (json_int_t)l->started_at, "heartbeat_at", (json_int_t)now, "alive", 1,
                     "self", 1);
    return *out ? 0 : PX_ESPOOL;
}

void px_store_local_announce(px_store_local *l, const char *config_hash)
{
    free(l->config_hash);
    l->config_hash = px_xstrdup(config_hash ? config_hash : "");
}

typedef struct ordered_ctx {
    void (*cb)(const px_store_delivery *d, void *arg);
    void *arg;
} ordered_ctx;

static void on_ordered(const px_store_delivery *d, void *arg)
{
    ordered_ctx *c = arg;
    px_store_delivery copy = *d;
    copy.seq = d->id;
    c->cb(&copy, c->arg);
}

int px_store_local_claim_ordered(void *b,
                                 int (*claim)(void *b, const char *sink, int64_t after_id,
                                              size_t max,
                                              void (*cb)(const px_store_delivery *d, void *arg),
                                              void *arg),
                                 const char *sink, int64_t after_seq, size_t max,
                                 void (*cb)(const px_store_delivery *d, void *arg), void *arg)
{
    if (!cb) {
        return PX_EINVAL;
    }
    ordered_ctx c = {cb, arg};
    return claim(b, sink, after_seq, max, on_ordered, &c);
}
