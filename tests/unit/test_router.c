/* Unit tests of the router (host/core/router.c): type globs, conditions, `from`, fan-out order, per
 * target mapping errors, and that a router outlives the config it was built from. Configs are
 * built by hand here, independent of the YAML loader. */
#include "../../host/core/mapping.c"
#include "../../host/core/router.c"
#include "../../host/core/route_explain.c"

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

/* A hand-built config: everything on the heap, so that freeing it after px_router_create proves
 * (under the address sanitizer) that the router kept nothing of it. */
static px_config *cfg_new(void)
{
    px_config *c = px_xcalloc(1, sizeof(*c));
    c->path = px_xstrdup("plexus.yaml");
    c->version = 1;
    c->pipelines = px_xcalloc(8, sizeof(*c->pipelines));
    return c;
}

static px_pipeline_conf *cfg_pipe(px_config *c, const char *name, const char *from)
{
    px_pipeline_conf *p = &c->pipelines[c->npipelines++];
    p->name = px_xstrdup(name);
    p->from = px_xstrdup(from);
    p->types = px_xcalloc(8, sizeof(*p->types));
    p->conds = px_xcalloc(8, sizeof(*p->conds));
    p->to = px_xcalloc(8, sizeof(*p->to));
    p->retry.attempts = 10;
    return p;
}

static void pipe_type(px_pipeline_conf *p, const char *glob)
{
    p->types[p->ntypes++] = px_xstrdup(glob);
}

static void pipe_cond(px_pipeline_conf *p, const char *pointer, int op, const char *value)
{
    px_cond *c = &p->conds[p->nconds++];
    c->pointer = px_xstrdup(pointer);
    c->op = op;
    c->value = value ? J(value) : NULL;
}

/* with: JSON text, or NULL for "not given". */
static void pipe_to(px_pipeline_conf *p, const char *sink, const char *action, const char *with)
{
    px_target *t = &p->to[p->nto++];
    t->sink = px_xstrdup(sink);
    t->action = px_xstrdup(action);
    t->with = with ? J(with) : NULL;
    t->line = 10 + (int)p->nto;
    t->col = 7;
}

static void cfg_free(px_config *c)
{
    for (size_t i = 0; i < c->npipelines; i++) {
        px_pipeline_conf *p = &c->pipelines[i];
        free(p->name);
        free(p->from);
        for (size_t j = 0; j < p->ntypes; j++) {
            free(p->types[j]);
        }
        for (size_t j = 0; j < p->nconds; j++) {
            free(p->conds[j].pointer);
            json_decref(p->conds[j].value);
        }
        for (size_t j = 0; j < p->nto; j++) {
            free(p->to[j].sink);
            free(p->to[j].action);
            json_decref(p->to[j].with);
        }
        free(p->types);
        free(p->conds);
        free(p->to);
    }
    free(c->pipelines);
    free(c->path);
    free(c);
}

/* Builds a router from c and frees c. NULL (with the message printed) on failure. */
static px_router *router_from(px_config *c)
{
    px_router *r = NULL;
    char err[512];
    int rc = px_router_create(c, &r, err, sizeof(err));
    cfg_free(c);
    if (rc != 0) {
        fprintf(stderr, "px_router_create: %d %s\n", rc, err);
        return NULL;
    }
    return r;
}

static px_mapping_env env_of(const json_t *payload, const char *type)
{
    px_mapping_env env = {.payload = payload,
                          .type = type,
                          .id = "ev-9",
                          .source = "web",
                          .time_ms = 1700000000000LL};
    return env;
}

/* Routes one event and returns the number of routes (freed). */
static size_t count_routes(const px_router *r, const char *source, const char *type,
                           const char *payload)
{
    json_t *p = payload ? J(payload) : NULL;
    px_mapping_env env = env_of(p, type);
    px_route *routes = NULL;
    size_t n = px_router_route(r, source, &env, &routes);
    px_routes_free(routes, n);
    json_decref(p);
    return n;
}

