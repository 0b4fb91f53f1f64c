/* `plexus route` and `plexus test`: routing dry runs of a configuration, with no plugin loaded
 * and nothing stored or delivered (route_explain.h, pipeline_test.h). CLI process only. */
#ifndef PX_CLI_ROUTE_H
#define PX_CLI_ROUTE_H

/* `plexus route` and `plexus test`; argv[0] is the command. Return the exit status: route 0
 * routed (every mapping applied), 1 no route or a mapping error, 2 usage, 78 invalid
 * configuration; test 0 all passed, 1 a test failed, 2 usage, 78 invalid configuration or test
 * file. */
int px_cli_route(int argc, char **argv, const char *default_config);
int px_cli_test(int argc, char **argv, const char *default_config);

#endif
