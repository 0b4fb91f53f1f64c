/* sqs_answer: a ReceiveMessage answer read in one pass (see sqs_answer.h). The grammar is JSON's
 * (RFC 8259) restricted to what jansson is certain to accept: numbers of at most 15 digits with
 * an exponent of at most 2, no lone surrogate escapes, nesting at most MAX_DEPTH deep. */
#include "sqs_answer.h"

#include <stdlib.h>
#include <string.h>

#include "utf8.h"

#define MAX_DEPTH 64

typedef struct reader {
    const char *p, *end;
} reader;

static void skip_ws(reader *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')) {
        r->p++;
    }
}

/* Skips white space, then takes c if it is next. */
static int take(reader *r, char c)
{
    skip_ws(r);
    if (r->p < r->end && *r->p == c) {
        r->p++;
        return 1;
    }
    return 0;
}

static int hex4(const char *p, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') {
            v |= (unsigned)(c - '0');
        } else if (c >= 'a' && c <= 'f') {
            v |= (unsigned)(c - 'a' + 10);
        } else if (c >= 'A' && c <= 'F') {
            v |= (unsigned)(c - 'A' + 10);
        } else {
            return -1;
        }
    }
    *out = v;
    return 0;
}

/* The \u escape at r->p (after the backslash and 'u'), and its low half if it is a high
 * surrogate, as a code point; -1 when malformed or a lone surrogate. */
static long unicode_escape(reader *r)
{
    unsigned u, lo;
    if (r->end - r->p < 4 || hex4(r->p, &u) < 0) {
        return -1;
    }
    r->p += 4;
    if (u >= 0xDC00 && u <= 0xDFFF) {
        return -1;
    }
    if (u < 0xD800 || u > 0xDBFF) {
        return (long)u;
    }
    if (r->end - r->p < 6 || r->p[0] != '\\' || r->p[1] != 'u' || hex4(r->p + 2, &lo) < 0 ||
        lo < 0xDC00 || lo > 0xDFFF) {
        return -1;
    }
    r->p += 6;
    return 0x10000L + (((long)u - 0xD800) << 10) + ((long)lo - 0xDC00);
}

static size_t put_utf8(char *dst, long cp)
{
    unsigned char b[4];
    size_t n;
    if (cp < 0x80) {
        b[0] = (unsigned char)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (unsigned char)(0xC0 | (cp >> 6));
        b[1] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (unsigned char)(0xE0 | (cp >> 12));
        b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        b[0] = (unsigned char)(0xF0 | (cp >> 18));
        b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
        b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        b[3] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    if (dst) {
        memcpy(dst, b, n);
    }
    return n;
}

/* Reads the string at r->p (its opening quote). dst != NULL: writes the decoded bytes there and
 * a NUL after them (never more than the string's quoted length), and its length into *len.
 * Returns 0, or -1 when it is not a string jansson accepts. */
static int read_string(reader *r, char *dst, size_t *len)
{
    if (r->p >= r->end || *r->p != '"') {
        return -1;
    }
    r->p++;
    size_t k = 0;
    while (r->p < r->end) {
        const char *run = r->p; /* plain ASCII copied in runs */
        while (r->p < r->end && (unsigned char)*r->p >= 0x20 && (unsigned char)*r->p < 0x80 &&
               *r->p != '"' && *r->p != '\\') {
            r->p++;
        }
        if (dst) {
            memcpy(dst + k, run, (size_t)(r->p - run));
        }
        k += (size_t)(r->p - run);
        if (r->p >= r->end) {
            return -1;
        }
        unsigned char c = (unsigned char)*r->p;
        if (c == '"') {
            r->p++;
            if (dst) {
                dst[k] = '\0';
                *len = k;
            }
            return 0;
        }
        if (c < 0x20) {
            return -1;
        }
        if (c >= 0x80) {
            size_t n = px_utf8_len((const unsigned char *)r->p, (size_t)(r->end - r->p));
            if (n == 0) {
                return -1;
            }
            if (dst) {
                memcpy(dst + k, r->p, n);
            }
            k += n;
            r->p += n;
            continue;
        }
        if (r->end - r->p < 2) { /* a backslash */
            return -1;
        }
        char e = r->p[1], out;
        r->p += 2;
        switch (e) {
        case '"': out = '"'; break;
        case '\\': out = '\\'; break;
        case '/': out = '/'; break;
        case 'b': out = '\b'; break;
        case 'f': out = '\f'; break;
        case 'n': out = '\n'; break;
        case 'r': out = '\r'; break;
        case 't': out = '\t'; break;
        case 'u': {
            long cp = unicode_escape(r);
            if (cp < 0) {
                return -1;
            }
            k += put_utf8(dst ? dst + k : NULL, cp);
            continue;
        }
        default: return -1;
        }
        if (dst) {
            dst[k] = out;
        }
        k++;
    }
    return -1;
}

static int digit_run(reader *r)
{
    const char *s = r->p;
    while (r->p < r->end && *r->p >= '0' && *r->p <= '9') {
        r->p++;
    }
    return (int)(r->p - s);
}

static int skip_number(reader *r)
{
    if (r->p < r->end && *r->p == '-') {
        r->p++;
    }
    const char *first = r->p;
    int digits = digit_run(r);
    if (digits == 0 || (digits > 1 && *first == '0')) {
        return -1;
    }
    if (r->p < r->end && *r->p == '.') {
        r->p++;
        int frac = digit_run(r);
        if (frac == 0) {
            return -1;
        }
        digits += frac;
    }
    if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
        r->p++;
        if (r->p < r->end && (*r->p == '+' || *r->p == '-')) {
            r->p++;
        }
        int exp = digit_run(r);
        if (exp == 0 || exp > 2) {
            return -1;
        }
    }
    return digits <= 15 ? 0 : -1;
}

