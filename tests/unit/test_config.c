/* Unit tests of host/core/config.c: a full valid configuration, defaults, every class of mistake
 * with its exact "file:line:column: message", ${VAR} expansion, plugin option validation, durations
 * and sizes, and secret handling. */
#include "../../host/core/config.c"

#include <fcntl.h>
#include <unistd.h>

#include "../../host/runtime/loader.h"
#include "test.h"

static char errbuf[1024];

/* Parses yaml as "test.yaml"; NULL on failure (message in errbuf). */
static px_config *parse(const char *yaml)
{
    px_config *cfg = NULL;
    errbuf[0] = '\0';
    if (px_config_parse("test.yaml", yaml, strlen(yaml), &cfg, errbuf, sizeof(errbuf)) != 0) {
        return NULL;
    }
    return cfg;
}

/* Parses yaml expecting a failure; returns the message (or a marker when it parsed). */
static const char *parse_err(const char *yaml)
{
    px_config *cfg = NULL;
    errbuf[0] = '\0';
    int rc = px_config_parse("test.yaml", yaml, strlen(yaml), &cfg, errbuf, sizeof(errbuf));
    if (rc == 0) {
        px_config_destroy(cfg);
        return "(parsed without error)";
    }
    if (rc != PX_ECONFIG || cfg != NULL || strchr(errbuf, '\n')) {
        return "(wrong return code, output or a multi-line message)";
    }
    return errbuf;
}

#define EXPECT_ERR(yaml, msg) PX_ASSERT_STR_EQ(parse_err(yaml), (msg))

/* A plugin's option table, as a plugin would declare it. */
static const px_option sqs_options[] = {
    {"queue_url", PX_OPT_STRING, PX_OPT_REQUIRED, NULL, "queue URL"},
    {"region", PX_OPT_STRING, 0, "eu-west-1", "AWS region"},
    {"wait", PX_OPT_DURATION, 0, "20s", "long-poll wait"},
    {"max_bytes", PX_OPT_SIZE, 0, "256KiB", "largest message"},
    {"batch", PX_OPT_INT, 0, "10", "messages per receive"},
    {"ratio", PX_OPT_NUMBER, 0, "0.5", "a fraction"},
    {"verbose", PX_OPT_BOOL, 0, "false", "log more"},
    {"tags", PX_OPT_LIST, 0, "[a, b]", "labels"},
    {"extra", PX_OPT_OBJECT, 0, NULL, "anything"},
    {"secret_key", PX_OPT_STRING, PX_OPT_SECRET, NULL, "AWS secret"},
    {"pin", PX_OPT_INT, PX_OPT_SECRET, NULL, "a secret number"},
    {NULL, 0, 0, NULL, NULL},
};

/* Parses yaml (which must be valid) and validates instance `name` against sqs_options. */
static int options_of(const char *yaml, const char *name, json_t **out)
{
    px_config *cfg = parse(yaml);
    if (!cfg) {
        return -1;
    }
    const px_instance_conf *inst = px_config_instance(cfg, name);
    int rc = inst ? px_config_options(cfg, inst, sqs_options, out, errbuf, sizeof(errbuf)) : -2;
    px_config_destroy(cfg);
    return rc;
}

/* ----------------------------------------------------------------------------------------- */

static void test_full_config(void)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/config/full.yaml", PX_TEST_DATA_DIR);
    px_config *cfg = NULL;
    int rc = px_config_load(path, &cfg, errbuf, sizeof(errbuf));
    if (rc != 0) {
        fprintf(stderr, "  %s\n", errbuf);
    }
    PX_ASSERT_INT_EQ(rc, 0);
    PX_ASSERT_STR_EQ(cfg->path, path);
    PX_ASSERT_INT_EQ(cfg->version, 1);
    PX_ASSERT_STR_EQ(cfg->data_dir, "/tmp/plexus-test");
    PX_ASSERT_INT_EQ(cfg->durability, PX_DURABILITY_FSYNC);
    PX_ASSERT_INT_EQ(cfg->dedupe_window_ms, 2 * 3600 * 1000);
    PX_ASSERT_INT_EQ(cfg->drain_timeout_ms, 1500);
    PX_ASSERT_STR_EQ(cfg->log_level, "debug");
    PX_ASSERT_STR_EQ(cfg->log_format, "json");
    PX_ASSERT_STR_EQ(cfg->http_listen, "[::1]:9090");
    PX_ASSERT_INT_EQ(cfg->http_max_body, 64 * 1024);
    PX_ASSERT_INT_EQ(cfg->http_max_conns, 16);
    PX_ASSERT_INT_EQ(cfg->http_request_timeout_ms, 12000);
    PX_ASSERT_STR_EQ(cfg->admin_listen, "127.0.0.1:0");
    PX_ASSERT_STR_EQ(cfg->admin_token, "s3cr3t-admin-token");
    PX_ASSERT_INT_EQ(cfg->nplugin_path, 2);
    /* A relative folder is resolved once, against the working directory. */
    char cwd[4096];
    PX_ASSERT(getcwd(cwd, sizeof(cwd)) != NULL);
    char *want = px_xasprintf("%s/build/plugins", strcmp(cwd, "/") == 0 ? "" : cwd);
    PX_ASSERT_STR_EQ(cfg->plugin_path[0], want);
    free(want);
    PX_ASSERT_STR_EQ(cfg->plugin_path[1], "/usr/lib/plexus/plugins");
    PX_ASSERT_STR_EQ(cfg->plugin_path_relative, "./build/plugins");
    PX_ASSERT_INT_EQ(cfg->plugin_path_relative_at, 0);
    PX_ASSERT_INT_EQ(cfg->plugin_trust, PX_TRUST_STRICT);

    PX_ASSERT_INT_EQ(cfg->ninstances, 2);
    const px_instance_conf *ez = px_config_instance(cfg, "ezzing");
    PX_ASSERT(ez != NULL);
    PX_ASSERT_STR_EQ(ez->plugin, "sqs");
    PX_ASSERT_INT_EQ(ez->line, 13);
    PX_ASSERT_INT_EQ(ez->col, 3);
    PX_ASSERT_INT_EQ(ez->max_inflight, 64);
    PX_ASSERT(ez->node != NULL);
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(ez->config, "wait")), "20s");
    const px_instance_conf *amo = px_config_instance(cfg, "amocrm");
    PX_ASSERT(amo != NULL);
    PX_ASSERT_INT_EQ(amo->max_inflight, 8);
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(amo->config, "subdomain")), "example");
    PX_ASSERT(px_config_instance(cfg, "nope") == NULL);

    PX_ASSERT_INT_EQ(cfg->npipelines, 2);
    const px_pipeline_conf *pl = &cfg->pipelines[0];
    PX_ASSERT_STR_EQ(pl->name, "leads");
    PX_ASSERT_STR_EQ(pl->from, "ezzing");
    PX_ASSERT_INT_EQ(pl->line, 23);
    PX_ASSERT_INT_EQ(pl->col, 5);
    PX_ASSERT_INT_EQ(pl->ntypes, 2);
    PX_ASSERT_STR_EQ(pl->types[0], "ezzing.opportunity_*");
    PX_ASSERT_STR_EQ(pl->types[1], "ezzing.lead_has_been_registered");
    PX_ASSERT_INT_EQ(pl->nconds, 4);
    PX_ASSERT_STR_EQ(pl->conds[0].pointer, "/data/status");
    PX_ASSERT_INT_EQ(pl->conds[0].op, PX_COND_EQUALS);
    PX_ASSERT_STR_EQ(json_string_value(pl->conds[0].value), "won");
    PX_ASSERT_INT_EQ(pl->conds[1].op, PX_COND_IN);
    PX_ASSERT(json_is_array(pl->conds[1].value));
    PX_ASSERT_STR_EQ(json_string_value(json_array_get(pl->conds[1].value, 1)), "PT");
    PX_ASSERT_INT_EQ(pl->conds[2].op, PX_COND_EXISTS);
    PX_ASSERT(json_is_true(pl->conds[2].value));
    PX_ASSERT_STR_EQ(pl->conds[3].pointer, "/data/kind");
    PX_ASSERT_INT_EQ(pl->conds[3].op, PX_COND_EQUALS);
    PX_ASSERT_STR_EQ(json_string_value(pl->conds[3].value), "lead");
    PX_ASSERT_INT_EQ(pl->nto, 2);
    PX_ASSERT_STR_EQ(pl->to[0].sink, "amocrm");
    PX_ASSERT_STR_EQ(pl->to[0].action, "create_lead");
    PX_ASSERT_INT_EQ(pl->to[0].line, 33);
    PX_ASSERT_INT_EQ(pl->to[0].col, 9);
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(pl->to[0].with, "name")),
                     "{{/data/name}}");
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(pl->to[0].with, "price")), 10);
    PX_ASSERT_STR_EQ(pl->to[1].action, "");
    PX_ASSERT(json_is_object(pl->to[1].with) && json_object_size(pl->to[1].with) == 0);
    PX_ASSERT_INT_EQ(pl->retry.attempts, 3);
    PX_ASSERT_INT_EQ(pl->retry.backoff_ms, 2000);
    PX_ASSERT_INT_EQ(pl->retry.max_backoff_ms, 60000);
    PX_ASSERT(pl->retry.jitter == 0.5);
    PX_ASSERT_INT_EQ(pl->retry.timeout_ms, 5000);

    pl = &cfg->pipelines[1];
    PX_ASSERT_STR_EQ(pl->from, "*");
    PX_ASSERT_INT_EQ(pl->ntypes, 0);
    PX_ASSERT_INT_EQ(pl->nconds, 0);
    PX_ASSERT_INT_EQ(pl->nto, 1);
    PX_ASSERT_STR_EQ(pl->to[0].sink, "amocrm");
    PX_ASSERT_INT_EQ(pl->retry.attempts, 10);
    px_config_destroy(cfg);
}

