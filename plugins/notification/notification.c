/* notification: the Notification service's two edges.
 * Sink (action "send"): builds a NotificationQueue message from the delivery's parameters,
 * validates it, and publishes it to RabbitMQ with publisher confirms through the worker thread of
 * publisher.c; a delivery is done only when the broker confirms it.
 * Source: the service's EventBridge events, received on an HTTP route (an EventBridge API
 * destination, API-key header) and/or polled from an SQS queue that EventBridge targets. Each
 * becomes an event "notification.<detail-type>" whose id and dedupe key are the envelope id. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <amqp.h>
#include <plexus/sdk.h>

#include "consttime.h"
#include "message.h"
#include "publisher.h"
#include "sqs.h"

static const px_host_api *host;

/* While confirms are being completed, the deliveries they make room for go to the worker in
 * chunks of this many, so it publishes the first ones while the loop still builds the rest. */
#define HANDOVER_CHUNK 32

typedef struct nq nq;

/* One received SQS batch: its messages are emitted (or dead-lettered), then the ones safely
 * stored are deleted from the queue in one call. */
typedef struct sqs_batch {
    nq *s;
    size_t n, pending, refused;
    char **handles; /* receipt handles; NULL once the message must stay in the queue */
    struct sqs_batch *next;
} sqs_batch;

typedef struct sqs_item {
    sqs_batch *b;
    size_t i;
} sqs_item;

struct nq {
    px_plugin_ctx *ctx;
    json_t *cfg; /* keeps the option strings below alive */

    /* Sink. */
    notification_pub_config pc;
    char *url_copy; /* amqp_parse_url writes into it; pc's strings may point here */
    notification_pub *pub; /* created at the first delivery */
    notification_job *batch, *batch_tail; /* built this loop turn, handed over with one wake-up */
    size_t batch_len, outstanding;
    int in_results; /* inside on_pub_results: it hands the batch over, in chunks */
    int draining, drained_sent, stopped;

    /* HTTP source. */
    const char *http_path, *api_key, *api_key_header;

    /* SQS source. */
    px_sqs *sqs;
    const char *queue_url;
    uint32_t wait_s, batch_max;
    int32_t visibility_s;
    px_sqs_call *recv;
    px_timer *poll_timer;
    uint32_t recv_failures;
    sqs_batch *batches;
};

static const px_option options[] = {
    /* Sink: the broker. */
    {"url", PX_OPT_STRING, PX_OPT_SECRET, NULL,
     "amqp://user:password@host:port/vhost (or amqps://); overrides host, port, vhost, user, "
     "password and tls"},
    {"host", PX_OPT_STRING, 0, "127.0.0.1", "broker host"},
    {"port", PX_OPT_INT, 0, "0", "broker port; 0 = 5672, or 5671 with tls"},
    {"vhost", PX_OPT_STRING, 0, "/", "virtual host"},
    {"user", PX_OPT_STRING, 0, "guest", "user name"},
    {"password", PX_OPT_STRING, PX_OPT_SECRET, "guest", "password"},
    {"tls", PX_OPT_BOOL, 0, "false", "connect with TLS (amqps)"},
    {"tls_verify", PX_OPT_BOOL, 0, "true", "verify the broker's certificate and host name"},
    {"ca_cert", PX_OPT_STRING, 0, NULL, "PEM file of trusted CAs (default: the system's)"},
    {"queue", PX_OPT_STRING, 0, "NotificationQueue", "queue the notifications go to"},
    {"declare", PX_OPT_BOOL, 0, "true", "declare the queue (durable) on every connection"},
    {"exchange", PX_OPT_STRING, 0, "", "exchange to publish to; \"\" = the default exchange"},
    {"routing_key", PX_OPT_STRING, 0, NULL, "routing key; default: the queue name"},
    {"heartbeat", PX_OPT_DURATION, 0, "30s", "AMQP heartbeat interval (whole seconds); 0 = off"},
    {"connect_timeout", PX_OPT_DURATION, 0, "5s", "TCP connect, login and setup calls"},
    {"confirm_timeout", PX_OPT_DURATION, 0, "15s",
     "a publish not confirmed by then drops the connection and is retried"},
    {"reconnect_min", PX_OPT_DURATION, 0, "500ms", "first delay after a failed connect"},
    {"reconnect_max", PX_OPT_DURATION, 0, "15s", "cap of the doubling reconnect delay"},
    /* Source: EventBridge over HTTP. */
    {"http_path", PX_OPT_STRING, 0, NULL,
     "route for an EventBridge API destination, e.g. /eventbridge/notification"},
    {"api_key", PX_OPT_STRING, PX_OPT_SECRET, NULL,
     "value the API destination's connection sends in api_key_header; unset = no check"},
    {"api_key_header", PX_OPT_STRING, 0, "x-api-key", "header carrying the API key"},
    /* Source: EventBridge through SQS. */
    {"sqs_queue_url", PX_OPT_STRING, 0, NULL, "SQS queue an EventBridge rule targets"},
    {"sqs_endpoint", PX_OPT_STRING, 0, NULL,
     "SQS endpoint URL; default https://sqs.<region>.amazonaws.com"},
    {"region", PX_OPT_STRING, 0, "us-east-1", "AWS region (SigV4)"},
    {"aws_access_key_id", PX_OPT_STRING, PX_OPT_SECRET, NULL, "default: $AWS_ACCESS_KEY_ID"},
    {"aws_secret_access_key", PX_OPT_STRING, PX_OPT_SECRET, NULL,
     "default: $AWS_SECRET_ACCESS_KEY"},
    {"aws_session_token", PX_OPT_STRING, PX_OPT_SECRET, NULL, "default: $AWS_SESSION_TOKEN"},
    {"sqs_wait", PX_OPT_DURATION, 0, "20s", "long-poll wait (at most 20s)"},
    {"sqs_batch", PX_OPT_INT, 0, "10", "messages per receive (1..10)"},
    {"sqs_visibility", PX_OPT_DURATION, 0, NULL, "visibility timeout; default: the queue's"},
    {NULL, 0, 0, NULL, NULL},
};

