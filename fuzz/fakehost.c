/* In-memory host for plugin fuzz targets (see fakehost.h). */
#include "fakehost.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct px_plugin_ctx {
    const char *name;
};

struct px_event {
    char *type, *id, *source;
    json_t *payload; /* owned */
    json_t *meta;    /* owned object */
    const char *raw; /* event_set_raw text (borrowed until emit) */
    size_t raw_len;
    int64_t time_ms;
    struct px_event *next; /* live events */
    struct px_event *prev;
};

struct px_delivery {
    px_event *ev;
    char *action;
    json_t *params;
    struct px_delivery *next;
};

struct px_timer {
    void (*cb)(void *arg);
    void *arg;
    int repeat, stopped, fired;
    struct px_timer *next;
};

typedef struct header {
    char *name, *value;
} header;

struct px_http_request {
    char *method, *path; /* owned copies: the request outlives the caller's strings */
    header h[16];
    size_t nh;
    const char *body;
    size_t len;
    int responded;
    struct px_http_request *next;
};

struct px_http_response {
    int status;
    header h[8];
    size_t nh;
    const char *body;
    size_t len;
};

struct px_http_call {
    px_http_response_cb cb;
    void *arg;
    int answered;
    struct px_http_call *next;
};

typedef struct route {
    char *method, *path;
    px_http_handler cb;
    void *arg;
    struct route *next;
} route;

typedef struct work {
    void (*fn)(struct work *w);
    px_persisted_cb pcb;
    void (*cb)(void *arg);
    void *arg;
    int status;
    px_http_call *call;
    struct work *next;
} work;

static px_plugin_ctx the_ctx = {"fuzzed"};
static int persisted;
static json_t *kv;
static route *routes;
static px_http_call *calls;
static px_timer *timers;
static px_event *events;
static px_delivery *deliveries;
static px_http_request *requests;
static work *queue_head, *queue_tail;
static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n, sz);
    if (!p) {
        abort();
    }
    return p;
}

static char *xstrdup(const char *s)
{
    char *p = strdup(s ? s : "");
    if (!p) {
        abort();
    }
    return p;
}

static void push(work *w)
{
    pthread_mutex_lock(&queue_lock);
    if (queue_tail) {
        queue_tail->next = w;
    } else {
        queue_head = w;
    }
    queue_tail = w;
    pthread_mutex_unlock(&queue_lock);
}

/* --- logging, events --------------------------------------------------------------------- */

static void f_log(px_plugin_ctx *ctx, int level, const char *fmt, ...)
{
    (void)ctx, (void)level;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap); /* formats every argument, as the real log does */
    va_end(ap);
}

static const char *f_instance_name(px_plugin_ctx *ctx)
{
    return ctx->name;
}

static px_event *f_event_create(px_plugin_ctx *ctx, const char *type, json_t *payload)
{
    (void)ctx;
    if (!type || !payload) {
        json_decref(payload);
        return NULL;
    }
    static unsigned long seq;
    px_event *ev = xcalloc(1, sizeof(*ev));
    char id[32];
    snprintf(id, sizeof(id), "ev-%lu", ++seq);
    ev->type = xstrdup(type);
    ev->id = xstrdup(id);
    ev->source = xstrdup(the_ctx.name);
    ev->payload = payload;
    ev->meta = json_object();
    ev->time_ms = 1700000000000;
    ev->next = events;
    if (events) {
        events->prev = ev;
    }
    events = ev;
    return ev;
}

static void event_free(px_event *ev)
{
    if (ev->prev) {
        ev->prev->next = ev->next;
    } else if (events == ev) {
        events = ev->next;
    }
    if (ev->next) {
        ev->next->prev = ev->prev;
    }
    free(ev->type);
    free(ev->id);
    free(ev->source);
    json_decref(ev->payload);
    json_decref(ev->meta);
    free(ev);
}

static int f_event_set(px_event *ev, int field, const char *value)
{
    if (!ev || !value) {
        return PX_EINVAL;
    }
    if (field == PX_EVENT_ID) {
        free(ev->id);
        ev->id = xstrdup(value);
    }
    return 0;
}

static int f_event_set_hint(px_event *ev, int hint, int64_t value)
{
    (void)hint, (void)value;
    return ev ? 0 : PX_EINVAL;
}

static int f_event_set_meta(px_event *ev, const char *key, const char *value)
{
    if (!ev || !key || !value) {
        return PX_EINVAL;
    }
    json_object_set_new(ev->meta, key, json_string(value));
    return 0;
}

