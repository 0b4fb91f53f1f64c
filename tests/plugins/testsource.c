/* testsource: a source driven by tests. Emits `count` events at start (batch per loop turn), and
 * every JSON line appended to `input_file` while it runs. Each payload gets "seq". The outcome of
 * every emit is appended to `ack_file` as "<seq> <event id> <status>" once the host reports it, so
 * a test knows exactly which events were acknowledged. An event the host refuses (back-pressure)
 * is emitted again later with the same seq, as an upstream that was not acknowledged would. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <plexus/sdk.h>

static const px_host_api *host;

typedef struct src {
    px_plugin_ctx *ctx;
    json_t *cfg; /* a reference: option strings below point into it */
    int64_t count, seq, batch;
    const char *type;
    json_t *payload;
    const char *ack_path, *input_path;
    FILE *ack;
    int dedupe;
    px_timer *tick, *poll;
    long input_off;
    int stopped;
    int64_t outstanding;
    struct ack_arg *redo; /* refused emits to send again */
} src;

typedef struct ack_arg {
    src *s;
    int64_t seq;
    char id[64];
    json_t *extra;  /* input_file fields, for a re-emit */
    char *type;
    struct ack_arg *next;
} ack_arg;

static const px_option options[] = {
    {"count", PX_OPT_INT, 0, "0", "events to emit at start"},
    {"type", PX_OPT_STRING, 0, "test.event", "event type"},
    {"payload", PX_OPT_OBJECT, 0, NULL, "fields added to every payload"},
    {"batch", PX_OPT_INT, 0, "200", "events emitted per loop turn"},
    {"start_seq", PX_OPT_INT, 0, "0", "first seq number"},
    {"ack_file", PX_OPT_STRING, 0, NULL, "append '<seq> <id> <status>' per acknowledged emit"},
    {"input_file", PX_OPT_STRING, 0, NULL, "emit each JSON line appended to this file"},
    {"dedupe", PX_OPT_BOOL, 0, "false", "set dedupe key k<seq>"},
    {NULL, 0, 0, NULL, NULL},
};

static void on_tick(void *arg);

static void free_arg(ack_arg *a)
{
    json_decref(a->extra);
    free(a->type);
    free(a);
}

static void on_persisted(int status, void *arg)
{
    ack_arg *a = arg;
    src *s = a->s;
    if (s->ack) {
        fprintf(s->ack, "%lld %s %d\n", (long long)a->seq, a->id, status);
        fflush(s->ack);
    }
    s->outstanding--;
    if (status < 0 && !s->stopped) {
        a->next = s->redo;
        s->redo = a;
        if (!s->tick) {
            host->timer_start(s->ctx, 50, 50, on_tick, s, &s->tick);
        }
        return;
    }
    free_arg(a);
}

static int emit_seq(src *s, json_t *extra, const char *type, int64_t seq);

/* Emits one event with the next seq; returns 0, or < 0 when the host refused it. */
static int emit_one(src *s, json_t *extra, const char *type)
{
    int rc = emit_seq(s, extra, type, s->seq);
    if (rc == 0) {
        s->seq++;
    }
    return rc;
}

/* Sends refused events again; returns < 0 while the host still refuses. */
static int emit_redo(src *s)
{
    while (s->redo) {
        ack_arg *a = s->redo;
        if (emit_seq(s, a->extra, a->type, a->seq) < 0) {
            return -1;
        }
        s->redo = a->next;
        free_arg(a);
    }
    return 0;
}

static int emit_seq(src *s, json_t *extra, const char *type, int64_t seq)
{
    json_t *p = s->payload ? json_deep_copy(s->payload) : json_object();
    if (extra) {
        json_object_update(p, extra);
    }
    json_object_set_new(p, "seq", json_integer(seq));
    px_event *ev = host->event_create(s->ctx, type ? type : s->type, p);
    if (!ev) {
        return -1;
    }
    if (s->dedupe) {
        char key[32];
        snprintf(key, sizeof(key), "k%lld", (long long)seq);
        host->event_set(ev, PX_EVENT_DEDUPE_KEY, key);
    }
    ack_arg *a = calloc(1, sizeof(*a));
    a->s = s;
    a->seq = seq;
    a->extra = extra ? json_incref(extra) : NULL;
    a->type = type ? strdup(type) : NULL;
    snprintf(a->id, sizeof(a->id), "%s", host->event_id(ev));
    int rc = host->emit(s->ctx, ev, on_persisted, a);
    if (rc < 0) {
        free_arg(a);
        return rc;
    }
    s->outstanding++;
    return 0;
}

