/* libpq helpers of the PostgreSQL store (see pg_conn.h). */
#include "pg_conn.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"

static void secrets_add(px_pg_secrets *s, const char *p, size_t n)
{
    if (n == 0 || s->n == sizeof(s->v) / sizeof(s->v[0])) {
        return;
    }
    for (size_t i = 0; i < s->n; i++) {
        if (strlen(s->v[i]) == n && memcmp(s->v[i], p, n) == 0) {
            return;
        }
    }
    s->v[s->n++] = px_xstrndup(p, n);
}

/* The password of a URI as written: postgres[ql]://user:PASSWORD@host... */
static void uri_password(px_pg_secrets *s, const char *url)
{
    const char *scheme = strstr(url, "://");
    if (!scheme) {
        return;
    }
    const char *auth = scheme + 3;
    size_t auth_len = strcspn(auth, "/?");
    const char *at = memchr(auth, '@', auth_len);
    if (!at) {
        return;
    }
    const char *colon = memchr(auth, ':', (size_t)(at - auth));
    if (colon) {
        secrets_add(s, colon + 1, (size_t)(at - colon - 1));
    }
}

/* The password of a keyword/value string as written: password=VALUE or password='VALUE'. */
static void keyword_password(px_pg_secrets *s, const char *url)
{
    for (const char *p = strstr(url, "password"); p; p = strstr(p + 1, "password")) {
        const char *q = p + 8;
        while (*q == ' ') {
            q++;
        }
        if (*q != '=') {
            continue;
        }
        q++;
        while (*q == ' ') {
            q++;
        }
        size_t n = *q == '\'' ? strcspn(++q, "'") : strcspn(q, " ");
        secrets_add(s, q, n);
    }
}

void px_pg_secrets_init(px_pg_secrets *s, const char *url)
{
    memset(s, 0, sizeof(*s));
    if (!url) {
        return;
    }
    uri_password(s, url);
    keyword_password(s, url);
    PQconninfoOption *opts = PQconninfoParse(url, NULL);
    for (PQconninfoOption *o = opts; o && o->keyword; o++) {
        if (strcmp(o->keyword, "password") == 0 && o->val) {
            secrets_add(s, o->val, strlen(o->val));
        }
    }
    PQconninfoFree(opts);
}

void px_pg_secrets_free(px_pg_secrets *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->v[i]);
    }
    s->n = 0;
}

void px_pg_scrub(const px_pg_secrets *s, const char *text, char *out, size_t outlen)
{
    if (outlen == 0) {
        return;
    }
    size_t o = 0;
    const char *p = text ? text : "";
    while (*p && o + 1 < outlen) {
        size_t hit = 0;
        for (size_t i = 0; s && i < s->n && !hit; i++) {
            size_t n = strlen(s->v[i]);
            if (strncmp(p, s->v[i], n) == 0) {
                hit = n;
            }
        }
        if (hit) {
            for (const char *m = "***"; *m && o + 1 < outlen; m++) {
                out[o++] = *m;
            }
            p += hit;
        } else {
            out[o++] = *p == '\n' ? ' ' : *p;
            p++;
        }
    }
    while (o > 0 && out[o - 1] == ' ') {
        o--;
    }
    out[o] = '\0';
}

PGconn *px_pg_connect(const char *url, uint32_t statement_ms, const px_pg_secrets *s, char *err,
                      size_t errlen)
{
    /* defaults first: what the URL says overrides them (expand_dbname) */
    const char *const keys[] = {"connect_timeout", "keepalives_idle", "keepalives_interval",
                                "keepalives_count", "tcp_user_timeout", "application_name",
                                "dbname", NULL};
    const char *const vals[] = {"5", "5", "2", "3", "10000", "plexus", url, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        px_pg_scrub(s, c ? PQerrorMessage(c) : "out of memory", err, errlen);
        PQfinish(c);
        return NULL;
    }
    char sql[96];
    snprintf(sql, sizeof(sql), "SET statement_timeout = %u; SET client_min_messages = warning",
             statement_ms);
    PGresult *r = PQexec(c, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok) {
        px_pg_scrub(s, PQerrorMessage(c), err, errlen);
    }
    PQclear(r);
    if (!ok) {
        PQfinish(c);
        return NULL;
    }
    return c;
}

int px_pg_fault(PGconn *conn, const PGresult *res)
{
    if (!conn || PQstatus(conn) != CONNECTION_OK) {
        return PX_PG_DOWN;
    }
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (!state) {
        return PX_PG_DOWN; /* no answer from the server */
    }
    if (strncmp(state, "40", 2) == 0) {
        return PX_PG_AGAIN;
    }
    /* connection, resources, operator intervention, system errors; a read-only server (a
     * standby); a statement or lock cut by its timeout */
    if (strncmp(state, "08", 2) == 0 || strncmp(state, "53", 2) == 0 ||
        strncmp(state, "57", 2) == 0 || strncmp(state, "58", 2) == 0 ||
        strcmp(state, "25006") == 0 || strcmp(state, "55P03") == 0) {
        return PX_PG_DOWN;
    }
    return PX_PG_BAD;
}