static void test_defaults(void)
{
    px_config *cfg = parse("version: 1\n");
    PX_ASSERT(cfg != NULL);
    PX_ASSERT_STR_EQ(cfg->path, "test.yaml");
    PX_ASSERT_STR_EQ(cfg->data_dir, "./var");
    PX_ASSERT_INT_EQ(cfg->durability, PX_DURABILITY_NORMAL);
    PX_ASSERT_INT_EQ(cfg->dedupe_window_ms, 24ll * 3600 * 1000);
    PX_ASSERT_INT_EQ(cfg->drain_timeout_ms, 10000);
    PX_ASSERT_STR_EQ(cfg->log_level, "info");
    PX_ASSERT_STR_EQ(cfg->log_format, "auto");
    PX_ASSERT(cfg->http_listen == NULL);
    PX_ASSERT_INT_EQ(cfg->http_max_body, 1024 * 1024);
    PX_ASSERT_INT_EQ(cfg->http_max_conns, 1024);
    PX_ASSERT_INT_EQ(cfg->http_request_timeout_ms, 30000);
    PX_ASSERT_STR_EQ(cfg->admin_listen, "127.0.0.1:8081");
    PX_ASSERT(cfg->admin_token == NULL);
    PX_ASSERT_INT_EQ(cfg->nplugin_path, 0);
    PX_ASSERT(cfg->plugin_path == NULL);
    PX_ASSERT_INT_EQ(cfg->ninstances, 0);
    PX_ASSERT_INT_EQ(cfg->npipelines, 0);
    px_config_destroy(cfg);

    /* listeners switched off, a single plugin_path string, a pipeline with defaults */
    cfg = parse("version: 1\n"
                "host:\n"
                "  http: { listen: null }\n"
                "  admin: { listen: \"\", token: \"\" }\n"
                "  plugin_path: ./plugins\n"
                "plugins:\n"
                "  src: { plugin: webhook }\n"
                "pipelines:\n"
                "  - { name: p, from: src, to: { sink: src, with: ~ } }\n");
    if (!cfg) {
        fprintf(stderr, "  %s\n", errbuf);
    }
    PX_ASSERT(cfg != NULL);
    PX_ASSERT(cfg->http_listen == NULL);
    PX_ASSERT(cfg->admin_listen == NULL);
    PX_ASSERT(cfg->admin_token == NULL);
    PX_ASSERT_INT_EQ(cfg->nplugin_path, 1);
    PX_ASSERT(cfg->plugin_path[0][0] == '/');
    PX_ASSERT(strcmp(cfg->plugin_path[0] + strlen(cfg->plugin_path[0]) - 8, "/plugins") == 0);
    PX_ASSERT_STR_EQ(cfg->plugin_path_relative, "./plugins");
    PX_ASSERT_INT_EQ(cfg->plugin_path_line, 5);
    PX_ASSERT(cfg->instances[0].node == NULL);
    PX_ASSERT(json_is_object(cfg->instances[0].config));
    const px_retry_policy *r = &cfg->pipelines[0].retry;
    PX_ASSERT_INT_EQ(r->attempts, 10);
    PX_ASSERT_INT_EQ(r->backoff_ms, 1000);
    PX_ASSERT_INT_EQ(r->max_backoff_ms, 600000);
    PX_ASSERT(r->jitter == 0.2);
    PX_ASSERT_INT_EQ(r->timeout_ms, 30000);
    PX_ASSERT(json_is_object(cfg->pipelines[0].to[0].with));
    px_config_destroy(cfg);
}

static void test_scalar_typing(void)
{
    px_config *cfg = parse("version: 1\n"
                           "plugins:\n"
                           "  a:\n"
                           "    plugin: x\n"
                           "    config:\n"
                           "      t: true\n"
                           "      f: False\n"
                           "      n1: null\n"
                           "      n2: ~\n"
                           "      n3:\n"
                           "      i: -42\n"
                           "      h: 0x1F\n"
                           "      o: 0o17\n"
                           "      fl: 1.5e3\n"
                           "      s1: \"42\"\n"
                           "      s2: 'true'\n"
                           "      s3: yes\n"
                           "      s4: 1.2.3\n"
                           "      big: 99999999999999999999\n");
    PX_ASSERT(cfg != NULL);
    const json_t *c = cfg->instances[0].config;
    PX_ASSERT(json_is_true(json_object_get(c, "t")));
    PX_ASSERT(json_is_false(json_object_get(c, "f")));
    PX_ASSERT(json_is_null(json_object_get(c, "n1")));
    PX_ASSERT(json_is_null(json_object_get(c, "n2")));
    PX_ASSERT(json_is_null(json_object_get(c, "n3")));
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(c, "i")), -42);
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(c, "h")), 31);
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(c, "o")), 15);
    PX_ASSERT(json_is_real(json_object_get(c, "fl")));
    PX_ASSERT(json_real_value(json_object_get(c, "fl")) == 1500.0);
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(c, "s1")), "42");
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(c, "s2")), "true");
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(c, "s3")), "yes");
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(c, "s4")), "1.2.3");
    PX_ASSERT(json_is_real(json_object_get(c, "big")));
    px_config_destroy(cfg);
}

/* --- YAML syntax ------------------------------------------------------------------------- */

static void test_err_syntax(void)
{
    /* over-indented key: libyaml sees a plain scalar continued, then a stray ':' */
    EXPECT_ERR("version: 1\nhost:\n  data_dir: x\n   durability: fsync\n",
               "test.yaml:4:14: mapping values are not allowed here; check the indentation of "
               "this line, or quote a value that contains \": \"");
    /* under-indented key */
    EXPECT_ERR("version: 1\nhost:\n  data_dir: x\n durability: fsync\n",
               "test.yaml:4:2: did not find expected key while parsing a block mapping that "
               "starts at line 1, column 1; check the indentation");
    EXPECT_ERR("version: 1\nhost:\n\tdata_dir: x\n",
               "test.yaml:3:1: tab character in indentation; indent with spaces");
    EXPECT_ERR("version: 1\nhost:\n  data_dir: \"./var\n  durability: fsync\n",
               "test.yaml:3:13: quoted string is never closed (found unexpected end of stream at "
               "line 5, column 1)");
    EXPECT_ERR("version: 1\nhost: { data_dir: x\n",
               "test.yaml:3:1: did not find expected ',' or '}' while parsing a flow mapping that "
               "starts at line 2, column 7");
    EXPECT_ERR("version: 1\npipelines:\n  - name: a\n    from: *\n",
               "test.yaml:4:12: did not find expected alphabetic or numeric character while "
               "scanning an alias; quote a value that starts with \"*\" (e.g. \"*\")");
    EXPECT_ERR("version: 1\nhost: {}\nhost: {}\n",
               "test.yaml:3:1: duplicate key \"host\" (first at line 2, column 1)");
    EXPECT_ERR("version: 1\n---\nversion: 1\n",
               "test.yaml:2:1: only one YAML document is allowed");
    EXPECT_ERR("", "test.yaml:1:1: the configuration is empty; it needs at least \"version: 1\"");
    EXPECT_ERR("# nothing\n",
               "test.yaml:1:1: the configuration is empty; it needs at least \"version: 1\"");
    EXPECT_ERR("- version: 1\n", "test.yaml:1:1: expected a mapping at the top level (version, "
                                 "host, plugins, pipelines), got a list");
    EXPECT_ERR("version: 1\nhost: { data_dir: \xff }\n",
               "test.yaml:2:19: invalid leading UTF-8 octet; the file must be UTF-8 text");
    EXPECT_ERR("version: 1\n? [a]\n: 1\n",
               "test.yaml:2:3: mapping keys must be plain strings, not lists");
    EXPECT_ERR("version: 1\nhost: *nope\n",
               "test.yaml:2:7: alias \"*nope\" does not name an anchor defined before it");
}

/* --- Schema ------------------------------------------------------------------------------ */

