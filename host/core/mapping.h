/* The mapping language of a pipeline target's `with:` (exact rules in docs/configuration.md,
 * section "Mapping language"):
 * - objects and arrays are walked recursively (keys are literal); numbers, bools, null and strings
 *   without a reference are copied;
 * - a string that is exactly one reference "{{/pointer}}" (blanks allowed inside the braces) is
 *   replaced by the value at that RFC 6901 pointer, keeping its JSON type;
 * - a string mixing text and references is a string: each reference renders as text (strings
 *   as-is, numbers/bools/null as JSON text, objects/arrays as compact JSON);
 * - "\{{" is a literal "{{"; "{{/pointer?}}" is optional: null (whole value) or "" (in text) when
 *   the pointer resolves to nothing; otherwise that is an error "with.a.b: missing /pointer".
 * Pointers apply to the event payload; "" is the whole payload; "/$event/type", "/$event/id",
 * "/$event/source" and "/$event/time" (integer, unix ms) reach the event's own fields.
 * Templates are compiled once; applying one to an event re-parses nothing. Pure module. */
#ifndef PX_MAPPING_H
#define PX_MAPPING_H

#include <stddef.h>

#include <jansson.h>

typedef struct px_mapping px_mapping;
typedef struct px_pointer px_pointer;

/* Event fields reachable through /$event/... (all borrowed for the call; may be NULL, which makes
 * a reference to them missing). */
typedef struct px_mapping_env {
    const json_t *payload; /* NULL: asked of payload_fn(payload_arg) on first use, if set */
    const char *type, *id, *source;
    long long time_ms;
    const json_t *(*payload_fn)(void *arg); /* borrowed result (e.g. an event parsed lazily) */
    void *payload_arg;
} px_mapping_env;

/* Compiles template `tmpl` (borrowed; nothing of it is kept). On success returns 0 and stores
 * *out (owned by caller; px_mapping_destroy). A malformed template ("{{" without "}}", a pointer
 * not starting with '/', a bad ~ escape, an unknown /$event/ field) returns PX_EINVAL and writes
 * "with.<path>: <message>" to err (errlen bytes, always NUL-terminated). */
int px_mapping_compile(const json_t *tmpl, px_mapping **out, char *err, size_t errlen);

/* Evaluates the mapping against env (borrowed). On success returns 0 and stores a new reference
 * in *out. The result may share unmodified values with env->payload and with the mapping: treat
 * it as read-only. On a missing (non-optional) pointer returns PX_ENOENT, writes
 * "with.<path>: missing <pointer>" to err and leaves *out untouched. Any thread, concurrently. */
int px_mapping_apply(const px_mapping *m, const px_mapping_env *env, json_t **out, char *err,
                     size_t errlen);

/* Returns 1 if the template holds at least one reference, else 0 (its result is constant). */
int px_mapping_has_refs(const px_mapping *m);

void px_mapping_destroy(px_mapping *m);

/* RFC 6901 lookup: returns the value at `pointer` (borrowed) in doc (borrowed), or NULL when it
 * resolves to nothing or the pointer is malformed. "" is doc itself. No /$event/ handling. */
json_t *px_json_pointer_get(const json_t *doc, const char *pointer);

/* Compiles one pointer (borrowed): RFC 6901 over the payload, "" for the whole payload, or
 * "/$event/<field>". On success returns 0 and stores *out (owned by caller; px_pointer_destroy);
 * otherwise returns PX_EINVAL with a message in err. */
int px_pointer_compile(const char *pointer, px_pointer **out, char *err, size_t errlen);

/* Resolves p against env (borrowed). Returns a new reference, or NULL when nothing is there. */
json_t *px_pointer_eval(const px_pointer *p, const px_mapping_env *env);

/* The pointer as written (borrowed; valid while p lives). */
const char *px_pointer_text(const px_pointer *p);

void px_pointer_destroy(px_pointer *p);

#endif
