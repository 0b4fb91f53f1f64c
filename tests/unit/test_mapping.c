/* Unit tests of the mapping language (host/core/mapping.c): whole-value and text references of
 * every JSON type, nesting, escapes, RFC 6901 corner cases, optional references, /$event/ fields, and
 * the exact text of compile and missing-pointer errors. */
#include "../../host/core/mapping.c"

#include "test.h"

static const char *const PAYLOAD =
    "{\"data\": {\"id\": 42, \"name\": \"Ana\", \"surname\": \"Lee\", \"email\": \"ana@x.test\","
    " \"price\": 19.99, \"ratio\": 1.0, \"tenth\": 0.1, \"big\": 1e300, \"neg\": -7,"
    " \"yes\": true, \"no\": false, \"nil\": null, \"utf\": \"Jos\\u00e9 \\u2713\","
    " \"obj\": {\"a\": 1, \"b\": [1, \"two\", null]}, \"arr\": [10, 20, 30], \"empty\": \"\","
    " \"eobj\": {}, \"earr\": []},"
    " \"a/b\": 1, \"m~n\": 2, \"\": 3, \"~1\": 4, \"mat\": [[1, 2], [3, 4]],"
    " \"text\": \"{{/data/id}}\"}";

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

static px_mapping_env env_for(const json_t *payload)
{
    px_mapping_env env = {.payload = payload,
                          .type = "lead.created",
                          .id = "ev-1",
                          .source = "web",
                          .time_ms = 1700000000123LL};
    return env;
}

/* Compiles tmpl (JSON text), applies it to payload (JSON text; NULL = no payload). Returns the
 * compile or apply code; *out is set on success; err receives any message. */
static int eval(const char *tmpl, const char *payload, json_t **out, char *err, size_t errlen)
{
    json_t *t = J(tmpl);
    json_t *p = payload ? J(payload) : NULL;
    px_mapping *m = NULL;
    err[0] = '\0';
    int rc = px_mapping_compile(t, &m, err, errlen);
    json_decref(t);
    if (rc == 0) {
        px_mapping_env env = env_for(p);
        rc = px_mapping_apply(m, &env, out, err, errlen);
        px_mapping_destroy(m);
    }
    json_decref(p);
    return rc;
}

typedef struct map_case {
    const char *tmpl;    /* JSON text */
    const char *expect;  /* JSON text of the result */
} map_case;

/* Runs each case against PAYLOAD; reports every failing one. Returns the number of failures. */
static int run_cases(const char *table, const map_case *cases, size_t n)
{
    int failures = 0;
    for (size_t i = 0; i < n; i++) {
        char err[256];
        json_t *got = NULL;
        int rc = eval(cases[i].tmpl, PAYLOAD, &got, err, sizeof(err));
        json_t *want = J(cases[i].expect);
        if (rc != 0 || !json_equal(got, want)) {
            char *g = got ? json_dumps(got, JSON_ENCODE_ANY) : NULL;
            fprintf(stderr, "%s[%zu]: template %s\n  got:      %s (rc=%d %s)\n  expected: %s\n",
                    table, i, cases[i].tmpl, g ? g : "(none)", rc, err, cases[i].expect);
            free(g);
            failures++;
        }
        json_decref(got);
        json_decref(want);
    }
    return failures;
}

#define RUN_CASES(cases) run_cases(#cases, cases, sizeof(cases) / sizeof(cases[0]))

static void test_whole_value_types(void)
{
    static const map_case cases[] = {
        {"\"{{/data/obj}}\"", "{\"a\": 1, \"b\": [1, \"two\", null]}"},
        {"\"{{/data/arr}}\"", "[10, 20, 30]"},
        {"\"{{/data/id}}\"", "42"},
        {"\"{{/data/neg}}\"", "-7"},
        {"\"{{/data/price}}\"", "19.99"},
        {"\"{{/data/yes}}\"", "true"},
        {"\"{{/data/no}}\"", "false"},
        {"\"{{/data/nil}}\"", "null"},
        {"\"{{/data/name}}\"", "\"Ana\""},
        {"\"{{/data/empty}}\"", "\"\""},
        {"\"{{/data/eobj}}\"", "{}"},
        {"\"{{/data/earr}}\"", "[]"},
        {"\"{{ /data/id }}\"", "42"},
        {"\"{{\\t/data/id\\n}}\"", "42"},
        /* A referenced string is data: its own "{{" is not evaluated again. */
        {"\"{{/text}}\"", "\"{{/data/id}}\""},
        {"{\"n\": \"{{/data/id}}\", \"s\": \"{{/data/name}}\"}", "{\"n\": 42, \"s\": \"Ana\"}"},
    };
    PX_ASSERT_INT_EQ(RUN_CASES(cases), 0);
}