static void test_err_top_level(void)
{
    EXPECT_ERR("version: 1\npipline: []\n",
               "test.yaml:2:1: unknown key \"pipline\" in the top level, did you mean "
               "\"pipelines\"?");
    EXPECT_ERR("version: 1\nplug: {}\n",
               "test.yaml:2:1: unknown key \"plug\" in the top level, did you mean \"plugins\"?");
    EXPECT_ERR("version: 1\nzzz: 1\n", "test.yaml:2:1: unknown key \"zzz\" in the top level");
    EXPECT_ERR("version: 1\ntest: []\n",
               "test.yaml:2:1: unknown key \"test\" in the top level, did you mean \"tests\"?");
    /* tests: is kept for `plexus test`, whatever it holds; run reads none of it */
    px_config *cfg = parse("version: 1\ntests:\n  - name: t\n");
    PX_ASSERT(cfg != NULL);
    PX_ASSERT(cfg->tests != NULL);
    px_config_destroy(cfg);
    EXPECT_ERR("host: {}\n", "test.yaml:1:1: missing required key \"version\" in the top level "
                             "(add \"version: 1\")");
    EXPECT_ERR("version: 2\n",
               "test.yaml:1:10: unsupported version \"2\"; this host reads version 1");
    EXPECT_ERR("version: \"1\"\n",
               "test.yaml:1:10: unsupported version \"1\"; this host reads version 1");
    EXPECT_ERR("version: 1\npipelines: { name: x }\n",
               "test.yaml:2:12: pipelines: expected a list of pipelines (\"- name: ...\"), got a "
               "mapping");
}

/* plugin_trust parses; a relative folder is made absolute lexically, "." and ".." removed. */
static void test_plugin_trust_and_absolute_paths(void)
{
    px_config *cfg = parse("version: 1\nhost:\n  plugin_trust: permissive\n"
                           "  plugin_path: [/opt/p, /x/./y//z/../w]\n");
    PX_ASSERT(cfg != NULL);
    PX_ASSERT_INT_EQ(cfg->plugin_trust, PX_TRUST_PERMISSIVE);
    PX_ASSERT_STR_EQ(cfg->plugin_path[1], "/x/./y//z/../w"); /* absolute: kept as written */
    PX_ASSERT(cfg->plugin_path_relative == NULL);
    px_config_destroy(cfg);

    char *p = px_path_absolute("/a/./b//c/../d/");
    PX_ASSERT_STR_EQ(p, "/a/b/d");
    free(p);
    p = px_path_absolute("/../..");
    PX_ASSERT_STR_EQ(p, "/");
    free(p);
    char cwd[4096];
    PX_ASSERT(getcwd(cwd, sizeof(cwd)) != NULL);
    p = px_path_absolute("x/../y/.");
    char *want = px_xasprintf("%s/y", strcmp(cwd, "/") == 0 ? "" : cwd);
    PX_ASSERT_STR_EQ(p, want);
    free(p);
    free(want);
}

static void test_err_host(void)
{
    EXPECT_ERR("version: 1\nhost:\n  dat_dir: x\n",
               "test.yaml:3:3: unknown key \"dat_dir\" in host, did you mean \"data_dir\"?");
    EXPECT_ERR("version: 1\nhost:\n  http: { max_bdy: 1MiB }\n",
               "test.yaml:3:11: unknown key \"max_bdy\" in host.http, did you mean \"max_body\"?");
    EXPECT_ERR("version: 1\nhost:\n  http: { max_body: lots }\n",
               "test.yaml:3:21: host.http.max_body: expected a size like 1MiB, 64KiB or 512, got "
               "\"lots\"");
    EXPECT_ERR("version: 1\nhost:\n  http: { max_connections: 0 }\n",
               "test.yaml:3:28: host.http.max_connections: expected an integer from 1 to "
               "4294967295, got \"0\"");
    EXPECT_ERR("version: 1\nhost:\n  http: { request_timeout: 0 }\n",
               "test.yaml:3:28: host.http.request_timeout: must be more than 0");
    EXPECT_ERR("version: 1\nhost:\n  http: { request_timeout: soon }\n",
               "test.yaml:3:28: host.http.request_timeout: expected a duration like 250ms, 30s, "
               "5m, 1h or 1d, got \"soon\"");
    EXPECT_ERR("version: 1\nhost:\n  http: { listen: localhost:80 }\n",
               "test.yaml:3:19: host.http.listen: expected an address like 127.0.0.1:8080 or "
               "[::1]:8080, got \"localhost:80\"");
    EXPECT_ERR("version: 1\nhost:\n  http: { listen: \"::1:80\" }\n",
               "test.yaml:3:19: host.http.listen: expected an address like 127.0.0.1:8080 or "
               "[::1]:8080, got \"::1:80\"");
    EXPECT_ERR("version: 1\nhost:\n  http: { listen: \"127.0.0.1:65536\" }\n",
               "test.yaml:3:19: host.http.listen: expected an address like 127.0.0.1:8080 or "
               "[::1]:8080, got \"127.0.0.1:65536\"");
    EXPECT_ERR("version: 1\nhost:\n  durability: fsnyc\n",
               "test.yaml:3:15: host.durability: expected normal or fsync, got \"fsnyc\", did you "
               "mean \"fsync\"?");
    EXPECT_ERR("version: 1\nhost:\n  log: { level: verbose }\n",
               "test.yaml:3:17: host.log.level: expected error, warn, info or debug, got "
               "\"verbose\"");
    EXPECT_ERR("version: 1\nhost:\n  drain_timeout: soon\n",
               "test.yaml:3:18: host.drain_timeout: expected a duration like 250ms, 30s, 5m, 1h "
               "or 1d, got \"soon\"");
    EXPECT_ERR("version: 1\nhost:\n  plugin_trust: lax\n",
               "test.yaml:3:17: host.plugin_trust: expected strict or permissive, got \"lax\"");
    EXPECT_ERR("version: 1\nhost:\n  plugin_path: [a, {b: c}]\n",
               "test.yaml:3:20: host.plugin_path: expected a string or a list of strings, got a "
               "mapping");
    EXPECT_ERR("version: 1\nhost: [1]\n", "test.yaml:2:7: host: expected a mapping, got a list");
    /* the admin token is secret: its value is never echoed */
    EXPECT_ERR("version: 1\nhost:\n  admin: { token: [hunter2] }\n",
               "test.yaml:3:19: host.admin.token: expected a string, got something else (value "
               "not shown: secret)");
}

static void test_err_instances(void)
{
    EXPECT_ERR("version: 1\nplugins:\n  amo: { plugn: amocrm }\n",
               "test.yaml:3:10: unknown key \"plugn\" in plugin instance \"amo\", did you mean "
               "\"plugin\"?");
    EXPECT_ERR("version: 1\nplugins:\n  amo:\n    config: {}\n",
               "test.yaml:3:3: missing required key \"plugin\" in plugin instance \"amo\"");
    EXPECT_ERR("version: 1\nplugins:\n  amo:\n",
               "test.yaml:3:3: plugin instance \"amo\": expected a mapping like { plugin: NAME }, "
               "got an empty value");
    EXPECT_ERR("version: 1\nplugins:\n  amo: { plugin: ../../etc/evil }\n",
               "test.yaml:3:18: plugin instance \"amo\": plugin name \"../../etc/evil\" may only "
               "contain letters, digits, \"_\", \"-\" and \".\" (not first)");
    EXPECT_ERR("version: 1\nplugins:\n  \"a b\": { plugin: x }\n",
               "test.yaml:3:3: plugin instance name \"a b\" may only contain letters, digits, "
               "\"_\", \"-\" and \".\" (not first)");
    EXPECT_ERR("version: 1\nplugins:\n  amo: { plugin: x, max_inflight: many }\n",
               "test.yaml:3:35: plugin instance \"amo\": max_inflight: expected an integer from 1 "
               "to 1000000, got \"many\"");
    EXPECT_ERR("version: 1\nplugins:\n  amo: { plugin: x, config: [1] }\n",
               "test.yaml:3:29: plugin instance \"amo\": config: expected a mapping, got a list");
}

static const char *const with_instances = "version: 1\n"
                                          "plugins:\n"
                                          "  ezzing: { plugin: sqs }\n"
                                          "  amocrm: { plugin: amocrm }\n"
                                          "pipelines:\n";

static const char *pipeline_err(const char *tail)
{
    static char yaml[2048];
    snprintf(yaml, sizeof(yaml), "%s%s", with_instances, tail);
    return parse_err(yaml);
}

