/* The real runtime around a fuzzed plugin (see fuzzhost.h). */
#include "fuzzhost.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <uv.h>

#include "api.h"
#include "config.h"
#include "http_client.h"
#include "http_server.h"
#include "instance.h"
#include "lifecycle.h"
#include "loader.h"
#include "log.h"
#include "mem.h"
#include "runtime.h"
#include "store.h"

#define INSTANCE "fuzzed"
#define SOURCE_PLUGIN "fuzz_source"
#define SINK_PLUGIN "fuzz_sink"
#define WAIT_MS 2000     /* bound for a route call or a delivery to reach the plugin */
#define CLOSE_MS 10000   /* bound for the shutdown */
#define PUMP_ITERATIONS 4 /* loop iterations per half round */
#define STOP_ROUNDS 4    /* rounds with timers fired during the shutdown */

typedef struct fcall { /* px_http_call as the plugin sees it: answered from the input */
    px_plugin_ctx *gen;
    px_http_response_cb cb;
    void *arg;
    int done, cancelled, orphan;
    struct fcall *next;
} fcall;

struct px_http_response { /* the answers of this host: never the client's */
    const char *const *headers;
    const char *body;
    size_t len;
};

typedef struct froute { /* a route the plugin registered */
    char *method, *path;
    px_http_handler cb;
    void *arg;
    struct froute *next;
} froute;

typedef struct fout { /* a route call in flight: outlives the input when unanswered */
    unsigned long serial;
} fout;

typedef struct fbusy {
    px_store_put_cb cb;
    void *arg;
} fbusy;

static struct {
    uv_loop_t loop;
    uv_timer_t deadline;
    int deadline_hit;
    char dir[64];
    px_http_client *client;
    px_host_api real, api;
    const char *plugin;
    const px_plugin_desc *desc;
    const char *const *actions;
    px_runtime *rt;
    int closed;
    px_plugin_ctx *source;
    unsigned long serial;   /* the input being run */
    size_t outstanding;     /* route calls not answered yet */
    size_t reached, answered, delivered;
    fcall *calls;
    froute *routes;
    const px_store_ops *memory_ops;
    px_store_ops busy_ops;
    px_store busy_store;
} fh;

/* --- Running the loop ---------------------------------------------------------------------- */

static void on_deadline(uv_timer_t *t)
{
    (void)t;
    fh.deadline_hit = 1;
}

/* Runs the loop until *counter passes `from` or ms elapsed. */
static void run_until(const size_t *counter, size_t from, uint64_t ms)
{
    fh.deadline_hit = 0;
    uv_update_time(&fh.loop);
    uv_timer_start(&fh.deadline, on_deadline, ms, 0);
    while (*counter <= from && !fh.deadline_hit) {
        uv_run(&fh.loop, UV_RUN_ONCE);
    }
    uv_timer_stop(&fh.deadline);
}

/* Runs cancelled calls' callbacks, as the client would on a later iteration. */
static void finish_cancelled(void)
{
    for (fcall *c = fh.calls; c; c = c->next) {
        if (c->cancelled && !c->done && !c->orphan) {
            c->done = 1;
            c->cb(UV_ECANCELED, NULL, "cancelled", c->arg);
        }
    }
}

static void pump(void)
{
    for (int i = 0; i < PUMP_ITERATIONS; i++) {
        uv_run(&fh.loop, UV_RUN_NOWAIT);
        finish_cancelled();
    }
}

void fh_run(int rounds)
{
    for (int r = 0; r < rounds && fh.rt; r++) {
        pump();
        px_runtime_fire_timers(fh.rt);
        pump();
    }
}

/* --- The host table over the real one ------------------------------------------------------ */

static void on_route(px_http_request *req, void *arg)
{
    froute *r = arg;
    fh.reached++;
    r->cb(req, r->arg);
}

