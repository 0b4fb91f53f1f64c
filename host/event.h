/* Events: the unit that flows from sources through pipelines to sinks. Reference-counted (loop
 * thread only), immutable once emitted. The SDK sees px_event as opaque; this header is the
 * host's view. */
#ifndef PX_EVENT_H
#define PX_EVENT_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <plexus/sdk.h>

struct px_event {
    int refs;
    int emitted;            /* set by emit: no setter works after */
    char *id;               /* owned */
    char *type;             /* owned */
    char *source;           /* owned: instance name */
    char *dedupe_key;       /* owned, may be NULL */
    char *subject;          /* owned, may be NULL */
    int64_t time_ms;
    json_t *payload;        /* owned reference */
    json_t *meta;           /* owned: object of strings, or NULL */
    uint32_t max_attempts;  /* hint, 0 = none */
    uint32_t timeout_ms;    /* hint, 0 = none */
    uint32_t *backoff_ms;   /* hint list, owned; nbackoff entries */
    size_t nbackoff;
    const char *raw;        /* borrowed until emit returns: the payload's JSON text, or NULL */
    size_t raw_len;
};

/* New event with one reference held by the caller; payload is stolen. source borrowed (copied). */
px_event *px_event_create(const char *source, const char *type, json_t *payload);
px_event *px_event_ref(px_event *ev);
void px_event_unref(px_event *ev); /* NULL is a no-op */

int px_event_set(px_event *ev, int field, const char *value);
int px_event_set_hint(px_event *ev, int hint, int64_t value);
int px_event_set_meta(px_event *ev, const char *key, const char *value);

/* Hints as a JSON object text ({"max_attempts":..,"timeout_ms":..,"backoff_ms":[..]}), or NULL
 * when the event has none. Returns a new string (owned by caller; free). */
char *px_event_hints_json(const px_event *ev);
/* Applies hints from that text (borrowed) to ev. Unknown keys are ignored. */
void px_event_hints_parse(px_event *ev, const char *hints_json);

#endif
