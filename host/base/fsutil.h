/* Small file-system helpers shared by host modules. */
#ifndef PX_FSUTIL_H
#define PX_FSUTIL_H

/* Creates directory `dir` (borrowed) and its missing parents, mode 0700 for new ones. Returns 0
 * (also when it exists), PX_EINVAL for an empty path, or a negative errno. */
int px_mkdirs(const char *dir);

/* `path` (borrowed) made absolute against the working directory, with ".", ".." and repeated
 * slashes removed lexically (symlinks are not resolved). Returns a new string (owned by caller;
 * free); a copy of path when the working directory is unknown. */
char *px_path_absolute(const char *path);

#endif