static void test_whole_value_is_shared_not_copied(void)
{
    json_t *p = J(PAYLOAD);
    json_t *t = J("{\"o\": \"{{/data/obj}}\"}");
    px_mapping *m = NULL;
    char err[128];
    PX_ASSERT_INT_EQ(px_mapping_compile(t, &m, err, sizeof(err)), 0);
    px_mapping_env env = env_for(p);
    json_t *out = NULL;
    PX_ASSERT_INT_EQ(px_mapping_apply(m, &env, &out, err, sizeof(err)), 0);
    json_t *want = json_object_get(json_object_get(p, "data"), "obj");
    PX_ASSERT(json_object_get(out, "o") == want);
    PX_ASSERT(want->refcount == 2);
    json_decref(out);
    PX_ASSERT(want->refcount == 1);
    px_mapping_destroy(m);
    json_decref(t);
    json_decref(p);
}

static void test_text_types(void)
{
    static const map_case cases[] = {
        {"\"<{{/data/name}}>\"", "\"<Ana>\""},
        {"\"<{{/data/id}}>\"", "\"<42>\""},
        {"\"<{{/data/neg}}>\"", "\"<-7>\""},
        {"\"<{{/data/price}}>\"", "\"<19.99>\""},
        {"\"<{{/data/ratio}}>\"", "\"<1.0>\""},
        {"\"<{{/data/tenth}}>\"", "\"<0.1>\""},
        {"\"<{{/data/big}}>\"", "\"<1e+300>\""},
        {"\"<{{/data/yes}}>\"", "\"<true>\""},
        {"\"<{{/data/no}}>\"", "\"<false>\""},
        {"\"<{{/data/nil}}>\"", "\"<null>\""},
        {"\"<{{/data/empty}}>\"", "\"<>\""},
        {"\"<{{/data/utf}}>\"", "\"<Jos\\u00e9 \\u2713>\""},
        {"\"<{{/data/obj}}>\"", "\"<{\\\"a\\\":1,\\\"b\\\":[1,\\\"two\\\",null]}>\""},
        {"\"<{{/data/arr}}>\"", "\"<[10,20,30]>\""},
        {"\"<{{/data/eobj}}{{/data/earr}}>\"", "\"<{}[]>\""},
        {"\"{{/data/name}} {{/data/surname}}\"", "\"Ana Lee\""},
        {"\"{{/data/name}}{{/data/surname}}\"", "\"AnaLee\""},
        {"\" {{/data/id}}\"", "\" 42\""},
        {"\"{{/data/id}} \"", "\"42 \""},
        {"\"{\\\"id\\\": {{/data/id}}}\"", "\"{\\\"id\\\": 42}\""},
    };
    PX_ASSERT_INT_EQ(RUN_CASES(cases), 0);
}

static void test_nested_and_literals(void)
{
    static const map_case cases[] = {
        {"{\"name\": \"{{/data/name}} {{/data/surname}}\","
         " \"contact\": {\"email\": \"{{/data/email}}\", \"tags\": [\"lead\", \"{{/data/id}}\","
         " {\"deep\": [\"{{/data/yes}}\", 7]}]}}",
         "{\"name\": \"Ana Lee\", \"contact\": {\"email\": \"ana@x.test\", \"tags\": [\"lead\","
         " 42, {\"deep\": [true, 7]}]}}"},
        {"{\"i\": 5, \"r\": 2.5, \"t\": true, \"f\": false, \"z\": null, \"s\": \"plain }} {\","
         " \"e\": {}, \"a\": []}",
         "{\"i\": 5, \"r\": 2.5, \"t\": true, \"f\": false, \"z\": null, \"s\": \"plain }} {\","
         " \"e\": {}, \"a\": []}"},
        {"[[\"{{/data/arr/0}}\", [\"{{/data/arr/2}}\"]], \"x\"]", "[[10, [30]], \"x\"]"},
        {"{\"{{/data/id}}\": 1}", "{\"{{/data/id}}\": 1}"},
        {"7", "7"},
        {"\"just text\"", "\"just text\""},
    };
    PX_ASSERT_INT_EQ(RUN_CASES(cases), 0);
}

