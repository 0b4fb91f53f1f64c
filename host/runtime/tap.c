/* The tap hub (see tap.h): subscribers in a small fixed array, filters on the raw strings, one
 * JSON line built and masked per record only when some subscriber wants it. */
#include "tap.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "clock.h"
#include "err.h"
#include "log.h"
#include "mem.h"

struct px_tap_sub {
    char *pipeline, *sink, *source; /* owned filters; NULL = any */
    uint64_t limit;                 /* 0 = none */
    px_tap_writer w;
    uint64_t written, dropped, dropped_told;
    int done; /* limit reached: nothing more is written */
};

void px_tap_init(px_tap *t, size_t max_backlog)
{
    memset(t, 0, sizeof(*t));
    t->max_backlog = max_backlog ? max_backlog : PX_TAP_MAX_BACKLOG;
}

static void sub_free(px_tap_sub *s)
{
    free(s->pipeline);
    free(s->sink);
    free(s->source);
    free(s);
}

void px_tap_deinit(px_tap *t)
{
    for (size_t i = 0; i < t->nsubs; i++) {
        sub_free(t->subs[i]);
    }
    t->nsubs = 0;
}

static char *dup_or_null(const char *s)
{
    return s && *s ? px_xstrdup(s) : NULL;
}

int px_tap_open(px_tap *t, const px_tap_filter *f, const px_tap_writer *w, px_tap_sub **out)
{
    if (t->nsubs >= PX_TAP_MAX_SUBS) {
        return PX_EBUSY;
    }
    px_tap_sub *s = px_xcalloc(1, sizeof(*s));
    s->pipeline = dup_or_null(f->pipeline);
    s->sink = dup_or_null(f->sink);
    s->source = dup_or_null(f->source);
    s->limit = f->limit;
    s->w = *w;
    t->subs[t->nsubs++] = s;
    *out = s;
    return 0;
}

void px_tap_close(px_tap *t, px_tap_sub *s)
{
    if (!s) {
        return;
    }
    for (size_t i = 0; i < t->nsubs; i++) {
        if (t->subs[i] == s) {
            t->subs[i] = t->subs[--t->nsubs];
            t->subs[t->nsubs] = NULL;
            break;
        }
    }
    sub_free(s);
}

uint64_t px_tap_dropped(const px_tap_sub *s)
{
    return s->dropped;
}

uint64_t px_tap_written(const px_tap_sub *s)
{
    return s->written;
}

/* --- delivery to subscribers --------------------------------------------------------------- */

/* Writes one line to s when it fits its backlog, first telling what was dropped since the last
 * line. Returns 1 when the subscriber reached its limit with this line. */
static int offer(px_tap *t, px_tap_sub *s, const char *line, size_t len)
{
    size_t backlog = s->w.backlog(s->w.arg);
    if (s->dropped > s->dropped_told) {
        char note[96];
        int n = snprintf(note, sizeof(note),
                         "{\"kind\":\"dropped\",\"count\":%llu,\"total\":%llu}\n",
                         (unsigned long long)(s->dropped - s->dropped_told),
                         (unsigned long long)s->dropped);
        if (backlog + (size_t)n + len > t->max_backlog) {
            s->dropped++;
            return 0;
        }
        if (s->w.write(s->w.arg, note, (size_t)n) < 0) {
            return 0;
        }
        s->dropped_told = s->dropped;
        backlog += (size_t)n;
    }
    if (backlog + len > t->max_backlog) {
        s->dropped++;
        return 0;
    }
    if (s->w.write(s->w.arg, line, len) < 0) {
        return 0;
    }
    s->written++;
    if (s->limit && s->written >= s->limit) {
        s->done = 1;
        return 1;
    }
    return 0;
}

/* Sends the record o (stolen) to every subscriber wanted[i] says, then tells the ones that
 * reached their limit (after the loop: their owner closes them, which changes the array). */
