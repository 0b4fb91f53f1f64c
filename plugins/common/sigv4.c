/* AWS Signature Version 4 (see sigv4.h). The canonical request is hashed in pieces as it is
 * produced, never joined: method, canonical URI, canonical query, the sorted lower-case headers
 * with trimmed values, the signed header names and the payload's hash. The path is encoded
 * again the way every service but S3 expects (a '%' already in it becomes "%25"); it is not
 * normalised ("./", "//"), which the requests signed here never contain. */
#include "sigv4.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_HEADERS 18   /* the caller's 16, Host and X-Amz-Date */
#define MAX_NAME_LEN 96  /* bytes of one header name */
#define MAX_PARAMS 32    /* query parameters */

typedef struct hdr {
    char name[MAX_NAME_LEN + 1]; /* lower case */
    size_t name_len;
    const char *value; /* borrowed, leading and trailing blanks cut */
    size_t value_len;
} hdr;

int px_sigv4_init(px_sigv4 *s, const char *key_id, const char *secret, const char *region,
                  const char *service)
{
    memset(s, 0, sizeof(*s));
    if (!key_id || !*key_id || !secret || !*secret || !region || !*region || !service ||
        !*service) {
        return -1;
    }
    size_t n = strlen(secret);
    s->secret = malloc(4 + n + 1);
    if (s->secret) {
        memcpy(s->secret, "AWS4", 4);
        memcpy(s->secret + 4, secret, n + 1);
    }
    s->key_id = strdup(key_id);
    s->region = strdup(region);
    s->service = strdup(service);
    if (!s->secret || !s->key_id || !s->region || !s->service) {
        px_sigv4_deinit(s);
        return -1;
    }
    return 0;
}

void px_sigv4_deinit(px_sigv4 *s)
{
    if (s->secret) {
        memset(s->secret, 0, strlen(s->secret));
    }
    free(s->secret);
    free(s->key_id);
    free(s->region);
    free(s->service);
    memset(s, 0, sizeof(*s));
}

void px_sigv4_date(time_t t, char out[PX_SIGV4_DATE_LEN + 1])
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, PX_SIGV4_DATE_LEN + 1, "%Y%m%dT%H%M%SZ", &tm);
}

static void hmac_str(const uint8_t *key, size_t keylen, const char *data, uint8_t out[32])
{
    px_hmac_sha256(key, keylen, data, strlen(data), out);
}

/* The key chain of the day: HMAC("AWS4" + secret, day), then region, service, "aws4_request". */
static void derive_key(px_sigv4 *s, const char *day)
{
    uint8_t k[PX_SHA256_LEN];
    hmac_str((const uint8_t *)s->secret, strlen(s->secret), day, k);
    hmac_str(k, sizeof(k), s->region, k);
    hmac_str(k, sizeof(k), s->service, k);
    hmac_str(k, sizeof(k), "aws4_request", s->key);
    memset(k, 0, sizeof(k));
    memcpy(s->day, day, 8);
    s->day[8] = '\0';
}

static int is_blank(char c)
{
    return c == ' ' || c == '\t';
}

static int add_header(hdr *h, size_t *n, const char *name, size_t name_len, const char *value)
{
    if (*n == MAX_HEADERS || name_len == 0 || name_len > MAX_NAME_LEN) {
        return -1;
    }
    hdr *e = &h[(*n)++];
    for (size_t i = 0; i < name_len; i++) {
        char c = name[i];
        e->name[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    e->name[name_len] = '\0';
    e->name_len = name_len;
    while (is_blank(*value)) {
        value++;
    }
    size_t len = strlen(value);
    while (len > 0 && is_blank(value[len - 1])) {
        len--;
    }
    e->value = value;
    e->value_len = len;
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const hdr *)a)->name, ((const hdr *)b)->name);
}

/* Hashes a header value with every inner run of blanks as one space. */
static void hash_value(px_sha256_ctx *ctx, const char *v, size_t len)
{
    size_t at = 0;
    while (at < len) {
        size_t run = at;
        while (run < len && !is_blank(v[run])) {
            run++;
        }
        px_sha256_update(ctx, v + at, run - at);
        if (run == len) {
            break;
        }
        px_sha256_update(ctx, " ", 1);
        while (run < len && is_blank(v[run])) {
            run++;
        }
        at = run;
    }
}

static int unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~';
}

/* Hashes the path (len bytes) with every byte but unreserved ones and '/' percent-encoded. */
static void hash_path(px_sha256_ctx *ctx, const char *p, size_t len)
{
    if (len == 0) {
        px_sha256_update(ctx, "/", 1);
        return;
    }
    size_t at = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if (unreserved(c) || c == '/') {
            continue;
        }
        char esc[4];
        snprintf(esc, sizeof(esc), "%%%02X", c);
        px_sha256_update(ctx, p + at, i - at);
        px_sha256_update(ctx, esc, 3);
        at = i + 1;
    }
    px_sha256_update(ctx, p + at, len - at);
}

typedef struct param {
    const char *s; /* "name=value" or "name", borrowed */
    size_t len, name_len;
} param;

