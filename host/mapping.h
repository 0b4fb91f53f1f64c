/* The mapping language of a pipeline target's `with:` (documented in docs/configuration.md):
 * - a string that is exactly "{{/pointer}}" is replaced by the value at that RFC 6901 pointer
 *   in the event document, keeping its JSON type (object, array, number, bool, null, string);
 * - "{{/pointer}}" inside a longer string is replaced by the value's text (strings as-is,
 *   numbers/bools/null as JSON text, objects/arrays as compact JSON);
 * - "{{{{" / "}}}}"-free literal text, numbers, bools, null, arrays and objects are copied;
 *   objects and arrays are walked recursively.
 * A pointer that resolves to nothing is an error naming the pointer; the event's delivery is
 * rejected with that message. The event document is {"type","id","source","time","meta",...}
 * merged view: pointers apply to the event payload (e.g. /data/email); the special prefix
 * "/$event/" reaches event fields: /$event/type, /$event/id, /$event/source, /$event/time.
 * Pure module. */
#ifndef PX_MAPPING_H
#define PX_MAPPING_H

#include <stddef.h>

#include <jansson.h>

typedef struct px_mapping px_mapping;

/* Event fields reachable through /$event/... (all borrowed for the call; may be NULL). */
typedef struct px_mapping_env {
    const json_t *payload;
    const char *type, *id, *source;
    long long time_ms;
} px_mapping_env;

/* Compiles template `tmpl` (borrowed). On success returns 0 and stores *out (owned by caller;
 * px_mapping_destroy). A malformed template ("{{" without "}}", a pointer not starting with '/',
 * a bad ~ escape) returns PX_EINVAL with a message in err. */
int px_mapping_compile(const json_t *tmpl, px_mapping **out, char *err, size_t errlen);

/* Evaluates the mapping against env. On success returns 0 and stores a new reference in *out.
 * On a missing pointer returns PX_ENOENT and writes "missing /pointer" (plus context) to err. */
int px_mapping_apply(const px_mapping *m, const px_mapping_env *env, json_t **out, char *err,
                     size_t errlen);

void px_mapping_destroy(px_mapping *m);

/* RFC 6901 lookup: returns the value at `pointer` in doc (borrowed) or NULL. "" is doc itself. */
json_t *px_json_pointer_get(const json_t *doc, const char *pointer);

#endif
