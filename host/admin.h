/* The admin API: a second HTTP listener (host.admin.listen, loopback by default) for operators
 * and monitoring. /healthz, /readyz, /metrics (Prometheus text), /admin/status, the dead-letter
 * endpoints /admin/dlq..., and /admin/reload. Every endpoint but /healthz requires
 * "Authorization: Bearer <host.admin.token>" when a token is configured. Loop thread only. */
#ifndef PX_ADMIN_H
#define PX_ADMIN_H

#include <jansson.h>

typedef struct px_daemon px_daemon;
typedef struct px_admin px_admin;

/* Starts listening on d->cfg->admin_listen (nothing when it is NULL or "") and logs
 * "admin listening address=... port=...". d (borrowed) must outlive the admin server. A listener
 * that cannot bind is logged as an error and the host runs without the admin API: ingestion
 * matters more than its management interface. Stores the server (owned by caller;
 * px_admin_close) or NULL in *out. Returns 0, or the bind error after logging it. */
int px_admin_create(px_daemon *d, px_admin **out);

/* The bound TCP port (useful with port 0). */
int px_admin_port(const px_admin *a);

/* Stops listening and closes the server's connections; a is freed once its handles are closed
 * (the loop must run). NULL is a no-op. */
void px_admin_close(px_admin *a);

/* The admin API's status document (GET /admin/status) as a new reference. */
json_t *px_admin_status_json(px_admin *a);

/* Copies the figures kept by the spool, dispatcher, instances and HTTP servers into the global
 * metrics registry (done before each /metrics answer). */
void px_admin_collect_metrics(px_admin *a);

#endif