static void test_glob(void)
{
    static const struct {
        const char *pattern, *s;
        int match;
    } cases[] = {
        {"lead.*", "lead.created", 1},    {"lead.*", "lead.", 1},
        {"lead.*", "lead", 0},            {"lead.*", "leads.created", 0},
        {"*.created", "lead.created", 1}, {"*.created", "lead.updated", 0},
        {"*.created", ".created", 1},     {"lead.*.v1", "lead.x.y.v1", 1},
        {"lead.*.v1", "lead..v1", 1},     {"lead.*.v1", "lead.v1", 0},
        {"lead.*.v1", "lead.x.v2", 0},    {"a?c", "abc", 1},
        {"a?c", "ac", 0},                 {"a?c", "abbc", 0},
        {"??", "ab", 1},                  {"?", "", 0},
        {"abc", "abc", 1},                {"abc", "abcd", 0},
        {"abc", "ab", 0},                 {"abc", "ABC", 0},
        {"", "", 1},                      {"", "a", 0},
        {"*", "", 1},                     {"*", "anything.at.all", 1},
        {"**", "x", 1},                   {"*ab", "aab", 1},
        {"a*a", "a", 0},                  {"*a*b", "xaybzb", 1},
        {"*a*b", "xaybzc", 0},            {"a*?c", "abc", 1},
        {"a*?c", "ac", 0},                {"lead.*", "", 0},
    };
    int failures = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int got = px_glob_match(cases[i].pattern, cases[i].s);
        if (got != cases[i].match) {
            fprintf(stderr, "glob[%zu]: \"%s\" vs \"%s\": got %d, expected %d\n", i,
                    cases[i].pattern, cases[i].s, got, cases[i].match);
            failures++;
        }
    }
    PX_ASSERT_INT_EQ(failures, 0);
}

static void test_types(void)
{
    px_config *c = cfg_new();
    px_pipeline_conf *p = cfg_pipe(c, "typed", "web");
    pipe_type(p, "lead.*");
    pipe_type(p, "order.paid");
    pipe_to(p, "crm", "", NULL);
    px_pipeline_conf *any = cfg_pipe(c, "untyped", "other");
    pipe_to(any, "log", "", NULL);
    px_router *r = router_from(c);
    PX_ASSERT(r != NULL);
    PX_ASSERT_INT_EQ(count_routes(r, "web", "lead.created", "{}"), 1);
    PX_ASSERT_INT_EQ(count_routes(r, "web", "order.paid", "{}"), 1);
    PX_ASSERT_INT_EQ(count_routes(r, "web", "order.refunded", "{}"), 0);
    PX_ASSERT_INT_EQ(count_routes(r, "web", "order.paid.v2", "{}"), 0);
    PX_ASSERT_INT_EQ(count_routes(r, "web", NULL, "{}"), 0);
    PX_ASSERT_INT_EQ(count_routes(r, "other", "whatever", "{}"), 1);
    PX_ASSERT_INT_EQ(count_routes(r, "other", NULL, NULL), 1);
    px_router_destroy(r);
}

static void test_from(void)
{
    px_config *c = cfg_new();
    pipe_to(cfg_pipe(c, "only-web", "web"), "a", "", NULL);
    pipe_to(cfg_pipe(c, "all", "*"), "b", "", NULL);
    px_router *r = router_from(c);
    PX_ASSERT(r != NULL);
    PX_ASSERT_INT_EQ(count_routes(r, "web", "t", "{}"), 2);
    PX_ASSERT_INT_EQ(count_routes(r, "sqs", "t", "{}"), 1);
    PX_ASSERT_INT_EQ(count_routes(r, "webhook", "t", "{}"), 1);
    PX_ASSERT_INT_EQ(count_routes(r, "we", "t", "{}"), 1);
    PX_ASSERT_INT_EQ(count_routes(r, NULL, "t", "{}"), 1);

    json_t *p = J("{}");
    px_mapping_env env = env_of(p, "t");
    px_route *routes;
    size_t n = px_router_route(r, "sqs", &env, &routes);
    PX_ASSERT_INT_EQ(n, 1);
    PX_ASSERT_STR_EQ(routes[0].pipeline, "all");
    PX_ASSERT_STR_EQ(routes[0].sink, "b");
    px_routes_free(routes, n);
    json_decref(p);
    px_router_destroy(r);
}

