/* Configuration: YAML text -> px_node tree (libyaml events, with marks, ${VAR} expansion and
 * scalar typing) -> validated px_config. Also validates a plugin instance's `config:` against the
 * plugin's px_option table. Every error is one line "file:line:column: message" and never shows
 * the value of a secret. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <limits.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <yaml.h>

#include "admin_token.h"
#include "err.h"
#include "fsutil.h"
#include "log.h"
#include "mem.h"

/* ------------------------------------------------------------------------------------------ */
/* Node tree                                                                                  */
/* ------------------------------------------------------------------------------------------ */

enum { Y_MAP = 1, Y_SEQ = 2, Y_SCALAR = 3 };
enum { YS_NULL = 1, YS_BOOL, YS_INT, YS_FLOAT, YS_STR };

struct px_ynode {
    int type;              /* Y_MAP, Y_SEQ or Y_SCALAR */
    int line, col;         /* 1-based start mark */
    int key_line, key_col; /* mark of the key this node is the value of; 0 when none */
    /* scalars: text after ${VAR} expansion, and its type */
    char *text;
    int quoted; /* any style but plain: always a string */
    int kind;   /* YS_* */
    int b;
    long long i;
    double d;
    /* collections: a mapping's pairs are keys[k] -> items[k]; a sequence uses items only */
    px_ynode **keys;
    px_ynode **items;
    size_t n, cap;
};

/* Bounds what aliases can blow up to, and how deep recursion goes. */
#define MAX_NODES 1000000
#define MAX_DEPTH 200
/* Longest value echoed back in an error message. */
#define ECHO_MAX 60

typedef struct anchor {
    char *name;
    px_ynode *node; /* borrowed from the tree (or the graveyard) */
} anchor;

/* State of one parse/validation: where errors go and what the YAML builder keeps. */
typedef struct cctx {
    const char *file;
    char *err;
    size_t errlen;
    const char *text; /* the YAML source, to look at the character an error points to */
    size_t textlen;
    int expand;       /* apply ${VAR} expansion to scalars */
    anchor *anchors;
    size_t nanchors;
    px_ynode **grave; /* nodes dropped from the tree (merge values) that anchors may still name */
    size_t ngrave;
    size_t nodes;
    int depth;
} cctx;

static void ynode_free(px_ynode *n)
{
    if (!n) {
        return;
    }
    for (size_t k = 0; k < n->n; k++) {
        if (n->keys) {
            ynode_free(n->keys[k]);
        }
        ynode_free(n->items[k]);
    }
    free(n->keys);
    free(n->items);
    free(n->text);
    free(n);
}

static px_ynode *ynode_new(cctx *c, int type, int line, int col)
{
    px_ynode *n = px_xcalloc(1, sizeof(*n));
    n->type = type;
    n->line = line;
    n->col = col;
    if (c) {
        c->nodes++;
    }
    return n;
}

static void ynode_push(px_ynode *n, px_ynode *key, px_ynode *item)
{
    if (n->n == n->cap) {
        n->cap = n->cap ? n->cap * 2 : 4;
        n->items = px_xrealloc(n->items, n->cap * sizeof(*n->items));
        if (n->type == Y_MAP) {
            n->keys = px_xrealloc(n->keys, n->cap * sizeof(*n->keys));
        }
    }
    if (n->type == Y_MAP) {
        n->keys[n->n] = key;
    }
    n->items[n->n++] = item;
}

static px_ynode *ynode_copy(cctx *c, const px_ynode *src)
{
    px_ynode *n = ynode_new(c, src->type, src->line, src->col);
    n->key_line = src->key_line;
    n->key_col = src->key_col;
    n->text = px_xstrdup(src->text);
    n->quoted = src->quoted;
    n->kind = src->kind;
    n->b = src->b;
    n->i = src->i;
    n->d = src->d;
    for (size_t k = 0; k < src->n; k++) {
        ynode_push(n, src->type == Y_MAP ? ynode_copy(c, src->keys[k]) : NULL,
                   ynode_copy(c, src->items[k]));
    }
    return n;
}

static size_t ynode_count(const px_ynode *n)
{
    size_t total = 1;
    for (size_t k = 0; k < n->n; k++) {
        total += ynode_count(n->items[k]) + (n->keys ? 1 : 0);
    }
    return total;
}

/* The value under `key` in mapping m, or NULL (also when m is not a mapping). */
static px_ynode *map_get(const px_ynode *m, const char *key)
{
    if (!m || m->type != Y_MAP) {
        return NULL;
    }
    for (size_t k = 0; k < m->n; k++) {
        if (strcmp(m->keys[k]->text, key) == 0) {
            return m->items[k];
        }
    }
    return NULL;
}

static int is_null(const px_ynode *n)
{
    return !n || (n->type == Y_SCALAR && n->kind == YS_NULL);
}

/* ------------------------------------------------------------------------------------------ */
/* Errors                                                                                     */
/* ------------------------------------------------------------------------------------------ */

static int vfail_at(cctx *c, int line, int col, const char *fmt, va_list ap)
{
    if (!c->err || c->errlen == 0) {
        return PX_ECONFIG;
    }
    char msg[1024];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    snprintf(c->err, c->errlen, "%s:%d:%d: %s", c->file, line, col, msg);
    /* One line, whatever a value or a file name held. */
    for (char *p = c->err; *p; p++) {
        if (*p == '\n' || *p == '\r' || *p == '\t') {
            *p = ' ';
        }
    }
    return PX_ECONFIG;
}

__attribute__((format(printf, 4, 5))) static int fail_at(cctx *c, int line, int col,
                                                         const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail_at(c, line, col, fmt, ap);
    va_end(ap);
    return PX_ECONFIG;
}

__attribute__((format(printf, 3, 4))) static int fail(cctx *c, const px_ynode *n,
                                                      const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail_at(c, n ? n->line : 1, n ? n->col : 1, fmt, ap);
    va_end(ap);
    return PX_ECONFIG;
}

/* Where a mapping is reported when it lacks a key: at the key that holds it when there is one
 * (`config:` rather than its first entry), else at its own start. */
static void map_mark(const px_ynode *m, int *line, int *col)
{
    if (m->key_line) {
        *line = m->key_line;
        *col = m->key_col;
    } else {
        *line = m->line;
        *col = m->col;
    }
}

/* Describes node n for "got ..." in messages: a quoted, shortened copy of a scalar's text. */
static const char *echo(const px_ynode *n, char *buf, size_t size)
{
    if (!n) {
        return "nothing";
    }
    if (n->type == Y_MAP) {
        return "a mapping";
    }
    if (n->type == Y_SEQ) {
        return "a list";
    }
    if (n->kind == YS_NULL && !n->quoted) {
        return "an empty value";
    }
    size_t len = strlen(n->text);
    if (len > ECHO_MAX) {
        size_t cut = ECHO_MAX;
        while (cut > 0 && ((unsigned char)n->text[cut] & 0xC0) == 0x80) {
            cut--; /* never split a UTF-8 sequence */
        }
        snprintf(buf, size, "\"%.*s...\"", (int)cut, n->text);
    } else {
        snprintf(buf, size, "\"%s\"", n->text);
    }
    return buf;
}

/* ------------------------------------------------------------------------------------------ */
/* Suggestions                                                                                */
/* ------------------------------------------------------------------------------------------ */

static int lower(int ch)
{
    return ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch;
}

/* Optimal string alignment distance (Levenshtein plus adjacent transpositions), ASCII case
 * folded, capped: returns cap + 1 for anything further than cap. */
static size_t edit_distance(const char *a, const char *b, size_t cap)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64) {
        return cap + 1;
    }
    if ((la > lb ? la - lb : lb - la) > cap) {
        return cap + 1;
    }
    size_t d[65][65];
    for (size_t i = 0; i <= la; i++) {
        d[i][0] = i;
    }
    for (size_t j = 0; j <= lb; j++) {
        d[0][j] = j;
    }
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = lower(a[i - 1]) == lower(b[j - 1]) ? 0 : 1;
            size_t best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best) {
                best = d[i][j - 1] + 1;
            }
            if (d[i - 1][j - 1] + cost < best) {
                best = d[i - 1][j - 1] + cost;
            }
            if (i > 1 && j > 1 && lower(a[i - 1]) == lower(b[j - 2]) &&
                lower(a[i - 2]) == lower(b[j - 1]) && d[i - 2][j - 2] + 1 < best) {
                best = d[i - 2][j - 2] + 1;
            }
            d[i][j] = best;
        }
    }
    return d[la][lb] > cap ? cap + 1 : d[la][lb];
}

static int has_prefix_ci(const char *s, const char *prefix)
{
    for (; *prefix; s++, prefix++) {
        if (lower(*s) != lower(*prefix)) {
            return 0;
        }
    }
    return 1;
}

/* The closest of cands[0..n) to word: edit distance <= 2 (and less than the word's length, so
 * "ab" never suggests "to"), or else one being a prefix of the other (at least 3 characters
 * shared). NULL when nothing is close. */
static const char *suggest(const char *word, const char *const *cands, size_t n)
{
    const char *best = NULL;
    size_t best_d = 3, wl = strlen(word);
    for (size_t k = 0; k < n; k++) {
        size_t dist = edit_distance(word, cands[k], 2);
        if (dist <= 2 && dist < wl && dist < best_d) {
            best = cands[k];
            best_d = dist;
        }
    }
    if (best) {
        return best;
    }
    for (size_t k = 0; k < n; k++) {
        size_t cl = strlen(cands[k]);
        if ((wl >= 3 && cl > wl && has_prefix_ci(cands[k], word)) ||
            (cl >= 3 && wl > cl && has_prefix_ci(word, cands[k]))) {
            return cands[k];
        }
    }
    return NULL;
}

/* Fills buf with `, did you mean "X"?` or "" (buf is returned). */
static const char *did_you_mean(const char *word, const char *const *cands, size_t n, char *buf,
                                size_t size)
{
    const char *s = suggest(word, cands, n);
    if (s) {
        snprintf(buf, size, ", did you mean \"%s\"?", s);
    } else {
        buf[0] = '\0';
    }
    return buf;
}

/* ------------------------------------------------------------------------------------------ */
/* Strings, durations, sizes                                                                  */
/* ------------------------------------------------------------------------------------------ */

typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

static void sbuf_add(sbuf *b, const char *s, size_t len)
{
    if (b->n + len + 1 > b->cap) {
        b->cap = (b->n + len + 1) * 2;
        b->p = px_xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, s, len);
    b->n += len;
    b->p[b->n] = '\0';
}

/* Parses "<digits>[.<digits>]" at *s into mantissa * 10^-frac_digits; advances *s. */
static int parse_decimal(const char **s, uint64_t *mant, unsigned *frac_digits)
{
    const char *p = *s;
    uint64_t m = 0;
    unsigned fd = 0;
    int digits = 0;
    for (; *p >= '0' && *p <= '9'; p++, digits++) {
        if (m > (UINT64_MAX - 9) / 10) {
            return PX_EINVAL;
        }
        m = m * 10 + (uint64_t)(*p - '0');
    }
    if (*p == '.') {
        p++;
        int fdigits = 0;
        for (; *p >= '0' && *p <= '9'; p++, fdigits++) {
            if (fd >= 9) {
                continue; /* below a nanounit: ignored */
            }
            if (m > (UINT64_MAX - 9) / 10) {
                return PX_EINVAL;
            }
            m = m * 10 + (uint64_t)(*p - '0');
            fd++;
        }
        if (fdigits == 0) {
            return PX_EINVAL;
        }
        digits += fdigits;
    }
    if (digits == 0) {
        return PX_EINVAL;
    }
    *mant = m;
    *frac_digits = fd;
    *s = p;
    return 0;
}

/* mant * 10^-fd * unit, rounded to the nearest integer; PX_EINVAL on overflow. */
static int scale(uint64_t mant, unsigned fd, uint64_t unit, uint64_t *out)
{
    uint64_t div = 1;
    for (unsigned k = 0; k < fd; k++) {
        div *= 10;
    }
    uint64_t whole = mant / div, frac = mant % div;
    if (unit && whole > UINT64_MAX / unit) {
        return PX_EINVAL;
    }
    uint64_t v = whole * unit;
    /* frac < div <= 1e9 and unit <= 2^40 for sizes, 8.64e7 for durations: no overflow here */
    uint64_t part = (frac * unit + div / 2) / div;
    if (v > UINT64_MAX - part) {
        return PX_EINVAL;
    }
    *out = v + part;
    return 0;
}