static int f_event_set_raw(px_event *ev, const char *json, size_t len)
{
    if (!ev || !json) {
        return PX_EINVAL;
    }
    ev->raw = json;
    ev->raw_len = len;
    return 0;
}

static void run_persisted(work *w)
{
    w->pcb(w->status, w->arg);
}

static int trace(void)
{
    static int on = -1;
    if (on < 0) {
        on = getenv("PX_FUZZ_TRACE") != NULL; /* PX_FUZZ_TRACE=1: say what the plugin did */
    }
    return on;
}

static int f_emit(px_plugin_ctx *ctx, px_event *ev, px_persisted_cb cb, void *arg)
{
    (void)ctx;
    if (!ev) {
        return PX_EINVAL;
    }
    if (trace()) {
        fprintf(stderr, "fakehost: emit type=%s\n", ev->type);
    }
    /* what the spool would store: the raw text must be the payload's (sdk.h) */
    if (ev->raw) {
        json_t *again = json_loadb(ev->raw, ev->raw_len, JSON_DECODE_ANY, NULL);
        if (!again || !json_equal(again, ev->payload)) {
            fprintf(stderr, "fakehost: event_set_raw text does not parse to the payload\n");
            abort();
        }
        json_decref(again);
    } else {
        char *dump = json_dumps(ev->payload, JSON_ENCODE_ANY | JSON_COMPACT);
        free(dump);
    }
    event_free(ev);
    if (cb) {
        work *w = xcalloc(1, sizeof(*w));
        w->fn = run_persisted;
        w->pcb = cb;
        w->arg = arg;
        w->status = persisted;
        push(w);
    }
    return 0;
}

static void f_event_discard(px_event *ev)
{
    if (ev) {
        event_free(ev);
    }
}

static const char *f_event_type(const px_event *ev) { return ev->type; }
static const char *f_event_id(const px_event *ev) { return ev->id; }
static const char *f_event_source(const px_event *ev) { return ev->source; }
static int64_t f_event_time_ms(const px_event *ev) { return ev->time_ms; }
static json_t *f_event_payload(const px_event *ev) { return ev->payload; }

static const char *f_event_meta(const px_event *ev, const char *key)
{
    return json_string_value(json_object_get(ev->meta, key));
}

/* --- deliveries ------------------------------------------------------------------------------ */

static const px_event *f_delivery_event(px_delivery *d) { return d->ev; }
static const char *f_delivery_action(px_delivery *d) { return d->action; }
static json_t *f_delivery_params(px_delivery *d) { return d->params; }
static const char *f_delivery_pipeline(px_delivery *d) { (void)d; return "fuzz"; }
static uint32_t f_delivery_attempt(px_delivery *d) { (void)d; return 1; }

static void delivery_free(px_delivery *d)
{
    for (px_delivery **pp = &deliveries; *pp; pp = &(*pp)->next) {
        if (*pp == d) {
            *pp = d->next;
            break;
        }
    }
    event_free(d->ev);
    free(d->action);
    json_decref(d->params);
    free(d);
}

static void f_complete(px_delivery *d, int status, const char *reason, uint64_t retry_after_ms)
{
    if (trace()) {
        fprintf(stderr, "fakehost: complete status=%d reason=%s retry_after_ms=%llu\n", status,
                reason ? reason : "", (unsigned long long)retry_after_ms);
    }
    if (reason) {
        (void)strlen(reason);
    }
    delivery_free(d);
}

void fh_deliver(void (*deliver)(void *state, px_delivery *d), void *state, const char *action,
                const char *params, const char *payload)
{
    px_delivery *d = xcalloc(1, sizeof(*d));
    json_t *p = json_loads(payload, 0, NULL);
    d->ev = f_event_create(&the_ctx, "fuzz.event", p ? p : json_object());
    /* deliveries own their event: take it off the live list's ownership by keeping it there and
     * freeing it with the delivery */
    d->action = xstrdup(action);
    d->params = json_loads(params ? params : "{}", 0, NULL);
    if (!d->params) {
        d->params = json_object();
    }
    d->next = deliveries;
    deliveries = d;
    deliver(state, d);
}

/* --- loop services --------------------------------------------------------------------------- */

static void run_post(work *w)
{
    w->cb(w->arg);
}

