/* The `with:` mapping language: compiles a JSON template into a tree of literal, reference and
 * text nodes once, then evaluates it per event. Also RFC 6901 pointers, compiled (tokens decoded,
 * array indexes parsed ahead) and ad hoc. The language itself is specified in
 * docs/configuration.md; keep the two in step. */
#include "mapping.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "errbuf.h"
#include "mem.h"

/* Fields of the event reachable through /$event/<field>. */
enum { FIELD_PAYLOAD = 0, FIELD_TYPE, FIELD_ID, FIELD_SOURCE, FIELD_TIME };

typedef struct ptr_token {
    char *key;      /* decoded (~0, ~1 resolved), NUL-terminated */
    size_t keylen;
    long long idx;  /* the token as an array index, or -1 when it is not one */
} ptr_token;

struct px_pointer {
    char *text; /* as written */
    int field;  /* FIELD_* */
    ptr_token *toks;
    size_t ntoks;
};

enum { NODE_LIT = 1, NODE_REF, NODE_TEXT, NODE_OBJ, NODE_ARR };

/* One piece of a text node: literal bytes, or a reference. */
typedef struct text_part {
    char *lit; /* literal text (litlen bytes; it may contain NUL); NULL for a reference */
    size_t litlen;
    px_pointer *ptr; /* the reference when lit is NULL */
    int optional;
} text_part;

typedef struct node node;
struct node {
    int kind;
    char *path;      /* "with.a[2].b": where this node sits, for messages (refs and texts only) */
    json_t *lit;     /* NODE_LIT: the value (owned) */
    px_pointer *ptr; /* NODE_REF */
    int optional;    /* NODE_REF */
    text_part *parts; /* NODE_TEXT */
    size_t nparts;
    char **keys; /* NODE_OBJ: keys, parallel to kids */
    node *kids;  /* NODE_OBJ / NODE_ARR */
    size_t nkids;
};

struct px_mapping {
    node root;
    int has_refs;
};

/* jansson constructors return NULL only when out of memory; the host's policy is to die then
 * (see mem.h). */
#define jx(v) jx_((v), __FILE__, __LINE__)
static json_t *jx_(json_t *v, const char *file, int line)
{
    if (!v) {
        fprintf(stderr, "plexus: out of memory building json at %s:%d\n", file, line);
        abort();
    }
    return v;
}

static void jset(json_t *obj, const char *key, json_t *v)
{
    if (json_object_set_new(obj, key, v) != 0) {
        jx(NULL);
    }
}

static void jappend(json_t *arr, json_t *v)
{
    if (json_array_append_new(arr, v) != 0) {
        jx(NULL);
    }
}

/* ---- pointers ----------------------------------------------------------------------------- */

/* An RFC 6901 array index: "0", or digits without a leading zero. -1 when not one. */
static long long parse_index(const char *s, size_t n)
{
    if (n == 0 || n > 18 || (n > 1 && s[0] == '0')) {
        return -1;
    }
    long long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* Decodes one reference token s[0..n) into out (room for n + 1 bytes). Returns the decoded
 * length, or -1 on a '~' not followed by '0' or '1'. */
static long decode_token(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '~') {
            out[o++] = s[i];
        } else if (i + 1 < n && (s[i + 1] == '0' || s[i + 1] == '1')) {
            out[o++] = s[i + 1] == '0' ? '~' : '/';
            i++;
        } else {
            return -1;
        }
    }
    out[o] = '\0';
    return (long)o;
}

static const json_t *step(const json_t *cur, const char *key, size_t keylen, long long idx)
{
    if (json_is_object(cur)) {
        return json_object_get(cur, key);
    }
    if (json_is_array(cur)) {
        if (idx < 0) {
            idx = parse_index(key, keylen);
        }
        if (idx < 0 || (size_t)idx >= json_array_size(cur)) {
            return NULL;
        }
        return json_array_get(cur, (size_t)idx);
    }
    return NULL;
}

