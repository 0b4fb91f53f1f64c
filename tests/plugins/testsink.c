/* testsink: a sink that records every delivery attempt as a JSON line in `file`
 * ({"event","type","seq","attempt","action","params","tag","outcome","at_ms"}) and can be told to
 * fail (retry or reject), to fail only while `down_file` exists, to answer late (`delay`) or
 * never (`stall`). `tag` marks which build/instance answered. Like the file sink, it cuts a
 * partial last line (the process was killed in the middle of a write) when it opens the file, so
 * every line in it is whole. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <plexus/sdk.h>

#ifndef PX_BUILD_TAG
#define PX_BUILD_TAG "a" /* which build of this plugin answered: reload tests build two */
#endif

static const px_host_api *host;

typedef struct pending {
    struct snk *s;
    px_delivery *d;
    px_timer *timer;
    struct pending *next;
} pending;

typedef struct snk {
    px_plugin_ctx *ctx;
    json_t *cfg; /* a reference: option strings below point into it */
    FILE *out;
    const char *tag, *fail, *down_file;
    int64_t fail_first, delay_ms, retry_after_ms;
    int stall, draining, record_payload;
    pending *pend;
    int64_t attempts_seen;
} snk;

static const px_option options[] = {
    {"file", PX_OPT_STRING, PX_OPT_REQUIRED, NULL, "JSON lines of every delivery attempt"},
    {"tag", PX_OPT_STRING, 0, "", "label written into every line"},
    {"fail", PX_OPT_STRING, 0, "none", "none, retry or reject"},
    {"fail_first", PX_OPT_INT, 0, "0", "answer with `fail` for the first N attempts only"},
    {"down_file", PX_OPT_STRING, 0, NULL, "answer with `fail` while this file exists"},
    {"delay", PX_OPT_DURATION, 0, "0", "complete each delivery after this long"},
    {"retry_after", PX_OPT_DURATION, 0, "0", "retry-after given with retry answers"},
    {"stall", PX_OPT_BOOL, 0, "false", "never complete"},
    {"record_payload", PX_OPT_BOOL, 0, "false", "also write the event payload in each line"},
    {"secret_token", PX_OPT_STRING, PX_OPT_SECRET, NULL, "a secret, for masking tests"},
    {NULL, 0, 0, NULL, NULL},
};

/* Cuts `file` (borrowed) back to just after its last line break. Best effort: a file that cannot
 * be read keeps its tail. */
static void cut_partial_last_line(px_plugin_ctx *ctx, const char *file)
{
    int fd = open(file, O_RDWR | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0) {
            close(fd);
        }
        return;
    }
    char buf[4096];
    off_t end = st.st_size;
    while (end > 0) {
        off_t from = end > (off_t)sizeof buf ? end - (off_t)sizeof buf : 0;
        if (pread(fd, buf, (size_t)(end - from), from) != end - from) {
            end = st.st_size;
            break;
        }
        char *nl = memrchr(buf, '\n', (size_t)(end - from));
        if (nl) {
            end = from + (nl - buf) + 1;
            break;
        }
        end = from;
    }
    if (end < st.st_size && ftruncate(fd, end) != 0) {
        host->log(ctx, PX_LOG_WARN, "cannot cut a partial last line file=%s", file);
    }
    close(fd);
}

static int64_t now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static void record(snk *s, px_delivery *d, const char *outcome)
{
    const px_event *ev = host->delivery_event(d);
    json_t *line = json_object();
    json_object_set_new(line, "event", json_string(host->event_id(ev)));
    json_object_set_new(line, "type", json_string(host->event_type(ev)));
    json_object_set(line, "seq", json_object_get(host->event_payload(ev), "seq")
                                     ? json_object_get(host->event_payload(ev), "seq")
                                     : json_null());
    json_object_set_new(line, "attempt", json_integer(host->delivery_attempt(d)));
    json_object_set_new(line, "action", json_string(host->delivery_action(d)));
    json_object_set_new(line, "pipeline", json_string(host->delivery_pipeline(d)));
    json_object_set(line, "params", host->delivery_params(d));
    if (s->record_payload) {
        json_object_set(line, "payload", host->event_payload(ev));
    }
    json_object_set_new(line, "tag", json_string(s->tag));
    json_object_set_new(line, "build", json_string(PX_BUILD_TAG));
    json_object_set_new(line, "outcome", json_string(outcome));
    json_object_set_new(line, "at_ms", json_integer(now_ms()));
    json_object_set_new(line, "event_ms", json_integer(host->event_time_ms(ev)));
    char *text = json_dumps(line, JSON_COMPACT);
    fprintf(s->out, "%s\n", text);
    fflush(s->out);
    free(text);
    json_decref(line);
}