static int f_post(px_plugin_ctx *ctx, void (*cb)(void *arg), void *arg)
{
    (void)ctx;
    work *w = xcalloc(1, sizeof(*w));
    w->fn = run_post;
    w->cb = cb;
    w->arg = arg;
    push(w);
    return 0;
}

static int f_timer_start(px_plugin_ctx *ctx, uint64_t ms, uint64_t repeat_ms,
                         void (*cb)(void *arg), void *arg, px_timer **out)
{
    (void)ctx, (void)ms;
    if (!cb || !out) {
        return PX_EINVAL;
    }
    px_timer *t = xcalloc(1, sizeof(*t));
    t->cb = cb;
    t->arg = arg;
    t->repeat = repeat_ms > 0;
    t->next = timers;
    timers = t;
    *out = t;
    return 0;
}

static void f_timer_stop(px_timer *t)
{
    if (t) {
        t->stopped = 1; /* freed by the round that sees it, never inside a callback */
    }
}

/* --- HTTP server side ------------------------------------------------------------------------ */

static int f_http_route(px_plugin_ctx *ctx, const char *method, const char *path, uint32_t flags,
                        px_http_handler cb, void *arg)
{
    (void)ctx, (void)flags;
    if (!path || !cb) {
        return PX_EINVAL;
    }
    route *r = xcalloc(1, sizeof(*r));
    r->method = method ? xstrdup(method) : NULL;
    r->path = xstrdup(path);
    r->cb = cb;
    r->arg = arg;
    r->next = routes;
    routes = r;
    return 0;
}

static const char *f_req_method(px_http_request *req) { return req->method; }
static const char *f_req_path(px_http_request *req) { return req->path; }
static const char *f_req_query(px_http_request *req) { (void)req; return ""; }

static const char *f_req_header(px_http_request *req, const char *name)
{
    for (size_t i = 0; i < req->nh; i++) {
        if (strcasecmp(req->h[i].name, name) == 0) {
            return req->h[i].value;
        }
    }
    return NULL;
}

static const char *f_req_body(px_http_request *req, size_t *len)
{
    if (len) {
        *len = req->len;
    }
    return req->body;
}

static int f_set_header(px_http_request *req, const char *name, const char *value)
{
    if (!req || !name || !value || req->responded) {
        return PX_EINVAL;
    }
    return 0;
}

static void f_respond(px_http_request *req, int status, const char *content_type,
                      const char *body, size_t len)
{
    (void)content_type;
    if (trace()) {
        fprintf(stderr, "fakehost: respond %s %s status=%d body=%.*s\n", req->method, req->path,
                status, (int)(len > 200 ? 200 : len), body ? body : "");
    }
    if (body && len) {
        volatile char last = body[len - 1]; /* the whole body must be readable */
        (void)last;
    }
    req->responded = 1;
}

static void add_header(header *h, size_t *nh, size_t cap, const char *line)
{
    const char *colon = strchr(line, ':');
    if (!colon || *nh >= cap) {
        return;
    }
    h[*nh].name = strndup(line, (size_t)(colon - line));
    const char *v = colon + 1;
    while (*v == ' ') {
        v++;
    }
    h[*nh].value = xstrdup(v);
    (*nh)++;
}

size_t fh_call_routes(const char *method, const char *path, const char *const *headers,
                      const char *body, size_t len)
{
    size_t n = 0;
    route *best = NULL;
    if (path) {
        /* the route the server would pick: exact, else the longest prefix */
        size_t best_len = 0;
        for (route *r = routes; r; r = r->next) {
            size_t rl = strlen(r->path);
            if (strncmp(path, r->path, rl) == 0 && (path[rl] == '\0' || path[rl] == '/' ||
                                                     (rl && r->path[rl - 1] == '/')) &&
                rl >= best_len) {
                best = r;
                best_len = rl;
            }
        }
        if (!best) {
            return 0;
        }
    }
    for (route *r = best ? best : routes; r; r = best ? NULL : r->next) {
        px_http_request *req = xcalloc(1, sizeof(*req));
        req->method = xstrdup(method ? method : r->method ? r->method : "POST");
        req->path = xstrdup(path ? path : r->path);
        for (const char *const *h = headers; h && *h; h++) {
            add_header(req->h, &req->nh, 16, *h);
        }
        req->body = body;
        req->len = len;
        req->next = requests;
        requests = req;
        r->cb(req, r->arg);
        n++;
    }
    return n;
}

/* --- HTTP client side ------------------------------------------------------------------------ */

