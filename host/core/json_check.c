/* The JSON validator (see json_check.h): one pass over the bytes, a helper per token kind
 * (strings, numbers, literals) and an explicit stack of open containers instead of recursion.
 * Every rule follows what jansson 2.14's json_loadb does: only space, \t, \n and \r between
 * tokens; strict UTF-8 in strings (no overlong forms, no encoded surrogates, nothing above
 * U+10FFFF) and no raw byte below 0x20; escapes \" \\ \/ \b \f \n \r \t \uXXXX; the JSON number
 * grammar; literals spelt exactly true, false, null. Where jansson's answer depends on more than
 * the grammar (integer and real range, \u0000, lone surrogates, nesting depth, duplicate keys
 * written with escapes) the checker stays on the safe side and answers PX_JSON_UNSURE. */
#include "json_check.h"

#include <string.h>

#include <jansson.h>

#include "utf8.h"

#define MAX_DEPTH 512       /* jansson's own limit is 2048 (counting scalars too) */
#define MAX_INT_DIGITS 18   /* < 10^18 always fits in int64 */
#define MAX_MANTISSA 100    /* with <= 2 exponent digits a real stays far from overflow */
#define MAX_EXP_DIGITS 2
#define MAX_KEYS 64         /* JSON_REJECT_DUPLICATES: keys compared in one object */
#define KEY_SLOTS 256       /* ... and in all the open objects together */

/* 1 for the bytes a string may hold as they are: printable ASCII but '"' and '\\'. */
static const unsigned char plain[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x00 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x10 */
    1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x20: '"' */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x30 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x40 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, /* 0x50: '\\' */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x60 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x70 */
    /* 0x80..0xff: 0, UTF-8 sequences are checked one by one */
};

typedef const unsigned char *ptr;

static int is_digit(unsigned c)
{
    return c - '0' < 10;
}

static ptr skip_ws(ptr p, ptr end)
{
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) {
        p++;
    }
    return p;
}

/* The value of the 4 hex digits at p, or -1. */
static long hex4(ptr p, ptr end)
{
    if (end - p < 4) {
        return -1;
    }
    long v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i], lower = c | 0x20;
        if (is_digit(c)) {
            v = v * 16 + (c - '0');
        } else if (lower - 'a' < 6) {
            v = v * 16 + (lower - 'a' + 10);
        } else {
            return -1;
        }
    }
    return v;
}

/* p points just past an opening quote. Returns the position just past the closing quote, or NULL
 * (invalid or unsure). Sets *escaped when the string holds a backslash. */
static ptr scan_string(ptr p, ptr end, int *escaped)
{
    for (;;) {
        while (p < end && plain[*p]) {
            p++;
        }
        if (p == end) {
            return NULL;
        }
        if (*p == '"') {
            return p + 1;
        }
        if (*p >= 0x80) {
            size_t n = px_utf8_len(p, (size_t)(end - p));
            if (n == 0) {
                return NULL;
            }
            p += n;
            continue;
        }
        if (*p != '\\' || end - p < 2) {
            return NULL; /* a control byte, or a backslash at the end */
        }
        *escaped = 1;
        switch (p[1]) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
            p += 2;
            break;
        case 'u': {
            long u = hex4(p + 2, end);
            p += 6;
            if (u <= 0 || (u >= 0xDC00 && u <= 0xDFFF)) {
                return NULL; /* invalid, \u0000 (jansson needs JSON_ALLOW_NUL) or a lone low half */
            }
            if (u >= 0xD800 && u <= 0xDBFF) { /* a high surrogate: a low one must follow */
                if (end - p < 2 || p[0] != '\\' || p[1] != 'u') {
                    return NULL;
                }
                long lo = hex4(p + 2, end);
                if (lo < 0xDC00 || lo > 0xDFFF) {
                    return NULL;
                }
                p += 6;
            }
            break;
        }
        default:
            return NULL;
        }
    }
}

/* p points at '-' or a digit. Returns the position just past the number, or NULL (invalid, or a
 * number jansson might find out of range). */
static ptr scan_number(ptr p, ptr end)
{
    if (*p == '-') {
        p++;
    }
    ptr start = p;
    if (p == end || !is_digit(*p)) {
        return NULL;
    }
    if (*p == '0') {
        p++;
        if (p < end && is_digit(*p)) {
            return NULL; /* leading zero */
        }
    } else {
        while (p < end && is_digit(*p)) {
            p++;
        }
    }
    if (p == end || (*p != '.' && *p != 'e' && *p != 'E')) {
        return p - start <= MAX_INT_DIGITS ? p : NULL; /* an integer: must fit int64 */
    }
    if (*p == '.') {
        p++;
        if (p == end || !is_digit(*p)) {
            return NULL;
        }
        while (p < end && is_digit(*p)) {
            p++;
        }
    }
    if (p - start > MAX_MANTISSA) {
        return NULL;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) {
            p++;
        }
        ptr exp = p;
        while (p < end && is_digit(*p)) {
            p++;
        }
        if (p == exp || p - exp > MAX_EXP_DIGITS) {
            return NULL;
        }
    }
    return p;
}