static void test_escapes(void)
{
    static const map_case cases[] = {
        {"\"\\\\{{/data/id}}\"", "\"{{/data/id}}\""},
        {"\"a \\\\{{ b\"", "\"a {{ b\""},
        {"\"\\\\{{/data/id}} = {{/data/id}}\"", "\"{{/data/id}} = 42\""},
        {"\"{{{/data/id}}}\"", "\"{42}\""},
        {"\"{{{{/data/id}}\"", "\"{{42\""},
        {"\"\\\\{{{/data/id}}}\"", "\"{{{/data/id}}}\""},
        {"\"back\\\\slash \\\\n {x}\"", "\"back\\\\slash \\\\n {x}\""},
        {"\"}} and {\"", "\"}} and {\""},
        {"\"ends with {\"", "\"ends with {\""},
        {"\"\\\\\"", "\"\\\\\""},
        {"\"\\\\{\"", "\"\\\\{\""},
    };
    PX_ASSERT_INT_EQ(RUN_CASES(cases), 0);
}

static void test_pointer_edge_cases(void)
{
    static const map_case cases[] = {
        {"\"{{/a~1b}}\"", "1"},
        {"\"{{/m~0n}}\"", "2"},
        {"\"{{/~01}}\"", "4"},
        {"\"{{/}}\"", "3"},
        {"\"{{/data/arr/0}}\"", "10"},
        {"\"{{/data/arr/2}}\"", "30"},
        {"\"{{/mat/1/0}}\"", "3"},
        {"\"{{/data/obj/b/1}}\"", "\"two\""},
        {"\"{{}}\"", PAYLOAD},
        {"\"{{ }}\"", PAYLOAD},
    };
    PX_ASSERT_INT_EQ(RUN_CASES(cases), 0);

    /* Indexes out of range, with a leading zero, "-" or not numeric resolve to nothing. */
    static const char *const missing[] = {
        "\"{{/data/arr/3}}\"",  "\"{{/data/arr/-1}}\"", "\"{{/data/arr/01}}\"",
        "\"{{/data/arr/-}}\"",  "\"{{/data/arr/x}}\"",  "\"{{/data/arr/99999999999999999999}}\"",
        "\"{{/data/name/0}}\"", "\"{{/data/id/x}}\"",   "\"{{/a/b}}\"",
        "\"{{/data/nil/x}}\"",  "\"{{/DATA}}\"",
    };
    for (size_t i = 0; i < sizeof(missing) / sizeof(missing[0]); i++) {
        char err[128];
        json_t *out = NULL;
        int rc = eval(missing[i], PAYLOAD, &out, err, sizeof(err));
        if (rc != PX_ENOENT) {
            fprintf(stderr, "missing[%zu] %s: rc=%d\n", i, missing[i], rc);
        }
        PX_ASSERT_INT_EQ(rc, PX_ENOENT);
        PX_ASSERT(out == NULL);
        PX_ASSERT_STR_HAS(err, "with: missing /");
    }
}