static void test_err_pipelines(void)
{
    PX_ASSERT_STR_EQ(pipeline_err("  - name: leads\n    from: ezzing\n    to: [{ sink: amo }]\n"),
                     "test.yaml:8:18: pipeline \"leads\": sink \"amo\" is not a declared plugin "
                     "instance, did you mean \"amocrm\"?");
    PX_ASSERT_STR_EQ(pipeline_err("  - name: leads\n    from: ezing\n    to: { sink: amocrm }\n"),
                     "test.yaml:7:11: pipeline \"leads\": from \"ezing\" is not a declared plugin "
                     "instance, did you mean \"ezzing\"?");
    PX_ASSERT_STR_EQ(pipeline_err("  - name: leads\n    from: other\n    to: { sink: amocrm }\n"),
                     "test.yaml:7:11: pipeline \"leads\": from \"other\" is not a declared plugin "
                     "instance");
    PX_ASSERT_STR_EQ(pipeline_err("  - { name: leads, from: ezzing, to: { sink: amocrm } }\n"
                                  "  - { name: leads, from: ezzing, to: { sink: amocrm } }\n"),
                     "test.yaml:7:13: duplicate pipeline name \"leads\" (first at line 6, column "
                     "5)");
    PX_ASSERT_STR_EQ(pipeline_err("  - name: leads\n    to: { sink: amocrm }\n"),
                     "test.yaml:6:5: missing required key \"from\" in pipeline \"leads\"");
    PX_ASSERT_STR_EQ(pipeline_err("  - from: ezzing\n    to: { sink: amocrm }\n"),
                     "test.yaml:6:5: missing required key \"name\" in pipeline #1");
    PX_ASSERT_STR_EQ(pipeline_err("  - name: leads\n    from: ezzing\n"),
                     "test.yaml:6:5: missing required key \"to\" in pipeline \"leads\"");
    PX_ASSERT_STR_EQ(pipeline_err("  - name: leads\n    from: ezzing\n    to:\n"
                                  "      - action: x\n"),
                     "test.yaml:9:9: missing required key \"sink\" in target 1 of pipeline "
                     "\"leads\"");
    PX_ASSERT_STR_EQ(pipeline_err("  - name: leads\n    form: ezzing\n"),
                     "test.yaml:7:5: unknown key \"form\" in pipeline \"leads\", did you mean "
                     "\"from\"?");
    PX_ASSERT_STR_EQ(pipeline_err("  - name: leads\n    from: ezzing\n    to: { sink: amocrm }\n"
                                  "    retry: { atempts: 3 }\n"),
                     "test.yaml:9:14: unknown key \"atempts\" in the \"retry\" of pipeline "
                     "\"leads\", did you mean \"attempts\"?");
    PX_ASSERT_STR_EQ(pipeline_err("  - name: leads\n    from: ezzing\n    to: { sink: amocrm }\n"
                                  "    retry: { backoff: 2 minutes }\n"),
                     "test.yaml:9:23: pipeline \"leads\": retry.backoff: expected a duration like "
                     "250ms, 30s, 5m, 1h or 1d, got \"2 minutes\"");
    PX_ASSERT_STR_EQ(pipeline_err("  - name: leads\n    from: ezzing\n    to: { sink: amocrm }\n"
                                  "    retry: { jitter: 1.5 }\n"),
                     "test.yaml:9:22: pipeline \"leads\": retry.jitter: expected a number from 0 "
                     "to 1, got \"1.5\"");
    PX_ASSERT_STR_EQ(pipeline_err("  - name: leads\n    from: ezzing\n    to: { sink: amocrm }\n"
                                  "    retry: { backoff: 5m, max_backoff: 1m }\n"),
                     "test.yaml:9:23: pipeline \"leads\": retry.backoff (300000 ms) is longer than "
                     "retry.max_backoff (60000 ms)");
    PX_ASSERT_STR_EQ(pipeline_err("  - name: leads\n    from: ezzing\n    to: []\n"),
                     "test.yaml:8:9: pipeline \"leads\": to: expected at least one target");
    PX_ASSERT_STR_EQ(pipeline_err("  - name: leads\n    from: ezzing\n    to: { sink: amocrm }\n"
                                  "    when:\n      match:\n        data/status: won\n"),
                     "test.yaml:11:9: pipeline \"leads\": match pointer \"data/status\" must start "
                     "with \"/\"");
    PX_ASSERT_STR_EQ(pipeline_err("  - name: leads\n    from: ezzing\n    to: { sink: amocrm }\n"
                                  "    when:\n      match:\n        /a~2: won\n"),
                     "test.yaml:11:9: pipeline \"leads\": match pointer \"/a~2\" has a \"~\" not "
                     "followed by 0 or 1 (write ~0 for \"~\" and ~1 for \"/\")");
    PX_ASSERT_STR_EQ(pipeline_err("  - name: leads\n    from: ezzing\n    to: { sink: amocrm }\n"
                                  "    when:\n      match:\n        /a: { in: ES }\n"),
                     "test.yaml:11:19: pipeline \"leads\": \"in\" on \"/a\" expects a list, got "
                     "\"ES\"");
    PX_ASSERT_STR_EQ(pipeline_err("  - name: leads\n    from: ezzing\n    to: { sink: amocrm }\n"
                                  "    when:\n      match:\n        /a: { exists: maybe }\n"),
                     "test.yaml:11:23: pipeline \"leads\": \"exists\" on \"/a\" expects true or "
                     "false, got \"maybe\"");
    PX_ASSERT_STR_EQ(pipeline_err("  - name: leads\n    from: ezzing\n    to: { sink: amocrm }\n"
                                  "    when:\n      match:\n        /a: { equal: 1 }\n"),
                     "test.yaml:11:15: unknown key \"equal\" in the condition on \"/a\" of "
                     "pipeline \"leads\", did you mean \"equals\"?");
    PX_ASSERT_STR_EQ(pipeline_err("  - name: leads\n    from: ezzing\n    to: { sink: amocrm }\n"
                                  "    when:\n      match:\n        /a: { equals: 1, in: [1] }\n"),
                     "test.yaml:11:9: pipeline \"leads\": the condition on \"/a\" needs exactly "
                     "one of equals, in or exists");
    PX_ASSERT_STR_EQ(pipeline_err("  - name: leads\n    from: ezzing\n    to: { sink: amocrm }\n"
                                  "    when: { types: x }\n"),
                     "test.yaml:9:13: unknown key \"types\" in the \"when\" of pipeline \"leads\", "
                     "did you mean \"type\"?");
    /* no instances at all */
    EXPECT_ERR("version: 1\npipelines:\n  - { name: p, from: src, to: { sink: x } }\n",
               "test.yaml:3:22: pipeline \"p\": from \"src\" is not a declared plugin instance "
               "(nothing is declared under \"plugins\")");
}

/* --- Environment ------------------------------------------------------------------------- */

static void test_env_expansion(void)
{
    setenv("PX_TEST_DIR", "/srv/plexus", 1);
    setenv("PX_TEST_PORT", "9000", 1);
    setenv("PX_TEST_EMPTY", "", 1);
    setenv("PX_TEST_TOKEN", "tok-12345", 1);
    unsetenv("PX_TEST_UNSET");
    px_config *cfg = parse("version: 1\n"
                           "host:\n"
                           "  data_dir: ${PX_TEST_DIR}/data\n"
                           "  http: { listen: \"127.0.0.1:${PX_TEST_PORT}\" }\n"
                           "  admin:\n"
                           "    token: ${PX_TEST_TOKEN}\n"
                           "  log: { level: \"${PX_TEST_UNSET:-debug}\" }\n"
                           "plugins:\n"
                           "  a:\n"
                           "    plugin: x\n"
                           "    config:\n"
                           "      port: ${PX_TEST_PORT}\n"
                           "      quoted_port: \"${PX_TEST_PORT}\"\n"
                           "      price: $$5 and $${NOT_A_VAR} and $x\n"
                           "      empty_default: ${PX_TEST_EMPTY:-fallback}\n"
                           "      empty: ${PX_TEST_EMPTY}\n"
                           "      unset_empty_default: ${PX_TEST_UNSET:-}\n"
                           "      flag: ${PX_TEST_UNSET:-true}\n"
                           "      two: ${PX_TEST_DIR}:${PX_TEST_PORT}\n"
                           "      ptr: \"{{/$event/type}}\"\n"
                           "      ${PX_TEST_UNSET:-keyed}: 1\n");
    if (!cfg) {
        fprintf(stderr, "  %s\n", errbuf);
    }
    PX_ASSERT(cfg != NULL);
    PX_ASSERT_STR_EQ(cfg->data_dir, "/srv/plexus/data");
    PX_ASSERT_STR_EQ(cfg->http_listen, "127.0.0.1:9000");
    PX_ASSERT_STR_EQ(cfg->admin_token, "tok-12345");
    PX_ASSERT_STR_EQ(cfg->log_level, "debug");
    const json_t *c = cfg->instances[0].config;
    PX_ASSERT(json_is_integer(json_object_get(c, "port")));
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(c, "port")), 9000);
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(c, "quoted_port")), "9000");
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(c, "price")),
                     "$5 and ${NOT_A_VAR} and $x");
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(c, "empty_default")), "fallback");
    PX_ASSERT(json_is_null(json_object_get(c, "empty")));
    PX_ASSERT(json_is_null(json_object_get(c, "unset_empty_default")));
    PX_ASSERT(json_is_true(json_object_get(c, "flag")));
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(c, "two")), "/srv/plexus:9000");
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(c, "ptr")), "{{/$event/type}}");
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(c, "keyed")), 1);
    px_config_destroy(cfg);
}