static int f_http_request(px_plugin_ctx *ctx, const px_http_options *opt, px_http_response_cb cb,
                          void *arg, px_http_call **out)
{
    (void)ctx;
    if (!opt || !cb) {
        return PX_EINVAL;
    }
    if (opt->body && opt->body_len) {
        volatile char last = opt->body[opt->body_len - 1];
        (void)last;
    }
    if (trace()) {
        fprintf(stderr, "fakehost: request %s %s\n", opt->method ? opt->method : "GET",
                opt->url ? opt->url : "");
    }
    px_http_call *c = xcalloc(1, sizeof(*c));
    c->cb = cb;
    c->arg = arg;
    c->next = calls;
    calls = c;
    if (out) {
        *out = c;
    }
    return 0;
}

static void run_cancel(work *w)
{
    px_http_call *c = w->call;
    c->cb(-125, NULL, "cancelled", c->arg);
}

static void f_http_cancel(px_http_call *c)
{
    if (!c || c->answered) {
        return;
    }
    c->answered = 1;
    work *w = xcalloc(1, sizeof(*w));
    w->fn = run_cancel;
    w->call = c;
    push(w);
}

static const char *f_resp_header(const px_http_response *resp, const char *name)
{
    for (size_t i = 0; i < resp->nh; i++) {
        if (strcasecmp(resp->h[i].name, name) == 0) {
            return resp->h[i].value;
        }
    }
    return NULL;
}

static const char *f_resp_body(const px_http_response *resp, size_t *len)
{
    if (len) {
        *len = resp->len;
    }
    return resp->body;
}

size_t fh_answer_calls(int status, const char *const *headers, const char *body, size_t len)
{
    /* answer the calls open now; calls the callbacks start wait for the next round */
    size_t n = 0;
    px_http_call *open[64];
    size_t nopen = 0;
    for (px_http_call *c = calls; c && nopen < 64; c = c->next) {
        if (!c->answered) {
            open[nopen++] = c;
        }
    }
    /* NUL-terminated copy, as the real client hands out */
    char *copy = malloc(len + 1);
    if (!copy) {
        abort();
    }
    memcpy(copy, body, len);
    copy[len] = '\0';
    for (size_t i = 0; i < nopen; i++) {
        px_http_call *c = open[i];
        c->answered = 1;
        px_http_response resp = {.status = status, .body = copy, .len = len};
        for (const char *const *h = headers; h && *h; h++) {
            add_header(resp.h, &resp.nh, 8, *h);
        }
        if (status < 0) {
            c->cb(status, NULL, "connection refused", c->arg);
        } else {
            c->cb(status, &resp, NULL, c->arg);
        }
        for (size_t k = 0; k < resp.nh; k++) {
            free(resp.h[k].name);
            free(resp.h[k].value);
        }
        n++;
    }
    free(copy);
    return n;
}

/* --- state, metrics, lifecycle ------------------------------------------------------------- */

/* Versions of kv's keys (1.2): key -> integer; a key loaded by fh_reset without one is at 1. */
static json_t *kv_ver;
static int64_t kv_ver_next = 2;

static json_t *f_kv_get(px_plugin_ctx *ctx, const char *key)
{
    (void)ctx;
    json_t *v = json_object_get(kv, key);
    return v ? json_deep_copy(v) : NULL;
}

static int f_kv_set(px_plugin_ctx *ctx, const char *key, const json_t *value)
{
    (void)ctx;
    if (!key) {
        return PX_EINVAL;
    }
    if (value) {
        json_object_set_new(kv, key, json_deep_copy(value));
    } else {
        json_object_del(kv, key);
    }
    if (!kv_ver) {
        kv_ver = json_object();
    }
    json_object_set_new(kv_ver, key, json_integer(kv_ver_next++)); /* every write moves it */
    return 0;
}

static int64_t version_of(const char *key)
{
    if (!json_object_get(kv, key)) {
        return 0;
    }
    json_int_t v = json_integer_value(json_object_get(kv_ver, key));
    return v > 0 ? v : 1;
}

static json_t *f_kv_get_versioned(px_plugin_ctx *ctx, const char *key, int64_t *version)
{
    if (version) {
        *version = key ? version_of(key) : 0;
    }
    return key ? f_kv_get(ctx, key) : NULL;
}

