/* `plexus tap`: the running host's events and delivery outcomes as they happen, read from the
 * admin API's GET /admin/tap. CLI process only. */
#ifndef PX_CLI_TAP_H
#define PX_CLI_TAP_H

/* argv[0] is "tap". Returns the exit status: 0 the stream ended (its limit, the host stopping),
 * 1 the host could not be asked or refused, 2 usage, 78 invalid configuration. */
int px_cli_tap(int argc, char **argv, const char *default_config);

#endif