static const char *opt_str(const json_t *cfg, const char *name)
{
    return json_string_value(json_object_get(cfg, name));
}

/* A string option, or the environment variable `env` when the option is not set. */
static const char *opt_or_env(const json_t *cfg, const char *name, const char *env)
{
    const char *v = opt_str(cfg, name);
    return v && *v ? v : getenv(env);
}

static int64_t opt_int(const json_t *cfg, const char *name)
{
    return json_integer_value(json_object_get(cfg, name));
}

/* --- Sink ----------------------------------------------------------------------------------- */

static void check_drained(nq *s)
{
    if (s->draining && !s->drained_sent && s->outstanding == 0) {
        s->drained_sent = 1;
        if (s->pub) {
            notification_pub_stop(s->pub); /* joined in destroy */
        }
        host->drained(s->ctx);
    }
}

static void on_flush_batch(void *arg)
{
    nq *s = arg;
    notification_job *jobs = s->batch;
    s->batch = s->batch_tail = NULL;
    s->batch_len = 0;
    notification_pub_submit(s->pub, jobs);
}

static void on_pub_results(void *arg)
{
    nq *s = arg;
    notification_job *j = notification_pub_take(s->pub);
    /* Completions free slots: the deliveries they bring are handed over in chunks, and the rest
     * at the end. */
    s->in_results = 1;
    double published = 0, failed = 0;
    while (j) {
        notification_job *next = j->next;
        if (!j->tag) {
            host->log(s->ctx, j->level, "%s", j->reason);
            if (j->state != NOTIFICATION_STATE_SAME) {
                host->gauge_set(s->ctx, "connected", NULL, j->state == NOTIFICATION_STATE_UP);
            }
        } else {
            px_delivery *d = j->tag;
            if (j->status == PX_OK) {
                published++;
                host->complete(d, PX_OK, NULL, 0);
            } else {
                failed++;
                host->complete(d, PX_ERETRY, j->reason, 0);
            }
            s->outstanding--;
        }
        notification_job_free(j);
        j = next;
    }
    s->in_results = 0;
    if (s->batch) {
        on_flush_batch(s);
    }
    if (published > 0) {
        host->counter_add(s->ctx, "published", NULL, published);
    }
    if (failed > 0) {
        host->counter_add(s->ctx, "publish_failures", NULL, failed);
    }
    check_drained(s);
}

/* Worker thread: only hands over to the loop. */
static void on_pub_notify(void *arg)
{
    nq *s = arg;
    host->post(s->ctx, on_pub_results, s);
}

/* The job publishing msg (borrowed) for d, its body written straight into the job (through a
 * stack buffer when it fits). NULL when out of memory. */
