/* ezzing: a source of Ezzing events from the AWS SQS queue Ezzing fills with Laravel job
 * messages. `pollers` long polls run at once; each received message becomes an event
 * "ezzing.<job>" (id and dedupe key = the SQS MessageId, payload = the whole envelope, meta =
 * the SQS attributes and the job's uuid) or, when it cannot be one, a dead letter. A message is
 * deleted from the queue (DeleteMessageBatch) only once the host reports it persisted; anything
 * else leaves it to come back after its visibility timeout.
 *
 * Requests in flight: each poller keeps one receive going and does not wait for the deletes of
 * what it received. Persisted messages queue for deletion and go out by tens, in at most
 * `pollers` DeleteMessageBatch at once (a retry after an error may add one), so at most
 * 2 x pollers requests are in flight. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <plexus/sdk.h>

#include "envelope.h"
#include "mem.h"
#include "../common/sqs.h"

static const px_host_api *host;

#define MAX_UNKNOWN_LOGGED 32
#define EMPTY_POLL_PAUSE_MS 1000 /* after an empty answer to a poll that did not wait */
/* Batches of 10 received per poller that may wait for the host's persist or for their delete
 * before the poller pauses: enough that a poller never waits for a group commit (several of its
 * receives fit in one), few enough to bound memory and the time a message stays hidden. */
#define MAX_BATCHES_PER_POLLER 16

enum health { H_OK, H_DOWN, H_THROTTLED, H_SERVER, H_REFUSED };

typedef struct ezz ezz;
typedef struct ezzing_batch ezzing_batch;

typedef struct ezzing_msg {
    ezzing_batch *b;
    char *handle;     /* receipt handle, owned */
    int ok;           /* persisted (or dead-lettered): delete it */
} ezzing_msg;

struct ezzing_batch {
    ezz *z;
    size_t n;
    size_t waiting; /* outcomes still to come */
    int busy;       /* the host refused something: slow down */
    ezzing_msg *m;  /* n entries */
    ezzing_batch *prev, *next;
};

typedef struct ezzing_poller {
    ezz *z;
    px_sqs_call *call;  /* ReceiveMessage in flight */
    px_timer *timer;    /* waiting before the next poll */
    uint32_t failures;  /* consecutive failed receives */
    uint64_t not_before;
    int blocked;        /* waiting for a batch to finish */
} ezzing_poller;

typedef struct ezzing_delete {
    ezz *z;
    char *handles[PX_SQS_MAX_BATCH];
    size_t n;
    uint32_t attempt;
    uint64_t first_ms;
    px_sqs_call *call;
    px_timer *timer;
    struct ezzing_delete *prev, *next;
} ezzing_delete;

struct ezz {
    px_plugin_ctx *ctx;
    px_sqs *sqs;
    char *queue_url;
    int64_t npollers, wait_s, max_messages, visibility_s, backoff_ms, max_backoff_ms, max_size;
    int hints, emit_invalid;
    ezzing_poller *pollers;
    ezzing_batch *batches;
    size_t open_batches;
    ezzing_delete *deletes;
    size_t deletes_sending; /* deletes with a request in flight */
    char **to_delete;       /* handles persisted, waiting for a delete to take them; owned */
    size_t nto_delete, cap_to_delete;
    int stopped, draining, drained_sent;
    uint64_t pause_until; /* back-pressure from the host */
    uint32_t busy_failures;
    int health;
    char health_code[96];
    uint64_t down_since, failed_requests;
    uint32_t rnd;
    char unknown[MAX_UNKNOWN_LOGGED][EZZING_TOPIC_MAX];
    size_t nunknown;
    int old_host_warned; /* a hint this host refused was logged */
};

