/* The log backend: the only writer to stderr. One JSON object per line
 * ({"ts","level","module","msg"}) or, on a terminal, a readable line. Registered secret values are
 * replaced by "***" in every message, wherever they appear. Loop thread, or any thread for px_log
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
/* Registers a secret (borrowed, copied) to mask in every later line. Empty strings are ignored. */
void px_log_add_secret(const char *value);
void px_log_clear_secrets(void);
/* Text that leaves the process by another way than the log (dead-letter reasons, event metadata)
 * is cleaned the same way: returns a copy of text (borrowed) with every registered secret replaced
 * by "***" and every byte that is not part of valid UTF-8 replaced by '?' (owned by caller;
 * free), or NULL when there is nothing to change (or text is NULL). Any thread. Log lines get the
 * same treatment. */
char *px_log_redact(const char *text);

/* module: "host", "config", or an instance name (borrowed). */
void px_log(int level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void px_logv(int level, const char *module, const char *fmt, va_list ap);

#define PX_LOG_ERR(mod, ...) px_log(PX_LOG_ERROR, (mod), __VA_ARGS__)
#define PX_LOG_WARN(mod, ...) px_log(PX_LOG_WARN, (mod), __VA_ARGS__)
#define PX_LOG_INFO(mod, ...) px_log(PX_LOG_INFO, (mod), __VA_ARGS__)
#define PX_LOG_DEBUG(mod, ...) px_log(PX_LOG_DEBUG, (mod), __VA_ARGS__)

#endif