typedef struct unit_def {
    const char *name;
    uint64_t mult;
} unit_def;

/* A decimal number with an optional unit from `units` (a bare number must be whole and counts
 * in the first unit's multiple, which is 1), scaled to an integer. */
static int parse_with_unit(const char *s, const unit_def *units, size_t nunits, int nocase,
                           uint64_t *out)
{
    if (!s || !out) {
        return PX_EINVAL;
    }
    const char *p = s;
    uint64_t mant;
    unsigned fd;
    if (parse_decimal(&p, &mant, &fd) < 0) {
        return PX_EINVAL;
    }
    uint64_t mult = 0;
    if (*p == '\0') {
        if (fd != 0) {
            return PX_EINVAL;
        }
        mult = 1;
    } else {
        for (size_t k = 0; k < nunits; k++) {
            if ((nocase ? strcasecmp(p, units[k].name) : strcmp(p, units[k].name)) == 0) {
                mult = units[k].mult;
                break;
            }
        }
        if (!mult) {
            return PX_EINVAL;
        }
    }
    uint64_t v;
    if (scale(mant, fd, mult, &v) < 0) {
        return PX_EINVAL;
    }
    *out = v;
    return 0;
}

int px_parse_duration(const char *s, uint64_t *ms)
{
    static const unit_def units[] = {
        {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000},
    };
    return parse_with_unit(s, units, sizeof(units) / sizeof(units[0]), 0, ms);
}

int px_parse_size(const char *s, uint64_t *bytes)
{
    static const unit_def units[] = {
        {"B", 1},          {"KB", 1000},      {"MB", 1000000},   {"GB", 1000000000},
        {"TB", 1000000000000ull}, {"KiB", 1ull << 10}, {"MiB", 1ull << 20}, {"GiB", 1ull << 30},
        {"TiB", 1ull << 40},
    };
    return parse_with_unit(s, units, sizeof(units) / sizeof(units[0]), 1, bytes);
}

/* ------------------------------------------------------------------------------------------ */
/* Scalars: ${VAR} expansion and typing                                                       */
/* ------------------------------------------------------------------------------------------ */

/* Expands ${NAME}, ${NAME:-default} and $$ in `in`. A '$' followed by anything else stays. */
static int expand_env(cctx *c, const char *in, int line, int col, char **out)
{
    if (!strchr(in, '$')) {
        *out = px_xstrdup(in);
        return 0;
    }
    sbuf b = {0};
    sbuf_add(&b, "", 0);
    const char *p = in;
    while (*p) {
        const char *dollar = strchr(p, '$');
        if (!dollar) {
            sbuf_add(&b, p, strlen(p));
            break;
        }
        sbuf_add(&b, p, (size_t)(dollar - p));
        if (dollar[1] == '$') {
            sbuf_add(&b, "$", 1);
            p = dollar + 2;
            continue;
        }
        if (dollar[1] != '{') {
            sbuf_add(&b, "$", 1);
            p = dollar + 1;
            continue;
        }
        const char *name = dollar + 2, *close = strchr(name, '}');
        if (!close) {
            free(b.p);
            return fail_at(c, line, col, "unterminated \"${\" (missing \"}\"); write \"$$\" for a "
                                         "literal \"$\"");
        }
        const char *sep = strstr(name, ":-");
        const char *name_end = sep && sep < close ? sep : close;
        size_t nlen = (size_t)(name_end - name);
        int valid = nlen > 0 && !(name[0] >= '0' && name[0] <= '9');
        for (size_t k = 0; k < nlen && valid; k++) {
            char ch = name[k];
            valid = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                    (ch >= '0' && ch <= '9') || ch == '_';
        }
        if (!valid) {
            free(b.p);
            return fail_at(c, line, col, "invalid environment variable name \"%.*s\" in \"${...}\"",
                           (int)nlen, name);
        }
        char *var = px_xstrndup(name, nlen);
        const char *val = getenv(var);
        if (name_end == sep) {
            if (!val || !*val) {
                const char *def = sep + 2;
                sbuf_add(&b, def, (size_t)(close - def));
            } else {
                sbuf_add(&b, val, strlen(val));
            }
        } else if (!val) {
            fail_at(c, line, col, "environment variable \"%s\" is not set and has no default",
                    var);
            free(var);
            free(b.p);
            return PX_ECONFIG;
        } else {
            sbuf_add(&b, val, strlen(val));
        }
        free(var);
        p = close + 1;
    }
    *out = b.p;
    return 0;
}

static int all_digits(const char *s, const char *set)
{
    if (!*s) {
        return 0;
    }
    for (; *s; s++) {
        if (!strchr(set, *s)) {
            return 0;
        }
    }
    return 1;
}

/* YAML 1.2 core schema: [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? */
static int looks_float(const char *s)
{
    const char *p = s;
    if (*p == '-' || *p == '+') {
        p++;
    }
    int lead = 0, frac = 0;
    while (*p >= '0' && *p <= '9') {
        p++;
        lead++;
    }
    if (*p == '.') {
        p++;
        while (*p >= '0' && *p <= '9') {
            p++;
            frac++;
        }
    }
    if (lead == 0 && frac == 0) {
        return 0;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '-' || *p == '+') {
            p++;
        }
        int exp = 0;
        while (*p >= '0' && *p <= '9') {
            p++;
            exp++;
        }
        if (!exp) {
            return 0;
        }
    }
    return *p == '\0';
}

/* Types a scalar: quoted ones are strings; plain ones follow the YAML 1.2 core schema (without
 * .inf/.nan, which JSON cannot carry). */