static int skip_literal(reader *r, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0) {
        return -1;
    }
    r->p += n;
    return 0;
}

/* Reads a key and its colon; *key / *key_len: the key's raw bytes, which hold no escape. */
static int read_key(reader *r, const char **key, size_t *key_len)
{
    skip_ws(r);
    const char *start = r->p;
    if (read_string(r, NULL, NULL) < 0) {
        return -1;
    }
    *key = start + 1;
    *key_len = (size_t)(r->p - start) - 2;
    if (memchr(*key, '\\', *key_len)) {
        return -1;
    }
    return take(r, ':') ? 0 : -1;
}

static int key_is(const char *key, size_t len, const char *name)
{
    return strlen(name) == len && memcmp(key, name, len) == 0;
}

static int skip_value(reader *r, int depth);

/* Skips the members of an object or the elements of an array whose opening bracket is read. */
static int skip_members(reader *r, int depth, int object)
{
    char close = object ? '}' : ']';
    if (depth > MAX_DEPTH) {
        return -1;
    }
    if (take(r, close)) {
        return 0;
    }
    for (;;) {
        const char *key;
        size_t key_len;
        if (object && read_key(r, &key, &key_len) < 0) {
            return -1;
        }
        if (skip_value(r, depth) < 0) {
            return -1;
        }
        if (take(r, close)) {
            return 0;
        }
        if (!take(r, ',')) {
            return -1;
        }
    }
}

static int skip_value(reader *r, int depth)
{
    skip_ws(r);
    if (r->p >= r->end) {
        return -1;
    }
    switch (*r->p) {
    case '"': return read_string(r, NULL, NULL);
    case '{': r->p++; return skip_members(r, depth + 1, 1);
    case '[': r->p++; return skip_members(r, depth + 1, 0);
    case 't': return skip_literal(r, "true");
    case 'f': return skip_literal(r, "false");
    case 'n': return skip_literal(r, "null");
    default: return skip_number(r);
    }
}

typedef struct message_fields {
    const char *id, *handle, *md5, *body; /* NULL: absent or not a string */
    size_t body_len;
    json_t *attrs, *mattrs; /* owned until kept */
} message_fields;

/* A string member: decoded into *out (advanced past it), or NULL when the value is no string. */
static int string_member(reader *r, char **out, const char **value, size_t *len)
{
    skip_ws(r);
    if (r->p < r->end && *r->p == '"') {
        size_t n;
        if (read_string(r, *out, &n) < 0) {
            return -1;
        }
        *value = *out;
        if (len) {
            *len = n;
        }
        *out += n + 1;
        return 0;
    }
    *value = NULL;
    return skip_value(r, 2);
}

/* An attributes member: the object jansson makes of its text (a small part of the answer), or
 * NULL when it is no object. */