static int by_param(const void *a, const void *b)
{
    const param *x = a, *y = b;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->s, y->s, n);
    if (c == 0 && x->name_len != y->name_len) {
        return x->name_len < y->name_len ? -1 : 1;
    }
    if (c == 0) {
        size_t xv = x->len - x->name_len, yv = y->len - y->name_len;
        size_t m = xv < yv ? xv : yv;
        c = memcmp(x->s + x->name_len, y->s + y->name_len, m);
        if (c == 0 && xv != yv) {
            c = xv < yv ? -1 : 1;
        }
    }
    return c;
}

/* Hashes the query (already encoded) with its parameters sorted and each given a '='. */
static int hash_query(px_sha256_ctx *ctx, const char *q)
{
    param ps[MAX_PARAMS];
    size_t n = 0;
    while (q && *q) {
        size_t len = strcspn(q, "&");
        if (len > 0) {
            if (n == MAX_PARAMS) {
                return -1;
            }
            ps[n].s = q;
            ps[n].len = len;
            const char *eq = memchr(q, '=', len);
            ps[n].name_len = eq ? (size_t)(eq - q) : len;
            n++;
        }
        q += len + (q[len] == '&');
    }
    qsort(ps, n, sizeof(ps[0]), by_param);
    for (size_t i = 0; i < n; i++) {
        if (i > 0) {
            px_sha256_update(ctx, "&", 1);
        }
        px_sha256_update(ctx, ps[i].s, ps[i].len);
        if (ps[i].name_len == ps[i].len) {
            px_sha256_update(ctx, "=", 1);
        }
    }
    return 0;
}

int px_sigv4_sign(px_sigv4 *s, const char *method, const char *host, const char *target,
                  const char *const *headers, const void *body, size_t body_len,
                  const char *amz_date, char *auth, size_t auth_len)
{
    if (!amz_date || strlen(amz_date) != PX_SIGV4_DATE_LEN) {
        return -1;
    }
    hdr h[MAX_HEADERS];
    size_t nh = 0;
    if (add_header(h, &nh, "host", 4, host) < 0 ||
        add_header(h, &nh, "x-amz-date", 10, amz_date) < 0) {
        return -1;
    }
    for (size_t i = 0; headers && headers[i]; i++) {
        const char *colon = strchr(headers[i], ':');
        if (!colon || add_header(h, &nh, headers[i], (size_t)(colon - headers[i]), colon + 1) < 0) {
            return -1;
        }
    }
    qsort(h, nh, sizeof(h[0]), by_name);

    char signed_names[MAX_HEADERS * (MAX_NAME_LEN + 1)];
    size_t sl = 0;
    for (size_t i = 0; i < nh; i++) {
        if (i > 0) {
            signed_names[sl++] = ';';
        }
        memcpy(signed_names + sl, h[i].name, h[i].name_len);
        sl += h[i].name_len;
    }
    signed_names[sl] = '\0';

    uint8_t digest[PX_SHA256_LEN];
    char body_hex[2 * PX_SHA256_LEN + 1], request_hex[2 * PX_SHA256_LEN + 1];
    px_sha256(body, body_len, digest);
    px_hex_encode(digest, sizeof(digest), body_hex);

    px_sha256_ctx ctx;
    px_sha256_init(&ctx);
    px_sha256_update(&ctx, method, strlen(method));
    px_sha256_update(&ctx, "\n", 1);
    size_t path_len = strcspn(target, "?#");
    hash_path(&ctx, target, path_len);
    px_sha256_update(&ctx, "\n", 1);
    if (target[path_len] == '?' && hash_query(&ctx, target + path_len + 1) < 0) {
        px_sha256_final(&ctx, digest);
        return -1;
    }
    px_sha256_update(&ctx, "\n", 1);
    for (size_t i = 0; i < nh; i++) {
        px_sha256_update(&ctx, h[i].name, h[i].name_len);
        px_sha256_update(&ctx, ":", 1);
        hash_value(&ctx, h[i].value, h[i].value_len);
        px_sha256_update(&ctx, "\n", 1);
    }
    px_sha256_update(&ctx, "\n", 1);
    px_sha256_update(&ctx, signed_names, sl);
    px_sha256_update(&ctx, "\n", 1);
    px_sha256_update(&ctx, body_hex, 2 * PX_SHA256_LEN);
    px_sha256_final(&ctx, digest);
    px_hex_encode(digest, sizeof(digest), request_hex);

    if (strncmp(s->day, amz_date, 8) != 0) {
        char day[9];
        memcpy(day, amz_date, 8);
        day[8] = '\0';
        derive_key(s, day);
    }
    char to_sign[256];
    int n = snprintf(to_sign, sizeof(to_sign), "AWS4-HMAC-SHA256\n%s\n%s/%s/%s/aws4_request\n%s",
                     amz_date, s->day, s->region, s->service, request_hex);
    if (n < 0 || (size_t)n >= sizeof(to_sign)) {
        return -1;
    }
    char sig_hex[2 * PX_SHA256_LEN + 1];
    px_hmac_sha256(s->key, sizeof(s->key), to_sign, (size_t)n, digest);
    px_hex_encode(digest, sizeof(digest), sig_hex);
    n = snprintf(auth, auth_len,
                 "AWS4-HMAC-SHA256 Credential=%s/%s/%s/%s/aws4_request, SignedHeaders=%s, "
                 "Signature=%s",
                 s->key_id, s->day, s->region, s->service, signed_names, sig_hex);
    return (n < 0 || (size_t)n >= auth_len) ? -1 : 0;
}
