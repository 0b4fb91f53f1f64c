/* notification: the pure parts of the plugin. Building and validating a NotificationQueue message
 * from a delivery's parameters, and recognising an EventBridge envelope from the Notification
 * service. No I/O and no host calls, so they are unit-tested on their own. */
#ifndef PX_NOTIFICATION_MESSAGE_H
#define PX_NOTIFICATION_MESSAGE_H

#include <stddef.h>

#include <jansson.h>

/* Builds the NotificationQueue body ({"notification": [{"name", "recipients": [...]}]}) from the
 * delivery parameters `params` (borrowed). Two forms are accepted: a `notification` key holding a
 * notification object or a list of them (recipients given in full), or the short form of one
 * notification: `name` plus one recipient's `tos`/`to`, `to_name`, `ccs`, `bccs`, `phone`,
 * `pushId`, `macros`, `locale` (or a `recipients` list). Addresses may be given as a string, an
 * {"email","name"} object or a list of them; null and "" entries are dropped, so optional mapping
 * references work. On success returns 0 and stores a new reference in *out. On a message that can
 * never be sent returns -1 with a one-line reason in why (why_len bytes, always NUL-terminated)
 * and leaves *out untouched. */
int notification_build(const json_t *params, json_t **out, char *why, size_t why_len);

/* Writes `msg` (borrowed; a message from notification_build) as compact JSON into buf (size
 * bytes, may be NULL when size is 0), like json_dumpb: returns the body's length, which is more
 * than size when it did not fit (buf then holds a truncated body), or 0 when msg holds a value no
 * message has (a real number), for which json_dumpb is the way. Not NUL-terminated. */
size_t notification_body(const json_t *msg, char *buf, size_t size);

/* The usual case in one pass: when `params` (borrowed) is the short form with only name, tos/to/
 * email (string or {"email","name"} addresses), to_name, text macros and locale, and would make
 * a message, writes into buf (size bytes, may be NULL when size is 0) the body
 * notification_body(notification_build(params)) would, and returns its length (more than size
 * when it did not fit). Returns 0 for anything else, which takes notification_build (and gets
 * its reason when refused). */
size_t notification_quick_body(const json_t *params, char *buf, size_t size);

/* 1 when `s` (borrowed) looks like an e-mail address: one '@', a plausible local part, and a
 * domain of at least two dot-separated labels of letters, digits and '-'. 0 otherwise. */
int notification_email_ok(const char *s);

/* Checks that `env` (borrowed) is an EventBridge envelope: an object with non-empty string `id`,
 * `detail-type` and `source`, and an object `detail`. On success returns 0 and writes the event
 * type into type (type_len bytes): "notification." + the detail-type without the
 * "notificationservice/" prefix, '/' turned into '.', e.g. "notification.action.create". On
 * failure returns -1 with the reason in why (why_len bytes). */
int notification_envelope_type(const json_t *env, char *type, size_t type_len, char *why,
                               size_t why_len);

#endif