static void scalar_type(px_ynode *n)
{
    const char *s = n->text;
    n->kind = YS_STR;
    if (n->quoted) {
        return;
    }
    if (!*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") ||
        !strcmp(s, "NULL")) {
        n->kind = YS_NULL;
        return;
    }
    if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE")) {
        n->kind = YS_BOOL;
        n->b = 1;
        return;
    }
    if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE")) {
        n->kind = YS_BOOL;
        n->b = 0;
        return;
    }
    const char *digits = (s[0] == '-' || s[0] == '+') ? s + 1 : s;
    int base = 0;
    if (all_digits(digits, "0123456789")) {
        base = 10;
    } else if (s[0] == '0' && s[1] == 'x' && all_digits(s + 2, "0123456789abcdefABCDEF")) {
        base = 16;
    } else if (s[0] == '0' && s[1] == 'o' && all_digits(s + 2, "01234567")) {
        base = 8;
    }
    if (base) {
        errno = 0;
        long long v = strtoll(base == 10 ? s : s + 2, NULL, base);
        if (errno == 0) {
            n->kind = YS_INT;
            n->i = v;
            n->d = (double)v;
            return;
        }
        if (base != 10) {
            return; /* out of range hex/octal: leave it a string */
        }
    }
    if (base == 10 || looks_float(s)) {
        n->kind = YS_FLOAT;
        n->d = strtod(s, NULL);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* YAML events -> node tree                                                                   */
/* ------------------------------------------------------------------------------------------ */

/* Finds the character at a 0-based line/column (columns count characters, as libyaml does). */
static int char_at(const cctx *c, size_t line, size_t column)
{
    size_t pos = 0;
    for (size_t l = 0; l < line && pos < c->textlen; pos++) {
        if (c->text[pos] == '\n') {
            l++;
        }
    }
    for (size_t k = 0; pos < c->textlen; pos++) {
        if (((unsigned char)c->text[pos] & 0xC0) == 0x80) {
            continue;
        }
        if (k++ == column) {
            return (unsigned char)c->text[pos];
        }
    }
    return -1;
}

/* Turns a libyaml error into one message, with hints for the usual mistakes. */
static int yaml_fail(cctx *c, const yaml_parser_t *p)
{
    const char *problem = p->problem ? p->problem : "invalid YAML";
    const char *context = p->context;
    int line = (int)p->problem_mark.line + 1, col = (int)p->problem_mark.column + 1;
    int cline = (int)p->context_mark.line + 1, ccol = (int)p->context_mark.column + 1;

    if (p->error == YAML_MEMORY_ERROR) {
        return fail_at(c, 1, 1, "out of memory while parsing YAML");
    }
    if (p->error == YAML_READER_ERROR) {
        /* problem_offset is a byte offset; marks are not set for reader errors */
        line = 1;
        col = 1;
        for (size_t k = 0; k < p->problem_offset && k < c->textlen; k++) {
            if (c->text[k] == '\n') {
                line++;
                col = 1;
            } else if (((unsigned char)c->text[k] & 0xC0) != 0x80) {
                col++;
            }
        }
        return fail_at(c, line, col, "%s; the file must be UTF-8 text", problem);
    }
    if (strstr(problem, "cannot start any token") &&
        char_at(c, p->problem_mark.line, p->problem_mark.column) == '\t') {
        return fail_at(c, line, col, "tab character in indentation; indent with spaces");
    }
    if (p->problem_mark.column > 0 &&
        char_at(c, p->problem_mark.line, p->problem_mark.column) == '{' &&
        char_at(c, p->problem_mark.line, p->problem_mark.column - 1) == '$') {
        return fail_at(c, line, col - 1, "\"${...}\" inside { } or [ ] must be quoted, e.g. "
                                         "key: \"${VAR}\"");
    }
    if (context && strstr(context, "quoted scalar")) {
        return fail_at(c, cline, ccol, "quoted string is never closed (%s at line %d, column %d)",
                       problem, line, col);
    }
    if (context && strstr(context, "scanning an alias")) {
        return fail_at(c, line, col, "%s %s; quote a value that starts with \"*\" (e.g. \"*\")",
                       problem, context);
    }
    if (!strcmp(problem, "mapping values are not allowed in this context")) {
        return fail_at(c, line, col,
                       "mapping values are not allowed here; check the indentation of this line, "
                       "or quote a value that contains \": \"");
    }
    if (context && (strstr(context, "block mapping") || strstr(context, "block collection"))) {
        return fail_at(c, line, col,
                       "%s %s that starts at line %d, column %d; check the indentation", problem,
                       context, cline, ccol);
    }
    if (context) {
        return fail_at(c, line, col, "%s %s that starts at line %d, column %d", problem, context,
                       cline, ccol);
    }
    return fail_at(c, line, col, "%s", problem);
}

static int next_event(cctx *c, yaml_parser_t *p, yaml_event_t *ev)
{
    if (!yaml_parser_parse(p, ev)) {
        return yaml_fail(c, p);
    }
    return 0;
}

static void anchor_add(cctx *c, const yaml_char_t *name, px_ynode *n)
{
    if (!name) {
        return;
    }
    c->anchors = px_xrealloc(c->anchors, (c->nanchors + 1) * sizeof(*c->anchors));
    c->anchors[c->nanchors].name = px_xstrdup((const char *)name);
    c->anchors[c->nanchors].node = n;
    c->nanchors++;
}

static int parse_node(cctx *c, yaml_parser_t *p, yaml_event_t *ev, px_ynode **out);

static int find_key(const px_ynode *m, const char *key)
{
    for (size_t k = 0; k < m->n; k++) {
        if (strcmp(m->keys[k]->text, key) == 0) {
            return (int)k;
        }
    }
    return -1;
}

/* Applies `<<` merge sources: their pairs join m unless m already has the key (explicit keys
 * win, then earlier sources). */
static int apply_merges(cctx *c, px_ynode *m, px_ynode **merges, size_t nmerges)
{
    for (size_t s = 0; s < nmerges; s++) {
        px_ynode *src = merges[s];
        px_ynode **list = &src;
        size_t nlist = 1;
        if (src->type == Y_SEQ) {
            list = src->items;
            nlist = src->n;
        }
        for (size_t l = 0; l < nlist; l++) {
            if (list[l]->type != Y_MAP) {
                return fail(c, list[l], "the merge key \"<<\" takes a mapping or a list of "
                                        "mappings");
            }
            for (size_t k = 0; k < list[l]->n; k++) {
                if (find_key(m, list[l]->keys[k]->text) < 0) {
                    ynode_push(m, ynode_copy(c, list[l]->keys[k]),
                               ynode_copy(c, list[l]->items[k]));
                }
            }
        }
    }
    return 0;
}

static int parse_mapping(cctx *c, yaml_parser_t *p, px_ynode *m)
{
    px_ynode **merges = NULL;
    size_t nmerges = 0;
    int rc = 0;
    for (;;) {
        yaml_event_t ev;
        if ((rc = next_event(c, p, &ev)) < 0) {
            goto done;
        }
        if (ev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        px_ynode *key = NULL, *val = NULL;
        if ((rc = parse_node(c, p, &ev, &key)) < 0) {
            goto done;
        }
        if (key->type != Y_SCALAR) {
            rc = fail(c, key, "mapping keys must be plain strings, not %s",
                      key->type == Y_MAP ? "mappings" : "lists");
            ynode_free(key);
            goto done;
        }
        if ((rc = next_event(c, p, &ev)) < 0 || (rc = parse_node(c, p, &ev, &val)) < 0) {
            ynode_free(key);
            goto done;
        }
        val->key_line = key->line;
        val->key_col = key->col;
        if (!key->quoted && strcmp(key->text, "<<") == 0) {
            c->grave = px_xrealloc(c->grave, (c->ngrave + 1) * sizeof(*c->grave));
            c->grave[c->ngrave++] = key; /* an anchor may name it */
            merges = px_xrealloc(merges, (nmerges + 1) * sizeof(*merges));
            merges[nmerges++] = val;
            continue;
        }
        int prev = find_key(m, key->text);
        if (prev >= 0) {
            rc = fail(c, key, "duplicate key \"%s\" (first at line %d, column %d)", key->text,
                      m->keys[prev]->line, m->keys[prev]->col);
            ynode_free(key);
            ynode_free(val);
            goto done;
        }
        ynode_push(m, key, val);
    }
    rc = apply_merges(c, m, merges, nmerges);
done:
    /* Anchors may point into merge sources: keep them until the parse ends. */
    for (size_t k = 0; k < nmerges; k++) {
        c->grave = px_xrealloc(c->grave, (c->ngrave + 1) * sizeof(*c->grave));
        c->grave[c->ngrave++] = merges[k];
    }
    free(merges);
    return rc;
}

/* Builds the node for event `ev` (consumed) and everything under it. */
static int parse_node(cctx *c, yaml_parser_t *p, yaml_event_t *ev, px_ynode **out)
{
    int line = (int)ev->start_mark.line + 1, col = (int)ev->start_mark.column + 1;
    px_ynode *n = NULL;
    int rc = 0;

    if (c->nodes > MAX_NODES) {
        yaml_event_delete(ev);
        return fail_at(c, line, col, "the document is too large (more than %d nodes)",
                       MAX_NODES);
    }
    if (c->depth >= MAX_DEPTH) {
        yaml_event_delete(ev);
        return fail_at(c, line, col, "nesting is too deep (more than %d levels)", MAX_DEPTH);
    }
    switch (ev->type) {
    case YAML_ALIAS_EVENT: {
        const char *name = (const char *)ev->data.alias.anchor;
        px_ynode *target = NULL;
        for (size_t k = c->nanchors; k > 0; k--) {
            if (strcmp(c->anchors[k - 1].name, name) == 0) {
                target = c->anchors[k - 1].node;
                break;
            }
        }
        if (!target) {
            rc = fail_at(c, line, col, "alias \"*%s\" does not name an anchor defined before it",
                         name);
            break;
        }
        if (c->nodes + ynode_count(target) > MAX_NODES) {
            rc = fail_at(c, line, col, "alias \"*%s\" makes the document too large", name);
            break;
        }
        n = ynode_copy(c, target);
        n->line = line;
        n->col = col;
        n->key_line = n->key_col = 0;
        break;
    }
    case YAML_SCALAR_EVENT: {
        const char *value = (const char *)ev->data.scalar.value;
        if (strlen(value) != ev->data.scalar.length) {
            rc = fail_at(c, line, col, "strings cannot contain NUL characters");
            break;
        }
        n = ynode_new(c, Y_SCALAR, line, col);
        n->quoted = ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
        if (c->expand) {
            rc = expand_env(c, value, line, col, &n->text);
        } else {
            n->text = px_xstrdup(value);
        }
        if (rc < 0) {
            break;
        }
        scalar_type(n);
        anchor_add(c, ev->data.scalar.anchor, n);
        break;
    }
    case YAML_SEQUENCE_START_EVENT: {
        n = ynode_new(c, Y_SEQ, line, col);
        c->depth++;
        for (;;) {
            yaml_event_t item_ev;
            px_ynode *item;
            if ((rc = next_event(c, p, &item_ev)) < 0) {
                break;
            }
            if (item_ev.type == YAML_SEQUENCE_END_EVENT) {
                yaml_event_delete(&item_ev);
                break;
            }
            if ((rc = parse_node(c, p, &item_ev, &item)) < 0) {
                break;
            }
            ynode_push(n, NULL, item);
        }
        c->depth--;
        if (rc == 0) {
            anchor_add(c, ev->data.sequence_start.anchor, n);
        }
        break;
    }
    case YAML_MAPPING_START_EVENT:
        n = ynode_new(c, Y_MAP, line, col);
        c->depth++;
        rc = parse_mapping(c, p, n);
        c->depth--;
        if (rc == 0) {
            anchor_add(c, ev->data.mapping_start.anchor, n);
        }
        break;
    default:
        rc = fail_at(c, line, col, "unexpected YAML structure");
        break;
    }
    yaml_event_delete(ev);
    if (rc < 0) {
        ynode_free(n);
        return rc;
    }
    *out = n;
    return 0;
}

static void cctx_release(cctx *c)
{
    for (size_t k = 0; k < c->nanchors; k++) {
        free(c->anchors[k].name);
    }
    free(c->anchors);
    c->anchors = NULL;
    c->nanchors = 0;
    for (size_t k = 0; k < c->ngrave; k++) {
        ynode_free(c->grave[k]);
    }
    free(c->grave);
    c->grave = NULL;
    c->ngrave = 0;
}

/* Parses one YAML document. *out is NULL for an empty stream. */
static int yaml_to_tree(cctx *c, const char *text, size_t len, px_ynode **out)
{
    yaml_parser_t p;
    yaml_event_t ev;
    px_ynode *root = NULL;
    int rc;

    c->text = text;
    c->textlen = len;
    if (!yaml_parser_initialize(&p)) {
        return fail_at(c, 1, 1, "out of memory while parsing YAML");
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    if ((rc = next_event(c, &p, &ev)) < 0) {
        goto fail;
    }
    yaml_event_delete(&ev); /* stream start */
    if ((rc = next_event(c, &p, &ev)) < 0) {
        goto fail;
    }
    if (ev.type == YAML_DOCUMENT_START_EVENT) {
        yaml_event_delete(&ev);
        if ((rc = next_event(c, &p, &ev)) < 0 || (rc = parse_node(c, &p, &ev, &root)) < 0) {
            goto fail;
        }
        if ((rc = next_event(c, &p, &ev)) < 0) {
            goto fail;
        }
        yaml_event_delete(&ev); /* document end */
        if ((rc = next_event(c, &p, &ev)) < 0) {
            goto fail;
        }
        if (ev.type == YAML_DOCUMENT_START_EVENT) {
            rc = fail_at(c, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
                         "only one YAML document is allowed");
            yaml_event_delete(&ev);
            goto fail;
        }
    }
    yaml_event_delete(&ev); /* stream end */
    yaml_parser_delete(&p);
    cctx_release(c);
    *out = root;
    return 0;

fail:
    ynode_free(root);
    yaml_parser_delete(&p);
    cctx_release(c);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Nodes <-> JSON                                                                             */
/* ------------------------------------------------------------------------------------------ */

static int node_to_json(cctx *c, const px_ynode *n, json_t **out)
{
    json_t *j = NULL;
    switch (n->type) {
    case Y_MAP:
        j = json_object();
        for (size_t k = 0; k < n->n; k++) {
            json_t *v;
            if (node_to_json(c, n->items[k], &v) < 0) {
                json_decref(j);
                return PX_ECONFIG;
            }
            if (json_object_set_new(j, n->keys[k]->text, v) < 0) {
                json_decref(j);
                return fail(c, n->keys[k], "key is not valid UTF-8");
            }
        }
        break;
    case Y_SEQ:
        j = json_array();
        for (size_t k = 0; k < n->n; k++) {
            json_t *v;
            if (node_to_json(c, n->items[k], &v) < 0) {
                json_decref(j);
                return PX_ECONFIG;
            }
            json_array_append_new(j, v);
        }
        break;
    default:
        switch (n->kind) {
        case YS_NULL: j = json_null(); break;
        case YS_BOOL: j = json_boolean(n->b); break;
        case YS_INT: j = json_integer(n->i); break;
        case YS_FLOAT: j = json_real(n->d); break;
        default: j = json_string(n->text); break;
        }
        if (!j) {
            return fail(c, n, "value is not valid UTF-8 (or not a finite number)");
        }
    }
    *out = j;
    return 0;
}

/* Builds nodes (all at line:col) from JSON, for a config given without its YAML nodes. */
static px_ynode *json_to_node(const json_t *j, int line, int col)
{
    px_ynode *n;
    if (json_is_object(j)) {
        n = ynode_new(NULL, Y_MAP, line, col);
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)j, key, v) {
            px_ynode *k = ynode_new(NULL, Y_SCALAR, line, col);
            k->text = px_xstrdup(key);
            k->quoted = 1;
            k->kind = YS_STR;
            px_ynode *item = json_to_node(v, line, col);
            item->key_line = line;
            item->key_col = col;
            ynode_push(n, k, item);
        }
        return n;
    }
    if (json_is_array(j)) {
        n = ynode_new(NULL, Y_SEQ, line, col);
        size_t idx;
        json_t *v;
        json_array_foreach(j, idx, v) {
            ynode_push(n, NULL, json_to_node(v, line, col));
        }
        return n;
    }
    n = ynode_new(NULL, Y_SCALAR, line, col);
    if (json_is_string(j)) {
        n->text = px_xstrdup(json_string_value(j));
        n->quoted = 1;
        n->kind = YS_STR;
    } else if (json_is_integer(j)) {
        n->text = px_xasprintf("%lld", (long long)json_integer_value(j));
        n->kind = YS_INT;
        n->i = (long long)json_integer_value(j);
        n->d = (double)n->i;
    } else if (json_is_real(j)) {
        n->text = px_xasprintf("%.17g", json_real_value(j));
        n->kind = YS_FLOAT;
        n->d = json_real_value(j);
    } else if (json_is_boolean(j)) {
        n->text = px_xstrdup(json_is_true(j) ? "true" : "false");
        n->kind = YS_BOOL;
        n->b = json_is_true(j);
    } else {
        n->text = px_xstrdup("");
        n->kind = YS_NULL;
    }
    return n;
}

/* ------------------------------------------------------------------------------------------ */
/* Typed getters. A NULL or null node leaves *out as it is (the default) and returns 0.        */
/* `what` names the key in messages, e.g. "host.http.max_body" or "pipeline \"x\": retry".    */
/* ------------------------------------------------------------------------------------------ */

/* Every key of mapping m must be in known[]; otherwise an error at the key, with a suggestion. */
static int check_keys(cctx *c, const px_ynode *m, const char *const *known, size_t nknown,
                      const char *where)
{
    for (size_t k = 0; k < m->n; k++) {
        const char *key = m->keys[k]->text;
        size_t j;
        for (j = 0; j < nknown && strcmp(known[j], key) != 0; j++) {
        }
        if (j == nknown) {
            char hint[160];
            return fail(c, m->keys[k], "unknown key \"%s\" in %s%s", key, where,
                        did_you_mean(key, known, nknown, hint, sizeof(hint)));
        }
    }
    return 0;
}

#define CHECK_KEYS(c, m, known, where) \
    check_keys((c), (m), (known), sizeof(known) / sizeof((known)[0]), (where))

static int need_map(cctx *c, const px_ynode *n, const char *what, const char *expected)
{
    if (n->type != Y_MAP) {
        char buf[ECHO_MAX + 8];
        return fail(c, n, "%s: expected %s, got %s", what, expected, echo(n, buf, sizeof(buf)));
    }
    return 0;
}

static int missing(cctx *c, const px_ynode *m, const char *key, const char *where)
{
    int line, col;
    map_mark(m, &line, &col);
    return fail_at(c, line, col, "missing required key \"%s\" in %s", key, where);
}

/* Any non-null scalar, as its text. Secret values are never echoed. */
static int get_string(cctx *c, const px_ynode *n, const char *what, int secret, char **out)
{
    if (is_null(n)) {
        return 0;
    }
    if (n->type != Y_SCALAR) {
        char buf[ECHO_MAX + 8];
        return fail(c, n, "%s: expected a string, got %s", what,
                    secret ? "something else (value not shown: secret)"
                           : echo(n, buf, sizeof(buf)));
    }
    free(*out);
    *out = px_xstrdup(n->text);
    return 0;
}

/* A secret shorter than PX_SECRET_MIN_LEN would mask the same letters in every unrelated log line:
 * it is refused (a scalar, or each item of a list). Empty means "none" and is let through. */
static int check_secret_length(cctx *c, const px_ynode *n, const char *what)
{
    if (is_null(n)) {
        return 0;
    }
    if (n->type == Y_SEQ) {
        for (size_t k = 0; k < n->n; k++) {
            if (check_secret_length(c, n->items[k], what) < 0) {
                return PX_ECONFIG;
            }
        }
        return 0;
    }
    if (n->type != Y_SCALAR || !n->text[0] || strlen(n->text) >= PX_SECRET_MIN_LEN) {
        return 0;
    }
    return fail(c, n, "%s: too short to be a secret (%zu characters, at least %d needed; value "
                      "not shown)", what, strlen(n->text), PX_SECRET_MIN_LEN);
}

static int get_uint(cctx *c, const px_ynode *n, const char *what, uint64_t min, uint64_t max,
                    uint64_t *out)
{
    if (is_null(n)) {
        return 0;
    }
    if (n->type != Y_SCALAR || n->kind != YS_INT || n->i < 0 || (uint64_t)n->i < min ||
        (uint64_t)n->i > max) {
        char buf[ECHO_MAX + 8];
        return fail(c, n, "%s: expected an integer from %llu to %llu, got %s", what,
                    (unsigned long long)min, (unsigned long long)max, echo(n, buf, sizeof(buf)));
    }
    *out = (uint64_t)n->i;
    return 0;
}

static int get_duration(cctx *c, const px_ynode *n, const char *what, uint64_t *out)
{
    if (is_null(n)) {
        return 0;
    }
    uint64_t v;
    if (n->type == Y_SCALAR && n->kind == YS_INT && n->i >= 0) {
        *out = (uint64_t)n->i;
        return 0;
    }
    if (n->type == Y_SCALAR && n->kind != YS_INT && px_parse_duration(n->text, &v) == 0) {
        *out = v;
        return 0;
    }
    char buf[ECHO_MAX + 8];
    return fail(c, n, "%s: expected a duration like 250ms, 30s, 5m, 1h or 1d, got %s", what,
                echo(n, buf, sizeof(buf)));
}

static int get_size(cctx *c, const px_ynode *n, const char *what, uint64_t *out)
{
    if (is_null(n)) {
        return 0;
    }
    uint64_t v;
    if (n->type == Y_SCALAR && n->kind == YS_INT && n->i >= 0) {
        *out = (uint64_t)n->i;
        return 0;
    }
    if (n->type == Y_SCALAR && n->kind != YS_INT && px_parse_size(n->text, &v) == 0) {
        *out = v;
        return 0;
    }
    char buf[ECHO_MAX + 8];
    return fail(c, n, "%s: expected a size like 1MiB, 64KiB or 512, got %s", what,
                echo(n, buf, sizeof(buf)));
}

/* One of vals[] (a NULL-terminated list); *out = its index. */
static int get_enum(cctx *c, const px_ynode *n, const char *what, const char *const *vals,
                    int *out)
{
    if (is_null(n)) {
        return 0;
    }
    size_t nvals = 0;
    while (vals[nvals]) {
        nvals++;
    }
    if (n->type == Y_SCALAR) {
        for (size_t k = 0; k < nvals; k++) {
            if (strcmp(n->text, vals[k]) == 0) {
                *out = (int)k;
                return 0;
            }
        }
    }
    char list[200] = "", buf[ECHO_MAX + 8], hint[160] = "";
    for (size_t k = 0; k < nvals; k++) {
        size_t used = strlen(list);
        const char *sep = k == 0 ? "" : k + 1 == nvals ? " or " : ", ";
        snprintf(list + used, sizeof(list) - used, "%s%s", sep, vals[k]);
    }
    if (n->type == Y_SCALAR) {
        did_you_mean(n->text, vals, nvals, hint, sizeof(hint));
    }
    return fail(c, n, "%s: expected %s, got %s%s", what, list, echo(n, buf, sizeof(buf)), hint);
}

/* A string or a list of strings; empty strings are refused. Replaces *out / *nout. */
static int get_strlist(cctx *c, const px_ynode *n, const char *what, char ***out, size_t *nout)
{
    if (is_null(n)) {
        return 0;
    }
    const px_ynode *const *items = (const px_ynode *const *)&n;
    size_t count = 1;
    if (n->type == Y_SEQ) {
        items = (const px_ynode *const *)n->items;
        count = n->n;
    }
    for (size_t k = 0; k < count; k++) {
        if (items[k]->type != Y_SCALAR || items[k]->kind == YS_NULL || !items[k]->text[0]) {
            char buf[ECHO_MAX + 8];
            return fail(c, items[k], "%s: expected a string or a list of strings, got %s", what,
                        echo(items[k], buf, sizeof(buf)));
        }
    }
    for (size_t k = 0; k < *nout; k++) {
        free((*out)[k]);
    }
    free(*out);
    *out = count ? px_xcalloc(count, sizeof(char *)) : NULL;
    for (size_t k = 0; k < count; k++) {
        (*out)[k] = px_xstrdup(items[k]->text);
    }
    *nout = count;
    return 0;
}

/* "127.0.0.1:8080" or "[::1]:8080": a numeric address and a port 0..65535. */
static int listen_valid(const char *s)
{
    char host[64];
    const char *colon;
    int family = AF_INET;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':' || (size_t)(close - s - 1) >= sizeof(host)) {
            return 0;
        }
        memcpy(host, s + 1, (size_t)(close - s - 1));
        host[close - s - 1] = '\0';
        colon = close + 1;
        family = AF_INET6;
    } else {
        colon = strrchr(s, ':');
        if (!colon || (size_t)(colon - s) >= sizeof(host)) {
            return 0;
        }
        memcpy(host, s, (size_t)(colon - s));
        host[colon - s] = '\0';
    }
    unsigned char addr[16];
    if (inet_pton(family, host, addr) != 1) {
        return 0;
    }
    const char *port = colon + 1;
    if (!all_digits(port, "0123456789") || strlen(port) > 5 || atoi(port) > 65535) {
        return 0;
    }
    return 1;
}

