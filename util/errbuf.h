/* Error text into a caller's buffer: the one formatter behind every parser and validator that
 * reports "why" through a (char *err, size_t errlen) pair, in the host and in plugins. Part of
 * pxutil (see util/meson.build). Any thread. */
#ifndef PX_ERRBUF_H
#define PX_ERRBUF_H

#include <stddef.h>

/* Formats like snprintf into err (caller memory, errlen bytes; always NUL-terminated, cut when
 * too long). err NULL or errlen 0: does nothing, so a caller may pass no buffer. Returns -1, so
 * that a function failing with a reason can `return px_errf(err, errlen, ...)`. */
int px_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