static int fh_http_route(px_plugin_ctx *ctx, const char *method, const char *path,
                         uint32_t flags, px_http_handler cb, void *arg)
{
    if (!path || !cb) {
        return fh.real.http_route(ctx, method, path, flags, cb, arg);
    }
    froute *r = px_xcalloc(1, sizeof(*r));
    r->method = method ? px_xstrdup(method) : NULL;
    r->path = px_xstrdup(path);
    r->cb = cb;
    r->arg = arg;
    int rc = fh.real.http_route(ctx, method, path, flags, on_route, r);
    r->next = fh.routes;
    fh.routes = r;
    return rc;
}

static int fh_http_request(px_plugin_ctx *ctx, const px_http_options *opt,
                           px_http_response_cb cb, void *arg, px_http_call **out)
{
    if (!ctx || !opt || !cb || !opt->url) {
        return PX_EINVAL;
    }
    if (opt->body && opt->body_len) {
        volatile char last = opt->body[opt->body_len - 1]; /* the whole body must be readable */
        (void)last;
    }
    fcall *c = px_xcalloc(1, sizeof(*c));
    c->gen = ctx;
    c->cb = cb;
    c->arg = arg;
    c->next = fh.calls;
    fh.calls = c;
    if (out) {
        *out = (px_http_call *)c;
    }
    return 0;
}

static void fh_http_cancel(px_http_call *call)
{
    fcall *c = (fcall *)call;
    if (c && !c->done) {
        c->cancelled = 1; /* its callback runs on the next iteration */
    }
}

static const char *fh_resp_header(const px_http_response *resp, const char *name)
{
    for (const char *const *h = resp ? resp->headers : NULL; h && *h; h++) {
        const char *colon = strchr(*h, ':');
        if (colon && (size_t)(colon - *h) == strlen(name) &&
            strncasecmp(*h, name, strlen(name)) == 0) {
            const char *v = colon + 1;
            while (*v == ' ') {
                v++;
            }
            return v;
        }
    }
    return NULL;
}

static const char *fh_resp_body(const px_http_response *resp, size_t *len)
{
    if (len) {
        *len = resp ? resp->len : 0;
    }
    return resp ? resp->body : "";
}

size_t fh_answer_calls(int status, const char *const *headers, const char *body, size_t len)
{
    /* answer the calls open now; calls the callbacks start wait for the next round */
    fcall *open[64];
    size_t nopen = 0;
    for (fcall *c = fh.calls; c && nopen < 64; c = c->next) {
        if (!c->done && !c->orphan) {
            open[nopen++] = c;
        }
    }
    char *copy = px_xmalloc(len + 1); /* NUL-terminated, as the real client hands out */
    memcpy(copy, body, len);
    copy[len] = '\0';
    for (size_t i = 0; i < nopen; i++) {
        fcall *c = open[i];
        if (c->done || c->orphan) {
            continue;
        }
        c->done = 1;
        if (c->cancelled) {
            c->cb(UV_ECANCELED, NULL, "cancelled", c->arg);
        } else if (status < 0) {
            c->cb(UV_ECONNREFUSED, NULL, "connection refused", c->arg);
        } else {
            px_http_response resp = {.headers = headers, .body = copy, .len = len};
            c->cb(status, &resp, NULL, c->arg);
        }
    }
    free(copy);
    return nopen;
}

/* What the runtime tells of the plugin's life: deliveries handed over, generations gone. */
static void on_watch(void *arg, px_plugin_ctx *gen, const char *call, const void *what,
                     int after, int rc)
{
    (void)arg, (void)what, (void)rc;
    if (strcmp(gen->inst->name, INSTANCE) != 0) {
        return;
    }
    if (strcmp(call, "deliver") == 0 && !after) {
        fh.delivered++;
    } else if (strcmp(call, "destroy") == 0 && !after) {
        /* as the real client does before a generation goes: its calls end as cancelled */
        for (fcall *c = fh.calls; c; c = c->next) {
            if (c->gen == gen && !c->done && !c->orphan) {
                c->done = 1;
                c->cb(UV_ECANCELED, NULL, "cancelled", c->arg);
            }
        }
    } else if (strcmp(call, "destroy") == 0 && after) {
        for (fcall *c = fh.calls; c; c = c->next) {
            if (c->gen == gen) {
                c->orphan = 1; /* the host frees what a destroyed plugin left */
            }
        }
    }
}

