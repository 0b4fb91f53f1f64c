/* Unit tests of the tap hub (host/runtime/tap.c) with a fake writer: filters, the record format,
 * the limit, the bound on a subscriber's backlog (drop, count, tell), masking, and the number of
 * subscribers. */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "err.h"
#include "event.h"
#include "log.h"
#include "mem.h"
#include "tap.h"
#include "test.h"

/* A writer whose reader takes nothing until told: its backlog is what it was given. */
typedef struct fake {
    char lines[64][512];
    size_t n;
    size_t backlog;
    int done;
} fake;

static int fake_write(void *arg, const char *line, size_t len)
{
    fake *f = arg;
    if (f->n < 64) {
        snprintf(f->lines[f->n++], sizeof(f->lines[0]), "%.*s", (int)len, line);
    }
    f->backlog += len;
    return 0;
}

static size_t fake_backlog(void *arg)
{
    return ((fake *)arg)->backlog;
}

static void fake_done(void *arg)
{
    ((fake *)arg)->done = 1;
}

static px_tap_sub *open_sub(px_tap *t, fake *f, const char *pipeline, const char *sink,
                            const char *source, uint64_t limit)
{
    memset(f, 0, sizeof(*f));
    px_tap_filter flt = {pipeline, sink, source, limit};
    px_tap_writer w = {fake_write, fake_backlog, fake_done, f};
    px_tap_sub *s = NULL;
    return px_tap_open(t, &flt, &w, &s) == 0 ? s : NULL;
}

static json_t *line_json(const fake *f, size_t i)
{
    return i < f->n ? json_loads(f->lines[i], 0, NULL) : NULL;
}

static const char *kind(const fake *f, size_t i)
{
    static char buf[32];
    json_t *j = line_json(f, i);
    snprintf(buf, sizeof(buf), "%s", j ? json_string_value(json_object_get(j, "kind")) : "-");
    json_decref(j);
    return buf;
}

static void test_filters_and_format(void)
{
    px_tap t;
    px_tap_init(&t, 0);
    PX_ASSERT(!px_tap_on(&t));
    fake all, by_pipe, by_sink, by_src;
    PX_ASSERT(open_sub(&t, &all, NULL, NULL, NULL, 0));
    PX_ASSERT(open_sub(&t, &by_pipe, "p2", NULL, NULL, 0));
    PX_ASSERT(open_sub(&t, &by_sink, NULL, "crm", NULL, 0));
    PX_ASSERT(open_sub(&t, &by_src, NULL, NULL, "other", 0));
    PX_ASSERT(px_tap_on(&t));
    px_event *ev = px_event_create("web", "lead.new", json_object());
    px_route routes[2] = {{.pipeline = "p1", .sink = "crm", .action = "create"},
                          {.pipeline = "p2", .sink = "mail", .action = "",
                           .error = "with.to: missing /email"}};
    px_tap_event(&t, ev, routes, 2);
    px_tap_delivery(&t, ev, "p1", "crm", "create", 7, 1, "retry", "busy", 250);
    /* everything: the event, the mapping error as a dead delivery, the retry */
    PX_ASSERT_INT_EQ(all.n, 3);
    json_t *e = line_json(&all, 0);
    json_t *want = json_pack("{ss ss ss ss s[ss] s[ss]}", "kind", "event", "source", "web",
                             "type", "lead.new", "id", ev->id, "pipelines", "p1", "p2", "sinks",
                             "crm", "mail");
    json_object_del(e, "at");
    PX_ASSERT(json_equal(e, want));
    json_decref(e);
    json_decref(want);
    json_t *d = line_json(&all, 1);
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(d, "outcome")), "dead");
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(d, "reason")),
                     "mapping: with.to: missing /email");
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(d, "attempt")), 0);
    json_decref(d);
    json_t *r = line_json(&all, 2);
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(r, "outcome")), "retry");
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(r, "retry_in_ms")), 250);
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(r, "delivery_id")), 7);
    json_decref(r);
    /* p2: the event and its dead delivery, not p1's retry */
    PX_ASSERT_INT_EQ(by_pipe.n, 2);
    /* crm: the event and the retry */
    PX_ASSERT_INT_EQ(by_sink.n, 2);
    PX_ASSERT_STR_EQ(kind(&by_sink, 1), "delivery");
    /* another source: nothing */
    PX_ASSERT_INT_EQ(by_src.n, 0);
    px_event_unref(ev);
    px_tap_deinit(&t);
    PX_ASSERT(!px_tap_on(&t));
}

