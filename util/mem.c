/* Allocate-or-die helpers (see mem.h for the policy). */
#include "mem.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void die(size_t n, const char *file, int line)
{
    fprintf(stderr, "plexus: out of memory allocating %zu bytes at %s:%d\n", n, file, line);
    abort();
}

void *px__xmalloc(size_t n, const char *file, int line)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        die(n, file, line);
    }
    return p;
}

void *px__xcalloc(size_t n, size_t size, const char *file, int line)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) {
        die(n * size, file, line);
    }
    return p;
}

void *px__xrealloc(void *p, size_t n, const char *file, int line)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        die(n, file, line);
    }
    return q;
}

char *px__xstrdup(const char *s, const char *file, int line)
{
    if (!s) {
        return NULL;
    }
    return px__xstrndup(s, strlen(s), file, line);
}

char *px__xstrndup(const char *s, size_t n, const char *file, int line)
{
    char *d = px__xmalloc(n + 1, file, line);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *px_xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        n = 0;
    }
    char *s = px_xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}