static void test_err_env(void)
{
    unsetenv("EZZING_QUEUE_URL");
    EXPECT_ERR("version: 1\n"
               "plugins:\n"
               "  ezzing: { plugin: sqs, config: { queue_url: \"${EZZING_QUEUE_URL}\" } }\n",
               "test.yaml:3:47: environment variable \"EZZING_QUEUE_URL\" is not set and has no "
               "default");
    EXPECT_ERR("version: 1\nhost:\n  data_dir: x/${EZZING_QUEUE_URL}/y\n",
               "test.yaml:3:13: environment variable \"EZZING_QUEUE_URL\" is not set and has no "
               "default");
    EXPECT_ERR("version: 1\nhost:\n  data_dir: ${OOPS\n",
               "test.yaml:3:13: unterminated \"${\" (missing \"}\"); write \"$$\" for a literal "
               "\"$\"");
    EXPECT_ERR("version: 1\nhost:\n  data_dir: ${9X}\n",
               "test.yaml:3:13: invalid environment variable name \"9X\" in \"${...}\"");
    EXPECT_ERR("version: 1\nhost:\n  data_dir: ${}\n",
               "test.yaml:3:13: invalid environment variable name \"\" in \"${...}\"");
    /* YAML itself refuses "{" unquoted inside a flow mapping; say how to write it */
    EXPECT_ERR("version: 1\nhost: { data_dir: ${PX_TEST_DIR} }\n",
               "test.yaml:2:19: \"${...}\" inside { } or [ ] must be quoted, e.g. key: "
               "\"${VAR}\"");
    /* after expansion a plain scalar is typed again */
    setenv("PX_TEST_BODY", "huge", 1);
    EXPECT_ERR("version: 1\nhost:\n  http:\n    max_body: ${PX_TEST_BODY}\n",
               "test.yaml:4:15: host.http.max_body: expected a size like 1MiB, 64KiB or 512, got "
               "\"huge\"");
}

/* --- Anchors, aliases, merge keys --------------------------------------------------------- */

static void test_aliases(void)
{
    px_config *cfg = parse("version: 1\n"
                           "plugins:\n"
                           "  a: &base { plugin: x, max_inflight: 3 }\n"
                           "  b:\n"
                           "    <<: *base\n"
                           "    max_inflight: 5\n"
                           "  c: *base\n"
                           "pipelines:\n"
                           "  - name: p1\n"
                           "    from: a\n"
                           "    to: { sink: b }\n"
                           "    retry: &r { attempts: 4 }\n"
                           "  - name: p2\n"
                           "    from: a\n"
                           "    to: { sink: c }\n"
                           "    retry: *r\n");
    if (!cfg) {
        fprintf(stderr, "  %s\n", errbuf);
    }
    PX_ASSERT(cfg != NULL);
    PX_ASSERT_INT_EQ(cfg->ninstances, 3);
    PX_ASSERT_STR_EQ(px_config_instance(cfg, "b")->plugin, "x");
    PX_ASSERT_INT_EQ(px_config_instance(cfg, "b")->max_inflight, 5);
    PX_ASSERT_STR_EQ(px_config_instance(cfg, "c")->plugin, "x");
    PX_ASSERT_INT_EQ(px_config_instance(cfg, "c")->max_inflight, 3);
    PX_ASSERT_INT_EQ(cfg->pipelines[1].retry.attempts, 4);
    px_config_destroy(cfg);

    /* an alias bomb stops at the node limit instead of eating memory */
    char bomb[2048] = "version: 1\nx0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n";
    for (int k = 1; k <= 9; k++) {
        size_t used = strlen(bomb);
        snprintf(bomb + used, sizeof(bomb) - used, "x%d: &a%d [*a%d, *a%d, *a%d, *a%d, *a%d, *a%d, "
                 "*a%d, *a%d, *a%d, *a%d]\n", k, k, k - 1, k - 1, k - 1, k - 1, k - 1, k - 1,
                 k - 1, k - 1, k - 1, k - 1);
    }
    PX_ASSERT_STR_HAS(parse_err(bomb), "makes the document too large");
}

/* --- Plugin options ---------------------------------------------------------------------- */

static void test_options_defaults(void)
{
    json_t *o = NULL;
    int rc = options_of("version: 1\n"
                        "plugins:\n"
                        "  ezzing:\n"
                        "    plugin: sqs\n"
                        "    config:\n"
                        "      queue_url: http://127.0.0.1:9324/q\n"
                        "      wait: 1.5s\n"
                        "      max_bytes: 1MiB\n"
                        "      ratio: 2\n"
                        "      tags: solo\n"
                        "      extra: { deep: [1, { x: y }] }\n",
                        "ezzing", &o);
    if (rc != 0) {
        fprintf(stderr, "  %s\n", errbuf);
    }
    PX_ASSERT_INT_EQ(rc, 0);
    PX_ASSERT_INT_EQ(json_object_size(o), 11);
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(o, "queue_url")), "http://127.0.0.1:9324/q");
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(o, "region")), "eu-west-1");
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(o, "wait")), 1500);
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(o, "max_bytes")), 1048576);
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(o, "batch")), 10);
    PX_ASSERT(json_is_integer(json_object_get(o, "ratio")));
    PX_ASSERT(json_is_false(json_object_get(o, "verbose")));
    PX_ASSERT(json_is_array(json_object_get(o, "tags")));
    PX_ASSERT_INT_EQ(json_array_size(json_object_get(o, "tags")), 1);
    PX_ASSERT_STR_EQ(json_string_value(json_array_get(json_object_get(o, "tags"), 0)), "solo");
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(
                         json_array_get(json_object_get(json_object_get(o, "extra"), "deep"), 1),
                         "x")),
                     "y");
    PX_ASSERT(json_is_null(json_object_get(o, "secret_key")));
    PX_ASSERT(json_is_null(json_object_get(o, "pin")));
    json_decref(o);

    /* every default, and durations/sizes as integers */
    o = NULL;
    rc = options_of("version: 1\nplugins:\n  e: { plugin: sqs, config: { queue_url: q, wait: 250,"
                    " max_bytes: 512 } }\n", "e", &o);
    PX_ASSERT_INT_EQ(rc, 0);
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(o, "wait")), 250);
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(o, "max_bytes")), 512);
    PX_ASSERT(json_real_value(json_object_get(o, "ratio")) == 0.5);
    PX_ASSERT_INT_EQ(json_array_size(json_object_get(o, "tags")), 2);
    json_decref(o);

    o = NULL;
    rc = options_of("version: 1\nplugins:\n  e: { plugin: sqs, config: { queue_url: q } }\n", "e",
                    &o);
    PX_ASSERT_INT_EQ(rc, 0);
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(o, "wait")), 20000);
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(o, "max_bytes")), 256 * 1024);
    json_decref(o);

    /* a config built without YAML nodes is validated from its JSON */
    px_config *cfg = parse("version: 1\nplugins:\n  e: { plugin: sqs }\n");
    PX_ASSERT(cfg != NULL);
    px_instance_conf *inst = &cfg->instances[0];
    json_object_set_new(inst->config, "queue_url", json_string("from-json"));
    json_object_set_new(inst->config, "batch", json_integer(3));
    o = NULL;
    rc = px_config_options(cfg, inst, sqs_options, &o, errbuf, sizeof(errbuf));
    px_config_destroy(cfg);
    PX_ASSERT_INT_EQ(rc, 0);
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(o, "queue_url")), "from-json");
    PX_ASSERT_INT_EQ(json_integer_value(json_object_get(o, "batch")), 3);
    json_decref(o);
}