static void test_json_pointer_get(void)
{
    json_t *doc = J(PAYLOAD);
    PX_ASSERT(px_json_pointer_get(doc, "") == doc);
    PX_ASSERT_INT_EQ(json_integer_value(px_json_pointer_get(doc, "/a~1b")), 1);
    PX_ASSERT_INT_EQ(json_integer_value(px_json_pointer_get(doc, "/m~0n")), 2);
    PX_ASSERT_INT_EQ(json_integer_value(px_json_pointer_get(doc, "/~01")), 4);
    PX_ASSERT_INT_EQ(json_integer_value(px_json_pointer_get(doc, "/")), 3);
    PX_ASSERT_INT_EQ(json_integer_value(px_json_pointer_get(doc, "/data/arr/1")), 20);
    PX_ASSERT_INT_EQ(json_integer_value(px_json_pointer_get(doc, "/mat/0/1")), 2);
    PX_ASSERT(json_is_null(px_json_pointer_get(doc, "/data/nil")));
    PX_ASSERT(px_json_pointer_get(doc, "/data/arr/3") == NULL);
    PX_ASSERT(px_json_pointer_get(doc, "/data/arr/01") == NULL);
    PX_ASSERT(px_json_pointer_get(doc, "/data/arr/-") == NULL);
    PX_ASSERT(px_json_pointer_get(doc, "data") == NULL);
    PX_ASSERT(px_json_pointer_get(doc, "/~2") == NULL);
    PX_ASSERT(px_json_pointer_get(doc, "/m~") == NULL);
    PX_ASSERT(px_json_pointer_get(NULL, "") == NULL);
    /* A key longer than the decoder's stack buffer. */
    char key[600];
    memset(key, 'k', sizeof(key) - 1);
    key[sizeof(key) - 1] = '\0';
    json_object_set_new(doc, key, json_integer(9));
    char ptr[sizeof(key) + 8];
    snprintf(ptr, sizeof(ptr), "/%s", key);
    PX_ASSERT_INT_EQ(json_integer_value(px_json_pointer_get(doc, ptr)), 9);
    snprintf(ptr, sizeof(ptr), "/%s/x", key);
    PX_ASSERT(px_json_pointer_get(doc, ptr) == NULL);
    json_decref(doc);
}

typedef struct err_case {
    const char *tmpl;
    const char *payload; /* NULL: no payload in the env */
    int rc;
    const char *err;
} err_case;

static int run_err_cases(const char *table, const err_case *cases, size_t n)
{
    int failures = 0;
    for (size_t i = 0; i < n; i++) {
        char err[256];
        json_t *out = NULL;
        int rc = eval(cases[i].tmpl, cases[i].payload, &out, err, sizeof(err));
        if (rc != cases[i].rc || out != NULL || strcmp(err, cases[i].err) != 0) {
            fprintf(stderr, "%s[%zu]: template %s\n  got:      rc=%d %s\n  expected: rc=%d %s\n",
                    table, i, cases[i].tmpl, rc, err, cases[i].rc, cases[i].err);
            failures++;
        }
        json_decref(out);
    }
    return failures;
}

#define RUN_ERR_CASES(cases) run_err_cases(#cases, cases, sizeof(cases) / sizeof(cases[0]))

static void test_missing_errors(void)
{
    static const err_case cases[] = {
        {"{\"contact\": {\"email\": \"{{/data/mail}}\"}}", PAYLOAD, PX_ENOENT,
         "with.contact.email: missing /data/mail"},
        {"{\"name\": \"Hi {{ /data/first }}!\"}", PAYLOAD, PX_ENOENT,
         "with.name: missing /data/first"},
        {"{\"items\": [1, {\"sku\": \"{{/data/arr/5}}\"}]}", PAYLOAD, PX_ENOENT,
         "with.items[1].sku: missing /data/arr/5"},
        {"{\"a\": \"{{/data/id}}\", \"b\": \"{{/nope}}\", \"c\": \"{{/zzz}}\"}", PAYLOAD,
         PX_ENOENT, "with.b: missing /nope"},
        {"\"{{/data/id}}\"", NULL, PX_ENOENT, "with: missing /data/id"},
        {"\"{{}}\"", NULL, PX_ENOENT, "with: missing payload"},
        {"{\"k\": \"{{/a~1c}}\"}", PAYLOAD, PX_ENOENT, "with.k: missing /a~1c"},
    };
    PX_ASSERT_INT_EQ(RUN_ERR_CASES(cases), 0);
}

static void test_optional(void)
{
    static const map_case cases[] = {
        {"{\"p\": \"{{/data/phone?}}\"}", "{\"p\": null}"},
        {"{\"p\": \"{{ /data/phone ? }}\"}", "{\"p\": null}"},
        {"{\"p\": \"tel:{{/data/phone?}};\"}", "{\"p\": \"tel:;\"}"},
        {"{\"p\": \"{{/data/id?}}\"}", "{\"p\": 42}"},
        {"{\"p\": \"{{/data/nil?}}\"}", "{\"p\": null}"},
        {"{\"p\": \"n={{/data/id?}}\"}", "{\"p\": \"n=42\"}"},
        {"{\"p\": \"{{/data/arr/7?}}\"}", "{\"p\": null}"},
    };
    PX_ASSERT_INT_EQ(RUN_CASES(cases), 0);

    /* "{{?}}": the optional whole payload, null when the event has none. */
    char err[128];
    json_t *out = NULL;
    PX_ASSERT_INT_EQ(eval("{\"all\": \"{{?}}\", \"t\": \"[{{ ? }}]\"}", NULL, &out, err,
                          sizeof(err)), 0);
    json_t *want = J("{\"all\": null, \"t\": \"[]\"}");
    int same = json_equal(out, want);
    json_decref(want);
    json_decref(out);
    PX_ASSERT(same);
}

