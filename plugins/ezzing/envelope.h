/* Ezzing's Laravel job envelope: parsing (uuid, job, retry fields, data), the topic name an
 * envelope stands for, and the per-topic check of the fields each of the 16 known jobs carries.
 * Pure functions over jansson, no host calls: unit-tested on their own. */
#ifndef PX_EZZING_ENVELOPE_H
#define PX_EZZING_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define EZZING_MAX_BACKOFF 16 /* backoff steps kept from a comma list */
#define EZZING_TOPIC_MAX 96   /* topic names are at most this long, NUL included */

/* Results of ezzing_envelope_parse. */
enum {
    EZZING_OK = 0,
    EZZING_ENOTJSON = -1, /* the body is not a JSON object */
    EZZING_ENOJOB = -2,   /* no "job" string */
    EZZING_EBADJOB = -3,  /* a "job" that names no topic (and neither do displayName/commandName) */
};

/* Results of ezzing_envelope_validate. */
enum {
    EZZING_VALID = 0,    /* a known job with every field it must carry */
    EZZING_UNKNOWN = 1,  /* a job this version does not know: not checked */
    EZZING_INVALID = -1, /* a known job missing a field or with a field of the wrong type */
};

typedef struct ezzing_envelope {
    json_t *root;             /* owned (ezzing_envelope_deinit): the whole envelope object */
    const char *uuid;         /* borrowed from root; NULL when absent or not a string */
    const char *job;          /* borrowed from root: the raw "job" */
    const char *display_name; /* borrowed from root; NULL when absent */
    char topic[EZZING_TOPIC_MAX]; /* the event name, e.g. "user_created" */
    int64_t max_tries;        /* -1 = null or absent (0 = unlimited, as in Laravel) */
    int64_t max_exceptions;   /* -1 = null or absent */
    int fail_on_timeout;      /* 0 or 1 */
    int64_t timeout_s;        /* -1 = null or absent */
    int64_t retry_until;      /* unix seconds; -1 = null or absent */
    uint32_t backoff_s[EZZING_MAX_BACKOFF]; /* delays in seconds, in order; last one repeats */
    size_t nbackoff;          /* 0 = null, absent or unreadable */
    json_t *data;             /* borrowed from root; NULL when absent */
    int class_based;          /* a class-based Laravel job: "job" is a Class@method handler and
                                 data is {"commandName", "command"} (a PHP-serialized object) */
} ezzing_envelope;

/* Parses `body` (borrowed, len bytes). On EZZING_OK fills *e, whose root the caller must release
 * with ezzing_envelope_deinit. On failure returns EZZING_E*, leaves nothing to release and writes
 * the reason into why (why_len bytes, may be 0). Tolerant of what Laravel and Ezzing vary: ids and
 * counts as numbers or digit strings, backoff null / number / "1,5,10" / array.
 *
 * Topic: the seed's messages carry the topic in "job" (and the same in "displayName"), so a
 * "job" that is a plain name ([A-Za-z0-9_.-]) is the topic. A class-based Laravel job
 * ("Illuminate\\Queue\\CallQueuedHandler@call") names no topic: then the class of
 * "displayName", else of "data.commandName", gives it, in snake_case ("App\\Jobs\\UserCreated"
 * -> "user_created"). */
int ezzing_envelope_parse(const char *body, size_t len, ezzing_envelope *e, char *why,
                          size_t why_len);

/* Releases what ezzing_envelope_parse filled. Safe on a zeroed envelope. */
void ezzing_envelope_deinit(ezzing_envelope *e);

/* Checks e->data against the fields e->topic must carry. Returns EZZING_VALID, EZZING_UNKNOWN or
 * EZZING_INVALID (with the first problem written into why, e.g. "data.id: missing"). A class-based
 * job carries its business fields inside the serialized "command", out of reach: for it only
 * what it really carries is checked, a string "data.commandName" and "data.command". Ids may be
 * numbers or digit strings, coordinates numbers or numeric strings, timestamps
 * "YYYY-MM-DD HH:MM:SS" or ISO 8601 "YYYY-MM-DDTHH:MM:SS[.ffffff]Z". */
int ezzing_envelope_validate(const ezzing_envelope *e, char *why, size_t why_len);

/* The known topics: stores the list in *names (static storage) and returns how many. */
size_t ezzing_known_topics(const char *const **names);

/* 1 when s is a timestamp in one of the two accepted formats. */
int ezzing_is_timestamp(const char *s);

#endif