/* null or "" -> NULL (no listener). */
static int get_listen(cctx *c, const px_ynode *n, const char *what, char **out)
{
    if (!n) {
        return 0;
    }
    free(*out);
    *out = NULL;
    if (is_null(n) || (n->type == Y_SCALAR && !n->text[0])) {
        return 0;
    }
    if (n->type != Y_SCALAR || !listen_valid(n->text)) {
        char buf[ECHO_MAX + 8];
        return fail(c, n, "%s: expected an address like 127.0.0.1:8080 or [::1]:8080, got %s",
                    what, echo(n, buf, sizeof(buf)));
    }
    *out = px_xstrdup(n->text);
    return 0;
}

int px_listen_is_loopback(const char *listen)
{
    char host[64];
    unsigned char addr[16];
    if (listen[0] == '[') {
        const char *close = strchr(listen, ']');
        if (!close || (size_t)(close - listen - 1) >= sizeof(host)) {
            return 0;
        }
        snprintf(host, sizeof(host), "%.*s", (int)(close - listen - 1), listen + 1);
        if (inet_pton(AF_INET6, host, addr) != 1) {
            return 0;
        }
        static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(addr, v4mapped, sizeof(v4mapped)) == 0) {
            return addr[12] == 127;
        }
        static const unsigned char one[16] = {[15] = 1};
        return memcmp(addr, one, sizeof(one)) == 0;
    }
    const char *colon = strrchr(listen, ':');
    if (!colon || (size_t)(colon - listen) >= sizeof(host)) {
        return 0;
    }
    snprintf(host, sizeof(host), "%.*s", (int)(colon - listen), listen);
    return inet_pton(AF_INET, host, addr) == 1 && addr[0] == 127;
}

/* Turning authentication off is said in so many words, and only where no one else can reach. */
static int check_admin_auth(cctx *c, const px_config *cfg, const px_ynode *admin)
{
    const px_ynode *tok = map_get(admin, "token");
    if (cfg->admin_token && !px_admin_token_valid(cfg->admin_token)) {
        return fail(c, tok, "host.admin.token: not usable as a bearer token (value not shown: "
                    "secret): use 1 to 512 letters, digits or - . _ ~ + / (= at the end)");
    }
    if (cfg->admin_auth != PX_ADMIN_AUTH_NONE) {
        return 0;
    }
    if (cfg->admin_token) {
        return fail(c, tok, "host.admin.token: set while host.admin.auth is none; remove one of "
                    "them");
    }
    if (cfg->admin_listen && !px_listen_is_loopback(cfg->admin_listen)) {
        return fail(c, map_get(admin, "auth"),
                    "host.admin.auth: none is refused with host.admin.listen %s, beyond "
                    "loopback: anyone reaching it could read, replay and purge dead letters; "
                    "keep auth: token (the default) or listen on 127.0.0.1",
                    cfg->admin_listen);
    }
    return 0;
}

int px_config_admin_warning(const px_config *cfg, char *buf, size_t len)
{
    const char *listen = cfg->admin_listen;
    if (!listen || !*listen) {
        return 0;
    }
    int line = cfg->admin_line ? cfg->admin_line : 1, col = cfg->admin_col ? cfg->admin_col : 1;
    if (cfg->admin_auth == PX_ADMIN_AUTH_NONE) {
        snprintf(buf, len, "%s:%d:%d: warning: host.admin.auth is none: every local user can "
                 "read, replay and purge dead letters and reload the host through %s", cfg->path,
                 line, col, listen);
        return 1;
    }
    if (!px_listen_is_loopback(listen)) {
        snprintf(buf, len, "%s:%d:%d: warning: host.admin.listen %s is beyond loopback: the "
                 "admin token crosses the network in clear text unless TLS is terminated in "
                 "front (see docs/operations.md, Security)", cfg->path, line, col, listen);
        return 1;
    }
    return 0;
}

/* Makes each relative plugin_path folder absolute against the working directory, once, so that
 * what the host loads never depends on a later chdir; remembers the first one as written for
 * `check` and the start-up log. */
static void resolve_plugin_path(px_config *cfg, const px_ynode *n)
{
    if (n) {
        cfg->plugin_path_line = n->line;
        cfg->plugin_path_col = n->col;
    }
    for (size_t k = 0; k < cfg->nplugin_path; k++) {
        if (cfg->plugin_path[k][0] == '/') {
            continue;
        }
        char *abs = px_path_absolute(cfg->plugin_path[k]);
        if (!cfg->plugin_path_relative) {
            cfg->plugin_path_relative = cfg->plugin_path[k];
            cfg->plugin_path_relative_at = k;
        } else {
            free(cfg->plugin_path[k]);
        }
        cfg->plugin_path[k] = abs;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Sections                                                                                   */
/* ------------------------------------------------------------------------------------------ */

static int name_valid(const char *s);

/* The password in a libpq connection string (URI or key=value), or NULL; new string. */
static char *pg_password(const char *url)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &err);
    PQfreemem(err);
    char *pw = NULL;
    for (PQconninfoOption *o = opts; o && o->keyword; o++) {
        if (strcmp(o->keyword, "password") == 0 && o->val && *o->val) {
            pw = px_xstrdup(o->val);
        }
    }
    PQconninfoFree(opts);
    return pw;
}

