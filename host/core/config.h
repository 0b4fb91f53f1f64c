/* Configuration: one YAML file -> a validated px_config. Owns YAML parsing (libyaml, with marks),
 * ${VAR} / ${VAR:-default} expansion from the environment, validation of host keys, plugin
 * instances and pipelines, and validation of each instance's options against the plugin's declared
 * px_option table. Every error is one line "file:line:column: message"; secret values never
 * appear in one. Pure module: no loop, no plugins loaded here. */
#ifndef PX_CONFIG_H
#define PX_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <plexus/sdk.h>

typedef struct px_ynode px_ynode; /* parsed YAML node with its marks; private to config.c */

enum px_durability { PX_DURABILITY_NORMAL = 0, PX_DURABILITY_FSYNC = 1 };
/* How the SQLite spool stores event payloads (`spool.compress`). */
enum px_compress { PX_COMPRESS_NONE = 0, PX_COMPRESS_ZSTD = 1 };
/* `host.store.type`: where the spool and the state live (store.h) */
enum px_store_type { PX_STORE_SQLITE = 0, PX_STORE_POSTGRES = 1 };
enum px_admin_auth { PX_ADMIN_AUTH_TOKEN = 0, PX_ADMIN_AUTH_NONE = 1 };

typedef struct px_retry_policy {
    uint32_t attempts;       /* total attempts incl. the first; default 10 */
    uint64_t backoff_ms;     /* first retry delay; default 1000 */
    uint64_t max_backoff_ms; /* cap; default 600000 (10m) */
    double jitter;           /* 0..1 fraction of randomisation; default 0.2 */
    uint64_t timeout_ms;     /* per attempt; default 30000 */
} px_retry_policy;

enum px_cond_op { PX_COND_EQUALS = 1, PX_COND_IN = 2, PX_COND_EXISTS = 3 };

/* One JSON-pointer condition of a pipeline's `when`. */
typedef struct px_cond {
    char *pointer;  /* RFC 6901, e.g. "/data/status" */
    int op;         /* enum px_cond_op */
    json_t *value;  /* equals: the value; in: an array; exists: true or false (owned) */
} px_cond;

typedef struct px_target {
    char *sink;     /* instance name */
    char *action;   /* "" when not given */
    json_t *with;   /* the mapping template as written (owned); {} when not given */
    int line, col;  /* where the target starts, for per-event error messages */
} px_target;

typedef struct px_pipeline_conf {
    char *name;
    char *from;           /* source instance name; "*" = any source */
    char **types;         /* `when.type`: exact names or globs (* and ?); ntypes 0 = any type */
    size_t ntypes;
    px_cond *conds;       /* `when.match` */
    size_t nconds;
    px_target *to;
    size_t nto;
    px_retry_policy retry;
    int line, col;        /* where the pipeline starts, for messages */
} px_pipeline_conf;

typedef struct px_instance_conf {
    char *name;        /* key under `plugins:` */
    char *plugin;      /* plugin name; file <plugin>.so on plugin_path */
    json_t *config;    /* raw config as typed JSON (owned), {} when absent; validated later by
                        * px_config_options */
    px_ynode *node;    /* the `config:` node with marks, for option errors (owned); may be NULL */
    int line, col;     /* where the instance is declared */
    uint32_t max_inflight; /* sink concurrency; `max_inflight:` beside `plugin:`, default 64 */
    uint64_t max_pending;  /* sink: `max_pending:`, pending deliveries beyond which sources
                            * emitting events routed here get PX_EBUSY; 0 (default) = no cap */
    double max_eps;        /* source: `max_events_per_second:`, emits beyond it get PX_EBUSY;
                            * 0 (default) = no limit */
    int ordered;           /* sink: `ordered: true`, delivered in arrival order across every
                            * host sharing the store, by one of them (store.h "Ordered sinks");
                            * 0 (default) = ordered per host */
} px_instance_conf;