static void test_err_options(void)
{
    json_t *o = NULL;
    PX_ASSERT_INT_EQ(options_of("version: 1\n"
                                "plugins:\n"
                                "  ezzing:\n"
                                "    plugin: sqs\n"
                                "    config:\n"
                                "      region: eu-west-3\n",
                                "ezzing", &o),
                     PX_ECONFIG);
    PX_ASSERT_STR_EQ(errbuf, "test.yaml:5:5: plugin instance \"ezzing\": missing required option "
                             "\"queue_url\" of plugin \"sqs\"");
    PX_ASSERT_INT_EQ(options_of("version: 1\nplugins:\n  ezzing: { plugin: sqs }\n", "ezzing", &o),
                     PX_ECONFIG);
    PX_ASSERT_STR_EQ(errbuf, "test.yaml:3:3: plugin instance \"ezzing\": missing required option "
                             "\"queue_url\" of plugin \"sqs\"");
    PX_ASSERT_INT_EQ(options_of("version: 1\nplugins:\n  ezzing: { plugin: sqs, config: { "
                                "queue_url: ~ } }\n", "ezzing", &o),
                     PX_ECONFIG);
    PX_ASSERT_STR_EQ(errbuf, "test.yaml:3:47: plugin instance \"ezzing\": missing required option "
                             "\"queue_url\" of plugin \"sqs\"");
    PX_ASSERT_INT_EQ(options_of("version: 1\n"
                                "plugins:\n"
                                "  ezzing:\n"
                                "    plugin: sqs\n"
                                "    config:\n"
                                "      queue_url: q\n"
                                "      queu_urll: q\n",
                                "ezzing", &o),
                     PX_ECONFIG);
    PX_ASSERT_STR_EQ(errbuf, "test.yaml:7:7: plugin instance \"ezzing\": unknown option "
                             "\"queu_urll\" for plugin \"sqs\", did you mean \"queue_url\"?");
    PX_ASSERT_INT_EQ(options_of("version: 1\nplugins:\n  e:\n    plugin: sqs\n    config:\n"
                                "      queue_url: q\n      batch: ten\n",
                                "e", &o),
                     PX_ECONFIG);
    PX_ASSERT_STR_EQ(errbuf, "test.yaml:7:14: plugin instance \"e\": option \"batch\": expected "
                             "an integer, got \"ten\"");
    PX_ASSERT_INT_EQ(options_of("version: 1\nplugins:\n  e:\n    plugin: sqs\n    config:\n"
                                "      queue_url: q\n      wait: forever\n",
                                "e", &o),
                     PX_ECONFIG);
    PX_ASSERT_STR_EQ(errbuf, "test.yaml:7:13: plugin instance \"e\": option \"wait\": expected "
                             "a duration like 250ms, 30s, 5m, 1h or 1d, got \"forever\"");
    PX_ASSERT_INT_EQ(options_of("version: 1\nplugins:\n  e:\n    plugin: sqs\n    config:\n"
                                "      queue_url: q\n      verbose: \"yes\"\n",
                                "e", &o),
                     PX_ECONFIG);
    PX_ASSERT_STR_EQ(errbuf, "test.yaml:7:16: plugin instance \"e\": option \"verbose\": expected "
                             "true or false, got \"yes\"");
    PX_ASSERT_INT_EQ(options_of("version: 1\nplugins:\n  e:\n    plugin: sqs\n    config:\n"
                                "      queue_url: q\n      extra: [1]\n",
                                "e", &o),
                     PX_ECONFIG);
    PX_ASSERT_STR_EQ(errbuf, "test.yaml:7:14: plugin instance \"e\": option \"extra\": expected "
                             "a mapping, got a list");
    PX_ASSERT_INT_EQ(options_of("version: 1\nplugins:\n  e:\n    plugin: sqs\n    config:\n"
                                "      queue_url: { a: b }\n",
                                "e", &o),
                     PX_ECONFIG);
    PX_ASSERT_STR_EQ(errbuf, "test.yaml:6:18: plugin instance \"e\": option \"queue_url\": "
                             "expected a string, got a mapping");
    PX_ASSERT(o == NULL);
}

/* A secret option's value never shows up in an error, and is masked in logs. */
static void test_secret_options(void)
{
    json_t *o = NULL;
    PX_ASSERT_INT_EQ(options_of("version: 1\nplugins:\n  e:\n    plugin: sqs\n    config:\n"
                                "      queue_url: q\n      pin: hunter2-pin\n",
                                "e", &o),
                     PX_ECONFIG);
    PX_ASSERT_STR_EQ(errbuf, "test.yaml:7:12: plugin instance \"e\": option \"pin\": expected an "
                             "integer (value not shown: secret)");
    PX_ASSERT(strstr(errbuf, "hunter2") == NULL);

    PX_ASSERT_INT_EQ(options_of("version: 1\nplugins:\n  e:\n    plugin: sqs\n    config:\n"
                                "      queue_url: q\n      secret_key: wJalrXUtnFEMI-K7MDENG\n",
                                "e", &o),
                     0);
    PX_ASSERT_STR_EQ(json_string_value(json_object_get(o, "secret_key")), "wJalrXUtnFEMI-K7MDENG");
    json_decref(o);

    /* capture stderr to see what the log backend writes */
    char path[] = "/tmp/px_test_config_XXXXXX";
    int fd = mkstemp(path);
    PX_ASSERT(fd >= 0);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    px_log_set_format(PX_LOG_FORMAT_TEXT);
    PX_LOG_ERR("config", "leak key=%s pin=%s", "wJalrXUtnFEMI-K7MDENG", "hunter2-pin");
    px_config *cfg = parse("version: 1\nhost: { admin: { token: adm1n-t0ken } }\n");
    PX_LOG_ERR("config", "leak token=%s", "adm1n-t0ken");
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    char out[4096] = "";
    ssize_t got = pread(fd, out, sizeof(out) - 1, 0);
    close(fd);
    unlink(path);
    px_config_destroy(cfg);
    px_log_clear_secrets();
    PX_ASSERT(cfg != NULL);
    PX_ASSERT(got > 0);
    PX_ASSERT_STR_HAS(out, "leak key=*** pin=***");
    PX_ASSERT_STR_HAS(out, "leak token=***");
    PX_ASSERT(strstr(out, "wJalrXUtnFEMI") == NULL);
    PX_ASSERT(strstr(out, "hunter2") == NULL);
    PX_ASSERT(strstr(out, "adm1n") == NULL);
}

/* A secret shorter than PX_SECRET_MIN_LEN is refused where it is written, without showing it; an
 * empty one means "none". */
static void test_short_secret_refused(void)
{
    json_t *o = NULL;
    PX_ASSERT_INT_EQ(options_of("version: 1\nplugins:\n  e:\n    plugin: sqs\n    config:\n"
                                "      queue_url: q\n      secret_key: \"s\"\n",
                                "e", &o),
                     PX_ECONFIG);
    PX_ASSERT_STR_EQ(errbuf, "test.yaml:7:19: plugin instance \"e\": option \"secret_key\": too "
                             "short to be a secret (1 characters, at least 8 needed; value not "
                             "shown)");
    PX_ASSERT(o == NULL);
    PX_ASSERT_INT_EQ(options_of("version: 1\nplugins:\n  e:\n    plugin: sqs\n    config:\n"
                                "      queue_url: q\n      secret_key: \"\"\n",
                                "e", &o),
                     0);
    json_decref(o);
    o = NULL;
    PX_ASSERT_INT_EQ(options_of("version: 1\nplugins:\n  e:\n    plugin: sqs\n    config:\n"
                                "      queue_url: q\n      secret_key: 8chars!!\n",
                                "e", &o),
                     0);
    json_decref(o);
    EXPECT_ERR("version: 1\nhost:\n  admin: { token: guest }\n",
               "test.yaml:3:19: host.admin.token: too short to be a secret (5 characters, at "
               "least 8 needed; value not shown)");
    px_log_clear_secrets();
}

static const px_option default_secret_options[] = {
    {"password", PX_OPT_STRING, PX_OPT_SECRET, "guest-default", "password"},
    {"token", PX_OPT_STRING, PX_OPT_SECRET, NULL, "token"},
    {NULL, 0, 0, NULL, NULL},
};

static int default_secret_rc;

static void log_with_default_secret(void)
{
    px_config *cfg = parse("version: 1\nplugins:\n  n:\n    plugin: nq\n    config:\n"
                           "      token: user-set-token\n");
    json_t *o = NULL;
    default_secret_rc = cfg ? px_config_options(cfg, &cfg->instances[0], default_secret_options,
                                                &o, errbuf, sizeof(errbuf))
                            : -1;
    if (o) {
        PX_ASSERT_STR_EQ(json_string_value(json_object_get(o, "password")), "guest-default");
    }
    json_decref(o);
    px_config_destroy(cfg);
    PX_LOG_ERR("config", "user guest-default@example.com token user-set-token");
}

/* Only values the configuration sets are secrets: a plugin's documented default masks nothing. */
static void test_default_secret_masks_nothing(void)
{
    char path[] = "/tmp/px_test_config_XXXXXX";
    int fd = mkstemp(path);
    PX_ASSERT(fd >= 0);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    px_log_set_format(PX_LOG_FORMAT_TEXT);
    log_with_default_secret();
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    char out[4096] = "";
    ssize_t got = pread(fd, out, sizeof(out) - 1, 0);
    close(fd);
    unlink(path);
    px_log_clear_secrets();
    PX_ASSERT_INT_EQ(default_secret_rc, 0);
    PX_ASSERT(got > 0);
    PX_ASSERT_STR_HAS(out, "user guest-default@example.com token ***");
}

/* host.store: sqlite by default; postgres needs a URL whose password is long enough to mask and
 * is masked; the host id defaults to the hostname and a hash of data_dir. */