json_t *px_json_pointer_get(const json_t *doc, const char *pointer)
{
    if (!doc || !pointer) {
        return NULL;
    }
    if (pointer[0] == '\0') {
        return (json_t *)doc;
    }
    if (pointer[0] != '/') {
        return NULL;
    }
    /* Tokens are decoded into a stack buffer; only unusually long keys cost an allocation. */
    char stackbuf[256];
    char *buf = stackbuf;
    size_t cap = sizeof(stackbuf);
    const json_t *cur = doc;
    const char *p = pointer + 1;
    for (;;) {
        const char *end = strchr(p, '/');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n + 1 > cap) {
            if (buf != stackbuf) {
                free(buf);
            }
            cap = n + 1;
            buf = px_xmalloc(cap);
        }
        long len = decode_token(p, n, buf);
        cur = len < 0 ? NULL : step(cur, buf, (size_t)len, -1);
        if (!cur || !end) {
            break;
        }
        p = end + 1;
    }
    if (buf != stackbuf) {
        free(buf);
    }
    return (json_t *)cur;
}

void px_pointer_destroy(px_pointer *p)
{
    if (!p) {
        return;
    }
    for (size_t i = 0; i < p->ntoks; i++) {
        free(p->toks[i].key);
    }
    free(p->toks);
    free(p->text);
    free(p);
}

/* Compiles text[0..n). Messages do not carry a path; callers prefix one. */
static int pointer_compile(const char *text, size_t n, px_pointer **out, char *err,
                           size_t errlen)
{
    if (memchr(text, '\0', n)) {
        px_errf(err, errlen, "pointer contains a NUL character");
        return PX_EINVAL;
    }
    if (n > 0 && text[0] != '/') {
        px_errf(err, errlen, "pointer must start with '/' (got \"%.*s\")", (int)n, text);
        return PX_EINVAL;
    }
    px_pointer *p = px_xcalloc(1, sizeof(*p));
    p->text = px_xstrndup(text, n);
    size_t cap = 0;
    for (size_t i = 0; i < n; i++) {
        cap += text[i] == '/';
    }
    p->toks = px_xcalloc(cap ? cap : 1, sizeof(*p->toks));
    const char *s = text + 1;
    const char *end = text + n;
    while (n > 0) {
        const char *slash = memchr(s, '/', (size_t)(end - s));
        size_t len = slash ? (size_t)(slash - s) : (size_t)(end - s);
        ptr_token *t = &p->toks[p->ntoks];
        t->key = px_xmalloc(len + 1);
        long dl = decode_token(s, len, t->key);
        if (dl < 0) {
            free(t->key);
            px_errf(err, errlen, "bad escape in pointer %s ('~' must be followed by 0 or 1)",
                    p->text);
            goto fail;
        }
        t->keylen = (size_t)dl;
        t->idx = parse_index(t->key, t->keylen);
        p->ntoks++;
        if (!slash) {
            break;
        }
        s = slash + 1;
    }
    if (p->ntoks > 0 && strcmp(p->toks[0].key, "$event") == 0) {
        static const char *const names[] = {NULL, "type", "id", "source", "time"};
        int field = 0;
        if (p->ntoks == 2) {
            for (int f = FIELD_TYPE; f <= FIELD_TIME; f++) {
                if (strcmp(p->toks[1].key, names[f]) == 0) {
                    field = f;
                }
            }
        }
        if (!field) {
            px_errf(err, errlen,
                    "unknown event field %s (use /$event/type, /$event/id, /$event/source or "
                    "/$event/time)",
                    p->text);
            goto fail;
        }
        p->field = field;
    }
    *out = p;
    return 0;
fail:
    px_pointer_destroy(p);
    return PX_EINVAL;
}

int px_pointer_compile(const char *pointer, px_pointer **out, char *err, size_t errlen)
{
    if (!pointer || !out) {
        px_errf(err, errlen, "no pointer");
        return PX_EINVAL;
    }
    return pointer_compile(pointer, strlen(pointer), out, err, errlen);
}

const char *px_pointer_text(const px_pointer *p)
{
    return p->text;
}

/* The payload, parsed on first use when the env was given a loader. */
static const json_t *env_payload(const px_mapping_env *env)
{
    if (!env->payload && env->payload_fn) {
        return env->payload_fn(env->payload_arg);
    }
    return env->payload;
}

/* Resolves a payload pointer; borrowed result or NULL. */
static const json_t *resolve_payload(const px_pointer *p, const json_t *payload)
{
    const json_t *cur = payload;
    for (size_t i = 0; cur && i < p->ntoks; i++) {
        cur = step(cur, p->toks[i].key, p->toks[i].keylen, p->toks[i].idx);
    }
    return cur;
}

