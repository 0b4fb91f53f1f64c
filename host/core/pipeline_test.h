/* Pipeline tests: an input event and what the configuration's routing must make of it, declared
 * in YAML (a `tests:` list in the configuration or in files beside it; docs/operations.md has the
 * format), checked with the host's own router and mappings (route_explain.h). Reading keeps
 * every position so that a malformed test is reported as "file:line:column: message"; a failed
 * expectation is reported with what was expected, what came out and the JSON pointer of the first
 * difference. Pure module: no plugin, no loop. */
#ifndef PX_PIPELINE_TEST_H
#define PX_PIPELINE_TEST_H

#include <stddef.h>

#include <jansson.h>

#include "config.h"
#include "route_explain.h"
#include "router.h"

/* What one routed target must be. NULL / unset members are not checked. */
typedef struct px_ptest_target {
    char *pipeline, *sink, *action; /* owned; which target this is (pipeline and/or sink) */
    json_t *with;                   /* owned: the mapped `with:` equals this */
    json_t *with_includes;          /* owned: the mapped `with:` includes this (JSON subset) */
    char *error;                    /* owned: the mapping fails on this field ("with.a.b"), pointer
                                     * ("/data/email") or whole message; NULL: it must succeed */
    int line, col;
} px_ptest_target;

typedef struct px_ptest {
    char *name;                /* owned */
    char *file;                /* owned: where the test is written */
    int line, col;
    px_route_input input;      /* the event */
    int no_route;              /* expect: no_route: true */
    char **pipelines;          /* owned: expect.pipelines, the pipelines that take the event, in */
    size_t npipelines;         /* configuration order; checked when has_pipelines */
    int has_pipelines;
    px_ptest_target *targets;  /* owned: expect.targets, exactly these targets in any order; */
    size_t ntargets;           /* checked when has_targets */
    int has_targets;
} px_ptest;

typedef struct px_ptest_list {
    px_ptest *v; /* owned */
    size_t n;
} px_ptest_list;

/* Appends to list the tests under `tests` (borrowed: the value of a `tests:` key, a list) read
 * from file (borrowed), checked against cfg (borrowed): every source, pipeline and sink named must
 * exist there. now_ms is the event time of tests that give none. Returns 0, or PX_ECONFIG with
 * one "file:line:column: message" line in err (tests appended before the error stay in list). */
int px_ptest_parse(const char *file, const px_ynode *tests, const px_config *cfg,
                   long long now_ms, px_ptest_list *list, char *err, size_t errlen);

/* Reads a test file (path borrowed): a mapping whose only key is `tests:`. As px_ptest_parse. */
int px_ptest_load(const char *path, const px_config *cfg, long long now_ms, px_ptest_list *list,
                  char *err, size_t errlen);

void px_ptest_list_clear(px_ptest_list *list);

/* Runs t (borrowed) through r (borrowed). Returns 0 when every expectation holds, else 1 and a
 * report in *report (owned by caller; free): one or more lines, each ending in '\n', e.g.
 * "target leads-to-crm -> crm: with differs at /contact/email\n  expected: \"a@b.c\"\n  got:
 * (missing)\n". *report is NULL on a pass. */
int px_ptest_run(const px_router *r, const px_ptest *t, char **report);

/* The first difference between want and got (both borrowed; got may be NULL: missing). subset:
 * an object of want need only be included in got (got may have more members); arrays compare
 * element by element and must have the same length. Returns 0 when there is none; else 1, the JSON
 * pointer of the place in path (len bytes, "" = the whole value) and the two values there in
 * *want_at and *got_at (borrowed; NULL: absent on that side). */
int px_json_first_diff(const json_t *want, const json_t *got, int subset, char *path, size_t len,
                       const json_t **want_at, const json_t **got_at);

#endif
