/* The plugin test kit (see testkit.h): the real runtime around one plugin, with test doubles only
 * at its edges. The kit builds a configuration (the plugin's instance, and pipelines from a
 * source of its own for the scenario's events), hands the runtime an in-memory store and a host
 * table of checking shims, and drives the scenario through the real loader, generations, router,
 * mapping, dispatcher and HTTP server. Each shim checks the plugin's side of the contract and
 * calls through to the real host function (api.c). Handles whose real object dies while the
 * plugin may still hold it (timers, route requests, outgoing calls and their responses) are kit
 * records that live until the end of the run, so that a plugin that uses one too long is reported
 * as a rule violation instead of crashing; events are held by a reference of the kit, and
 * delivery handles are never given out twice by the dispatcher. */
#include "clock.h"
#include "testkit.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <plexus/sdk.h>
#include <uv.h>

#include "api.h"
#include "config.h"
#include "crash.h"
#include "dispatch.h"
#include "err.h"
#include "event.h"
#include "http_client.h"
#include "http_server.h"
#include "instance.h"
#include "lifecycle.h"
#include "loader.h"
#include "log.h"
#include "mem.h"
#include "net.h"
#include "runtime.h"
#include "store.h"

#define DEFAULT_TIMEOUT_MS 5000
#define DEFAULT_RUN_MS 100
#define AFTER_DESTROY_MS 50 /* how long the kit keeps watching once destroy returned */
#define KIT_SOURCE "kit_source"       /* the in-process plugin the scenario's events come from */
#define KIT_COLLECTOR "kit_collector" /* the in-process sink the plugin's emits are routed to */
#define MAX_HOSTS 4 /* "hosts": runtimes sharing one in-memory cluster state */
#define MAX_GENS MAX_HOSTS /* one generation per host, or two on one host with "reload" */

enum { PH_LOADED = 0, PH_RUNNING, PH_STOPPING, PH_DESTROYING, PH_DESTROYED };

typedef struct kit kit;

typedef struct kgen { /* a generation of the plugin: the real px_plugin_ctx and its checks */
    kit *k;
    px_plugin_ctx *ctx; /* the runtime's (only compared once the generation is gone) */
    int no;             /* generation number, from 1 */
    int host;           /* the host (runtime) it runs on, from 1 */
    int phase;          /* PH_*, under k->lock */
    int drain_asked;
    int drained_calls;
    void *pin;          /* a dlopen reference to the generation's library, so that a thread of
                         * the plugin outliving destroy is reported instead of crashing */
} kgen;

typedef struct ktimer { /* px_timer as the plugin sees it */
    kgen *g;
    px_timer *real;
    void (*cb)(void *arg);
    void *arg;
    uint64_t repeat;
    int stopped, fired;
    struct ktimer *next;
} ktimer;

typedef struct kevent { /* an event the plugin was given: one reference held by the kit */
    px_event *ev;
    kgen *g;
    int emitted, discarded, delivered;
    int raw; /* event_set_raw or event_create_text was given the payload's text */
    struct kevent *next;
} kevent;

typedef struct kdel { /* one event of the scenario, and the delivery it became */
    kgen *g;               /* NULL until handed over */
    int index;
    px_event *ev;          /* one reference held by the kit */
    px_delivery *handle;   /* the dispatcher's handle, NULL until handed over */
    const json_t *spec;    /* borrowed from the scenario */
    int completed, status, judged;
    char *reason;
    uint64_t retry_after;
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
    int orphan; /* its callback is not run: the generation was destroyed first */
    px_http_call *real;
    uv_timer_t timer; /* scripted answers arrive through it */
    int timer_open;
    const json_t *script; /* borrowed from the scenario; NULL = none left */
    json_t *record;       /* the http_calls entry (borrowed from the report) */
    struct kcall *next;
} kcall;

typedef struct kroute { /* a route the plugin registered: what the real server calls */
    kgen *g;
    px_http_handler cb;
    void *arg;
    struct kroute *next;
} kroute;

typedef struct kreq { /* px_http_request as the plugin sees it */
    kgen *g;
    int index;
    px_http_request *real;
    json_t *resp_headers; /* what the plugin set */
    int responded, status;
    struct kreq *next;
} kreq;

typedef struct kpers { /* a persisted callback the plugin asked for */
    kit *k;
    kgen *g;
    px_persisted_cb cb;
    void *arg;
    json_t *record; /* the emits / dead_letters entry (borrowed from the report) */
    struct kpers *next;
} kpers;

typedef struct kout { /* a request of the scenario to the plugin's routes, over HTTP */
    kit *k;
    int done, status;
    char *body, *error;
    size_t len;
    const json_t *want_headers; /* the spec's expect_headers (borrowed), or NULL */
    json_t *headers;            /* those headers as answered: name -> value or null */
    struct kout *next;
} kout;

typedef struct klock { /* a lease the plugin asked for: its callback goes through the kit */
    kgen *g;
    char *name;
    void (*cb)(void *arg, int status);
    void *arg;
    int released; /* lock_release returned: no callback runs any more */
    struct klock *next;
} klock;

typedef struct kbusy { /* a put of the refusing store double */
    px_store_put_cb cb;
    void *arg;
} kbusy;

struct kit {
    uv_loop_t loop;
    pthread_t loop_thread;
    pthread_mutex_t lock; /* phases, the deliveries list and the report lists */
    uv_timer_t deadline;
    int deadline_hit;
    px_host_api real; /* the runtime's functions (api.c) */
    px_host_api api;  /* the shims handed to the plugin */
    px_plugin_lib *lib; /* the plugin file as the kit opened it to read its descriptor */
    const px_plugin_desc *desc;
    const json_t *scn;
    const char *dir;  /* the run's own folder: the runtime's data_dir */
    char *instance, *src_name, *coll_name;
    json_t *config;  /* validated options */
    json_t *secrets; /* strings never to show */
    int hosts;            /* runtimes on the loop (the scenario's "hosts"; 1 by default) */
    int creating;         /* the host whose runtime is being created, from 1 */
    px_runtime *rts[MAX_HOSTS]; /* rts[h - 1]: host h's runtime */
    px_plugin_ctx *src_ctx[MAX_HOSTS]; /* the kit source's generation on each host */
    int rt_closed;        /* runtimes whose on_close ran */
    kgen *gens[MAX_GENS];
    int ngens;
    kgen *cur;
    int init_rc;
    ktimer *timers;
    kevent *events;
    kdel *dels;
    kcall *calls;
    kroute *routes;
    kreq *reqs;
    kpers *pers;
    kout *outs;
    int req_index; /* the scenario request being served */
    klock *locks;
    json_t *lock_held; /* lease name -> {host number: true} while its last callback said held */
    px_store busy_store[MAX_HOSTS]; /* the memory store refusing every put (emit_status busy) */
    px_store_ops busy_ops;
    px_http_client *client; /* the scenario's requests to the plugin's routes */
    json_t *kv_keys; /* every key the state had: an object used as a set */
    json_t *kv, *metrics; /* kv: the state as reported (the scenario's until the plugin ran) */
    json_t *empty; /* {} for absent scenario objects */
    json_t *report, *lifecycle, *deliveries, *requests, *emits, *dead_letters, *http_calls,
        *logs, *cluster, *violations, *failures, *warnings;
    char *http_used;   /* http_used[i]: scripted answer i was used (and has no "repeat") */
    int emit_status;
    uint64_t timeout_ms;
    unsigned long seq;
};

static kit *the_kit; /* for the in-process plugins and calls whose handle is bad */

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

/* --- Threads, phases, lookups -------------------------------------------------------------- */

/* Marks a call of the kit into the plugin (left with px_crash_leave), so that a crash in it is
 * reported naming the callback (crash.h). */
static void plugin_call(px_crash_frame *f, kit *k, const char *call)
{
    px_crash_enter(f, call, k->instance, 0, NULL);
}

static int phase_of(kgen *g)
{
    pthread_mutex_lock(&g->k->lock);
    int phase = g->phase;
    pthread_mutex_unlock(&g->k->lock);
    return phase;
}

static void set_phase(kgen *g, int phase)
{
    pthread_mutex_lock(&g->k->lock);
    g->phase = phase;
    pthread_mutex_unlock(&g->k->lock);
}

static kgen *gen_of(kit *k, const px_plugin_ctx *ctx)
{
    for (int i = 0; i < k->ngens; i++) {
        if (k->gens[i]->ctx == ctx) {
            return k->gens[i];
        }
    }
    return NULL;
}

static int on_loop(kit *k, const char *fn)
{
    if (!pthread_equal(pthread_self(), k->loop_thread)) {
        violation(k, "host->%s called from a thread other than the loop thread (only post may "
                  "be; hand results over with host->post)", fn);
        return 0;
    }
    return 1;
}

/* The generation ctx names when it may call host functions (on the loop, destroy has not
 * returned), else NULL. */
static kgen *usable(px_plugin_ctx *ctx, const char *fn)
{
    kit *k = the_kit;
    kgen *g = ctx ? gen_of(k, ctx) : NULL;
    if (!g) {
        warning(k, "host->%s called with %s", fn, ctx ? "an unknown context" : "a NULL handle");
        return NULL;
    }
    if (!on_loop(k, fn)) {
        return NULL;
    }
    if (phase_of(g) == PH_DESTROYED) {
        violation(k, "host->%s called after destroy returned (generation %d)", fn, g->no);
        return NULL;
    }
    return g;
}

/* Marks record rec (a report entry) with g's generation when the scenario reloads and with its
 * host when it runs several. */
static void tag(kit *k, kgen *g, json_t *rec)
{
    if (k->hosts == 1 && k->ngens > 1) {
        json_object_set_new(rec, "generation", json_integer(g->no));
    }
    if (k->hosts > 1) {
        json_object_set_new(rec, "host", json_integer(g->host));
    }
}

