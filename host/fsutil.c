/* File-system helpers (see fsutil.h). */
#include "fsutil.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>

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