typedef struct px_config {
    char *path;              /* file it was read from */
    int version;             /* must be 1 */
    char *data_dir;          /* default "./var" */
    char *http_listen;       /* default "127.0.0.1:8080"; "[::1]:8080"; NULL (null or "") = none */
    size_t http_max_body;    /* default 1 MiB */
    uint32_t http_max_conns; /* default 1024 */
    uint64_t http_request_timeout_ms; /* `http.request_timeout:`, whole request in, default 30s */
    char *admin_listen;      /* default "127.0.0.1:8081"; NULL/"" = none */
    char *admin_token;       /* NULL = the token file data_dir/admin.token (secret) */
    int admin_auth;          /* enum px_admin_auth; `host.admin.auth: token|none` */
    int admin_metrics_public; /* `host.admin.metrics_public: true`: /metrics without a token */
    int admin_line, admin_col; /* where host.admin.listen (else host.admin) is, for messages */
    char **plugin_path;      /* `plugin_path:` (a string or a list), each folder absolute: a
                              * relative one is resolved once, when the file is read, against the
                              * working directory; absent => NULL, 0 */
    size_t nplugin_path;
    char *plugin_path_relative; /* the first relative entry as written (owned), or NULL */
    size_t plugin_path_relative_at; /* its index in plugin_path */
    int plugin_path_line, plugin_path_col; /* where `plugin_path:` is, for messages */
    int plugin_trust;        /* enum px_plugin_trust (loader.h): `strict` or `permissive` */
    int watch_plugins;       /* `watch_plugins: true`: reload an instance when its .so changes */
    char *log_level;         /* default "info" */
    char *log_format;        /* "auto" (default), "json", "text" */
    int durability;          /* enum px_durability; `durability: normal|fsync` */
    uint64_t dedupe_window_ms; /* `dedupe_window:`, default 24h */
    int spool_compress;      /* enum px_compress; `spool.compress: none|zstd`, default none */
    uint64_t drain_timeout_ms; /* `drain_timeout:`, default 10s */
    uint32_t max_crashes;    /* `max_crashes:`: crashes one delivery may cause before it is
                                dead-lettered (crash.h); default 3 */
    char hash[17];           /* 16 hex digits: FNV-1a 64 of the file's bytes, to tell hosts sharing
                                a store that run different files apart */
    int store_type;          /* enum px_store_type; `store.type: sqlite|postgres` */
    char *store_url;         /* `store.url`: the PostgreSQL connection (libpq URI or key=value
                                list); its password is registered as a secret */
    char *store_password;    /* the password in store_url, or NULL (masked in logs) */
    char *host_id;           /* `store.host_id`; default <hostname>-<hash of data_dir's absolute
                                path>: what the hosts sharing a store call this one */
    uint64_t store_lease_ms; /* `store.lease`: how long this host's claims outlive its last
                                heartbeat before another host adopts them; default 15s */
    px_instance_conf *instances;
    size_t ninstances;
    px_pipeline_conf *pipelines;
    size_t npipelines;
    px_ynode *tests;         /* the top-level `tests:` (owned; NULL when absent): pipeline tests
                                for `plexus test` (pipeline_test.h); the host does not read them */
} px_config;

/* Reads and validates `path` (borrowed). On success returns 0 and stores a new config in *out
 * (owned by caller; px_config_destroy). On failure returns PX_ECONFIG and writes one
 * "file:line:column: message" line into err (errlen bytes, always NUL-terminated).
 * Checks: YAML syntax, version, host keys and their types, unknown keys (with "did you mean"),
 * env expansion (unset variable without default is an error), instance and pipeline structure,
 * that every `from` and `sink` names a declared instance, duplicate names. The admin token is
 * registered with px_log_add_secret(); one shorter than PX_SECRET_MIN_LEN (log.h) is refused.
 * Pure: no loop, any thread (not concurrently with setenv). */
int px_config_load(const char *path, px_config **out, char *err, size_t errlen);

/* Same as px_config_load, from a string (borrowed); `name` is used as the file in messages. */
int px_config_parse(const char *name, const char *text, size_t len, px_config **out, char *err,
                    size_t errlen);