/* --- The host's own source and sink ---------------------------------------------------------- */

static int src_init(px_plugin_ctx *ctx, const json_t *config, void **state)
{
    (void)config;
    fh.source = ctx;
    *state = ctx;
    return 0;
}

static void src_destroy(void *state)
{
    (void)state;
    fh.source = NULL;
}

static const px_plugin_desc src_desc = {
    PX_PLUGIN_DESC_INIT,
    .kind = PX_KIND_SOURCE,
    .name = SOURCE_PLUGIN,
    .version = "1",
    .description = "the fuzz host's source of deliveries",
    .init = src_init,
    .destroy = src_destroy,
};

static const px_plugin_desc *src_entry(const px_host_api *api)
{
    (void)api;
    return &src_desc;
}

static int sink_init(px_plugin_ctx *ctx, const json_t *config, void **state)
{
    (void)config;
    *state = ctx;
    return 0;
}

static void sink_deliver(void *state, px_delivery *d)
{
    (void)state;
    fh.real.complete(d, PX_OK, NULL, 0);
}

static void sink_destroy(void *state)
{
    (void)state;
}

static const px_plugin_desc sink_desc = {
    PX_PLUGIN_DESC_INIT,
    .kind = PX_KIND_SINK,
    .name = SINK_PLUGIN,
    .version = "1",
    .description = "the fuzz host's sink for the plugin's emits",
    .init = sink_init,
    .deliver = sink_deliver,
    .destroy = sink_destroy,
};

static const px_plugin_desc *sink_entry(const px_host_api *api)
{
    (void)api;
    return &sink_desc;
}

/* --- The store at the edge ----------------------------------------------------------------- */

static void on_busy_put(int status, void *arg)
{
    fbusy *b = arg;
    (void)status;
    b->cb(PX_EBUSY, b->arg);
    free(b);
}

/* Every put fails at its commit, as on a full disk. */
static int busy_put(void *impl, const px_store_event *ev, px_store_row *rows, size_t n,
                    px_store_put_cb cb, void *arg)
{
    fbusy *b = px_xmalloc(sizeof(*b));
    *b = (fbusy){cb, arg};
    int rc = fh.memory_ops->put(impl, ev, rows, n, on_busy_put, b);
    if (rc < 0) {
        free(b);
    }
    return rc;
}

static px_store *edge_store(int busy)
{
    px_store *mem = NULL;
    if (px_store_open_memory(&fh.loop, NULL, &mem) < 0) {
        abort();
    }
    if (!busy) {
        return mem;
    }
    fh.memory_ops = mem->ops;
    fh.busy_ops = *mem->ops;
    fh.busy_ops.put = busy_put;
    fh.busy_store = (px_store){.ops = &fh.busy_ops, .impl = mem->impl};
    return &fh.busy_store;
}

/* --- Set-up and one input ------------------------------------------------------------------ */

static void remove_dir(void)
{
    char path[96];
    snprintf(path, sizeof(path), "%s/plugins", fh.dir);
    rmdir(path);
    rmdir(fh.dir);
}

const px_plugin_desc *fh_setup(const char *plugin,
                               const px_plugin_desc *(*entry)(const px_host_api *host),
                               const char *const *actions)
{
    signal(SIGPIPE, SIG_IGN);
    px_log_set_level(-1);
    fh.plugin = plugin;
    fh.actions = actions;
    uv_loop_init(&fh.loop);
    uv_timer_init(&fh.loop, &fh.deadline);
    snprintf(fh.dir, sizeof(fh.dir), "/tmp/plexus-fuzz-XXXXXX");
    if (!mkdtemp(fh.dir) || px_http_client_create(&fh.loop, &fh.client) < 0) {
        abort();
    }
    atexit(remove_dir);
    px_api_init(&fh.real);
    fh.api = fh.real;
    fh.api.http_route = fh_http_route;
    fh.api.http_request = fh_http_request;
    fh.api.http_cancel = fh_http_cancel;
    fh.api.http_resp_header = fh_resp_header;
    fh.api.http_resp_body = fh_resp_body;
    px_loader_add_builtin(plugin, entry);
    px_loader_add_builtin(SOURCE_PLUGIN, src_entry);
    px_loader_add_builtin(SINK_PLUGIN, sink_entry);
    fh.desc = entry(&fh.api);
    return fh.desc;
}

