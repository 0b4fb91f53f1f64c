/* Percent-encoding and query-string decoding (see url.h). */
#include "url.h"

#include <string.h>

static int unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~';
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

size_t px_url_encode(const char *s, const char *keep, char *out, size_t outlen)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t len = 0; /* of the whole encoding */
    size_t put = 0; /* of what out holds: len until something did not fit */
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[3] = {(char)*p, 0, 0};
        size_t k = 1;
        if (!unreserved(*p) && !(keep && strchr(keep, *p))) {
            esc[0] = '%';
            esc[1] = hex[*p >> 4];
            esc[2] = hex[*p & 15];
            k = 3;
        }
        if (put == len && len + k < outlen) {
            memcpy(out + len, esc, k);
            put = len + k;
        }
        len += k;
    }
    if (outlen > 0) {
        out[put] = '\0';
    }
    return len;
}

size_t px_url_decode(const char *s, size_t n, char *out, size_t outlen)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < outlen; i++) {
        unsigned char c = (unsigned char)s[i];
        int hi, lo;
        if (c == '%' && i + 2 < n && (hi = hex_value((unsigned char)s[i + 1])) >= 0 &&
            (lo = hex_value((unsigned char)s[i + 2])) >= 0) {
            out[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[o++] = c == '+' ? ' ' : (char)c;
        }
    }
    if (outlen > 0) {
        out[o] = '\0';
    }
    return o;
}
