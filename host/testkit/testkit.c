/* The plugin test kit (see testkit.h): an in-memory host around one plugin. Every SDK handle the
 * plugin sees is a kit record that lives until the end of the run, so a plugin that uses a handle
 * too long (a delivery after complete, a timer after timer_stop, a request after http_respond) is
 * reported as a rule violation instead of crashing. */
#include "clock.h"
#include "testkit.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <errno.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <plexus/sdk.h>
#include <uv.h>

#include "config.h"
#include "crash.h"
#include "err.h"
#include "http_client.h"
#include "loader.h"
#include "log.h"
#include "mem.h"
#include "store.h"

#define DEFAULT_TIMEOUT_MS 5000
#define DEFAULT_RUN_MS 100
#define AFTER_DESTROY_MS 50 /* how long the kit keeps watching once destroy returned */

enum { PH_LOADED = 0, PH_RUNNING, PH_STOPPING, PH_DRAINED, PH_DESTROYING, PH_DESTROYED };

typedef struct kit kit;

typedef struct kgen { /* what the plugin sees as px_plugin_ctx */
    kit *k;
    int no;             /* generation number, from 1 */
    void *state;
    int phase;
    int drain_asked;
    int drained_calls;
} kgen;

typedef struct ktimer { /* px_timer */
    uv_timer_t h;
    kgen *g;
    void (*cb)(void *arg);
    void *arg;
    uint64_t repeat;
    int stopped, fired;
    struct ktimer *next;
} ktimer;

typedef struct kevent { /* px_event */
    kgen *g;
    char *type, *id, *source, *dedupe, *subject;
    json_t *payload, *meta, *hints;
    int64_t time_ms;
    int emitted, discarded, from_kit;
    int raw; /* event_set_raw or event_create_text was given the payload's text */
    char *text; /* event_payload_text's answer (owned), made on first call */
    struct kevent *next;
} kevent;

typedef struct kdel { /* px_delivery */
    kgen *g;
    int index;
    kevent *ev;
    json_t *params;
    char *action, *pipeline;
    uint32_t attempt;
    int completed, status;
    char *reason;
    uint64_t retry_after;
    const json_t *spec; /* borrowed from the scenario */
    int judged;
    struct kdel *next;
} kdel;

typedef struct kresp { /* px_http_response */
    const px_http_response *real; /* a real answer, or NULL for a scripted one */
    const json_t *headers;        /* scripted: an object of strings */
    const char *body;
    size_t len;
} kresp;

typedef struct kcall { /* px_http_call */
    kit *k;
    kgen *g;
    px_http_response_cb cb;
    void *arg;
    int done, cancelled;
    int orphan; /* still in flight at destroy: its callback is not run (the host would run it
                 * after destroy, into freed plugin state) */
    px_http_call *real;
    uv_timer_t timer; /* scripted answers arrive through it */
    int timer_open;
    const json_t *script; /* borrowed from the scenario; NULL = none left */
    json_t *record;       /* the http_calls entry (borrowed from the report) */
    struct kcall *next;
} kcall;

typedef struct kroute {
    kgen *g;
    char *method, *path;
    uint32_t flags;
    px_http_handler cb;
    void *arg;
    struct kroute *next;
} kroute;

typedef struct kreq { /* px_http_request */
    kgen *g;
    int index;
    char *method, *path, *query, *body;
    size_t len;
    const json_t *headers; /* borrowed from the scenario */
    json_t *resp_headers;
    int responded, status;
    char *resp_body, *ctype;
    size_t resp_len;
    struct kreq *next;
} kreq;

enum { Q_POST = 1, Q_PERSISTED };

typedef struct kq {
    int kind;
    kgen *g;
    void (*cb)(void *arg);
    px_persisted_cb pcb;
    int status;
    void *arg;
    struct kq *next;
} kq;

struct kit {
    uv_loop_t loop;
    pthread_t loop_thread;
    pthread_mutex_t lock; /* the queue and the violations (post runs on any thread) */
    uv_async_t wake;
    uv_timer_t deadline;
    int deadline_hit;
    px_host_api api;
    px_plugin_lib *lib;
    const px_plugin_desc *desc;
    const json_t *scn;
    char *instance;
    json_t *config;  /* validated options */
    json_t *secrets; /* strings never to show */
    kgen *gens[2];
    int ngens;
    kgen *cur;
    ktimer *timers;
    kevent *events;
    kdel *dels;
    kcall *calls;
    kroute *routes;
    kreq *reqs;
    kq *q_head, *q_tail;
    px_store *store; /* in memory: the plugin's state (kv_get / kv_set) */
    json_t *kv_keys; /* every key the state had: an object used as a set */
    json_t *kv, *metrics; /* kv: the state as reported (the scenario's until the plugin ran) */
    json_t *empty; /* {} for absent scenario objects */
    json_t *report, *lifecycle, *deliveries, *requests, *emits, *dead_letters, *http_calls,
        *logs, *violations, *failures, *warnings;
    size_t http_next;
    px_http_client *client;
    int emit_status;
    uint64_t timeout_ms;
    unsigned long seq;
};

/* --- Report helpers ---------------------------------------------------------------------- */

static char *vformat(const char *fmt, va_list ap)
{
    va_list cp;
    va_copy(cp, ap);
    int n = vsnprintf(NULL, 0, fmt, cp);
    va_end(cp);
    char *s = px_xmalloc(n > 0 ? (size_t)n + 1 : 1);
    vsnprintf(s, n > 0 ? (size_t)n + 1 : 1, fmt, ap);
    return s;
}

/* Appends a message to `list` once (a rule broken in a loop is one line). Any thread. */
static void note(kit *k, json_t *list, const char *fmt, va_list ap)
{
    char *s = vformat(fmt, ap);
    pthread_mutex_lock(&k->lock);
    size_t i;
    json_t *v;
    int seen = 0;
    json_array_foreach(list, i, v) {
        if (strcmp(json_string_value(v), s) == 0) {
            seen = 1;
        }
    }
    if (!seen) {
        json_array_append_new(list, json_string(s));
    }
    pthread_mutex_unlock(&k->lock);
    free(s);
}