/* `host.store`: the backend, its connection and this host's name among the hosts sharing it. */
static int parse_store(cctx *c, px_config *cfg, const px_ynode *st)
{
    static const char *const keys[] = {"type", "url", "host_id", "lease"};
    static const char *const types[] = {"sqlite", "postgres", NULL};
    int rc;
    if (is_null(st)) {
        return 0;
    }
    const px_ynode *url = map_get(st, "url"), *lease = map_get(st, "lease");
    if ((rc = need_map(c, st, "host.store", "a mapping")) < 0 ||
        (rc = CHECK_KEYS(c, st, keys, "host.store")) < 0 ||
        (rc = get_enum(c, map_get(st, "type"), "host.store.type", types, &cfg->store_type)) < 0 ||
        (rc = get_string(c, url, "host.store.url", 1, &cfg->store_url)) < 0 ||
        (rc = get_string(c, map_get(st, "host_id"), "host.store.host_id", 0, &cfg->host_id)) <
            0 ||
        (rc = get_duration(c, lease, "host.store.lease", &cfg->store_lease_ms)) < 0) {
        return rc;
    }
    if (cfg->host_id && !name_valid(cfg->host_id)) {
        return fail(c, map_get(st, "host_id"),
                    "host.store.host_id: use letters, digits, '_', '-' and '.' only");
    }
    if (lease && cfg->store_lease_ms < 1000) {
        return fail(c, lease, "host.store.lease: at least 1s");
    }
    if (cfg->store_type != PX_STORE_POSTGRES) {
        if (url) {
            return fail(c, url, "host.store.url: only for type: postgres");
        }
        return 0;
    }
    if (!cfg->store_url || !cfg->store_url[0]) {
        return fail(c, url ? url : st, "host.store.url: required with type: postgres (e.g. "
                                       "url: \"${PLEXUS_PG_URL}\")");
    }
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(cfg->store_url, &perr);
    if (!opts) {
        /* libpq's message may quote the text; the text may hold the password */
        PQfreemem(perr);
        return fail(c, url, "host.store.url: not a PostgreSQL connection string (value not "
                            "shown: secret)");
    }
    PQconninfoFree(opts);
    char *pw = pg_password(cfg->store_url);
    if (pw && strlen(pw) < PX_SECRET_MIN_LEN) {
        free(pw);
        return fail(c, url, "host.store.url: its password is too short to be a secret (at least "
                            "%d characters needed; value not shown)", PX_SECRET_MIN_LEN);
    }
    free(cfg->store_password);
    cfg->store_password = pw;
    return 0;
}

static int parse_host(cctx *c, px_config *cfg, const px_ynode *h)
{
    static const char *const keys[] = {"data_dir",      "durability", "dedupe_window",
                                       "drain_timeout", "log",        "http",
                                       "admin",         "plugin_path", "watch_plugins",
                                       "max_crashes",   "plugin_trust", "store",
                                       "spool"};
    static const char *const spool_keys[] = {"compress"};
    static const char *const compressions[] = {"none", "zstd", NULL};
    static const char *const log_keys[] = {"level", "format"};
    static const char *const http_keys[] = {"listen", "max_body", "max_connections",
                                            "request_timeout"};
    static const char *const admin_keys[] = {"listen", "token", "auth", "metrics_public"};
    static const char *const auths[] = {"token", "none", NULL};
    static const char *const durabilities[] = {"normal", "fsync", NULL};
    static const char *const levels[] = {"error", "warn", "info", "debug", NULL};
    static const char *const formats[] = {"auto", "json", "text", NULL};
    static const char *const bools[] = {"false", "true", NULL};
    static const char *const trusts[] = {"strict", "permissive", NULL};
    int rc, idx;
    uint64_t v;

    if (is_null(h)) {
        return 0;
    }
    if ((rc = need_map(c, h, "host", "a mapping")) < 0 ||
        (rc = CHECK_KEYS(c, h, keys, "host")) < 0) {
        return rc;
    }
    const px_ynode *n = map_get(h, "data_dir");
    if ((rc = get_string(c, n, "host.data_dir", 0, &cfg->data_dir)) < 0) {
        return rc;
    }
    if (n && n->type == Y_SCALAR && !n->text[0]) {
        return fail(c, n, "host.data_dir: expected a directory, got an empty string");
    }
    if ((rc = get_enum(c, map_get(h, "durability"), "host.durability", durabilities,
                       &cfg->durability)) < 0 ||
        (rc = get_duration(c, map_get(h, "dedupe_window"), "host.dedupe_window",
                           &cfg->dedupe_window_ms)) < 0 ||
        (rc = get_duration(c, map_get(h, "drain_timeout"), "host.drain_timeout",
                           &cfg->drain_timeout_ms)) < 0 ||
        (rc = get_strlist(c, map_get(h, "plugin_path"), "host.plugin_path", &cfg->plugin_path,
                          &cfg->nplugin_path)) < 0 ||
        (rc = get_enum(c, map_get(h, "watch_plugins"), "host.watch_plugins", bools,
                       &cfg->watch_plugins)) < 0 ||
        (rc = get_enum(c, map_get(h, "plugin_trust"), "host.plugin_trust", trusts,
                       &cfg->plugin_trust)) < 0) {
        return rc;
    }
    resolve_plugin_path(cfg, map_get(h, "plugin_path"));
    v = cfg->max_crashes;
    if ((rc = get_uint(c, map_get(h, "max_crashes"), "host.max_crashes", 1, 1000, &v)) < 0) {
        return rc;
    }
    cfg->max_crashes = (uint32_t)v;
    if ((rc = parse_store(c, cfg, map_get(h, "store"))) < 0) {
        return rc;
    }
    const px_ynode *spool = map_get(h, "spool");
    if (!is_null(spool)) {
        if ((rc = need_map(c, spool, "host.spool", "a mapping")) < 0 ||
            (rc = CHECK_KEYS(c, spool, spool_keys, "host.spool")) < 0 ||
            (rc = get_enum(c, map_get(spool, "compress"), "host.spool.compress", compressions,
                           &cfg->spool_compress)) < 0) {
            return rc;
        }
        if (cfg->spool_compress != PX_COMPRESS_NONE && cfg->store_type == PX_STORE_POSTGRES) {
            return fail(c, map_get(spool, "compress"),
                        "host.spool.compress: only the sqlite store compresses payloads");
        }
    }

    const px_ynode *log = map_get(h, "log");
    if (!is_null(log)) {
        if ((rc = need_map(c, log, "host.log", "a mapping")) < 0 ||
            (rc = CHECK_KEYS(c, log, log_keys, "host.log")) < 0) {
            return rc;
        }
        idx = -1;
        if ((rc = get_enum(c, map_get(log, "level"), "host.log.level", levels, &idx)) < 0) {
            return rc;
        }
        if (idx >= 0) {
            free(cfg->log_level);
            cfg->log_level = px_xstrdup(levels[idx]);
        }
        idx = -1;
        if ((rc = get_enum(c, map_get(log, "format"), "host.log.format", formats, &idx)) < 0) {
            return rc;
        }
        if (idx >= 0) {
            free(cfg->log_format);
            cfg->log_format = px_xstrdup(formats[idx]);
        }
    }

    const px_ynode *http = map_get(h, "http");
    if (!is_null(http)) {
        if ((rc = need_map(c, http, "host.http", "a mapping")) < 0 ||
            (rc = CHECK_KEYS(c, http, http_keys, "host.http")) < 0 ||
            (rc = get_listen(c, map_get(http, "listen"), "host.http.listen",
                             &cfg->http_listen)) < 0) {
            return rc;
        }
        v = cfg->http_max_body;
        if ((rc = get_size(c, map_get(http, "max_body"), "host.http.max_body", &v)) < 0) {
            return rc;
        }
        if (v == 0 || v > SIZE_MAX) {
            return fail(c, map_get(http, "max_body"),
                        "host.http.max_body: must be at least 1 byte");
        }
        cfg->http_max_body = (size_t)v;
        v = cfg->http_max_conns;
        if ((rc = get_uint(c, map_get(http, "max_connections"), "host.http.max_connections", 1,
                           UINT32_MAX, &v)) < 0) {
            return rc;
        }
        cfg->http_max_conns = (uint32_t)v;
        const px_ynode *rt = map_get(http, "request_timeout");
        if ((rc = get_duration(c, rt, "host.http.request_timeout",
                               &cfg->http_request_timeout_ms)) < 0) {
            return rc;
        }
        if (cfg->http_request_timeout_ms == 0) {
            return fail(c, rt, "host.http.request_timeout: must be more than 0");
        }
    }

    const px_ynode *admin = map_get(h, "admin");
    if (!is_null(admin)) {
        if ((rc = need_map(c, admin, "host.admin", "a mapping")) < 0 ||
            (rc = CHECK_KEYS(c, admin, admin_keys, "host.admin")) < 0 ||
            (rc = get_listen(c, map_get(admin, "listen"), "host.admin.listen",
                             &cfg->admin_listen)) < 0 ||
            (rc = get_string(c, map_get(admin, "token"), "host.admin.token", 1,
                             &cfg->admin_token)) < 0 ||
            (rc = check_secret_length(c, map_get(admin, "token"), "host.admin.token")) < 0 ||
            (rc = get_enum(c, map_get(admin, "auth"), "host.admin.auth", auths,
                           &cfg->admin_auth)) < 0 ||
            (rc = get_enum(c, map_get(admin, "metrics_public"), "host.admin.metrics_public",
                           bools, &cfg->admin_metrics_public)) < 0) {
            return rc;
        }
        if (cfg->admin_token && !cfg->admin_token[0]) {
            free(cfg->admin_token);
            cfg->admin_token = NULL;
        }
        const px_ynode *at = map_get(admin, "listen") ? map_get(admin, "listen") : admin;
        cfg->admin_line = at->line;
        cfg->admin_col = at->col;
        if ((rc = check_admin_auth(c, cfg, admin)) < 0) {
            return rc;
        }
    }
    return 0;
}

/* Instance and plugin names end up in file names, metrics labels and logs. */
static int name_valid(const char *s)
{
    if (!*s) {
        return 0;
    }
    for (; *s; s++) {
        char ch = *s;
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-' || ch == '.')) {
            return 0;
        }
    }
    return 1;
}