static notification_job *body_job(px_delivery *d, const json_t *msg, const char *message_id)
{
    char buf[2048];
    size_t len = notification_body(msg, buf, sizeof(buf));
    int ours = len > 0;
    if (!ours) {
        len = json_dumpb(msg, NULL, 0, JSON_COMPACT); /* a value only jansson formats */
        if (len == 0) {
            return NULL;
        }
    }
    notification_job *job = notification_job_create(d, len, message_id);
    if (!job) {
        return NULL;
    }
    if (!ours) {
        json_dumpb(msg, job->body, len, JSON_COMPACT);
    } else if (len <= sizeof(buf)) {
        memcpy(job->body, buf, len);
    } else {
        notification_body(msg, job->body, len);
    }
    return job;
}

/* The job for the usual short form, written in one pass (notification_quick_body), or NULL when
 * params are not that (or memory ran out): built_job then. */
static notification_job *quick_job(px_delivery *d, const json_t *params, const char *message_id)
{
    char buf[2048];
    size_t len = notification_quick_body(params, buf, sizeof(buf));
    if (len == 0) {
        return NULL;
    }
    notification_job *job = notification_job_create(d, len, message_id);
    if (!job) {
        return NULL;
    }
    if (len <= sizeof(buf)) {
        memcpy(job->body, buf, len);
    } else {
        notification_quick_body(params, job->body, len);
    }
    return job;
}

/* The job from the message notification_build makes of params; NULL when d was completed instead
 * (refused, with the reason, or out of memory). */
static notification_job *built_job(nq *s, px_delivery *d, const json_t *params,
                                   const char *message_id)
{
    char why[300];
    json_t *msg;
    if (notification_build(params, &msg, why, sizeof(why)) < 0) {
        host->counter_add(s->ctx, "rejected", NULL, 1);
        host->complete(d, PX_EREJECT, why, 0);
        return NULL;
    }
    notification_job *job = body_job(d, msg, message_id);
    json_decref(msg);
    if (!job) {
        host->complete(d, PX_ERETRY, "out of memory", 0);
    }
    return job;
}

static void nq_deliver(void *state, px_delivery *d)
{
    nq *s = state;
    const char *action = host->delivery_action(d);
    if (action && *action && strcmp(action, "send") != 0) {
        char why[160];
        snprintf(why, sizeof(why), "unknown action \"%.80s\" (this sink does: send)", action);
        host->complete(d, PX_EREJECT, why, 0);
        return;
    }
    if (s->draining) {
        host->complete(d, PX_ERETRY, "sink is stopping", 0);
        return;
    }
    const json_t *params = host->delivery_params(d);
    const char *message_id = host->event_id(host->delivery_event(d));
    notification_job *job = quick_job(d, params, message_id);
    if (!job) {
        job = built_job(s, d, params, message_id);
        if (!job) {
            return; /* completed: refused or out of memory */
        }
    }
    if (!s->pub) {
        int rc = notification_pub_create(&s->pc, on_pub_notify, s, &s->pub);
        if (rc < 0) {
            notification_job_free(job);
            host->log(s->ctx, PX_LOG_ERROR, "cannot start the publisher thread rc=%d", rc);
            host->complete(d, PX_ERETRY, "publisher thread unavailable", 0);
            return;
        }
    }
    s->outstanding++;
    /* Deliveries come in bursts (a confirm batch frees many slots at once): hand them to the
     * worker together on the next loop turn, with one lock and one wake-up. */
    if (s->batch_tail) {
        s->batch_tail->next = job;
    } else {
        s->batch = job;
        if (!s->in_results && host->post(s->ctx, on_flush_batch, s) < 0) {
            on_flush_batch(s);
            return;
        }
    }
    s->batch_tail = job;
    if (++s->batch_len >= HANDOVER_CHUNK && s->in_results) {
        on_flush_batch(s);
    }
}