static void violation(kit *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void violation(kit *k, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    note(k, k->violations, fmt, ap);
    va_end(ap);
}

static void failure(kit *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void failure(kit *k, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    note(k, k->failures, fmt, ap);
    va_end(ap);
}

static void warning(kit *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warning(kit *k, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    note(k, k->warnings, fmt, ap);
    va_end(ap);
}

/* A JSON value for a body: parsed when it is JSON, else the text (hex when not UTF-8). */
static json_t *body_value(const char *body, size_t len)
{
    if (!body) {
        return json_null();
    }
    json_t *j = json_loadb(body, len, JSON_DECODE_ANY, NULL);
    if (j) {
        return j;
    }
    j = json_stringn(body, len);
    if (j) {
        return j;
    }
    char *hex = px_xmalloc(len * 2 + 1);
    for (size_t i = 0; i < len; i++) {
        snprintf(hex + 2 * i, 3, "%02x", (unsigned char)body[i]);
    }
    j = json_pack("{s:s}", "hex", hex);
    free(hex);
    return j;
}

/* Text of a scenario body: a string as is, anything else as compact JSON. New string. */
static char *body_text(const json_t *b, size_t *len)
{
    char *s;
    if (!b || json_is_null(b)) {
        s = px_xstrdup("");
    } else if (json_is_string(b)) {
        s = px_xstrndup(json_string_value(b), json_string_length(b));
    } else {
        s = json_dumps(b, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!s) {
            s = px_xstrdup("");
        }
    }
    *len = strlen(s);
    return s;
}

/* Replaces every secret option value in s (owned; may be reallocated) with "***". */
static char *mask(kit *k, char *s, int *found)
{
    size_t i;
    json_t *v;
    json_array_foreach(k->secrets, i, v) {
        const char *sec = json_string_value(v);
        size_t n = strlen(sec);
        char *at;
        while (n && (at = strstr(s, sec)) != NULL) {
            char *t = px_xasprintf("%.*s***%s", (int)(at - s), s, at + n);
            free(s);
            s = t;
            if (found) {
                *found = 1;
            }
        }
    }
    return s;
}

/* --- Threads and phases -------------------------------------------------------------------- */

/* Marks a call into the plugin (left with px_crash_leave), so that a crash in it is reported
 * naming the callback (crash.h). event_id borrowed; NULL when the call is not a delivery. */
static void plugin_call(px_crash_frame *f, kit *k, const char *call, const char *event_id)
{
    px_crash_enter(f, call, k->instance, 0, event_id);
}

static kit *the_kit; /* for calls whose handle is bad */

static int on_loop(kit *k, const char *fn)
{
    if (!pthread_equal(pthread_self(), k->loop_thread)) {
        violation(k, "host->%s called from a thread other than the loop thread (only post may "
                  "be; hand results over with host->post)", fn);
        return 0;
    }
    return 1;
}

/* 1 when gen may call host functions: on the loop, and destroy has not returned. */
static int usable(kgen *g, const char *fn)
{
    if (!g) {
        warning(the_kit, "host->%s called with a NULL handle", fn);
        return 0;
    }
    if (!on_loop(g->k, fn)) {
        return 0;
    }
    if (g->phase == PH_DESTROYED) {
        violation(g->k, "host->%s called after destroy returned (generation %d)", fn, g->no);
        return 0;
    }
    return 1;
}

static void push_lifecycle(kit *k, kgen *g, const char *what)
{
    if (json_is_true(json_object_get(k->scn, "reload"))) {
        json_array_append_new(k->lifecycle, json_sprintf("%s#%d", what, g->no));
    } else {
        json_array_append_new(k->lifecycle, json_string(what));
    }
}

/* Something the driver may wait for happened: make the current uv_run(UV_RUN_ONCE) return
 * without blocking in poll, so run_until looks again. */
static void progress(kit *k)
{
    uv_stop(&k->loop);
}

/* --- Queue: posts (any thread) and persisted callbacks ---------------------------------------- */

static void enqueue(kit *k, kq *it)
{
    pthread_mutex_lock(&k->lock);
    if (k->q_tail) {
        k->q_tail->next = it;
    } else {
        k->q_head = it;
    }
    k->q_tail = it;
    pthread_mutex_unlock(&k->lock);
    uv_async_send(&k->wake);
}

/* Runs queued items (only those of gen `only` when non-NULL). Items of a destroyed generation
 * are dropped, as the host drops them. */
static void run_queue(kit *k, kgen *only)
{
    pthread_mutex_lock(&k->lock);
    kq *list = k->q_head, *keep = NULL, **keep_tail = &keep;
    k->q_head = k->q_tail = NULL;
    pthread_mutex_unlock(&k->lock);
    while (list) {
        kq *it = list;
        list = it->next;
        it->next = NULL;
        if (only && it->g != only) {
            *keep_tail = it;
            keep_tail = &it->next;
            continue;
        }
        if (it->g->phase != PH_DESTROYED) {
            px_crash_frame cf;
            plugin_call(&cf, k, it->kind == Q_POST ? "post" : "persisted", NULL);
            if (it->kind == Q_POST) {
                it->cb(it->arg);
            } else if (it->pcb) {
                it->pcb(it->status, it->arg);
            }
            px_crash_leave(&cf);
        }
        free(it);
    }
    if (keep) {
        pthread_mutex_lock(&k->lock);
        kq *rest = k->q_head;
        k->q_head = keep;
        *keep_tail = rest;
        if (!rest) {
            k->q_tail = NULL;
            for (kq *p = keep; p; p = p->next) {
                k->q_tail = p;
            }
        }
        pthread_mutex_unlock(&k->lock);
    }
}

static void on_wake(uv_async_t *a)
{
    kit *k = a->data;
    run_queue(k, NULL);
    progress(k);
}

/* --- Running the loop ---------------------------------------------------------------------- */

static void on_deadline(uv_timer_t *t)
{
    kit *k = t->data;
    k->deadline_hit = 1;
    progress(k);
}

/* Runs the loop until done(arg) or ms elapsed; returns done(arg). done NULL = run ms. */
static int run_until(kit *k, int (*done)(void *arg), void *arg, uint64_t ms)
{
    k->deadline_hit = 0;
    uv_update_time(&k->loop);
    uv_timer_start(&k->deadline, on_deadline, ms, 0);
    while (!(done && done(arg)) && !k->deadline_hit) {
        uv_run(&k->loop, UV_RUN_ONCE);
    }
    uv_timer_stop(&k->deadline);
    return done ? done(arg) : 1;
}

/* --- Host table: logging, events ------------------------------------------------------------ */

static const char *level_name(int level)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    return level >= 0 && level <= 3 ? names[level] : "info";
}

static void kit_log(px_plugin_ctx *ctx, int level, const char *fmt, ...)
{
    kgen *g = (kgen *)ctx;
    if (!usable(g, "log") || !fmt) {
        return;
    }
    kit *k = g->k;
    va_list ap;
    va_start(ap, fmt);
    char *msg = vformat(fmt, ap);
    va_end(ap);
    int leaked = 0;
    msg = mask(k, msg, &leaked);
    if (leaked) {
        warning(k, "a secret option value was written to the log (the host masks it; do not "
                "log secrets)");
    }
    json_array_append_new(k->logs, json_pack("{s:s,s:s}", "level", level_name(level), "msg",
                                             msg));
    px_log(level, k->instance, "%s", msg);
    free(msg);
}

static const char *kit_instance_name(px_plugin_ctx *ctx)
{
    kgen *g = (kgen *)ctx;
    return g ? g->k->instance : "";
}

static kevent *event_new(kgen *g, const char *type, json_t *payload)
{
    kit *k = g->k;
    kevent *e = px_xcalloc(1, sizeof(*e));
    e->g = g;
    e->type = px_xstrdup(type);
    e->id = px_xasprintf("kit-%lu", ++k->seq);
    e->source = px_xstrdup(k->instance);
    e->payload = payload ? payload : json_object();
    e->meta = json_object();
    e->hints = json_object();
    e->time_ms = px_now_ms();
    e->next = k->events;
    k->events = e;
    return e;
}

static px_event *kit_event_create(px_plugin_ctx *ctx, const char *type, json_t *payload)
{
    kgen *g = (kgen *)ctx;
    if (!usable(g, "event_create") || !type || !type[0]) {
        if (g && !type) {
            warning(g->k, "event_create without a type");
        }
        json_decref(payload);
        return NULL;
    }
    return (px_event *)event_new(g, type, payload);
}

/* The kit parses at once (the host checks now and parses later; a plugin cannot tell). */
static px_event *kit_event_create_text(px_plugin_ctx *ctx, const char *type, const char *json,
                                       size_t len, size_t flags, json_error_t *error)
{
    kgen *g = (kgen *)ctx;
    if (!usable(g, "event_create_text") || !type || !type[0] || (!json && len)) {
        if (g && (!type || !type[0])) {
            warning(g->k, "event_create_text without a type");
        }
        if (error) {
            memset(error, 0, sizeof(*error));
            snprintf(error->text, sizeof(error->text), "bad argument");
        }
        return NULL;
    }
    json_error_t local;
    json_t *payload = json_loadb(json ? json : "", len, flags, error ? error : &local);
    if (!payload) {
        return NULL;
    }
    kevent *e = event_new(g, type, payload);
    e->raw = 1;
    e->text = px_xmalloc(len + 1);
    memcpy(e->text, json ? json : "", len);
    e->text[len] = '\0';
    return (px_event *)e;
}

static const char *kit_event_payload_text(const px_event *ev, size_t *len)
{
    kevent *e = (kevent *)ev;
    if (!e) {
        return NULL;
    }
    if (!e->text) {
        e->text = json_dumps(e->payload, JSON_COMPACT | JSON_ENCODE_ANY);
    }
    if (len) {
        *len = strlen(e->text);
    }
    return e->text;
}

static int settable(kevent *e, const char *fn)
{
    if (!e || !usable(e->g, fn)) {
        return 0;
    }
    if (e->emitted || e->discarded) {
        violation(e->g->k, "host->%s on event %s after it was %s", fn, e->id,
                  e->emitted ? "emitted" : "discarded");
        return 0;
    }
    if (e->from_kit) {
        violation(e->g->k, "host->%s on a delivered event (events are immutable once emitted)",
                  fn);
        return 0;
    }
    return 1;
}

static int kit_event_set(px_event *ev, int field, const char *value)
{
    kevent *e = (kevent *)ev;
    if (!settable(e, "event_set")) {
        return PX_ESTATE;
    }
    char **slot = field == PX_EVENT_ID ? &e->id
                  : field == PX_EVENT_DEDUPE_KEY ? &e->dedupe
                  : field == PX_EVENT_SUBJECT ? &e->subject
                                              : NULL;
    if (!slot || !value) {
        return PX_EINVAL;
    }
    free(*slot);
    *slot = px_xstrdup(value);
    return 0;
}

static int kit_event_set_hint(px_event *ev, int hint, int64_t value)
{
    kevent *e = (kevent *)ev;
    if (!settable(e, "event_set_hint")) {
        return PX_ESTATE;
    }
    const char *name = hint == PX_HINT_MAX_ATTEMPTS ? "max_attempts"
                       : hint == PX_HINT_TIMEOUT_MS ? "timeout_ms"
                       : hint == PX_HINT_BACKOFF_MS ? "backoff_ms"
                       : hint == PX_HINT_DEADLINE_MS ? "deadline_ms"
                       : hint == PX_HINT_FAIL_ON_TIMEOUT ? "fail_on_timeout"
                                                    : NULL;
    if (!name || value < 0 || (hint == PX_HINT_MAX_ATTEMPTS && value < 1) ||
        (hint == PX_HINT_FAIL_ON_TIMEOUT && value > 1)) {
        return PX_EINVAL;
    }
    if (hint == PX_HINT_BACKOFF_MS) {
        json_t *list = json_object_get(e->hints, name);
        if (!list) {
            list = json_array();
            json_object_set_new(e->hints, name, list);
        }
        json_array_append_new(list, json_integer(value));
    } else {
        json_object_set_new(e->hints, name, json_integer(value));
    }
    return 0;
}

static int kit_event_set_meta(px_event *ev, const char *key, const char *value)
{
    kevent *e = (kevent *)ev;
    if (!settable(e, "event_set_meta")) {
        return PX_ESTATE;
    }
    if (!key || !value) {
        return PX_EINVAL;
    }
    json_object_set_new(e->meta, key, json_string(value));
    return 0;
}

/* The text must parse to the payload: the host stores it instead of the payload. */
static int kit_event_set_raw(px_event *ev, const char *json, size_t len)
{
    kevent *e = (kevent *)ev;
    if (!settable(e, "event_set_raw")) {
        return PX_ESTATE;
    }
    if (!json) {
        return PX_EINVAL;
    }
    json_t *parsed = json_loadb(json, len, JSON_DECODE_ANY, NULL);
    if (!parsed || !json_equal(parsed, e->payload)) {
        violation(e->g->k, "host->event_set_raw on event %s: the text does not parse to the "
                  "event's payload", e->id);
    }
    json_decref(parsed);
    e->raw = 1;
    free(e->text);
    e->text = px_xmalloc(len + 1);
    memcpy(e->text, json, len);
    e->text[len] = '\0';
    return 0;
}

static int kit_emit(px_plugin_ctx *ctx, px_event *ev, px_persisted_cb cb, void *arg)
{
    kgen *g = (kgen *)ctx;
    kevent *e = (kevent *)ev;
    if (!usable(g, "emit")) {
        return PX_ESTATE;
    }
    kit *k = g->k;
    if (!e) {
        return PX_EINVAL;
    }
    if (e->emitted || e->discarded || e->from_kit) {
        violation(k, "host->emit of event %s that was %s (emit steals the event)", e->id,
                  e->emitted ? "already emitted" : e->discarded ? "discarded" : "delivered");
        return PX_EINVAL;
    }
    if (!(k->desc->kind & PX_KIND_SOURCE)) {
        warning(k, "a plugin that does not declare PX_KIND_SOURCE emits events");
    }
    if (g->phase >= PH_STOPPING) {
        warning(k, "emit after stop (generation %d): stop() means no new work", g->no);
    }
    e->emitted = 1;
    const char *status = k->emit_status == PX_OK ? "ok" : "busy";
    json_t *rec = json_pack("{s:s,s:s,s:O,s:O}", "type", e->type, "id", e->id, "payload",
                            e->payload, "meta", e->meta);
    if (e->dedupe) {
        json_object_set_new(rec, "dedupe_key", json_string(e->dedupe));
    }
    if (e->subject) {
        json_object_set_new(rec, "subject", json_string(e->subject));
    }
    if (json_object_size(e->hints)) {
        json_object_set(rec, "hints", e->hints);
    }
    if (e->raw) {
        json_object_set_new(rec, "raw_text", json_true());
    }
    json_object_set_new(rec, "persisted", json_string(cb ? status : "no callback"));
    if (k->ngens > 1) {
        json_object_set_new(rec, "generation", json_integer(g->no));
    }
    json_array_append_new(k->emits, rec);
    if (cb) {
        kq *it = px_xcalloc(1, sizeof(*it));
        it->kind = Q_PERSISTED;
        it->g = g;
        it->pcb = cb;
        it->status = k->emit_status;
        it->arg = arg;
        enqueue(k, it);
    }
    return 0;
}

static void kit_event_discard(px_event *ev)
{
    kevent *e = (kevent *)ev;
    if (!e || !usable(e->g, "event_discard")) {
        return;
    }
    if (e->emitted || e->from_kit) {
        violation(e->g->k, "host->event_discard of event %s that was %s", e->id,
                  e->emitted ? "emitted (emit stole it)" : "delivered, not created");
        return;
    }
    e->discarded = 1;
}

static const char *kit_event_type(const px_event *ev)
{
    return ev ? ((const kevent *)ev)->type : NULL;
}
static const char *kit_event_id(const px_event *ev)
{
    return ev ? ((const kevent *)ev)->id : NULL;
}
static const char *kit_event_source(const px_event *ev)
{
    return ev ? ((const kevent *)ev)->source : NULL;
}
static int64_t kit_event_time_ms(const px_event *ev)
{
    return ev ? ((const kevent *)ev)->time_ms : 0;
}
static json_t *kit_event_payload(const px_event *ev)
{
    return ev ? ((const kevent *)ev)->payload : NULL;
}
static const char *kit_event_meta(const px_event *ev, const char *key)
{
    if (!ev || !key) {
        return NULL;
    }
    return json_string_value(json_object_get(((const kevent *)ev)->meta, key));
}

/* --- Deliveries ------------------------------------------------------------------------------ */

static kdel *open_delivery(px_delivery *d, const char *fn)
{
    kdel *kd = (kdel *)d;
    if (!kd || !usable(kd->g, fn)) {
        return NULL;
    }
    if (kd->completed) {
        violation(kd->g->k, "host->%s on delivery %d after complete() (it is invalid then)", fn,
                  kd->index);
    }
    return kd;
}

static const px_event *kit_delivery_event(px_delivery *d)
{
    kdel *kd = open_delivery(d, "delivery_event");
    return kd ? (const px_event *)kd->ev : NULL;
}
static const char *kit_delivery_action(px_delivery *d)
{
    kdel *kd = open_delivery(d, "delivery_action");
    return kd ? kd->action : NULL;
}
static json_t *kit_delivery_params(px_delivery *d)
{
    kdel *kd = open_delivery(d, "delivery_params");
    return kd ? kd->params : NULL;
}
static const char *kit_delivery_pipeline(px_delivery *d)
{
    kdel *kd = open_delivery(d, "delivery_pipeline");
    return kd ? kd->pipeline : NULL;
}
static uint32_t kit_delivery_attempt(px_delivery *d)
{
    kdel *kd = open_delivery(d, "delivery_attempt");
    return kd ? kd->attempt : 0;
}

static void kit_complete(px_delivery *d, int status, const char *reason, uint64_t retry_after_ms)
{
    kdel *kd = (kdel *)d;
    if (!kd) {
        return;
    }
    kit *k = kd->g->k;
    pthread_mutex_lock(&k->lock);
    int phase = kd->g->phase;
    pthread_mutex_unlock(&k->lock);
    if (phase == PH_DESTROYED) {
        violation(k, "host->complete for delivery %d after destroy returned", kd->index);
        return;
    }
    if (!on_loop(k, "complete")) {
        return;
    }
    if (kd->completed) {
        violation(k, "host->complete called twice for delivery %d", kd->index);
        return;
    }
    if (status != PX_OK && status != PX_ERETRY && status != PX_EREJECT) {
        violation(k, "host->complete for delivery %d with status %d (must be PX_OK, PX_ERETRY "
                  "or PX_EREJECT)", kd->index, status);
    }
    kd->completed = 1;
    progress(k);
    kd->status = status;
    kd->reason = px_xstrdup(reason ? reason : "");
    kd->retry_after = retry_after_ms;
}

/* --- Loop services ---------------------------------------------------------------------------- */

static int kit_post(px_plugin_ctx *ctx, void (*cb)(void *arg), void *arg)
{
    kgen *g = (kgen *)ctx;
    if (!g || !cb) {
        return PX_EINVAL;
    }
    kit *k = g->k;
    pthread_mutex_lock(&k->lock);
    int phase = g->phase;
    pthread_mutex_unlock(&k->lock);
    if (phase == PH_DESTROYED) {
        violation(k, "host->post called after destroy returned (join worker threads in "
                  "stop, drain or destroy)");
        return PX_ESTATE;
    }
    if (phase == PH_DESTROYING) {
        return PX_ESTATE; /* allowed: a worker finishing while destroy joins it */
    }
    kq *it = px_xcalloc(1, sizeof(*it));
    it->kind = Q_POST;
    it->g = g;
    it->cb = cb;
    it->arg = arg;
    enqueue(k, it);
    return 0;
}

static void on_ktimer(uv_timer_t *h)
{
    ktimer *t = h->data;
    if (t->stopped || t->g->phase == PH_DESTROYED) {
        return;
    }
    t->fired = 1;
    progress(t->g->k);
    px_crash_frame cf;
    plugin_call(&cf, t->g->k, "timer", NULL);
    t->cb(t->arg);
    px_crash_leave(&cf);
}

static int kit_timer_start(px_plugin_ctx *ctx, uint64_t ms, uint64_t repeat_ms,
                           void (*cb)(void *arg), void *arg, px_timer **out)
{
    kgen *g = (kgen *)ctx;
    if (!usable(g, "timer_start")) {
        return PX_ESTATE;
    }
    if (!cb || !out) {
        return PX_EINVAL;
    }
    if (g->phase == PH_DESTROYING) {
        violation(g->k, "host->timer_start inside destroy");
    }
    kit *k = g->k;
    ktimer *t = px_xcalloc(1, sizeof(*t));
    t->g = g;
    t->cb = cb;
    t->arg = arg;
    t->repeat = repeat_ms;
    uv_timer_init(&k->loop, &t->h);
    t->h.data = t;
    uv_timer_start(&t->h, on_ktimer, ms, repeat_ms);
    t->next = k->timers;
    k->timers = t;
    *out = (px_timer *)t;
    return 0;
}

static void kit_timer_stop(px_timer *pt)
{
    ktimer *t = (ktimer *)pt;
    if (!t || !on_loop(t->g->k, "timer_stop")) {
        return;
    }
    if (t->g->phase == PH_DESTROYED) {
        violation(t->g->k, "host->timer_stop called after destroy returned");
        return;
    }
    if (t->stopped) {
        violation(t->g->k, "host->timer_stop called twice for one timer (the host frees the "
                  "timer on the first call)");
        return;
    }
    t->stopped = 1;
    uv_timer_stop(&t->h);
}

/* --- HTTP routes ------------------------------------------------------------------------------ */

static int kit_http_route(px_plugin_ctx *ctx, const char *method, const char *path,
                          uint32_t flags, px_http_handler cb, void *arg)
{
    kgen *g = (kgen *)ctx;
    if (!usable(g, "http_route")) {
        return PX_ESTATE;
    }
    if (!path || path[0] != '/' || !cb) {
        return PX_EINVAL;
    }
    kroute *r = px_xcalloc(1, sizeof(*r));
    r->g = g;
    r->method = px_xstrdup(method);
    r->path = px_xstrdup(path);
    r->flags = flags;
    r->cb = cb;
    r->arg = arg;
    r->next = g->k->routes;
    g->k->routes = r;
    return 0;
}

static kreq *open_req(px_http_request *req, const char *fn)
{
    kreq *r = (kreq *)req;
    if (!r || !usable(r->g, fn)) {
        return NULL;
    }
    if (r->responded) {
        violation(r->g->k, "host->%s on request %d after http_respond (it is released then)", fn,
                  r->index);
        return NULL;
    }
    return r;
}

static const char *kit_req_method(px_http_request *req)
{
    kreq *r = open_req(req, "http_req_method");
    return r ? r->method : "";
}
static const char *kit_req_path(px_http_request *req)
{
    kreq *r = open_req(req, "http_req_path");
    return r ? r->path : "";
}
static const char *kit_req_query(px_http_request *req)
{
    kreq *r = open_req(req, "http_req_query");
    return r ? r->query : "";
}

static const char *header_in(const json_t *headers, const char *name)
{
    const char *key;
    json_t *v;
    if (!name) {
        return NULL;
    }
    json_object_foreach((json_t *)headers, key, v) {
        if (strcasecmp(key, name) == 0) {
            return json_string_value(v);
        }
    }
    return NULL;
}

static const char *kit_req_header(px_http_request *req, const char *name)
{
    kreq *r = open_req(req, "http_req_header");
    return r ? header_in(r->headers, name) : NULL;
}

static const char *kit_req_body(px_http_request *req, size_t *len)
{
    kreq *r = open_req(req, "http_req_body");
    if (len) {
        *len = r ? r->len : 0;
    }
    return r ? r->body : "";
}

static int kit_set_header(px_http_request *req, const char *name, const char *value)
{
    kreq *r = open_req(req, "http_set_header");
    if (!r) {
        return PX_ESTATE;
    }
    if (!name || !value || strpbrk(name, "\r\n:") || strpbrk(value, "\r\n")) {
        return PX_EINVAL;
    }
    json_object_set_new(r->resp_headers, name, json_string(value));
    return 0;
}

static void kit_respond(px_http_request *req, int status, const char *content_type,
                        const char *body, size_t len)
{
    kreq *r = (kreq *)req;
    if (!r || !usable(r->g, "http_respond")) {
        return;
    }
    if (r->responded) {
        violation(r->g->k, "host->http_respond called twice for request %d", r->index);
        return;
    }
    if (status < 100 || status > 599) {
        violation(r->g->k, "host->http_respond with status %d", status);
    }
    r->responded = 1;
    progress(r->g->k);
    r->status = status;
    r->ctype = px_xstrdup(content_type ? content_type : "application/json");
    r->resp_body = px_xstrndup(body ? body : "", body ? len : 0);
    r->resp_len = body ? len : 0;
}

/* --- HTTP client ------------------------------------------------------------------------------ */

static void finish_call(kcall *c, int status, const kresp *resp, const char *error)
{
    kit *k = c->k;
    c->done = 1;
    progress(k);
    json_object_set_new(c->record, "status", json_integer(status));
    if (status < 0) {
        json_object_set_new(c->record, "error", json_string(error ? error : "error"));
    }
    if (c->g->phase == PH_DESTROYED) {
        /* Like the host: calls left at unload are cancelled and answered after destroy. */
        json_object_set_new(c->record, "after_destroy", json_true());
    }
    if (c->cb && !c->orphan) {
        px_crash_frame cf;
        plugin_call(&cf, k, "http_response", NULL);
        c->cb(status, resp ? (const px_http_response *)(const void *)resp : NULL, error, c->arg);
        px_crash_leave(&cf);
    }
}

static void on_real_response(int status, const px_http_response *resp, const char *error,
                             void *arg)
{
    kcall *c = arg;
    kresp r = {.real = resp};
    finish_call(c, status, resp ? &r : NULL, error);
}

static void on_scripted(uv_timer_t *t)
{
    kcall *c = t->data;
    if (c->done) {
        return;
    }
    if (c->cancelled) {
        finish_call(c, UV_ECANCELED, NULL, "cancelled");
        return;
    }
    if (!c->script) {
        finish_call(c, UV_ECONNREFUSED, NULL, "no scripted answer left in the scenario");
        return;
    }
    const json_t *s = c->script;
    const char *error = json_string_value(json_object_get(s, "error"));
    json_t *st = json_object_get(s, "status");
    int status = st ? (int)json_integer_value(st) : error ? UV_ECONNREFUSED : 200;
    if (error || status < 0) {
        finish_call(c, status < 0 ? status : UV_ECONNREFUSED, NULL, error ? error : "error");
        return;
    }
    size_t len = 0;
    char *body = body_text(json_object_get(s, "body"), &len);
    json_t *headers = json_object_get(s, "headers");
    kresp r = {.headers = json_is_object(headers) ? headers : c->k->empty, .body = body,
               .len = len};
    finish_call(c, status, &r, NULL);
    free(body);
}

static json_t *call_record(kgen *g, const px_http_options *opt, size_t fits)
{
    json_t *rec = json_object();
#define FITS(f) (offsetof(px_http_options, f) + sizeof(opt->f) <= fits)
    const char *method = FITS(method) && opt->method ? opt->method
                         : FITS(body) && opt->body  ? "POST"
                                                    : "GET";
    json_object_set_new(rec, "method", json_string(method));
    json_object_set_new(rec, "url", json_string(opt->url));
    json_t *hs = json_array();
    for (const char *const *h = FITS(headers) ? opt->headers : NULL; h && *h; h++) {
        char *masked = mask(g->k, px_xstrdup(*h), NULL);
        json_array_append_new(hs, json_string(masked));
        free(masked);
    }
    json_object_set_new(rec, "headers", hs);
    if (FITS(body_len) && opt->body) {
        json_object_set_new(rec, "body", body_value(opt->body, opt->body_len));
    }
    if (FITS(timeout_ms) && opt->timeout_ms) {
        json_object_set_new(rec, "timeout_ms", json_integer(opt->timeout_ms));
    }
    if (FITS(aws_sigv4) && opt->aws_sigv4) {
        json_object_set_new(rec, "aws_sigv4", json_string(opt->aws_sigv4));
    }
#undef FITS
    if (g->k->ngens > 1) {
        json_object_set_new(rec, "generation", json_integer(g->no));
    }
    return rec;
}

/* The expect_* keys of scripted answer n, checked against the request it answers. */
static void check_request(kit *k, size_t n, const json_t *script, const px_http_options *opt,
                          size_t fits)
{
#define FITS(f) (offsetof(px_http_options, f) + sizeof(opt->f) <= fits)
    const char *method = FITS(method) && opt->method ? opt->method
                         : FITS(body) && opt->body  ? "POST"
                                                    : "GET";
    const char *want = json_string_value(json_object_get(script, "expect_method"));
    if (want && strcasecmp(want, method) != 0) {
        failure(k, "HTTP request %zu: expected method %s, got %s", n, want, method);
    }
    want = json_string_value(json_object_get(script, "expect_url"));
    if (want && strcmp(want, opt->url) != 0) {
        failure(k, "HTTP request %zu: expected URL %s, got %s", n, want, opt->url);
    }
    json_t *hs = json_object_get(script, "expect_headers");
    size_t i;
    json_t *h;
    json_array_foreach(hs, i, h) {
        int found = 0;
        for (const char *const *p = FITS(headers) ? opt->headers : NULL; p && *p; p++) {
            found |= json_string_value(h) && strcasecmp(*p, json_string_value(h)) == 0;
        }
        if (!found) {
            failure(k, "HTTP request %zu: header \"%s\" missing", n,
                    json_string_value(h) ? json_string_value(h) : "?");
        }
    }
    json_t *body = json_object_get(script, "expect_body");
    if (body) {
        const char *b = FITS(body_len) && opt->body ? opt->body : "";
        size_t len = FITS(body_len) && opt->body ? opt->body_len : 0;
        json_t *got = json_loadb(b, len, JSON_DECODE_ANY, NULL);
        int ok = json_is_string(body) ? strlen(json_string_value(body)) <= len &&
                                            memmem(b, len, json_string_value(body),
                                                   strlen(json_string_value(body))) != NULL
                                      : got && json_equal(got, body);
        if (!ok) {
            failure(k, "HTTP request %zu: the body is not the one expected: %.*s", n,
                    len > 300 ? 300 : (int)len, b);
        }
        json_decref(got);
    }
#undef FITS
}

static int kit_http_request(px_plugin_ctx *ctx, const px_http_options *opt,
                            px_http_response_cb cb, void *arg, px_http_call **out)
{
    kgen *g = (kgen *)ctx;
    if (!usable(g, "http_request")) {
        return PX_ESTATE;
    }
    kit *k = g->k;
    size_t need = offsetof(px_http_options, url) + sizeof(opt->url);
    if (!opt || opt->size < need || !opt->url) {
        return PX_EINVAL;
    }
    if (g->phase == PH_DESTROYING) {
        violation(k, "host->http_request inside destroy");
    }
    size_t fits = opt->size < sizeof(*opt) ? opt->size : sizeof(*opt);
    kcall *c = px_xcalloc(1, sizeof(*c));
    c->k = k;
    c->g = g;
    c->cb = cb;
    c->arg = arg;
    c->record = call_record(g, opt, fits);
    json_t *script = json_object_get(k->scn, "http");
    if (json_is_array(script)) {
        if (k->http_next < json_array_size(script)) {
            c->script = json_array_get(script, k->http_next);
            check_request(k, k->http_next, c->script, opt, fits);
        } else {
            failure(k, "the plugin made more HTTP requests than the scenario's http list "
                    "answers (%zu)", json_array_size(script));
        }
        k->http_next++;
        uv_timer_init(&k->loop, &c->timer);
        c->timer.data = c;
        c->timer_open = 1;
        uint64_t delay = (uint64_t)json_integer_value(json_object_get(c->script, "delay_ms"));
        uv_timer_start(&c->timer, on_scripted, delay, 0);
    } else {
        if (!k->client && px_http_client_create(&k->loop, &k->client) < 0) {
            json_decref(c->record);
            free(c);
            return PX_ESTATE;
        }
        int rc = px_http_client_request_owned(k->client, g, opt, on_real_response, c, &c->real);
        if (rc < 0) {
            json_decref(c->record);
            free(c);
            return rc;
        }
    }
    json_array_append_new(k->http_calls, c->record);
    c->next = k->calls;
    k->calls = c;
    if (out) {
        *out = (px_http_call *)c;
    }
    return 0;
}

static void kit_http_cancel(px_http_call *call)
{
    kcall *c = (kcall *)call;
    if (!c || !usable(c->g, "http_cancel")) {
        return;
    }
    if (c->done) {
        violation(c->k, "host->http_cancel after the response callback ran (the call is gone "
                  "then)");
        return;
    }
    if (c->cancelled) {
        return;
    }
    c->cancelled = 1;
    if (c->real) {
        px_http_cancel(c->real);
    } else {
        uv_timer_start(&c->timer, on_scripted, 0, 0);
    }
}

static const char *kit_resp_header(const px_http_response *resp, const char *name)
{
    const kresp *r = (const kresp *)(const void *)resp;
    if (!r) {
        return NULL;
    }
    return r->real ? px_http_resp_header(r->real, name) : header_in(r->headers, name);
}

static const char *kit_resp_body(const px_http_response *resp, size_t *len)
{
    const kresp *r = (const kresp *)(const void *)resp;
    if (!r) {
        if (len) {
            *len = 0;
        }
        return "";
    }
    if (r->real) {
        return px_http_resp_body(r->real, len);
    }
    if (len) {
        *len = r->len;
    }
    return r->body;
}

/* --- State, metrics, lifecycle, dead letters ----------------------------------------------- */

static json_t *kit_kv_get(px_plugin_ctx *ctx, const char *key)
{
    kgen *g = (kgen *)ctx;
    if (!usable(g, "kv_get") || !key) {
        return NULL;
    }
    return px_store_kv_get(g->k->store, g->k->instance, key);
}

static int kit_kv_set(px_plugin_ctx *ctx, const char *key, const json_t *value)
{
    kgen *g = (kgen *)ctx;
    if (!usable(g, "kv_set")) {
        return PX_ESTATE;
    }
    if (!key || !key[0]) {
        return PX_EINVAL;
    }
    int rc = px_store_kv_set(g->k->store, g->k->instance, key, value);
    if (rc == 0) {
        json_object_set_new(g->k->kv_keys, key, json_true());
    }
    return rc;
}

static void metric(px_plugin_ctx *ctx, const char *fn, const char *name, const char *labels,
                   double v, int add)
{
    kgen *g = (kgen *)ctx;
    if (!usable(g, fn) || !name) {
        return;
    }
    char *key = px_xasprintf("%s{%s}", name, labels ? labels : "");
    json_t *old = json_object_get(g->k->metrics, key);
    json_object_set_new(g->k->metrics, key,
                        json_real(add ? (old ? json_number_value(old) : 0) + v : v));
    free(key);
}

static void kit_counter_add(px_plugin_ctx *ctx, const char *name, const char *labels, double d)
{
    metric(ctx, "counter_add", name, labels, d, 1);
}

static void kit_gauge_set(px_plugin_ctx *ctx, const char *name, const char *labels, double v)
{
    metric(ctx, "gauge_set", name, labels, v, 0);
}

static size_t open_deliveries(kit *k, kgen *g)
{
    size_t n = 0;
    for (kdel *d = k->dels; d; d = d->next) {
        n += d->g == g && !d->completed;
    }
    return n;
}

static size_t open_calls(kit *k, kgen *g, int count_cancelled)
{
    size_t n = 0;
    for (kcall *c = k->calls; c; c = c->next) {
        n += c->g == g && !c->done && (count_cancelled || !c->cancelled);
    }
    return n;
}

static void kit_drained(px_plugin_ctx *ctx)
{
    kgen *g = (kgen *)ctx;
    if (!usable(g, "drained")) {
        return;
    }
    kit *k = g->k;
    if (!k->desc->drain) {
        warning(k, "drained() called by a plugin whose descriptor has no drain()");
    } else if (!g->drain_asked) {
        violation(k, "drained() called before the host called drain()");
    }
    progress(k);
    if (++g->drained_calls > 1) {
        warning(k, "drained() called more than once");
        return;
    }
    size_t nd = open_deliveries(k, g), nc = open_calls(k, g, 0);
    if (nd) {
        violation(k, "drained() called with %zu deliveries not completed", nd);
    }
    if (nc) {
        violation(k, "drained() called with %zu HTTP calls in flight", nc);
    }
}

static int kit_dead_letter(px_plugin_ctx *ctx, const char *raw, size_t len, const json_t *meta,
                           const char *reason, px_persisted_cb cb, void *arg)
{
    kgen *g = (kgen *)ctx;
    if (!usable(g, "dead_letter")) {
        return PX_ESTATE;
    }
    if (!raw && len) {
        return PX_EINVAL;
    }
    if (meta && !json_is_object(meta)) {
        return PX_EINVAL;
    }
    kit *k = g->k;
    json_t *rec = json_pack("{s:o,s:s}", "raw", body_value(raw ? raw : "", len), "reason",
                            reason ? reason : "");
    json_object_set_new(rec, "meta", meta ? json_deep_copy(meta) : json_object());
    json_array_append_new(k->dead_letters, rec);
    if (cb) {
        kq *it = px_xcalloc(1, sizeof(*it));
        it->kind = Q_PERSISTED;
        it->g = g;
        it->pcb = cb;
        it->status = PX_OK;
        it->arg = arg;
        enqueue(k, it);
    }
    return 0;
}

static void fill_api(px_host_api *a)
{
    memset(a, 0, sizeof(*a));
    a->abi_major = PX_SDK_ABI_MAJOR;
    a->abi_minor = PX_SDK_ABI_MINOR;
    a->size = sizeof(*a);
    a->log = kit_log;
    a->instance_name = kit_instance_name;
    a->event_create = kit_event_create;
    a->event_set = kit_event_set;
    a->event_set_hint = kit_event_set_hint;
    a->event_set_meta = kit_event_set_meta;
    a->emit = kit_emit;
    a->event_discard = kit_event_discard;
    a->event_type = kit_event_type;
    a->event_id = kit_event_id;
    a->event_source = kit_event_source;
    a->event_meta = kit_event_meta;
    a->event_time_ms = kit_event_time_ms;
    a->event_payload = kit_event_payload;
    a->delivery_event = kit_delivery_event;
    a->delivery_action = kit_delivery_action;
    a->delivery_params = kit_delivery_params;
    a->delivery_pipeline = kit_delivery_pipeline;
    a->delivery_attempt = kit_delivery_attempt;
    a->complete = kit_complete;
    a->post = kit_post;
    a->timer_start = kit_timer_start;
    a->timer_stop = kit_timer_stop;
    a->http_route = kit_http_route;
    a->http_req_method = kit_req_method;
    a->http_req_path = kit_req_path;
    a->http_req_query = kit_req_query;
    a->http_req_header = kit_req_header;
    a->http_req_body = kit_req_body;
    a->http_set_header = kit_set_header;
    a->http_respond = kit_respond;
    a->http_request = kit_http_request;
    a->http_cancel = kit_http_cancel;
    a->http_resp_header = kit_resp_header;
    a->http_resp_body = kit_resp_body;
    a->kv_get = kit_kv_get;
    a->kv_set = kit_kv_set;
    a->counter_add = kit_counter_add;
    a->gauge_set = kit_gauge_set;
    a->drained = kit_drained;
    a->dead_letter = kit_dead_letter;
    a->event_set_raw = kit_event_set_raw;
    a->event_create_text = kit_event_create_text;
    a->event_payload_text = kit_event_payload_text;
}

/* --- Driving the plugin ---------------------------------------------------------------------- */

static int del_done(void *arg)
{
    return ((kdel *)arg)->completed;
}

static int req_done(void *arg)
{
    return ((kreq *)arg)->responded;
}

static int gen_drained(void *arg)
{
    kgen *g = arg;
    return g->drained_calls > 0;
}

static int no_open_deliveries(void *arg)
{
    kgen *g = arg;
    return open_deliveries(g->k, g) == 0;
}

static const char *status_name(int status)
{
    return status == PX_OK       ? "ok"
           : status == PX_ERETRY  ? "retry"
           : status == PX_EREJECT ? "reject"
                                  : "invalid";
}

/* Records delivery d's outcome and checks it against the expect_* keys of its spec. */
static void judge_delivery(kit *k, kdel *d)
{
    const json_t *spec = d->spec;
    int idx = d->index;
    kevent *e = d->ev;
    d->judged = 1;
    json_t *rec = json_pack("{s:i,s:s,s:s}", "index", idx, "type", e->type, "id", e->id);
    if (k->ngens > 1) {
        json_object_set_new(rec, "generation", json_integer(d->g->no));
    }
    if (!d->completed) {
        json_object_set_new(rec, "status", json_string("none"));
        json_array_append_new(k->deliveries, rec);
        return;
    }
    const char *got = status_name(d->status);
    json_object_set_new(rec, "status", json_string(got));
    json_object_set_new(rec, "reason", json_string(d->reason));
    json_object_set_new(rec, "retry_after_ms", json_integer((json_int_t)d->retry_after));
    const char *want = json_string_value(json_object_get(spec, "expect"));
    int pass = 1;
    if (want && strcmp(want, got) != 0) {
        failure(k, "delivery %d: expected %s, got %s (%s)", idx, want, got, d->reason);
        pass = 0;
    }
    json_t *ra = json_object_get(spec, "expect_retry_after_ms");
    if (ra && (uint64_t)json_integer_value(ra) != d->retry_after) {
        failure(k, "delivery %d: expected retry_after_ms %lld, got %llu", idx,
                (long long)json_integer_value(ra), (unsigned long long)d->retry_after);
        pass = 0;
    }
    const char *reason = json_string_value(json_object_get(spec, "expect_reason"));
    if (reason && !strstr(d->reason, reason)) {
        failure(k, "delivery %d: reason \"%s\" does not contain \"%s\"", idx, d->reason,
                reason);
        pass = 0;
    }
    json_object_set_new(rec, "pass", json_boolean(pass));
    json_array_append_new(k->deliveries, rec);
}

static void run_events(kit *k, kgen *g, size_t *index)
{
    const json_t *events = json_object_get(k->scn, "events");
    size_t i;
    json_t *spec;
    if (json_array_size(events) && !(k->desc->kind & PX_KIND_SINK)) {
        failure(k, "the scenario has events but the plugin is not a sink");
        return;
    }
    json_array_foreach(events, i, spec) {
        if (g->phase != PH_RUNNING) {
            return;
        }
        int idx = (int)(*index)++;
        const char *type = json_string_value(json_object_get(spec, "type"));
        json_t *payload = json_object_get(spec, "payload");
        kevent *e = event_new(g, type ? type : "test.event",
                              payload ? json_deep_copy(payload) : json_object());
        e->from_kit = 1;
        e->emitted = 1;
        free(e->source);
        e->source = px_xstrdup("test");
        const char *id = json_string_value(json_object_get(spec, "id"));
        if (id) {
            free(e->id);
            e->id = px_xstrdup(id);
        }
        json_t *meta = json_object_get(spec, "meta");
        if (json_is_object(meta)) {
            json_object_update(e->meta, meta);
        }
        kdel *d = px_xcalloc(1, sizeof(*d));
        d->g = g;
        d->index = idx;
        d->ev = e;
        json_t *params = json_object_get(spec, "params");
        d->params = params ? json_deep_copy(params) : json_object();
        const char *action = json_string_value(json_object_get(spec, "action"));
        const char *pipeline = json_string_value(json_object_get(spec, "pipeline"));
        d->action = px_xstrdup(action ? action : "");
        d->pipeline = px_xstrdup(pipeline ? pipeline : "test");
        json_t *attempt = json_object_get(spec, "attempt");
        d->attempt = attempt ? (uint32_t)json_integer_value(attempt) : 1;
        d->next = k->dels;
        k->dels = d;

        d->spec = spec;
        px_crash_frame cf;
        plugin_call(&cf, k, "deliver", d->ev->id);
        k->desc->deliver(g->state, (px_delivery *)d);
        px_crash_leave(&cf);
        if (json_is_false(json_object_get(spec, "wait"))) {
            continue; /* judged at the end: it may complete during the drain */
        }
        if (!run_until(k, del_done, d, k->timeout_ms)) {
            failure(k, "delivery %d was not completed within %llu ms", idx,
                    (unsigned long long)k->timeout_ms);
        }
        judge_delivery(k, d);
    }
}

static void judge_left(kit *k)
{
    for (kdel *d = k->dels; d; d = d->next) {
        if (!d->judged) {
            if (!d->completed) {
                failure(k, "delivery %d was never completed", d->index);
            }
            judge_delivery(k, d);
        }
    }
}

static kroute *find_route(kit *k, const char *method, const char *path)
{
    for (kroute *r = k->routes; r; r = r->next) {
        if (r->g != k->cur || (r->method && strcasecmp(r->method, method) != 0)) {
            continue;
        }
        size_t n = strlen(r->path);
        if (strcmp(r->path, path) == 0 ||
            ((r->flags & PX_ROUTE_PREFIX) && strncmp(r->path, path, n) == 0 &&
             (path[n] == '/' || (n > 0 && r->path[n - 1] == '/')))) {
            return r;
        }
    }
    return NULL;
}

static void run_requests(kit *k, kgen *g)
{
    const json_t *reqs = json_object_get(k->scn, "requests");
    size_t i;
    json_t *spec;
    json_array_foreach(reqs, i, spec) {
        if (g->phase != PH_RUNNING) {
            return;
        }
        const char *method = json_string_value(json_object_get(spec, "method"));
        const char *path = json_string_value(json_object_get(spec, "path"));
        const char *query = json_string_value(json_object_get(spec, "query"));
        method = method ? method : "POST";
        path = path ? path : "/";
        json_t *rec = json_pack("{s:i,s:s,s:s}", "index", (int)i, "method", method, "path",
                                path);
        kroute *route = find_route(k, method, path);
        int status;
        const char *body_out = "";
        size_t body_len = 0;
        kreq *r = NULL;
        if (!route) {
            status = 404;
            json_object_set_new(rec, "error", json_string("no route registered for it"));
        } else {
            r = px_xcalloc(1, sizeof(*r));
            r->g = route->g;
            r->index = (int)i;
            r->method = px_xstrdup(method);
            r->path = px_xstrdup(path);
            r->query = px_xstrdup(query ? query : "");
            r->body = body_text(json_object_get(spec, "body"), &r->len);
            json_t *h = json_object_get(spec, "headers");
            r->headers = json_is_object(h) ? h : NULL;
            if (!r->headers) {
                r->headers = k->empty;
            }
            r->resp_headers = json_object();
            r->next = k->reqs;
            k->reqs = r;
            px_crash_frame cf;
            plugin_call(&cf, k, "http_route", NULL);
            route->cb((px_http_request *)r, route->arg);
            px_crash_leave(&cf);
            if (!run_until(k, req_done, r, k->timeout_ms)) {
                failure(k, "request %zu (%s %s) was not answered within %llu ms", i, method,
                        path, (unsigned long long)k->timeout_ms);
                json_object_set_new(rec, "status", json_null());
                json_array_append_new(k->requests, rec);
                continue;
            }
            status = r->status;
            body_out = r->resp_body;
            body_len = r->resp_len;
            json_object_set(rec, "headers", r->resp_headers);
        }
        json_object_set_new(rec, "status", json_integer(status));
        json_object_set_new(rec, "body", body_value(body_out, body_len));
        int pass = 1;
        json_t *want = json_object_get(spec, "expect_status");
        if (want && json_integer_value(want) != status) {
            failure(k, "request %zu (%s %s): expected status %lld, got %d", i, method, path,
                    (long long)json_integer_value(want), status);
            pass = 0;
        }
        const char *has = json_string_value(json_object_get(spec, "expect_body"));
        if (has && !strstr(body_out, has)) {
            failure(k, "request %zu (%s %s): body does not contain \"%s\"", i, method, path,
                    has);
            pass = 0;
        }
        json_object_set_new(rec, "pass", json_boolean(pass));
        json_array_append_new(k->requests, rec);
    }
}

static kgen *gen_new(kit *k)
{
    kgen *g = px_xcalloc(1, sizeof(*g));
    g->k = k;
    g->no = k->ngens + 1;
    k->gens[k->ngens++] = g;
    return g;
}

static size_t live_timers(kit *k, kgen *g, int pending_only)
{
    size_t n = 0;
    for (ktimer *t = k->timers; t; t = t->next) {
        if (t->g == g && !t->stopped && (!pending_only || t->repeat || !t->fired)) {
            n++;
        }
    }
    return n;
}

/* init (+ import); returns 0 or the plugin's error. */
static int gen_init(kit *k, kgen *g)
{
    push_lifecycle(k, g, "init");
    void *state = NULL;
    px_crash_frame cf;
    plugin_call(&cf, k, "init", NULL);
    int rc = k->desc->init((px_plugin_ctx *)g, k->config, &state);
    px_crash_leave(&cf);
    if (rc < 0) {
        return rc;
    }
    g->state = state;
    return 0;
}

static int gen_start(kit *k, kgen *g)
{
    if (k->desc->start) {
        push_lifecycle(k, g, "start");
        px_crash_frame cf;
        plugin_call(&cf, k, "start", NULL);
        int rc = k->desc->start(g->state);
        px_crash_leave(&cf);
        if (rc < 0) {
            failure(k, "start failed (generation %d): %s", g->no, px_strerror(rc));
            return rc;
        }
    }
    g->phase = PH_RUNNING;
    return 0;
}

/* What the host does to a generation just before destroy (after = 0) and again after it
 * (after = 1): requests still unanswered are answered 503 and outgoing calls are cancelled, their
 * callbacks running now with status < 0. Calls started inside destroy would call back after it,
 * into freed state: the kit ends those without their callback. */
static void unload(kit *k, kgen *g, int after)
{
    for (kreq *r = k->reqs; r; r = r->next) {
        if (r->g == g && !r->responded) {
            violation(k, "request %d was never answered (http_respond is owed exactly once; "
                      "the host answers 503 at unload)", r->index);
            r->responded = 1;
            r->status = 503;
        }
    }
    size_t nc = open_calls(k, g, 1);
    if (nc && !after && !k->desc->drain) {
        warning(k, "%zu HTTP calls still in flight at unload: cancelled before destroy", nc);
    }
    for (kcall *c = k->calls; c; c = c->next) {
        if (c->g != g || c->done) {
            continue;
        }
        if (after) {
            violation(k, "an HTTP call started inside destroy");
            c->orphan = 1;
        }
        if (c->real) {
            continue;
        }
        finish_call(c, UV_ECANCELED, NULL, "cancelled");
    }
    if (k->client) {
        if (after) {
            for (kcall *c = k->calls; c; c = c->next) {
                c->orphan |= c->g == g && c->real && !c->done;
            }
        }
        px_http_client_cancel_owner(k->client, g);
    }
}

/* stop, drain (bounded), destroy, and the checks that go with each step. */
static void gen_shutdown(kit *k, kgen *g)
{
    const px_plugin_desc *d = k->desc;
    px_crash_frame cf;
    g->phase = PH_STOPPING;
    if (d->stop) {
        push_lifecycle(k, g, "stop");
        plugin_call(&cf, k, "stop", NULL);
        d->stop(g->state);
        px_crash_leave(&cf);
    }
    if (d->drain) {
        g->drain_asked = 1;
        push_lifecycle(k, g, "drain");
        plugin_call(&cf, k, "drain", NULL);
        d->drain(g->state);
        px_crash_leave(&cf);
        if (!run_until(k, gen_drained, g, k->timeout_ms)) {
            violation(k, "drain(): host->drained() was not called within %llu ms",
                      (unsigned long long)k->timeout_ms);
        } else {
            push_lifecycle(k, g, "drained");
        }
    } else if (!run_until(k, no_open_deliveries, g, k->timeout_ms)) {
        violation(k, "%zu deliveries still not completed %llu ms after stop",
                  open_deliveries(k, g), (unsigned long long)k->timeout_ms);
    }
    g->phase = PH_DRAINED;
    run_until(k, NULL, NULL, 1); /* let persisted callbacks and posts already due run */
    if (d->drain) {
        size_t nt = live_timers(k, g, 1), nc = open_calls(k, g, 1), nd = open_deliveries(k, g);
        if (nt) {
            violation(k, "%zu timers still pending after drain (stop them in stop or drain)",
                      nt);
        }
        if (nc) {
            violation(k, "%zu HTTP calls still in flight after drain", nc);
        }
        if (nd && g->drained_calls) {
            violation(k, "%zu deliveries still not completed after drain", nd);
        }
    }
    run_queue(k, g); /* the host runs queued posts before unloading */
    unload(k, g, 0);
    pthread_mutex_lock(&k->lock);
    g->phase = PH_DESTROYING;
    pthread_mutex_unlock(&k->lock);
    push_lifecycle(k, g, "destroy");
    plugin_call(&cf, k, "destroy", NULL);
    d->destroy(g->state);
    px_crash_leave(&cf);
    pthread_mutex_lock(&k->lock);
    g->phase = PH_DESTROYED;
    pthread_mutex_unlock(&k->lock);
    unload(k, g, 1); /* whatever destroy itself started */

    size_t nt = live_timers(k, g, 0);
    if (nt) {
        violation(k, "%zu timers never stopped: timer_stop is owed once for every timer, even a "
                  "fired one-shot", nt);
    }
    for (ktimer *t = k->timers; t; t = t->next) {
        if (t->g == g) {
            uv_timer_stop(&t->h);
        }
    }
    for (kevent *e = k->events; e; e = e->next) {
        if (e->g == g && !e->emitted && !e->discarded) {
            violation(k, "event %s (type %s) was created but neither emitted nor discarded", e->id,
                      e->type);
        }
    }
    for (kroute **pr = &k->routes; *pr;) {
        kroute *r = *pr;
        if (r->g == g) {
            *pr = r->next;
            free(r->method);
            free(r->path);
            free(r);
        } else {
            pr = &r->next;
        }
    }
    run_until(k, NULL, NULL, AFTER_DESTROY_MS); /* late posts, timers or threads show here */
}

static void check_count(kit *k, const char *what, const json_t *want, size_t got)
{
    if (!want) {
        return;
    }
    if (json_is_integer(want)) {
        if ((size_t)json_integer_value(want) != got) {
            failure(k, "expected %lld %s, got %zu", (long long)json_integer_value(want), what,
                    got);
        }
        return;
    }
    json_t *min = json_object_get(want, "min"), *max = json_object_get(want, "max");
    if (min && got < (size_t)json_integer_value(min)) {
        failure(k, "expected at least %lld %s, got %zu", (long long)json_integer_value(min), what,
                got);
    }
    if (max && got > (size_t)json_integer_value(max)) {
        failure(k, "expected at most %lld %s, got %zu", (long long)json_integer_value(max), what,
                got);
    }
}

static void check_expectations(kit *k)
{
    check_count(k, "emits", json_object_get(k->scn, "expect_emits"), json_array_size(k->emits));
    check_count(k, "dead letters", json_object_get(k->scn, "expect_dead_letters"),
                json_array_size(k->dead_letters));
    const char *key;
    json_t *v;
    json_object_foreach(json_object_get(k->scn, "expect_kv"), key, v) {
        json_t *got = json_object_get(k->kv, key);
        if (!got || !json_equal(got, v)) {
            char *text = got ? json_dumps(got, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
            failure(k, "state key \"%s\": expected another value, got %s", key,
                    text ? text : "nothing");
            free(text);
        }
    }
}

/* Loads the plugin and validates its options. 0 or < 0 (a failure is recorded). */
static int load(kit *k, const char *file)
{
    char err[1024];
    int rc = px_loader_open(file, NULL, &k->api, PX_TRUST_STRICT, &k->lib, err,
                               sizeof(err));
    if (rc < 0) {
        failure(k, "load: %s", err);
        return rc;
    }
    k->desc = k->lib->desc;
    const px_plugin_desc *d = k->desc;
    json_object_set_new(k->report, "plugin", json_string(d->name));
    json_object_set_new(k->report, "version", json_string(d->version ? d->version : ""));
    json_object_set_new(k->report, "abi", json_sprintf("%u.%u", d->abi_major, d->abi_minor));
    json_object_set_new(k->report, "kind",
                        json_string((d->kind & PX_KIND_SOURCE) && (d->kind & PX_KIND_SINK)
                                        ? "source+sink"
                                        : (d->kind & PX_KIND_SOURCE) ? "source" : "sink"));
    const char *inst = json_string_value(json_object_get(k->scn, "instance"));
    k->instance = px_xstrdup(inst ? inst : d->name);

    json_t *raw = json_object_get(k->scn, "config");
    px_config cfg = {0};
    cfg.path = (char *)"scenario config";
    px_instance_conf ic = {0};
    ic.name = k->instance;
    ic.plugin = (char *)d->name;
    ic.config = raw ? raw : k->empty;
    ic.line = 1;
    ic.col = 1;
    rc = px_config_options(&cfg, &ic, d->options, &k->config, err, sizeof(err));
    if (rc < 0) {
        failure(k, "config: %s", err);
        return rc;
    }
    for (const px_option *o = d->options; o && o->name; o++) {
        const char *v = json_string_value(json_object_get(k->config, o->name));
        if ((o->flags & PX_OPT_SECRET) && v && v[0]) {
            json_array_append_new(k->secrets, json_string(v));
        }
    }
    const char *key;
    json_t *value;
    json_object_foreach(k->kv, key, value) {
        px_store_kv_set(k->store, k->instance, key, value);
        json_object_set_new(k->kv_keys, key, json_true());
    }
    return 0;
}

/* The plugin's state as the store holds it at the end of the run. */
static json_t *final_state(kit *k)
{
    json_t *state = json_object();
    const char *key;
    json_t *unused;
    json_object_foreach(k->kv_keys, key, unused) {
        json_t *v = px_store_kv_get(k->store, k->instance, key);
        if (v) {
            json_object_set_new(state, key, v);
        }
    }
    return state;
}

static int check_scenario(kit *k)
{
    static const char *arrays[] = {"http", "requests", "events"};
    for (size_t i = 0; i < sizeof(arrays) / sizeof(arrays[0]); i++) {
        json_t *v = json_object_get(k->scn, arrays[i]);
        if (v && !json_is_array(v)) {
            failure(k, "scenario: \"%s\" must be an array", arrays[i]);
            return -1;
        }
    }
    static const char *objects[] = {"config", "kv", "expect_kv"};
    for (size_t i = 0; i < sizeof(objects) / sizeof(objects[0]); i++) {
        json_t *v = json_object_get(k->scn, objects[i]);
        if (v && !json_is_object(v)) {
            failure(k, "scenario: \"%s\" must be an object", objects[i]);
            return -1;
        }
    }
    const char *es = json_string_value(json_object_get(k->scn, "emit_status"));
    if (es && strcmp(es, "ok") != 0 && strcmp(es, "busy") != 0) {
        failure(k, "scenario: emit_status must be \"ok\" or \"busy\"");
        return -1;
    }
    k->emit_status = es && strcmp(es, "busy") == 0 ? PX_EBUSY : PX_OK;
    json_t *t = json_object_get(k->scn, "timeout_ms");
    k->timeout_ms = json_integer_value(t) > 0 ? (uint64_t)json_integer_value(t)
                                              : DEFAULT_TIMEOUT_MS;
    return 0;
}

/* The plugin's part: returns when every generation is destroyed. */
static void drive(kit *k)
{
    json_t *run = json_object_get(k->scn, "run_ms");
    uint64_t run_ms = run ? (uint64_t)json_integer_value(run) : DEFAULT_RUN_MS;
    int expect_init_error = json_is_true(json_object_get(k->scn, "expect_init_error"));
    kgen *g = gen_new(k);
    int rc = gen_init(k, g);
    if (expect_init_error || rc < 0) {
        if (expect_init_error && rc >= 0) {
            failure(k, "init succeeded, the scenario expects it to fail");
            gen_shutdown(k, g);
        } else if (!expect_init_error) {
            failure(k, "init failed: %s", px_strerror(rc));
        }
        if (rc < 0) {
            /* destroy is not called after a failed init: nothing may be left behind. */
            g->phase = PH_DESTROYED;
            size_t nt = live_timers(k, g, 0);
            if (nt) {
                violation(k, "init failed but left %zu timers running", nt);
            }
            for (ktimer *t = k->timers; t; t = t->next) {
                uv_timer_stop(&t->h);
            }
            if (open_calls(k, g, 1)) {
                violation(k, "init failed but left HTTP calls in flight");
            }
        }
        return;
    }
    k->cur = g;
    size_t index = 0;
    if (gen_start(k, g) == 0) {
        run_requests(k, g);
        run_events(k, g, &index);
        run_until(k, NULL, NULL, run_ms);
    }
    if (json_is_true(json_object_get(k->scn, "reload")) && g->phase == PH_RUNNING) {
        kgen *g2 = gen_new(k);
        rc = gen_init(k, g2);
        if (rc < 0) {
            failure(k, "init of generation 2 failed: %s", px_strerror(rc));
            g2->phase = PH_DESTROYED;
        } else {
            if (k->desc->export_state && k->desc->import_state) {
                px_crash_frame cf;
                push_lifecycle(k, g, "export_state");
                plugin_call(&cf, k, "export_state", NULL);
                json_t *st = k->desc->export_state(g->state);
                px_crash_leave(&cf);
                push_lifecycle(k, g2, "import_state");
                plugin_call(&cf, k, "import_state", NULL);
                rc = k->desc->import_state(g2->state, st);
                px_crash_leave(&cf);
                json_object_set_new(k->report, "handed_over", st ? st : json_null());
                if (rc < 0) {
                    failure(k, "import_state failed: %s", px_strerror(rc));
                }
            }
            if (gen_start(k, g2) == 0) {
                k->cur = g2;
            }
        }
        gen_shutdown(k, g);
        if (g2->phase == PH_RUNNING) {
            run_requests(k, g2);
            run_events(k, g2, &index);
            run_until(k, NULL, NULL, run_ms);
            gen_shutdown(k, g2);
        } else if (g2->phase != PH_DESTROYED) {
            gen_shutdown(k, g2);
        }
        return;
    }
    gen_shutdown(k, g);
}

static void on_handle_closed(uv_handle_t *h)
{
    (void)h;
}

static void on_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) {
        uv_close(h, on_handle_closed);
    }
}

static void teardown(kit *k)
{
    if (k->client) {
        px_http_client_close(k->client, NULL, NULL);
        k->client = NULL;
    }
    while (k->timers) {
        ktimer *t = k->timers;
        k->timers = t->next;
        uv_close((uv_handle_t *)&t->h, on_timer_closed);
    }
    for (kcall *c = k->calls; c; c = c->next) {
        if (c->timer_open) {
            uv_close((uv_handle_t *)&c->timer, on_handle_closed);
        }
    }
    px_store_close(k->store);
    uv_close((uv_handle_t *)&k->wake, on_handle_closed);
    uv_close((uv_handle_t *)&k->deadline, on_handle_closed);
    uv_run(&k->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&k->loop) != 0) {
        uv_walk(&k->loop, close_walk, NULL);
        uv_run(&k->loop, UV_RUN_DEFAULT);
        uv_loop_close(&k->loop);
    }
    run_queue(k, NULL);
    while (k->calls) {
        kcall *c = k->calls;
        k->calls = c->next;
        free(c);
    }
    while (k->events) {
        kevent *e = k->events;
        k->events = e->next;
        free(e->type);
        free(e->id);
        free(e->source);
        free(e->dedupe);
        free(e->subject);
        json_decref(e->payload);
        free(e->text);
        json_decref(e->meta);
        json_decref(e->hints);
        free(e);
    }
    while (k->dels) {
        kdel *d = k->dels;
        k->dels = d->next;
        json_decref(d->params);
        free(d->action);
        free(d->pipeline);
        free(d->reason);
        free(d);
    }
    while (k->routes) {
        kroute *r = k->routes;
        k->routes = r->next;
        free(r->method);
        free(r->path);
        free(r);
    }
    while (k->reqs) {
        kreq *r = k->reqs;
        k->reqs = r->next;
        free(r->method);
        free(r->path);
        free(r->query);
        free(r->body);
        free(r->resp_body);
        free(r->ctype);
        json_decref(r->resp_headers);
        free(r);
    }
    for (int i = 0; i < k->ngens; i++) {
        free(k->gens[i]);
    }
    px_loader_close(k->lib); /* last: the plugin's code is no longer needed */
    pthread_mutex_destroy(&k->lock);
}

