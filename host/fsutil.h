/* Small file-system helpers shared by host modules. */
#ifndef PX_FSUTIL_H
#define PX_FSUTIL_H

/* Creates directory `dir` (borrowed) and its missing parents, mode 0700 for new ones. Returns 0
 * (also when it exists), PX_EINVAL for an empty path, or a negative errno. */
int px_mkdirs(const char *dir);

#endif
