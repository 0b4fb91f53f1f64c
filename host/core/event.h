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
    json_t *payload;        /* owned reference; NULL until first asked (px_event_payload) when the
                               event was made from text */
    json_t *meta;           /* owned: object of strings, or NULL */
    uint32_t max_attempts;  /* hint, 0 = none */
    uint32_t timeout_ms;    /* hint, 0 = none */
    uint32_t *backoff_ms;   /* hint list, owned; nbackoff entries */
    size_t nbackoff;
    int64_t deadline_ms;    /* hint: unix ms after which no retry starts, 0 = none */
    int fail_on_timeout;    /* hint: a timed-out attempt is dead at once */
    char *text;             /* owned: the payload's JSON text, NUL-terminated (the source's own,
                               or a serialisation made when first asked), or NULL */
    size_t text_len;
    size_t text_flags;      /* jansson decode flags the text parses with */
};

/* New event with one reference held by the caller; payload is stolen. source borrowed (copied). */
px_event *px_event_create(const char *source, const char *type, json_t *payload);
/* New event whose payload is the JSON text json (len bytes, borrowed, copied), parsed with
 * jansson decode `flags` only when first asked for. The caller has checked that it parses
 * (px_json_check or jansson). Returns NULL when type is empty or json NULL. */
px_event *px_event_create_text(const char *source, const char *type, const char *json,
                               size_t len, size_t flags);
/* The payload (borrowed), parsed from the text on first call. Text that does not parse (only
 * from a source breaking the event_set_raw contract, or a damaged spool row) becomes a JSON
 * string of the text. */
json_t *px_event_payload(px_event *ev);
/* The payload's JSON text (borrowed, NUL-terminated; *len its length when len is not NULL):
 * the source's own text, else a compact serialisation made on first call. */
const char *px_event_text(px_event *ev, size_t *len);
/* Keeps a copy of json (len bytes, borrowed) as the text of ev's payload, which it must parse
 * to. */
void px_event_set_text(px_event *ev, const char *json, size_t len);
px_event *px_event_ref(px_event *ev);
void px_event_unref(px_event *ev); /* NULL is a no-op */

int px_event_set(px_event *ev, int field, const char *value);
int px_event_set_hint(px_event *ev, int hint, int64_t value);
int px_event_set_meta(px_event *ev, const char *key, const char *value);

/* Hints as a JSON object text ({"max_attempts":..,"timeout_ms":..,"backoff_ms":[..],
 * "deadline_ms":..,"fail_on_timeout":true}, keys present only when set), or NULL
 * when the event has none. Returns a new string (owned by caller; free). */
char *px_event_hints_json(const px_event *ev);
/* The metadata as a compact JSON object text, as json_dumps(JSON_COMPACT) writes it, or NULL
 * when the event has none. Returns a new string (owned by caller; free). */
char *px_event_meta_json(const px_event *ev);
/* Applies hints from that text (borrowed) to ev. Unknown keys are ignored. */
void px_event_hints_parse(px_event *ev, const char *hints_json);

#endif
