/* The admin API's token file, data_dir/admin.token: made on first use from getrandom(2) (mode
 * 0600, O_CREAT|O_EXCL|O_NOFOLLOW), read back by the host at every start and reload and by the
 * command line. A file that is a symbolic link, not a regular file, owned by another user (than
 * the caller or root) or readable by group or others is refused, as ssh refuses such keys. */
#ifndef PX_ADMIN_TOKEN_H
#define PX_ADMIN_TOKEN_H

#include <stddef.h>

#define PX_ADMIN_TOKEN_FILE "admin.token"

/* Reads the token in data_dir (borrowed)/admin.token; with `create` set, makes a new random one
 * first when there is no file (and stores 1 in *created, else 0; created may be NULL). On success
 * returns 0 and stores the token (owned by caller; free) in *out. On failure returns PX_ENOENT
 * (no file, create not set), PX_ECONFIG (a file refused: its mode, owner, type, or content) or a
 * negative errno, with one line naming the file and the fix in err, and leaves *out untouched.
 * Any thread; blocking file I/O. */
int px_admin_token_load(const char *data_dir, int create, char **out, int *created, char *err,
                        size_t errlen);

/* 1 when s (borrowed) is usable as a bearer token: 1..512 characters of RFC 6750's b64token set
 * (letters, digits, - . _ ~ + / and trailing =). */
int px_admin_token_valid(const char *s);

#endif