typedef struct cond_case {
    const char *pointer;
    int op;
    const char *value;   /* JSON text */
    const char *payload; /* JSON text */
    int match;
} cond_case;

static void test_conditions(void)
{
    static const cond_case cases[] = {
        /* equals: strings */
        {"/data/status", PX_COND_EQUALS, "\"new\"", "{\"data\": {\"status\": \"new\"}}", 1},
        {"/data/status", PX_COND_EQUALS, "\"new\"", "{\"data\": {\"status\": \"New\"}}", 0},
        {"/data/status", PX_COND_EQUALS, "\"new\"", "{\"data\": {}}", 0},
        {"/data/status", PX_COND_EQUALS, "\"1\"", "{\"data\": {\"status\": 1}}", 0},
        /* equals: numbers, per json_equal: an integer never equals a real */
        {"/n", PX_COND_EQUALS, "1", "{\"n\": 1}", 1},
        {"/n", PX_COND_EQUALS, "1", "{\"n\": 1.0}", 0},
        {"/n", PX_COND_EQUALS, "1.0", "{\"n\": 1.0}", 1},
        {"/n", PX_COND_EQUALS, "1.0", "{\"n\": 1}", 0},
        {"/n", PX_COND_EQUALS, "2", "{\"n\": 1}", 0},
        /* equals: null, bools, containers */
        {"/z", PX_COND_EQUALS, "null", "{\"z\": null}", 1},
        {"/z", PX_COND_EQUALS, "null", "{}", 0},
        {"/z", PX_COND_EQUALS, "null", "{\"z\": false}", 0},
        {"/b", PX_COND_EQUALS, "true", "{\"b\": true}", 1},
        {"/o", PX_COND_EQUALS, "{\"a\": [1, 2]}", "{\"o\": {\"a\": [1, 2]}}", 1},
        {"/o", PX_COND_EQUALS, "{\"a\": [1, 2]}", "{\"o\": {\"a\": [2, 1]}}", 0},
        {"/list/1", PX_COND_EQUALS, "\"b\"", "{\"list\": [\"a\", \"b\"]}", 1},
        {"", PX_COND_EQUALS, "{\"k\": 1}", "{\"k\": 1}", 1},
        /* in */
        {"/s", PX_COND_IN, "[\"a\", \"b\"]", "{\"s\": \"b\"}", 1},
        {"/s", PX_COND_IN, "[\"a\", \"b\"]", "{\"s\": \"c\"}", 0},
        {"/s", PX_COND_IN, "[\"a\", \"b\"]", "{}", 0},
        {"/s", PX_COND_IN, "[]", "{\"s\": \"a\"}", 0},
        {"/n", PX_COND_IN, "[1, 2]", "{\"n\": 2}", 1},
        {"/n", PX_COND_IN, "[1, 2]", "{\"n\": 2.0}", 0},
        {"/n", PX_COND_IN, "[1.5, \"x\"]", "{\"n\": 1.5}", 1},
        {"/z", PX_COND_IN, "[null]", "{\"z\": null}", 1},
        {"/z", PX_COND_IN, "[null]", "{}", 0},
        /* exists */
        {"/p", PX_COND_EXISTS, "true", "{\"p\": \"x\"}", 1},
        {"/p", PX_COND_EXISTS, "true", "{\"p\": null}", 1},
        {"/p", PX_COND_EXISTS, "true", "{}", 0},
        {"/p", PX_COND_EXISTS, "false", "{}", 1},
        {"/p", PX_COND_EXISTS, "false", "{\"p\": null}", 0},
        {"/p/q", PX_COND_EXISTS, "false", "{\"p\": \"scalar\"}", 1},
        {"/a/3", PX_COND_EXISTS, "true", "{\"a\": [0, 1, 2]}", 0},
        {"/a/2", PX_COND_EXISTS, "true", "{\"a\": [0, 1, 2]}", 1},
        /* event fields */
        {"/$event/type", PX_COND_EQUALS, "\"lead.created\"", "{}", 1},
        {"/$event/type", PX_COND_IN, "[\"x\", \"lead.created\"]", "{}", 1},
        {"/$event/source", PX_COND_EQUALS, "\"sqs\"", "{}", 0},
        {"/$event/time", PX_COND_EQUALS, "1700000000000", "{}", 1},
    };
    int failures = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        px_config *c = cfg_new();
        px_pipeline_conf *p = cfg_pipe(c, "p", "*");
        pipe_cond(p, cases[i].pointer, cases[i].op, cases[i].value);
        pipe_to(p, "s", "", NULL);
        px_router *r = router_from(c);
        PX_ASSERT(r != NULL);
        size_t n = count_routes(r, "web", "lead.created", cases[i].payload);
        px_router_destroy(r);
        if ((int)n != cases[i].match) {
            fprintf(stderr, "cond[%zu]: %s op=%d %s on %s: got %zu, expected %d\n", i,
                    cases[i].pointer, cases[i].op, cases[i].value, cases[i].payload, n,
                    cases[i].match);
            failures++;
        }
    }
    PX_ASSERT_INT_EQ(failures, 0);
}