static int f_kv_cas(px_plugin_ctx *ctx, const char *key, int64_t expected, const json_t *value,
                    int64_t *new_version)
{
    if (!key || expected < 0) {
        return PX_EINVAL;
    }
    if (version_of(key) != expected) {
        return PX_ECONFLICT;
    }
    f_kv_set(ctx, key, value);
    if (new_version) {
        *new_version = version_of(key);
    }
    return 0;
}

/* Locks (1.2): one instance on one host, so a lock is granted at once (in the next round, never
 * inside lock_acquire) and never lost. */
typedef struct lock_rec {
    char *name;
    int id;
    void (*cb)(void *arg, int status);
    void *arg;
    struct lock_rec *next;
} lock_rec;

static lock_rec *locks;
static int lock_next_id = 1;

static void run_lock_grant(work *w)
{
    for (lock_rec *l = locks; l; l = l->next) {
        if (l->id == w->status) { /* not released meanwhile */
            l->cb(l->arg, PX_OK);
            return;
        }
    }
}

static int f_lock_acquire(px_plugin_ctx *ctx, const char *name, uint32_t ttl_ms,
                          void (*cb)(void *arg, int status), void *arg)
{
    (void)ctx;
    if (!name || !*name || !cb || ttl_ms < 30) {
        return PX_EINVAL;
    }
    for (lock_rec *l = locks; l; l = l->next) {
        if (strcmp(l->name, name) == 0) {
            return PX_ESTATE;
        }
    }
    lock_rec *l = xcalloc(1, sizeof(*l));
    l->name = xstrdup(name);
    l->id = lock_next_id++;
    l->cb = cb;
    l->arg = arg;
    l->next = locks;
    locks = l;
    work *w = xcalloc(1, sizeof(*w));
    w->fn = run_lock_grant;
    w->status = l->id;
    push(w);
    return 0;
}

static int f_lock_release(px_plugin_ctx *ctx, const char *name)
{
    (void)ctx;
    for (lock_rec **pp = &locks; *pp; pp = &(*pp)->next) {
        if (name && strcmp((*pp)->name, name) == 0) {
            lock_rec *l = *pp;
            *pp = l->next;
            free(l->name);
            free(l);
            return 0;
        }
    }
    return PX_ENOENT;
}

static void locks_free(void)
{
    while (locks) {
        lock_rec *l = locks;
        locks = l->next;
        free(l->name);
        free(l);
    }
}

static int f_cluster(px_plugin_ctx *ctx, px_cluster_info *info)
{
    (void)ctx;
    if (!info || info->size < offsetof(px_cluster_info, host_id)) {
        return PX_EINVAL;
    }
    info->live_hosts = 1;
    info->host_index = 0;
    if (info->size >= sizeof(*info)) {
        snprintf(info->host_id, sizeof(info->host_id), "fakehost");
    }
    return 0;
}

static void f_counter_add(px_plugin_ctx *ctx, const char *name, const char *labels, double d)
{
    (void)ctx, (void)name, (void)labels, (void)d;
}

static void f_gauge_set(px_plugin_ctx *ctx, const char *name, const char *labels, double v)
{
    (void)ctx, (void)name, (void)labels, (void)v;
}

static void f_drained(px_plugin_ctx *ctx)
{
    (void)ctx;
}

static int f_dead_letter(px_plugin_ctx *ctx, const char *raw, size_t len, const json_t *meta,
                         const char *reason, px_persisted_cb cb, void *arg)
{
    (void)ctx, (void)meta;
    if (!raw && len) {
        return PX_EINVAL;
    }
    if (len) {
        volatile char last = raw[len - 1];
        (void)last;
    }
    if (trace()) {
        fprintf(stderr, "fakehost: dead_letter bytes=%zu reason=%s\n", len, reason ? reason : "");
    }
    if (cb) {
        work *w = xcalloc(1, sizeof(*w));
        w->fn = run_persisted;
        w->pcb = cb;
        w->arg = arg;
        w->status = persisted;
        push(w);
    }
    return 0;
}