static int sink_config(nq *s, const json_t *cfg)
{
    notification_pub_config *pc = &s->pc;
    pc->host = opt_str(cfg, "host");
    pc->port = (int)opt_int(cfg, "port");
    pc->vhost = opt_str(cfg, "vhost");
    pc->user = opt_str(cfg, "user");
    pc->password = opt_str(cfg, "password");
    pc->tls = json_is_true(json_object_get(cfg, "tls"));
    pc->tls_verify = json_is_true(json_object_get(cfg, "tls_verify"));
    pc->ca_cert = opt_str(cfg, "ca_cert");
    pc->queue = opt_str(cfg, "queue");
    pc->declare = json_is_true(json_object_get(cfg, "declare"));
    pc->exchange = opt_str(cfg, "exchange");
    pc->routing_key = opt_str(cfg, "routing_key");
    int64_t hb = opt_int(cfg, "heartbeat");
    pc->heartbeat_s = hb <= 0 ? 0 : (int)((hb + 999) / 1000);
    pc->connect_timeout_ms = (uint32_t)opt_int(cfg, "connect_timeout");
    pc->confirm_timeout_ms = (uint32_t)opt_int(cfg, "confirm_timeout");
    pc->backoff_min_ms = (uint32_t)opt_int(cfg, "reconnect_min");
    pc->backoff_max_ms = (uint32_t)opt_int(cfg, "reconnect_max");
    const char *url = opt_str(cfg, "url");
    if (url && *url) {
        struct amqp_connection_info ci;
        s->url_copy = strdup(url);
        amqp_default_connection_info(&ci);
        if (amqp_parse_url(s->url_copy, &ci) != AMQP_STATUS_OK) {
            /* The URL may hold a password: never print it. */
            host->log(s->ctx, PX_LOG_ERROR,
                      "url is not an amqp://user:password@host:port/vhost or amqps:// URL");
            return PX_EINVAL;
        }
        pc->host = ci.host;
        pc->port = ci.port;
        pc->vhost = ci.vhost && *ci.vhost ? ci.vhost : "/";
        pc->user = ci.user;
        pc->password = ci.password;
        pc->tls = ci.ssl;
    }
    if (!pc->queue || !*pc->queue) {
        host->log(s->ctx, PX_LOG_ERROR, "queue must not be empty");
        return PX_EINVAL;
    }
    if (pc->port < 0 || pc->port > 65535) {
        host->log(s->ctx, PX_LOG_ERROR, "port must be 0..65535, not %d", pc->port);
        return PX_EINVAL;
    }
    return 0;
}

/* --- Events in ------------------------------------------------------------------------------ */

/* Builds the event for an EventBridge envelope (steals env). Returns NULL and the reason in why
 * when it is not one. */
static px_event *envelope_event(nq *s, json_t *env, const char *transport, char *why,
                                size_t why_len)
{
    char type[256];
    if (notification_envelope_type(env, type, sizeof(type), why, why_len) < 0) {
        json_decref(env);
        return NULL;
    }
    const char *id = json_string_value(json_object_get(env, "id"));
    const char *dt = json_string_value(json_object_get(env, "detail-type"));
    const char *src = json_string_value(json_object_get(env, "source"));
    const char *account = json_string_value(json_object_get(env, "account"));
    const char *region = json_string_value(json_object_get(env, "region"));
    const char *when = json_string_value(json_object_get(env, "time"));
    px_event *ev = host->event_create(s->ctx, type, json_incref(env));
    if (!ev) {
        snprintf(why, why_len, "cannot create the event");
        json_decref(env);
        return NULL;
    }
    /* EventBridge delivers at least once, each copy with the same id: the id is the event's id,
     * dedupe key and subject, and stays in the metadata however the event is forwarded. */
    host->event_set(ev, PX_EVENT_ID, id);
    host->event_set(ev, PX_EVENT_DEDUPE_KEY, id);
    host->event_set(ev, PX_EVENT_SUBJECT, id);
    host->event_set_meta(ev, "eventbridge.id", id);
    host->event_set_meta(ev, "eventbridge.detail_type", dt);
    host->event_set_meta(ev, "transport", transport);
    host->event_set_meta(ev, "eventbridge.source", src);
    if (account) {
        host->event_set_meta(ev, "eventbridge.account", account);
    }
    if (region) {
        host->event_set_meta(ev, "eventbridge.region", region);
    }
    if (when) {
        host->event_set_meta(ev, "eventbridge.time", when);
    }
    json_decref(env);
    return ev;
}

static void respond_json(px_http_request *req, int status, const char *key, const char *value)
{
    json_t *o = json_pack("{s:s}", key, value);
    if (!o) { /* value is not UTF-8 (a reason cut inside a character, quoted input) */
        o = json_pack("{s:s}", key, "invalid request");
    }
    char *text = json_dumps(o, JSON_COMPACT);
    host->http_respond(req, status, NULL, text, strlen(text));
    free(text);
    json_decref(o);
}