static void test_compile_errors(void)
{
    static const err_case cases[] = {
        {"{\"x\": \"{{/a\"}", PAYLOAD, PX_EINVAL, "with.x: '{{' without '}}'"},
        {"{\"x\": \"ok {{/a}} then {{/b }\"}", PAYLOAD, PX_EINVAL, "with.x: '{{' without '}}'"},
        {"{\"x\": \"{{\"}", PAYLOAD, PX_EINVAL, "with.x: '{{' without '}}'"},
        {"{\"x\": \"{{data/a}}\"}", PAYLOAD, PX_EINVAL,
         "with.x: pointer must start with '/' (got \"data/a\")"},
        {"{\"l\": [1, \"{{/a~2}}\"]}", PAYLOAD, PX_EINVAL,
         "with.l[1]: bad escape in pointer /a~2 ('~' must be followed by 0 or 1)"},
        {"{\"x\": \"{{/a~}}\"}", PAYLOAD, PX_EINVAL,
         "with.x: bad escape in pointer /a~ ('~' must be followed by 0 or 1)"},
        {"{\"x\": \"{{/$event/nope}}\"}", PAYLOAD, PX_EINVAL,
         "with.x: unknown event field /$event/nope (use /$event/type, /$event/id, "
         "/$event/source or /$event/time)"},
        {"{\"x\": \"{{/$event}}\"}", PAYLOAD, PX_EINVAL,
         "with.x: unknown event field /$event (use /$event/type, /$event/id, /$event/source or "
         "/$event/time)"},
        {"{\"x\": \"{{/$event/type/0}}\"}", PAYLOAD, PX_EINVAL,
         "with.x: unknown event field /$event/type/0 (use /$event/type, /$event/id, "
         "/$event/source or /$event/time)"},
    };
    PX_ASSERT_INT_EQ(RUN_ERR_CASES(cases), 0);
}

static void test_compile_error_leaves_out_untouched(void)
{
    json_t *t = J("{\"a\": \"{{/x}}\", \"b\": [\"lit\", \"x {{/y}} {{oops}}\"]}");
    px_mapping *m = (px_mapping *)&t; /* sentinel */
    char err[128];
    PX_ASSERT_INT_EQ(px_mapping_compile(t, &m, err, sizeof(err)), PX_EINVAL);
    PX_ASSERT(m == (px_mapping *)&t);
    PX_ASSERT_STR_EQ(err, "with.b[1]: pointer must start with '/' (got \"oops\")");
    /* A tiny error buffer is truncated, still NUL-terminated. */
    char small[8];
    PX_ASSERT_INT_EQ(px_mapping_compile(t, &m, small, sizeof(small)), PX_EINVAL);
    PX_ASSERT_STR_EQ(small, "with.b[");
    json_decref(t);
}

