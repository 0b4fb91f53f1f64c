/* Pipeline tests (see pipeline_test.h): reading them from YAML nodes with their marks, running
 * them through the router's dry run, and reporting the first difference of each failed
 * expectation. */
#include "pipeline_test.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "mem.h"

/* --- reading ------------------------------------------------------------------------------- */

typedef struct rctx {
    const char *file;
    const px_config *cfg;
    long long now_ms;
    char *err;
    size_t errlen;
} rctx;

__attribute__((format(printf, 3, 4))) static int fail(rctx *c, const px_ynode *n,
                                                      const char *fmt, ...)
{
    int line, col;
    px_ynode_mark(n, &line, &col);
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(c->err, c->errlen, "%s:%d:%d: %s", c->file, line, col, msg);
    return PX_ECONFIG;
}

static const char *kind_name(const px_ynode *n)
{
    switch (px_ynode_type(n)) {
    case PX_YNODE_MAP: return "a mapping";
    case PX_YNODE_SEQ: return "a list";
    case PX_YNODE_SCALAR: return "a scalar";
    default: return "nothing";
    }
}

/* Every key of m must be one of known[0..n). */
static int check_keys(rctx *c, const px_ynode *m, const char *const *known, size_t n,
                      const char *where)
{
    for (size_t i = 0; i < px_ynode_size(m); i++) {
        const px_ynode *k = px_ynode_key_at(m, i);
        const char *key = px_ynode_text(k);
        size_t j = 0;
        while (j < n && strcmp(known[j], key) != 0) {
            j++;
        }
        if (j == n) {
            char hint[160];
            return fail(c, k, "unknown key \"%s\" in %s%s", key, where,
                        px_suggest(key, known, n, hint, sizeof(hint)));
        }
    }
    return 0;
}

#define CHECK_KEYS(c, m, known, where) \
    check_keys((c), (m), (known), sizeof(known) / sizeof((known)[0]), (where))

/* A non-empty string scalar under key in m, copied to *out; absent leaves *out NULL. */
static int get_string(rctx *c, const px_ynode *m, const char *key, const char *where, char **out)
{
    const px_ynode *n = px_ynode_get(m, key);
    if (!n) {
        return 0;
    }
    if (px_ynode_type(n) != PX_YNODE_SCALAR) {
        return fail(c, n, "%s.%s: expected a string, got %s", where, key, kind_name(n));
    }
    *out = px_xstrdup(px_ynode_text(n));
    return 0;
}

static int get_json(rctx *c, const px_ynode *n, json_t **out)
{
    if (px_ynode_type(n) == PX_YNODE_NULL) {
        *out = json_null();
        return 0;
    }
    return px_ynode_to_json(n, c->file, out, c->err, c->errlen);
}

static int is_pipeline(const px_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->npipelines; i++) {
        if (strcmp(cfg->pipelines[i].name, name) == 0) {
            return 1;
        }
    }
    return 0;
}

/* A name that must be an instance (what = "source", "sink") or a pipeline of cfg. */
static int check_name(rctx *c, const px_ynode *n, const char *what, const char *name)
{
    const px_config *cfg = c->cfg;
    int pipeline = strcmp(what, "pipeline") == 0;
    if (pipeline ? is_pipeline(cfg, name) : px_config_instance(cfg, name) != NULL) {
        return 0;
    }
    size_t count = pipeline ? cfg->npipelines : cfg->ninstances;
    const char **names = px_xcalloc(count + 1, sizeof(*names));
    for (size_t i = 0; i < count; i++) {
        names[i] = pipeline ? cfg->pipelines[i].name : cfg->instances[i].name;
    }
    char hint[160];
    px_suggest(name, names, count, hint, sizeof(hint));
    free(names);
    return fail(c, n, "%s \"%s\": %s has no such %s%s", what, name, cfg->path,
                pipeline ? "pipeline" : "instance", hint);
}