static void test_all_conditions_must_hold(void)
{
    px_config *c = cfg_new();
    px_pipeline_conf *p = cfg_pipe(c, "p", "*");
    pipe_type(p, "lead.*");
    pipe_cond(p, "/status", PX_COND_EQUALS, "\"new\"");
    pipe_cond(p, "/country", PX_COND_IN, "[\"ES\", \"PT\"]");
    pipe_cond(p, "/test", PX_COND_EXISTS, "false");
    pipe_to(p, "s", "", NULL);
    px_router *r = router_from(c);
    PX_ASSERT(r != NULL);
    PX_ASSERT_INT_EQ(count_routes(r, "w", "lead.x", "{\"status\": \"new\", \"country\": \"PT\"}"),
                     1);
    PX_ASSERT_INT_EQ(count_routes(r, "w", "order.x", "{\"status\": \"new\", \"country\": \"PT\"}"),
                     0);
    PX_ASSERT_INT_EQ(count_routes(r, "w", "lead.x", "{\"status\": \"old\", \"country\": \"PT\"}"),
                     0);
    PX_ASSERT_INT_EQ(count_routes(r, "w", "lead.x", "{\"status\": \"new\", \"country\": \"FR\"}"),
                     0);
    PX_ASSERT_INT_EQ(count_routes(r, "w", "lead.x",
                                  "{\"status\": \"new\", \"country\": \"ES\", \"test\": 1}"),
                     0);
    PX_ASSERT_INT_EQ(count_routes(r, "w", "lead.x", NULL), 0);
    px_router_destroy(r);
}