static void test_event_fields(void)
{
    static const map_case cases[] = {
        {"\"{{/$event/type}}\"", "\"lead.created\""},
        {"\"{{/$event/id}}\"", "\"ev-1\""},
        {"\"{{/$event/source}}\"", "\"web\""},
        {"\"{{/$event/time}}\"", "1700000000123"},
        {"\"{{/$event/source}}:{{/$event/id}}@{{/$event/time}} ({{/$event/type}})\"",
         "\"web:ev-1@1700000000123 (lead.created)\""},
        {"{\"t\": \"{{ /$event/type }}\", \"d\": \"{{/data/id}}\"}",
         "{\"t\": \"lead.created\", \"d\": 42}"},
    };
    PX_ASSERT_INT_EQ(RUN_CASES(cases), 0);

    /* A field the event does not have is missing, or null / "" when optional. */
    json_t *t = J("{\"a\": \"{{/$event/id}}\"}");
    json_t *topt = J("{\"a\": \"{{/$event/id?}}\", \"b\": \"<{{/$event/id?}}>\"}");
    px_mapping *m, *mopt;
    char err[128];
    PX_ASSERT_INT_EQ(px_mapping_compile(t, &m, err, sizeof(err)), 0);
    PX_ASSERT_INT_EQ(px_mapping_compile(topt, &mopt, err, sizeof(err)), 0);
    px_mapping_env env = env_for(NULL);
    env.id = NULL;
    json_t *out = NULL;
    PX_ASSERT_INT_EQ(px_mapping_apply(m, &env, &out, err, sizeof(err)), PX_ENOENT);
    PX_ASSERT_STR_EQ(err, "with.a: missing /$event/id");
    PX_ASSERT_INT_EQ(px_mapping_apply(mopt, &env, &out, err, sizeof(err)), 0);
    json_t *want = J("{\"a\": null, \"b\": \"<>\"}");
    PX_ASSERT(json_equal(out, want));
    json_decref(want);
    json_decref(out);
    px_mapping_destroy(m);
    px_mapping_destroy(mopt);
    json_decref(t);
    json_decref(topt);
}

static void test_pointer_api(void)
{
    json_t *p = J(PAYLOAD);
    px_mapping_env env = env_for(p);
    px_pointer *ptr;
    char err[128];

    PX_ASSERT_INT_EQ(px_pointer_compile("/data/name", &ptr, err, sizeof(err)), 0);
    PX_ASSERT_STR_EQ(px_pointer_text(ptr), "/data/name");
    json_t *v = px_pointer_eval(ptr, &env);
    PX_ASSERT_STR_EQ(json_string_value(v), "Ana");
    json_decref(v);
    px_pointer_destroy(ptr);

    PX_ASSERT_INT_EQ(px_pointer_compile("", &ptr, err, sizeof(err)), 0);
    v = px_pointer_eval(ptr, &env);
    PX_ASSERT(v == p);
    json_decref(v);
    px_pointer_destroy(ptr);

    PX_ASSERT_INT_EQ(px_pointer_compile("/$event/time", &ptr, err, sizeof(err)), 0);
    v = px_pointer_eval(ptr, &env);
    PX_ASSERT(json_is_integer(v));
    PX_ASSERT_INT_EQ(json_integer_value(v), 1700000000123LL);
    json_decref(v);
    px_pointer_destroy(ptr);

    /* '?' is template syntax, not pointer syntax: here it is part of the key. */
    PX_ASSERT_INT_EQ(px_pointer_compile("/data/phone?", &ptr, err, sizeof(err)), 0);
    PX_ASSERT(px_pointer_eval(ptr, &env) == NULL);
    px_pointer_destroy(ptr);

    PX_ASSERT_INT_EQ(px_pointer_compile("data", &ptr, err, sizeof(err)), PX_EINVAL);
    PX_ASSERT_STR_HAS(err, "must start with '/'");
    PX_ASSERT_INT_EQ(px_pointer_compile("/$event/who", &ptr, err, sizeof(err)), PX_EINVAL);
    PX_ASSERT_STR_HAS(err, "unknown event field /$event/who");
    json_decref(p);
}

static void test_results_are_fresh_and_reusable(void)
{
    json_t *t = J("{\"lit\": {\"n\": 1, \"l\": [true]}, \"id\": \"{{/data/id}}\"}");
    json_t *p = J(PAYLOAD);
    px_mapping *m;
    char err[128];
    PX_ASSERT_INT_EQ(px_mapping_compile(t, &m, err, sizeof(err)), 0);
    PX_ASSERT_INT_EQ(px_mapping_has_refs(m), 1);
    json_decref(t); /* the mapping keeps nothing of the template */
    px_mapping_env env = env_for(p);
    json_t *a = NULL, *b = NULL;
    PX_ASSERT_INT_EQ(px_mapping_apply(m, &env, &a, err, sizeof(err)), 0);
    PX_ASSERT_INT_EQ(px_mapping_apply(m, &env, &b, err, sizeof(err)), 0);
    PX_ASSERT(a != b);
    PX_ASSERT(json_object_get(a, "lit") != json_object_get(b, "lit"));
    PX_ASSERT(json_equal(a, b));
    /* Changing one result's containers leaves the next result intact. */
    json_object_set_new(json_object_get(a, "lit"), "n", json_integer(2));
    json_t *c = NULL;
    PX_ASSERT_INT_EQ(px_mapping_apply(m, &env, &c, err, sizeof(err)), 0);
    PX_ASSERT(json_equal(c, b));
    json_decref(a);
    json_decref(b);
    json_decref(c);
    px_mapping_destroy(m);

    t = J("{\"a\": 1, \"b\": [\"x\", \"\\\\{{y}}\"]}");
    PX_ASSERT_INT_EQ(px_mapping_compile(t, &m, err, sizeof(err)), 0);
    PX_ASSERT_INT_EQ(px_mapping_has_refs(m), 0);
    PX_ASSERT_INT_EQ(px_mapping_apply(m, &env, &a, err, sizeof(err)), 0);
    json_t *want = J("{\"a\": 1, \"b\": [\"x\", \"{{y}}\"]}");
    PX_ASSERT(json_equal(a, want));
    json_decref(want);
    json_decref(a);
    px_mapping_destroy(m);
    json_decref(t);
    json_decref(p);
    px_mapping_destroy(NULL);
}

