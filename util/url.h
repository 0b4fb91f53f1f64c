/* Percent-encoding (RFC 3986 section 2.1) and the decoding of query-string keys and values
 * (application/x-www-form-urlencoded). Part of pxutil (see util/meson.build). Pure functions on
 * caller memory; any thread. */
#ifndef PX_URL_H
#define PX_URL_H

#include <stddef.h>

/* Writes s (borrowed, NUL-terminated) percent-encoded into out (caller memory, outlen bytes).
 * Bytes of the RFC 3986 unreserved set (ALPHA, DIGIT, '-', '.', '_', '~') and the bytes listed in
 * `keep` (borrowed, may be NULL; e.g. "/" for a path) are copied; every other byte, space
 * included, becomes "%XX" in uppercase hex (RFC 3986 section 2.1, as AWS SigV4 requires). Like
 * snprintf, returns the length of the whole encoding without the NUL: out holds all of it when the
 * result is below outlen; otherwise out is cut before the first byte or escape that did not fit.
 * out is NUL-terminated unless outlen is 0 (out may then be NULL: a way to measure). */
size_t px_url_encode(const char *s, const char *keep, char *out, size_t outlen);

/* Decodes n bytes of s (borrowed; need not be NUL-terminated) as a query-string key or value:
 * "%XX" (hex in either case) becomes that byte and '+' a space; a '%' not followed by two hex
 * digits stays as it is. Writes at most outlen - 1 bytes and a NUL into out (caller memory,
 * outlen >= 1; n + 1 bytes always hold the whole result) and returns the bytes written, the NUL
 * not counted. The result may hold a NUL byte ("%00"). */
size_t px_url_decode(const char *s, size_t n, char *out, size_t outlen);

#endif
