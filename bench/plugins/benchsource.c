/* benchsource: a source for bench/spool.sh. Emits `count` events, each parsed afresh from the
 * text of `payload_file` (as a queue consumer parses every message it receives), keeping at most
 * `window` emits waiting for their persisted callback. A refused emit (back-pressure) is emitted
 * again later. Logs "bench source start mono_ns=..." at the first emit and "bench source done
 * acked=... refused=... mono_ns=..." once every event is persisted. With `as_text`, the text is
 * handed to the host unparsed (event_create_text, as the webhook does). With `vary_digits`, each
 * event gets its own digits (all but the first of each run of digits are drawn anew), so ids,
 * numbers and dates differ from event to event as in real traffic, and the JSON stays valid. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <plexus/sdk.h>

static const px_host_api *host;

typedef struct bsrc {
    px_plugin_ctx *ctx;
    char *text, *varied;
    size_t len;
    int vary, as_text;
    uint64_t rng;
    const char *type;
    int64_t count, window, emitted, acked, refused, outstanding;
    int started, stopped;
    px_timer *tick;
} bsrc;

static const px_option options[] = {
    {"payload_file", PX_OPT_STRING, PX_OPT_REQUIRED, NULL, "JSON text of every event"},
    {"count", PX_OPT_INT, 0, "200000", "events to emit"},
    {"window", PX_OPT_INT, 0, "2048", "emits waiting for their persisted callback at most"},
    {"type", PX_OPT_STRING, 0, "bench.event", "event type"},
    {"as_text", PX_OPT_BOOL, 0, "false", "hand the host the text (event_create_text), unparsed"},
    {"vary_digits", PX_OPT_BOOL, 0, "false",
     "draw each event's digits anew (not the first of a run)"},
    {NULL, 0, 0, NULL, NULL},
};

static long long mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void on_persisted(int status, void *arg)
{
    bsrc *s = arg;
    s->outstanding--;
    if (status < 0) {
        s->refused++;
        s->emitted--; /* not kept: emit it again */
        return;
    }
    if (++s->acked == s->count) {
        host->log(s->ctx, PX_LOG_INFO, "bench source done acked=%lld refused=%lld mono_ns=%lld",
                  (long long)s->acked, (long long)s->refused, mono_ns());
    }
}

/* The payload's text for the next event: the file's, or a copy with its digits drawn anew. */
static const char *next_text(bsrc *s)
{
    if (!s->vary) {
        return s->text;
    }
    for (size_t i = 0; i < s->len; i++) {
        char c = s->text[i];
        if (i > 0 && c >= '0' && c <= '9' && s->text[i - 1] >= '0' && s->text[i - 1] <= '9') {
            s->rng ^= s->rng << 13; /* xorshift64 */
            s->rng ^= s->rng >> 7;
            s->rng ^= s->rng << 17;
            c = (char)('0' + s->rng % 10);
        }
        s->varied[i] = c;
    }
    return s->varied;
}

static void on_tick(void *arg)
{
    bsrc *s = arg;
    while (!s->stopped && s->emitted < s->count && s->outstanding < s->window) {
        json_error_t err;
        const char *text = next_text(s);
        int as_text = s->as_text && PX_HAS(px_host_api, host, event_create_text);
        json_t *p = as_text ? NULL : json_loadb(text, s->len, 0, &err);
        if (!as_text && !p) {
            host->log(s->ctx, PX_LOG_ERROR, "payload does not parse: %s", err.text);
            s->stopped = 1;
            return;
        }
        if (!s->started) {
            s->started = 1;
            host->log(s->ctx, PX_LOG_INFO, "bench source start mono_ns=%lld", mono_ns());
        }
        px_event *ev;
        if (as_text) {
            ev = host->event_create_text(s->ctx, s->type, text, s->len, 0, &err);
        } else {
            ev = host->event_create(s->ctx, s->type, p);
            if (ev) {
                host->event_set_raw(ev, text, s->len);
            }
        }
        if (!ev || host->emit(s->ctx, ev, on_persisted, s) < 0) {
            s->refused++;
            return; /* back-pressure: next tick */
        }
        s->emitted++;
        s->outstanding++;
    }
}

static int src_init(px_plugin_ctx *ctx, const json_t *cfg, void **state)
{
    const char *path = json_string_value(json_object_get(cfg, "payload_file"));
    FILE *f = fopen(path, "rb");
    if (!f) {
        host->log(ctx, PX_LOG_ERROR, "cannot open payload_file=%s", path);
        return PX_EINVAL;
    }
    bsrc *s = calloc(1, sizeof(*s));
    s->ctx = ctx;
    fseek(f, 0, SEEK_END);
    s->len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    s->text = malloc(s->len + 1);
    s->len = fread(s->text, 1, s->len, f);
    fclose(f);
    s->count = json_integer_value(json_object_get(cfg, "count"));
    s->window = json_integer_value(json_object_get(cfg, "window"));
    s->type = strdup(json_string_value(json_object_get(cfg, "type")));
    s->vary = json_is_true(json_object_get(cfg, "vary_digits"));
    s->as_text = json_is_true(json_object_get(cfg, "as_text"));
    s->varied = malloc(s->len + 1);
    s->rng = 0x9e3779b97f4a7c15ull;
    *state = s;
    return 0;
}

static int src_start(void *state)
{
    bsrc *s = state;
    return host->timer_start(s->ctx, 0, 1, on_tick, s, &s->tick);
}

static void src_stop(void *state)
{
    bsrc *s = state;
    s->stopped = 1;
    if (s->tick) {
        host->timer_stop(s->tick);
        s->tick = NULL;
    }
}

static void src_destroy(void *state)
{
    bsrc *s = state;
    src_stop(s);
    free((char *)s->type);
    free(s->text);
    free(s->varied);
    free(s);
}

static const px_plugin_desc desc = {
    PX_PLUGIN_DESC_INIT,
    .kind = PX_KIND_SOURCE,
    .name = "benchsource",
    .version = "1.0.0",
    .description = "benchmark source: emits parsed copies of one payload",
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
