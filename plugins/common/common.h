/* Small helpers shared by the bundled plugins; linked statically, never exported. */
#ifndef PX_PLUGINS_COMMON_H
#define PX_PLUGINS_COMMON_H

/* Compares a secret `a` (e.g. a header value; borrowed) with the expected `b` (borrowed) in time
 * that depends only on b's length. Returns 1 when equal, 0 otherwise or when either is NULL. */
int px_common_consttime_eq(const char *a, const char *b);

#endif