static void test_store(void)
{
    px_config *cfg = parse("version: 1\n");
    PX_ASSERT(cfg != NULL);
    PX_ASSERT_INT_EQ(cfg->store_type, PX_STORE_SQLITE);
    PX_ASSERT_INT_EQ(cfg->store_lease_ms, 15000);
    PX_ASSERT(cfg->host_id != NULL && strchr(cfg->host_id, '-') != NULL);
    char first[300];
    snprintf(first, sizeof(first), "%s", cfg->host_id);
    px_config_destroy(cfg);
    cfg = parse("version: 1\nhost:\n  data_dir: /srv/other\n");
    PX_ASSERT(cfg != NULL && strcmp(cfg->host_id, first) != 0);
    px_config_destroy(cfg);

    cfg = parse("version: 1\nhost:\n  store:\n    type: postgres\n    url: "
                "postgresql://plexus:pg-secret-9@127.0.0.1:5432/plexus\n    host_id: h-1\n"
                "    lease: 5s\n");
    PX_ASSERT(cfg != NULL);
    PX_ASSERT_INT_EQ(cfg->store_type, PX_STORE_POSTGRES);
    PX_ASSERT_STR_EQ(cfg->host_id, "h-1");
    PX_ASSERT_INT_EQ(cfg->store_lease_ms, 5000);
    char *masked = px_log_redact("connect postgresql://plexus:pg-secret-9@127.0.0.1/plexus");
    PX_ASSERT(strstr(masked, "pg-secret-9") == NULL);
    free(masked);
    px_config_destroy(cfg);
    px_log_clear_secrets();
    cfg = parse("version: 1\nhost:\n  store: {type: postgres, url: \"host=127.0.0.1 "
                "password='kw secret 42'\"}\n");
    PX_ASSERT(cfg != NULL);
    PX_ASSERT_STR_EQ(cfg->store_password, "kw secret 42");
    px_config_destroy(cfg);
    px_log_clear_secrets();

    EXPECT_ERR("version: 1\nhost:\n  store: {type: postgres}\n",
               "test.yaml:3:10: host.store.url: required with type: postgres (e.g. url: "
               "\"${PLEXUS_PG_URL}\")");
    EXPECT_ERR("version: 1\nhost:\n  store: {url: \"host=x\"}\n",
               "test.yaml:3:16: host.store.url: only for type: postgres");
    EXPECT_ERR("version: 1\nhost:\n  store: {type: postgres, url: \"postgres://u:short@h/d\"}\n",
               "test.yaml:3:32: host.store.url: its password is too short to be a secret (at "
               "least 8 characters needed; value not shown)");
    EXPECT_ERR("version: 1\nhost:\n  store: {type: postgres, url: \"host='unterminated\"}\n",
               "test.yaml:3:32: host.store.url: not a PostgreSQL connection string (value not "
               "shown: secret)");
    EXPECT_ERR("version: 1\nhost:\n  store: {type: mysql}\n",
               "test.yaml:3:17: host.store.type: expected sqlite or postgres, got \"mysql\"");
    EXPECT_ERR("version: 1\nhost:\n  store: {host_id: \"a b\"}\n",
               "test.yaml:3:20: host.store.host_id: use letters, digits, '_', '-' and '.' only");
    EXPECT_ERR("version: 1\nhost:\n  store: {lease: 10ms}\n",
               "test.yaml:3:18: host.store.lease: at least 1s");
}

/* host.spool.compress: none by default, zstd on request, nothing else; sqlite store only. */
static void test_spool_compress(void)
{
    px_config *cfg = parse("version: 1\n");
    PX_ASSERT(cfg != NULL);
    PX_ASSERT_INT_EQ(cfg->spool_compress, PX_COMPRESS_NONE);
    px_config_destroy(cfg);
    cfg = parse("version: 1\nhost:\n  spool: {compress: zstd}\n");
    PX_ASSERT(cfg != NULL);
    PX_ASSERT_INT_EQ(cfg->spool_compress, PX_COMPRESS_ZSTD);
    px_config_destroy(cfg);
    EXPECT_ERR("version: 1\nhost:\n  spool: {compress: gzip}\n",
               "test.yaml:3:21: host.spool.compress: expected none or zstd, got \"gzip\"");
    EXPECT_ERR("version: 1\nhost:\n  spool: {compres: zstd}\n",
               "test.yaml:3:11: unknown key \"compres\" in host.spool, did you mean \"compress\"?");
    EXPECT_ERR("version: 1\nhost:\n  store: {type: postgres, url: \"host=127.0.0.1\"}\n"
               "  spool: {compress: zstd}\n",
               "test.yaml:4:21: host.spool.compress: only the sqlite store compresses payloads");
    px_log_clear_secrets();
}

static void test_bad_default(void)
{
    static const px_option bad[] = {
        {"n", PX_OPT_INT, 0, "ten", "plugin bug"},
        {NULL, 0, 0, NULL, NULL},
    };
    px_config *cfg = parse("version: 1\nplugins:\n  e: { plugin: buggy }\n");
    PX_ASSERT(cfg != NULL);
    json_t *o = NULL;
    int rc = px_config_options(cfg, &cfg->instances[0], bad, &o, errbuf, sizeof(errbuf));
    px_config_destroy(cfg);
    PX_ASSERT_INT_EQ(rc, PX_ECONFIG);
    PX_ASSERT_STR_EQ(errbuf, "test.yaml:3:3: plugin \"buggy\" declares an invalid default for "
                             "option \"n\" (expected an integer)");
}

/* --- Files --------------------------------------------------------------------------------- */

static void test_load_missing_file(void)
{
    px_config *cfg = NULL;
    PX_ASSERT_INT_EQ(px_config_load("/nonexistent/plexus.yaml", &cfg, errbuf, sizeof(errbuf)),
                     PX_ECONFIG);
    PX_ASSERT(cfg == NULL);
    PX_ASSERT_STR_EQ(errbuf, "/nonexistent/plexus.yaml:1:1: cannot open the file (No such file "
                             "or directory)");
    /* a tiny buffer is still NUL-terminated */
    char tiny[8];
    PX_ASSERT_INT_EQ(px_config_parse("t.yaml", "x: 1\n", 5, &cfg, tiny, sizeof(tiny)),
                     PX_ECONFIG);
    PX_ASSERT_STR_EQ(tiny, "t.yaml:");
}

/* --- Durations and sizes --------------------------------------------------------------------- */

static void test_parse_duration(void)
{
    uint64_t v = 7;
    PX_ASSERT_INT_EQ(px_parse_duration("250ms", &v), 0);
    PX_ASSERT_INT_EQ(v, 250);
    PX_ASSERT_INT_EQ(px_parse_duration("2s", &v), 0);
    PX_ASSERT_INT_EQ(v, 2000);
    PX_ASSERT_INT_EQ(px_parse_duration("1.5s", &v), 0);
    PX_ASSERT_INT_EQ(v, 1500);
    PX_ASSERT_INT_EQ(px_parse_duration("0.0015s", &v), 0);
    PX_ASSERT_INT_EQ(v, 2); /* rounded to the nearest ms */
    PX_ASSERT_INT_EQ(px_parse_duration("5m", &v), 0);
    PX_ASSERT_INT_EQ(v, 300000);
    PX_ASSERT_INT_EQ(px_parse_duration("1h", &v), 0);
    PX_ASSERT_INT_EQ(v, 3600000);
    PX_ASSERT_INT_EQ(px_parse_duration("1d", &v), 0);
    PX_ASSERT_INT_EQ(v, 86400000);
    PX_ASSERT_INT_EQ(px_parse_duration("0", &v), 0);
    PX_ASSERT_INT_EQ(v, 0);
    PX_ASSERT_INT_EQ(px_parse_duration("1500", &v), 0);
    PX_ASSERT_INT_EQ(v, 1500);
    PX_ASSERT_INT_EQ(px_parse_duration(".5s", &v), 0);
    PX_ASSERT_INT_EQ(v, 500);
    v = 7;
    const char *bad[] = {"", "s", "1x", "1.5", "-1s", "+1s", "1 s", "1sec", "1S", "1.s", "1e3",
                         "99999999999999999999", "213503982335d", "1ms2", " 1s", "1s ", NULL};
    for (int k = 0; bad[k]; k++) {
        if (px_parse_duration(bad[k], &v) != PX_EINVAL) {
            fprintf(stderr, "  accepted duration \"%s\"\n", bad[k]);
        }
        PX_ASSERT_INT_EQ(px_parse_duration(bad[k], &v), PX_EINVAL);
    }
    PX_ASSERT_INT_EQ(v, 7); /* untouched on failure */
    PX_ASSERT_INT_EQ(px_parse_duration(NULL, &v), PX_EINVAL);
    PX_ASSERT_INT_EQ(px_parse_duration("9007199254740992", &v), 0);
    PX_ASSERT(v == 9007199254740992ull);
}

