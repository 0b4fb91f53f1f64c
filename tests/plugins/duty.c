/* duty: a source that does a singleton duty under an ABI 1.2 lease and counts its starts with
 * compare-and-set, logging what it sees so tests can follow it:
 *   "lease held generation=N" / "lease lost generation=N" (lock_acquire's callback),
 *   "starts=N version=V" (kv_get_versioned + kv_cas, retried on conflict),
 *   "stale cas: conflict" when a compare-and-set with the version read before its own write is
 *   refused, "cluster live_hosts=N host_index=I host_id=ID".
 * With `refuse` set, init fails with set_error naming it. With `release_in_stop`, stop gives the
 * lease up itself (else the host does when the generation is unloaded). */
#include <stdlib.h>
#include <string.h>

#include <plexus/sdk.h>

static const px_host_api *host;

typedef struct duty {
    px_plugin_ctx *ctx;
    const char *lock;
    uint32_t ttl_ms;
    int release_in_stop;
    unsigned generation;
} duty;

static const px_option options[] = {
    {"lock", PX_OPT_STRING, 0, "duty", "name of the lease"},
    {"ttl", PX_OPT_DURATION, 0, "300ms", "lease ttl"},
    {"refuse", PX_OPT_STRING, 0, NULL, "when set, init fails with this reason"},
    {"release_in_stop", PX_OPT_BOOL, 0, "false", "give the lease up in stop"},
    {"tag", PX_OPT_STRING, 0, "", "anything: changing it makes a new generation"},
    {NULL, 0, 0, NULL, NULL},
};

static void on_lease(void *arg, int status)
{
    duty *d = arg;
    host->log(d->ctx, PX_LOG_INFO, "lease %s generation=%u",
              status == PX_OK ? "held" : status == PX_ECONFLICT ? "lost" : "error", d->generation);
}

static int duty_init(px_plugin_ctx *ctx, const json_t *config, void **state)
{
    const char *refuse = json_string_value(json_object_get(config, "refuse"));
    if (refuse && *refuse) {
        host->set_error(ctx, "refused by configuration: %s", refuse);
        return PX_EINVAL;
    }
    duty *d = calloc(1, sizeof(*d));
    d->ctx = ctx;
    d->lock = json_string_value(json_object_get(config, "lock"));
    d->ttl_ms = (uint32_t)json_integer_value(json_object_get(config, "ttl"));
    d->release_in_stop = json_is_true(json_object_get(config, "release_in_stop"));
    *state = d;
    return 0;
}

/* starts += 1 under compare-and-set; then shows that a write based on a stale read is refused. */
static void count_start(duty *d)
{
    int64_t version = 0, next = 0;
    int rc;
    json_t *cur = NULL;
    do {
        json_decref(cur);
        cur = host->kv_get_versioned(d->ctx, "starts", &version);
        json_t *value = json_integer(json_integer_value(cur) + 1);
        rc = host->kv_cas(d->ctx, "starts", version, value, &next);
        json_decref(value);
    } while (rc == PX_ECONFLICT);
    d->generation = (unsigned)(json_integer_value(cur) + 1);
    json_decref(cur);
    host->log(d->ctx, PX_LOG_INFO, "starts=%u version=%lld rc=%d", d->generation,
              (long long)next, rc);
    json_t *stale = json_string("stale");
    rc = host->kv_cas(d->ctx, "starts", version, stale, NULL);
    json_decref(stale);
    host->log(d->ctx, PX_LOG_INFO, "stale cas: %s",
              rc == PX_ECONFLICT ? "conflict" : rc == PX_OK ? "accepted" : "error");
}

static int duty_start(void *state)
{
    duty *d = state;
    count_start(d);
    px_cluster_info ci = {.size = sizeof(ci)};
    int rc = host->cluster(d->ctx, &ci);
    host->log(d->ctx, PX_LOG_INFO, "cluster rc=%d live_hosts=%u host_index=%u host_id=%s", rc,
              ci.live_hosts, ci.host_index, ci.host_id);
    rc = host->lock_acquire(d->ctx, d->lock, d->ttl_ms, on_lease, d);
    if (rc < 0) {
        host->set_error(d->ctx, "lock_acquire: %d", rc);
        return rc;
    }
    return 0;
}

static void duty_stop(void *state)
{
    duty *d = state;
    if (d->release_in_stop) {
        host->log(d->ctx, PX_LOG_INFO, "releasing generation=%u rc=%d", d->generation,
                  host->lock_release(d->ctx, d->lock));
    }
}

static void duty_destroy(void *state)
{
    free(state);
}

static const px_plugin_desc desc = {
    PX_PLUGIN_DESC_INIT,
    .kind = PX_KIND_SOURCE,
    .name = "duty",
    .version = "0.0.1",
    .description = "a singleton duty under a lease (ABI 1.2 test plugin)",
    .options = options,
    .init = duty_init,
    .start = duty_start,
    .stop = duty_stop,
    .destroy = duty_destroy,
};

PX_SDK_EXPORT const px_plugin_desc *PX_PLUGIN_ENTRY(const px_host_api *h)
{
    host = h;
    return &desc;
}