static const char *event_string(const px_pointer *p, const px_mapping_env *env)
{
    switch (p->field) {
    case FIELD_TYPE:
        return env->type;
    case FIELD_ID:
        return env->id;
    case FIELD_SOURCE:
        return env->source;
    default:
        return NULL;
    }
}

json_t *px_pointer_eval(const px_pointer *p, const px_mapping_env *env)
{
    if (p->field == FIELD_PAYLOAD) {
        return json_incref((json_t *)resolve_payload(p, env_payload(env)));
    }
    if (p->field == FIELD_TIME) {
        return jx(json_integer(env->time_ms));
    }
    const char *s = event_string(p, env);
    return s ? jx(json_string(s)) : NULL;
}

/* ---- compile ------------------------------------------------------------------------------ */

static void node_free(node *n)
{
    free(n->path);
    json_decref(n->lit);
    px_pointer_destroy(n->ptr);
    for (size_t i = 0; i < n->nparts; i++) {
        free(n->parts[i].lit);
        px_pointer_destroy(n->parts[i].ptr);
    }
    free(n->parts);
    for (size_t i = 0; i < n->nkids; i++) {
        if (n->keys) {
            free(n->keys[i]);
        }
        node_free(&n->kids[i]);
    }
    free(n->keys);
    free(n->kids);
}

static int is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* A growing byte buffer, always NUL-terminated once written. It may start on caller storage
 * (`fixed`), moving to the heap only when that is outgrown. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
    char *fixed;
} sbuf;

static void sbuf_add(sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1) {
            cap *= 2;
        }
        if (b->p && b->p == b->fixed) {
            char *q = px_xmalloc(cap);
            memcpy(q, b->p, b->len);
            b->p = q;
        } else {
            b->p = px_xrealloc(b->p, cap);
        }
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static text_part *add_part(node *n, size_t *cap)
{
    if (n->nparts == *cap) {
        *cap = *cap ? *cap * 2 : 4;
        n->parts = px_xrealloc(n->parts, *cap * sizeof(*n->parts));
    }
    text_part *tp = &n->parts[n->nparts++];
    memset(tp, 0, sizeof(*tp));
    return tp;
}

static void flush_lit(node *n, size_t *cap, sbuf *lit)
{
    if (lit->len == 0) {
        return;
    }
    text_part *tp = add_part(n, cap);
    tp->lit = lit->p;
    tp->litlen = lit->len;
    lit->p = NULL;
    lit->len = lit->cap = 0;
}

/* Parses string s[0..len) (the value at `path`) into n: a literal, a whole-value reference or a
 * text node. The grammar is the one in docs/configuration.md. */
static int compile_string(const char *s, size_t len, const char *path, node *n, int *has_refs,
                          char *err, size_t errlen)
{
    sbuf lit = {0};
    size_t cap = 0;
    size_t i = 0;
    n->kind = NODE_TEXT;
    while (i < len) {
        if (s[i] == '\\' && i + 2 < len && s[i + 1] == '{' && s[i + 2] == '{') {
            sbuf_add(&lit, "{{", 2);
            i += 3;
            continue;
        }
        /* In a run of '{', the last two open the reference: "{{{/a}}}" is "{" + ref. */
        if (s[i] != '{' || i + 1 >= len || s[i + 1] != '{' || (i + 2 < len && s[i + 2] == '{')) {
            sbuf_add(&lit, s + i, 1);
            i++;
            continue;
        }
        size_t start = i + 2, close = start;
        while (close + 1 < len && !(s[close] == '}' && s[close + 1] == '}')) {
            close++;
        }
        if (close + 1 >= len) {
            px_errf(err, errlen, "%s: '{{' without '}}'", path);
            goto fail;
        }
        size_t a = start, b = close;
        while (a < b && is_blank(s[a])) {
            a++;
        }
        while (b > a && is_blank(s[b - 1])) {
            b--;
        }
        int optional = 0;
        if (b > a && s[b - 1] == '?') {
            optional = 1;
            b--;
            while (b > a && is_blank(s[b - 1])) {
                b--;
            }
        }
        char perr[256];
        px_pointer *ptr;
        if (pointer_compile(s + a, b - a, &ptr, perr, sizeof(perr)) != 0) {
            px_errf(err, errlen, "%s: %s", path, perr);
            goto fail;
        }
        flush_lit(n, &cap, &lit);
        text_part *tp = add_part(n, &cap);
        tp->ptr = ptr;
        tp->optional = optional;
        *has_refs = 1;
        i = close + 2;
    }
    if (n->nparts == 0) {
        /* No reference: a plain string literal (escapes already resolved). */
        n->kind = NODE_LIT;
        n->lit = jx(json_stringn_nocheck(lit.p ? lit.p : "", lit.len));
        free(lit.p);
        return 0;
    }
    flush_lit(n, &cap, &lit);
    if (n->nparts == 1 && n->parts[0].ptr) {
        n->kind = NODE_REF;
        n->ptr = n->parts[0].ptr;
        n->optional = n->parts[0].optional;
        free(n->parts);
        n->parts = NULL;
        n->nparts = 0;
    }
    n->path = px_xstrdup(path);
    return 0;
fail:
    free(lit.p);
    return PX_EINVAL;
}