static void test_long_text(void)
{
    /* Texts longer than the apply's stack buffer move to the heap. */
    char big[3001];
    memset(big, 'z', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    json_t *p = json_pack("{s:s}", "big", big);
    json_t *t = json_pack("{s:s}", "x", "[{{/big}}|{{/big}}]");
    px_mapping *m;
    char err[128];
    PX_ASSERT_INT_EQ(px_mapping_compile(t, &m, err, sizeof(err)), 0);
    px_mapping_env env = env_for(p);
    json_t *out = NULL;
    PX_ASSERT_INT_EQ(px_mapping_apply(m, &env, &out, err, sizeof(err)), 0);
    const char *s = json_string_value(json_object_get(out, "x"));
    PX_ASSERT(s != NULL);
    PX_ASSERT_INT_EQ(strlen(s), 2 * 3000 + 3);
    PX_ASSERT(s[0] == '[' && s[3001] == '|' && s[6002] == ']' && s[1] == 'z' && s[6001] == 'z');
    json_decref(out);
    px_mapping_destroy(m);
    json_decref(t);
    json_decref(p);
}

/* The example of docs/configuration.md, "Mapping language". */
static void test_doc_example(void)
{
    static const char *const tmpl =
        "{\"name\": \"{{/data/name}} {{/data/surname}}\", \"price\": \"{{/data/price}}\","
        " \"tags\": [\"web\", \"{{/data/campaign}}\"],"
        " \"contact\": {\"email\": \"{{ /data/email }}\", \"phone\": \"{{/data/phone?}}\"},"
        " \"source\": \"{{/$event/source}}\", \"note\": \"literal \\\\{{ braces\"}";
    static const char *const payload =
        "{\"data\": {\"name\": \"Ana\", \"surname\": \"Lee\", \"price\": 19.99,"
        " \"campaign\": \"spring\", \"email\": \"ana@example.com\"}}";
    char err[128];
    json_t *out = NULL;
    PX_ASSERT_INT_EQ(eval(tmpl, payload, &out, err, sizeof(err)), 0);
    json_t *want = J("{\"name\": \"Ana Lee\", \"price\": 19.99, \"tags\": [\"web\", \"spring\"],"
                     " \"contact\": {\"email\": \"ana@example.com\", \"phone\": null},"
                     " \"source\": \"web\", \"note\": \"literal {{ braces\"}");
    int same = json_equal(out, want);
    json_decref(want);
    json_decref(out);
    PX_ASSERT(same);
}

PX_TEST_MAIN(PX_TEST(test_whole_value_types), PX_TEST(test_whole_value_is_shared_not_copied),
             PX_TEST(test_text_types), PX_TEST(test_nested_and_literals), PX_TEST(test_escapes),
             PX_TEST(test_pointer_edge_cases), PX_TEST(test_json_pointer_get),
             PX_TEST(test_missing_errors), PX_TEST(test_optional), PX_TEST(test_compile_errors),
             PX_TEST(test_compile_error_leaves_out_untouched), PX_TEST(test_event_fields),
             PX_TEST(test_pointer_api), PX_TEST(test_results_are_fresh_and_reusable),
             PX_TEST(test_long_text), PX_TEST(test_doc_example))