static void on_tick(void *arg)
{
    src *s = arg;
    if (s->stopped || emit_redo(s) < 0) {
        return;
    }
    for (int64_t i = 0; i < s->batch && s->count > 0; i++) {
        if (emit_one(s, NULL, NULL) < 0) {
            break; /* back-pressure: try again on the next tick */
        }
        s->count--;
    }
    if (s->count <= 0 && !s->redo && s->tick) {
        host->timer_stop(s->tick);
        s->tick = NULL;
    }
}

static void on_poll(void *arg)
{
    src *s = arg;
    if (s->stopped || !s->input_path) {
        return;
    }
    FILE *f = fopen(s->input_path, "r");
    if (!f) {
        return;
    }
    fseek(f, s->input_off, SEEK_SET);
    char line[65536];
    long pos = ftell(f);
    while (fgets(line, sizeof(line), f)) {
        size_t len = strlen(line);
        if (len == 0 || line[len - 1] != '\n') {
            break; /* partial line: read it next time */
        }
        json_t *j = json_loads(line, JSON_DECODE_ANY, NULL);
        if (json_is_object(j)) {
            const char *type = json_string_value(json_object_get(j, "type"));
            char *t = type ? strdup(type) : NULL;
            json_object_del(j, "type");
            if (emit_one(s, j, t) < 0) {
                free(t);
                json_decref(j);
                break;
            }
            free(t);
        }
        json_decref(j);
        pos = ftell(f);
    }
    s->input_off = pos;
    fclose(f);
}

static int src_init(px_plugin_ctx *ctx, const json_t *cfg, void **state)
{
    src *s = calloc(1, sizeof(*s));
    s->ctx = ctx;
    s->count = json_integer_value(json_object_get(cfg, "count"));
    s->cfg = json_incref((json_t *)cfg);
    s->type = json_string_value(json_object_get(cfg, "type"));
    s->batch = json_integer_value(json_object_get(cfg, "batch"));
    s->seq = json_integer_value(json_object_get(cfg, "start_seq"));
    s->dedupe = json_is_true(json_object_get(cfg, "dedupe"));
    json_t *p = json_object_get(cfg, "payload");
    s->payload = json_is_object(p) ? json_incref(p) : NULL;
    s->ack_path = json_string_value(json_object_get(cfg, "ack_file"));
    s->input_path = json_string_value(json_object_get(cfg, "input_file"));
    if (s->ack_path) {
        s->ack = fopen(s->ack_path, "a");
        if (!s->ack) {
            host->log(ctx, PX_LOG_ERROR, "cannot open ack_file %s: %s", s->ack_path,
                      strerror(errno));
            json_decref(s->payload);
            json_decref(s->cfg);
            free(s);
            return PX_EINVAL;
        }
    }
    *state = s;
    return 0;
}

static int src_start(void *state)
{
    src *s = state;
    if (s->count > 0) {
        host->timer_start(s->ctx, 0, 1, on_tick, s, &s->tick);
    }
    if (s->input_path) {
        host->timer_start(s->ctx, 0, 20, on_poll, s, &s->poll);
    }
    return 0;
}

static void src_stop(void *state)
{
    src *s = state;
    s->stopped = 1;
    if (s->tick) {
        host->timer_stop(s->tick);
        s->tick = NULL;
    }
    if (s->poll) {
        host->timer_stop(s->poll);
        s->poll = NULL;
    }
}

static void src_destroy(void *state)
{
    src *s = state;
    src_stop(s);
    while (s->redo) {
        ack_arg *a = s->redo;
        s->redo = a->next;
        free_arg(a);
    }
    if (s->ack) {
        fclose(s->ack);
    }
    json_decref(s->payload);
    json_decref(s->cfg);
    free(s);
}

static const px_plugin_desc desc = {
    PX_PLUGIN_DESC_INIT,
    .kind = PX_KIND_SOURCE,
    .name = "testsource",
    .version = "1.0.0",
    .description = "test source: emits numbered events on demand",
    .options = options,
    .init = src_init,
    .start = src_start,
    .stop = src_stop,
    .destroy = src_destroy,
};

PX_SDK_EXPORT const px_plugin_desc *PX_PLUGIN_ENTRY(const px_host_api *h)
{
    host = h;
    return &desc;
}