static const px_option options[] = {
    {"queue_url", PX_OPT_STRING, PX_OPT_REQUIRED, NULL, "URL of the SQS queue Ezzing fills"},
    {"region", PX_OPT_STRING, 0, "eu-west-1", "AWS region of the queue (SigV4 signing)"},
    {"endpoint", PX_OPT_STRING, 0, NULL,
     "SQS endpoint (emulator, VPC endpoint); default https://sqs.<region>.amazonaws.com"},
    {"access_key_id", PX_OPT_STRING, PX_OPT_SECRET, NULL, "default: $AWS_ACCESS_KEY_ID"},
    {"secret_access_key", PX_OPT_STRING, PX_OPT_SECRET, NULL, "default: $AWS_SECRET_ACCESS_KEY"},
    {"session_token", PX_OPT_STRING, PX_OPT_SECRET, NULL, "default: $AWS_SESSION_TOKEN"},
    {"pollers", PX_OPT_INT, 0, "2", "concurrent long polls"},
    {"wait_time", PX_OPT_DURATION, 0, "20s", "long poll wait (whole seconds, at most 20s)"},
    {"max_messages", PX_OPT_INT, 0, "10", "messages per receive, 1 to 10"},
    {"visibility_timeout", PX_OPT_DURATION, 0, "60s",
     "how long a received message stays hidden (0 = the queue's setting)"},
    {"backoff", PX_OPT_DURATION, 0, "200ms", "first retry delay after an error"},
    {"max_backoff", PX_OPT_DURATION, 0, "30s", "longest retry delay"},
    {"max_message_size", PX_OPT_SIZE, 0, "256KiB", "larger bodies go to the dead letters"},
    {"on_invalid", PX_OPT_STRING, 0, "dead_letter",
     "a known job missing required fields: dead_letter or emit"},
    {"hints", PX_OPT_BOOL, 0, "true",
     "apply maxTries, retryUntil, maxExceptions, timeout, failOnTimeout and backoff"},
    {NULL, 0, 0, NULL, NULL},
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint32_t next_rand(ezz *z)
{
    uint32_t x = z->rnd; /* xorshift32: jitter only, no need for more */
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return z->rnd = x ? x : 0x9e3779b9u;
}

static uint64_t backoff(ezz *z, uint32_t attempt)
{
    return px_sqs_backoff_ms(attempt, (uint64_t)z->backoff_ms, (uint64_t)z->max_backoff_ms,
                             next_rand(z));
}

/* --- Health: one log line per change of state, never one per attempt ----------------------- */

static void note_result(ezz *z, const px_sqs_error *err)
{
    if (err->kind == PX_SQS_ECANCELLED) {
        return;
    }
    if (err->kind == PX_SQS_OK) {
        if (z->health != H_OK) {
            host->log(z->ctx, PX_LOG_INFO,
                      "sqs reachable again down_ms=%llu failed_requests=%llu",
                      (unsigned long long)(now_ms() - z->down_since),
                      (unsigned long long)z->failed_requests);
            z->health = H_OK;
            z->health_code[0] = '\0';
        }
        return;
    }
    int h = err->kind == PX_SQS_ENET        ? H_DOWN
            : err->kind == PX_SQS_ETHROTTLE ? H_THROTTLED
            : err->kind == PX_SQS_ESERVER   ? H_SERVER
                                            : H_REFUSED;
    if (z->health == H_OK) {
        z->down_since = now_ms();
        z->failed_requests = 0;
    }
    z->failed_requests++;
    host->counter_add(z->ctx, "request_errors", NULL, 1);
    if (h == z->health && (h != H_REFUSED || strcmp(z->health_code, err->code) == 0)) {
        return;
    }
    z->health = h;
    snprintf(z->health_code, sizeof(z->health_code), "%s", err->code);
    switch (h) {
    case H_DOWN:
        host->log(z->ctx, PX_LOG_WARN, "sqs unreachable endpoint=%s error=%s",
                  px_sqs_endpoint(z->sqs), err->message);
        break;
    case H_THROTTLED:
        host->log(z->ctx, PX_LOG_WARN, "sqs throttling requests, backing off status=%d code=%s",
                  err->http_status, err->code);
        break;
    case H_SERVER:
        host->log(z->ctx, PX_LOG_WARN, "sqs server error status=%d code=%s message=%s",
                  err->http_status, err->code, err->message);
        break;
    default:
        host->log(z->ctx, PX_LOG_ERROR,
                  "sqs refused the request status=%d code=%s message=%s queue=%s (check "
                  "queue_url, region and credentials)",
                  err->http_status, err->code, err->message, z->queue_url);
        break;
    }
}

/* --- Draining ------------------------------------------------------------------------------ */

static void check_drained(ezz *z)
{
    if (!z->draining || z->drained_sent || z->batches || z->deletes || z->nto_delete) {
        return;
    }
    for (int64_t i = 0; i < z->npollers; i++) {
        if (z->pollers[i].call) {
            return;
        }
    }
    z->drained_sent = 1;
    host->drained(z->ctx);
}

/* --- Deletes ------------------------------------------------------------------------------- */

static void delete_send(ezzing_delete *d);

static void delete_free(ezzing_delete *d)
{
    ezz *z = d->z;
    if (d->prev) {
        d->prev->next = d->next;
    } else {
        z->deletes = d->next;
    }
    if (d->next) {
        d->next->prev = d->prev;
    }
    if (d->timer) {
        host->timer_stop(d->timer);
    }
    for (size_t i = 0; i < d->n; i++) {
        free(d->handles[i]);
    }
    free(d);
}

static void on_delete_timer(void *arg)
{
    ezzing_delete *d = arg;
    host->timer_stop(d->timer);
    d->timer = NULL;
    delete_send(d);
}

/* Tries again later, unless it is no longer worth it: once the visibility timeout has passed
 * the message is back in the queue anyway, and its next copy is dropped by the dedupe key. */
static void delete_retry(ezzing_delete *d, const char *why)
{
    ezz *z = d->z;
    uint64_t limit = z->visibility_s > 0 ? (uint64_t)z->visibility_s * 1000u : 30000u;
    if (z->stopped || now_ms() - d->first_ms >= limit) {
        host->log(z->ctx, PX_LOG_WARN,
                  "delete abandoned messages=%zu reason=%s (they come back after the visibility "
                  "timeout and are dropped as duplicates)",
                  d->n, why);
        host->counter_add(z->ctx, "delete_abandoned", NULL, (double)d->n);
        delete_free(d);
        check_drained(z);
        return;
    }
    d->attempt++;
    if (host->timer_start(z->ctx, backoff(z, d->attempt), 0, on_delete_timer, d, &d->timer) < 0) {
        delete_free(d);
        check_drained(z);
    }
}

static void wake_pollers(ezz *z);
static void delete_start(ezz *z, char **handles, size_t n);

/* Starts deletes of the queued handles, oldest first and by tens, while fewer than `pollers`
 * deletes are in flight. */
static void delete_pump(ezz *z)
{
    while (z->nto_delete > 0 && z->deletes_sending < (size_t)z->npollers) {
        char *handles[PX_SQS_MAX_BATCH];
        size_t n = z->nto_delete < PX_SQS_MAX_BATCH ? z->nto_delete : PX_SQS_MAX_BATCH;
        memcpy(handles, z->to_delete, n * sizeof(handles[0]));
        z->nto_delete -= n;
        memmove(z->to_delete, z->to_delete + n, z->nto_delete * sizeof(z->to_delete[0]));
        delete_start(z, handles, n);
    }
}

/* Queues the handles (owned) of persisted messages for deletion. */
static void delete_queue(ezz *z, char **handles, size_t n)
{
    if (z->nto_delete + n > z->cap_to_delete) {
        size_t cap = z->cap_to_delete ? z->cap_to_delete * 2 : 4 * PX_SQS_MAX_BATCH;
        while (cap < z->nto_delete + n) {
            cap *= 2;
        }
        z->to_delete = px_xrealloc(z->to_delete, cap * sizeof(z->to_delete[0]));
        z->cap_to_delete = cap;
    }
    memcpy(z->to_delete + z->nto_delete, handles, n * sizeof(handles[0]));
    z->nto_delete += n;
    delete_pump(z);
}

static void delete_done(ezzing_delete *d, const px_sqs_error *err,
                        const px_sqs_batch_failure *failed, size_t nfailed)
{
    ezz *z = d->z;
    note_result(z, err);
    if (err->kind == PX_SQS_ECLIENT) {
        d->first_ms = 0; /* refused: retrying will not help */
        delete_retry(d, err->code);
        return;
    }
    if (err->kind != PX_SQS_OK) {
        delete_retry(d, err->kind == PX_SQS_ENET ? "unreachable" : err->code);
        return;
    }
    host->counter_add(z->ctx, "deleted", NULL, (double)(d->n - nfailed));
    if (nfailed == 0) {
        delete_free(d);
        check_drained(z);
        return;
    }
    /* Partial failure: keep the entries SQS may still accept, drop the ones it calls wrong. */
    char *keep[PX_SQS_MAX_BATCH];
    size_t nkeep = 0, dropped = 0;
    const char *code = failed[0].code;
    for (size_t i = 0; i < nfailed; i++) {
        size_t at = failed[i].index;
        if (failed[i].sender_fault || strcmp(failed[i].code, "ReceiptHandleIsInvalid") == 0) {
            dropped++;
            continue;
        }
        keep[nkeep++] = d->handles[at];
        d->handles[at] = NULL;
    }
    host->log(z->ctx, PX_LOG_WARN, "delete partly failed failed=%zu retrying=%zu code=%s", nfailed,
              nkeep, code);
    if (dropped) {
        host->counter_add(z->ctx, "delete_failed", NULL, (double)dropped);
    }
    for (size_t i = 0; i < d->n; i++) {
        free(d->handles[i]);
    }
    memcpy(d->handles, keep, nkeep * sizeof(keep[0]));
    d->n = nkeep;
    if (nkeep == 0) {
        delete_free(d);
        check_drained(z);
        return;
    }
    delete_retry(d, code);
}

static void on_deleted(const px_sqs_error *err, const px_sqs_batch_failure *failed,
                       size_t nfailed, void *arg)
{
    ezzing_delete *d = arg;
    ezz *z = d->z;
    d->call = NULL;
    z->deletes_sending--;
    if (err->kind == PX_SQS_ECANCELLED) { /* the host is unloading the plugin */
        delete_free(d);
        check_drained(z);
        return;
    }
    delete_done(d, err, failed, nfailed);
    delete_pump(z);
    wake_pollers(z);
    check_drained(z);
}

static void delete_send(ezzing_delete *d)
{
    ezz *z = d->z;
    int rc = px_sqs_delete_batch(z->sqs, z->queue_url, (const char *const *)d->handles, d->n,
                                 on_deleted, d, &d->call);
    if (rc < 0) {
        host->log(z->ctx, PX_LOG_ERROR, "delete not sent rc=%d messages=%zu", rc, d->n);
        delete_free(d);
        check_drained(z);
        return;
    }
    z->deletes_sending++;
}

/* Takes the handles (owned) of a finished batch. */
static void delete_start(ezz *z, char **handles, size_t n)
{
    ezzing_delete *d = calloc(1, sizeof(*d));
    if (!d) {
        abort();
    }
    d->z = z;
    memcpy(d->handles, handles, n * sizeof(handles[0]));
    d->n = n;
    d->first_ms = now_ms();
    d->next = z->deletes;
    if (z->deletes) {
        z->deletes->prev = d;
    }
    z->deletes = d;
    delete_send(d);
}

/* --- Polling ------------------------------------------------------------------------------- */

static void poll_next(ezzing_poller *p);

static void on_poll_timer(void *arg)
{
    ezzing_poller *p = arg;
    host->timer_stop(p->timer);
    p->timer = NULL;
    /* The wait is over: host timers never fire early, so no need to look at the clock. */
    p->not_before = 0;
    if (p->z->pause_until) {
        p->z->pause_until = 0;
    }
    poll_next(p);
}

static int may_poll(const ezz *z)
{
    size_t waiting = z->open_batches + (z->nto_delete + PX_SQS_MAX_BATCH - 1) / PX_SQS_MAX_BATCH;
    return waiting < (size_t)z->npollers * MAX_BATCHES_PER_POLLER;
}

static void wake_pollers(ezz *z)
{
    for (int64_t i = 0; i < z->npollers; i++) {
        if (z->pollers[i].blocked) {
            z->pollers[i].blocked = 0;
            poll_next(&z->pollers[i]);
        }
    }
}

static void batch_finish(ezzing_batch *b)
{
    ezz *z = b->z;
    char *handles[PX_SQS_MAX_BATCH];
    size_t k = 0;
    for (size_t i = 0; i < b->n; i++) {
        if (b->m[i].ok && k < PX_SQS_MAX_BATCH) {
            handles[k++] = b->m[i].handle;
            b->m[i].handle = NULL;
        }
        free(b->m[i].handle);
    }
    if (b->prev) {
        b->prev->next = b->next;
    } else {
        z->batches = b->next;
    }
    if (b->next) {
        b->next->prev = b->prev;
    }
    z->open_batches--;
    if (b->busy) {
        if (z->busy_failures++ == 0) {
            host->log(z->ctx, PX_LOG_WARN,
                      "host refused events (back-pressure), slowing down polls; the messages "
                      "come back after the visibility timeout");
        }
        z->pause_until = now_ms() + backoff(z, z->busy_failures);
    } else if (z->busy_failures && k == b->n) {
        host->log(z->ctx, PX_LOG_INFO, "host accepts events again");
        z->busy_failures = 0;
        z->pause_until = 0;
    }
    free(b->m);
    free(b);
    if (k) {
        delete_queue(z, handles, k);
    }
    wake_pollers(z);
    check_drained(z);
}

static void outcome(ezzing_msg *m, int ok, int busy)
{
    ezzing_batch *b = m->b;
    m->ok = ok;
    if (busy) {
        b->busy = 1;
    }
    if (--b->waiting == 0) {
        batch_finish(b);
    }
}

static void on_persisted(int status, void *arg)
{
    outcome(arg, status == PX_OK, status != PX_OK);
}

/* Sets a hint an older host may not know: says so once rather than failing the message. */
static void set_hint_or_warn(ezz *z, px_event *ev, int hint, int64_t value, const char *field)
{
    if (host->event_set_hint(ev, hint, value) < 0 && !z->old_host_warned) {
        z->old_host_warned = 1;
        host->log(z->ctx, PX_LOG_WARN, "this host does not apply %s: it is kept in the payload only",
                  field);
    }
}

/* meta: MessageId, MD5OfBody, every system attribute, and "attr.<name>" for message attributes
 * carrying a StringValue. Returns a new object. */
static json_t *message_meta(const px_sqs_message *m)
{
    json_t *meta = json_object();
    json_object_set_new(meta, "MessageId", json_string(m->message_id));
    if (*m->md5_of_body) {
        json_object_set_new(meta, "MD5OfBody", json_string(m->md5_of_body));
    }
    const char *k;
    json_t *v;
    json_object_foreach(m->attributes, k, v) {
        if (json_is_string(v)) {
            json_object_set(meta, k, v);
        }
    }
    json_object_foreach(m->message_attributes, k, v) {
        const char *s = json_string_value(json_object_get(v, "StringValue"));
        if (s) {
            char key[300];
            snprintf(key, sizeof(key), "attr.%s", k);
            json_object_set_new(meta, key, json_string(s));
        }
    }
    return meta;
}

/* The same entries as message_meta, in the same order, straight onto the event. */
static void set_event_meta(px_event *ev, const px_sqs_message *m)
{
    host->event_set_meta(ev, "MessageId", m->message_id);
    if (*m->md5_of_body) {
        host->event_set_meta(ev, "MD5OfBody", m->md5_of_body);
    }
    const char *k;
    json_t *v;
    json_object_foreach(m->attributes, k, v) {
        if (json_is_string(v)) {
            host->event_set_meta(ev, k, json_string_value(v));
        }
    }
    json_object_foreach(m->message_attributes, k, v) {
        const char *s = json_string_value(json_object_get(v, "StringValue"));
        if (s) {
            char key[300];
            snprintf(key, sizeof(key), "attr.%s", k);
            host->event_set_meta(ev, key, s);
        }
    }
}

static void poison(ezz *z, ezzing_msg *em, const px_sqs_message *m, const char *reason)
{
    host->counter_add(z->ctx, "dead_lettered", NULL, 1);
    json_t *meta = message_meta(m);
    int rc = host->dead_letter(z->ctx, m->body, m->body_len, meta, reason, on_persisted, em);
    json_decref(meta);
    if (rc < 0) {
        outcome(em, 0, 1);
    }
}

static void note_unknown(ezz *z, const char *topic)
{
    char labels[EZZING_TOPIC_MAX + 16];
    snprintf(labels, sizeof(labels), "job=\"%s\"", topic);
    host->counter_add(z->ctx, "unknown_jobs", labels, 1);
    for (size_t i = 0; i < z->nunknown; i++) {
        if (strcmp(z->unknown[i], topic) == 0) {
            return;
        }
    }
    if (z->nunknown < MAX_UNKNOWN_LOGGED) {
        snprintf(z->unknown[z->nunknown++], EZZING_TOPIC_MAX, "%s", topic);
        host->log(z->ctx, PX_LOG_INFO, "unknown job emitted as is job=%s", topic);
    }
}

/* Laravel's attempt rules (Worker.php) as delivery hints. Every failed attempt here is a thrown
 * exception in Laravel's terms (a sink's retry or a timeout; nothing is released without one),
 * so maxExceptions caps the attempts too, and unlike maxTries it still does with retryUntil. */
static void set_hints(ezz *z, px_event *ev, const ezzing_envelope *env)
{
    if (!z->hints) {
        return;
    }
    int64_t attempts = 0; /* 0 = no narrowing */
    if (env->retry_until < 0 && env->max_tries > 0) { /* 0 is Laravel's "unlimited" */
        attempts = env->max_tries;
    }
    if (env->max_exceptions >= 0) { /* the count reaching maxExceptions fails: at least 1 */
        int64_t cap = env->max_exceptions > 0 ? env->max_exceptions : 1;
        attempts = attempts && attempts < cap ? attempts : cap;
    }
    if (attempts > 0) {
        host->event_set_hint(ev, PX_HINT_MAX_ATTEMPTS, attempts > UINT32_MAX ? UINT32_MAX
                                                                             : attempts);
    }
    if (env->retry_until >= 0) { /* replaces the tries check: retries until this second */
        int64_t ms = env->retry_until > INT64_MAX / 1000 - 1000 ? INT64_MAX
                                                                : env->retry_until * 1000 + 999;
        set_hint_or_warn(z, ev, PX_HINT_DEADLINE_MS, ms, "retryUntil");
    }
    if (env->fail_on_timeout) {
        set_hint_or_warn(z, ev, PX_HINT_FAIL_ON_TIMEOUT, 1, "failOnTimeout");
    }
    if (env->timeout_s > 0) {
        int64_t ms = env->timeout_s > 4000000 ? 4000000000LL : env->timeout_s * 1000;
        host->event_set_hint(ev, PX_HINT_TIMEOUT_MS, ms);
    }
    for (size_t i = 0; i < env->nbackoff; i++) {
        host->event_set_hint(ev, PX_HINT_BACKOFF_MS, (int64_t)env->backoff_s[i] * 1000);
    }
}

static void handle_message(ezz *z, ezzing_msg *em, const px_sqs_message *m)
{
    char why[256];
    if ((int64_t)m->body_len > z->max_size) {
        snprintf(why, sizeof(why), "body too large: %zu bytes, max_message_size %lld",
                 m->body_len, (long long)z->max_size);
        poison(z, em, m, why);
        return;
    }
    ezzing_envelope env;
    if (ezzing_envelope_parse(m->body, m->body_len, &env, why, sizeof(why)) < 0) {
        poison(z, em, m, why);
        return;
    }
    char vwhy[200];
    int v = ezzing_envelope_validate(&env, vwhy, sizeof(vwhy));
    if (v == EZZING_UNKNOWN) {
        note_unknown(z, env.topic);
    } else if (v == EZZING_INVALID) {
        host->counter_add(z->ctx, "invalid", NULL, 1);
        snprintf(why, sizeof(why), "invalid %s: %s", env.topic, vwhy);
        if (!z->emit_invalid) {
            poison(z, em, m, why);
            ezzing_envelope_deinit(&env);
            return;
        }
        host->log(z->ctx, PX_LOG_WARN, "emitting an invalid message message_id=%s %s",
                  m->message_id, why);
    }
    char type[EZZING_TOPIC_MAX + 8];
    snprintf(type, sizeof(type), "ezzing.%s", env.topic);
    px_event *ev = host->event_create(z->ctx, type, json_incref(env.root));
    if (!ev) {
        ezzing_envelope_deinit(&env);
        outcome(em, 0, 0);
        return;
    }
    if (*m->message_id) {
        /* Id, dedupe key and subject: the SQS MessageId, one per message sent, the same on every
         * redelivery of it. Not the uuid: Ezzing reuses uuids across different jobs, and the id
         * travels on (e.g. as a NotificationQueue message_id consumers deduplicate on). */
        host->event_set(ev, PX_EVENT_ID, m->message_id);
        host->event_set(ev, PX_EVENT_DEDUPE_KEY, m->message_id);
        host->event_set(ev, PX_EVENT_SUBJECT, m->message_id);
    }
    if (env.uuid) {
        host->event_set_meta(ev, "uuid", env.uuid);
    }
    set_hints(z, ev, &env);
    set_event_meta(ev, m);
    ezzing_envelope_deinit(&env);
    /* The payload is the message body as received: the host stores that text as it is. */
    if (PX_HAS(px_host_api, host, event_set_raw)) {
        host->event_set_raw(ev, m->body, m->body_len);
    }
    int rc = host->emit(z->ctx, ev, on_persisted, em);
    if (rc < 0) {
        outcome(em, 0, rc == PX_EBUSY);
    }
}

static void on_received(const px_sqs_error *err, const px_sqs_message *msgs, size_t n, void *arg)
{
    ezzing_poller *p = arg;
    ezz *z = p->z;
    p->call = NULL;
    note_result(z, err);
    if (err->kind != PX_SQS_OK) {
        if (err->kind != PX_SQS_ECANCELLED) {
            p->failures++;
            /* A refused request needs an operator: retry at the slowest pace. */
            uint64_t wait = err->kind == PX_SQS_ECLIENT ? backoff(z, 64) : backoff(z, p->failures);
            p->not_before = now_ms() + wait;
        }
        poll_next(p);
        check_drained(z);
        return;
    }
    p->failures = 0;
    p->not_before = (n == 0 && z->wait_s == 0) ? now_ms() + EMPTY_POLL_PAUSE_MS : 0;
    if (n > 0) {
        host->counter_add(z->ctx, "received", NULL, (double)n);
        ezzing_batch *b = calloc(1, sizeof(*b));
        ezzing_msg *m = calloc(n, sizeof(*m));
        if (!b || !m) {
            abort();
        }
        b->z = z;
        b->n = n;
        b->m = m;
        b->waiting = n + 1; /* +1 until every message is handed over */
        b->next = z->batches;
        if (z->batches) {
            z->batches->prev = b;
        }
        z->batches = b;
        z->open_batches++;
        for (size_t i = 0; i < n; i++) {
            m[i].b = b;
            m[i].handle = px_xstrdup(msgs[i].receipt_handle);
            handle_message(z, &m[i], &msgs[i]);
        }
        if (--b->waiting == 0) {
            batch_finish(b);
        }
    }
    poll_next(p);
    check_drained(z);
}

/* Starts the poller's next receive, now or when it may: after its error backoff, after the
 * host's back-pressure pause, and only while fewer than MAX_BATCHES_PER_POLLER x pollers batches
 * await the host or their delete. */
static void poll_next(ezzing_poller *p)
{
    ezz *z = p->z;
    if (z->stopped || p->call || p->timer) {
        return;
    }
    if (!may_poll(z)) {
        p->blocked = 1;
        return;
    }
    uint64_t now = now_ms();
    uint64_t at = p->not_before > z->pause_until ? p->not_before : z->pause_until;
    if (at > now) {
        host->timer_start(z->ctx, at - now, 0, on_poll_timer, p, &p->timer);
        return;
    }
    px_sqs_receive_opts o = {
        .queue_url = z->queue_url,
        .max_messages = (uint32_t)z->max_messages,
        .wait_seconds = (uint32_t)z->wait_s,
        .visibility_timeout = z->visibility_s > 0 ? (int32_t)z->visibility_s : -1,
        .all_attributes = 1,
    };
    int rc = px_sqs_receive(z->sqs, &o, on_received, p, &p->call);
    if (rc < 0) {
        p->call = NULL;
        p->failures++;
        p->not_before = now + backoff(z, p->failures);
        host->timer_start(z->ctx, p->not_before - now, 0, on_poll_timer, p, &p->timer);
    }
}

/* --- Life cycle ---------------------------------------------------------------------------- */

static const char *opt_or_env(const json_t *cfg, const char *key, const char *env)
{
    const char *v = json_string_value(json_object_get(cfg, key));
    if (v && *v) {
        return v;
    }
    v = getenv(env);
    return v && *v ? v : NULL;
}

static int64_t int_opt(const json_t *cfg, const char *key)
{
    return (int64_t)json_integer_value(json_object_get(cfg, key));
}

static void ezzing_destroy(void *state);

static int ezzing_init(px_plugin_ctx *ctx, const json_t *cfg, void **state)
{
    ezz *z = calloc(1, sizeof(*z));
    if (!z) {
        return PX_EINVAL;
    }
    z->ctx = ctx;
    z->queue_url = px_xstrdup(json_string_value(json_object_get(cfg, "queue_url")));
    z->npollers = int_opt(cfg, "pollers");
    int64_t wait_ms = int_opt(cfg, "wait_time");
    z->max_messages = int_opt(cfg, "max_messages");
    int64_t vis_ms = int_opt(cfg, "visibility_timeout");
    z->backoff_ms = int_opt(cfg, "backoff");
    z->max_backoff_ms = int_opt(cfg, "max_backoff");
    z->max_size = int_opt(cfg, "max_message_size");
    z->hints = json_is_true(json_object_get(cfg, "hints"));
    const char *on_invalid = json_string_value(json_object_get(cfg, "on_invalid"));
    const char *bad = NULL;
    if (!*z->queue_url) {
        bad = "queue_url must not be empty";
    } else if (z->npollers < 1 || z->npollers > 64) {
        bad = "pollers must be between 1 and 64";
    } else if (wait_ms < 0 || wait_ms > 20000) {
        bad = "wait_time must be between 0s and 20s";
    } else if (z->max_messages < 1 || z->max_messages > 10) {
        bad = "max_messages must be between 1 and 10";
    } else if (vis_ms < 0 || vis_ms > 43200000) {
        bad = "visibility_timeout must be between 0s and 12h";
    } else if (z->backoff_ms < 1 || z->max_backoff_ms < z->backoff_ms) {
        bad = "backoff must be at least 1ms and max_backoff at least backoff";
    } else if (z->max_size < 1) {
        bad = "max_message_size must be at least 1 byte";
    } else if (strcmp(on_invalid, "dead_letter") != 0 && strcmp(on_invalid, "emit") != 0) {
        bad = "on_invalid must be dead_letter or emit";
    }
    if (bad) {
        host->log(ctx, PX_LOG_ERROR, "%s", bad);
        goto fail;
    }
    z->wait_s = wait_ms / 1000;
    z->visibility_s = (vis_ms + 999) / 1000;
    z->emit_invalid = strcmp(on_invalid, "emit") == 0;

    px_sqs_config sc = {
        .region = json_string_value(json_object_get(cfg, "region")),
        .endpoint = json_string_value(json_object_get(cfg, "endpoint")),
        .access_key = opt_or_env(cfg, "access_key_id", "AWS_ACCESS_KEY_ID"),
        .secret_key = opt_or_env(cfg, "secret_access_key", "AWS_SECRET_ACCESS_KEY"),
        .session_token = opt_or_env(cfg, "session_token", "AWS_SESSION_TOKEN"),
    };
    if (!sc.access_key || !sc.secret_key) {
        host->log(ctx, PX_LOG_ERROR,
                  "no AWS credentials: set access_key_id and secret_access_key, or "
                  "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY");
        goto fail;
    }
    if (px_sqs_create(host, ctx, &sc, &z->sqs) < 0) {
        host->log(ctx, PX_LOG_ERROR, "bad sqs settings region=%s endpoint=%s",
                  sc.region ? sc.region : "", sc.endpoint ? sc.endpoint : "");
        goto fail;
    }
    z->pollers = calloc((size_t)z->npollers, sizeof(*z->pollers));
    if (!z->pollers) {
        goto fail;
    }
    for (int64_t i = 0; i < z->npollers; i++) {
        z->pollers[i].z = z;
    }
    z->rnd = (uint32_t)now_ms() ^ (uint32_t)(uintptr_t)z ^ 0x5bd1e995u;
    *state = z;
    return 0;

fail:
    ezzing_destroy(z);
    return PX_EINVAL;
}

static int ezzing_start(void *state)
{
    ezz *z = state;
    host->log(z->ctx, PX_LOG_INFO, "polling queue=%s endpoint=%s pollers=%lld", z->queue_url,
              px_sqs_endpoint(z->sqs), (long long)z->npollers);
    for (int64_t i = 0; i < z->npollers; i++) {
        poll_next(&z->pollers[i]);
    }
    return 0;
}

static void ezzing_stop(void *state)
{
    ezz *z = state;
    if (z->stopped) {
        return;
    }
    z->stopped = 1;
    for (int64_t i = 0; i < z->npollers; i++) {
        ezzing_poller *p = &z->pollers[i];
        if (p->timer) {
            host->timer_stop(p->timer);
            p->timer = NULL;
        }
        /* A long poll may wait 20 s: cancel it. A message SQS handed out just now comes back
         * after its visibility timeout. */
        px_sqs_cancel(p->call);
        p->blocked = 0;
    }
    /* Deletes waiting to retry get one last try now. */
    for (ezzing_delete *d = z->deletes, *next; d; d = next) {
        next = d->next;
        if (d->timer) {
            host->timer_stop(d->timer);
            d->timer = NULL;
            delete_send(d);
        }
    }
}

static void ezzing_drain(void *state)
{
    ezz *z = state;
    ezzing_stop(z);
    z->draining = 1;
    check_drained(z);
}

static void ezzing_destroy(void *state)
{
    ezz *z = state;
    if (!z) {
        return;
    }
    if (z->pollers) {
        ezzing_stop(z);
    }
    px_sqs_destroy(z->sqs); /* calls in flight are dropped without callbacks */
    while (z->deletes) {
        delete_free(z->deletes);
    }
    for (size_t i = 0; i < z->nto_delete; i++) {
        free(z->to_delete[i]);
    }
    free(z->to_delete);
    while (z->batches) {
        ezzing_batch *b = z->batches;
        z->batches = b->next;
        for (size_t i = 0; i < b->n; i++) {
            free(b->m[i].handle);
        }
        free(b->m);
        free(b);
    }
    free(z->pollers);
    free(z->queue_url);
    free(z);
}

static const px_plugin_desc desc = {
    PX_PLUGIN_DESC_INIT,
    .kind = PX_KIND_SOURCE,
    .name = "ezzing",
    .version = "1.0.0",
    .description = "Ezzing events (Laravel jobs) from an AWS SQS queue",
    .options = options,
    .init = ezzing_init,
    .start = ezzing_start,
    .stop = ezzing_stop,
    .drain = ezzing_drain,
    .destroy = ezzing_destroy,
};

PX_SDK_EXPORT const px_plugin_desc *PX_PLUGIN_ENTRY(const px_host_api *h)
{
    host = h;
    return &desc;
}