static int object_member(reader *r, json_t **slot)
{
    skip_ws(r);
    const char *start = r->p;
    if (skip_value(r, 2) < 0) {
        return -1;
    }
    json_decref(*slot);
    *slot = NULL;
    if (*start != '{') {
        return 0;
    }
    *slot = json_loadb(start, (size_t)(r->p - start), JSON_ALLOW_NUL, NULL);
    return *slot ? 0 : -1;
}

static int read_message(reader *r, px_sqs_answer *a, char **out)
{
    message_fields f = {0};
    int rc = -1;
    if (!take(r, '{')) {
        return -1;
    }
    if (!take(r, '}')) {
        for (;;) {
            const char *key;
            size_t key_len;
            if (read_key(r, &key, &key_len) < 0) {
                goto done;
            }
            int bad;
            if (key_is(key, key_len, "Body")) {
                bad = string_member(r, out, &f.body, &f.body_len);
            } else if (key_is(key, key_len, "ReceiptHandle")) {
                bad = string_member(r, out, &f.handle, NULL);
            } else if (key_is(key, key_len, "MessageId")) {
                bad = string_member(r, out, &f.id, NULL);
            } else if (key_is(key, key_len, "MD5OfBody")) {
                bad = string_member(r, out, &f.md5, NULL);
            } else if (key_is(key, key_len, "Attributes")) {
                bad = object_member(r, &f.attrs);
            } else if (key_is(key, key_len, "MessageAttributes")) {
                bad = object_member(r, &f.mattrs);
            } else {
                bad = skip_value(r, 2);
            }
            if (bad < 0) {
                goto done;
            }
            if (take(r, '}')) {
                break;
            }
            if (!take(r, ',')) {
                goto done;
            }
        }
    }
    rc = 0;
    if (!f.handle || !*f.handle) {
        goto done; /* left out, as the jansson reading leaves it out */
    }
    if (a->n == PX_SQS_ANSWER_MAX) {
        rc = -1;
        goto done;
    }
    a->msgs[a->n++] = (px_sqs_message){
        .message_id = f.id ? f.id : "",
        .receipt_handle = f.handle,
        .md5_of_body = f.md5 ? f.md5 : "",
        .body = f.body ? f.body : "",
        .body_len = f.body ? f.body_len : 0,
        .attributes = f.attrs,
        .message_attributes = f.mattrs,
    };
    if (f.attrs) {
        a->objects[a->nobjects++] = f.attrs;
    }
    if (f.mattrs) {
        a->objects[a->nobjects++] = f.mattrs;
    }
    return 0;
done:
    json_decref(f.attrs);
    json_decref(f.mattrs);
    return rc;
}

static int read_messages(reader *r, px_sqs_answer *a, char **out)
{
    if (!take(r, '[')) {
        return -1; /* not an array: left to jansson */
    }
    if (take(r, ']')) {
        return 0;
    }
    for (;;) {
        if (read_message(r, a, out) < 0) {
            return -1;
        }
        if (take(r, ']')) {
            return 0;
        }
        if (!take(r, ',')) {
            return -1;
        }
    }
}

int px_sqs_answer_read(const char *text, size_t len, px_sqs_answer *a)
{
    memset(a, 0, sizeof(*a));
    if (!text) {
        return -1;
    }
    /* A string decoded takes no more bytes than its quoted text: every one fits. */
    a->strings = malloc(len + 1);
    if (!a->strings) {
        return -1;
    }
    char *out = a->strings;
    reader r = {.p = text, .end = text + len};
    int seen_messages = 0;
    if (!take(&r, '{')) {
        goto unsure;
    }
    if (!take(&r, '}')) {
        for (;;) {
            const char *key;
            size_t key_len;
            if (read_key(&r, &key, &key_len) < 0) {
                goto unsure;
            }
            if (key_is(key, key_len, "Messages")) {
                if (seen_messages++ || read_messages(&r, a, &out) < 0) {
                    goto unsure;
                }
            } else if (skip_value(&r, 1) < 0) {
                goto unsure;
            }
            if (take(&r, '}')) {
                break;
            }
            if (!take(&r, ',')) {
                goto unsure;
            }
        }
    }
    skip_ws(&r);
    if (r.p != r.end) {
        goto unsure;
    }
    return 0;
unsure:
    px_sqs_answer_deinit(a);
    return -1;
}

void px_sqs_answer_deinit(px_sqs_answer *a)
{
    for (size_t i = 0; i < a->nobjects; i++) {
        json_decref(a->objects[i]);
    }
    free(a->strings);
    memset(a, 0, sizeof(*a));
}