/* The whole scenario, in this process. */
static int run_here(const char *file, const json_t *scenario, json_t **report)
{
    kit *k = px_xcalloc(1, sizeof(*k));
    the_kit = k;
    json_t *scn = json_is_object(scenario) ? json_deep_copy(scenario) : json_object();
    k->scn = scn;
    k->empty = json_object();
    k->loop_thread = pthread_self();
    pthread_mutex_init(&k->lock, NULL);
    uv_loop_init(&k->loop);
    uv_async_init(&k->loop, &k->wake, on_wake);
    k->wake.data = k;
    uv_timer_init(&k->loop, &k->deadline);
    k->deadline.data = k;
    fill_api(&k->api);
    k->report = json_object();
    k->lifecycle = json_array();
    k->deliveries = json_array();
    k->requests = json_array();
    k->emits = json_array();
    k->dead_letters = json_array();
    k->http_calls = json_array();
    k->logs = json_array();
    k->violations = json_array();
    k->failures = json_array();
    k->warnings = json_array();
    k->secrets = json_array();
    k->metrics = json_object();
    json_t *kv = json_object_get(scn, "kv");
    k->kv = json_is_object(kv) ? json_deep_copy(kv) : json_object();
    k->kv_keys = json_object();
    px_store_open_memory(&k->loop, NULL, &k->store);
    json_object_set_new(k->report, "file", json_string(file));

    if (check_scenario(k) == 0 && load(k, file) == 0) {
        drive(k);
        json_decref(k->kv);
        k->kv = final_state(k);
        judge_left(k);
        check_expectations(k);
    }
    teardown(k);

    json_t *r = k->report;
    int ok = json_array_size(k->violations) == 0 && json_array_size(k->failures) == 0;
    json_object_set_new(r, "ok", json_boolean(ok));
    json_object_set_new(r, "lifecycle", k->lifecycle);
    json_object_set_new(r, "deliveries", k->deliveries);
    json_object_set_new(r, "requests", k->requests);
    json_object_set_new(r, "emits", k->emits);
    json_object_set_new(r, "dead_letters", k->dead_letters);
    json_object_set_new(r, "http_calls", k->http_calls);
    json_object_set_new(r, "kv", k->kv);
    json_object_set_new(r, "metrics", k->metrics);
    json_object_set_new(r, "logs", k->logs);
    json_object_set_new(r, "violations", k->violations);
    json_object_set_new(r, "failures", k->failures);
    json_object_set_new(r, "warnings", k->warnings);
    json_decref(k->config);
    json_decref(k->secrets);
    json_decref(k->kv_keys);
    json_decref(scn);
    json_decref(k->empty);
    free(k->instance);
    free(k);
    the_kit = NULL;
    *report = r;
    return ok ? 0 : 1;
}

