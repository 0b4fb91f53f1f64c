/* Unit tests of host/core/pipeline_test.c: the first difference of two JSON values (equality and
 * subset), reading tests from a configuration's tests: section with positions in every error, and
 * running them: passes, and failures that show expected, got and where. */
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "err.h"
#include "mem.h"
#include "pipeline_test.h"
#include "router.h"

#include "test.h"

static json_t *J(const char *text)
{
    json_error_t e;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &e);
    if (!v) {
        fprintf(stderr, "bad test json: %s: %s\n", text, e.text);
        abort();
    }
    return v;
}

typedef struct diff_case {
    const char *want, *got; /* got NULL: missing */
    int subset;
    const char *path;       /* NULL: no difference */
    const char *want_at, *got_at; /* compact JSON, NULL: absent */
} diff_case;

static void test_first_diff(void)
{
    static const diff_case cases[] = {
        {"{\"a\": 1}", "{\"a\": 1}", 0, NULL, NULL, NULL},
        {"{\"a\": 1}", "{\"a\": 2}", 0, "/a", "1", "2"},
        {"{\"a\": 1}", "{\"a\": 1.0}", 0, "/a", "1", "1.0"},
        {"{\"a\": {\"b\": [1, {\"c\": \"x\"}]}}", "{\"a\": {\"b\": [1, {\"c\": \"y\"}]}}", 0,
         "/a/b/1/c", "\"x\"", "\"y\""},
        {"{\"a\": 1}", "{\"a\": 1, \"b\": 2}", 0, "/b", NULL, "2"},
        {"{\"a\": 1}", "{\"a\": 1, \"b\": 2}", 1, NULL, NULL, NULL},
        {"{\"a\": 1, \"b\": 2}", "{\"a\": 1}", 1, "/b", "2", NULL},
        {"[1, 2]", "[1, 2, 3]", 1, "/2", NULL, "3"},
        {"[1, 2, 3]", "[1, 2]", 0, "/2", "3", NULL},
        {"{\"a/b~c\": 1}", "{}", 0, "/a~1b~0c", "1", NULL},
        {"\"s\"", NULL, 0, "", "\"s\"", NULL},
        {"{}", "[]", 1, "", "{}", "[]"},
        {"{\"n\": null}", "{\"n\": null}", 0, NULL, NULL, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const diff_case *c = &cases[i];
        json_t *want = J(c->want), *got = c->got ? J(c->got) : NULL;
        char path[128];
        const json_t *w = NULL, *g = NULL;
        int d = px_json_first_diff(want, got, c->subset, path, sizeof(path), &w, &g);
        char *ws = w ? json_dumps(w, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
        char *gs = g ? json_dumps(g, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
        int ok = d == (c->path != NULL) && (!c->path || strcmp(path, c->path) == 0) &&
                 ((!ws && !c->want_at) || (ws && c->want_at && !strcmp(ws, c->want_at))) &&
                 ((!gs && !c->got_at) || (gs && c->got_at && !strcmp(gs, c->got_at)));
        if (!ok) {
            fprintf(stderr, "case %zu: diff=%d path=%s want_at=%s got_at=%s\n", i, d,
                    d ? path : "-", ws ? ws : "-", gs ? gs : "-");
        }
        free(ws);
        free(gs);
        json_decref(want);
        json_decref(got);
        PX_ASSERT(ok);
    }
}

static const char *CONFIG =
    "version: 1\n"
    "plugins:\n"
    "  web: { plugin: webhook }\n"
    "  crm: { plugin: file }\n"
    "pipelines:\n"
    "  - name: leads\n"
    "    from: web\n"
    "    when: { type: lead.* }\n"
    "    to:\n"
    "      sink: crm\n"
    "      action: create\n"
    "      with: { name: \"{{/name}}\", email: \"{{/email?}}\" }\n"
    "tests:\n";

static char errbuf[1024];

/* Parses CONFIG + tests_yaml; returns the tests (and the config and router in *cfg, *r) or fails
 * with the message in errbuf. */
static int load(const char *tests_yaml, px_config **cfg, px_router **r, px_ptest_list *list)
{
    char *text = px_xasprintf("%s%s", CONFIG, tests_yaml);
    errbuf[0] = '\0';
    int rc = px_config_parse("t.yaml", text, strlen(text), cfg, errbuf, sizeof(errbuf));
    free(text);
    if (rc < 0) {
        return rc;
    }
    rc = px_router_create(*cfg, r, errbuf, sizeof(errbuf));
    if (rc < 0) {
        return rc;
    }
    return px_ptest_parse((*cfg)->path, (*cfg)->tests, *cfg, 1000, list, errbuf, sizeof(errbuf));
}

static const char *load_err(const char *tests_yaml)
{
    px_config *cfg = NULL;
    px_router *r = NULL;
    px_ptest_list list = {0};
    int rc = load(tests_yaml, &cfg, &r, &list);
    px_ptest_list_clear(&list);
    px_router_destroy(r);
    px_config_destroy(cfg);
    return rc < 0 ? errbuf : "(no error)";
}

static void test_parse_errors(void)
{
    PX_ASSERT_STR_EQ(load_err("  - name: a\n    event: { source: web, typ: lead.new }\n"
                              "    expect: { no_route: true }\n"),
                     "t.yaml:15:27: unknown key \"typ\" in the event, did you mean \"type\"?");
    PX_ASSERT_STR_EQ(load_err("  - name: a\n    event: { source: wbe }\n"
                              "    expect: { no_route: true }\n"),
                     "t.yaml:15:22: source \"wbe\": t.yaml has no such instance, did you mean "
                     "\"web\"?");
    PX_ASSERT_STR_EQ(load_err("  - name: a\n    event: { source: web }\n"
                              "    expect: { targets: [{ pipeline: lead }] }\n"),
                     "t.yaml:16:37: pipeline \"lead\": t.yaml has no such pipeline, did you mean "
                     "\"leads\"?");
    PX_ASSERT_STR_EQ(load_err("  - name: a\n    event: { source: web }\n"),
                     "t.yaml:14:5: missing required key \"expect\" in a test (\"a\")");
    PX_ASSERT_STR_EQ(load_err("  - name: a\n    event: { source: web }\n    expect: {}\n"),
                     "t.yaml:16:13: expect: say what must happen: no_route: true, pipelines: "
                     "[...] or targets: [...]");
    PX_ASSERT_STR_EQ(load_err("  - name: a\n    event: { source: web, time: soon }\n"
                              "    expect: { no_route: true }\n"),
                     "t.yaml:15:33: event.time: expected an integer (unix milliseconds)");
    PX_ASSERT_STR_EQ(load_err("  - name: a\n    event: { source: web }\n"
                              "    expect: { targets: [{ sink: crm, error: /x, with: {} }] }\n"),
                     "t.yaml:16:55: a target expects either a mapping error or a mapped with:, "
                     "not both");
    PX_ASSERT_STR_EQ(load_err("  name: a\n"), "t.yaml:14:3: tests: expected a list of tests, "
                                               "got a mapping");
}

/* Runs the only test of tests_yaml; returns 0 pass / 1 fail, the report in *report. */
static int run_one(const char *tests_yaml, char **report)
{
    px_config *cfg = NULL;
    px_router *r = NULL;
    px_ptest_list list = {0};
    int rc = load(tests_yaml, &cfg, &r, &list);
    if (rc < 0 || list.n != 1) {
        fprintf(stderr, "load: %s\n", errbuf);
        rc = -1;
    } else {
        rc = px_ptest_run(r, &list.v[0], report);
    }
    px_ptest_list_clear(&list);
    px_router_destroy(r);
    px_config_destroy(cfg);
    return rc;
}

/* The test of event ev with expect: expect; the report (of a failure) replaces *rep. */
static int run_expect(const char *ev, const char *expect, char **rep)
{
    char *t = px_xasprintf("%s    expect: %s\n", ev, expect);
    free(*rep);
    *rep = NULL;
    int rc = run_one(t, rep);
    free(t);
    return rc;
}

static void test_run(void)
{
    char *rep = NULL;
    const char *ev = "  - name: a\n"
                     "    event: { source: web, type: lead.new, payload: { name: Ann } }\n";
#define RUN(expect) run_expect(ev, (expect), &rep)
    PX_ASSERT_INT_EQ(RUN("{ pipelines: [leads] }"), 0);
    PX_ASSERT_INT_EQ(RUN("{ targets: [{ sink: crm, action: create, with: { name: Ann, email: null "
                         "} }] }"), 0);
    PX_ASSERT_INT_EQ(RUN("{ targets: [{ pipeline: leads, with_includes: { name: Ann } }] }"), 0);

    PX_ASSERT_INT_EQ(RUN("{ targets: [{ sink: crm, with: { name: Bob, email: null } }] }"), 1);
    PX_ASSERT_STR_EQ(rep, "target leads -> crm: with differs at /name\n  expected: \"Bob\"\n"
                          "  got:      \"Ann\"\n");
    PX_ASSERT_INT_EQ(RUN("{ targets: [{ sink: crm, with_includes: { phone: 1 } }] }"), 1);
    PX_ASSERT_STR_EQ(rep, "target leads -> crm: with does not include the expected value at "
                          "/phone\n  expected: 1\n  got:      (missing)\n");
    PX_ASSERT_INT_EQ(RUN("{ no_route: true }"), 1);
    PX_ASSERT_STR_EQ(rep, "expected no route, got: leads -> crm\n");
    PX_ASSERT_INT_EQ(RUN("{ targets: [] }"), 1);
    PX_ASSERT_STR_EQ(rep, "unexpected target leads -> crm (not in expect.targets)\n");
    PX_ASSERT_INT_EQ(RUN("{ targets: [{ sink: crm, error: /name }] }"), 1);
    PX_ASSERT_STR_HAS(rep, "target leads -> crm: expected a mapping error at /name, the mapping "
                           "succeeded");
    free(rep);
    rep = NULL;

    /* a mapping error, expected by pointer, by field, or not expected */
    ev = "  - name: a\n    event: { source: web, type: lead.new, payload: {} }\n";
    PX_ASSERT_INT_EQ(RUN("{ targets: [{ sink: crm, error: /name }] }"), 0);
    PX_ASSERT_INT_EQ(RUN("{ targets: [{ sink: crm, error: with.name }] }"), 0);
    PX_ASSERT_INT_EQ(RUN("{ targets: [{ sink: crm, error: /email }] }"), 1);
    PX_ASSERT_STR_EQ(rep, "target leads -> crm: mapping error\n  expected: at /email\n"
                          "  got:      with.name: missing /name\n");
    PX_ASSERT_INT_EQ(RUN("{ targets: [{ sink: crm }] }"), 1);
    PX_ASSERT_STR_EQ(rep, "target leads -> crm: mapping failed: with.name: missing /name\n");

    /* no route, and the reason an expected pipeline did not take the event */
    ev = "  - name: a\n    event: { source: web, type: deal.new }\n";
    PX_ASSERT_INT_EQ(RUN("{ no_route: true }"), 0);
    PX_ASSERT_INT_EQ(RUN("{ pipelines: [leads] }"), 1);
    PX_ASSERT_STR_EQ(rep, "pipelines taking the event differ at /0\n  expected: [\"leads\"]\n"
                          "  got:      []\n  leads: type \"deal.new\" is not \"lead.*\"\n");
    PX_ASSERT_INT_EQ(RUN("{ targets: [{ sink: crm }] }"), 1);
    PX_ASSERT_STR_EQ(rep, "expected target * -> crm (line 16) was not routed; routed: none\n");
#undef RUN
    free(rep);
}

PX_TEST_MAIN(PX_TEST(test_first_diff), PX_TEST(test_parse_errors), PX_TEST(test_run))