/* The configuration: the plugin, the host's source with a pipeline per action to the plugin
 * (a sink), the plugin's emits (a source) routed to the host's sink. */
static px_config *build_config(const char *config_json)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    fprintf(f,
            "version: 1\n"
            "host:\n"
            "  data_dir: \"%s\"\n"
            "  http: { listen: \"127.0.0.1:0\" }\n"
            "  admin: { listen: \"\", token: \"\" }\n"
            "  drain_timeout: 200ms\n"
            "plugins:\n"
            "  " INSTANCE ": { plugin: %s }\n"
            "  fuzz-source: { plugin: " SOURCE_PLUGIN " }\n"
            "  fuzz-sink: { plugin: " SINK_PLUGIN " }\n"
            "pipelines:\n"
            "  - { name: emits, from: " INSTANCE ", to: { sink: fuzz-sink }, "
            "retry: { attempts: 1 } }\n",
            fh.dir, fh.plugin);
    for (size_t i = 0; fh.actions && fh.actions[i] && (fh.desc->kind & PX_KIND_SINK); i++) {
        const char *a = fh.actions[i];
        const char *sp = strchr(a, ' ');
        fprintf(f,
                "  - { name: action-%zu, from: fuzz-source, when: { type: \"fuzz.%zu\" }, "
                "to: { sink: " INSTANCE ", action: \"%.*s\", with: %s }, "
                "retry: { attempts: 1 } }\n",
                i, i, (int)(sp - a), a, sp + 1);
    }
    fclose(f);
    px_config *cfg = NULL;
    char err[1024];
    if (px_config_parse("fuzz.yaml", text, len, &cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "fuzzhost: bad configuration: %s\n%s", err, text);
        abort();
    }
    free(text);
    px_instance_conf *ic = (px_instance_conf *)px_config_instance(cfg, INSTANCE);
    json_decref(ic->config);
    ic->config = json_loads(config_json, 0, NULL);
    if (!ic->config) {
        abort();
    }
    return cfg;
}

static void on_close(void *arg)
{
    (void)arg;
    fh.closed = 1;
}

static int closed(void)
{
    return fh.closed && fh.rt->gens.gens_open == 0;
}

static void free_records(void)
{
    while (fh.calls) {
        fcall *c = fh.calls;
        fh.calls = c->next;
        free(c);
    }
    while (fh.routes) {
        froute *r = fh.routes;
        fh.routes = r->next;
        free(r->method);
        free(r->path);
        free(r);
    }
}

/* Closes a runtime that was created (started or not) and frees it. */
static void close_runtime(int rounds_with_timers)
{
    px_runtime_shutdown(fh.rt);
    for (int r = 0; !closed() || fh.outstanding; r++) {
        if (r < rounds_with_timers) {
            fh_run(1);
        } else {
            uv_run(&fh.loop, UV_RUN_ONCE);
        }
        fh_answer_calls(-1, NULL, "", 0);
        if (r > CLOSE_MS) {
            fprintf(stderr, "fuzzhost: the runtime does not close\n");
            abort();
        }
    }
    for (int i = 0; i < PUMP_ITERATIONS; i++) {
        uv_run(&fh.loop, UV_RUN_NOWAIT); /* what closing left to run */
    }
    px_runtime_destroy(fh.rt);
    fh.rt = NULL;
    free_records();
}