static int parse_instances(cctx *c, px_config *cfg, const px_ynode *plugins)
{
    static const char *const keys[] = {"plugin", "max_inflight", "max_pending",
                                       "max_events_per_second", "ordered", "config"};
    int rc;
    if (is_null(plugins)) {
        return 0;
    }
    if ((rc = need_map(c, plugins, "plugins",
                       "a mapping of instance name to { plugin: ... }")) < 0) {
        return rc;
    }
    cfg->instances = px_xcalloc(plugins->n, sizeof(*cfg->instances));
    for (size_t k = 0; k < plugins->n; k++) {
        const px_ynode *key = plugins->keys[k], *m = plugins->items[k];
        px_instance_conf *inst = &cfg->instances[cfg->ninstances++];
        inst->name = px_xstrdup(key->text);
        inst->line = key->line;
        inst->col = key->col;
        inst->max_inflight = 64;
        if (!name_valid(key->text) || (key->text[0] == '.')) {
            return fail(c, key, "plugin instance name \"%s\" may only contain letters, digits, "
                                "\"_\", \"-\" and \".\" (not first)", key->text);
        }
        char where[300];
        snprintf(where, sizeof(where), "plugin instance \"%s\"", key->text);
        if (m->type != Y_MAP) {
            char buf[ECHO_MAX + 8];
            return fail(c, is_null(m) ? key : m, "%s: expected a mapping like { plugin: NAME }, "
                        "got %s", where, echo(m, buf, sizeof(buf)));
        }
        if ((rc = CHECK_KEYS(c, m, keys, where)) < 0) {
            return rc;
        }
        const px_ynode *plugin = map_get(m, "plugin");
        if (is_null(plugin)) {
            return fail_at(c, key->line, key->col, "missing required key \"plugin\" in %s", where);
        }
        char what[320];
        snprintf(what, sizeof(what), "%s: plugin", where);
        if ((rc = get_string(c, plugin, what, 0, &inst->plugin)) < 0) {
            return rc;
        }
        if (!name_valid(inst->plugin) || inst->plugin[0] == '.') {
            return fail(c, plugin, "%s: plugin name \"%s\" may only contain letters, digits, "
                                   "\"_\", \"-\" and \".\" (not first)", where, inst->plugin);
        }
        uint64_t v = inst->max_inflight;
        snprintf(what, sizeof(what), "%s: max_inflight", where);
        if ((rc = get_uint(c, map_get(m, "max_inflight"), what, 1, 1000000, &v)) < 0) {
            return rc;
        }
        inst->max_inflight = (uint32_t)v;
        snprintf(what, sizeof(what), "%s: max_pending", where);
        if ((rc = get_uint(c, map_get(m, "max_pending"), what, 1, 1000000000000ull,
                           &inst->max_pending)) < 0) {
            return rc;
        }
        const px_ynode *eps = map_get(m, "max_events_per_second");
        if (!is_null(eps)) {
            if (eps->type != Y_SCALAR || (eps->kind != YS_INT && eps->kind != YS_FLOAT) ||
                !(eps->d > 0) || eps->d > 1e9) {
                char buf[ECHO_MAX + 8];
                return fail(c, eps, "%s: max_events_per_second: expected a number above 0, got "
                            "%s", where, echo(eps, buf, sizeof(buf)));
            }
            inst->max_eps = eps->d;
        }
        const px_ynode *ordered = map_get(m, "ordered");
        if (!is_null(ordered)) {
            if (ordered->type != Y_SCALAR || ordered->kind != YS_BOOL) {
                char buf[ECHO_MAX + 8];
                return fail(c, ordered, "%s: ordered: expected true or false, got %s", where,
                            echo(ordered, buf, sizeof(buf)));
            }
            inst->ordered = ordered->b;
        }
        const px_ynode *conf = map_get(m, "config");
        if (is_null(conf)) {
            inst->config = json_object();
            continue;
        }
        snprintf(what, sizeof(what), "%s: config", where);
        if ((rc = need_map(c, conf, what, "a mapping")) < 0 ||
            (rc = node_to_json(c, conf, &inst->config)) < 0) {
            return rc;
        }
        inst->node = ynode_copy(NULL, conf);
    }
    return 0;
}

/* RFC 6901: "" or "/..." with "~" only as "~0" or "~1". */
static const char *pointer_problem(const char *s)
{
    if (s[0] != '/') {
        return "must start with \"/\"";
    }
    for (const char *p = s; *p; p++) {
        if (*p == '~' && p[1] != '0' && p[1] != '1') {
            return "has a \"~\" not followed by 0 or 1 (write ~0 for \"~\" and ~1 for \"/\")";
        }
    }
    return NULL;
}

/* Names of the declared instances, for suggestions (borrowed strings). */
static const char **instance_names(const px_config *cfg)
{
    const char **names = px_xcalloc(cfg->ninstances + 1, sizeof(*names));
    for (size_t k = 0; k < cfg->ninstances; k++) {
        names[k] = cfg->instances[k].name;
    }
    return names;
}

static int check_instance_ref(cctx *c, const px_config *cfg, const px_ynode *n,
                              const char *label, const char *role, const char *value)
{
    if (px_config_instance(cfg, value)) {
        return 0;
    }
    if (cfg->ninstances == 0) {
        return fail(c, n, "%s: %s \"%s\" is not a declared plugin instance (nothing is declared "
                          "under \"plugins\")", label, role, value);
    }
    const char **names = instance_names(cfg);
    char hint[160];
    did_you_mean(value, names, cfg->ninstances, hint, sizeof(hint));
    free(names);
    return fail(c, n, "%s: %s \"%s\" is not a declared plugin instance%s", label, role, value,
                hint);
}

static int parse_condition(cctx *c, px_cond *cond, const px_ynode *key, const px_ynode *v,
                           const char *label)
{
    static const char *const ops[] = {"equals", "in", "exists"};
    const char *problem = pointer_problem(key->text);
    char where[400], buf[ECHO_MAX + 8];
    int rc;

    cond->pointer = px_xstrdup(key->text);
    if (problem) {
        return fail(c, key, "%s: match pointer \"%s\" %s", label, key->text, problem);
    }
    if (v->type != Y_MAP) {
        cond->op = PX_COND_EQUALS;
        return node_to_json(c, v, &cond->value);
    }
    snprintf(where, sizeof(where), "the condition on \"%s\" of %s", key->text, label);
    if ((rc = CHECK_KEYS(c, v, ops, where)) < 0) {
        return rc;
    }
    if (v->n != 1) {
        int line, col;
        map_mark(v, &line, &col);
        return fail_at(c, line, col, "%s: the condition on \"%s\" needs exactly one of equals, "
                                     "in or exists", label, key->text);
    }
    const px_ynode *arg = v->items[0];
    const char *op = v->keys[0]->text;
    if (strcmp(op, "equals") == 0) {
        cond->op = PX_COND_EQUALS;
    } else if (strcmp(op, "in") == 0) {
        cond->op = PX_COND_IN;
        if (arg->type != Y_SEQ) {
            return fail(c, arg, "%s: \"in\" on \"%s\" expects a list, got %s", label, key->text,
                        echo(arg, buf, sizeof(buf)));
        }
    } else {
        cond->op = PX_COND_EXISTS;
        if (arg->type != Y_SCALAR || arg->kind != YS_BOOL) {
            return fail(c, arg, "%s: \"exists\" on \"%s\" expects true or false, got %s", label,
                        key->text, echo(arg, buf, sizeof(buf)));
        }
    }
    return node_to_json(c, arg, &cond->value);
}

static int parse_when(cctx *c, px_pipeline_conf *pl, const px_ynode *w, const char *label)
{
    static const char *const keys[] = {"type", "match"};
    char where[300], what[300];
    int rc;
    if (is_null(w)) {
        return 0;
    }
    snprintf(what, sizeof(what), "%s: when", label);
    snprintf(where, sizeof(where), "the \"when\" of %s", label);
    if ((rc = need_map(c, w, what, "a mapping with type and/or match")) < 0 ||
        (rc = CHECK_KEYS(c, w, keys, where)) < 0) {
        return rc;
    }
    snprintf(what, sizeof(what), "%s: when.type", label);
    if ((rc = get_strlist(c, map_get(w, "type"), what, &pl->types, &pl->ntypes)) < 0) {
        return rc;
    }
    const px_ynode *match = map_get(w, "match");
    if (is_null(match)) {
        return 0;
    }
    snprintf(what, sizeof(what), "%s: when.match", label);
    if ((rc = need_map(c, match, what, "a mapping of JSON pointer to condition")) < 0) {
        return rc;
    }
    pl->conds = px_xcalloc(match->n ? match->n : 1, sizeof(*pl->conds));
    for (size_t k = 0; k < match->n; k++) {
        pl->nconds++;
        if ((rc = parse_condition(c, &pl->conds[k], match->keys[k], match->items[k], label)) < 0) {
            return rc;
        }
    }
    return 0;
}

static int parse_target(cctx *c, const px_config *cfg, px_target *t, const px_ynode *m,
                        const char *label, size_t index)
{
    static const char *const keys[] = {"sink", "action", "with"};
    char where[300], what[300];
    int rc;

    t->line = m->line;
    t->col = m->col;
    snprintf(what, sizeof(what), "%s: to", label);
    if ((rc = need_map(c, m, what, "a target mapping like { sink: NAME }")) < 0) {
        return rc;
    }
    snprintf(where, sizeof(where), "target %zu of %s", index + 1, label);
    if ((rc = CHECK_KEYS(c, m, keys, where)) < 0) {
        return rc;
    }
    const px_ynode *sink = map_get(m, "sink");
    if (is_null(sink)) {
        return missing(c, m, "sink", where);
    }
    snprintf(what, sizeof(what), "%s: sink", label);
    if ((rc = get_string(c, sink, what, 0, &t->sink)) < 0 ||
        (rc = check_instance_ref(c, cfg, sink, label, "sink", t->sink)) < 0) {
        return rc;
    }
    t->action = px_xstrdup("");
    snprintf(what, sizeof(what), "%s: action", label);
    if ((rc = get_string(c, map_get(m, "action"), what, 0, &t->action)) < 0) {
        return rc;
    }
    const px_ynode *with = map_get(m, "with");
    if (is_null(with)) {
        t->with = json_object();
        return 0;
    }
    return node_to_json(c, with, &t->with);
}

static int parse_retry(cctx *c, px_retry_policy *r, const px_ynode *m, const char *label)
{
    static const char *const keys[] = {"attempts", "backoff", "max_backoff", "jitter", "timeout"};
    char where[300], what[300], buf[ECHO_MAX + 8];
    int rc;
    if (is_null(m)) {
        return 0;
    }
    snprintf(what, sizeof(what), "%s: retry", label);
    snprintf(where, sizeof(where), "the \"retry\" of %s", label);
    if ((rc = need_map(c, m, what, "a mapping")) < 0 || (rc = CHECK_KEYS(c, m, keys, where)) < 0) {
        return rc;
    }
    uint64_t v = r->attempts;
    snprintf(what, sizeof(what), "%s: retry.attempts", label);
    if ((rc = get_uint(c, map_get(m, "attempts"), what, 1, 1000000, &v)) < 0) {
        return rc;
    }
    r->attempts = (uint32_t)v;
    snprintf(what, sizeof(what), "%s: retry.backoff", label);
    if ((rc = get_duration(c, map_get(m, "backoff"), what, &r->backoff_ms)) < 0) {
        return rc;
    }
    snprintf(what, sizeof(what), "%s: retry.max_backoff", label);
    if ((rc = get_duration(c, map_get(m, "max_backoff"), what, &r->max_backoff_ms)) < 0) {
        return rc;
    }
    snprintf(what, sizeof(what), "%s: retry.timeout", label);
    if ((rc = get_duration(c, map_get(m, "timeout"), what, &r->timeout_ms)) < 0) {
        return rc;
    }
    const px_ynode *j = map_get(m, "jitter");
    if (!is_null(j)) {
        if (j->type != Y_SCALAR || (j->kind != YS_INT && j->kind != YS_FLOAT) || j->d < 0 ||
            j->d > 1) {
            return fail(c, j, "%s: retry.jitter: expected a number from 0 to 1, got %s", label,
                        echo(j, buf, sizeof(buf)));
        }
        r->jitter = j->d;
    }
    if (r->backoff_ms > r->max_backoff_ms) {
        const px_ynode *at = map_get(m, "backoff") ? map_get(m, "backoff")
                                                    : map_get(m, "max_backoff");
        return fail(c, at, "%s: retry.backoff (%llu ms) is longer than retry.max_backoff "
                           "(%llu ms)", label, (unsigned long long)r->backoff_ms,
                    (unsigned long long)r->max_backoff_ms);
    }
    if (r->timeout_ms == 0) {
        return fail(c, map_get(m, "timeout"), "%s: retry.timeout: must be longer than 0", label);
    }
    return 0;
}