static int parse_event(rctx *c, px_ptest *t, const px_ynode *ev)
{
    static const char *const keys[] = {"source", "type", "id", "time", "payload", "metadata"};
    if (px_ynode_type(ev) != PX_YNODE_MAP) {
        return fail(c, ev, "event: expected a mapping (source, type, payload, ...), got %s",
                    kind_name(ev));
    }
    int rc = CHECK_KEYS(c, ev, keys, "the event");
    if (rc < 0) {
        return rc;
    }
    const px_ynode *src = px_ynode_get(ev, "source");
    if (src && px_ynode_type(src) == PX_YNODE_SCALAR &&
        (rc = check_name(c, src, "source", px_ynode_text(src))) < 0) {
        return rc;
    }
    json_t *doc = NULL;
    if ((rc = get_json(c, ev, &doc)) < 0) {
        return rc;
    }
    char msg[512];
    rc = px_route_input_parse(doc, c->now_ms, &t->input, msg, sizeof(msg));
    json_decref(doc);
    if (rc < 0) {
        /* name the member when the message starts with it */
        const px_ynode *at = ev;
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
            size_t kl = strlen(keys[i]);
            if (strncmp(msg, keys[i], kl) == 0 && (msg[kl] == ':' || msg[kl] == '.')) {
                at = px_ynode_get(ev, keys[i]);
            }
        }
        return fail(c, at, "event.%s", msg);
    }
    return 0;
}

static int parse_target(rctx *c, px_ptest_target *tg, const px_ynode *m)
{
    static const char *const keys[] = {"pipeline", "sink", "action", "with", "with_includes",
                                       "error"};
    px_ynode_mark(m, &tg->line, &tg->col);
    if (px_ynode_type(m) != PX_YNODE_MAP) {
        return fail(c, m, "expect.targets: each entry is a mapping (pipeline, sink, action, with, "
                    "with_includes, error), got %s", kind_name(m));
    }
    int rc = CHECK_KEYS(c, m, keys, "a target of expect.targets");
    if (rc < 0 || (rc = get_string(c, m, "pipeline", "target", &tg->pipeline)) < 0 ||
        (rc = get_string(c, m, "sink", "target", &tg->sink)) < 0 ||
        (rc = get_string(c, m, "action", "target", &tg->action)) < 0 ||
        (rc = get_string(c, m, "error", "target", &tg->error)) < 0) {
        return rc;
    }
    if (!tg->pipeline && !tg->sink) {
        return fail(c, m, "a target of expect.targets needs a pipeline or a sink to say which "
                    "one it is");
    }
    if ((tg->pipeline &&
         (rc = check_name(c, px_ynode_get(m, "pipeline"), "pipeline", tg->pipeline)) < 0) ||
        (tg->sink && (rc = check_name(c, px_ynode_get(m, "sink"), "sink", tg->sink)) < 0)) {
        return rc;
    }
    const px_ynode *with = px_ynode_get(m, "with");
    const px_ynode *inc = px_ynode_get(m, "with_includes");
    if (tg->error && (with || inc)) {
        return fail(c, with ? with : inc, "a target expects either a mapping error or a mapped "
                    "with:, not both");
    }
    if ((with && (rc = get_json(c, with, &tg->with)) < 0) ||
        (inc && (rc = get_json(c, inc, &tg->with_includes)) < 0)) {
        return rc;
    }
    return 0;
}