int fh_begin(const char *config_json, const char *kv_json, int busy)
{
    fh.serial++;
    fh.closed = 0;
    px_config *cfg = build_config(config_json);
    px_store *store = edge_store(busy);
    json_t *kv = kv_json ? json_loads(kv_json, 0, NULL) : NULL;
    const char *key;
    json_t *value;
    json_object_foreach(kv, key, value) {
        px_store_kv_set(store, INSTANCE, key, value);
    }
    json_decref(kv);
    px_runtime_edges edges = {.store = store, .plugin_api = &fh.api, .watch = on_watch};
    char err[1024];
    if (px_runtime_create_with(&fh.loop, cfg, &edges, &fh.rt, err, sizeof(err)) < 0) {
        fh.rt = NULL;
        uv_run(&fh.loop, UV_RUN_NOWAIT);
        free_records();
        return -1; /* init failed: everything is released */
    }
    fh.rt->on_close = on_close;
    if (px_runtime_start(fh.rt, err, sizeof(err)) < 0) {
        close_runtime(0);
        return -1;
    }
    return 0;
}

/* --- Route calls and deliveries -------------------------------------------------------------- */

static void on_answer(int status, const px_http_response *resp, const char *error, void *arg)
{
    (void)status, (void)resp, (void)error;
    fout *o = arg;
    if (o->serial == fh.serial) {
        fh.answered++;
    }
    fh.outstanding--;
    free(o);
}

static void send_request(const char *method, const char *path, const char *const *headers,
                         const char *body, size_t len)
{
    char url[512];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", px_http_server_port(fh.rt->http),
             path);
    fout *o = px_xcalloc(1, sizeof(*o));
    o->serial = fh.serial;
    /* one connection per call: none is left open to a listener of an earlier input */
    const char *hs[16];
    size_t nh = 0;
    for (const char *const *h = headers; h && *h && nh < 14; h++) {
        hs[nh++] = *h;
    }
    hs[nh++] = "Connection: close";
    hs[nh] = NULL;
    px_http_options opt = {.size = sizeof(opt), .method = method, .url = url,
                           .headers = hs, .body = body, .body_len = len,
                           .timeout_ms = WAIT_MS};
    if (px_http_client_request(fh.client, &opt, on_answer, o, NULL) < 0) {
        free(o);
        return;
    }
    fh.outstanding++;
    /* until the plugin has it, or the server answered without it */
    size_t reached = fh.reached, answered = fh.answered;
    fh.deadline_hit = 0;
    uv_update_time(&fh.loop);
    uv_timer_start(&fh.deadline, on_deadline, WAIT_MS, 0);
    while (fh.reached == reached && fh.answered == answered && !fh.deadline_hit) {
        uv_run(&fh.loop, UV_RUN_ONCE);
    }
    uv_timer_stop(&fh.deadline);
}

size_t fh_call_routes(const char *method, const char *path, const char *const *headers,
                      const char *body, size_t len)
{
    if (!fh.rt || !fh.rt->http) {
        return 0;
    }
    if (path) {
        send_request(method ? method : "POST", path, headers, body, len);
        return 1;
    }
    /* every route as registered; the list may change while they run */
    size_t n = 0;
    char *paths[16], *methods[16];
    for (froute *r = fh.routes; r && n < 16; r = r->next) {
        paths[n] = px_xstrdup(r->path);
        methods[n] = px_xstrdup(method ? method : r->method ? r->method : "POST");
        n++;
    }
    for (size_t i = 0; i < n; i++) {
        send_request(methods[i], paths[i], headers, body, len);
        free(paths[i]);
        free(methods[i]);
    }
    return n;
}

void fh_deliver(size_t index)
{
    if (!fh.rt || !fh.source || !(fh.desc->kind & PX_KIND_SINK)) {
        return;
    }
    char type[32];
    snprintf(type, sizeof(type), "fuzz.%zu", index);
    px_event *ev = fh.real.event_create(fh.source, type, json_pack("{s:i}", "seq", 1));
    if (!ev) {
        return;
    }
    size_t delivered = fh.delivered;
    if (fh.real.emit(fh.source, ev, NULL, NULL) < 0) {
        return;
    }
    run_until(&fh.delivered, delivered, WAIT_MS);
}

void fh_end(void)
{
    if (fh.rt) {
        close_runtime(STOP_ROUNDS);
    }
}