static void push_lifecycle(kit *k, kgen *g, const char *what)
{
    if (k->hosts > 1) {
        json_array_append_new(k->lifecycle, json_sprintf("%s@%d", what, g->host));
    } else if (json_is_true(json_object_get(k->scn, "reload"))) {
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

static kevent *event_rec(kit *k, const px_event *ev)
{
    for (kevent *e = k->events; e; e = e->next) {
        if (e->ev == ev) {
            return e;
        }
    }
    return NULL;
}

/* Records an event the plugin was given (the kit's reference keeps it alive for the run). */
static kevent *event_keep(kit *k, kgen *g, px_event *ev, int delivered)
{
    kevent *e = event_rec(k, ev);
    if (e) {
        return e;
    }
    e = px_xcalloc(1, sizeof(*e));
    e->ev = px_event_ref(ev);
    e->g = g;
    e->delivered = delivered;
    e->next = k->events;
    k->events = e;
    return e;
}

static kdel *del_of(kit *k, const px_delivery *handle)
{
    pthread_mutex_lock(&k->lock);
    kdel *found = NULL;
    for (kdel *d = k->dels; d && !found; d = d->next) {
        if (handle && d->handle == handle) {
            found = d;
        }
    }
    pthread_mutex_unlock(&k->lock);
    return found;
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

static void kit_log(px_plugin_ctx *ctx, int level, const char *fmt, ...)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    kgen *g = usable(ctx, "log");
    if (!g || !fmt) {
        return;
    }
    kit *k = the_kit;
    va_list ap;
    va_start(ap, fmt);
    char *msg = vformat(fmt, ap);
    va_end(ap);
    int leaked = 0;
    char *shown = mask(k, px_xstrdup(msg), &leaked);
    if (leaked) {
        warning(k, "a secret option value was written to the log (the host masks it; do not "
                "log secrets)");
    }
    json_t *rec = json_pack("{s:s,s:s}", "level", level >= 0 && level <= 3 ? names[level] : "info",
                            "msg", shown);
    if (k->hosts > 1) {
        json_object_set_new(rec, "host", json_integer(g->host));
    }
    json_array_append_new(k->logs, rec);
    k->real.log(ctx, level, "%s", msg);
    free(shown);
    free(msg);
}

static px_event *kit_event_create(px_plugin_ctx *ctx, const char *type, json_t *payload)
{
    kgen *g = usable(ctx, "event_create");
    if (!g || !type || !type[0]) {
        if (g && !type) {
            warning(the_kit, "event_create without a type");
        }
        json_decref(payload);
        return NULL;
    }
    px_event *ev = the_kit->real.event_create(ctx, type, payload);
    if (ev) {
        event_keep(the_kit, g, ev, 0);
    }
    return ev;
}

static px_event *kit_event_create_text(px_plugin_ctx *ctx, const char *type, const char *json,
                                       size_t len, size_t flags, json_error_t *error)
{
    kgen *g = usable(ctx, "event_create_text");
    if (!g) {
        if (error) {
            memset(error, 0, sizeof(*error));
            snprintf(error->text, sizeof(error->text), "bad argument");
        }
        return NULL;
    }
    if (!type || !type[0]) {
        warning(the_kit, "event_create_text without a type");
    }
    px_event *ev = the_kit->real.event_create_text(ctx, type, json, len, flags, error);
    if (ev) {
        event_keep(the_kit, g, ev, 0)->raw = 1;
    }
    return ev;
}

/* The record of an event the host gave the plugin, else NULL (a violation noted). */
static kevent *readable(const px_event *ev, const char *fn)
{
    kevent *e = ev ? event_rec(the_kit, ev) : NULL;
    if (ev && !e) {
        violation(the_kit, "host->%s on an event the host never gave out", fn);
    }
    return e;
}

/* The event's record when the plugin may still change it, else NULL (a violation noted). */
static kevent *settable(px_event *ev, const char *fn)
{
    kevent *e = readable(ev, fn);
    if (!e || !usable(e->g->ctx, fn)) {
        return NULL;
    }
    if (e->emitted || e->discarded) {
        violation(the_kit, "host->%s on event %s after it was %s", fn, e->ev->id,
                  e->emitted ? "emitted" : "discarded");
        return NULL;
    }
    if (e->delivered) {
        violation(the_kit, "host->%s on a delivered event (events are immutable once emitted)",
                  fn);
        return NULL;
    }
    return e;
}

static int kit_event_set(px_event *ev, int field, const char *value)
{
    return settable(ev, "event_set") ? the_kit->real.event_set(ev, field, value) : PX_ESTATE;
}

static int kit_event_set_hint(px_event *ev, int hint, int64_t value)
{
    return settable(ev, "event_set_hint") ? the_kit->real.event_set_hint(ev, hint, value)
                                          : PX_ESTATE;
}

static int kit_event_set_meta(px_event *ev, const char *key, const char *value)
{
    return settable(ev, "event_set_meta") ? the_kit->real.event_set_meta(ev, key, value)
                                          : PX_ESTATE;
}

/* The text must parse to the payload: the host stores it instead of the payload. */
static int kit_event_set_raw(px_event *ev, const char *json, size_t len)
{
    kevent *e = settable(ev, "event_set_raw");
    if (!e) {
        return PX_ESTATE;
    }
    if (json) {
        json_t *parsed = json_loadb(json, len, JSON_DECODE_ANY, NULL);
        if (!parsed || !json_equal(parsed, px_event_payload(ev))) {
            violation(the_kit, "host->event_set_raw on event %s: the text does not parse to the "
                      "event's payload", ev->id);
        }
        json_decref(parsed);
        e->raw = 1;
    }
    return the_kit->real.event_set_raw(ev, json, len);
}

static void on_persisted(int status, void *arg)
{
    kpers *p = arg;
    json_object_set_new(p->record, "persisted", json_string(status == PX_OK ? "ok" : "busy"));
    progress(p->k);
    p->cb(status, p->arg);
}

/* A persisted callback through the kit, so that the report says what it was told. */
static kpers *persisted_via_kit(kit *k, kgen *g, px_persisted_cb cb, void *arg, json_t *rec)
{
    kpers *p = px_xcalloc(1, sizeof(*p));
    *p = (kpers){.k = k, .g = g, .cb = cb, .arg = arg, .record = rec, .next = k->pers};
    k->pers = p;
    return p;
}

/* What the report shows of an emitted event, read before emit takes it. */
static json_t *emit_record(kit *k, kgen *g, kevent *e)
{
    px_event *ev = e->ev;
    json_t *rec = json_pack("{s:s,s:s,s:O,s:o}", "type", ev->type, "id", ev->id, "payload",
                            px_event_payload(ev), "meta",
                            ev->meta ? json_deep_copy(ev->meta) : json_object());
    if (ev->dedupe_key) {
        json_object_set_new(rec, "dedupe_key", json_string(ev->dedupe_key));
    }
    if (ev->subject) {
        json_object_set_new(rec, "subject", json_string(ev->subject));
    }
    char *hints = px_event_hints_json(ev);
    if (hints) {
        json_object_set_new(rec, "hints", json_loads(hints, 0, NULL));
        free(hints);
    }
    if (e->raw) {
        json_object_set_new(rec, "raw_text", json_true());
    }
    tag(k, g, rec);
    return rec;
}

static int kit_emit(px_plugin_ctx *ctx, px_event *ev, px_persisted_cb cb, void *arg)
{
    kgen *g = usable(ctx, "emit");
    if (!g) {
        return PX_ESTATE;
    }
    kit *k = the_kit;
    kevent *e = ev ? readable(ev, "emit") : NULL;
    if (!e) {
        return PX_EINVAL;
    }
    if (e->emitted || e->discarded || e->delivered) {
        violation(k, "host->emit of event %s that was %s (emit steals the event)", ev->id,
                  e->emitted ? "already emitted" : e->discarded ? "discarded" : "delivered");
        return PX_EINVAL;
    }
    if (!(k->desc->kind & PX_KIND_SOURCE)) {
        warning(k, "a plugin that does not declare PX_KIND_SOURCE emits events");
    }
    if (phase_of(g) >= PH_STOPPING) {
        warning(k, "emit after stop (generation %d): stop() means no new work", g->no);
    }
    e->emitted = 1;
    json_t *rec = emit_record(k, g, e);
    json_object_set_new(rec, "persisted", json_string(cb ? "pending" : "no callback"));
    json_array_append_new(k->emits, rec);
    kpers *p = cb ? persisted_via_kit(k, g, cb, arg, rec) : NULL;
    int rc = k->real.emit(ctx, ev, p ? on_persisted : NULL, p);
    if (rc < 0) {
        json_object_set_new(rec, "persisted", json_sprintf("refused: %s", px_strerror(rc)));
    }
    return rc;
}

static void kit_event_discard(px_event *ev)
{
    kevent *e = readable(ev, "event_discard");
    if (!e || !usable(e->g->ctx, "event_discard")) {
        return;
    }
    if (e->emitted || e->delivered || e->discarded) {
        violation(the_kit, "host->event_discard of event %s that was %s", ev->id,
                  e->emitted ? "emitted (emit stole it)"
                  : e->discarded ? "already discarded" : "delivered, not created");
        return;
    }
    e->discarded = 1;
    the_kit->real.event_discard(ev);
}

/* --- Deliveries ------------------------------------------------------------------------------ */

/* The record of delivery handle d when the plugin may still use it, else NULL. */
static kdel *open_delivery(px_delivery *d, const char *fn)
{
    kdel *kd = d ? del_of(the_kit, d) : NULL;
    if (!kd) {
        if (d) {
            violation(the_kit, "host->%s on a delivery the host never handed over", fn);
        }
        return NULL;
    }
    if (!usable(kd->g->ctx, fn)) {
        return NULL;
    }
    if (kd->completed) {
        violation(the_kit, "host->%s on delivery %d after complete() (it is invalid then)", fn,
                  kd->index);
        return NULL;
    }
    return kd;
}

static const px_event *kit_delivery_event(px_delivery *d)
{
    kdel *kd = open_delivery(d, "delivery_event");
    const px_event *ev = kd ? the_kit->real.delivery_event(d) : NULL;
    if (ev) {
        event_keep(the_kit, kd->g, (px_event *)ev, 1);
    }
    return ev;
}
static const char *kit_delivery_action(px_delivery *d)
{
    return open_delivery(d, "delivery_action") ? the_kit->real.delivery_action(d) : NULL;
}
static json_t *kit_delivery_params(px_delivery *d)
{
    return open_delivery(d, "delivery_params") ? the_kit->real.delivery_params(d) : NULL;
}
static const char *kit_delivery_pipeline(px_delivery *d)
{
    return open_delivery(d, "delivery_pipeline") ? the_kit->real.delivery_pipeline(d) : NULL;
}
/* The scenario may say which attempt the plugin is told this is (the dispatcher counts from 1). */
static uint32_t kit_delivery_attempt(px_delivery *d)
{
    kdel *kd = open_delivery(d, "delivery_attempt");
    if (!kd) {
        return 0;
    }
    json_t *attempt = json_object_get(kd->spec, "attempt");
    return attempt ? (uint32_t)json_integer_value(attempt) : the_kit->real.delivery_attempt(d);
}

static void kit_complete(px_delivery *d, int status, const char *reason, uint64_t retry_after_ms)
{
    kit *k = the_kit;
    kdel *kd = d ? del_of(k, d) : NULL;
    if (!kd) {
        if (d) {
            violation(k, "host->complete of a delivery the host never handed over");
        }
        return;
    }
    if (phase_of(kd->g) == PH_DESTROYED) {
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
    k->real.complete(d, status, reason, retry_after_ms);
}

/* --- Loop services ---------------------------------------------------------------------------- */

static int kit_post(px_plugin_ctx *ctx, void (*cb)(void *arg), void *arg)
{
    kit *k = the_kit;
    kgen *g = ctx ? gen_of(k, ctx) : NULL;
    if (!g || !cb) {
        return PX_EINVAL;
    }
    if (phase_of(g) == PH_DESTROYED) {
        violation(k, "host->post called after destroy returned (join worker threads in "
                  "stop, drain or destroy)");
        return PX_ESTATE;
    }
    return k->real.post(ctx, cb, arg);
}

static void on_ktimer(void *arg)
{
    ktimer *t = arg;
    if (t->stopped || phase_of(t->g) == PH_DESTROYED) {
        return;
    }
    t->fired = 1;
    progress(t->g->k);
    t->cb(t->arg);
}

static int kit_timer_start(px_plugin_ctx *ctx, uint64_t ms, uint64_t repeat_ms,
                           void (*cb)(void *arg), void *arg, px_timer **out)
{
    kgen *g = usable(ctx, "timer_start");
    if (!g) {
        return PX_ESTATE;
    }
    if (!cb || !out) {
        return PX_EINVAL;
    }
    if (phase_of(g) == PH_DESTROYING) {
        violation(g->k, "host->timer_start inside destroy");
    }
    ktimer *t = px_xcalloc(1, sizeof(*t));
    *t = (ktimer){.g = g, .cb = cb, .arg = arg, .repeat = repeat_ms};
    int rc = the_kit->real.timer_start(ctx, ms, repeat_ms, on_ktimer, t, &t->real);
    if (rc < 0) {
        free(t);
        return rc;
    }
    t->next = g->k->timers;
    g->k->timers = t;
    *out = (px_timer *)t;
    return 0;
}

static void kit_timer_stop(px_timer *pt)
{
    ktimer *t = (ktimer *)pt;
    if (!t || !on_loop(the_kit, "timer_stop")) {
        return;
    }
    if (phase_of(t->g) == PH_DESTROYED) {
        violation(t->g->k, "host->timer_stop called after destroy returned");
        return;
    }
    if (t->stopped) {
        violation(t->g->k, "host->timer_stop called twice for one timer (the host frees the "
                  "timer on the first call)");
        return;
    }
    t->stopped = 1;
    the_kit->real.timer_stop(t->real);
}

/* --- HTTP routes ------------------------------------------------------------------------------ */

/* What the real server calls for a request on one of the plugin's routes. */
static void on_route(px_http_request *req, void *arg)
{
    kroute *r = arg;
    kit *k = r->g->k;
    kreq *q = px_xcalloc(1, sizeof(*q));
    *q = (kreq){.g = r->g, .index = k->req_index, .real = req, .resp_headers = json_object(),
                .next = k->reqs};
    k->reqs = q;
    r->cb((px_http_request *)q, r->arg);
}

static int kit_http_route(px_plugin_ctx *ctx, const char *method, const char *path,
                          uint32_t flags, px_http_handler cb, void *arg)
{
    kgen *g = usable(ctx, "http_route");
    if (!g) {
        return PX_ESTATE;
    }
    if (!cb) {
        return PX_EINVAL;
    }
    kroute *r = px_xcalloc(1, sizeof(*r));
    *r = (kroute){.g = g, .cb = cb, .arg = arg, .next = g->k->routes};
    g->k->routes = r;
    return the_kit->real.http_route(ctx, method, path, flags, on_route, r);
}

static kreq *open_req(px_http_request *req, const char *fn)
{
    kreq *r = (kreq *)req;
    if (!r || !usable(r->g->ctx, fn)) {
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
    return r ? the_kit->real.http_req_method(r->real) : "";
}
static const char *kit_req_path(px_http_request *req)
{
    kreq *r = open_req(req, "http_req_path");
    return r ? the_kit->real.http_req_path(r->real) : "";
}
static const char *kit_req_query(px_http_request *req)
{
    kreq *r = open_req(req, "http_req_query");
    return r ? the_kit->real.http_req_query(r->real) : "";
}
static const char *kit_req_header(px_http_request *req, const char *name)
{
    kreq *r = open_req(req, "http_req_header");
    return r ? the_kit->real.http_req_header(r->real, name) : NULL;
}
static const char *kit_req_body(px_http_request *req, size_t *len)
{
    kreq *r = open_req(req, "http_req_body");
    if (!r) {
        if (len) {
            *len = 0;
        }
        return "";
    }
    return the_kit->real.http_req_body(r->real, len);
}

static int kit_set_header(px_http_request *req, const char *name, const char *value)
{
    kreq *r = open_req(req, "http_set_header");
    if (!r) {
        return PX_ESTATE;
    }
    int rc = the_kit->real.http_set_header(r->real, name, value);
    if (rc == 0) {
        json_object_set_new(r->resp_headers, name, json_string(value));
    }
    return rc;
}

static void kit_respond(px_http_request *req, int status, const char *content_type,
                        const char *body, size_t len)
{
    kreq *r = (kreq *)req;
    if (!r || !usable(r->g->ctx, "http_respond")) {
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
    r->status = status;
    progress(r->g->k);
    the_kit->real.http_respond(r->real, status, content_type, body, len);
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
    if (phase_of(c->g) == PH_DESTROYED) {
        /* Calls left at unload are cancelled; one started inside destroy ends after it, when
         * its callback would run into freed plugin state: the kit does not run it. */
        json_object_set_new(c->record, "after_destroy", json_true());
        c->orphan = 1;
    }
    if (c->cb && !c->orphan) {
        c->cb(status, resp ? (const px_http_response *)(const void *)resp : NULL, error, c->arg);
    }
}

static void on_real_response(int status, const px_http_response *resp, const char *error,
                             void *arg)
{
    kcall *c = arg;
    kresp r = {.real = resp};
    finish_call(c, status, resp ? &r : NULL, error);
}

/* A scripted answer: run inside a crash frame, as the host runs every response callback. */
static void on_scripted(uv_timer_t *t)
{
    kcall *c = t->data;
    if (c->done) {
        return;
    }
    px_crash_frame cf;
    plugin_call(&cf, c->k, "http_response");
    if (c->cancelled) {
        finish_call(c, UV_ECANCELED, NULL, "cancelled");
    } else if (!c->script) {
        finish_call(c, UV_ECONNREFUSED, NULL, "no scripted answer left in the scenario");
    } else {
        const json_t *s = c->script;
        const char *error = json_string_value(json_object_get(s, "error"));
        json_t *st = json_object_get(s, "status");
        int status = st ? (int)json_integer_value(st) : error ? UV_ECONNREFUSED : 200;
        if (error || status < 0) {
            finish_call(c, status < 0 ? status : UV_ECONNREFUSED, NULL, error ? error : "error");
        } else {
            size_t len = 0;
            char *body = body_text(json_object_get(s, "body"), &len);
            json_t *headers = json_object_get(s, "headers");
            kresp r = {.headers = json_is_object(headers) ? headers : c->k->empty, .body = body,
                       .len = len};
            finish_call(c, status, &r, NULL);
            free(body);
        }
    }
    px_crash_leave(&cf);
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
    tag(g->k, g, rec);
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

/* 1 when scripted answer s may answer a request of `method` to `url`: its "method" (any case)
 * and "url" (exact, or a prefix when it ends with "*") match, those it has. */
static int answer_fits(const json_t *s, const char *method, const char *url)
{
    const char *m = json_string_value(json_object_get(s, "method"));
    const char *u = json_string_value(json_object_get(s, "url"));
    if (m && strcasecmp(m, method) != 0) {
        return 0;
    }
    if (!u) {
        return 1;
    }
    size_t len = strlen(u);
    return len && u[len - 1] == '*' ? strncmp(u, url, len - 1) == 0 : strcmp(u, url) == 0;
}

/* The index of the scripted answer for a request (the first one not used yet that fits it), or
 * the size of the list when none is left. */
static size_t scripted_answer(kit *k, const json_t *script, const char *method, const char *url)
{
    size_t n = json_array_size(script);
    if (!k->http_used) {
        k->http_used = px_xcalloc(n ? n : 1, 1);
    }
    for (size_t i = 0; i < n; i++) {
        if (!k->http_used[i] && answer_fits(json_array_get(script, i), method, url)) {
            return i;
        }
    }
    return n;
}

static int kit_http_request(px_plugin_ctx *ctx, const px_http_options *opt,
                            px_http_response_cb cb, void *arg, px_http_call **out)
{
    kgen *g = usable(ctx, "http_request");
    if (!g) {
        return PX_ESTATE;
    }
    kit *k = g->k;
    size_t need = offsetof(px_http_options, url) + sizeof(opt->url);
    if (!opt || opt->size < need || !opt->url) {
        return PX_EINVAL;
    }
    if (phase_of(g) == PH_DESTROYING) {
        violation(k, "host->http_request inside destroy");
    }
    size_t fits = opt->size < sizeof(*opt) ? opt->size : sizeof(*opt);
    kcall *c = px_xcalloc(1, sizeof(*c));
    *c = (kcall){.k = k, .g = g, .cb = cb, .arg = arg};
    c->record = call_record(g, opt, fits);
    json_t *script = json_object_get(k->scn, "http");
    if (json_is_array(script)) {
        const char *method = json_string_value(json_object_get(c->record, "method"));
        size_t n = json_array_size(script);
        size_t pick = scripted_answer(k, script, method, opt->url);
        if (pick < n) {
            c->script = json_array_get(script, pick);
            json_object_set_new(c->record, "answer", json_integer((json_int_t)pick));
            check_request(k, pick, c->script, opt, fits);
            if (!json_is_true(json_object_get(c->script, "repeat"))) {
                k->http_used[pick] = 1;
            }
        } else {
            failure(k, "the plugin's request %s %s: no answer left for it in the scenario's "
                    "http list", method, opt->url);
        }
        uv_timer_init(&k->loop, &c->timer);
        c->timer.data = c;
        c->timer_open = 1;
        uint64_t delay = (uint64_t)json_integer_value(json_object_get(c->script, "delay_ms"));
        uv_timer_start(&c->timer, on_scripted, delay, 0);
    } else {
        int rc = k->real.http_request(ctx, opt, on_real_response, c, &c->real);
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
    if (!c || !usable(c->g->ctx, "http_cancel")) {
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
        c->k->real.http_cancel(c->real);
    } else {
        uv_timer_start(&c->timer, on_scripted, 0, 0);
    }
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

static const char *kit_resp_header(const px_http_response *resp, const char *name)
{
    const kresp *r = (const kresp *)(const void *)resp;
    if (!r) {
        return NULL;
    }
    return r->real ? the_kit->real.http_resp_header(r->real, name) : header_in(r->headers, name);
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
        return the_kit->real.http_resp_body(r->real, len);
    }
    if (len) {
        *len = r->len;
    }
    return r->body;
}

/* --- State, metrics, drain, dead letters ---------------------------------------------------- */

static json_t *kit_kv_get(px_plugin_ctx *ctx, const char *key)
{
    return usable(ctx, "kv_get") ? the_kit->real.kv_get(ctx, key) : NULL;
}

static int kit_kv_set(px_plugin_ctx *ctx, const char *key, const json_t *value)
{
    if (!usable(ctx, "kv_set")) {
        return PX_ESTATE;
    }
    if (!key || !key[0]) {
        return PX_EINVAL;
    }
    int rc = the_kit->real.kv_set(ctx, key, value);
    if (rc == 0) {
        json_object_set_new(the_kit->kv_keys, key, json_true());
    }
    return rc;
}

/* --- Cluster primitives: recorded in the report's "cluster" list ---------------------------- */

static const char *result_name(int rc)
{
    return rc == PX_OK ? "ok" : rc == PX_ECONFLICT ? "conflict" : px_strerror(rc);
}

static json_t *cluster_record(kgen *g, const char *call)
{
    json_t *rec = json_pack("{s:s,s:i}", "call", call, "host", g->host);
    json_array_append_new(g->k->cluster, rec);
    return rec;
}

static void set_held(kit *k, const char *name, int host, int held)
{
    json_t *hosts = json_object_get(k->lock_held, name);
    if (!hosts) {
        hosts = json_object();
        json_object_set_new(k->lock_held, name, hosts);
    }
    char key[16];
    snprintf(key, sizeof(key), "%d", host);
    if (held) {
        json_object_set_new(hosts, key, json_true());
    } else {
        json_object_del(hosts, key);
    }
}

static void on_klock(void *arg, int status)
{
    klock *l = arg;
    kit *k = l->g->k;
    if (l->released || phase_of(l->g) == PH_DESTROYED) {
        violation(k, "a lease callback of \"%s\" ran after lock_release or destroy", l->name);
        return;
    }
    json_t *rec = cluster_record(l->g, "lock");
    json_object_set_new(rec, "name", json_string(l->name));
    json_object_set_new(rec, "status", json_string(status == PX_OK          ? "held"
                                                   : status == PX_ECONFLICT ? "lost"
                                                                            : "error"));
    set_held(k, l->name, l->g->host, status == PX_OK);
    progress(k);
    l->cb(l->arg, status);
}

static int kit_lock_acquire(px_plugin_ctx *ctx, const char *name, uint32_t ttl_ms,
                            void (*cb)(void *arg, int status), void *arg)
{
    kgen *g = usable(ctx, "lock_acquire");
    if (!g) {
        return PX_ESTATE;
    }
    kit *k = g->k;
    klock *l = px_xcalloc(1, sizeof(*l));
    *l = (klock){.g = g, .name = px_xstrdup(name ? name : ""), .cb = cb, .arg = arg,
                 .next = k->locks};
    k->locks = l;
    int rc = k->real.lock_acquire(ctx, name, ttl_ms, cb ? on_klock : NULL, l);
    if (rc < 0) {
        l->released = 1;
    }
    return rc;
}

static int kit_lock_release(px_plugin_ctx *ctx, const char *name)
{
    kgen *g = usable(ctx, "lock_release");
    if (!g) {
        return PX_ESTATE;
    }
    int rc = g->k->real.lock_release(ctx, name);
    for (klock *l = g->k->locks; l && rc == PX_OK; l = l->next) {
        if (l->g == g && !l->released && strcmp(l->name, name) == 0) {
            l->released = 1;
            set_held(g->k, name, g->host, 0);
            json_t *rec = cluster_record(g, "lock");
            json_object_set_new(rec, "name", json_string(name));
            json_object_set_new(rec, "status", json_string("released"));
        }
    }
    return rc;
}

static int kit_kv_cas(px_plugin_ctx *ctx, const char *key, int64_t expected,
                      const json_t *value, int64_t *version)
{
    kgen *g = usable(ctx, "kv_cas");
    if (!g) {
        return PX_ESTATE;
    }
    int64_t got = 0;
    int rc = g->k->real.kv_cas(ctx, key, expected, value, &got);
    if (version) {
        *version = got;
    }
    if (rc == 0 && key) {
        json_object_set_new(g->k->kv_keys, key, json_true());
    }
    json_t *rec = cluster_record(g, "kv_cas");
    json_object_set_new(rec, "key", json_string(key ? key : ""));
    json_object_set_new(rec, "expected", json_integer(expected));
    json_object_set_new(rec, "result", json_string(result_name(rc)));
    if (rc == 0) {
        json_object_set_new(rec, "version", json_integer(got));
        json_object_set_new(rec, "value", value ? json_deep_copy(value) : json_null());
    }
    return rc;
}

static int kit_cluster(px_plugin_ctx *ctx, px_cluster_info *info)
{
    kgen *g = usable(ctx, "cluster");
    if (!g) {
        return PX_ESTATE;
    }
    int rc = g->k->real.cluster(ctx, info);
    json_t *rec = cluster_record(g, "cluster");
    json_object_set_new(rec, "result", json_string(result_name(rc)));
    if (rc == 0) {
        json_object_set_new(rec, "live_hosts", json_integer(info->live_hosts));
        json_object_set_new(rec, "host_index", json_integer(info->host_index));
    }
    return rc;
}

/* The host holding each lease as the callbacks last told (0: none; -1: several), an object. */
static json_t *lock_holders(kit *k)
{
    json_t *out = json_object();
    const char *name;
    json_t *hosts;
    json_object_foreach(k->lock_held, name, hosts) {
        const char *first = NULL;
        const char *h;
        json_t *unused;
        json_object_foreach(hosts, h, unused) {
            first = first ? "-1" : h;
        }
        json_object_set_new(out, name, json_integer(first ? atoi(first) : 0));
    }
    return out;
}

static void metric(px_plugin_ctx *ctx, const char *fn, const char *name, const char *labels,
                   double v, int add)
{
    kit *k = the_kit;
    if (!usable(ctx, fn) || !name) {
        return;
    }
    char *key = px_xasprintf("%s{%s}", name, labels ? labels : "");
    json_t *old = json_object_get(k->metrics, key);
    json_object_set_new(k->metrics, key,
                        json_real(add ? (old ? json_number_value(old) : 0) + v : v));
    free(key);
    if (add) {
        k->real.counter_add(ctx, name, labels, v);
    } else {
        k->real.gauge_set(ctx, name, labels, v);
    }
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
    kgen *g = usable(ctx, "drained");
    if (!g) {
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
    if (g->drain_asked) {
        push_lifecycle(k, g, "drained");
    }
    size_t nd = open_deliveries(k, g), nc = open_calls(k, g, 0);
    if (nd) {
        violation(k, "drained() called with %zu deliveries not completed", nd);
    }
    if (nc) {
        violation(k, "drained() called with %zu HTTP calls in flight", nc);
    }
    k->real.drained(ctx);
}

static int kit_dead_letter(px_plugin_ctx *ctx, const char *raw, size_t len, const json_t *meta,
                           const char *reason, px_persisted_cb cb, void *arg)
{
    kgen *g = usable(ctx, "dead_letter");
    if (!g) {
        return PX_ESTATE;
    }
    if ((!raw && len) || (meta && !json_is_object(meta))) {
        return PX_EINVAL;
    }
    kit *k = g->k;
    json_t *rec = json_pack("{s:o,s:s}", "raw", body_value(raw ? raw : "", len), "reason",
                            reason ? reason : "");
    json_object_set_new(rec, "meta", meta ? json_deep_copy(meta) : json_object());
    json_array_append_new(k->dead_letters, rec);
    kpers *p = cb ? persisted_via_kit(k, g, cb, arg, rec) : NULL;
    return k->real.dead_letter(ctx, raw, len, meta, reason, p ? on_persisted : NULL, p);
}

static void fill_api(px_host_api *a)
{
    /* The real table; the functions that take a handle the plugin may hold too long, or that the
     * contract restricts, are replaced by shims. Event getters stay real: the kit holds a
     * reference on every event the plugin was given, so none dies under it. */
    px_api_init(a);
    a->log = kit_log;
    a->event_create = kit_event_create;
    a->event_set = kit_event_set;
    a->event_set_hint = kit_event_set_hint;
    a->event_set_meta = kit_event_set_meta;
    a->emit = kit_emit;
    a->event_discard = kit_event_discard;
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
    a->lock_acquire = kit_lock_acquire;
    a->lock_release = kit_lock_release;
    a->kv_cas = kit_kv_cas;
    a->cluster = kit_cluster;
}

/* --- The kit's own plugins at the edges ----------------------------------------------------- */

/* The source of the scenario's events: its generation is what the kit emits them from. */
/* The host (from 1) of runtime rt: one of the kit's, else the one being created. */
static int host_of(kit *k, const px_runtime *rt)
{
    for (int h = 0; h < k->hosts; h++) {
        if (k->rts[h] == rt) {
            return h + 1;
        }
    }
    return k->creating;
}

static int src_init(px_plugin_ctx *ctx, const json_t *config, void **state)
{
    (void)config;
    int h = host_of(the_kit, px_runtime_of(ctx));
    the_kit->src_ctx[h - 1] = ctx;
    *state = &the_kit->src_ctx[h - 1];
    return 0;
}

static void src_destroy(void *state)
{
    *(px_plugin_ctx **)state = NULL;
}

static const px_plugin_desc src_desc = {
    PX_PLUGIN_DESC_INIT,
    .kind = PX_KIND_SOURCE,
    .name = KIT_SOURCE,
    .version = "1",
    .description = "the test kit's source of a scenario's events",
    .init = src_init,
    .destroy = src_destroy,
};

static const px_plugin_desc *src_entry(const px_host_api *api)
{
    (void)api;
    return &src_desc;
}

/* The sink the plugin's emits are routed to, so that they reach the store as in a host with a
 * pipeline (and a refusing store makes them "busy"): it takes every delivery at once. */
static int coll_init(px_plugin_ctx *ctx, const json_t *config, void **state)
{
    (void)config;
    *state = ctx;
    return 0;
}

static void coll_deliver(void *state, px_delivery *d)
{
    (void)state;
    the_kit->real.complete(d, PX_OK, "collected", 0);
}

static void coll_destroy(void *state)
{
    (void)state;
}

static const px_plugin_desc coll_desc = {
    PX_PLUGIN_DESC_INIT,
    .kind = PX_KIND_SINK,
    .name = KIT_COLLECTOR,
    .version = "1",
    .description = "the test kit's sink for the emits of the plugin under test",
    .init = coll_init,
    .deliver = coll_deliver,
    .destroy = coll_destroy,
};

static const px_plugin_desc *coll_entry(const px_host_api *api)
{
    (void)api;
    return &coll_desc;
}

/* --- The store at the edge -------------------------------------------------------------------- */

static void on_busy_put(int status, void *arg)
{
    kbusy *b = arg;
    (void)status;
    b->cb(PX_EBUSY, b->arg);
    free(b);
}

static const px_store_ops *memory_ops; /* the in-memory backend's table, under the busy one */

/* Every put fails at its commit, as on a full disk: its callback says so (later, on the loop). */
static int busy_put(void *impl, const px_store_event *ev, px_store_row *rows, size_t n,
                    px_store_put_cb cb, void *arg)
{
    kbusy *b = px_xmalloc(sizeof(*b));
    *b = (kbusy){cb, arg};
    int rc = memory_ops->put(impl, ev, rows, n, on_busy_put, b);
    if (rc < 0) {
        free(b);
    }
    return rc;
}

/* The store host h's runtime gets: in memory, refusing every put when the scenario says "busy";
 * with several hosts, each its own handle (host id "kit-H") on the cluster state of `first`
 * (host 1's; NULL for host 1). */
static px_store *edge_store(kit *k, int h, px_store *first)
{
    char id[16];
    snprintf(id, sizeof(id), "kit-%d", h);
    px_store_options opt = {.host_id = id};
    px_store *mem = NULL;
    px_store_open_memory_shared(&k->loop, first, k->hosts > 1 ? &opt : NULL, &mem);
    if (k->emit_status == PX_OK) {
        return mem;
    }
    memory_ops = mem->ops;
    k->busy_ops = *mem->ops;
    k->busy_ops.put = busy_put;
    k->busy_store[h - 1] = (px_store){.ops = &k->busy_ops, .impl = mem->impl};
    return &k->busy_store[h - 1];
}

/* --- What the runtime tells the kit: lifecycle calls and hand-overs ------------------------- */

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

/* The plugin's state as the store holds it now (the store is the runtime's until it closes). */
static void snapshot_kv(kit *k, px_store *store)
{
    json_t *state = json_object();
    const char *key;
    json_t *unused;
    json_object_foreach(k->kv_keys, key, unused) {
        json_t *v = px_store_kv_get(store, k->instance, key);
        if (v) {
            json_object_set_new(state, key, v);
        }
    }
    json_decref(k->kv);
    k->kv = state;
}

static kgen *gen_new(kit *k, px_plugin_ctx *ctx)
{
    kgen *g = px_xcalloc(1, sizeof(*g));
    g->k = k;
    g->ctx = ctx;
    g->no = k->ngens + 1;
    g->host = host_of(k, px_runtime_of(ctx));
    g->phase = PH_LOADED;
    g->pin = dlopen(ctx->lib->path, RTLD_NOW | RTLD_NOLOAD);
    k->gens[k->ngens++] = g;
    return g;
}

/* init failed: destroy is not called, and nothing may be left behind. */
static void init_failed(kit *k, kgen *g)
{
    set_phase(g, PH_DESTROYED);
    size_t nt = live_timers(k, g, 0);
    if (nt) {
        violation(k, "init failed but left %zu timers running", nt);
    }
    if (open_calls(k, g, 1)) {
        violation(k, "init failed but left HTTP calls in flight");
    }
}

/* The drain is over (done, or timed out): what must hold before destroy, and what the host does
 * then: requests still unanswered are answered 503, outgoing calls are cancelled (their
 * callbacks run now, with status < 0). */
static void before_destroy(kit *k, kgen *g)
{
    const px_plugin_desc *d = k->desc;
    size_t nd = open_deliveries(k, g);
    if (d->drain && !g->drained_calls) {
        violation(k, "drain(): host->drained() was not called within %llu ms",
                  (unsigned long long)k->timeout_ms);
    } else if (d->drain) {
        size_t nt = live_timers(k, g, 1), nc = open_calls(k, g, 1);
        if (nt) {
            violation(k, "%zu timers still pending after drain (stop them in stop or drain)",
                      nt);
        }
        if (nc) {
            violation(k, "%zu HTTP calls still in flight after drain", nc);
        }
        if (nd) {
            violation(k, "%zu deliveries still not completed after drain", nd);
        }
    } else if (nd) {
        violation(k, "%zu deliveries still not completed %llu ms after stop", nd,
                  (unsigned long long)k->timeout_ms);
    }
    for (kreq *r = k->reqs; r; r = r->next) {
        if (r->g == g && !r->responded) {
            violation(k, "request %d was never answered (http_respond is owed exactly once; "
                      "the host answers 503 at unload)", r->index);
            r->responded = 1;
            r->status = 503;
        }
    }
    size_t nc = open_calls(k, g, 1);
    if (nc && !d->drain) {
        warning(k, "%zu HTTP calls still in flight at unload: cancelled before destroy", nc);
    }
    for (kcall *c = k->calls; c; c = c->next) {
        if (c->g == g && !c->done && !c->real) {
            px_crash_frame cf;
            plugin_call(&cf, k, "http_response");
            finish_call(c, UV_ECANCELED, NULL, "cancelled");
            px_crash_leave(&cf);
        }
    }
    set_phase(g, PH_DESTROYING);
    push_lifecycle(k, g, "destroy");
}

static void after_destroy(kit *k, kgen *g, px_store *store)
{
    set_phase(g, PH_DESTROYED);
    for (kcall *c = k->calls; c; c = c->next) {
        if (c->g == g && !c->done) {
            violation(k, "an HTTP call started inside destroy");
            c->orphan = 1;
            if (!c->real) {
                finish_call(c, UV_ECANCELED, NULL, "cancelled");
            }
        }
    }
    size_t nt = live_timers(k, g, 0);
    if (nt) {
        violation(k, "%zu timers never stopped: timer_stop is owed once for every timer, even a "
                  "fired one-shot", nt);
    }
    for (kevent *e = k->events; e; e = e->next) {
        if (e->g == g && !e->emitted && !e->discarded && !e->delivered) {
            violation(k, "event %s (type %s) was created but neither emitted nor discarded",
                      e->ev->id, e->ev->type);
        }
    }
    snapshot_kv(k, store);
}

/* The dispatcher hands delivery `handle` to g: it is the scenario's event it carries. */
static void handed_over(kit *k, kgen *g, px_delivery *handle)
{
    px_delivery *dl = px_dispatch_resolve(handle);
    kdel *found = NULL, *same = NULL;
    pthread_mutex_lock(&k->lock);
    /* The event the kit emitted, or (read back from the store after an older delivery of the
     * sink was retried) a copy with its id: the oldest of the scenario's not yet handed over. */
    for (kdel *d = k->dels; d && dl; d = d->next) {
        if (d->ev == dl->event || strcmp(d->ev->id, dl->event->id) == 0) {
            same = d;
            if (!d->handle) {
                found = d;
            }
        }
    }
    if (found) {
        found->handle = handle;
        found->g = g;
    } else {
        /* the same event again: taken back from an old generation and retried here */
        kdel *d = px_xcalloc(1, sizeof(*d));
        *d = (kdel){.g = g, .index = same ? same->index : -1, .handle = handle, .judged = 1,
                    .ev = dl ? px_event_ref(dl->event) : NULL, .next = k->dels};
        k->dels = d;
    }
    pthread_mutex_unlock(&k->lock);
}

static void on_watch(void *arg, px_plugin_ctx *gen, const char *call, const void *what,
                     int after, int rc)
{
    kit *k = arg;
    if (strcmp(gen->inst->name, k->instance) != 0) {
        return; /* the kit's own source and collector */
    }
    kgen *g = gen_of(k, gen);
    if (!g) {
        if (strcmp(call, "init") != 0 || after || k->ngens == MAX_GENS) {
            return;
        }
        g = gen_new(k, gen);
    }
    px_store *store = px_runtime_of(gen)->store;
    if (strcmp(call, "init") == 0) {
        if (!after) {
            push_lifecycle(k, g, "init");
            return;
        }
        snapshot_kv(k, store);
        if (rc < 0) {
            k->init_rc = rc;
            init_failed(k, g);
        }
    } else if (strcmp(call, "start") == 0) {
        if (!after && k->desc->start) {
            push_lifecycle(k, g, "start");
        } else if (after && rc >= 0) {
            set_phase(g, PH_RUNNING);
        }
    } else if (strcmp(call, "stop") == 0 && !after) {
        set_phase(g, PH_STOPPING);
        if (k->desc->stop) {
            push_lifecycle(k, g, "stop");
        }
    } else if (strcmp(call, "drain") == 0 && !after) {
        g->drain_asked = 1;
        push_lifecycle(k, g, "drain");
    } else if (strcmp(call, "destroy") == 0) {
        if (after) {
            after_destroy(k, g, store);
        } else {
            before_destroy(k, g);
        }
    } else if (strcmp(call, "deliver") == 0 && !after) {
        handed_over(k, g, (px_delivery *)what);
    }
}

/* --- Driving the plugin ---------------------------------------------------------------------- */

static int del_done(void *arg)
{
    return ((kdel *)arg)->completed;
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
    const px_event *e = d->ev;
    d->judged = 1;
    json_t *rec = json_pack("{s:i,s:s,s:s}", "index", idx, "type", e->type, "id", e->id);
    if (d->g) {
        tag(k, d->g, rec);
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

/* The id of the scenario's event `index` (counted over both generations' rounds). */
static char *event_id(const json_t *spec, size_t index)
{
    const char *id = json_string_value(json_object_get(spec, "id"));
    return id ? px_xstrdup(id) : px_xasprintf("kit-%zu", index + 1);
}

/* The host (from 1) a scenario event or request runs on: its "host", default 1. */
static int spec_host(const json_t *spec)
{
    json_int_t h = json_integer_value(json_object_get(spec, "host"));
    return h >= 1 && h <= MAX_HOSTS ? (int)h : 1;
}

/* The generation serving host h: g when it runs there, else that host's (one each with several
 * hosts). */
static kgen *gen_on(kit *k, kgen *g, int h)
{
    if (g->host == h) {
        return g;
    }
    for (int i = 0; i < k->ngens; i++) {
        if (k->gens[i]->host == h) {
            return k->gens[i];
        }
    }
    return g;
}

/* Round `round` (0, or 1 on the second generation) of the scenario's events: each is emitted by
 * the kit's source and reaches g through its pipeline, the router and the dispatcher. */
static void run_events(kit *k, kgen *g, size_t round)
{
    const json_t *events = json_object_get(k->scn, "events");
    size_t i;
    json_t *spec;
    if (json_array_size(events) && !(k->desc->kind & PX_KIND_SINK)) {
        failure(k, "the scenario has events but the plugin is not a sink");
        return;
    }
    kgen *first = g;
    json_array_foreach(events, i, spec) {
        int h = spec_host(spec);
        g = gen_on(k, first, h);
        px_plugin_ctx *src = k->src_ctx[h - 1];
        if (phase_of(g) != PH_RUNNING || !src) {
            return;
        }
        int idx = (int)(round * json_array_size(events) + i);
        const char *type = json_string_value(json_object_get(spec, "type"));
        json_t *payload = json_object_get(spec, "payload");
        px_event *ev = k->real.event_create(src, type ? type : "test.event",
                                            payload ? json_deep_copy(payload) : json_object());
        char *id = event_id(spec, (size_t)idx);
        k->real.event_set(ev, PX_EVENT_ID, id);
        free(id);
        const char *key;
        json_t *v;
        json_object_foreach(json_object_get(spec, "meta"), key, v) {
            if (json_is_string(v)) {
                k->real.event_set_meta(ev, key, json_string_value(v));
            }
        }
        kdel *d = px_xcalloc(1, sizeof(*d));
        *d = (kdel){.index = idx, .ev = px_event_ref(ev), .spec = spec};
        pthread_mutex_lock(&k->lock);
        d->next = k->dels;
        k->dels = d;
        pthread_mutex_unlock(&k->lock);
        int rc = k->real.emit(src, ev, NULL, NULL);
        if (rc < 0) {
            failure(k, "delivery %d: the kit's source could not emit it: %s", idx,
                    px_strerror(rc));
            d->judged = 1;
            continue;
        }
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
    /* in the order they were made (the list is newest first) */
    size_t n = 0;
    for (kdel *d = k->dels; d; d = d->next) {
        n++;
    }
    kdel **all = px_xcalloc(n ? n : 1, sizeof(*all));
    size_t i = n;
    for (kdel *d = k->dels; d; d = d->next) {
        all[--i] = d;
    }
    for (i = 0; i < n; i++) {
        kdel *d = all[i];
        if (!d->judged) {
            if (!d->completed) {
                failure(k, "delivery %d was never completed", d->index);
            }
            judge_delivery(k, d);
        }
    }
    free(all);
}

/* --- The scenario's requests, over HTTP to the runtime's server ------------------------------- */

static void on_answer(int status, const px_http_response *resp, const char *error, void *arg)
{
    kout *o = arg;
    o->done = 1;
    o->status = status;
    size_t len = 0;
    const char *body = resp ? px_http_resp_body(resp, &len) : "";
    o->body = px_xstrndup(body, len);
    o->len = len;
    o->headers = json_object();
    const char *name;
    json_t *unused;
    json_object_foreach((json_t *)o->want_headers, name, unused) {
        const char *v = resp ? px_http_resp_header(resp, name) : NULL;
        json_object_set_new(o->headers, name, v ? json_string(v) : json_null());
    }
    o->error = error ? px_xstrdup(error) : NULL;
    progress(o->k);
}

static int out_done(void *arg)
{
    return ((kout *)arg)->done;
}

/* Sends request spec to the plugin's routes; returns its record of the call. */
static kout *send_request(kit *k, px_runtime *rt, const json_t *spec, const char *method,
                          const char *path, const char *query)
{
    kout *o = px_xcalloc(1, sizeof(*o));
    o->k = k;
    o->want_headers = json_object_get(spec, "expect_headers");
    o->next = k->outs;
    k->outs = o;
    if (!k->client && px_http_client_create(&k->loop, &k->client) < 0) {
        o->done = 1;
        o->status = PX_ESTATE;
        o->error = px_xstrdup("cannot create an HTTP client");
        return o;
    }
    char *url = px_xasprintf("http://127.0.0.1:%d%s%s%s", px_http_server_port(rt->http), path,
                             query && query[0] ? "?" : "", query ? query : "");
    json_t *hs = json_object_get(spec, "headers");
    const char **headers = px_xcalloc(json_object_size(hs) + 1, sizeof(*headers));
    char **owned = px_xcalloc(json_object_size(hs) + 1, sizeof(*owned));
    size_t n = 0;
    const char *name;
    json_t *v;
    json_object_foreach(hs, name, v) {
        if (json_is_string(v)) {
            owned[n] = px_xasprintf("%s: %s", name, json_string_value(v));
            headers[n] = owned[n];
            n++;
        }
    }
    size_t len = 0;
    char *body = body_text(json_object_get(spec, "body"), &len);
    px_http_options opt = {.size = sizeof(opt), .method = method, .url = url,
                           .headers = headers, .body = body, .body_len = len,
                           .timeout_ms = (uint32_t)(k->timeout_ms * 2)};
    int rc = px_http_client_request(k->client, &opt, on_answer, o, NULL);
    if (rc < 0) {
        o->done = 1;
        o->status = rc;
        o->error = px_xstrdup(px_strerror(rc));
    }
    for (size_t i = 0; i < n; i++) {
        free(owned[i]);
    }
    free(owned);
    free(headers);
    free(body);
    free(url);
    return o;
}

static kreq *req_served(kit *k, kgen *g, int index)
{
    for (kreq *r = k->reqs; r; r = r->next) {
        if (r->g == g && r->index == index) {
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
    kgen *first = g;
    json_array_foreach(reqs, i, spec) {
        int h = spec_host(spec);
        g = gen_on(k, first, h);
        if (phase_of(g) != PH_RUNNING) {
            return;
        }
        const char *method = json_string_value(json_object_get(spec, "method"));
        const char *path = json_string_value(json_object_get(spec, "path"));
        const char *query = json_string_value(json_object_get(spec, "query"));
        method = method ? method : "POST";
        path = path && path[0] == '/' ? path : "/";
        json_t *rec = json_pack("{s:i,s:s,s:s}", "index", (int)i, "method", method, "path",
                                path);
        k->req_index = (int)i;
        kout *o = send_request(k, px_runtime_of(g->ctx), spec, method, path, query);
        if (!run_until(k, out_done, o, k->timeout_ms)) {
            failure(k, "request %zu (%s %s) was not answered within %llu ms", i, method, path,
                    (unsigned long long)k->timeout_ms);
            json_object_set_new(rec, "status", json_null());
            json_array_append_new(k->requests, rec);
            continue;
        }
        if (o->status < 0) {
            failure(k, "request %zu (%s %s): %s", i, method, path,
                    o->error ? o->error : px_strerror(o->status));
            json_object_set_new(rec, "status", json_null());
            json_array_append_new(k->requests, rec);
            continue;
        }
        kreq *served = req_served(k, g, (int)i);
        if (served) {
            json_object_set(rec, "headers", served->resp_headers);
        } else if (o->status == 404) {
            json_object_set_new(rec, "error", json_string("no route registered for it"));
        }
        int status = o->status;
        json_object_set_new(rec, "status", json_integer(status));
        json_object_set_new(rec, "body", body_value(o->body, o->len));
        int pass = 1;
        json_t *want = json_object_get(spec, "expect_status");
        if (want && json_integer_value(want) != status) {
            failure(k, "request %zu (%s %s): expected status %lld, got %d", i, method, path,
                    (long long)json_integer_value(want), status);
            pass = 0;
        }
        const char *has = json_string_value(json_object_get(spec, "expect_body"));
        if (has && !strstr(o->body, has)) {
            failure(k, "request %zu (%s %s): body does not contain \"%s\"", i, method, path,
                    has);
            pass = 0;
        }
        const char *name;
        json_t *v;
        json_object_foreach((json_t *)o->want_headers, name, v) {
            const char *got = json_string_value(json_object_get(o->headers, name));
            if (json_is_null(v) ? got != NULL
                                : !got || !json_is_string(v) ||
                                      strcmp(got, json_string_value(v)) != 0) {
                failure(k, "request %zu (%s %s): response header %s: expected %s, got %s", i,
                        method, path, name, json_is_string(v) ? json_string_value(v) : "none",
                        got ? got : "none");
                pass = 0;
            }
        }
        if (k->hosts > 1) {
            json_object_set_new(rec, "host", json_integer(h));
        }
        json_object_set_new(rec, "pass", json_boolean(pass));
        json_array_append_new(k->requests, rec);
    }
}

/* --- Generations ---------------------------------------------------------------------------- */

static int gen_destroyed(void *arg)
{
    return phase_of(arg) == PH_DESTROYED;
}

/* export_state of the old generation into import_state of the new one, as a reload does. */
static void hand_over_state(kit *k, kgen *g1, kgen *g2)
{
    const px_plugin_desc *d = k->desc;
    if (!d->export_state || !d->import_state) {
        return;
    }
    px_crash_frame cf;
    push_lifecycle(k, g1, "export_state");
    plugin_call(&cf, k, "export_state");
    json_t *st = d->export_state(g1->ctx->state);
    px_crash_leave(&cf);
    push_lifecycle(k, g2, "import_state");
    plugin_call(&cf, k, "import_state");
    int rc = d->import_state(g2->ctx->state, st);
    px_crash_leave(&cf);
    json_object_set_new(k->report, "handed_over", st ? st : json_null());
    if (rc < 0) {
        failure(k, "import_state failed: %s", px_strerror(rc));
    }
}

/* Hands the instance over to a second generation the way a reload does (load, hand over state,
 * switch routes and deliveries, start; the first one stops, drains and is destroyed), then runs
 * the requests and events again on it. */
static void reload(kit *k, kgen *g1, uint64_t run_ms)
{
    px_runtime *rt = k->rts[0];
    px_instance *inst = px_runtime_instance(rt, k->instance);
    px_plugin_ctx *old = inst->gen, *ng = NULL;
    char err[1024] = "";
    int rc = px_gen_load(inst, inst->file, rt->copy_dir, rt->cfg->plugin_trust, &ng, err,
                         sizeof(err));
    if (rc < 0) {
        failure(k, "init of generation 2 failed: %s", err);
        return;
    }
    kgen *g2 = gen_of(k, ng);
    hand_over_state(k, g1, g2);
    inst->gen = ng;
    px_net_apply_routes(rt->http, ng);
    rc = px_gen_start(ng, err, sizeof(err));
    if (rc < 0) {
        failure(k, "start failed (generation 2): %s", err);
        inst->gen = old;
        px_net_apply_routes(rt->http, old);
        px_gen_close(ng, NULL);
        return;
    }
    k->cur = g2;
    px_runtime_retire_gen(rt, old);
    px_dispatch_pump_all(rt->dispatch);
    run_until(k, gen_destroyed, g1, k->timeout_ms * 2 + 1000);
    run_requests(k, g2);
    run_events(k, g2, 1);
    run_until(k, NULL, NULL, run_ms);
}

/* --- The configuration the runtime runs ---------------------------------------------------- */

/* s as a YAML (JSON) double-quoted scalar. New string. */
static char *quoted(const char *s)
{
    json_t *j = json_string(s);
    char *q = json_dumps(j, JSON_ENCODE_ANY);
    json_decref(j);
    return q;
}

/* v as a mapping template that yields v itself: "{{" in strings is written "\{{". New ref. */
static json_t *literal_template(const json_t *v)
{
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (!strstr(s, "{{")) {
            return json_incref((json_t *)v);
        }
        size_t n = json_string_length(v);
        char *out = px_xmalloc(n * 2 + 1), *o = out;
        for (size_t i = 0; i < n; i++) {
            if (s[i] == '{' && i + 1 < n && s[i + 1] == '{') {
                *o++ = '\\';
            }
            *o++ = s[i];
        }
        json_t *r = json_stringn(out, (size_t)(o - out));
        free(out);
        return r;
    }
    if (json_is_object(v)) {
        json_t *r = json_object();
        const char *key;
        json_t *x;
        json_object_foreach((json_t *)v, key, x) {
            json_object_set_new(r, key, literal_template(x));
        }
        return r;
    }
    if (json_is_array(v)) {
        json_t *r = json_array();
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) {
            json_array_append_new(r, literal_template(x));
        }
        return r;
    }
    return json_incref((json_t *)v);
}

/* One pipeline per (pipeline, action, params) of the scenario's events, from the kit's source to
 * the plugin, matching those events by id: [{"name", "action", "with", "ids"}]. */
static json_t *event_pipelines(kit *k)
{
    const json_t *events = json_object_get(k->scn, "events");
    size_t n = json_array_size(events);
    size_t rounds = json_is_true(json_object_get(k->scn, "reload")) ? 2 : 1;
    json_t *groups = json_array();
    for (size_t r = 0; r < rounds; r++) {
        for (size_t i = 0; i < n; i++) {
            const json_t *spec = json_array_get(events, i);
            const char *name = json_string_value(json_object_get(spec, "pipeline"));
            const char *action = json_string_value(json_object_get(spec, "action"));
            json_t *params = json_object_get(spec, "params");
            name = name ? name : "test";
            action = action ? action : "";
            json_t *with = params ? literal_template(params) : json_object();
            json_t *group = NULL;
            char *tried = px_xstrdup(name);
            for (int suffix = 2; !group; suffix++) {
                json_t *g;
                size_t gi;
                int taken = 0;
                json_array_foreach(groups, gi, g) {
                    if (strcmp(json_string_value(json_object_get(g, "name")), tried) != 0) {
                        continue;
                    }
                    if (strcmp(json_string_value(json_object_get(g, "action")), action) == 0 &&
                        json_equal(json_object_get(g, "with"), with)) {
                        group = g;
                    }
                    taken = 1;
                }
                if (!group && !taken) {
                    group = json_pack("{s:s,s:s,s:O,s:[]}", "name", tried, "action", action,
                                      "with", with, "ids");
                    json_array_append_new(groups, group);
                    if (strcmp(tried, name) != 0) {
                        warning(k, "events of pipeline \"%s\" differ in action or params: those "
                                "of event %zu run in pipeline \"%s\"", name, i, tried);
                    }
                } else if (!group) {
                    free(tried);
                    tried = px_xasprintf("%s~%d", name, suffix);
                }
            }
            free(tried);
            json_decref(with);
            char *id = event_id(spec, r * n + i);
            json_array_append_new(json_object_get(group, "ids"), json_string(id));
            free(id);
        }
    }
    return groups;
}

static void write_pipelines(kit *k, FILE *f)
{
    json_t *groups = event_pipelines(k);
    size_t i;
    json_t *g;
    json_array_foreach(groups, i, g) {
        char *name = quoted(json_string_value(json_object_get(g, "name")));
        char *from = quoted(k->src_name), *to = quoted(k->instance);
        char *action = quoted(json_string_value(json_object_get(g, "action")));
        char *with = json_dumps(json_object_get(g, "with"), JSON_COMPACT | JSON_ENCODE_ANY);
        char *ids = json_dumps(json_object_get(g, "ids"), JSON_COMPACT);
        fprintf(f,
                "  - name: %s\n"
                "    from: %s\n"
                "    when: { match: { \"/$event/id\": { in: %s } } }\n"
                "    to: { sink: %s, action: %s, with: %s }\n"
                "    retry: { attempts: 1, timeout: %llums }\n",
                name, from, ids, to, action, with, (unsigned long long)k->timeout_ms * 4);
        free(name);
        free(from);
        free(to);
        free(action);
        free(with);
        free(ids);
    }
    json_decref(groups);
}

/* The configuration of the run: the plugin's instance (its options are the scenario's config),
 * the kit's source with a pipeline per kind of event to the plugin (a sink), and a pipeline from
 * the plugin (a source) to the kit's collector. NULL on failure (recorded). */
static px_config *build_config(kit *k, const char *file, const char *data_dir)
{
    char *dir = px_xstrdup(file);
    char *slash = strrchr(dir, '/');
    if (slash) {
        *slash = '\0';
    }
    char real[PATH_MAX];
    if (!realpath(slash ? (dir[0] ? dir : "/") : ".", real)) {
        snprintf(real, sizeof(real), "%s", dir);
    }
    free(dir);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    char *data = quoted(data_dir), *path = quoted(real), *inst = quoted(k->instance);
    char *plugin = quoted(k->desc->name), *src = quoted(k->src_name), *coll = quoted(k->coll_name);
    fprintf(f,
            "version: 1\n"
            "host:\n"
            "  data_dir: %s\n"
            "  plugin_path: [%s]\n"
            "  http: { listen: \"127.0.0.1:0\" }\n"
            "  admin: { listen: \"\", token: \"\" }\n"
            "  drain_timeout: %llums\n"
            "plugins:\n"
            "  %s: { plugin: %s }\n",
            data, path, (unsigned long long)k->timeout_ms, inst, plugin);
    int sink = (k->desc->kind & PX_KIND_SINK) && json_array_size(json_object_get(k->scn,
                                                                                 "events"));
    int source = (k->desc->kind & PX_KIND_SOURCE) != 0;
    if (sink) {
        fprintf(f, "  %s: { plugin: %s }\n", src, KIT_SOURCE);
    }
    if (source) {
        fprintf(f, "  %s: { plugin: %s }\n", coll, KIT_COLLECTOR);
    }
    if (sink || source) {
        fprintf(f, "pipelines:\n");
    }
    if (sink) {
        write_pipelines(k, f);
    }
    if (source) {
        fprintf(f, "  - { name: \"plexus-kit-emits\", from: %s, to: { sink: %s } }\n", inst, coll);
    }
    fclose(f);
    free(data);
    free(path);
    free(inst);
    free(plugin);
    free(src);
    free(coll);
    px_config *cfg = NULL;
    char err[1024];
    int rc = px_config_parse("kit.yaml", text, len, &cfg, err, sizeof(err));
    free(text);
    if (rc < 0) {
        failure(k, "the kit's configuration: %s", err);
        return NULL;
    }
    px_instance_conf *ic = (px_instance_conf *)px_config_instance(cfg, k->instance);
    json_t *raw = json_object_get(k->scn, "config");
    json_decref(ic->config);
    ic->config = json_deep_copy(raw ? raw : k->empty);
    return cfg;
}

/* 1 when `got` has everything `want` has: objects key by key (got may have more keys), arrays
 * item by item (same length), anything else equal (numbers by value). */
static int json_subset(const json_t *want, const json_t *got)
{
    if (json_is_object(want)) {
        const char *key;
        json_t *v;
        if (!json_is_object(got)) {
            return 0;
        }
        json_object_foreach((json_t *)want, key, v) {
            json_t *g = json_object_get(got, key);
            if (!g || !json_subset(v, g)) {
                return 0;
            }
        }
        return 1;
    }
    if (json_is_array(want)) {
        if (!json_is_array(got) || json_array_size(got) != json_array_size(want)) {
            return 0;
        }
        for (size_t i = 0; i < json_array_size(want); i++) {
            if (!json_subset(json_array_get(want, i), json_array_get(got, i))) {
                return 0;
            }
        }
        return 1;
    }
    if (json_is_number(want) && json_is_number(got)) {
        return json_number_value(want) == json_number_value(got);
    }
    return json_equal(want, got);
}

/* Matches the patterns of array `want` against the records of `got` in order: each pattern takes
 * the first record after the previous pattern's that it is a subset of (json_subset). Records
 * matching no pattern are allowed. A failure names the first pattern left unmatched. */
static void check_in_order(kit *k, const char *what, const json_t *want, const json_t *got)
{
    size_t at = 0;
    size_t i;
    json_t *pattern;
    json_array_foreach(want, i, pattern) {
        while (at < json_array_size(got) && !json_subset(pattern, json_array_get(got, at))) {
            at++;
        }
        if (at == json_array_size(got)) {
            char *text = json_dumps(pattern, JSON_COMPACT | JSON_ENCODE_ANY);
            failure(k, "%s %zu (%s): no %s matches it%s", what, i, text ? text : "?", what,
                    i ? " after the previous one's" : "");
            free(text);
            return;
        }
        at++;
    }
}

/* expect_emits: a count, {"min", "max", "match"}, or an array of patterns (one per emit, the
 * same count). Patterns ({"type", "payload", "meta", ...}, each a JSON subset of the emit's
 * record) are matched in order. */
static void check_emits(kit *k, const json_t *want)
{
    if (json_is_array(want)) {
        if (json_array_size(want) != json_array_size(k->emits)) {
            failure(k, "expected %zu emits, got %zu", json_array_size(want),
                    json_array_size(k->emits));
        }
        check_in_order(k, "emit", want, k->emits);
        return;
    }
    json_t *match = json_object_get(want, "match");
    if (match) {
        check_in_order(k, "emit", match, k->emits);
    }
}

static void check_locks(kit *k)
{
    json_t *holders = json_object_get(k->report, "locks");
    const char *name;
    json_t *want;
    json_object_foreach(json_object_get(k->scn, "expect_locks"), name, want) {
        json_int_t got = json_integer_value(json_object_get(holders, name));
        if (got != json_integer_value(want)) {
            failure(k, "lease \"%s\": expected host %lld to hold it at the end of the run, got "
                    "%lld (0: no host, -1: several)", name, (long long)json_integer_value(want),
                    (long long)got);
        }
    }
}

static void check_count(kit *k, const char *what, const json_t *want, size_t got)
{
    if (!want || json_is_array(want)) {
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
    check_emits(k, json_object_get(k->scn, "expect_emits"));
    check_in_order(k, "cluster call", json_object_get(k->scn, "expect_cluster"), k->cluster);
    check_locks(k);
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

static int check_scenario(kit *k)
{
    static const char *arrays[] = {"http", "requests", "events", "expect_cluster"};
    for (size_t i = 0; i < sizeof(arrays) / sizeof(arrays[0]); i++) {
        json_t *v = json_object_get(k->scn, arrays[i]);
        if (v && !json_is_array(v)) {
            failure(k, "scenario: \"%s\" must be an array", arrays[i]);
            return -1;
        }
    }
    static const char *objects[] = {"config", "kv", "expect_kv", "expect_locks"};
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
    json_t *hosts = json_object_get(k->scn, "hosts");
    k->hosts = hosts ? (int)json_integer_value(hosts) : 1;
    if (k->hosts < 1 || k->hosts > MAX_HOSTS) {
        failure(k, "scenario: hosts must be a number from 1 to %d", MAX_HOSTS);
        k->hosts = 1;
        return -1;
    }
    if (k->hosts > 1 && json_is_true(json_object_get(k->scn, "reload"))) {
        failure(k, "scenario: reload runs on one host (hosts must be 1)");
        return -1;
    }
    static const char *lists[] = {"requests", "events"};
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
        size_t j;
        json_t *spec;
        json_array_foreach(json_object_get(k->scn, lists[i]), j, spec) {
            json_t *h = json_object_get(spec, "host");
            if (h && (!json_is_integer(h) || json_integer_value(h) < 1 ||
                      json_integer_value(h) > k->hosts)) {
                failure(k, "scenario: %s %zu: host must be a number from 1 to %d", lists[i], j,
                        k->hosts);
                return -1;
            }
        }
    }
    json_t *t = json_object_get(k->scn, "timeout_ms");
    k->timeout_ms = json_integer_value(t) > 0 ? (uint64_t)json_integer_value(t)
                                              : DEFAULT_TIMEOUT_MS;
    return 0;
}

/* --- The run ---------------------------------------------------------------------------------- */

static void on_runtime_close(void *arg)
{
    ((kit *)arg)->rt_closed++;
}

static int runtime_closed(void *arg)
{
    kit *k = arg;
    int open = 0;
    for (int h = 0; h < k->hosts; h++) {
        if (k->rts[h]) {
            open++;
            if (k->rts[h]->gens.gens_open != 0) {
                return 0;
            }
        }
    }
    return k->rt_closed == open;
}

/* Stops the runtimes as the daemon does (sources, then sinks, drain bounded by timeout_ms, then
 * destroy and close), keeps watching for late calls, and frees them. */
static void stop_runtime(kit *k)
{
    for (int h = 0; h < k->hosts; h++) {
        if (k->rts[h]) {
            px_runtime_shutdown(k->rts[h]);
        }
    }
    if (!run_until(k, runtime_closed, k, k->timeout_ms * 3 + 1000)) {
        failure(k, "the host did not close within %llu ms of its stop",
                (unsigned long long)(k->timeout_ms * 3 + 1000));
        return; /* left as is: freeing it would pull memory from under what still runs */
    }
    run_until(k, NULL, NULL, AFTER_DESTROY_MS); /* late posts, timers or threads show here */
    for (int h = 0; h < k->hosts; h++) {
        px_runtime_destroy(k->rts[h]);
        k->rts[h] = NULL;
    }
}

/* Loads the plugin and validates its options. 0 or < 0 (a failure is recorded). */
static int load(kit *k, const char *file)
{
    char err[1024];
    int rc = px_loader_open(file, NULL, &k->api, PX_TRUST_STRICT, &k->lib, err, sizeof(err));
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
    k->src_name = px_xstrdup(strcmp(k->instance, "test") != 0 ? "test" : "test-source");
    k->coll_name = px_xstrdup(strcmp(k->instance, "kit-collector") != 0 ? "kit-collector"
                                                                        : "kit-collector-2");

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
    return 0;
}

/* The plugin's part: returns when the runtime is stopped and every generation destroyed. */
static void drive(kit *k, const char *file)
{
    json_t *run = json_object_get(k->scn, "run_ms");
    uint64_t run_ms = run ? (uint64_t)json_integer_value(run) : DEFAULT_RUN_MS;
    int expect_init_error = json_is_true(json_object_get(k->scn, "expect_init_error"));
    px_store *first = NULL;
    char err[1024] = "";
    for (int h = 1; h <= k->hosts; h++) {
        char *dir = h == 1 ? px_xstrdup(k->dir) : px_xasprintf("%s/host-%d", k->dir, h);
        px_config *cfg = (h == 1 || mkdir(dir, 0700) == 0) ? build_config(k, file, dir) : NULL;
        if (!cfg && h > 1) {
            failure(k, "cannot make the data folder of host %d: %s", h, strerror(errno));
        }
        free(dir);
        if (!cfg) {
            break;
        }
        px_store *store = edge_store(k, h, first);
        if (h == 1) {
            first = store;
            const char *key;
            json_t *value;
            json_object_foreach(k->kv, key, value) {
                px_store_kv_set(store, k->instance, key, value);
                json_object_set_new(k->kv_keys, key, json_true());
            }
        }
        px_runtime_edges edges = {.store = store, .plugin_api = &k->api, .watch = on_watch,
                                  .watch_arg = k};
        k->creating = h;
        int rc = px_runtime_create_with(&k->loop, cfg, &edges, &k->rts[h - 1], err,
                                        sizeof(err));
        if (rc < 0) {
            int init_ran = k->ngens > 0 && k->init_rc < 0;
            if (!(init_ran && expect_init_error)) {
                failure(k, "%s%s", k->hosts > 1 ? "host: " : "", err);
            }
            if (expect_init_error && !init_ran) {
                failure(k, "init did not run, the scenario expects it to fail");
            }
            k->rts[h - 1] = NULL;
            break;
        }
        k->rts[h - 1]->on_close = on_runtime_close;
        k->rts[h - 1]->on_close_arg = k;
    }
    if (!k->rts[k->hosts - 1]) {
        stop_runtime(k);
        return;
    }
    kgen *g = k->gens[0];
    k->cur = g;
    int started = 1;
    if (expect_init_error) {
        failure(k, "init succeeded, the scenario expects it to fail");
        started = 0;
    }
    for (int h = 1; h <= k->hosts && started; h++) {
        if (px_runtime_start(k->rts[h - 1], err, sizeof(err)) < 0) {
            failure(k, "start failed (%s %d): %s", k->hosts > 1 ? "host" : "generation", h, err);
            started = 0;
        }
    }
    if (started) {
        run_requests(k, g);
        run_events(k, g, 0);
        run_until(k, NULL, NULL, run_ms);
        json_object_set_new(k->report, "locks", lock_holders(k));
        if (json_is_true(json_object_get(k->scn, "reload")) && phase_of(g) == PH_RUNNING) {
            reload(k, g, run_ms);
        }
    }
    stop_runtime(k);
}

static void on_handle_closed(uv_handle_t *h)
{
    (void)h;
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) {
        uv_close(h, on_handle_closed);
    }
}

static void free_records(kit *k)
{
    while (k->calls) {
        kcall *c = k->calls;
        k->calls = c->next;
        free(c);
    }
    while (k->events) {
        kevent *e = k->events;
        k->events = e->next;
        if (!e->emitted && !e->discarded && !e->delivered) {
            px_event_unref(e->ev); /* the plugin's own, never given back */
        }
        px_event_unref(e->ev);
        free(e);
    }
    while (k->dels) {
        kdel *d = k->dels;
        k->dels = d->next;
        px_event_unref(d->ev);
        free(d->reason);
        free(d);
    }
    while (k->timers) {
        ktimer *t = k->timers;
        k->timers = t->next;
        free(t);
    }
    while (k->routes) {
        kroute *r = k->routes;
        k->routes = r->next;
        free(r);
    }
    while (k->reqs) {
        kreq *r = k->reqs;
        k->reqs = r->next;
        json_decref(r->resp_headers);
        free(r);
    }
    while (k->pers) {
        kpers *p = k->pers;
        k->pers = p->next;
        free(p);
    }
    while (k->locks) {
        klock *l = k->locks;
        k->locks = l->next;
        free(l->name);
        free(l);
    }
    free(k->http_used);
    while (k->outs) {
        kout *o = k->outs;
        k->outs = o->next;
        free(o->body);
        free(o->error);
        json_decref(o->headers);
        free(o);
    }
}

static void teardown(kit *k)
{
    if (k->client) {
        px_http_client_close(k->client, NULL, NULL);
        k->client = NULL;
    }
    for (kcall *c = k->calls; c; c = c->next) {
        if (c->timer_open) {
            uv_close((uv_handle_t *)&c->timer, on_handle_closed);
        }
    }
    uv_close((uv_handle_t *)&k->deadline, on_handle_closed);
    uv_run(&k->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&k->loop) != 0) {
        uv_walk(&k->loop, close_walk, NULL);
        uv_run(&k->loop, UV_RUN_DEFAULT);
        uv_loop_close(&k->loop);
    }
    free_records(k);
    for (int i = 0; i < k->ngens; i++) {
        if (k->gens[i]->pin) {
            dlclose(k->gens[i]->pin); /* the plugin's code is no longer needed */
        }
        free(k->gens[i]);
    }
    px_loader_close(k->lib);
    pthread_mutex_destroy(&k->lock);
}

/* The whole scenario, in this process, with `dir` (borrowed) as the runtime's data_dir. */
static int run_here(const char *file, const json_t *scenario, const char *dir, json_t **report)
{
    kit *k = px_xcalloc(1, sizeof(*k));
    the_kit = k;
    px_loader_add_builtin(KIT_SOURCE, src_entry);
    px_loader_add_builtin(KIT_COLLECTOR, coll_entry);
    json_t *scn = json_is_object(scenario) ? json_deep_copy(scenario) : json_object();
    k->scn = scn;
    k->dir = dir;
    k->empty = json_object();
    k->loop_thread = pthread_self();
    pthread_mutex_init(&k->lock, NULL);
    uv_loop_init(&k->loop);
    uv_timer_init(&k->loop, &k->deadline);
    k->deadline.data = k;
    px_api_init(&k->real);
    fill_api(&k->api);
    k->report = json_object();
    k->lifecycle = json_array();
    k->deliveries = json_array();
    k->requests = json_array();
    k->emits = json_array();
    k->dead_letters = json_array();
    k->http_calls = json_array();
    k->logs = json_array();
    k->cluster = json_array();
    k->lock_held = json_object();
    k->hosts = 1;
    k->violations = json_array();
    k->failures = json_array();
    k->warnings = json_array();
    k->secrets = json_array();
    k->metrics = json_object();
    json_t *kv = json_object_get(scn, "kv");
    k->kv = json_is_object(kv) ? json_deep_copy(kv) : json_object();
    k->kv_keys = json_object();
    json_object_set_new(k->report, "file", json_string(file));

    if (check_scenario(k) == 0 && load(k, file) == 0) {
        drive(k, file);
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
    json_object_set_new(r, "cluster", k->cluster);
    if (!json_object_get(r, "locks")) {
        json_object_set_new(r, "locks", json_object());
    }
    json_object_set_new(r, "violations", k->violations);
    json_object_set_new(r, "failures", k->failures);
    json_object_set_new(r, "warnings", k->warnings);
    json_decref(k->config);
    json_decref(k->secrets);
    json_decref(k->kv_keys);
    json_decref(k->lock_held);
    json_decref(scn);
    json_decref(k->empty);
    free(k->instance);
    free(k->src_name);
    free(k->coll_name);
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

/* Removes the run's folder: the crash marker, and the runtime's private plugin copies (a run
 * that crashed did not unlink its own). */
/* Removes what a runtime leaves in its data folder `dir` (borrowed), and the folder. */
static void remove_data_dir(const char *dir)
{
    char *marker = px_xasprintf("%s/%s", dir, PX_CRASH_MARKER);
    unlink(marker);
    free(marker);
    char *copies = px_xasprintf("%s/plugins", dir);
    DIR *dh = opendir(copies);
    struct dirent *de;
    while (dh && (de = readdir(dh)) != NULL) {
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
            char *p = px_xasprintf("%s/%s", copies, de->d_name);
            unlink(p);
            free(p);
        }
    }
    if (dh) {
        closedir(dh);
    }
    rmdir(copies);
    free(copies);
    rmdir(dir);
}

/* Removes the run's folder: host 1's data folder, holding those of the other hosts. */
static void remove_run_dir(const char *dir)
{
    for (int h = 2; h <= MAX_HOSTS; h++) {
        char *sub = px_xasprintf("%s/host-%d", dir, h);
        remove_data_dir(sub);
        free(sub);
    }
    remove_data_dir(dir);
}

/* Runs the scenario in a child process writing its report to fd and exits. */
static void run_child(const char *file, const json_t *scenario, const char *dir, int fd)
{
    px_crash_install(dir);
    json_t *report = NULL;
    int rc = run_here(file, scenario, dir, &report);
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
    remove_run_dir(dir);
    free(dir);
    *report = r;
    return rc;
}
