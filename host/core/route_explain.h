/* A dry run of the router: what one event would become, without storing or delivering anything
 * and without any plugin: which pipelines take it (and why the others do not), and per target the
 * sink, the action and the mapped `with:`, or the mapping error naming the field. The same
 * router and mapping code as the running host (router.h). Used by `plexus route`, `plexus test`
 * and POST /admin/route. Pure module; any thread. */
#ifndef PX_ROUTE_EXPLAIN_H
#define PX_ROUTE_EXPLAIN_H

#include <stddef.h>

#include <jansson.h>

#include "router.h"

/* One event to route, as an operator describes it. */
typedef struct px_route_input {
    char *source;      /* owned: instance the event comes from; NULL: none given (only
                        * pipelines with `from: "*"` can take it) */
    char *type;        /* owned: event type; "" when not given */
    char *id;          /* owned: /$event/id; default "dry-run" */
    long long time_ms; /* /$event/time, unix ms */
    json_t *payload;   /* owned reference: the event's payload */
    json_t *meta;      /* owned reference: metadata (object of strings), or NULL. Routing and
                        * mappings do not read it; it is echoed back with the event */
} px_route_input;

/* Reads an event description doc (borrowed): an object {"source": "...", "type": "...",
 * "id": "...", "time": ms, "payload": ..., "metadata": {"k": "v"}}, every member optional but
 * payload (a missing payload is {}); unknown members are refused. time defaults to now_ms. On
 * success returns 0 and fills *in (release with px_route_input_clear). On failure returns
 * PX_EINVAL with one line in err naming the member ("type: expected a string"); *in is then
 * empty. */
int px_route_input_parse(const json_t *doc, long long now_ms, px_route_input *in, char *err,
                         size_t errlen);

/* Releases what in holds (in itself is the caller's); a zeroed input is fine. */
void px_route_input_clear(px_route_input *in);

/* Routes `in` (borrowed) through r (borrowed) and returns a new reference to
 * {"event": {"source", "type", "id", "time", "metadata"?},
 *  "routed": true when at least one target was chosen,
 *  "errors": number of targets whose mapping failed,
 *  "targets": [{"pipeline", "sink", "action", "with": {...}} or, when the mapping fails,
 *              {"pipeline", "sink", "action", "error": "with.a.b: missing /p",
 *               "field": "with.a.b", "pointer": "/p"}] (pipeline order, then target order),
 *  "pipelines": [{"name", "matched": true} or {"name", "matched": false, "reason": "..."}]}
 * "pointer" is present only for a missing reference. */
json_t *px_route_explain(const px_router *r, const px_route_input *in);

#endif