static int parse_pipeline(cctx *c, px_config *cfg, px_pipeline_conf *pl, const px_ynode *m,
                          size_t index)
{
    static const char *const keys[] = {"name", "from", "when", "to", "retry"};
    char label[300], what[340], buf[ECHO_MAX + 8];
    int rc;

    pl->retry = (px_retry_policy){.attempts = 10,
                                  .backoff_ms = 1000,
                                  .max_backoff_ms = 600000,
                                  .jitter = 0.2,
                                  .timeout_ms = 30000};
    pl->line = m->line;
    pl->col = m->col;
    snprintf(label, sizeof(label), "pipeline #%zu", index + 1);
    if (m->type != Y_MAP) {
        return fail(c, m, "%s: expected a mapping with name, from and to, got %s", label,
                    echo(m, buf, sizeof(buf)));
    }
    const px_ynode *name = map_get(m, "name");
    if (name && name->type == Y_SCALAR && name->kind != YS_NULL) {
        snprintf(label, sizeof(label), "pipeline \"%s\"", name->text);
    }
    if ((rc = CHECK_KEYS(c, m, keys, label)) < 0) {
        return rc;
    }
    if (is_null(name)) {
        return missing(c, m, "name", label);
    }
    snprintf(what, sizeof(what), "%s: name", label);
    if ((rc = get_string(c, name, what, 0, &pl->name)) < 0) {
        return rc;
    }
    if (!pl->name[0]) {
        return fail(c, name, "%s: name must not be empty", label);
    }
    for (size_t k = 0; k < cfg->npipelines - 1; k++) {
        if (strcmp(cfg->pipelines[k].name, pl->name) == 0) {
            return fail(c, name, "duplicate pipeline name \"%s\" (first at line %d, column %d)",
                        pl->name, cfg->pipelines[k].line, cfg->pipelines[k].col);
        }
    }

    const px_ynode *from = map_get(m, "from");
    if (is_null(from)) {
        return missing(c, m, "from", label);
    }
    snprintf(what, sizeof(what), "%s: from", label);
    if ((rc = get_string(c, from, what, 0, &pl->from)) < 0) {
        return rc;
    }
    if (strcmp(pl->from, "*") != 0 &&
        (rc = check_instance_ref(c, cfg, from, label, "from", pl->from)) < 0) {
        return rc;
    }
    if ((rc = parse_when(c, pl, map_get(m, "when"), label)) < 0) {
        return rc;
    }

    const px_ynode *to = map_get(m, "to");
    if (is_null(to)) {
        return missing(c, m, "to", label);
    }
    if (to->type == Y_SEQ && to->n == 0) {
        return fail(c, to, "%s: to: expected at least one target", label);
    }
    size_t nto = to->type == Y_SEQ ? to->n : 1;
    pl->to = px_xcalloc(nto, sizeof(*pl->to));
    for (size_t k = 0; k < nto; k++) {
        pl->nto++;
        if ((rc = parse_target(c, cfg, &pl->to[k], to->type == Y_SEQ ? to->items[k] : to, label,
                               k)) < 0) {
            return rc;
        }
    }
    return parse_retry(c, &pl->retry, map_get(m, "retry"), label);
}

static int parse_pipelines(cctx *c, px_config *cfg, const px_ynode *list)
{
    int rc;
    if (is_null(list)) {
        return 0;
    }
    if (list->type != Y_SEQ) {
        char buf[ECHO_MAX + 8];
        return fail(c, list, "pipelines: expected a list of pipelines (\"- name: ...\"), got %s",
                    echo(list, buf, sizeof(buf)));
    }
    cfg->pipelines = px_xcalloc(list->n ? list->n : 1, sizeof(*cfg->pipelines));
    for (size_t k = 0; k < list->n; k++) {
        cfg->npipelines++;
        if ((rc = parse_pipeline(c, cfg, &cfg->pipelines[k], list->items[k], k)) < 0) {
            return rc;
        }
    }
    return 0;
}

static int build_config(cctx *c, px_config *cfg, const px_ynode *root)
{
    static const char *const keys[] = {"version", "host", "plugins", "pipelines", "tests"};
    char buf[ECHO_MAX + 8];
    int rc;

    if (!root || is_null(root)) {
        return fail_at(c, 1, 1, "the configuration is empty; it needs at least \"version: 1\"");
    }
    if (root->type != Y_MAP) {
        return fail(c, root, "expected a mapping at the top level (version, host, plugins, "
                             "pipelines), got %s", echo(root, buf, sizeof(buf)));
    }
    if ((rc = CHECK_KEYS(c, root, keys, "the top level")) < 0) {
        return rc;
    }
    const px_ynode *version = map_get(root, "version");
    if (!version) {
        return fail_at(c, root->line, root->col,
                       "missing required key \"version\" in the top level (add \"version: 1\")");
    }
    if (version->type != Y_SCALAR || version->kind != YS_INT || version->i != 1) {
        return fail(c, version, "unsupported version %s; this host reads version 1",
                    echo(version, buf, sizeof(buf)));
    }
    cfg->version = 1;
    if ((rc = parse_host(c, cfg, map_get(root, "host"))) < 0 ||
        (rc = parse_instances(c, cfg, map_get(root, "plugins"))) < 0 ||
        (rc = parse_pipelines(c, cfg, map_get(root, "pipelines"))) < 0) {
        return rc;
    }
    /* Pipeline tests are read by `plexus test` (pipeline_test.h); `run` and `check` only keep
     * them. */
    const px_ynode *tests = map_get(root, "tests");
    if (tests && !is_null(tests)) {
        cfg->tests = ynode_copy(NULL, tests);
    }
    return 0;
}

/* <hostname>-<8 hex digits of an FNV-1a hash of data_dir's absolute path>: stable across restarts
 * of one installation, different for two installations on one machine. New string. */
static char *default_host_id(const char *data_dir)
{
    char host[256] = "host";
    if (gethostname(host, sizeof(host) - 1) != 0 || !host[0]) {
        strcpy(host, "host");
    }
    host[sizeof(host) - 1] = '\0';
    for (char *p = host; *p; p++) {
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '.')) {
            *p = '_';
        }
    }
    char cwd[PATH_MAX] = "";
    if (data_dir[0] != '/' && !getcwd(cwd, sizeof(cwd))) {
        cwd[0] = '\0';
    }
    uint32_t h = 2166136261u;
    char *dir = px_xasprintf("%s/%s", cwd, data_dir);
    for (const unsigned char *p = (const unsigned char *)dir; *p; p++) {
        h = (h ^ *p) * 16777619u;
    }
    free(dir);
    return px_xasprintf("%s-%08x", host, h);
}

static px_config *config_defaults(const char *path)
{
    px_config *cfg = px_xcalloc(1, sizeof(*cfg));
    cfg->path = px_xstrdup(path);
    cfg->data_dir = px_xstrdup("./var");
    cfg->http_listen = NULL; /* plugin routes need an explicit host.http.listen */
    cfg->http_max_body = 1024 * 1024;
    cfg->http_max_conns = 1024;
    cfg->http_request_timeout_ms = 30000;
    cfg->admin_listen = px_xstrdup("127.0.0.1:8081");
    cfg->log_level = px_xstrdup("info");
    cfg->log_format = px_xstrdup("auto");
    cfg->durability = PX_DURABILITY_NORMAL;
    cfg->dedupe_window_ms = 24ull * 3600 * 1000;
    cfg->drain_timeout_ms = 10000;
    cfg->max_crashes = 3;
    cfg->store_lease_ms = 15000;
    return cfg;
}

/* ------------------------------------------------------------------------------------------ */
/* Public API                                                                                 */
/* ------------------------------------------------------------------------------------------ */

int px_config_parse(const char *name, const char *text, size_t len, px_config **out, char *err,
                    size_t errlen)
{
    cctx c = {.file = name ? name : "<config>", .err = err, .errlen = errlen, .expand = 1};
    px_ynode *root = NULL;
    px_config *cfg = NULL;
    int rc;

    if (err && errlen) {
        err[0] = '\0';
    }
    if (!text || !out) {
        return fail_at(&c, 1, 1, "no configuration text");
    }
    if ((rc = yaml_to_tree(&c, text, len, &root)) < 0) {
        goto fail;
    }
    cfg = config_defaults(c.file);
    if ((rc = build_config(&c, cfg, root)) < 0) {
        goto fail;
    }
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < len; i++) {
        h = (h ^ (unsigned char)text[i]) * 1099511628211ull;
    }
    snprintf(cfg->hash, sizeof(cfg->hash), "%016llx", (unsigned long long)h);
    ynode_free(root);
    px_log_add_secret(cfg->admin_token);
    px_log_add_secret(cfg->store_password);
    if (!cfg->host_id) {
        cfg->host_id = default_host_id(cfg->data_dir);
    }
    *out = cfg;
    return 0;

fail:
    px_config_destroy(cfg);
    ynode_free(root);
    return PX_ECONFIG;
}

/* Reads the whole file at path into *out (owned by caller; free), NUL-terminated, its length
 * in *len; or fails with a "path:1:1: cannot ..." message. */
