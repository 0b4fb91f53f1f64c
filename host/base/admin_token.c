/* The admin token file (see admin_token.h). The token is 32 bytes from getrandom(2), written as
 * 64 hex digits and a line break. Reading goes through one descriptor opened with O_NOFOLLOW, and
 * every check is made on that descriptor (fstat), so a file swapped in between cannot pass. */
#include "admin_token.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "mem.h"

#define TOKEN_BYTES 32
#define TOKEN_MAX 512

int px_admin_token_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > TOKEN_MAX) {
        return 0;
    }
    size_t eq = n;
    while (eq > 0 && s[eq - 1] == '=') {
        eq--;
    }
    if (eq == 0) {
        return 0;
    }
    for (size_t i = 0; i < eq; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/')) {
            return 0;
        }
    }
    return 1;
}

static int fill_random(unsigned char *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = getrandom(buf + got, len - got, 0);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        got += (size_t)n;
    }
    return 0;
}

/* Makes path with a new token: 0, -EEXIST when a file is already there, or another -errno. */
static int create_file(const char *path)
{
    unsigned char raw[TOKEN_BYTES];
    int rc = fill_random(raw, sizeof(raw));
    if (rc < 0) {
        return rc;
    }
    char text[TOKEN_BYTES * 2 + 2];
    for (size_t i = 0; i < sizeof(raw); i++) {
        snprintf(text + 2 * i, 3, "%02x", raw[i]);
    }
    memset(raw, 0, sizeof(raw));
    text[TOKEN_BYTES * 2] = '\n';
    text[TOKEN_BYTES * 2 + 1] = '\0';
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        return -errno;
    }
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t n = write(fd, text + off, len - off);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            rc = -errno;
            break;
        }
        off += (size_t)n;
    }
    if (rc == 0 && fsync(fd) != 0) {
        rc = -errno;
    }
    close(fd);
    memset(text, 0, sizeof(text));
    if (rc < 0) {
        unlink(path); /* a half-written token would be refused at every later start */
    }
    return rc;
}

/* Checks what fd is before anything is read from it. `strict`: the owner must be the caller
 * (the host); otherwise root may read another user's file (an operator's `sudo plexus status`). */
static int check_file(int fd, const char *path, int strict, char *err, size_t errlen)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int rc = -errno;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return rc;
    }
    uid_t me = geteuid();
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file; remove it and reload or restart for a new "
                 "token", path);
        return PX_ECONFIG;
    }
    if (st.st_uid != me && (strict || me != 0)) {
        snprintf(err, errlen, "%s: owned by uid %u, not by the user running plexus (uid %u); "
                 "chown it or remove it for a new token", path, (unsigned)st.st_uid,
                 (unsigned)me);
        return PX_ECONFIG;
    }
    if (st.st_mode & 077) {
        snprintf(err, errlen, "%s: mode %04o lets other users read or change the token; "
                 "chmod 600 it (and rotate the token: it may have been read)", path,
                 (unsigned)(st.st_mode & 07777));
        return PX_ECONFIG;
    }
    return 0;
}

static int read_token(int fd, const char *path, char **out, char *err, size_t errlen)
{
    char buf[TOKEN_MAX + 64];
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            int rc = -errno;
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            return rc;
        }
        if (n == 0 || len + (size_t)n == sizeof(buf) - 1) {
            len += (size_t)n;
            break;
        }
        len += (size_t)n;
    }
    buf[len] = '\0';
    while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' ' ||
                   buf[len - 1] == '\t')) {
        buf[--len] = '\0';
    }
    int ok = px_admin_token_valid(buf);
    if (ok) {
        *out = px_xstrdup(buf);
    }
    memset(buf, 0, sizeof(buf));
    if (!ok) {
        snprintf(err, errlen, "%s: not a token (one line of 1 to %d letters, digits or - . _ ~ + "
                 "/ =); fix it, or remove it for a new one", path, TOKEN_MAX);
        return PX_ECONFIG;
    }
    return 0;
}

int px_admin_token_load(const char *data_dir, int create, char **out, int *created, char *err,
                        size_t errlen)
{
    char *path = px_xasprintf("%s/%s", data_dir, PX_ADMIN_TOKEN_FILE);
    int made = 0;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0 && errno == ENOENT && create) {
        int rc = create_file(path);
        if (rc < 0 && rc != -EEXIST) {
            snprintf(err, errlen, "%s: cannot create the admin token: %s", path, strerror(-rc));
            free(path);
            return rc;
        }
        made = rc == 0;
        fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    }
    if (fd < 0) {
        int e = errno;
        int rc = e == ENOENT ? PX_ENOENT : e == ELOOP ? PX_ECONFIG : -e;
        if (e == ELOOP) {
            snprintf(err, errlen, "%s: a symbolic link; remove it and reload or restart for a new "
                     "token", path);
        } else if (e == ENOENT) {
            snprintf(err, errlen, "%s: no such file (the host makes it at its first start)",
                     path);
        } else {
            snprintf(err, errlen, "%s: %s", path, strerror(e));
        }
        free(path);
        return rc;
    }
    char *token = NULL;
    int rc = check_file(fd, path, create, err, errlen);
    if (rc == 0) {
        rc = read_token(fd, path, &token, err, errlen);
    }
    close(fd);
    free(path);
    if (rc < 0) {
        return rc;
    }
    if (created) {
        *created = made;
    }
    *out = token;
    return 0;
}
