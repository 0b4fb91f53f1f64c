/* The admin API: a second HTTP listener (host.admin.listen, loopback by default) for operators
 * and monitoring. /healthz, /readyz, /metrics (Prometheus text), /admin/status, the dead-letter
 * endpoints /admin/dlq..., /admin/reload, POST /admin/route (a dry run of the pipelines in force,
 * route_explain.h) and GET /admin/tap (a stream of JSON lines from the runtime's tap, tap.h;
 * ended with a closing line when the admin API closes). Every endpoint but /healthz and /readyz
 * requires "Authorization: Bearer <token>" (/metrics not with host.admin.metrics_public), the
 * token being host.admin.token or the one in data_dir/admin.token (admin_token.h), unless the
 * configuration says host.admin.auth: none. Loop thread only. */
#ifndef PX_ADMIN_H
#define PX_ADMIN_H

#include <stddef.h>

#include <jansson.h>

typedef struct px_runtime px_runtime;
typedef struct px_admin px_admin;
typedef struct px_config px_config;

/* Reloads instance `instance` (NULL: the whole configuration); 0 or < 0 with one line in err. */
typedef int (*px_admin_reload_fn)(void *arg, const char *instance, char *err, size_t errlen);

/* Makes the admin API of runtime rt (borrowed; must outlive it), POST /admin/reload running
 * reload(reload_arg, ...): reads or creates its token, starts
 * listening on rt->cfg->admin_listen (no listener when it is NULL or "") and logs
 * "admin listening address=... port=... auth=...". A listener that cannot bind, or a token file
 * that is refused, is logged as an error and the host runs without the admin API (a reload may
 * start it): ingestion matters more than its management interface. Stores the admin (owned by
 * caller; px_admin_close) in *out, NULL only when rt has no config. Returns 0, or the error after
 * logging it. */
int px_admin_create(px_runtime *rt, px_admin_reload_fn reload, void *reload_arg,
                    px_admin **out);

/* The bound TCP port (useful with port 0); 0 without a listener. */
int px_admin_port(const px_admin *a);

/* Stops listening and closes the server's connections; a is freed once its handles are closed
 * (the loop must run). NULL is a no-op. */
void px_admin_close(px_admin *a);

/* A reload's change of the admin settings, prepared before anything of the reload applies. */
typedef struct px_admin_change px_admin_change;

/* Prepares what ncfg (borrowed) asks of the admin API a (may be NULL: nothing to do): its token
 * (host.admin.token, else the token file, read again or made when missing; never "no token") and,
 * when host.admin.listen changed, a new listener already bound, so a refused address changes
 * nothing. On success returns 0 and stores the change (owned by caller; px_admin_commit or
 * px_admin_abort; may be NULL) in *out. On failure returns < 0 with one line in err. */
int px_admin_prepare(px_admin *a, const px_config *ncfg, px_admin_change **out, char *err,
                     size_t errlen);

/* Applies ch (stolen; NULL is a no-op) once the runtime's config is the new one: the new token
 * from the next request on; the new listener takes connections and the old one stops listening,
 * answering the requests it already took before it closes. */
void px_admin_commit(px_admin *a, px_admin_change *ch);

/* Releases a change that is not applied (closes its listener). NULL is a no-op. */
void px_admin_abort(px_admin_change *ch);

/* The admin API's status document (GET /admin/status) as a new reference. */
json_t *px_admin_status_json(px_admin *a);

/* Copies the figures kept by the spool, dispatcher, instances and HTTP servers into the global
 * metrics registry (done before each /metrics answer). */
void px_admin_collect_metrics(px_admin *a);

#endif