/* Validates instance `inst`'s raw config against `options` (the plugin's { NULL }-terminated
 * table): unknown keys (with "did you mean"), types, required options, defaults applied, sizes
 * and durations converted to integers. On success returns 0 and stores a new reference in *out:
 * an object with every declared option (JSON null when neither given nor defaulted). On failure
 * returns PX_ECONFIG with "file:line:column: message" in err (cfg->path as the file). Uses
 * inst->node for positions (inst->config when node is NULL). The values of PX_OPT_SECRET options
 * are never put in err; those the config sets (not defaults) are registered with
 * px_log_add_secret(), even on failure, and one shorter than PX_SECRET_MIN_LEN (log.h; empty
 * excepted) is refused at its position. */
int px_config_options(const px_config *cfg, const px_instance_conf *inst,
                      const px_option *options, json_t **out, char *err, size_t errlen);

/* Where instance inst's option `option` (borrowed) is written, for messages about its value: the
 * value's line and column, else (not written, no marks) the instance's. */
void px_config_option_mark(const px_instance_conf *inst, const char *option, int *line, int *col);

/* 1 when `listen` (borrowed; "127.0.0.1:8081", "[::1]:8081") is a loopback address. */
int px_listen_is_loopback(const char *listen);

/* The warning `plexus check` prints and the host logs about the admin API of cfg: a listener
 * beyond loopback (the token crosses the network in clear text unless TLS is terminated in
 * front), or authentication turned off. Returns 1 with one "file:line:column: warning: ..." line
 * in buf, or 0 when there is nothing to say. */
int px_config_admin_warning(const px_config *cfg, char *buf, size_t len);

/* Finds an instance by name; borrowed pointer or NULL. */
const px_instance_conf *px_config_instance(const px_config *cfg, const char *name);

/* Parses durations ("250ms", "2s", "1.5s", "5m", "1h", "1d", or a plain number of ms) and sizes
 * ("512", "64KiB", "1MiB", "1GiB", "10KB", "1MB"); 0 on success, PX_EINVAL otherwise. */
int px_parse_duration(const char *s, uint64_t *ms);
int px_parse_size(const char *s, uint64_t *bytes);

void px_config_destroy(px_config *cfg);

/* --- YAML with marks, for files beside the configuration (pipeline tests) ------------------
 * The configuration's own reader: one document, ${VAR} expansion, anchors and merges, and
 * errors as one "file:line:column: message" line. */

enum { PX_YNODE_NULL = 0, PX_YNODE_MAP = 1, PX_YNODE_SEQ = 2, PX_YNODE_SCALAR = 3 };

/* Reads YAML file path (borrowed). On success returns 0 and stores the root node in *out (owned
 * by caller; px_ynode_destroy). On failure (unreadable, not YAML, empty) returns PX_ECONFIG with
 * one line in err. */
int px_yaml_load(const char *path, px_ynode **out, char *err, size_t errlen);
void px_ynode_destroy(px_ynode *n); /* NULL is a no-op */

/* Accessors; every node returned is borrowed from its tree. PX_YNODE_NULL for NULL or a null
 * scalar. */
int px_ynode_type(const px_ynode *n);
size_t px_ynode_size(const px_ynode *n);                   /* entries of a mapping or list */
const px_ynode *px_ynode_at(const px_ynode *n, size_t i);  /* value i (or list item i) */
const px_ynode *px_ynode_key_at(const px_ynode *n, size_t i); /* key i of a mapping */
const px_ynode *px_ynode_get(const px_ynode *m, const char *key); /* NULL when absent */
const char *px_ynode_text(const px_ynode *n);              /* a scalar's text, else NULL */
int px_ynode_is_string(const px_ynode *n);                 /* a quoted or non-typed scalar */
void px_ynode_mark(const px_ynode *n, int *line, int *col); /* 1-based start */
/* n (borrowed, not NULL) as JSON: a new reference in *out, or PX_ECONFIG with
 * "file:line:column: ..." in err (text that is not UTF-8). */
int px_ynode_to_json(const px_ynode *n, const char *file, json_t **out, char *err,
                     size_t errlen);

/* `, did you mean "X"?` in buf when one of cands[0..n) is close to word, else ""; returns buf. */
const char *px_suggest(const char *word, const char *const *cands, size_t n, char *buf,
                       size_t size);

#endif