static void test_limit_and_count(void)
{
    px_tap t;
    px_tap_init(&t, 0);
    fake f;
    px_tap_sub *s = open_sub(&t, &f, NULL, NULL, NULL, 2);
    fake g[PX_TAP_MAX_SUBS - 1];
    for (size_t i = 0; i < PX_TAP_MAX_SUBS - 1; i++) {
        PX_ASSERT(open_sub(&t, &g[i], NULL, NULL, NULL, 0));
    }
    fake over;
    PX_ASSERT(open_sub(&t, &over, NULL, NULL, NULL, 0) == NULL);
    px_event *ev = px_event_create("web", "x", json_object());
    for (int i = 0; i < 5; i++) {
        px_tap_delivery(&t, ev, "p", "s", "", i, 1, "ok", "", 0);
    }
    PX_ASSERT_INT_EQ(f.n, 2);
    PX_ASSERT(f.done);
    PX_ASSERT_INT_EQ(px_tap_written(s), 2);
    PX_ASSERT_INT_EQ(g[0].n, 5);
    px_tap_close(&t, s);
    PX_ASSERT_INT_EQ(t.nsubs, PX_TAP_MAX_SUBS - 1);
    PX_ASSERT(open_sub(&t, &over, NULL, NULL, NULL, 0) != NULL);
    px_event_unref(ev);
    px_tap_deinit(&t);
}

/* A reader that takes nothing: lines beyond the bound are dropped and counted; once it has
 * read, the next line is preceded by how many were dropped. */
static void test_backlog_bound(void)
{
    px_tap t;
    px_tap_init(&t, 1000);
    fake f;
    px_tap_sub *s = open_sub(&t, &f, NULL, NULL, NULL, 0);
    px_event *ev = px_event_create("web", "x", json_object());
    for (int i = 0; i < 40; i++) {
        px_tap_delivery(&t, ev, "p", "s", "", i, 1, "ok", "", 0);
    }
    size_t kept = f.n;
    PX_ASSERT(kept > 0 && kept < 40);
    PX_ASSERT(f.backlog <= 1000);
    PX_ASSERT_INT_EQ(px_tap_dropped(s), 40 - kept);
    f.backlog = 0; /* the reader caught up */
    px_tap_delivery(&t, ev, "p", "s", "", 99, 1, "ok", "", 0);
    PX_ASSERT_INT_EQ(f.n, kept + 2);
    json_t *note = line_json(&f, kept);
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(note, "kind")), "dropped");
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(note, "count")), 40 - kept);
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(note, "total")), 40 - kept);
    json_decref(note);
    PX_ASSERT_STR_EQ(kind(&f, kept + 1), "delivery");
    px_event_unref(ev);
    px_tap_deinit(&t);
}

static void test_secrets_masked(void)
{
    px_log_add_secret("tap-secret-value-9");
    px_tap t;
    px_tap_init(&t, 0);
    fake f;
    PX_ASSERT(open_sub(&t, &f, NULL, NULL, NULL, 0));
    px_event *ev = px_event_create("web", "x", json_object());
    px_tap_delivery(&t, ev, "p", "s", "", 1, 1, "retry", "401 for key tap-secret-value-9", 5);
    PX_ASSERT_INT_EQ(f.n, 1);
    PX_ASSERT(strstr(f.lines[0], "tap-secret-value-9") == NULL);
    PX_ASSERT_STR_HAS(f.lines[0], "401 for key ***");
    px_event_unref(ev);
    px_tap_deinit(&t);
    px_log_clear_secrets();
}

PX_TEST_MAIN(PX_TEST(test_filters_and_format), PX_TEST(test_limit_and_count),
             PX_TEST(test_backlog_bound), PX_TEST(test_secrets_masked))