static int parse_expect(rctx *c, px_ptest *t, const px_ynode *ex)
{
    static const char *const keys[] = {"no_route", "pipelines", "targets"};
    if (px_ynode_type(ex) != PX_YNODE_MAP) {
        return fail(c, ex, "expect: expected a mapping (no_route, pipelines, targets), got %s",
                    kind_name(ex));
    }
    int rc = CHECK_KEYS(c, ex, keys, "expect");
    if (rc < 0) {
        return rc;
    }
    const px_ynode *nr = px_ynode_get(ex, "no_route");
    if (nr) {
        const char *v = px_ynode_text(nr);
        if (!v || px_ynode_is_string(nr) || (strcmp(v, "true") && strcmp(v, "false"))) {
            return fail(c, nr, "expect.no_route: expected true or false");
        }
        t->no_route = strcmp(v, "true") == 0;
    }
    const px_ynode *pl = px_ynode_get(ex, "pipelines");
    if (pl) {
        if (px_ynode_type(pl) != PX_YNODE_SEQ) {
            return fail(c, pl, "expect.pipelines: expected a list of pipeline names, got %s",
                        kind_name(pl));
        }
        t->has_pipelines = 1;
        t->pipelines = px_xcalloc(px_ynode_size(pl) + 1, sizeof(*t->pipelines));
        for (size_t i = 0; i < px_ynode_size(pl); i++) {
            const px_ynode *n = px_ynode_at(pl, i);
            if (px_ynode_type(n) != PX_YNODE_SCALAR) {
                return fail(c, n, "expect.pipelines: expected a pipeline name, got %s",
                            kind_name(n));
            }
            t->pipelines[t->npipelines++] = px_xstrdup(px_ynode_text(n));
            if ((rc = check_name(c, n, "pipeline", px_ynode_text(n))) < 0) {
                return rc;
            }
        }
    }
    const px_ynode *tg = px_ynode_get(ex, "targets");
    if (tg) {
        if (px_ynode_type(tg) != PX_YNODE_SEQ) {
            return fail(c, tg, "expect.targets: expected a list of targets, got %s",
                        kind_name(tg));
        }
        t->has_targets = 1;
        t->targets = px_xcalloc(px_ynode_size(tg) + 1, sizeof(*t->targets));
        for (size_t i = 0; i < px_ynode_size(tg); i++) {
            rc = parse_target(c, &t->targets[t->ntargets++], px_ynode_at(tg, i));
            if (rc < 0) {
                return rc;
            }
        }
    }
    if (t->no_route && ((t->has_targets && t->ntargets) || (t->has_pipelines && t->npipelines))) {
        return fail(c, ex, "expect: no_route: true contradicts the pipelines or targets listed");
    }
    if (!t->no_route && !t->has_pipelines && !t->has_targets) {
        return fail(c, ex, "expect: say what must happen: no_route: true, pipelines: [...] or "
                    "targets: [...]");
    }
    return 0;
}

static void test_clear(px_ptest *t)
{
    free(t->name);
    free(t->file);
    px_route_input_clear(&t->input);
    for (size_t i = 0; i < t->npipelines; i++) {
        free(t->pipelines[i]);
    }
    free(t->pipelines);
    for (size_t i = 0; i < t->ntargets; i++) {
        px_ptest_target *tg = &t->targets[i];
        free(tg->pipeline);
        free(tg->sink);
        free(tg->action);
        free(tg->error);
        json_decref(tg->with);
        json_decref(tg->with_includes);
    }
    free(t->targets);
}

static int parse_test(rctx *c, px_ptest *t, const px_ynode *m)
{
    static const char *const keys[] = {"name", "event", "expect"};
    t->file = px_xstrdup(c->file);
    px_ynode_mark(m, &t->line, &t->col);
    if (px_ynode_type(m) != PX_YNODE_MAP) {
        return fail(c, m, "tests: each test is a mapping (name, event, expect), got %s",
                    kind_name(m));
    }
    int rc = CHECK_KEYS(c, m, keys, "a test");
    if (rc < 0 || (rc = get_string(c, m, "name", "test", &t->name)) < 0) {
        return rc;
    }
    static const char *const required[] = {"name", "event", "expect"};
    for (size_t i = 0; i < 3; i++) {
        if (!px_ynode_get(m, required[i])) {
            return fail(c, m, "missing required key \"%s\" in a test%s%s%s", required[i],
                        t->name ? " (\"" : "", t->name ? t->name : "", t->name ? "\")" : "");
        }
    }
    if ((rc = parse_event(c, t, px_ynode_get(m, "event"))) < 0) {
        return rc;
    }
    return parse_expect(c, t, px_ynode_get(m, "expect"));
}

