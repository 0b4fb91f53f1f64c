/* Named leases and the cluster view of plugin generations (see locks.h). */
#include "locks.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "lease.h"
#include "mem.h"
#include "instance.h"

enum { MIN_TTL_MS = 30 };

struct px_lock_rec {
    px_plugin_ctx *gen;
    char *name;         /* as the plugin named it */
    char *scoped;       /* "<instance>/<name>": the store's name */
    px_lease *lease;    /* owned */
    void (*cb)(void *arg, int status);
    void *arg;
    uint64_t cause;     /* px_crash_cause when asked */
    struct px_lock_rec *next;
};

/* The members of rt's store, or NULL. */
static json_t *members(px_store *store)
{
    json_t *m = NULL;
    if (!store || px_store_members(store, &m) < 0 || !json_is_array(m)) {
        json_decref(m);
        return NULL;
    }
    return m;
}

/* This host's id as the store knows it; without one (a one-host store opened without host_id),
 * "<hostname>:<pid>". Writes it into out (len bytes). */
static void self_id(json_t *m, char *out, size_t len)
{
    size_t i;
    json_t *h;
    json_array_foreach(m, i, h) {
        const char *id = json_string_value(json_object_get(h, "host_id"));
        if (json_is_true(json_object_get(h, "self")) && id && *id) {
            snprintf(out, len, "%s", id);
            return;
        }
    }
    char name[256] = "";
    if (gethostname(name, sizeof(name) - 1) != 0 || !*name) {
        snprintf(name, sizeof(name), "localhost");
    }
    snprintf(out, len, "%s:%d", name, (int)getpid());
}

static void on_lease(void *arg, int status)
{
    struct px_lock_rec *r = arg;
    px_crash_frame cf;
    px_gen_crash_enter(&cf, r->gen, "lock", r->cause);
    r->cb(r->arg, status);
    px_crash_leave(&cf);
}

static struct px_lock_rec *find(px_plugin_ctx *gen, const char *name)
{
    for (struct px_lock_rec *r = gen->locks; r; r = r->next) {
        if (strcmp(r->name, name) == 0) {
            return r;
        }
    }
    return NULL;
}

int px_locks_acquire(uv_loop_t *loop, px_store *store, px_plugin_ctx *gen, const char *name,
                     uint32_t ttl_ms, void (*cb)(void *arg, int status), void *arg)
{
    if (!gen || !name || !*name || !cb || ttl_ms < MIN_TTL_MS) {
        return PX_EINVAL;
    }
    if (!store || gen->state_code == PX_GEN_DESTROYED) {
        return PX_ESTATE;
    }
    if (find(gen, name)) {
        return PX_ESTATE;
    }
    char host[192];
    json_t *m = members(store);
    self_id(m, host, sizeof(host));
    json_decref(m);
    /* Unique per request, also between runtimes of one process sharing a store (tests). */
    static uint64_t serial;
    char *holder = px_xasprintf("%s/%s/%u/%llu", host, gen->inst->name, gen->generation,
                                (unsigned long long)++serial);
    struct px_lock_rec *r = px_xcalloc(1, sizeof(*r));
    r->gen = gen;
    r->name = px_xstrdup(name);
    r->scoped = px_xasprintf("%s/%s", gen->inst->name, name);
    r->cb = cb;
    r->arg = arg;
    r->cause = px_crash_cause(gen);
    r->lease = px_lease_start(loop, store, r->scoped, holder, ttl_ms, on_lease, r);
    free(holder);
    r->next = gen->locks;
    gen->locks = r;
    return PX_OK;
}

/* A lease this process let go may be waited for by the instance's current generation: it
 * need not wait for its next period. */
static void wake_waiters(px_plugin_ctx *gen, const char *name)
{
    px_plugin_ctx *cur = gen->inst->gen;
    if (cur && cur != gen) {
        for (struct px_lock_rec *r = cur->locks; r; r = r->next) {
            if (strcmp(r->name, name) == 0) {
                px_lease_poke(r->lease);
            }
        }
    }
}

static void drop(px_plugin_ctx *gen, struct px_lock_rec *r)
{
    if (px_lease_stop(r->lease)) {
        wake_waiters(gen, r->name);
    }
    free(r->name);
    free(r->scoped);
    free(r);
}

int px_locks_release(px_plugin_ctx *gen, const char *name)
{
    if (!gen || !name) {
        return PX_EINVAL;
    }
    for (struct px_lock_rec **p = &gen->locks; *p; p = &(*p)->next) {
        if (strcmp((*p)->name, name) == 0) {
            struct px_lock_rec *r = *p;
            *p = r->next;
            drop(gen, r);
            return PX_OK;
        }
    }
    return PX_ENOENT;
}

void px_locks_release_gen(px_plugin_ctx *gen)
{
    while (gen->locks) {
        struct px_lock_rec *r = gen->locks;
        gen->locks = r->next;
        drop(gen, r);
    }
}

int px_locks_cluster(px_store *store, px_plugin_ctx *gen, px_cluster_info *info)
{
    if (!gen || !info || !PX_HAS(px_cluster_info, info, host_index)) {
        return PX_EINVAL;
    }
    json_t *m = members(store);
    char self[sizeof(info->host_id)];
    self_id(m, self, sizeof(self));
    /* Live hosts, this one included; its place is the number of other live ids below its own. */
    uint32_t live = 1, index = 0;
    size_t i;
    json_t *h;
    json_array_foreach(m, i, h) {
        const char *id = json_string_value(json_object_get(h, "host_id"));
        if (json_is_true(json_object_get(h, "self")) || !json_is_true(json_object_get(h, "alive"))) {
            continue;
        }
        live++;
        index += id && strcmp(id, self) < 0;
    }
    info->live_hosts = live;
    info->host_index = index;
    if (PX_HAS(px_cluster_info, info, host_id)) {
        snprintf(info->host_id, sizeof(info->host_id), "%s", self);
    }
    int rc = m ? PX_OK : PX_EBUSY;
    json_decref(m);
    return rc;
}