static int read_whole(cctx *c, const char *path, char **out, size_t *len)
{
    FILE *f = path ? fopen(path, "rb") : NULL;
    if (!f) {
        return fail_at(c, 1, 1, "cannot open the file (%s)", strerror(path ? errno : EINVAL));
    }
    sbuf b = {0};
    char chunk[8192];
    size_t got;
    sbuf_add(&b, "", 0);
    while ((got = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        sbuf_add(&b, chunk, got);
    }
    int read_err = ferror(f);
    fclose(f);
    if (read_err) {
        free(b.p);
        return fail_at(c, 1, 1, "cannot read the file (%s)", strerror(EIO));
    }
    *out = b.p;
    *len = b.n;
    return 0;
}

int px_config_load(const char *path, px_config **out, char *err, size_t errlen)
{
    cctx c = {.file = path ? path : "<config>", .err = err, .errlen = errlen};
    if (err && errlen) {
        err[0] = '\0';
    }
    char *text = NULL;
    size_t len = 0;
    if (read_whole(&c, path, &text, &len) < 0) {
        return PX_ECONFIG;
    }
    int rc = px_config_parse(path, text, len, out, err, errlen);
    free(text);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* YAML nodes for other readers (pipeline tests)                                              */
/* ------------------------------------------------------------------------------------------ */

int px_yaml_load(const char *path, px_ynode **out, char *err, size_t errlen)
{
    cctx c = {.file = path ? path : "<yaml>", .err = err, .errlen = errlen, .expand = 1};
    if (err && errlen) {
        err[0] = '\0';
    }
    char *text = NULL;
    size_t len = 0;
    if (read_whole(&c, path, &text, &len) < 0) {
        return PX_ECONFIG;
    }
    px_ynode *root = NULL;
    int rc = yaml_to_tree(&c, text, len, &root);
    free(text);
    if (rc < 0) {
        return PX_ECONFIG;
    }
    if (!root) {
        return fail_at(&c, 1, 1, "the file is empty");
    }
    *out = root;
    return 0;
}

void px_ynode_destroy(px_ynode *n)
{
    ynode_free(n);
}

int px_ynode_type(const px_ynode *n)
{
    if (is_null(n)) {
        return PX_YNODE_NULL;
    }
    return n->type == Y_MAP ? PX_YNODE_MAP : n->type == Y_SEQ ? PX_YNODE_SEQ : PX_YNODE_SCALAR;
}

size_t px_ynode_size(const px_ynode *n)
{
    return n && n->type != Y_SCALAR ? n->n : 0;
}

const px_ynode *px_ynode_at(const px_ynode *n, size_t i)
{
    return n && n->type != Y_SCALAR && i < n->n ? n->items[i] : NULL;
}

const px_ynode *px_ynode_key_at(const px_ynode *n, size_t i)
{
    return n && n->type == Y_MAP && i < n->n ? n->keys[i] : NULL;
}

const px_ynode *px_ynode_get(const px_ynode *m, const char *key)
{
    return map_get(m, key);
}

const char *px_ynode_text(const px_ynode *n)
{
    return n && n->type == Y_SCALAR ? n->text : NULL;
}

int px_ynode_is_string(const px_ynode *n)
{
    return n && n->type == Y_SCALAR && (n->quoted || n->kind == YS_STR);
}

void px_ynode_mark(const px_ynode *n, int *line, int *col)
{
    *line = n ? n->line : 1;
    *col = n ? n->col : 1;
}

int px_ynode_to_json(const px_ynode *n, const char *file, json_t **out, char *err, size_t errlen)
{
    cctx c = {.file = file ? file : "<yaml>", .err = err, .errlen = errlen};
    return node_to_json(&c, n, out);
}

const char *px_suggest(const char *word, const char *const *cands, size_t n, char *buf,
                       size_t size)
{
    return did_you_mean(word, cands, n, buf, size);
}

void px_config_option_mark(const px_instance_conf *inst, const char *option, int *line, int *col)
{
    const px_ynode *n = map_get(inst->node, option);
    *line = n ? n->line : inst->line;
    *col = n ? n->col : inst->col;
}

const px_instance_conf *px_config_instance(const px_config *cfg, const char *name)
{
    if (!cfg || !name) {
        return NULL;
    }
    for (size_t k = 0; k < cfg->ninstances; k++) {
        if (strcmp(cfg->instances[k].name, name) == 0) {
            return &cfg->instances[k];
        }
    }
    return NULL;
}

static const char *const type_expect[] = {
    [PX_OPT_STRING] = "a string",
    [PX_OPT_INT] = "an integer",
    [PX_OPT_NUMBER] = "a number",
    [PX_OPT_BOOL] = "true or false",
    [PX_OPT_DURATION] = "a duration like 250ms, 30s, 5m, 1h or 1d",
    [PX_OPT_SIZE] = "a size like 1MiB, 64KiB or 512",
    [PX_OPT_LIST] = "a list of strings",
    [PX_OPT_OBJECT] = "a mapping",
};

/* Converts option value n (non-null) per opt->type. Returns 0 and a new reference, or < 0 when
 * the type does not fit (no message written). */
static int option_value(const px_option *opt, const px_ynode *n, json_t **out)
{
    uint64_t v;
    switch (opt->type) {
    case PX_OPT_STRING:
        if (n->type != Y_SCALAR) {
            return PX_EINVAL;
        }
        *out = json_string(n->text);
        break;
    case PX_OPT_INT:
        if (n->type != Y_SCALAR || n->kind != YS_INT) {
            return PX_EINVAL;
        }
        *out = json_integer(n->i);
        break;
    case PX_OPT_NUMBER:
        if (n->type != Y_SCALAR || (n->kind != YS_INT && n->kind != YS_FLOAT)) {
            return PX_EINVAL;
        }
        *out = n->kind == YS_INT ? json_integer(n->i) : json_real(n->d);
        break;
    case PX_OPT_BOOL:
        if (n->type != Y_SCALAR || n->kind != YS_BOOL) {
            return PX_EINVAL;
        }
        *out = json_boolean(n->b);
        break;
    case PX_OPT_DURATION:
    case PX_OPT_SIZE:
        if (n->type != Y_SCALAR) {
            return PX_EINVAL;
        }
        if (n->kind == YS_INT) {
            if (n->i < 0) {
                return PX_EINVAL;
            }
            v = (uint64_t)n->i;
        } else if ((opt->type == PX_OPT_DURATION ? px_parse_duration(n->text, &v)
                                                 : px_parse_size(n->text, &v)) < 0 ||
                   v > INT64_MAX) {
            return PX_EINVAL;
        }
        *out = json_integer((json_int_t)v);
        break;
    case PX_OPT_LIST: {
        const px_ynode *const *items = (const px_ynode *const *)&n;
        size_t count = 1;
        if (n->type == Y_SEQ) {
            items = (const px_ynode *const *)n->items;
            count = n->n;
        }
        json_t *arr = json_array();
        for (size_t k = 0; k < count; k++) {
            json_t *s = NULL;
            if (items[k]->type != Y_SCALAR || items[k]->kind == YS_NULL ||
                !(s = json_string(items[k]->text))) {
                json_decref(arr);
                return PX_EINVAL;
            }
            json_array_append_new(arr, s);
        }
        *out = arr;
        break;
    }
    case PX_OPT_OBJECT:
        if (n->type != Y_MAP) {
            return PX_EINVAL;
        }
        {
            cctx quiet = {.file = ""};
            if (node_to_json(&quiet, n, out) < 0) {
                return PX_EINVAL;
            }
        }
        break;
    default:
        return PX_EINVAL;
    }
    return *out ? 0 : PX_EINVAL;
}

static void register_secret(const px_ynode *n)
{
    if (n->type == Y_SCALAR) {
        px_log_add_secret(n->text);
    }
    for (size_t k = 0; k < n->n; k++) {
        register_secret(n->items[k]);
    }
}

/* Registers every secret the user set, so even a failing config never logs one. A default is not
 * a secret (it is in the plugin's documentation): masking "guest" would hide every "guest" in the
 * log. */
static void register_set_secrets(const px_ynode *conf, const px_option *options, size_t nopts)
{
    for (size_t k = 0; conf && k < conf->n; k++) {
        for (size_t o = 0; o < nopts; o++) {
            if (strcmp(conf->keys[k]->text, options[o].name) == 0 &&
                (options[o].flags & PX_OPT_SECRET)) {
                register_secret(conf->items[k]);
            }
        }
    }
}

/* Fails on the first key of conf that names no option (one of names, nopts of them). */
static int check_known_options(cctx *c, const px_instance_conf *inst, const px_ynode *conf,
                               const char *const *names, size_t nopts)
{
    for (size_t k = 0; conf && k < conf->n; k++) {
        const char *key = conf->keys[k]->text;
        size_t o;
        for (o = 0; o < nopts && strcmp(names[o], key) != 0; o++) {
        }
        if (o == nopts) {
            char hint[160];
            return fail(c, conf->keys[k], "plugin instance \"%s\": unknown option \"%s\" for "
                                          "plugin \"%s\"%s", inst->name, key, inst->plugin,
                        did_you_mean(key, names, nopts, hint, sizeof(hint)));
        }
    }
    return 0;
}

/* What an option of opt's type must hold, for error messages. */
static const char *option_expect(const px_option *opt)
{
    return opt->type < sizeof(type_expect) / sizeof(type_expect[0]) && type_expect[opt->type]
               ? type_expect[opt->type]
               : "a value of an unknown type";
}

/* The value the user set for opt (n, not null) into *value (owned by caller); a secret's value is
 * never echoed in the error. */
static int option_from_config(cctx *c, const px_instance_conf *inst, const px_option *opt,
                              const px_ynode *n, json_t **value)
{
    const char *expect = option_expect(opt);
    int secret = (opt->flags & PX_OPT_SECRET) != 0;
    char buf[ECHO_MAX + 8];
    if (option_value(opt, n, value) < 0) {
        if (secret) {
            return fail(c, n, "plugin instance \"%s\": option \"%s\": expected %s (value not "
                              "shown: secret)", inst->name, opt->name, expect);
        }
        return fail(c, n, "plugin instance \"%s\": option \"%s\": expected %s, got %s",
                    inst->name, opt->name, expect, echo(n, buf, sizeof(buf)));
    }
    if (secret) {
        char what[256];
        snprintf(what, sizeof(what), "plugin instance \"%s\": option \"%s\"", inst->name,
                 opt->name);
        if (check_secret_length(c, n, what) < 0) {
            json_decref(*value);
            *value = NULL;
            return PX_ECONFIG;
        }
    }
    return 0;
}

/* The plugin's declared default for opt (YAML text) into *value (owned by caller); a default that
 * does not fit the option's type is the plugin's error. */
static int option_from_default(cctx *c, const px_instance_conf *inst, const px_option *opt,
                               json_t **value)
{
    cctx dc = {.file = "", .expand = 0};
    px_ynode *d = NULL;
    int drc = yaml_to_tree(&dc, opt->default_value, strlen(opt->default_value), &d);
    int rc = 0;
    if (drc == 0 && is_null(d)) {
        *value = json_null();
    } else if (drc < 0 || option_value(opt, d, value) < 0) {
        rc = fail_at(c, inst->line, inst->col, "plugin \"%s\" declares an invalid default "
                     "for option \"%s\" (expected %s)", inst->plugin, opt->name,
                     option_expect(opt));
    }
    ynode_free(d);
    return rc;
}

/* Fails for a required option the user left out (n: its null node, if any), at the node, else at
 * the instance's config mapping, else at the instance. */
static int fail_missing_option(cctx *c, const px_instance_conf *inst, const px_ynode *conf,
                               const px_ynode *n, const px_option *opt)
{
    int line = inst->line, col = inst->col;
    if (n) {
        line = n->line;
        col = n->col;
    } else if (conf) {
        map_mark(conf, &line, &col);
    }
    return fail_at(c, line, col, "plugin instance \"%s\": missing required option \"%s\" of "
                                 "plugin \"%s\"", inst->name, opt->name, inst->plugin);
}

/* The value of one option: what the user set, else the plugin's default, else null (an error
 * when the option is required). */
static int resolve_option(cctx *c, const px_instance_conf *inst, const px_ynode *conf,
                          const px_option *opt, json_t **value)
{
    const px_ynode *n = map_get(conf, opt->name);
    if (!is_null(n)) {
        return option_from_config(c, inst, opt, n, value);
    }
    if (opt->default_value) {
        return option_from_default(c, inst, opt, value);
    }
    if (opt->flags & PX_OPT_REQUIRED) {
        return fail_missing_option(c, inst, conf, n, opt);
    }
    *value = json_null();
    return 0;
}

int px_config_options(const px_config *cfg, const px_instance_conf *inst,
                      const px_option *options, json_t **out, char *err, size_t errlen)
{
    cctx c = {.file = cfg && cfg->path ? cfg->path : "<config>", .err = err, .errlen = errlen};
    px_ynode *own = NULL;
    const px_ynode *conf;
    json_t *result = NULL;
    const char **names = NULL;
    size_t nopts = 0;
    int rc = PX_ECONFIG;

    if (err && errlen) {
        err[0] = '\0';
    }
    if (!inst || !out) {
        return fail_at(&c, 1, 1, "no plugin instance given");
    }
    conf = inst->node;
    if (!conf && json_object_size(inst->config) > 0) {
        own = json_to_node(inst->config, inst->line, inst->col);
        conf = own;
    }
    while (options && options[nopts].name) {
        nopts++;
    }
    names = px_xcalloc(nopts + 1, sizeof(*names));
    for (size_t k = 0; k < nopts; k++) {
        names[k] = options[k].name;
    }

    register_set_secrets(conf, options, nopts);
    if (check_known_options(&c, inst, conf, names, nopts) < 0) {
        goto fail;
    }
    result = json_object();
    for (size_t o = 0; o < nopts; o++) {
        json_t *value = NULL;
        if (resolve_option(&c, inst, conf, &options[o], &value) < 0) {
            goto fail;
        }
        json_object_set_new(result, options[o].name, value);
    }
    free(names);
    ynode_free(own);
    *out = result;
    return 0;

fail:
    json_decref(result);
    free(names);
    ynode_free(own);
    return rc;
}

void px_config_destroy(px_config *cfg)
{
    if (!cfg) {
        return;
    }
    for (size_t k = 0; k < cfg->ninstances; k++) {
        px_instance_conf *inst = &cfg->instances[k];
        free(inst->name);
        free(inst->plugin);
        json_decref(inst->config);
        ynode_free(inst->node);
    }
    ynode_free(cfg->tests);
    free(cfg->instances);
    for (size_t k = 0; k < cfg->npipelines; k++) {
        px_pipeline_conf *pl = &cfg->pipelines[k];
        free(pl->name);
        free(pl->from);
        for (size_t t = 0; t < pl->ntypes; t++) {
            free(pl->types[t]);
        }
        free(pl->types);
        for (size_t t = 0; t < pl->nconds; t++) {
            free(pl->conds[t].pointer);
            json_decref(pl->conds[t].value);
        }
        free(pl->conds);
        for (size_t t = 0; t < pl->nto; t++) {
            free(pl->to[t].sink);
            free(pl->to[t].action);
            json_decref(pl->to[t].with);
        }
        free(pl->to);
    }
    free(cfg->pipelines);
    for (size_t k = 0; k < cfg->nplugin_path; k++) {
        free(cfg->plugin_path[k]);
    }
    free(cfg->plugin_path);
    free(cfg->plugin_path_relative);
    free(cfg->path);
    free(cfg->data_dir);
    free(cfg->store_url);
    free(cfg->store_password);
    free(cfg->host_id);
    free(cfg->http_listen);
    free(cfg->admin_listen);
    free(cfg->admin_token);
    free(cfg->log_level);
    free(cfg->log_format);
    free(cfg);
}