static void on_http_persisted(int status, void *arg)
{
    px_http_request *req = arg;
    if (status == PX_OK) {
        host->http_respond(req, 200, NULL, "{\"ok\":true}", 11);
        return;
    }
    /* EventBridge retries 5xx: the event comes back when the spool has room. */
    host->http_set_header(req, "Retry-After", "1");
    respond_json(req, 503, "error", "busy, retry later");
}

static void on_http(px_http_request *req, void *arg)
{
    nq *s = arg;
    if (s->stopped) {
        host->http_set_header(req, "Retry-After", "1");
        respond_json(req, 503, "error", "stopping");
        return;
    }
    const char *method = host->http_req_method(req);
    if (strcmp(method, "POST") != 0 && strcmp(method, "PUT") != 0) {
        host->http_set_header(req, "Allow", "POST, PUT");
        respond_json(req, 405, "error", "use POST");
        return;
    }
    if (s->api_key && !px_ct_streq(host->http_req_header(req, s->api_key_header), s->api_key)) {
        host->counter_add(s->ctx, "unauthorized", NULL, 1);
        respond_json(req, 401, "error", "missing or wrong API key");
        return;
    }
    size_t len;
    const char *body = host->http_req_body(req, &len);
    json_error_t jerr;
    json_t *env = json_loadb(body ? body : "", len, 0, &jerr);
    char why[200];
    if (!env) {
        snprintf(why, sizeof(why), "body is not JSON: %s", jerr.text);
        respond_json(req, 400, "error", why);
        return;
    }
    px_event *ev = envelope_event(s, env, "http", why, sizeof(why));
    if (!ev) {
        host->counter_add(s->ctx, "malformed", NULL, 1);
        respond_json(req, 400, "error", why);
        return;
    }
    if (host->emit(s->ctx, ev, on_http_persisted, req) < 0) {
        host->http_set_header(req, "Retry-After", "1");
        respond_json(req, 503, "error", "busy, retry later");
    }
}

/* --- SQS ------------------------------------------------------------------------------------ */

static void sqs_poll(nq *s);

static void on_poll_timer(void *arg)
{
    nq *s = arg;
    host->timer_stop(s->poll_timer);
    s->poll_timer = NULL;
    sqs_poll(s);
}

static void poll_later(nq *s, uint64_t ms)
{
    if (s->stopped || s->poll_timer) {
        return;
    }
    host->timer_start(s->ctx, ms, 0, on_poll_timer, s, &s->poll_timer);
}

static void batch_free(sqs_batch *b)
{
    nq *s = b->s;
    for (sqs_batch **pp = &s->batches; *pp; pp = &(*pp)->next) {
        if (*pp == b) {
            *pp = b->next;
            break;
        }
    }
    for (size_t i = 0; i < b->n; i++) {
        free(b->handles[i]);
    }
    free(b->handles);
    free(b);
}

static void on_deleted(const px_sqs_error *err, const px_sqs_batch_failure *failed, size_t nfailed,
                       void *arg)
{
    sqs_batch *b = arg;
    nq *s = b->s;
    if (err->kind != PX_SQS_OK) {
        if (err->kind != PX_SQS_ECANCELLED) {
            /* The messages come back after their visibility timeout; dedupe drops them. */
            host->log(s->ctx, PX_LOG_WARN, "sqs delete failed count=%zu code=%s message=\"%s\"",
                      b->n, err->code, err->message);
        }
    } else {
        for (size_t i = 0; i < nfailed; i++) {
            host->log(s->ctx, PX_LOG_WARN, "sqs delete refused code=%s message=\"%s\"",
                      failed[i].code, failed[i].message);
        }
    }
    batch_free(b);
}

/* Every message of the batch is settled: delete the stored ones, fetch more. */
static void batch_settled(sqs_batch *b)
{
    nq *s = b->s;
    const char *handles[PX_SQS_MAX_BATCH];
    size_t n = 0;
    for (size_t i = 0; i < b->n && n < PX_SQS_MAX_BATCH; i++) {
        if (b->handles[i]) {
            handles[n++] = b->handles[i];
        }
    }
    size_t refused = b->refused;
    if (n == 0 || px_sqs_delete_batch(s->sqs, s->queue_url, handles, n, on_deleted, b, NULL) < 0) {
        batch_free(b);
    }
    if (refused) {
        poll_later(s, 1000); /* back-pressure: give the spool a moment */
    } else {
        sqs_poll(s);
    }
}

