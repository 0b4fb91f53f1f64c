/* Reading an HTTP Retry-After value (RFC 9110, 10.2.3): a number of seconds, or an HTTP date in
 * any of the three forms a recipient must accept (IMF-fixdate "Sun, 06 Nov 1994 08:49:37 GMT",
 * RFC 850 "Sunday, 06-Nov-94 08:49:37 GMT", asctime "Sun Nov  6 08:49:37 1994"). Part of pxutil.
 * Pure functions; any thread. */
#ifndef PX_RETRY_AFTER_H
#define PX_RETRY_AFTER_H

#include <stdint.h>

#define PX_RETRY_AFTER_MAX_MS (7 * 24 * 3600 * 1000LL) /* longer waits are cut to this */

/* The wait value (borrowed; surrounding blanks allowed) asks for, in ms from now_ms (ms since
 * the epoch): seconds * 1000, or the date minus now_ms (0 when the date is past); capped at
 * PX_RETRY_AFTER_MAX_MS. -1 when value is NULL, empty or neither form. */
int64_t px_retry_after_ms(const char *value, int64_t now_ms);

/* An HTTP date (borrowed; one of the three forms) as ms since the epoch, or -1. */
int64_t px_http_date_ms(const char *value);

#endif
