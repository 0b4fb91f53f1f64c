/* The command line's side of the admin API: `plexus status`, `plexus reload`, and the calls
 * `plexus dlq` makes when a host is running. Blocking libcurl requests to the address in the
 * config's host.admin.listen (or --admin / $PLEXUS_ADMIN), with host.admin.token or else the token
 * file in the config's data_dir (admin_token.h). CLI process only. */
#ifndef PX_CLI_ADMIN_H
#define PX_CLI_ADMIN_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

typedef struct px_cli_admin px_cli_admin;

/* `plexus status` and `plexus reload`; argv[0] is the command. Return the exit status. */
int px_cli_status(int argc, char **argv, const char *default_config);
int px_cli_reload(int argc, char **argv, const char *default_config);

/* Loads config (borrowed path) for the admin address, token and data_dir; `addr` (borrowed; may
 * be NULL) overrides the address: "HOST:PORT" or an http:// URL, else $PLEXUS_ADMIN. On success
 * returns 0 and stores a client (owned by caller; px_cli_admin_close). Returns PX_ECONFIG after
 * printing the config error. */
int px_cli_admin_open(const char *config, const char *addr, px_cli_admin **out);
void px_cli_admin_close(px_cli_admin *c); /* NULL is a no-op */

/* One request: method and path (borrowed; path with its query string), body (borrowed JSON or
 * NULL). On an answer returns 0, stores the HTTP status in *status and the body parsed as JSON
 * in *out (new reference; NULL when not JSON; out may be NULL). Returns UV_ECONNREFUSED when
 * nothing listens there (or the admin API is disabled, or its port is 0), PX_EHTTP for other
 * failures, with a message in err. */
int px_cli_admin_call(px_cli_admin *c, const char *method, const char *path, const json_t *body,
                      long *status, json_t **out, char *err, size_t errlen);

/* A GET of path (borrowed) whose answer is streamed as lines: on_line(line, len, arg) runs for
 * each complete line of a 200 answer (line borrowed for the call, without its '\n'), as it
 * arrives; on_line returns 0 to go on, 1 to stop reading. Returns 0 when the answer ended (or
 * on_line stopped it) with the HTTP status in *status and, for a status other than 200, the body
 * parsed as JSON in *body (new reference or NULL); errors as px_cli_admin_call. No time limit but
 * the connect's. */
int px_cli_admin_stream(px_cli_admin *c, const char *path,
                        int (*on_line)(const char *line, size_t len, void *arg), void *arg,
                        long *status, json_t **body, char *err, size_t errlen);

/* Prints why the host refused a request (status and the body's "error") to stderr. */
void px_cli_admin_refusal(px_cli_admin *c, long status, const json_t *body);

/* For `plexus dlq`: 1 when a running host of config's data_dir answers on its admin API (*out
 * then holds a client, owned by caller), 0 when none does (work offline; *out NULL), -1 after
 * printing an error (the address answers but not usably). */
int px_cli_admin_probe(const char *config, px_cli_admin **out);

/* The spool's dead-letter calls (spool.h) through the admin API: same arguments, results and
 * JSON. Errors are printed; they return PX_ENOENT (show: no such id) or PX_EHTTP. */
int px_cli_admin_dlq_list(px_cli_admin *c, const char *sink, int64_t since_ms, size_t limit,
                          json_t **out);
int px_cli_admin_dlq_show(px_cli_admin *c, int64_t id, json_t **out);
int px_cli_admin_dlq_replay(px_cli_admin *c, const int64_t *ids, size_t n, const char *sink);
int px_cli_admin_dlq_purge(px_cli_admin *c, const int64_t *ids, size_t n, const char *sink,
                           int64_t before_ms);

#endif
