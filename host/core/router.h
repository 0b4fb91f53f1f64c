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

/* One delivery the router decided on. Strings and retry borrowed from the router (valid while it
 * lives). */
typedef struct px_route {
    const char *pipeline;
    const char *sink;
    const char *action;
    const px_retry_policy *retry;
    json_t *params; /* new reference: the mapped `with` (an object); NULL when error is set */
    char *error;    /* owned (free): mapping failure for this event, else NULL; e.g.
                     * "with.contact.email: missing /data/email" */
} px_route;

/* Builds a router from cfg's pipelines (borrowed; everything needed is copied, so cfg may be
 * destroyed afterwards). On success returns 0 and stores *out (owned by caller;
 * px_router_destroy). Returns PX_ECONFIG with a message in err (errlen bytes, NUL-terminated):
 * "file:line:column: pipeline P, sink S: with.a.b: ..." for a template that does not compile,
 * "file: pipeline P: when.match /ptr: ..." for a bad condition (bad pointer, `in` without a
 * list, `exists` without a bool, unknown op). */
int px_router_create(const px_config *cfg, px_router **out, char *err, size_t errlen);

/* Routes an event from instance `source` (borrowed; NULL matches only `from: "*"`) described by
 * env (borrowed). A pipeline matches when its `from` is source or "*", env->type matches one of
 * its type globs (or it has none), and every condition holds: equals (json_equal), in (json_equal
 * to an element), exists true/false; a condition on a missing pointer does not hold, except
 * exists: false. Each matching pipeline yields one route per target. Returns n and stores in
 * *routes (owned by caller; px_routes_free) n entries in pipeline order, then target order;
 * n == 0: no pipeline wants the event and *routes is NULL. A mapping failure affects only its own
 * entry (params NULL, error set). Allocates nothing but the result array and the mapped values
 * (and a short-lived value per condition on an /$event/ field). Any thread: the router is not
 * modified. */
size_t px_router_route(const px_router *r, const char *source, const px_mapping_env *env,
                       px_route **routes);
/* Releases routes (owned; NULL is a no-op) and the params and error of its n entries. */
void px_routes_free(px_route *routes, size_t n);

/* Glob match of s (borrowed) against pattern (borrowed): '*' any run (including empty), '?' one
 * byte, everything else literal; the whole of s must match. Returns 1 on a match, else 0. */
int px_glob_match(const char *pattern, const char *s);

/* Why pipeline number i does not take the event px_router_route would route (same arguments):
 * NULL when it does (or i is out of range), else buf (len bytes, NUL-terminated) holding the
 * first rule that fails, e.g. "from: \"ezzing\", the event comes from \"shop\"",
 * "type \"a.b\" is not one of \"x.*\", \"y\"", "when.match /data/status equals \"new\": got
 * \"old\"" (or ": missing"). For dry runs (`plexus route`); the router is not modified. */
const char *px_router_why_not(const px_router *r, size_t i, const char *source,
                              const px_mapping_env *env, char *buf, size_t len);

/* Number of pipelines, and a pipeline name by index (borrowed), for status. */
size_t px_router_count(const px_router *r);
const char *px_router_name(const px_router *r, size_t i);

/* Frees r and everything it owns; NULL is a no-op. Routes handed out must be freed first. */
void px_router_destroy(px_router *r);

#endif
