/* `plexus plugin`: tools for plugin authors. `plugin new` writes a compiling skeleton of a source
 * or sink (meson.build, Makefile, the C file, a test-kit scenario, a README) into a new folder;
 * `plugin test` runs one plugin file through the test kit (testkit.h) and prints its JSON
 * report. */
#ifndef PX_CLI_PLUGIN_H
#define PX_CLI_PLUGIN_H

/* argv[0] is "plugin"; argv and its strings are borrowed. Returns the process exit status:
 * 0 ok, 1 failure (test failed, folder exists...), 2 usage error. */
int px_cli_plugin(int argc, char **argv);

#endif