static void test_parse_size(void)
{
    uint64_t v = 7;
    PX_ASSERT_INT_EQ(px_parse_size("512", &v), 0);
    PX_ASSERT_INT_EQ(v, 512);
    PX_ASSERT_INT_EQ(px_parse_size("512B", &v), 0);
    PX_ASSERT_INT_EQ(v, 512);
    PX_ASSERT_INT_EQ(px_parse_size("64KiB", &v), 0);
    PX_ASSERT_INT_EQ(v, 65536);
    PX_ASSERT_INT_EQ(px_parse_size("1MiB", &v), 0);
    PX_ASSERT_INT_EQ(v, 1048576);
    PX_ASSERT_INT_EQ(px_parse_size("1GiB", &v), 0);
    PX_ASSERT_INT_EQ(v, 1073741824);
    PX_ASSERT_INT_EQ(px_parse_size("10KB", &v), 0);
    PX_ASSERT_INT_EQ(v, 10000);
    PX_ASSERT_INT_EQ(px_parse_size("1MB", &v), 0);
    PX_ASSERT_INT_EQ(v, 1000000);
    PX_ASSERT_INT_EQ(px_parse_size("1.5KiB", &v), 0);
    PX_ASSERT_INT_EQ(v, 1536);
    PX_ASSERT_INT_EQ(px_parse_size("2mib", &v), 0);
    PX_ASSERT_INT_EQ(v, 2097152);
    PX_ASSERT_INT_EQ(px_parse_size("0", &v), 0);
    PX_ASSERT_INT_EQ(v, 0);
    v = 7;
    const char *bad[] = {"", "KiB", "1.5", "-1", "1 KiB", "1K", "1KiBs", "lots", "1.KiB",
                         "16777216TiB", "99999999999999999999", NULL};
    for (int k = 0; bad[k]; k++) {
        if (px_parse_size(bad[k], &v) != PX_EINVAL) {
            fprintf(stderr, "  accepted size \"%s\"\n", bad[k]);
        }
        PX_ASSERT_INT_EQ(px_parse_size(bad[k], &v), PX_EINVAL);
    }
    PX_ASSERT_INT_EQ(v, 7);
}

static void test_suggest(void)
{
    static const char *const keys[] = {"version", "host", "plugins", "pipelines"};
    PX_ASSERT_STR_EQ(suggest("pipline", keys, 4), "pipelines");
    PX_ASSERT_STR_EQ(suggest("Version", keys, 4), "version");
    PX_ASSERT_STR_EQ(suggest("hsot", keys, 4), "host");
    PX_ASSERT_STR_EQ(suggest("pipe", keys, 4), "pipelines");
    PX_ASSERT(suggest("zz", keys, 4) == NULL);
    PX_ASSERT(suggest("to", keys, 4) == NULL);
    PX_ASSERT(suggest("completely_different", keys, 4) == NULL);
}

/* Hardening keys: host.max_crashes, an instance's max_pending and max_events_per_second. */
static void test_hardening_keys(void)
{
    px_config *cfg = parse("version: 1\n");
    PX_ASSERT(cfg != NULL);
    PX_ASSERT_INT_EQ(cfg->max_crashes, 3);
    px_config_destroy(cfg);
    cfg = parse("version: 1\nhost:\n  max_crashes: 5\n");
    PX_ASSERT(cfg != NULL);
    PX_ASSERT_INT_EQ(cfg->max_crashes, 5);
    px_config_destroy(cfg);
    EXPECT_ERR("version: 1\nhost:\n  max_crashes: 0\n",
               "test.yaml:3:16: host.max_crashes: expected an integer from 1 to 1000, got \"0\"");

    cfg = parse("version: 1\nplugins:\n"
                "  a: { plugin: x }\n"
                "  b: { plugin: x, max_pending: 5000, max_events_per_second: 2.5 }\n"
                "  c: { plugin: x, max_events_per_second: 100 }\n");
    PX_ASSERT(cfg != NULL);
    PX_ASSERT_INT_EQ(px_config_instance(cfg, "a")->max_pending, 0);
    PX_ASSERT(px_config_instance(cfg, "a")->max_eps == 0);
    PX_ASSERT_INT_EQ(px_config_instance(cfg, "b")->max_pending, 5000);
    PX_ASSERT(px_config_instance(cfg, "b")->max_eps == 2.5);
    PX_ASSERT(px_config_instance(cfg, "c")->max_eps == 100);
    px_config_destroy(cfg);
    EXPECT_ERR("version: 1\nplugins:\n  a: { plugin: x, max_pending: 0 }\n",
               "test.yaml:3:32: plugin instance \"a\": max_pending: expected an integer from 1 "
               "to 1000000000000, got \"0\"");
    EXPECT_ERR("version: 1\nplugins:\n  a: { plugin: x, max_pending: lots }\n",
               "test.yaml:3:32: plugin instance \"a\": max_pending: expected an integer from 1 "
               "to 1000000000000, got \"lots\"");
    EXPECT_ERR("version: 1\nplugins:\n  a: { plugin: x, max_events_per_second: 0 }\n",
               "test.yaml:3:42: plugin instance \"a\": max_events_per_second: expected a number "
               "above 0, got \"0\"");
    EXPECT_ERR("version: 1\nplugins:\n  a: { plugin: x, max_events_per_second: fast }\n",
               "test.yaml:3:42: plugin instance \"a\": max_events_per_second: expected a number "
               "above 0, got \"fast\"");
    EXPECT_ERR("version: 1\nplugins:\n  a: { plugin: x, max_pendng: 3 }\n",
               "test.yaml:3:19: unknown key \"max_pendng\" in plugin instance \"a\", did you "
               "mean \"max_pending\"?");
}

/* Admin authentication: on by default, off only when said, and never beyond loopback. */
static void test_admin_auth(void)
{
    px_config *cfg = parse("version: 1\n");
    PX_ASSERT(cfg != NULL);
    PX_ASSERT_INT_EQ(cfg->admin_auth, PX_ADMIN_AUTH_TOKEN);
    PX_ASSERT_INT_EQ(cfg->admin_metrics_public, 0);
    char warn[512];
    PX_ASSERT_INT_EQ(px_config_admin_warning(cfg, warn, sizeof(warn)), 0);
    px_config_destroy(cfg);

    cfg = parse("version: 1\nhost:\n  admin: { listen: \"127.0.0.2:9\", auth: none,\n"
                "    metrics_public: true }\n");
    PX_ASSERT(cfg != NULL);
    PX_ASSERT_INT_EQ(cfg->admin_auth, PX_ADMIN_AUTH_NONE);
    PX_ASSERT_INT_EQ(cfg->admin_metrics_public, 1);
    PX_ASSERT_INT_EQ(px_config_admin_warning(cfg, warn, sizeof(warn)), 1);
    PX_ASSERT(strstr(warn, "test.yaml:3:20: warning: host.admin.auth is none") == warn);
    px_config_destroy(cfg);

    cfg = parse("version: 1\nhost:\n  admin: { listen: \"[::]:8081\" }\n");
    PX_ASSERT(cfg != NULL);
    PX_ASSERT_INT_EQ(px_config_admin_warning(cfg, warn, sizeof(warn)), 1);
    PX_ASSERT(strstr(warn, "test.yaml:3:20: warning: host.admin.listen [::]:8081 is beyond "
                           "loopback") == warn);
    px_config_destroy(cfg);

    EXPECT_ERR("version: 1\nhost:\n  admin: { listen: \"0.0.0.0:8081\", auth: none }\n",
               "test.yaml:3:42: host.admin.auth: none is refused with host.admin.listen "
               "0.0.0.0:8081, beyond loopback: anyone reaching it could read, replay and purge "
               "dead letters; keep auth: token (the default) or listen on 127.0.0.1");
    EXPECT_ERR("version: 1\nhost:\n  admin: { auth: off }\n",
               "test.yaml:3:18: host.admin.auth: expected token or none, got \"off\"");
    EXPECT_ERR("version: 1\nhost:\n  admin: { auth: none, token: s3cret-token }\n",
               "test.yaml:3:31: host.admin.token: set while host.admin.auth is none; remove one "
               "of them");
    EXPECT_ERR("version: 1\nhost:\n  admin: { token: \"two words\" }\n",
               "test.yaml:3:19: host.admin.token: not usable as a bearer token (value not shown: "
               "secret): use 1 to 512 letters, digits or - . _ ~ + / (= at the end)");

    static const struct {
        const char *listen;
        int loopback;
    } cases[] = {{"127.0.0.1:8081", 1}, {"127.9.9.9:1", 1}, {"[::1]:8081", 1},
                 {"[::ffff:127.0.0.1]:1", 1}, {"0.0.0.0:8081", 0}, {"[::]:8081", 0},
                 {"10.0.0.1:80", 0}, {"128.0.0.1:80", 0}, {"[::ffff:10.0.0.1]:1", 0},
                 {"[::2]:1", 0}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        PX_ASSERT_INT_EQ(px_listen_is_loopback(cases[i].listen), cases[i].loopback);
    }
}

PX_TEST_MAIN(PX_TEST(test_full_config), PX_TEST(test_spool_compress), PX_TEST(test_defaults), PX_TEST(test_scalar_typing),
             PX_TEST(test_err_syntax), PX_TEST(test_err_top_level),
             PX_TEST(test_plugin_trust_and_absolute_paths), PX_TEST(test_err_host),
             PX_TEST(test_err_instances), PX_TEST(test_err_pipelines), PX_TEST(test_env_expansion),
             PX_TEST(test_err_env), PX_TEST(test_aliases), PX_TEST(test_options_defaults),
             PX_TEST(test_err_options), PX_TEST(test_secret_options),
             PX_TEST(test_short_secret_refused), PX_TEST(test_default_secret_masks_nothing), PX_TEST(test_store),
             PX_TEST(test_bad_default),
             PX_TEST(test_load_missing_file), PX_TEST(test_parse_duration),
             PX_TEST(test_parse_size), PX_TEST(test_suggest), PX_TEST(test_hardening_keys),
             PX_TEST(test_admin_auth))
