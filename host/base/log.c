/* Log backend: formatting, secret masking, level filter, capture of a plugin's last error. */
#include "log.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "mem.h"
#include "utf8.h"

static int log_level = PX_LOG_INFO;
static int log_format = PX_LOG_FORMAT_AUTO;
static char **secrets;
static size_t nsecrets;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
/* The module whose last error line is kept on this thread, and that line (owned). */
static _Thread_local char *capture_module;
static _Thread_local char *capture_last;

static const char *level_names[] = {"error", "warn", "info", "debug"};

void px_log_set_level(int level) { log_level = level; }
int px_log_get_level(void) { return log_level; }
void px_log_set_format(int format) { log_format = format; }

int px_log_parse_level(const char *name, int *level)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *level = i;
            return 0;
        }
    }
    if (strcmp(name, "warning") == 0) {
        *level = PX_LOG_WARN;
        return 0;
    }
    return PX_EINVAL;
}

void px_log_add_secret(const char *value)
{
    if (!value || strlen(value) < PX_SECRET_MIN_LEN) {
        return;
    }
    pthread_mutex_lock(&log_lock);
    for (size_t i = 0; i < nsecrets; i++) {
        if (strcmp(secrets[i], value) == 0) {
            pthread_mutex_unlock(&log_lock);
            return;
        }
    }
    secrets = px_xrealloc(secrets, (nsecrets + 1) * sizeof(*secrets));
    secrets[nsecrets++] = px_xstrdup(value);
    pthread_mutex_unlock(&log_lock);
}

void px_log_clear_secrets(void)
{
    pthread_mutex_lock(&log_lock);
    for (size_t i = 0; i < nsecrets; i++) {
        free(secrets[i]);
    }
    free(secrets);
    secrets = NULL;
    nsecrets = 0;
    pthread_mutex_unlock(&log_lock);
}

/* Replaces every registered secret in msg (in place, may shrink or grow by reallocation). */
static char *mask_secrets(char *msg)
{
    for (size_t i = 0; i < nsecrets; i++) {
        const char *s = secrets[i];
        size_t slen = strlen(s);
        char *hit;
        while ((hit = strstr(msg, s)) != NULL) {
            size_t pre = (size_t)(hit - msg);
            char *out = px_xasprintf("%.*s***%s", (int)pre, msg, hit + slen);
            free(msg);
            msg = out;
        }
    }
    return msg;
}

/* Replaces (in place) every byte that is not part of valid UTF-8 by '?'. Returns 1 if any. */
static int fix_utf8(char *s)
{
    int changed = 0;
    unsigned char *p = (unsigned char *)s;
    size_t left = strlen(s);
    while (left > 0) {
        size_t n = px_utf8_len(p, left);
        if (n == 0) {
            *p = '?';
            n = 1;
            changed = 1;
        }
        p += n;
        left -= n;
    }
    return changed;
}

char *px_log_redact(const char *text)
{
    if (!text || !*text) {
        return NULL;
    }
    char *out = NULL;
    pthread_mutex_lock(&log_lock);
    for (size_t i = 0; i < nsecrets; i++) {
        if (strstr(text, secrets[i])) {
            out = mask_secrets(px_xstrdup(text));
            break;
        }
    }
    pthread_mutex_unlock(&log_lock);
    if (!out && !px_utf8_valid(text, strlen(text))) {
        out = px_xstrdup(text);
    }
    if (out) {
        fix_utf8(out);
    }
    return out;
}

void px_log_redact_json(json_t *j)
{
    if (json_is_object(j)) {
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v) {
            char *masked = json_is_string(v) ? px_log_redact(json_string_value(v)) : NULL;
            if (masked) {
                json_object_set_new(j, k, json_string(masked));
                free(masked);
            } else {
                px_log_redact_json(v);
            }
        }
    } else if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) {
            char *masked = json_is_string(v) ? px_log_redact(json_string_value(v)) : NULL;
            if (masked) {
                json_array_set_new(j, i, json_string(masked));
                free(masked);
            } else {
                px_log_redact_json(v);
            }
        }
    }
}

void px_log_capture_begin(const char *module)
{
    free(px_log_capture_end());
    capture_module = px_xstrdup(module ? module : "");
}

char *px_log_capture_end(void)
{
    char *last = capture_last;
    free(capture_module);
    capture_module = NULL;
    capture_last = NULL;
    return last;
}

/* msg is masked already. */
static void capture(int level, const char *module, const char *msg)
{
    if (capture_module && level == PX_LOG_ERROR && module && strcmp(module, capture_module) == 0) {
        free(capture_last);
        capture_last = px_xstrdup(msg);
    }
}

static void json_escape(FILE *f, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (*p < 0x20) {
                fprintf(f, "\\u%04x", *p);
            } else {
                fputc(*p, f);
            }
        }
    }
}

void px_logv(int level, const char *module, const char *fmt, va_list ap)
{
    if (level > log_level) {
        return;
    }
    if (level < 0) {
        level = 0;
    }
    if (level > 3) {
        level = 3;
    }
    char buf[1024];
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap2);
    va_end(ap2);
    char *msg;
    if (n >= (int)sizeof(buf)) {
        msg = px_xmalloc((size_t)n + 1);
        vsnprintf(msg, (size_t)n + 1, fmt, ap);
    } else {
        msg = px_xstrdup(n < 0 ? "" : buf);
    }

    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char ts[40];
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (long)(tv.tv_usec / 1000));

    pthread_mutex_lock(&log_lock);
    msg = mask_secrets(msg);
    fix_utf8(msg); /* a JSON line must stay valid whatever a plugin quoted */
    int format = log_format;
    if (format == PX_LOG_FORMAT_AUTO) {
        format = isatty(STDERR_FILENO) ? PX_LOG_FORMAT_TEXT : PX_LOG_FORMAT_JSON;
    }
    /* The line is put together first and written with one write(2): stderr is unbuffered, and
     * a line written in pieces could be read (or cut by a kill) half done. */
    char *line = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&line, &len);
    if (f) {
        if (format == PX_LOG_FORMAT_TEXT) {
            fprintf(f, "%s %-5s [%s] %s\n", ts, level_names[level], module ? module : "host", msg);
        } else {
            fprintf(f, "{\"ts\":\"%s\",\"level\":\"%s\",\"module\":\"", ts,
                    level_names[level]);
            json_escape(f, module ? module : "host");
            fputs("\",\"msg\":\"", f);
            json_escape(f, msg);
            fputs("\"}\n", f);
        }
        if (fclose(f) == 0) {
            fwrite(line, 1, len, stderr);
            fflush(stderr);
        }
        free(line);
    }
    pthread_mutex_unlock(&log_lock);
    capture(level, module, msg);
    free(msg);
}

void px_log(int level, const char *module, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    px_logv(level, module, fmt, ap);
    va_end(ap);
}