static void test_fan_out_order(void)
{
    px_config *c = cfg_new();
    px_pipeline_conf *p1 = cfg_pipe(c, "p1", "web");
    p1->retry.attempts = 3;
    pipe_to(p1, "crm", "create_lead", "{\"name\": \"{{/name}}\"}");
    pipe_to(p1, "mail", "send", "{\"to\": \"{{/email}}\", \"n\": 1}");
    px_pipeline_conf *skip = cfg_pipe(c, "skipped", "sqs");
    pipe_to(skip, "never", "", NULL);
    px_pipeline_conf *p2 = cfg_pipe(c, "p2", "*");
    p2->retry.attempts = 5;
    pipe_type(p2, "lead.*");
    pipe_to(p2, "audit", "", NULL);
    pipe_to(p2, "crm", "note", "[\"{{/$event/id}}\", \"{{/$event/type}}\"]");
    px_router *r = router_from(c);
    PX_ASSERT(r != NULL);
    PX_ASSERT_INT_EQ(px_router_count(r), 3);
    PX_ASSERT_STR_EQ(px_router_name(r, 0), "p1");
    PX_ASSERT_STR_EQ(px_router_name(r, 1), "skipped");
    PX_ASSERT_STR_EQ(px_router_name(r, 2), "p2");
    PX_ASSERT(px_router_name(r, 3) == NULL);

    json_t *payload = J("{\"name\": \"Ana\", \"email\": \"ana@x.test\"}");
    px_mapping_env env = env_of(payload, "lead.created");
    px_route *rt = NULL;
    size_t n = px_router_route(r, "web", &env, &rt);
    PX_ASSERT_INT_EQ(n, 4);
    static const char *const want[4][4] = {
        {"p1", "crm", "create_lead", "{\"name\": \"Ana\"}"},
        {"p1", "mail", "send", "{\"to\": \"ana@x.test\", \"n\": 1}"},
        {"p2", "audit", "", "{}"},
        {"p2", "crm", "note", "[\"ev-9\", \"lead.created\"]"},
    };
    for (size_t i = 0; i < 4; i++) {
        PX_ASSERT_STR_EQ(rt[i].pipeline, want[i][0]);
        PX_ASSERT_STR_EQ(rt[i].sink, want[i][1]);
        PX_ASSERT_STR_EQ(rt[i].action, want[i][2]);
        PX_ASSERT(rt[i].error == NULL);
        json_t *w = J(want[i][3]);
        int same = json_equal(rt[i].params, w);
        json_decref(w);
        PX_ASSERT(same);
    }
    PX_ASSERT_INT_EQ(rt[0].retry->attempts, 3);
    PX_ASSERT(rt[0].retry == rt[1].retry);
    PX_ASSERT_INT_EQ(rt[2].retry->attempts, 5);
    px_routes_free(rt, n);

    /* The same router, another source: only p2 now. */
    n = px_router_route(r, "sqs", &env, &rt);
    PX_ASSERT_INT_EQ(n, 3);
    PX_ASSERT_STR_EQ(rt[0].pipeline, "skipped");
    PX_ASSERT_STR_EQ(rt[1].sink, "audit");
    PX_ASSERT_STR_EQ(rt[2].action, "note");
    px_routes_free(rt, n);

    /* No match: nothing allocated. */
    env.type = "order.paid";
    rt = (px_route *)&env;
    n = px_router_route(r, "other", &env, &rt);
    PX_ASSERT_INT_EQ(n, 0);
    PX_ASSERT(rt == NULL);
    px_routes_free(rt, n);
    json_decref(payload);
    px_router_destroy(r);
}

static void test_mapping_error_isolated(void)
{
    px_config *c = cfg_new();
    px_pipeline_conf *p = cfg_pipe(c, "leads", "*");
    pipe_to(p, "crm", "", "{\"contact\": {\"email\": \"{{/data/email}}\"}}");
    pipe_to(p, "log", "", "{\"id\": \"{{/data/id}}\"}");
    pipe_to(p, "sms", "", "{\"text\": \"call {{/data/phone}}\"}");
    pipe_to(p, "opt", "", "{\"phone\": \"{{/data/phone?}}\"}");
    px_router *r = router_from(c);
    PX_ASSERT(r != NULL);
    json_t *payload = J("{\"data\": {\"id\": 7}}");
    px_mapping_env env = env_of(payload, "lead");
    px_route *rt = NULL;
    size_t n = px_router_route(r, "web", &env, &rt);
    PX_ASSERT_INT_EQ(n, 4);
    PX_ASSERT(rt[0].params == NULL);
    PX_ASSERT_STR_EQ(rt[0].error, "with.contact.email: missing /data/email");
    PX_ASSERT(rt[1].error == NULL);
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(rt[1].params, "id")), 7);
    PX_ASSERT(rt[2].params == NULL);
    PX_ASSERT_STR_EQ(rt[2].error, "with.text: missing /data/phone");
    PX_ASSERT(rt[3].error == NULL);
    PX_ASSERT(json_is_null(json_object_get(rt[3].params, "phone")));
    px_routes_free(rt, n);

    /* The next event has everything: no error sticks to the router. */
    json_t *full = J("{\"data\": {\"id\": 8, \"email\": \"e@x.test\", \"phone\": \"+34 600\"}}");
    env.payload = full;
    n = px_router_route(r, "web", &env, &rt);
    PX_ASSERT_INT_EQ(n, 4);
    for (size_t i = 0; i < n; i++) {
        PX_ASSERT(rt[i].error == NULL);
        PX_ASSERT(json_is_object(rt[i].params));
    }
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(rt[2].params, "text")), "call +34 600");
    px_routes_free(rt, n);
    json_decref(full);
    json_decref(payload);
    px_router_destroy(r);
}