static int compile_node(const json_t *v, const char *path, node *n, int *has_refs, char *err,
                        size_t errlen)
{
    memset(n, 0, sizeof(*n));
    if (json_is_string(v)) {
        return compile_string(json_string_value(v), json_string_length(v), path, n, has_refs,
                              err, errlen);
    }
    if (json_is_object(v)) {
        n->kind = NODE_OBJ;
        size_t cnt = json_object_size(v);
        n->keys = px_xcalloc(cnt ? cnt : 1, sizeof(*n->keys));
        n->kids = px_xcalloc(cnt ? cnt : 1, sizeof(*n->kids));
        const char *key;
        json_t *val;
        json_object_foreach((json_t *)v, key, val) {
            char *sub = px_xasprintf("%s.%s", path, key);
            n->keys[n->nkids] = px_xstrdup(key);
            int rc = compile_node(val, sub, &n->kids[n->nkids], has_refs, err, errlen);
            free(sub);
            n->nkids++; /* counted even when partly built, so that node_free releases it */
            if (rc != 0) {
                return rc;
            }
        }
        return 0;
    }
    if (json_is_array(v)) {
        n->kind = NODE_ARR;
        size_t cnt = json_array_size(v);
        n->kids = px_xcalloc(cnt ? cnt : 1, sizeof(*n->kids));
        for (size_t i = 0; i < cnt; i++) {
            char *sub = px_xasprintf("%s[%zu]", path, i);
            int rc = compile_node(json_array_get(v, i), sub, &n->kids[n->nkids], has_refs, err,
                                  errlen);
            free(sub);
            n->nkids++;
            if (rc != 0) {
                return rc;
            }
        }
        return 0;
    }
    n->kind = NODE_LIT;
    n->lit = jx(json_deep_copy(v));
    return 0;
}

int px_mapping_compile(const json_t *tmpl, px_mapping **out, char *err, size_t errlen)
{
    if (!tmpl || !out) {
        px_errf(err, errlen, "with: no template");
        return PX_EINVAL;
    }
    px_mapping *m = px_xcalloc(1, sizeof(*m));
    int rc = compile_node(tmpl, "with", &m->root, &m->has_refs, err, errlen);
    if (rc != 0) {
        px_mapping_destroy(m);
        return rc;
    }
    *out = m;
    return 0;
}

void px_mapping_destroy(px_mapping *m)
{
    if (!m) {
        return;
    }
    node_free(&m->root);
    free(m);
}

int px_mapping_has_refs(const px_mapping *m)
{
    return m->has_refs;
}

/* ---- apply -------------------------------------------------------------------------------- */

/* Text of a real: the shortest "%.Ng" that reads back to the same double, always with a '.' or
 * an exponent so it still reads as a real (1.0 -> "1.0", 0.1 -> "0.1"). */
static void render_real(sbuf *b, double v)
{
    char tmp[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof(tmp), "%.*g", prec, v);
        if (strtod(tmp, NULL) == v) {
            break;
        }
    }
    sbuf_add(b, tmp, strlen(tmp));
    if (!strpbrk(tmp, ".eE") && isfinite(v)) {
        sbuf_add(b, ".0", 2);
    }
}

static int dump_cb(const char *buffer, size_t size, void *data)
{
    sbuf_add(data, buffer, size);
    return 0;
}