static void answer(snk *s, px_delivery *d)
{
    s->attempts_seen++;
    int failing = strcmp(s->fail, "none") != 0 &&
                  (s->attempts_seen <= s->fail_first ||
                   (s->down_file && access(s->down_file, F_OK) == 0) ||
                   (!s->fail_first && !s->down_file));
    if (!failing) {
        record(s, d, "ok");
        host->complete(d, PX_OK, "recorded", 0);
    } else if (strcmp(s->fail, "reject") == 0) {
        record(s, d, "reject");
        host->complete(d, PX_EREJECT, "told to reject", 0);
    } else {
        record(s, d, "retry");
        host->complete(d, PX_ERETRY, "told to retry", (uint64_t)s->retry_after_ms);
    }
}

static void unlink_pending(snk *s, pending *p)
{
    for (pending **pp = &s->pend; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
}

static void on_delay(void *arg)
{
    pending *p = arg;
    snk *s = p->s;
    host->timer_stop(p->timer);
    unlink_pending(s, p);
    answer(s, p->d);
    free(p);
    if (s->draining && !s->pend) {
        host->drained(s->ctx);
    }
}

static void snk_deliver(void *state, px_delivery *d)
{
    snk *s = state;
    if (s->stall) {
        record(s, d, "stalled");
        return;
    }
    if (s->delay_ms > 0) {
        pending *p = calloc(1, sizeof(*p));
        p->s = s;
        p->d = d;
        p->next = s->pend;
        s->pend = p;
        host->timer_start(s->ctx, (uint64_t)s->delay_ms, 0, on_delay, p, &p->timer);
        return;
    }
    answer(s, d);
}

static int snk_init(px_plugin_ctx *ctx, const json_t *cfg, void **state)
{
#ifdef PX_INIT_FAILS
    host->log(ctx, PX_LOG_ERROR, "this build refuses to start");
    (void)cfg, (void)state;
    return PX_EINVAL;
#endif
    snk *s = calloc(1, sizeof(*s));
    s->ctx = ctx;
    const char *file = json_string_value(json_object_get(cfg, "file"));
    cut_partial_last_line(ctx, file);
    s->out = fopen(file, "a");
    if (!s->out) {
        host->log(ctx, PX_LOG_ERROR, "cannot open file=%s", file);
        free(s);
        return PX_EINVAL;
    }
    s->cfg = json_incref((json_t *)cfg);
    s->tag = json_string_value(json_object_get(cfg, "tag"));
    s->fail = json_string_value(json_object_get(cfg, "fail"));
    s->down_file = json_string_value(json_object_get(cfg, "down_file"));
    s->fail_first = json_integer_value(json_object_get(cfg, "fail_first"));
    s->delay_ms = json_integer_value(json_object_get(cfg, "delay"));
    s->retry_after_ms = json_integer_value(json_object_get(cfg, "retry_after"));
    s->stall = json_is_true(json_object_get(cfg, "stall"));
    s->record_payload = json_is_true(json_object_get(cfg, "record_payload"));
    const char *secret = json_string_value(json_object_get(cfg, "secret_token"));
    if (secret) {
        host->log(ctx, PX_LOG_INFO, "configured with token %s", secret);
    }
    *state = s;
    return 0;
}

static void snk_drain(void *state)
{
    snk *s = state;
    s->draining = 1;
    if (!s->pend) {
        host->drained(s->ctx);
    }
}

static void snk_destroy(void *state)
{
    snk *s = state;
    while (s->pend) {
        pending *p = s->pend;
        s->pend = p->next;
        host->timer_stop(p->timer);
        free(p);
    }
    fclose(s->out);
    json_decref(s->cfg);
    free(s);
}

static px_plugin_desc desc = {
    PX_PLUGIN_DESC_INIT,
    .kind = PX_KIND_SINK,
    .name = "testsink",
    .version = "1.0.0",
    .description = "test sink: records deliveries, fails or stalls on demand",
    .options = options,
    .init = snk_init,
    .deliver = snk_deliver,
    .drain = snk_drain,
    .destroy = snk_destroy,
};

PX_SDK_EXPORT const px_plugin_desc *PX_PLUGIN_ENTRY(const px_host_api *h)
{
    host = h;
#ifdef PX_WRONG_MAJOR
    desc.abi_major = PX_SDK_ABI_MAJOR + 1;
#endif
    return &desc;
}
