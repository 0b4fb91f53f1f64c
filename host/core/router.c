/* The router: pipelines copied out of a px_config and compiled (condition pointers, target
 * mappings) so that routing an event walks prepared data only. Matching order is pipeline order,
 * then target order; the result array is the one allocation routing itself makes. */
#include "router.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "errbuf.h"
#include "mem.h"

typedef struct rcond {
    px_pointer *ptr;
    int op;        /* enum px_cond_op */
    json_t *value; /* owned copy */
} rcond;

typedef struct rtarget {
    char *sink;
    char *action;
    px_mapping *map;
} rtarget;

typedef struct rpipe {
    char *name;
    char *from;
    int any_from; /* from == "*" */
    char **types;
    size_t ntypes;
    rcond *conds;
    size_t nconds;
    rtarget *to;
    size_t nto;
    px_retry_policy retry;
} rpipe;

struct px_router {
    rpipe *pipes;
    size_t npipes;
};

int px_glob_match(const char *pattern, const char *s)
{
    /* Greedy match with one backtrack point, the last '*' seen: on a mismatch, let that star
     * swallow one more character. Linear enough for event type names, and no recursion. */
    const char *star = NULL, *resume = NULL;
    while (*s) {
        if (*pattern == '*') {
            star = pattern++;
            resume = s;
        } else if (*pattern == '?' || *pattern == *s) {
            pattern++;
            s++;
        } else if (star) {
            pattern = star + 1;
            s = ++resume;
        } else {
            return 0;
        }
    }
    while (*pattern == '*') {
        pattern++;
    }
    return *pattern == '\0';
}

static void pipe_free(rpipe *p)
{
    free(p->name);
    free(p->from);
    for (size_t i = 0; i < p->ntypes; i++) {
        free(p->types[i]);
    }
    free(p->types);
    for (size_t i = 0; i < p->nconds; i++) {
        px_pointer_destroy(p->conds[i].ptr);
        json_decref(p->conds[i].value);
    }
    free(p->conds);
    for (size_t i = 0; i < p->nto; i++) {
        free(p->to[i].sink);
        free(p->to[i].action);
        px_mapping_destroy(p->to[i].map);
    }
    free(p->to);
}

void px_router_destroy(px_router *r)
{
    if (!r) {
        return;
    }
    for (size_t i = 0; i < r->npipes; i++) {
        pipe_free(&r->pipes[i]);
    }
    free(r->pipes);
    free(r);
}

static int cond_copy(const char *file, const px_pipeline_conf *pc, const px_cond *c, rcond *rc,
                     char *err, size_t errlen)
{
    const char *ptr = c->pointer ? c->pointer : "";
    char perr[256];
    if (px_pointer_compile(ptr, &rc->ptr, perr, sizeof(perr)) != 0) {
        px_errf(err, errlen, "%s: pipeline %s: when.match %s: %s", file, pc->name, ptr, perr);
        return PX_ECONFIG;
    }
    rc->op = c->op;
    switch (c->op) {
    case PX_COND_EQUALS:
        if (!c->value) {
            px_errf(err, errlen, "%s: pipeline %s: when.match %s: equals needs a value", file,
                 pc->name, ptr);
            return PX_ECONFIG;
        }
        break;
    case PX_COND_IN:
        if (!json_is_array(c->value)) {
            px_errf(err, errlen, "%s: pipeline %s: when.match %s: in needs a list", file,
                 pc->name, ptr);
            return PX_ECONFIG;
        }
        break;
    case PX_COND_EXISTS:
        if (!json_is_boolean(c->value)) {
            px_errf(err, errlen, "%s: pipeline %s: when.match %s: exists needs true or false",
                 file, pc->name, ptr);
            return PX_ECONFIG;
        }
        break;
    default:
        px_errf(err, errlen, "%s: pipeline %s: when.match %s: unknown condition %d", file,
             pc->name, ptr, c->op);
        return PX_ECONFIG;
    }
    rc->value = json_deep_copy(c->value);
    if (!rc->value) {
        fprintf(stderr, "plexus: out of memory copying json at %s:%d\n", __FILE__, __LINE__);
        abort();
    }
    return 0;
}

