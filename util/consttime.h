/* Comparing secrets (tokens, signatures, API keys) without an early exit, so the time a wrong
 * guess takes does not tell how much of it was right. Part of pxutil (see util/meson.build). Pure
 * functions; any thread. */
#ifndef PX_CONSTTIME_H
#define PX_CONSTTIME_H

#include <stddef.h>

/* Compares `given` (borrowed, glen bytes; e.g. from a request) with the secret `want` (borrowed,
 * wlen bytes) in time that depends only on wlen. Returns 1 when they are equal (same length and
 * bytes), 0 otherwise. */
int px_ct_equal(const void *given, size_t glen, const void *want, size_t wlen);

/* The same for NUL-terminated strings (both borrowed). Returns 0 when either is NULL. */
int px_ct_streq(const char *given, const char *want);

#endif