/* Room for n more bytes and the NUL. */
static void buf_reserve(px_pg_buf *b, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) {
            cap *= 2;
        }
        b->p = px_xrealloc(b->p, cap);
        b->cap = cap;
    }
}

void px_pg_buf_add(px_pg_buf *b, const char *p, size_t n)
{
    buf_reserve(b, n);
    memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void px_pg_buf_addf(px_pg_buf *b, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0) {
        return;
    }
    if ((size_t)n < sizeof(tmp)) {
        px_pg_buf_add(b, tmp, (size_t)n);
        return;
    }
    char *big = px_xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    px_pg_buf_add(b, big, (size_t)n);
    free(big);
}

void px_pg_buf_reset(px_pg_buf *b)
{
    b->len = 0;
    if (b->p) {
        b->p[0] = '\0';
    }
}

void px_pg_buf_free(px_pg_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* Elements are separated by commas: arr_open leaves "{", each element adds "," first unless it
 * follows the "{". */
static void arr_sep(px_pg_buf *b)
{
    if (b->len > 0 && b->p[b->len - 1] != '{') {
        px_pg_buf_add(b, ",", 1);
    }
}

void px_pg_arr_open(px_pg_buf *b)
{
    px_pg_buf_reset(b);
    px_pg_buf_add(b, "{", 1);
}

void px_pg_arr_close(px_pg_buf *b)
{
    px_pg_buf_add(b, "}", 1);
}

void px_pg_arr_i64(px_pg_buf *b, int64_t v)
{
    arr_sep(b);
    px_pg_buf_addf(b, "%lld", (long long)v);
}

void px_pg_arr_text(px_pg_buf *b, const char *p, size_t n)
{
    arr_sep(b);
    if (!p) {
        px_pg_buf_add(b, "NULL", 4);
        return;
    }
    px_pg_buf_add(b, "\"", 1);
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '"' || p[i] == '\\') {
            px_pg_buf_add(b, p + start, i - start);
            px_pg_buf_add(b, "\\", 1);
            start = i;
        }
    }
    px_pg_buf_add(b, p + start, n - start);
    px_pg_buf_add(b, "\"", 1);
}

void px_pg_arr_str(px_pg_buf *b, const char *s)
{
    px_pg_arr_text(b, s, s ? strlen(s) : 0);
}

void px_pg_arr_bytea(px_pg_buf *b, const char *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    arr_sep(b);
    /* "\\x...": the array literal's escape gives the bytea input "\x..." */
    px_pg_buf_add(b, "\"\\\\x", 4);
    buf_reserve(b, 2 * n);
    const unsigned char *u = (const unsigned char *)p;
    for (size_t i = 0; i < n; i++) {
        b->p[b->len++] = hex[u[i] >> 4];
        b->p[b->len++] = hex[u[i] & 15];
    }
    b->p[b->len] = '\0';
    px_pg_buf_add(b, "\"", 1);
}

#define PG_BYTEAOID 17
#define PG_BARR_HEADER 20 /* ndim, flags, element type, then one dimension: size, lower bound */

static void put_u32(char *at, uint32_t v)
{
    at[0] = (char)(v >> 24);
    at[1] = (char)(v >> 16);
    at[2] = (char)(v >> 8);
    at[3] = (char)v;
}

void px_pg_barr_open(px_pg_buf *b)
{
    px_pg_buf_reset(b);
    b->items = 0;
    buf_reserve(b, PG_BARR_HEADER);
    memset(b->p, 0, PG_BARR_HEADER);
    b->len = PG_BARR_HEADER;
}

void px_pg_barr_bytea(px_pg_buf *b, const char *p, size_t n)
{
    char len[4];
    put_u32(len, (uint32_t)n);
    px_pg_buf_add(b, len, 4);
    px_pg_buf_add(b, p, n);
    b->items++;
}

void px_pg_barr_close(px_pg_buf *b)
{
    put_u32(b->p, b->items ? 1 : 0);
    put_u32(b->p + 4, 0);
    put_u32(b->p + 8, PG_BYTEAOID);
    put_u32(b->p + 12, (uint32_t)b->items);
    put_u32(b->p + 16, 1);
    if (!b->items) {
        b->len = 12; /* an empty array has no dimension */
    }
}

int64_t px_pg_int(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col)) {
        return 0;
    }
    const unsigned char *v = (const unsigned char *)PQgetvalue(r, row, col);
    int len = PQgetlength(r, row, col);
    uint64_t x = 0;
    for (int i = 0; i < len && i < 8; i++) {
        x = x << 8 | v[i];
    }
    if (len == 4) {
        return (int32_t)(uint32_t)x;
    }
    return (int64_t)x;
}

const char *px_pg_text(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? NULL : PQgetvalue(r, row, col);
}