int px_ptest_parse(const char *file, const px_ynode *tests, const px_config *cfg,
                   long long now_ms, px_ptest_list *list, char *err, size_t errlen)
{
    rctx c = {.file = file, .cfg = cfg, .now_ms = now_ms, .err = err, .errlen = errlen};
    if (px_ynode_type(tests) != PX_YNODE_SEQ) {
        return fail(&c, tests, "tests: expected a list of tests, got %s", kind_name(tests));
    }
    for (size_t i = 0; i < px_ynode_size(tests); i++) {
        list->v = px_xrealloc(list->v, (list->n + 1) * sizeof(*list->v));
        px_ptest *t = &list->v[list->n++];
        memset(t, 0, sizeof(*t));
        int rc = parse_test(&c, t, px_ynode_at(tests, i));
        if (rc < 0) {
            return rc;
        }
    }
    return 0;
}

int px_ptest_load(const char *path, const px_config *cfg, long long now_ms, px_ptest_list *list,
                  char *err, size_t errlen)
{
    px_ynode *root = NULL;
    int rc = px_yaml_load(path, &root, err, errlen);
    if (rc < 0) {
        return rc;
    }
    rctx c = {.file = path, .cfg = cfg, .now_ms = now_ms, .err = err, .errlen = errlen};
    static const char *const keys[] = {"tests"};
    if (px_ynode_type(root) != PX_YNODE_MAP) {
        rc = fail(&c, root, "expected a mapping with a tests: list, got %s", kind_name(root));
    } else if ((rc = CHECK_KEYS(&c, root, keys, "a test file")) == 0) {
        const px_ynode *tests = px_ynode_get(root, "tests");
        rc = tests ? px_ptest_parse(path, tests, cfg, now_ms, list, err, errlen)
                   : fail(&c, root, "missing required key \"tests\" in a test file");
    }
    px_ynode_destroy(root);
    return rc;
}

void px_ptest_list_clear(px_ptest_list *list)
{
    for (size_t i = 0; i < list->n; i++) {
        test_clear(&list->v[i]);
    }
    free(list->v);
    list->v = NULL;
    list->n = 0;
}

/* --- comparing ----------------------------------------------------------------------------- */

/* Appends one RFC 6901 token (escaped) to path. */
static void path_push(char *path, size_t len, const char *token)
{
    size_t at = strlen(path);
    if (at + 1 >= len) {
        return;
    }
    path[at++] = '/';
    for (const char *s = token; *s && at + 2 < len; s++) {
        if (*s == '~' || *s == '/') {
            path[at++] = '~';
            path[at++] = *s == '~' ? '0' : '1';
        } else {
            path[at++] = *s;
        }
    }
    path[at] = '\0';
}

static int diff_at(const json_t *want, const json_t *got, int subset, char *path, size_t len,
                   const json_t **want_at, const json_t **got_at)
{
    if (!got || json_typeof(want) != json_typeof(got) ||
        (!json_is_object(want) && !json_is_array(want) && !json_equal(want, got))) {
        /* jansson tells integers and reals apart, as the router's conditions do */
        *want_at = want;
        *got_at = got;
        return 1;
    }
    size_t at = strlen(path);
    if (json_is_object(want)) {
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)want, key, v) {
            path_push(path, len, key);
            if (diff_at(v, json_object_get(got, key), subset, path, len, want_at, got_at)) {
                return 1;
            }
            path[at] = '\0';
        }
        if (!subset) {
            json_object_foreach((json_t *)got, key, v) {
                if (!json_object_get(want, key)) {
                    path_push(path, len, key);
                    *want_at = NULL;
                    *got_at = v;
                    return 1;
                }
            }
        }
        return 0;
    }
    if (json_is_array(want)) {
        size_t nw = json_array_size(want), ng = json_array_size(got);
        for (size_t i = 0; i < nw || i < ng; i++) {
            char idx[24];
            snprintf(idx, sizeof(idx), "%zu", i);
            path_push(path, len, idx);
            if (i >= nw) {
                *want_at = NULL;
                *got_at = json_array_get(got, i);
                return 1;
            }
            if (diff_at(json_array_get(want, i), json_array_get(got, i), subset, path, len,
                        want_at, got_at)) {
                return 1;
            }
            path[at] = '\0';
        }
    }
    return 0;
}

