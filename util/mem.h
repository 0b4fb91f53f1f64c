/* Allocation policy of the host: px_x* allocate or die. Running out of memory in an integration
 * host has no graceful answer that keeps promises, so these print file:line and abort; the spool
 * on disk keeps what was acknowledged. Plugins allocate on their own; those that choose the same
 * policy use these too (part of pxutil, see util/meson.build). */
#ifndef PX_MEM_H
#define PX_MEM_H

#include <stddef.h>

#define px_xmalloc(n) px__xmalloc((n), __FILE__, __LINE__)
#define px_xcalloc(n, s) px__xcalloc((n), (s), __FILE__, __LINE__)
#define px_xrealloc(p, n) px__xrealloc((p), (n), __FILE__, __LINE__)
#define px_xstrdup(s) px__xstrdup((s), __FILE__, __LINE__)
#define px_xstrndup(s, n) px__xstrndup((s), (n), __FILE__, __LINE__)

void *px__xmalloc(size_t n, const char *file, int line);
void *px__xcalloc(size_t n, size_t size, const char *file, int line);
void *px__xrealloc(void *p, size_t n, const char *file, int line);
char *px__xstrdup(const char *s, const char *file, int line);          /* NULL -> NULL */
char *px__xstrndup(const char *s, size_t n, const char *file, int line);
/* Returns a new string (owned by caller, free()) formatted like printf. */
char *px_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