/* --- One process per scenario -------------------------------------------------------------- */

/* Reads fd to its end into a NUL-terminated string (owned by caller). */
static char *read_all(int fd)
{
    size_t n = 0, cap = 4096;
    char *b = px_xmalloc(cap);
    for (;;) {
        if (cap - n < 2048) {
            cap *= 2;
            b = px_xrealloc(b, cap);
        }
        ssize_t got = read(fd, b + n, cap - n - 1);
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got <= 0) {
            break;
        }
        n += (size_t)got;
    }
    b[n] = '\0';
    return b;
}

/* A report in the usual shape, every list empty but failures. */
static json_t *failed_report(const char *file, char *failure)
{
    json_t *r = json_pack("{s:b, s:s, s:[], s:[], s:[], s:[], s:[], s:[], s:{}, s:{}, s:[], s:[], "
                          "s:[s], s:[]}", "ok", 0, "file", file, "lifecycle", "deliveries",
                          "requests", "emits", "dead_letters", "http_calls", "kv", "metrics",
                          "logs", "violations", "failures", failure, "warnings");
    free(failure);
    return r;
}

/* The report of a run that died of signal signo: the record its crash handler left in dir
 * names the plugin call that was running. */
static json_t *crash_report(const char *file, const char *dir, int signo)
{
    char *path = px_xasprintf("%s/%s", dir, PX_CRASH_MARKER);
    FILE *f = fopen(path, "r");
    char line[1024];
    px_crash_record rec;
    int found = f && fgets(line, sizeof(line), f) && px_crash_parse_line(line, &rec) == 0;
    if (f) {
        fclose(f);
    }
    unlink(path);
    free(path);
    json_t *r = failed_report(file, found ? px_crash_reason(&rec)
                                          : px_xasprintf("crash: %s", px_crash_signame(signo)));
    if (found && rec.call[0]) {
        json_object_set_new(r, "crash", json_pack("{s:s, s:s, s:s, s:s}", "signal",
                                                  px_crash_signame(rec.signo), "call", rec.call,
                                                  "instance", rec.instance, "event", rec.event));
    }
    return r;
}