static void on_sqs_persisted(int status, void *arg)
{
    sqs_item *it = arg;
    sqs_batch *b = it->b;
    if (status != PX_OK) {
        /* Not stored: leave the message in the queue; it reappears later. */
        free(b->handles[it->i]);
        b->handles[it->i] = NULL;
        b->refused++;
    }
    free(it);
    if (--b->pending == 0) {
        batch_settled(b);
    }
}

static void on_received(const px_sqs_error *err, const px_sqs_message *msgs, size_t n, void *arg)
{
    nq *s = arg;
    s->recv = NULL;
    if (err->kind != PX_SQS_OK) {
        if (err->kind == PX_SQS_ECANCELLED || s->stopped) {
            return;
        }
        s->recv_failures++;
        uint64_t ms = px_sqs_backoff_ms(s->recv_failures, 500, 30000, (uint32_t)rand());
        host->log(s->ctx, s->recv_failures == 1 ? PX_LOG_WARN : PX_LOG_DEBUG,
                  "sqs receive failed attempt=%u retry_in_ms=%llu status=%d code=%s "
                  "message=\"%s\"",
                  s->recv_failures, (unsigned long long)ms, err->http_status, err->code,
                  err->message);
        poll_later(s, ms);
        return;
    }
    if (s->recv_failures) {
        host->log(s->ctx, PX_LOG_INFO, "sqs receive recovered after_failures=%u",
                  s->recv_failures);
        s->recv_failures = 0;
    }
    if (n == 0) {
        if (s->wait_s == 0) {
            poll_later(s, 1000);
        } else {
            sqs_poll(s);
        }
        return;
    }
    sqs_batch *b = calloc(1, sizeof(*b));
    b->s = s;
    b->n = n;
    b->handles = calloc(n, sizeof(char *));
    b->next = s->batches;
    s->batches = b;
    b->pending = n + 1; /* +1 until the loop below is done, so settling waits for it */
    for (size_t i = 0; i < n; i++) {
        const px_sqs_message *m = &msgs[i];
        b->handles[i] = strdup(m->receipt_handle);
        sqs_item *it = calloc(1, sizeof(*it));
        it->b = b;
        it->i = i;
        char why[200];
        json_error_t jerr;
        json_t *env = json_loadb(m->body, m->body_len, 0, &jerr);
        px_event *ev = NULL;
        if (!env) {
            snprintf(why, sizeof(why), "body is not JSON: %s", jerr.text);
        } else {
            ev = envelope_event(s, env, "sqs", why, sizeof(why));
        }
        int rc;
        if (ev) {
            host->event_set_meta(ev, "sqs.message_id", m->message_id);
            rc = host->emit(s->ctx, ev, on_sqs_persisted, it);
        } else {
            host->counter_add(s->ctx, "malformed", NULL, 1);
            json_t *meta = json_pack("{s:s, s:s}", "sqs.message_id", m->message_id, "queue_url",
                                     s->queue_url);
            rc = host->dead_letter(s->ctx, m->body, m->body_len, meta, why, on_sqs_persisted, it);
            json_decref(meta);
        }
        if (rc < 0) {
            on_sqs_persisted(PX_EBUSY, it);
        }
    }
    if (--b->pending == 0) {
        batch_settled(b);
    }
}

static void sqs_poll(nq *s)
{
    if (s->stopped || s->recv || !s->sqs) {
        return;
    }
    px_sqs_receive_opts o = {
        .queue_url = s->queue_url,
        .max_messages = s->batch_max,
        .wait_seconds = s->wait_s,
        .visibility_timeout = s->visibility_s,
        .all_attributes = 0,
    };
    if (px_sqs_receive(s->sqs, &o, on_received, s, &s->recv) < 0) {
        s->recv = NULL;
        poll_later(s, 1000);
    }
}

