/* The log backend: the only writer to stderr. One JSON object per line
 * ({"ts","level","module","msg"}) or, on a terminal, a readable line. Registered secret values are
 * replaced by "***" in every message, wherever they appear. Only text the host prints is masked
 * (log lines, error and dead-letter reasons, status): events, their metadata and dead-lettered
 * messages are data and are stored and shown byte for byte. Loop thread, or any thread for px_log
 * (writes are whole lines under a lock). */
#ifndef PX_LOG_H
#define PX_LOG_H

#include <stdarg.h>

#include <plexus/sdk.h>

enum px_log_format { PX_LOG_FORMAT_AUTO = 0, PX_LOG_FORMAT_JSON, PX_LOG_FORMAT_TEXT };

void px_log_set_level(int level);              /* enum px_log_level; default PX_LOG_INFO */
int px_log_get_level(void);
void px_log_set_format(int format);            /* enum px_log_format; AUTO = TEXT on a tty */
/* Parses "error|warn|info|debug"; returns 0 and stores the level, or PX_EINVAL. */
int px_log_parse_level(const char *name, int *level);
/* Shortest value accepted for a secret (config refuses shorter ones): a shorter one would mask the
 * same letters in unrelated text. */
#define PX_SECRET_MIN_LEN 8

/* Registers a secret (borrowed, copied) to mask in every later line. Values shorter than
 * PX_SECRET_MIN_LEN (empty included) are ignored. */
void px_log_add_secret(const char *value);
void px_log_clear_secrets(void);
/* Text the host prints by another way than the log (error and dead-letter reasons, status) is
 * cleaned the same way: returns a copy of text (borrowed) with every registered secret replaced
 * by "***" and every byte that is not part of valid UTF-8 replaced by '?' (owned by caller;
 * free), or NULL when there is nothing to change (or text is NULL). Any thread. Log lines get the
 * same treatment. Never for stored data: events and their metadata are kept as they came. */
char *px_log_redact(const char *text);
/* px_log_redact on every string value (not key) of j (borrowed), in place, for a report the host
 * prints (admin status). Values that change are replaced by new strings. */
void px_log_redact_json(json_t *j);

/* Keeps the last error-level line logged under `module` (borrowed, copied) on this thread until
 * px_log_capture_end: the reason a plugin gave while the host waited for its init or start. One
 * capture per thread at a time. */
void px_log_capture_begin(const char *module);
/* Ends the capture. Returns the last error-level line logged under the module (masked; owned by
 * caller, free), or NULL when there was none. */
char *px_log_capture_end(void);

/* module: "host", "config", or an instance name (borrowed). */
void px_log(int level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void px_logv(int level, const char *module, const char *fmt, va_list ap);

#define PX_LOG_ERR(mod, ...) px_log(PX_LOG_ERROR, (mod), __VA_ARGS__)
#define PX_LOG_WARN(mod, ...) px_log(PX_LOG_WARN, (mod), __VA_ARGS__)
#define PX_LOG_INFO(mod, ...) px_log(PX_LOG_INFO, (mod), __VA_ARGS__)
#define PX_LOG_DEBUG(mod, ...) px_log(PX_LOG_DEBUG, (mod), __VA_ARGS__)

#endif