static void publish(px_tap *t, json_t *o, const int *wanted)
{
    if (!o) {
        return; /* text jansson refuses (not UTF-8): nothing to show */
    }
    px_log_redact_json(o);
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!text) {
        return;
    }
    size_t len = strlen(text);
    text = px_xrealloc(text, len + 2);
    text[len++] = '\n';
    text[len] = '\0';
    px_tap_sub *finished[PX_TAP_MAX_SUBS];
    size_t nfinished = 0;
    for (size_t i = 0; i < t->nsubs; i++) {
        if (wanted[i] && offer(t, t->subs[i], text, len)) {
            finished[nfinished++] = t->subs[i];
        }
    }
    free(text);
    for (size_t i = 0; i < nfinished; i++) {
        if (finished[i]->w.done) {
            finished[i]->w.done(finished[i]->w.arg);
        }
    }
}

static int same(const char *filter, const char *value)
{
    return !filter || (value && strcmp(filter, value) == 0);
}

/* --- records ------------------------------------------------------------------------------- */

static int routes_have(const px_route *routes, size_t n, const char *pipeline, const char *sink)
{
    for (size_t i = 0; i < n; i++) {
        if (same(pipeline, routes[i].pipeline) && same(sink, routes[i].sink)) {
            return 1;
        }
    }
    return 0;
}

/* Appends s to the array a unless it is there already. */
static void add_unique(json_t *a, const char *s)
{
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v) {
        if (strcmp(json_string_value(v), s) == 0) {
            return;
        }
    }
    json_array_append_new(a, json_string(s));
}

void px_tap_event(px_tap *t, const px_event *ev, const px_route *routes, size_t n)
{
    int wanted[PX_TAP_MAX_SUBS] = {0}, any = 0;
    for (size_t i = 0; i < t->nsubs; i++) {
        const px_tap_sub *s = t->subs[i];
        wanted[i] = !s->done && same(s->source, ev->source) &&
                    ((!s->pipeline && !s->sink) || routes_have(routes, n, s->pipeline, s->sink));
        any |= wanted[i];
    }
    if (any) {
        json_t *pipes = json_array(), *sinks = json_array();
        for (size_t i = 0; i < n; i++) {
            add_unique(pipes, routes[i].pipeline);
            add_unique(sinks, routes[i].sink);
        }
        publish(t, json_pack("{ss sI ss ss ss so so}", "kind", "event", "at",
                             (json_int_t)px_now_ms(), "source", ev->source ? ev->source : "",
                             "type", ev->type ? ev->type : "", "id", ev->id ? ev->id : "",
                             "pipelines", pipes, "sinks", sinks),
                wanted);
    }
    for (size_t i = 0; i < n && px_tap_on(t); i++) {
        if (routes[i].error) {
            char *why = px_xasprintf("mapping: %s", routes[i].error);
            px_tap_delivery(t, ev, routes[i].pipeline, routes[i].sink, routes[i].action, 0, 0,
                            "dead", why, 0);
            free(why);
        }
    }
}

void px_tap_delivery(px_tap *t, const px_event *ev, const char *pipeline, const char *sink,
                     const char *action, int64_t delivery_id, uint32_t attempt,
                     const char *outcome, const char *reason, uint64_t retry_in_ms)
{
    int wanted[PX_TAP_MAX_SUBS] = {0}, any = 0;
    for (size_t i = 0; i < t->nsubs; i++) {
        const px_tap_sub *s = t->subs[i];
        wanted[i] = !s->done && same(s->source, ev->source) && same(s->pipeline, pipeline) &&
                    same(s->sink, sink);
        any |= wanted[i];
    }
    if (!any) {
        return;
    }
    json_t *o = json_pack("{ss sI ss ss ss ss ss ss ss sI si}", "kind", "delivery", "at",
                          (json_int_t)px_now_ms(), "outcome", outcome, "event_id",
                          ev->id ? ev->id : "", "source", ev->source ? ev->source : "", "type",
                          ev->type ? ev->type : "", "pipeline", pipeline ? pipeline : "",
                          "sink", sink ? sink : "", "action", action ? action : "",
                          "delivery_id", (json_int_t)delivery_id, "attempt", (int)attempt);
    if (reason && *reason) {
        json_object_set_new(o, "reason", json_string(reason));
    }
    if (strcmp(outcome, "retry") == 0) {
        json_object_set_new(o, "retry_in_ms", json_integer((json_int_t)retry_in_ms));
    }
    publish(t, o, wanted);
}