/* p points at the first letter of a literal word; returns the position past it, or NULL. */
static ptr scan_literal(ptr p, ptr end, const char *word, size_t n)
{
    return (size_t)(end - p) >= n && memcmp(p, word, n) == 0 ? p + n : NULL;
}

typedef struct key_ref {
    ptr p;
    size_t len;
} key_ref;

int px_json_check(const char *text, size_t len, size_t flags)
{
    if (!text || (flags & ~(size_t)(JSON_REJECT_DUPLICATES | JSON_DECODE_ANY))) {
        return PX_JSON_UNSURE;
    }
    const int dups = (flags & JSON_REJECT_DUPLICATES) != 0;
    ptr p = (ptr)text, end = p + len;
    unsigned char open[MAX_DEPTH];      /* '{' or '[' per open container */
    unsigned short key_base[MAX_DEPTH]; /* with dups: keys[] index of each open object's first */
    key_ref keys[KEY_SLOTS];            /* with dups: the keys of the open objects, raw */
    size_t depth = 0, nkeys = 0;

    p = skip_ws(p, end);
    if (p == end || (!(flags & JSON_DECODE_ANY) && *p != '{' && *p != '[')) {
        return PX_JSON_UNSURE;
    }

value: /* p at the first byte of a value (whitespace skipped) */
    if (p == end) {
        return PX_JSON_UNSURE;
    }
    switch (*p) {
    case '{':
    case '[':
        if (depth == MAX_DEPTH) {
            return PX_JSON_UNSURE;
        }
        open[depth] = *p;
        key_base[depth] = (unsigned short)nkeys;
        depth++;
        p = skip_ws(p + 1, end);
        if (p < end && *p == open[depth - 1] + 2) { /* '{' + 2 == '}', '[' + 2 == ']' */
            p++;
            goto close;
        }
        if (open[depth - 1] == '[') {
            goto value;
        }
        goto key;
    case '"': {
        int escaped = 0;
        p = scan_string(p + 1, end, &escaped);
        break;
    }
    case 't':
        p = scan_literal(p, end, "true", 4);
        break;
    case 'f':
        p = scan_literal(p, end, "false", 5);
        break;
    case 'n':
        p = scan_literal(p, end, "null", 4);
        break;
    case '-': case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9':
        p = scan_number(p, end);
        break;
    default:
        return PX_JSON_UNSURE;
    }
    if (!p) {
        return PX_JSON_UNSURE;
    }

next: /* p just past a value: a comma, the end of its container, or the end of the text */
    p = skip_ws(p, end);
    if (depth == 0) {
        return p == end ? PX_JSON_OK : PX_JSON_UNSURE;
    }
    if (p == end) {
        return PX_JSON_UNSURE;
    }
    if (*p == open[depth - 1] + 2) {
        p++;
        goto close;
    }
    if (*p != ',') {
        return PX_JSON_UNSURE;
    }
    p = skip_ws(p + 1, end);
    if (open[depth - 1] == '[') {
        goto value;
    }

key: /* p at what must be a key (whitespace skipped) */
    if (p == end || *p != '"') {
        return PX_JSON_UNSURE;
    }
    {
        ptr k = p + 1;
        int escaped = 0;
        p = scan_string(k, end, &escaped);
        if (!p) {
            return PX_JSON_UNSURE;
        }
        if (dups) {
            size_t first = key_base[depth - 1], klen = (size_t)(p - 1 - k);
            if (escaped || nkeys == KEY_SLOTS || nkeys - first == MAX_KEYS) {
                return PX_JSON_UNSURE;
            }
            for (size_t i = first; i < nkeys; i++) {
                if (keys[i].len == klen && memcmp(keys[i].p, k, klen) == 0) {
                    return PX_JSON_UNSURE; /* a duplicate: jansson rejects it */
                }
            }
            keys[nkeys].p = k;
            keys[nkeys].len = klen;
            nkeys++;
        }
    }
    p = skip_ws(p, end);
    if (p == end || *p != ':') {
        return PX_JSON_UNSURE;
    }
    p = skip_ws(p + 1, end);
    goto value;

close: /* p just past the '}' or ']' of the innermost open container */
    depth--;
    nkeys = key_base[depth];
    goto next;
}