static void test_create_errors(void)
{
    char err[512];
    px_router *r = (px_router *)err; /* sentinel: must stay untouched */

    px_config *c = cfg_new();
    pipe_to(cfg_pipe(c, "ok", "*"), "a", "", "{\"x\": \"{{/x}}\"}");
    px_pipeline_conf *p = cfg_pipe(c, "bad", "*");
    pipe_to(p, "first", "", "{}");
    pipe_to(p, "crm", "", "{\"name\": \"{{/data/name\"}");
    PX_ASSERT_INT_EQ(px_router_create(c, &r, err, sizeof(err)), PX_ECONFIG);
    PX_ASSERT_STR_EQ(err, "plexus.yaml:12:7: pipeline bad, sink crm: with.name: '{{' without '}}'");
    PX_ASSERT(r == (px_router *)err);
    cfg_free(c);

    static const struct {
        const char *pointer;
        int op;
        const char *value;
        const char *err;
    } conds[] = {
        {"data/x", PX_COND_EQUALS, "1",
         "plexus.yaml: pipeline p: when.match data/x: pointer must start with '/' (got "
         "\"data/x\")"},
        {"/a~9", PX_COND_EQUALS, "1",
         "plexus.yaml: pipeline p: when.match /a~9: bad escape in pointer /a~9 ('~' must be "
         "followed by 0 or 1)"},
        {"/x", PX_COND_IN, "\"a\"", "plexus.yaml: pipeline p: when.match /x: in needs a list"},
        {"/x", PX_COND_EXISTS, "1",
         "plexus.yaml: pipeline p: when.match /x: exists needs true or false"},
        {"/x", PX_COND_EQUALS, NULL,
         "plexus.yaml: pipeline p: when.match /x: equals needs a value"},
        {"/x", 99, "1", "plexus.yaml: pipeline p: when.match /x: unknown condition 99"},
    };
    int failures = 0;
    for (size_t i = 0; i < sizeof(conds) / sizeof(conds[0]); i++) {
        c = cfg_new();
        p = cfg_pipe(c, "p", "*");
        pipe_cond(p, "/fine", PX_COND_EXISTS, "true");
        pipe_cond(p, conds[i].pointer, conds[i].op, conds[i].value);
        pipe_to(p, "s", "", NULL);
        err[0] = '\0';
        int rc = px_router_create(c, &r, err, sizeof(err));
        cfg_free(c);
        if (rc != PX_ECONFIG || strcmp(err, conds[i].err) != 0) {
            fprintf(stderr, "create[%zu]: rc=%d\n  got:      %s\n  expected: %s\n", i, rc, err,
                    conds[i].err);
            failures++;
            if (rc == 0) {
                px_router_destroy(r);
            }
        }
    }
    PX_ASSERT_INT_EQ(failures, 0);
}

static void test_empty_and_copied(void)
{
    /* No pipelines at all. */
    px_config *c = cfg_new();
    px_router *r = router_from(c);
    PX_ASSERT(r != NULL);
    PX_ASSERT_INT_EQ(px_router_count(r), 0);
    PX_ASSERT_INT_EQ(count_routes(r, "web", "t", "{}"), 0);
    px_router_destroy(r);
    px_router_destroy(NULL);

    /* Everything the routes hand out outlives the config (freed inside router_from). */
    c = cfg_new();
    px_pipeline_conf *p = cfg_pipe(c, "copied", "web");
    pipe_type(p, "a.?");
    pipe_cond(p, "/k", PX_COND_IN, "[\"v\"]");
    pipe_to(p, "sink1", "act", "{\"lit\": [1, \"two\"], \"k\": \"{{/k}}\"}");
    r = router_from(c);
    PX_ASSERT(r != NULL);
    json_t *payload = J("{\"k\": \"v\"}");
    px_mapping_env env = env_of(payload, "a.b");
    px_route *rt;
    size_t n = px_router_route(r, "web", &env, &rt);
    PX_ASSERT_INT_EQ(n, 1);
    PX_ASSERT_STR_EQ(rt[0].pipeline, "copied");
    PX_ASSERT_STR_EQ(rt[0].sink, "sink1");
    PX_ASSERT_STR_EQ(rt[0].action, "act");
    json_t *want = J("{\"lit\": [1, \"two\"], \"k\": \"v\"}");
    int same = json_equal(rt[0].params, want);
    json_decref(want);
    PX_ASSERT(same);
    PX_ASSERT_INT_EQ(rt[0].retry->attempts, 10);
    px_routes_free(rt, n);
    json_decref(payload);
    px_router_destroy(r);
}

