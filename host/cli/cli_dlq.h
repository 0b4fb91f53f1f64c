/* `plexus dlq`: list, show, replay and purge dead letters, on the data directory of a stopped
 * host (offline) or through the admin API of a running one. */
#ifndef PX_CLI_DLQ_H
#define PX_CLI_DLQ_H

/* argv[0] is "dlq". Returns the process exit status. */
int px_cli_dlq(int argc, char **argv, const char *default_config);

#endif
