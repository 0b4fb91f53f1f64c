/* The router: compiled pipelines. For one event it finds every matching pipeline (from, type
 * glob, JSON-pointer conditions) and, per target, evaluates the mapping, producing a list of
 * deliveries (fan-out). Pure module: it knows nothing of plugins or the spool; the caller hands
 * the result to the delivery layer. A router is immutable after create, so a reload builds a new
 * one and swaps the pointer between loop iterations. */
#ifndef PX_ROUTER_H
#define PX_ROUTER_H

#include <stddef.h>

#include "config.h"
#include "mapping.h"

typedef struct px_router px_router;

/* One delivery the router decided on. Strings borrowed from the router (valid while it lives). */
typedef struct px_route {
    const char *pipeline;
    const char *sink;
    const char *action;
    const px_retry_policy *retry;
    json_t *params; /* new reference: the mapped `with` (an object); NULL when error is set */
    char *error;    /* owned (free): mapping failure for this event, e.g. "missing /data/email" */
} px_route;

/* Builds a router from cfg's pipelines (borrowed; everything needed is copied). Returns 0, or
 * PX_ECONFIG with a "file:line:column: message" in err for a template that does not compile. */
int px_router_create(const px_config *cfg, px_router **out, char *err, size_t errlen);

/* Routes an event. On return *routes (owned by caller; px_routes_free) holds n entries in
 * pipeline order, then target order. n == 0: no pipeline wants the event. */
size_t px_router_route(const px_router *r, const char *source, const px_mapping_env *env,
                       px_route **routes);
void px_routes_free(px_route *routes, size_t n);

/* Glob match: '*' any run (including empty), '?' one char, everything else literal. */
int px_glob_match(const char *pattern, const char *s);

/* Number of pipelines, and a pipeline name by index (borrowed), for status. */
size_t px_router_count(const px_router *r);
const char *px_router_name(const px_router *r, size_t i);

void px_router_destroy(px_router *r);

#endif