int px_json_first_diff(const json_t *want, const json_t *got, int subset, char *path, size_t len,
                       const json_t **want_at, const json_t **got_at)
{
    if (len) {
        path[0] = '\0';
    }
    *want_at = *got_at = NULL;
    return want ? diff_at(want, got, subset, path, len, want_at, got_at) : 0;
}

/* --- running ------------------------------------------------------------------------------- */

typedef struct report {
    char *p;
    size_t n;
} report;

__attribute__((format(printf, 2, 3))) static void say(report *r, const char *fmt, ...)
{
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int len = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (len < 0) {
        va_end(ap2);
        return;
    }
    r->p = px_xrealloc(r->p, r->n + (size_t)len + 1);
    vsnprintf(r->p + r->n, (size_t)len + 1, fmt, ap2);
    va_end(ap2);
    r->n += (size_t)len;
}

static char *show(const json_t *v)
{
    if (!v) {
        return px_xstrdup("(missing)");
    }
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    char *out = px_xstrdup(s ? s : "?");
    free(s);
    return out;
}

static const char *sget(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static void say_target(report *r, const json_t *got)
{
    say(r, "%s -> %s", sget(got, "pipeline"), sget(got, "sink"));
}

/* The names in a JSON list of targets or pipelines, for messages: "a -> x, b -> y". */
static void say_routed(report *r, const json_t *targets)
{
    size_t i;
    json_t *t;
    json_array_foreach(targets, i, t) {
        say(r, "%s", i ? ", " : "");
        say_target(r, t);
    }
    if (!json_array_size(targets)) {
        say(r, "none");
    }
}

static int target_fits(const px_ptest_target *tg, const json_t *got)
{
    return (!tg->pipeline || strcmp(tg->pipeline, sget(got, "pipeline")) == 0) &&
           (!tg->sink || strcmp(tg->sink, sget(got, "sink")) == 0);
}

static void check_with(report *r, const px_ptest_target *tg, const json_t *got,
                       const json_t *want, int subset, int *failed)
{
    char path[512];
    const json_t *w, *g;
    if (!want || !px_json_first_diff(want, json_object_get(got, "with"), subset, path,
                                      sizeof(path), &w, &g)) {
        return;
    }
    char *ws = show(w), *gs = show(g);
    say(r, "target ");
    say_target(r, got);
    say(r, ": with %s at %s\n  expected: %s\n  got:      %s\n",
        subset ? "does not include the expected value" : "differs", *path ? path : "(the whole "
        "value)", w ? ws : "(nothing: not expected)", gs);
    (void)tg;
    free(ws);
    free(gs);
    *failed = 1;
}

/* One expected target against the routed one it was paired with. */
static void check_target(report *r, const px_ptest_target *tg, const json_t *got, int *failed)
{
    const char *err = json_string_value(json_object_get(got, "error"));
    if (tg->action && strcmp(tg->action, sget(got, "action")) != 0) {
        say(r, "target ");
        say_target(r, got);
        say(r, ": action\n  expected: \"%s\"\n  got:      \"%s\"\n", tg->action,
            sget(got, "action"));
        *failed = 1;
    }
    if (tg->error) {
        if (!err) {
            say(r, "target ");
            say_target(r, got);
            say(r, ": expected a mapping error at %s, the mapping succeeded\n  got with: ",
                tg->error);
            char *gs = show(json_object_get(got, "with"));
            say(r, "%s\n", gs);
            free(gs);
            *failed = 1;
        } else if (strcmp(tg->error, err) != 0 && strcmp(tg->error, sget(got, "field")) != 0 &&
                   strcmp(tg->error, sget(got, "pointer")) != 0) {
            say(r, "target ");
            say_target(r, got);
            say(r, ": mapping error\n  expected: at %s\n  got:      %s\n", tg->error, err);
            *failed = 1;
        }
        return;
    }
    if (err) {
        say(r, "target ");
        say_target(r, got);
        say(r, ": mapping failed: %s\n", err);
        *failed = 1;
        return;
    }
    check_with(r, tg, got, tg->with, 0, failed);
    check_with(r, tg, got, tg->with_includes, 1, failed);
}

static void check_targets(report *r, const px_ptest *t, const json_t *targets, int *failed)
{
    size_t n = json_array_size(targets);
    unsigned char *used = px_xcalloc(n + 1, 1);
    size_t *pair = px_xcalloc(t->ntargets + 1, sizeof(*pair));
    for (size_t i = 0; i < t->ntargets; i++) {
        pair[i] = SIZE_MAX;
        for (size_t j = 0; j < n && pair[i] == SIZE_MAX; j++) {
            if (!used[j] && target_fits(&t->targets[i], json_array_get(targets, j))) {
                used[j] = 1;
                pair[i] = j;
            }
        }
    }
    for (size_t i = 0; i < t->ntargets; i++) {
        const px_ptest_target *tg = &t->targets[i];
        if (pair[i] == SIZE_MAX) {
            say(r, "expected target %s -> %s (line %d) was not routed; routed: ",
                tg->pipeline ? tg->pipeline : "*", tg->sink ? tg->sink : "*", tg->line);
            say_routed(r, targets);
            say(r, "\n");
            *failed = 1;
        } else {
            check_target(r, tg, json_array_get(targets, pair[i]), failed);
        }
    }
    for (size_t j = 0; j < n; j++) {
        if (!used[j]) {
            say(r, "unexpected target ");
            say_target(r, json_array_get(targets, j));
            say(r, " (not in expect.targets)\n");
            *failed = 1;
        }
    }
    free(used);
    free(pair);
}

static void check_pipelines(report *r, const px_ptest *t, const json_t *pipes, int *failed)
{
    json_t *want = json_array(), *got = json_array();
    for (size_t i = 0; i < t->npipelines; i++) {
        json_array_append_new(want, json_string(t->pipelines[i]));
    }
    size_t i;
    json_t *p;
    json_array_foreach(pipes, i, p) {
        if (json_is_true(json_object_get(p, "matched"))) {
            json_array_append_new(got, json_string(sget(p, "name")));
        }
    }
    char path[64];
    const json_t *w, *g;
    if (px_json_first_diff(want, got, 0, path, sizeof(path), &w, &g)) {
        char *ws = show(want), *gs = show(got);
        say(r, "pipelines taking the event differ at %s\n  expected: %s\n  got:      %s\n",
            *path ? path : "(the whole value)", ws, gs);
        free(ws);
        free(gs);
        /* why an expected one did not take it */
        for (size_t k = 0; k < t->npipelines; k++) {
            json_array_foreach(pipes, i, p) {
                if (strcmp(sget(p, "name"), t->pipelines[k]) == 0 &&
                    !json_is_true(json_object_get(p, "matched"))) {
                    say(r, "  %s: %s\n", t->pipelines[k], sget(p, "reason"));
                }
            }
        }
        *failed = 1;
    }
    json_decref(want);
    json_decref(got);
}

int px_ptest_run(const px_router *r, const px_ptest *t, char **out)
{
    *out = NULL;
    json_t *doc = px_route_explain(r, &t->input);
    const json_t *targets = json_object_get(doc, "targets");
    report rep = {0};
    int failed = 0;
    if (t->no_route && json_array_size(targets)) {
        say(&rep, "expected no route, got: ");
        say_routed(&rep, targets);
        say(&rep, "\n");
        failed = 1;
    }
    if (t->has_pipelines) {
        check_pipelines(&rep, t, json_object_get(doc, "pipelines"), &failed);
    }
    if (t->has_targets) {
        check_targets(&rep, t, targets, &failed);
    }
    json_decref(doc);
    if (failed) {
        *out = rep.p;
        return 1;
    }
    free(rep.p);
    return 0;
}