static int sqs_config(nq *s, const json_t *cfg)
{
    s->queue_url = opt_str(cfg, "sqs_queue_url");
    if (!s->queue_url || !*s->queue_url) {
        s->queue_url = NULL;
        return 0;
    }
    px_sqs_config sc = {
        .region = opt_str(cfg, "region"),
        .endpoint = opt_str(cfg, "sqs_endpoint"),
        .access_key = opt_or_env(cfg, "aws_access_key_id", "AWS_ACCESS_KEY_ID"),
        .secret_key = opt_or_env(cfg, "aws_secret_access_key", "AWS_SECRET_ACCESS_KEY"),
        .session_token = opt_or_env(cfg, "aws_session_token", "AWS_SESSION_TOKEN"),
    };
    if (px_sqs_create(host, s->ctx, &sc, &s->sqs) < 0) {
        host->log(s->ctx, PX_LOG_ERROR,
                  "sqs_queue_url needs region, aws_access_key_id and aws_secret_access_key, and "
                  "an http(s) sqs_endpoint");
        return PX_EINVAL;
    }
    int64_t wait = opt_int(cfg, "sqs_wait") / 1000;
    s->wait_s = wait < 0 ? 0 : wait > PX_SQS_MAX_WAIT_S ? PX_SQS_MAX_WAIT_S : (uint32_t)wait;
    int64_t batch = opt_int(cfg, "sqs_batch");
    s->batch_max = batch < 1 ? 1 : batch > PX_SQS_MAX_BATCH ? PX_SQS_MAX_BATCH : (uint32_t)batch;
    json_t *vis = json_object_get(cfg, "sqs_visibility");
    s->visibility_s = json_is_integer(vis) ? (int32_t)(json_integer_value(vis) / 1000) : -1;
    return 0;
}

/* --- Lifecycle ------------------------------------------------------------------------------ */

static void nq_destroy(void *state);

static int nq_init(px_plugin_ctx *ctx, const json_t *cfg, void **state)
{
    nq *s = calloc(1, sizeof(*s));
    if (!s) {
        return PX_EINVAL;
    }
    s->ctx = ctx;
    s->cfg = json_deep_copy(cfg);
    int rc = sink_config(s, s->cfg);
    if (rc == 0) {
        rc = sqs_config(s, s->cfg);
    }
    s->http_path = opt_str(s->cfg, "http_path");
    s->api_key = opt_str(s->cfg, "api_key");
    s->api_key_header = opt_str(s->cfg, "api_key_header");
    if (s->api_key && !*s->api_key) {
        s->api_key = NULL;
    }
    if (rc == 0 && s->http_path && *s->http_path) {
        if (!s->api_key) {
            host->log(ctx, PX_LOG_WARN, "http_path=%s has no api_key: any caller is accepted",
                      s->http_path);
        }
        rc = host->http_route(ctx, NULL, s->http_path, 0, on_http, s);
        if (rc < 0) {
            host->log(ctx, PX_LOG_ERROR, "cannot route http_path=%s rc=%d", s->http_path, rc);
        }
    }
    if (rc < 0) {
        nq_destroy(s);
        return rc;
    }
    *state = s;
    return 0;
}

static int nq_start(void *state)
{
    nq *s = state;
    s->stopped = 0;
    if (s->sqs) {
        sqs_poll(s);
    }
    return 0;
}

static void nq_stop(void *state)
{
    nq *s = state;
    s->stopped = 1;
    if (s->poll_timer) {
        host->timer_stop(s->poll_timer);
        s->poll_timer = NULL;
    }
    if (s->recv) {
        px_sqs_cancel(s->recv); /* a long poll would hold the drain for up to 20 s */
    }
}

static void nq_drain(void *state)
{
    nq *s = state;
    s->draining = 1;
    check_drained(s);
}

static void nq_destroy(void *state)
{
    nq *s = state;
    nq_stop(s);
    /* Deliveries still held were taken back by the host: they are dropped, not completed. */
    notification_pub_destroy(s->pub);
    while (s->batch) {
        notification_job *next = s->batch->next;
        notification_job_free(s->batch);
        s->batch = next;
    }
    px_sqs_destroy(s->sqs);
    while (s->batches) {
        batch_free(s->batches);
    }
    free(s->url_copy);
    json_decref(s->cfg);
    free(s);
}

static const px_plugin_desc desc = {
    PX_PLUGIN_DESC_INIT,
    .kind = PX_KIND_SOURCE | PX_KIND_SINK,
    .name = "notification",
    .version = "1.0.0",
    .description = "NotificationQueue to RabbitMQ with publisher confirms; EventBridge events in",
    .options = options,
    .init = nq_init,
    .start = nq_start,
    .deliver = nq_deliver,
    .stop = nq_stop,
    .drain = nq_drain,
    .destroy = nq_destroy,
};

PX_SDK_EXPORT const px_plugin_desc *PX_PLUGIN_ENTRY(const px_host_api *h)
{
    host = h;
    return &desc;
}