static void test_many_pipelines(void)
{
    /* More pipelines than the routing bitmap holds on the stack; every third one matches. */
    px_config *c = cfg_new();
    free(c->pipelines);
    c->pipelines = px_xcalloc(700, sizeof(*c->pipelines));
    for (int i = 0; i < 700; i++) {
        char name[16];
        snprintf(name, sizeof(name), "p%d", i);
        px_pipeline_conf *p = cfg_pipe(c, name, i % 3 == 0 ? "web" : "other");
        pipe_to(p, name, "", "{\"i\": \"{{/$event/id}}\"}");
    }
    px_router *r = router_from(c);
    PX_ASSERT(r != NULL);
    PX_ASSERT_INT_EQ(px_router_count(r), 700);
    px_mapping_env env = env_of(NULL, "t");
    px_route *rt;
    size_t n = px_router_route(r, "web", &env, &rt);
    PX_ASSERT_INT_EQ(n, 234);
    PX_ASSERT_STR_EQ(rt[0].sink, "p0");
    PX_ASSERT_STR_EQ(rt[1].sink, "p3");
    PX_ASSERT_STR_EQ(rt[233].sink, "p699");
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(rt[233].params, "i")), "ev-9");
    px_routes_free(rt, n);
    px_router_destroy(r);
}

/* Each pipeline that does not take an event says which rule stopped it; one that does says
 * nothing. */
static void test_why_not(void)
{
    px_config *c = cfg_new();
    pipe_to(cfg_pipe(c, "from-web", "web"), "a", "", NULL);
    px_pipeline_conf *typed = cfg_pipe(c, "typed", "*");
    pipe_type(typed, "lead.*");
    pipe_type(typed, "deal");
    pipe_to(typed, "a", "", NULL);
    px_pipeline_conf *cond = cfg_pipe(c, "cond", "*");
    pipe_cond(cond, "/status", PX_COND_EQUALS, "\"new\"");
    pipe_to(cond, "a", "", NULL);
    px_pipeline_conf *ex = cfg_pipe(c, "exists", "*");
    pipe_cond(ex, "/gone", PX_COND_EXISTS, "true");
    pipe_to(ex, "a", "", NULL);
    px_router *r = router_from(c);
    PX_ASSERT(r != NULL);
    json_t *p = J("{\"status\": \"old\"}");
    px_mapping_env env = env_of(p, "user.created");
    char buf[256];
    PX_ASSERT_STR_EQ(px_router_why_not(r, 0, "sqs", &env, buf, sizeof(buf)),
                     "from: \"web\", the event comes from \"sqs\"");
    PX_ASSERT(px_router_why_not(r, 0, "web", &env, buf, sizeof(buf)) == NULL);
    PX_ASSERT_STR_EQ(px_router_why_not(r, 0, NULL, &env, buf, sizeof(buf)),
                     "from: \"web\", the event names no source");
    PX_ASSERT_STR_EQ(px_router_why_not(r, 1, "web", &env, buf, sizeof(buf)),
                     "type \"user.created\" is not one of \"lead.*\", \"deal\"");
    PX_ASSERT_STR_EQ(px_router_why_not(r, 2, "web", &env, buf, sizeof(buf)),
                     "when.match /status equals \"new\": got \"old\"");
    PX_ASSERT_STR_EQ(px_router_why_not(r, 3, "web", &env, buf, sizeof(buf)),
                     "when.match /gone exists true: missing");
    PX_ASSERT(px_router_why_not(r, 9, "web", &env, buf, sizeof(buf)) == NULL);
    json_decref(p);
    px_router_destroy(r);
}

/* The dry-run document: targets with their mapped `with:` or the failing field and pointer, and
 * every pipeline with whether it took the event. */