static px_host_api api = {
    .abi_major = PX_SDK_ABI_MAJOR,
    .abi_minor = PX_SDK_ABI_MINOR,
    .size = sizeof(px_host_api),
    .log = f_log,
    .instance_name = f_instance_name,
    .event_create = f_event_create,
    .event_set = f_event_set,
    .event_set_hint = f_event_set_hint,
    .event_set_meta = f_event_set_meta,
    .emit = f_emit,
    .event_discard = f_event_discard,
    .event_type = f_event_type,
    .event_id = f_event_id,
    .event_source = f_event_source,
    .event_meta = f_event_meta,
    .event_time_ms = f_event_time_ms,
    .event_payload = f_event_payload,
    .delivery_event = f_delivery_event,
    .delivery_action = f_delivery_action,
    .delivery_params = f_delivery_params,
    .delivery_pipeline = f_delivery_pipeline,
    .delivery_attempt = f_delivery_attempt,
    .complete = f_complete,
    .post = f_post,
    .timer_start = f_timer_start,
    .timer_stop = f_timer_stop,
    .http_route = f_http_route,
    .http_req_method = f_req_method,
    .http_req_path = f_req_path,
    .http_req_query = f_req_query,
    .http_req_header = f_req_header,
    .http_req_body = f_req_body,
    .http_set_header = f_set_header,
    .http_respond = f_respond,
    .http_request = f_http_request,
    .http_cancel = f_http_cancel,
    .http_resp_header = f_resp_header,
    .http_resp_body = f_resp_body,
    .kv_get = f_kv_get,
    .kv_set = f_kv_set,
    .counter_add = f_counter_add,
    .gauge_set = f_gauge_set,
    .drained = f_drained,
    .dead_letter = f_dead_letter,
    .event_set_raw = f_event_set_raw,
    .kv_get_versioned = f_kv_get_versioned,
    .kv_cas = f_kv_cas,
    .lock_acquire = f_lock_acquire,
    .lock_release = f_lock_release,
    .cluster = f_cluster,
};

const px_host_api *fh_api(void)
{
    return &api;
}

px_plugin_ctx *fh_ctx(void)
{
    return &the_ctx;
}

void fh_reset(int persisted_status, const char *kv_json)
{
    persisted = persisted_status;
    json_decref(kv);
    kv = kv_json ? json_loads(kv_json, 0, NULL) : NULL;
    json_decref(kv_ver);
    kv_ver = NULL;
    locks_free();
    if (!kv) {
        kv = json_object();
    }
}

static void run_queue(void)
{
    for (int guard = 0; guard < 64; guard++) {
        pthread_mutex_lock(&queue_lock);
        work *w = queue_head;
        queue_head = queue_tail = NULL;
        pthread_mutex_unlock(&queue_lock);
        if (!w) {
            return;
        }
        while (w) {
            work *next = w->next;
            w->fn(w);
            free(w);
            w = next;
        }
    }
}

static void reap_timers(void)
{
    for (px_timer **pp = &timers; *pp;) {
        if ((*pp)->stopped) {
            px_timer *t = *pp;
            *pp = t->next;
            free(t);
        } else {
            pp = &(*pp)->next;
        }
    }
}

void fh_run(int rounds)
{
    for (int r = 0; r < rounds; r++) {
        run_queue();
        reap_timers();
        /* fire the timers live at the start of the round, each once */
        px_timer *due[64];
        size_t n = 0;
        for (px_timer *t = timers; t && n < 64; t = t->next) {
            if (!t->stopped && (t->repeat || !t->fired)) {
                due[n++] = t;
            }
        }
        for (size_t i = 0; i < n; i++) {
            if (!due[i]->stopped) {
                due[i]->fired = 1;
                due[i]->cb(due[i]->arg);
            }
        }
        run_queue();
        reap_timers();
    }
}

void fh_cleanup(void)
{
    /* queued work would call into a destroyed plugin: drop it */
    pthread_mutex_lock(&queue_lock);
    work *w = queue_head;
    queue_head = queue_tail = NULL;
    pthread_mutex_unlock(&queue_lock);
    while (w) {
        work *next = w->next;
        free(w);
        w = next;
    }
    while (timers) {
        px_timer *t = timers;
        timers = t->next;
        free(t);
    }
    locks_free();
    while (calls) {
        px_http_call *c = calls;
        calls = c->next;
        free(c);
    }
    while (routes) {
        route *r = routes;
        routes = r->next;
        free(r->method);
        free(r->path);
        free(r);
    }
    while (requests) {
        px_http_request *q = requests;
        requests = q->next;
        for (size_t i = 0; i < q->nh; i++) {
            free(q->h[i].name);
            free(q->h[i].value);
        }
        free(q->method);
        free(q->path);
        free(q);
    }
    while (deliveries) {
        delivery_free(deliveries);
    }
    if (events) {
        /* created and never emitted nor discarded, still held after destroy: a plugin leak */
        fprintf(stderr, "fakehost: event type=%s left behind by the plugin\n", events->type);
        abort();
    }
}