/* Runs the scenario in a child process writing its report to fd and exits. */
static void run_child(const char *file, const json_t *scenario, const char *dir, int fd)
{
    px_crash_install(dir);
    json_t *report = NULL;
    int rc = run_here(file, scenario, &report);
    int wrote = json_dumpfd(report, fd, JSON_COMPACT) == 0;
    json_decref(report);
    close(fd);
    exit(wrote ? rc : 2);
}

int px_testkit_run(const char *file, const json_t *scenario, json_t **report)
{
    const char *tmp = getenv("TMPDIR");
    char *dir = px_xasprintf("%s/plexus-kit-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    int fds[2] = {-1, -1};
    if (!mkdtemp(dir) || pipe(fds) != 0) {
        *report = failed_report(file, px_xasprintf("cannot set up the run: %s", strerror(errno)));
        free(dir);
        return 1;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        run_child(file, scenario, dir, fds[1]);
    }
    close(fds[1]);
    char *text = pid > 0 ? read_all(fds[0]) : NULL;
    close(fds[0]);
    int status = 0;
    while (pid > 0 && waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    json_t *r = text && text[0] ? json_loads(text, 0, NULL) : NULL;
    free(text);
    int rc = 1;
    if (pid < 0) {
        r = failed_report(file, px_xasprintf("cannot start the run: %s", strerror(errno)));
    } else if (WIFSIGNALED(status)) {
        json_decref(r);
        r = crash_report(file, dir, WTERMSIG(status));
    } else if (!json_is_object(r)) {
        json_decref(r);
        r = failed_report(file, px_xasprintf("the run exited with status %d and no report",
                                             WEXITSTATUS(status)));
    } else if (WEXITSTATUS(status) > 1) {
        json_object_set_new(r, "ok", json_false());
        json_array_append_new(json_object_get(r, "failures"),
                              json_sprintf("the run exited with status %d",
                                           WEXITSTATUS(status)));
    } else {
        rc = WEXITSTATUS(status);
    }
    char *marker = px_xasprintf("%s/%s", dir, PX_CRASH_MARKER);
    unlink(marker);
    free(marker);
    rmdir(dir);
    free(dir);
    *report = r;
    return rc;
}