static int pipe_copy(const char *file, const px_pipeline_conf *pc, rpipe *p, char *err,
                     size_t errlen)
{
    p->name = px_xstrdup(pc->name ? pc->name : "");
    p->from = px_xstrdup(pc->from ? pc->from : "*");
    p->any_from = strcmp(p->from, "*") == 0;
    p->retry = pc->retry;
    p->types = px_xcalloc(pc->ntypes ? pc->ntypes : 1, sizeof(*p->types));
    for (size_t i = 0; i < pc->ntypes; i++) {
        p->types[p->ntypes++] = px_xstrdup(pc->types[i] ? pc->types[i] : "");
    }
    p->conds = px_xcalloc(pc->nconds ? pc->nconds : 1, sizeof(*p->conds));
    for (size_t i = 0; i < pc->nconds; i++) {
        int rc = cond_copy(file, pc, &pc->conds[i], &p->conds[p->nconds], err, errlen);
        p->nconds++; /* counted even when partly built, so that pipe_free releases it */
        if (rc != 0) {
            return rc;
        }
    }
    p->to = px_xcalloc(pc->nto ? pc->nto : 1, sizeof(*p->to));
    for (size_t i = 0; i < pc->nto; i++) {
        const px_target *t = &pc->to[i];
        rtarget *rt = &p->to[p->nto++];
        rt->sink = px_xstrdup(t->sink ? t->sink : "");
        rt->action = px_xstrdup(t->action ? t->action : "");
        json_t *empty = NULL;
        const json_t *tmpl = t->with;
        if (!tmpl) {
            tmpl = empty = json_object();
        }
        char merr[512];
        int rc = px_mapping_compile(tmpl, &rt->map, merr, sizeof(merr));
        json_decref(empty);
        if (rc != 0) {
            px_errf(err, errlen, "%s:%d:%d: pipeline %s, sink %s: %s", file, t->line, t->col,
                 p->name, rt->sink, merr);
            return PX_ECONFIG;
        }
    }
    return 0;
}

int px_router_create(const px_config *cfg, px_router **out, char *err, size_t errlen)
{
    const char *file = cfg->path ? cfg->path : "config";
    px_router *r = px_xcalloc(1, sizeof(*r));
    r->pipes = px_xcalloc(cfg->npipelines ? cfg->npipelines : 1, sizeof(*r->pipes));
    for (size_t i = 0; i < cfg->npipelines; i++) {
        int rc = pipe_copy(file, &cfg->pipelines[i], &r->pipes[r->npipes], err, errlen);
        r->npipes++;
        if (rc != 0) {
            px_router_destroy(r);
            return rc;
        }
    }
    *out = r;
    return 0;
}

size_t px_router_count(const px_router *r)
{
    return r->npipes;
}

const char *px_router_name(const px_router *r, size_t i)
{
    return i < r->npipes ? r->pipes[i].name : NULL;
}

static int cond_holds(const rcond *c, const px_mapping_env *env)
{
    json_t *v = px_pointer_eval(c->ptr, env);
    int ok = 0;
    switch (c->op) {
    case PX_COND_EQUALS:
        ok = v && json_equal(v, c->value);
        break;
    case PX_COND_IN:
        for (size_t i = 0; v && !ok && i < json_array_size(c->value); i++) {
            ok = json_equal(v, json_array_get(c->value, i));
        }
        break;
    case PX_COND_EXISTS:
        ok = (v != NULL) == json_is_true(c->value);
        break;
    default:
        break;
    }
    json_decref(v);
    return ok;
}

/* Why a pipeline does not take an event: the first rule that fails. */
enum { WHY_MATCH = 0, WHY_FROM, WHY_TYPE, WHY_COND };

/* Checks pipeline p against the event in pipeline order of rules (from, type, conditions);
 * returns WHY_MATCH or the rule that failed, with the failing condition's index in *cond. */
static int pipe_check(const rpipe *p, const char *source, const px_mapping_env *env, size_t *cond)
{
    if (!p->any_from && (!source || strcmp(p->from, source) != 0)) {
        return WHY_FROM;
    }
    if (p->ntypes > 0) {
        const char *type = env->type ? env->type : "";
        size_t i = 0;
        while (i < p->ntypes && !px_glob_match(p->types[i], type)) {
            i++;
        }
        if (i == p->ntypes) {
            return WHY_TYPE;
        }
    }
    for (size_t i = 0; i < p->nconds; i++) {
        if (!cond_holds(&p->conds[i], env)) {
            *cond = i;
            return WHY_COND;
        }
    }
    return WHY_MATCH;
}