static void test_explain(void)
{
    px_config *c = cfg_new();
    px_pipeline_conf *leads = cfg_pipe(c, "leads", "web");
    pipe_type(leads, "lead.*");
    pipe_to(leads, "crm", "create", "{\"name\": \"{{/name}}\", \"id\": \"{{/$event/id}}\"}");
    pipe_to(leads, "mail", "", "{\"to\": {\"email\": \"{{/email}}\"}}");
    pipe_to(cfg_pipe(c, "other", "sqs"), "x", "", NULL);
    px_router *r = router_from(c);
    PX_ASSERT(r != NULL);
    json_t *doc = J("{\"source\": \"web\", \"type\": \"lead.new\", \"time\": 5, "
                    "\"payload\": {\"name\": \"Ann\"}}");
    px_route_input in;
    char err[256];
    PX_ASSERT_INT_EQ(px_route_input_parse(doc, 99, &in, err, sizeof(err)), 0);
    json_decref(doc);
    json_t *out = px_route_explain(r, &in);
    json_t *want = J("{\"event\": {\"source\": \"web\", \"type\": \"lead.new\", "
                     "\"id\": \"dry-run\", \"time\": 5}, \"routed\": true, \"errors\": 1, "
                     "\"targets\": [{\"pipeline\": \"leads\", \"sink\": \"crm\", "
                     "\"action\": \"create\", \"with\": {\"name\": \"Ann\", "
                     "\"id\": \"dry-run\"}}, {\"pipeline\": \"leads\", \"sink\": \"mail\", "
                     "\"action\": \"\", \"error\": \"with.to.email: missing /email\", "
                     "\"field\": \"with.to.email\", \"pointer\": \"/email\"}], "
                     "\"pipelines\": [{\"name\": \"leads\", \"matched\": true}, "
                     "{\"name\": \"other\", \"matched\": false, "
                     "\"reason\": \"from: \\\"sqs\\\", the event comes from \\\"web\\\"\"}]}");
    int same = json_equal(out, want);
    if (!same) {
        char *got = json_dumps(out, JSON_COMPACT);
        fprintf(stderr, "got %s\n", got);
        free(got);
    }
    json_decref(out);
    json_decref(want);
    px_route_input_clear(&in);
    px_router_destroy(r);
    PX_ASSERT(same);
}

/* Event descriptions: defaults, and one line naming a wrong member. */
static void test_route_input(void)
{
    static const struct {
        const char *doc, *err;
    } bad[] = {
        {"[]", "the event must be an object"},
        {"{\"type\": 1}", "type: expected a string"},
        {"{\"time\": \"now\"}", "time: expected an integer"},
        {"{\"metadata\": {\"k\": 1}}", "metadata.k: expected a string"},
        {"{\"paylod\": {}}", "unknown member \"paylod\""},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *doc = J(bad[i].doc);
        px_route_input in;
        char err[256] = "";
        int rc = px_route_input_parse(doc, 0, &in, err, sizeof(err));
        json_decref(doc);
        PX_ASSERT_INT_EQ(rc, PX_EINVAL);
        PX_ASSERT_STR_HAS(err, bad[i].err);
        PX_ASSERT(in.payload == NULL && in.type == NULL);
    }
    json_t *doc = J("{}");
    px_route_input in;
    char err[256];
    PX_ASSERT_INT_EQ(px_route_input_parse(doc, 1234, &in, err, sizeof(err)), 0);
    json_decref(doc);
    PX_ASSERT(in.source == NULL);
    PX_ASSERT_STR_EQ(in.type, "");
    PX_ASSERT_STR_EQ(in.id, "dry-run");
    PX_ASSERT_INT_EQ(in.time_ms, 1234);
    PX_ASSERT(json_is_object(in.payload) && json_object_size(in.payload) == 0);
    px_route_input_clear(&in);
}

PX_TEST_MAIN(PX_TEST(test_glob), PX_TEST(test_types), PX_TEST(test_from),
             PX_TEST(test_conditions), PX_TEST(test_all_conditions_must_hold),
             PX_TEST(test_fan_out_order), PX_TEST(test_mapping_error_isolated),
             PX_TEST(test_create_errors), PX_TEST(test_empty_and_copied),
             PX_TEST(test_many_pipelines), PX_TEST(test_why_not), PX_TEST(test_explain),
             PX_TEST(test_route_input))
