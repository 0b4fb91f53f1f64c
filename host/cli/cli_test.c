/* `plexus test`: the pipeline tests of a configuration (pipeline_test.h), from its `tests:`
 * section and from test files, run as dry runs of the real router; printed like a test runner. */
#include "cli_route.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "config.h"
#include "err.h"
#include "pipeline_test.h"
#include "router.h"

#define EXIT_FAILED 1
#define EXIT_USAGE 2
#define EXIT_CONFIG 78

static const char *usage_test =
    "usage: plexus test [-c FILE] [TEST.yaml ...]\n"
    "\n"
    "Runs pipeline tests against configuration FILE (default etc/plexus.yaml): those in its\n"
    "tests: section, then those in each TEST.yaml (a file with a tests: list). Each test routes\n"
    "one event with the host's own router and mappings, as `plexus route` does (no plugin is\n"
    "loaded), and checks what came out: the pipelines that take it, the targets (sink, action,\n"
    "mapped with: equal to or including a value, or a mapping error at a field), or no route.\n"
    "A failed expectation shows what was expected, what came out and where they first differ.\n"
    "Exit status: 0 every test passed; 1 a test failed, or there was none; 2 usage error;\n"
    "78 invalid configuration or malformed test file (one 'file:line:column: message' line).\n";

static void print_report(const char *report)
{
    const char *line = report;
    while (line && *line) {
        const char *nl = strchr(line, '\n');
        int len = nl ? (int)(nl - line) : (int)strlen(line);
        printf("     %.*s\n", len, line);
        line = nl ? nl + 1 : NULL;
    }
}

int px_cli_test(int argc, char **argv, const char *default_config)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = default_config;
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': config = optarg; break;
        case 'h': fputs(usage_test, stdout); return 0;
        default: fputs(usage_test, stderr); return EXIT_USAGE;
        }
    }
    char err[1024];
    px_config *cfg = NULL;
    px_router *router = NULL;
    if (px_config_load(config, &cfg, err, sizeof(err)) < 0 ||
        px_router_create(cfg, &router, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        px_config_destroy(cfg);
        return EXIT_CONFIG;
    }
    long long now = px_now_ms();
    px_ptest_list tests = {0};
    int rc = 0;
    if (cfg->tests) {
        rc = px_ptest_parse(cfg->path, cfg->tests, cfg, now, &tests, err, sizeof(err));
    }
    for (int i = optind; i < argc && rc == 0; i++) {
        rc = px_ptest_load(argv[i], cfg, now, &tests, err, sizeof(err));
    }
    int exit_code = EXIT_CONFIG;
    if (rc < 0) {
        fprintf(stderr, "%s\n", err);
        goto done;
    }
    if (tests.n == 0) {
        fprintf(stderr, "plexus: no tests: %s has no tests: section and no TEST.yaml was given\n",
                cfg->path);
        exit_code = EXIT_FAILED;
        goto done;
    }
    size_t passed = 0, failed = 0;
    for (size_t i = 0; i < tests.n; i++) {
        const px_ptest *t = &tests.v[i];
        char *report = NULL;
        int bad = px_ptest_run(router, t, &report);
        printf("%s %s (%s:%d:%d)\n", bad ? "FAIL" : "ok  ", t->name, t->file, t->line, t->col);
        if (bad) {
            print_report(report);
            failed++;
        } else {
            passed++;
        }
        free(report);
    }
    printf("%zu passed, %zu failed\n", passed, failed);
    exit_code = failed ? EXIT_FAILED : 0;
done:
    px_ptest_list_clear(&tests);
    px_router_destroy(router);
    px_config_destroy(cfg);
    return exit_code;
}