static int pipe_matches(const rpipe *p, const char *source, const px_mapping_env *env)
{
    size_t cond = 0;
    return pipe_check(p, source, env, &cond) == WHY_MATCH;
}

static const char *op_name(int op)
{
    return op == PX_COND_EQUALS ? "equals" : op == PX_COND_IN ? "in" : "exists";
}

/* Compact JSON of v (borrowed) into buf, shortened with "..." past len. */
static void json_brief(const json_t *v, char *buf, size_t len)
{
    char *text = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    const char *s = text ? text : "nothing";
    if (strlen(s) < len) {
        snprintf(buf, len, "%s", s);
    } else if (len > 4) {
        snprintf(buf, len, "%.*s...", (int)(len - 4), s);
    }
    free(text);
}

const char *px_router_why_not(const px_router *r, size_t i, const char *source,
                              const px_mapping_env *env, char *buf, size_t len)
{
    if (i >= r->npipes) {
        return NULL;
    }
    const rpipe *p = &r->pipes[i];
    size_t ci = 0;
    switch (pipe_check(p, source, env, &ci)) {
    case WHY_FROM:
        if (source) {
            snprintf(buf, len, "from: \"%s\", the event comes from \"%s\"", p->from, source);
        } else {
            snprintf(buf, len, "from: \"%s\", the event names no source", p->from);
        }
        return buf;
    case WHY_TYPE: {
        size_t off = (size_t)snprintf(buf, len, "type \"%s\" is not ",
                                      env->type ? env->type : "");
        for (size_t t = 0; t < p->ntypes && off < len; t++) {
            off += (size_t)snprintf(buf + off, len - off, "%s\"%s\"",
                                    t == 0 ? (p->ntypes > 1 ? "one of " : "") : ", ",
                                    p->types[t]);
        }
        return buf;
    }
    case WHY_COND: {
        const rcond *c = &p->conds[ci];
        json_t *v = px_pointer_eval(c->ptr, env);
        char want[96], got[96];
        json_brief(c->value, want, sizeof(want));
        json_brief(v, got, sizeof(got));
        snprintf(buf, len, "when.match %s %s %s: %s%s", px_pointer_text(c->ptr),
                 op_name(c->op), want, v ? "got " : "", v ? got : "missing");
        json_decref(v);
        return buf;
    }
    default:
        return NULL;
    }
}

size_t px_router_route(const px_router *r, const char *source, const px_mapping_env *env,
                       px_route **routes)
{
    /* Pass one decides which pipelines match and counts their targets, so that the result is
     * allocated once at its exact size; matches are remembered in a bitmap (on the stack for any
     * sane number of pipelines) rather than evaluated twice. */
    uint64_t stackbits[8];
    uint64_t *bits = stackbits;
    size_t words = (r->npipes + 63) / 64;
    if (words > sizeof(stackbits) / sizeof(stackbits[0])) {
        bits = px_xcalloc(words, sizeof(*bits));
    } else {
        memset(stackbits, 0, sizeof(stackbits));
    }
    size_t total = 0;
    for (size_t i = 0; i < r->npipes; i++) {
        if (pipe_matches(&r->pipes[i], source, env)) {
            bits[i / 64] |= UINT64_C(1) << (i % 64);
            total += r->pipes[i].nto;
        }
    }
    *routes = NULL;
    if (total > 0) {
        px_route *res = px_xcalloc(total, sizeof(*res));
        size_t n = 0;
        for (size_t i = 0; i < r->npipes; i++) {
            if (!(bits[i / 64] & (UINT64_C(1) << (i % 64)))) {
                continue;
            }
            const rpipe *p = &r->pipes[i];
            for (size_t t = 0; t < p->nto; t++) {
                px_route *rt = &res[n++];
                rt->pipeline = p->name;
                rt->sink = p->to[t].sink;
                rt->action = p->to[t].action;
                rt->retry = &p->retry;
                char merr[512] = "mapping failed";
                if (px_mapping_apply(p->to[t].map, env, &rt->params, merr, sizeof(merr)) != 0) {
                    rt->params = NULL;
                    rt->error = px_xstrdup(merr);
                }
            }
        }
        *routes = res;
    }
    if (bits != stackbits) {
        free(bits);
    }
    return total;
}

void px_routes_free(px_route *routes, size_t n)
{
    if (!routes) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        json_decref(routes[i].params);
        free(routes[i].error);
    }
    free(routes);
}
