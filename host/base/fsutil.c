/* File-system helpers (see fsutil.h). */
#include "fsutil.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "mem.h"

int px_mkdirs(const char *dir)
{
    if (!dir || !*dir) {
        return PX_EINVAL;
    }
    char *p = px_xstrdup(dir);
    int rc = 0;
    for (char *c = p + 1;; c++) {
        if (*c == '/' || *c == '\0') {
            char save = *c;
            *c = '\0';
            if (mkdir(p, 0700) != 0 && errno != EEXIST) {
                rc = -errno;
                break;
            }
            *c = save;
            if (save == '\0') {
                break;
            }
        }
    }
    free(p);
    return rc;
}

char *px_path_absolute(const char *path)
{
    char cwd[PATH_MAX];
    if (path[0] != '/' && !getcwd(cwd, sizeof(cwd))) {
        return px_xstrdup(path);
    }
    char *joined = path[0] == '/' ? px_xstrdup(path) : px_xasprintf("%s/%s", cwd, path);
    char *out = px_xmalloc(strlen(joined) + 2);
    size_t len = 0;
    /* Walk the components, keeping out as "/a/b" (or "" for the root). */
    for (char *save = NULL, *part = strtok_r(joined, "/", &save); part;
         part = strtok_r(NULL, "/", &save)) {
        if (strcmp(part, ".") == 0) {
            continue;
        }
        if (strcmp(part, "..") == 0) {
            while (len > 0 && out[len - 1] != '/') {
                len--;
            }
            if (len > 0) {
                len--;
            }
            continue;
        }
        out[len++] = '/';
        size_t n = strlen(part);
        memcpy(out + len, part, n);
        len += n;
    }
    if (len == 0) {
        out[len++] = '/';
    }
    out[len] = '\0';
    free(joined);
    return out;
}