static void render_value(sbuf *b, const json_t *v)
{
    char tmp[32];
    switch (json_typeof(v)) {
    case JSON_STRING:
        sbuf_add(b, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        snprintf(tmp, sizeof(tmp), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        sbuf_add(b, tmp, strlen(tmp));
        break;
    case JSON_REAL:
        render_real(b, json_real_value(v));
        break;
    case JSON_TRUE:
        sbuf_add(b, "true", 4);
        break;
    case JSON_FALSE:
        sbuf_add(b, "false", 5);
        break;
    case JSON_NULL:
        sbuf_add(b, "null", 4);
        break;
    default: /* object, array */
        json_dump_callback(v, dump_cb, b, JSON_COMPACT | JSON_ENCODE_ANY);
        break;
    }
}

/* Renders one reference into b; 0, or PX_ENOENT when it resolves to nothing. Event fields are
 * written straight from the env, without building a json value. */
static int render_ref(sbuf *b, const px_pointer *p, const px_mapping_env *env)
{
    if (p->field == FIELD_PAYLOAD) {
        const json_t *v = resolve_payload(p, env_payload(env));
        if (!v) {
            return PX_ENOENT;
        }
        render_value(b, v);
        return 0;
    }
    if (p->field == FIELD_TIME) {
        char tmp[32];
        snprintf(tmp, sizeof(tmp), "%lld", env->time_ms);
        sbuf_add(b, tmp, strlen(tmp));
        return 0;
    }
    const char *s = event_string(p, env);
    if (!s) {
        return PX_ENOENT;
    }
    sbuf_add(b, s, strlen(s));
    return 0;
}

/* The pointer as messages show it: "" (the whole payload) reads "payload". */
static const char *shown(const px_pointer *p)
{
    return p->text[0] ? p->text : "payload";
}

static int apply_node(const node *n, const px_mapping_env *env, sbuf *b, json_t **out, char *err,
                      size_t errlen)
{
    switch (n->kind) {
    case NODE_LIT:
        *out = json_incref(n->lit);
        return 0;
    case NODE_REF: {
        json_t *v = px_pointer_eval(n->ptr, env);
        if (!v) {
            if (!n->optional) {
                px_errf(err, errlen, "%s: missing %s", n->path, shown(n->ptr));
                return PX_ENOENT;
            }
            v = json_null();
        }
        *out = v;
        return 0;
    }
    case NODE_TEXT:
        b->len = 0;
        for (size_t i = 0; i < n->nparts; i++) {
            const text_part *tp = &n->parts[i];
            if (tp->lit) {
                sbuf_add(b, tp->lit, tp->litlen);
            } else if (render_ref(b, tp->ptr, env) != 0 && !tp->optional) {
                px_errf(err, errlen, "%s: missing %s", n->path, shown(tp->ptr));
                return PX_ENOENT;
            }
        }
        /* Every piece is valid UTF-8 (jansson strings or ASCII), so is their concatenation. */
        *out = jx(json_stringn_nocheck(b->len ? b->p : "", b->len));
        return 0;
    case NODE_OBJ: {
        json_t *obj = jx(json_object());
        for (size_t i = 0; i < n->nkids; i++) {
            json_t *v;
            int rc = apply_node(&n->kids[i], env, b, &v, err, errlen);
            if (rc != 0) {
                json_decref(obj);
                return rc;
            }
            jset(obj, n->keys[i], v);
        }
        *out = obj;
        return 0;
    }
    case NODE_ARR: {
        json_t *arr = jx(json_array());
        for (size_t i = 0; i < n->nkids; i++) {
            json_t *v;
            int rc = apply_node(&n->kids[i], env, b, &v, err, errlen);
            if (rc != 0) {
                json_decref(arr);
                return rc;
            }
            jappend(arr, v);
        }
        *out = arr;
        return 0;
    }
    default:
        px_errf(err, errlen, "%s: bad mapping node", n->path ? n->path : "with");
        return PX_EINVAL;
    }
}

int px_mapping_apply(const px_mapping *m, const px_mapping_env *env, json_t **out, char *err,
                     size_t errlen)
{
    /* One text buffer per call, on the stack until a text outgrows it. */
    char stackbuf[512];
    sbuf b = {.p = stackbuf, .cap = sizeof(stackbuf), .fixed = stackbuf};
    json_t *v = NULL;
    int rc = apply_node(&m->root, env, &b, &v, err, errlen);
    if (b.p != b.fixed) {
        free(b.p);
    }
    if (rc == 0) {
        *out = v;
    }
    return rc;
}
