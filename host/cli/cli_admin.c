/* `plexus status`, `plexus reload` and the admin client `plexus dlq` uses (see cli_admin.h).
 * Requests name the data directory the config points at (X-Plexus-Data-Dir), so a command never
 * acts on another host that happens to own the address. */
#include "clock.h"
#include "cli_admin.h"

#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <uv.h>

#include "admin_token.h"
#include "config.h"
#include "err.h"
#include "mem.h"

struct px_cli_admin {
    char *base;      /* "http://127.0.0.1:8081", or NULL when there is no address to call */
    char *why_none;  /* why base is NULL (owned) */
    char *token;     /* owned, or NULL */
    char *no_token;  /* why there is no token to send (owned; NULL when there is one or none is
                        needed), told when the host answers 401 */
    char *data_dir;  /* resolved data directory (owned) */
    int check_dir;   /* send data_dir: the host must serve it (not with an explicit --admin) */
    CURL *curl;
};

static const char *usage_status =
    "usage: plexus status [-c FILE] [--admin ADDR] [--json]\n"
    "\n"
    "Prints the running host's status: instances (plugin, version, generation, state), pipelines,\n"
    "spool and dead-letter figures, delivery counts. It asks the admin API at FILE's\n"
    "host.admin.listen (default 127.0.0.1:8081) with host.admin.token, or without one with the\n"
    "token the host keeps in FILE's data_dir/admin.token, and refuses an answer from a host\n"
    "that serves another data_dir than FILE's.\n"
    "  -c, --config FILE   configuration file (default etc/plexus.yaml)\n"
    "  --admin ADDR        ask the host at HOST:PORT or http://HOST:PORT instead, whatever its\n"
    "                      data_dir (also $PLEXUS_ADMIN, which keeps the data_dir check)\n"
    "  --json              print the status document as JSON\n"
    "Exit status 0 when the host answered, 1 when it did not.\n";

static const char *usage_reload =
    "usage: plexus reload [-c FILE] [--admin ADDR] [INSTANCE]\n"
    "\n"
    "Asks the running host to reload: its whole configuration file, or only INSTANCE's plugin\n"
    "(a new generation of the plugin file). A configuration that does not validate changes\n"
    "nothing. Exit status 0 when the reload succeeded, 1 when it failed.\n"
    "  -c, --config FILE   configuration file (default etc/plexus.yaml)\n"
    "  --admin ADDR        ask the host at HOST:PORT or http://HOST:PORT instead, whatever its\n"
    "                      data_dir (also $PLEXUS_ADMIN, which keeps the data_dir check)\n";

/* --- client ------------------------------------------------------------------------------ */

static void print_refusal(px_cli_admin *c, long status, const json_t *body);

/* "127.0.0.1:8081" -> "http://127.0.0.1:8081"; a wildcard host is reached on loopback. */
static char *base_from_listen(const char *listen, char **why)
{
    const char *colon = strrchr(listen, ':');
    if (!colon || colon == listen) {
        *why = px_xasprintf("admin address \"%s\" has no port", listen);
        return NULL;
    }
    if (strcmp(colon + 1, "0") == 0) {
        *why = px_xasprintf("host.admin.listen %s has port 0 (chosen at start): give --admin "
                            "HOST:PORT", listen);
        return NULL;
    }
    size_t hlen = (size_t)(colon - listen);
    char host[128];
    snprintf(host, sizeof(host), "%.*s", (int)(hlen < sizeof(host) ? hlen : sizeof(host) - 1),
             listen);
    if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "*") == 0 || !host[0]) {
        snprintf(host, sizeof(host), "127.0.0.1");
    } else if (strcmp(host, "[::]") == 0) {
        snprintf(host, sizeof(host), "[::1]");
    }
    return px_xasprintf("http://%s:%s", host, colon + 1);
}

/* host.admin.token, else the token file the host made in the config's data_dir. Without one, a
 * request goes out bare, and a 401 tells why there was no token. */
static void load_token(px_cli_admin *c, const px_config *cfg)
{
    if (cfg->admin_token) {
        c->token = px_xstrdup(cfg->admin_token);
        return;
    }
    if (cfg->admin_auth == PX_ADMIN_AUTH_NONE) {
        return;
    }
    char err[768];
    if (px_admin_token_load(c->data_dir, 0, &c->token, NULL, err, sizeof(err)) < 0) {
        c->no_token = px_xstrdup(err);
    }
}

int px_cli_admin_open(const char *config, const char *addr, px_cli_admin **out)
{
    px_config *cfg = NULL;
    char err[1024];
    if (px_config_load(config, &cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        return PX_ECONFIG;
    }
    px_cli_admin *c = px_xcalloc(1, sizeof(*c));
    c->check_dir = !addr || !*addr;
    if (!addr || !*addr) {
        addr = getenv("PLEXUS_ADMIN");
    }
    if (addr && *addr) {
        if (strncmp(addr, "http://", 7) == 0 || strncmp(addr, "https://", 8) == 0) {
            c->base = px_xstrdup(addr);
            size_t n = strlen(c->base);
            while (n && c->base[n - 1] == '/') {
                c->base[--n] = '\0';
            }
        } else {
            c->base = base_from_listen(addr, &c->why_none);
        }
    } else if (cfg->admin_listen && *cfg->admin_listen) {
        c->base = base_from_listen(cfg->admin_listen, &c->why_none);
    } else {
        c->why_none = px_xstrdup("the admin API is disabled (host.admin.listen is null)");
    }
    char real[PATH_MAX];
    c->data_dir = px_xstrdup(realpath(cfg->data_dir, real) ? real : cfg->data_dir);
    load_token(c, cfg);
    px_config_destroy(cfg);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    c->curl = curl_easy_init();
    *out = c;
    return 0;
}

void px_cli_admin_close(px_cli_admin *c)
{
    if (!c) {
        return;
    }
    if (c->curl) {
        curl_easy_cleanup(c->curl);
    }
    curl_global_cleanup();
    free(c->base);
    free(c->why_none);
    free(c->token);
    free(c->no_token);
    free(c->data_dir);
    free(c);
}

typedef struct rbuf {
    char *p;
    size_t len;
} rbuf;

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    rbuf *b = arg;
    size_t add = size * n;
    if (b->len + add > (64u << 20)) {
        return 0; /* a status or a list does not get that big: refuse rather than grow */
    }
    b->p = px_xrealloc(b->p, b->len + add + 1);
    memcpy(b->p + b->len, data, add);
    b->len += add;
    b->p[b->len] = '\0';
    return add;
}

int px_cli_admin_call(px_cli_admin *c, const char *method, const char *path, const json_t *body,
                      long *status, json_t **out, char *err, size_t errlen)
{
    if (!c->base) {
        snprintf(err, errlen, "%s", c->why_none ? c->why_none : "no admin address");
        return UV_ECONNREFUSED;
    }
    if (!c->curl) {
        snprintf(err, errlen, "libcurl could not start");
        return PX_EHTTP;
    }
    CURL *h = c->curl;
    curl_easy_reset(h);
    char *url = px_xasprintf("%s%s", c->base, path);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    struct curl_slist *hdrs = NULL;
    char *auth = c->token ? px_xasprintf("Authorization: Bearer %s", c->token) : NULL;
    char *dir = c->check_dir ? px_xasprintf("X-Plexus-Data-Dir: %s", c->data_dir) : NULL;
    if (auth) {
        hdrs = curl_slist_append(hdrs, auth);
    }
    if (dir) {
        hdrs = curl_slist_append(hdrs, dir);
    }
    if (text) {
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    }
    rbuf rb = {0};
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_NOPROXY, "*"); /* the admin API is local: never via a proxy */
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 120000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &rb);
    if (text) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, text);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(text));
    } else if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, 0L);
    }
    CURLcode cc = curl_easy_perform(h);
    int rc = 0;
    if (cc == CURLE_COULDNT_CONNECT) {
        snprintf(err, errlen, "nothing listens at %s", c->base);
        rc = UV_ECONNREFUSED;
    } else if (cc != CURLE_OK) {
        snprintf(err, errlen, "%s: %s", c->base, curl_easy_strerror(cc));
        rc = PX_EHTTP;
    } else {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
        if (out) {
            *out = rb.p ? json_loadb(rb.p, rb.len, JSON_DECODE_ANY, NULL) : NULL;
        }
    }
    free(rb.p);
    curl_slist_free_all(hdrs);
    free(dir);
    free(auth);
    free(text);
    free(url);
    return rc;
}

/* --- streamed answers ---------------------------------------------------------------------- */

typedef struct stream_ctx {
    CURL *h;
    long status;  /* 0 until known */
    rbuf buf;     /* a partial line, or a refusal's body */
    int (*on_line)(const char *line, size_t len, void *arg);
    void *arg;
    int stopped;
} stream_ctx;

static size_t on_stream_body(char *data, size_t size, size_t n, void *arg)
{
    stream_ctx *sc = arg;
    size_t add = size * n;
    if (!sc->status) {
        curl_easy_getinfo(sc->h, CURLINFO_RESPONSE_CODE, &sc->status);
    }
    if (sc->status != 200) {
        return on_body(data, size, n, &sc->buf);
    }
    size_t start = 0;
    for (size_t i = 0; i < add; i++) {
        if (data[i] != '\n') {
            continue;
        }
        const char *line = data + start;
        size_t len = i - start;
        if (sc->buf.len) {
            on_body(data + start, 1, len, &sc->buf);
            line = sc->buf.p;
            len = sc->buf.len;
        }
        int stop = sc->on_line(line, len, sc->arg);
        sc->buf.len = 0;
        start = i + 1;
        if (stop) {
            sc->stopped = 1;
            return 0; /* ends the transfer */
        }
    }
    if (start < add && on_body(data + start, 1, add - start, &sc->buf) == 0) {
        return 0;
    }
    return add;
}

int px_cli_admin_stream(px_cli_admin *c, const char *path,
                        int (*on_line)(const char *line, size_t len, void *arg), void *arg,
                        long *status, json_t **body, char *err, size_t errlen)
{
    *body = NULL;
    if (!c->base) {
        snprintf(err, errlen, "%s", c->why_none ? c->why_none : "no admin address");
        return UV_ECONNREFUSED;
    }
    if (!c->curl) {
        snprintf(err, errlen, "libcurl could not start");
        return PX_EHTTP;
    }
    CURL *h = c->curl;
    curl_easy_reset(h);
    char *url = px_xasprintf("%s%s", c->base, path);
    struct curl_slist *hdrs = NULL;
    char *auth = c->token ? px_xasprintf("Authorization: Bearer %s", c->token) : NULL;
    char *dir = c->check_dir ? px_xasprintf("X-Plexus-Data-Dir: %s", c->data_dir) : NULL;
    if (auth) {
        hdrs = curl_slist_append(hdrs, auth);
    }
    if (dir) {
        hdrs = curl_slist_append(hdrs, dir);
    }
    stream_ctx sc = {.h = h, .on_line = on_line, .arg = arg};
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_stream_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &sc);
    CURLcode cc = curl_easy_perform(h);
    int rc = 0;
    if (cc == CURLE_COULDNT_CONNECT) {
        snprintf(err, errlen, "nothing listens at %s", c->base);
        rc = UV_ECONNREFUSED;
    } else if (cc != CURLE_OK && !(cc == CURLE_WRITE_ERROR && sc.stopped)) {
        snprintf(err, errlen, "%s: %s", c->base, curl_easy_strerror(cc));
        rc = PX_EHTTP;
    } else {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
        if (*status != 200 && sc.buf.p) {
            *body = json_loadb(sc.buf.p, sc.buf.len, JSON_DECODE_ANY, NULL);
        }
    }
    free(sc.buf.p);
    curl_slist_free_all(hdrs);
    free(dir);
    free(auth);
    free(url);
    return rc;
}

void px_cli_admin_refusal(px_cli_admin *c, long status, const json_t *body)
{
    print_refusal(c, status, body);
}

/* One line for an error answer: the body's "error" when there is one. */
static void print_refusal(px_cli_admin *c, long status, const json_t *body)
{
    const char *msg = json_string_value(json_object_get(body, "error"));
    if (status == 401 && c->no_token) {
        fprintf(stderr, "plexus: the admin API at %s refused the request (401): no token to "
                "send: %s\n", c->base, c->no_token);
    } else if (status == 401) {
        fprintf(stderr, "plexus: the admin API at %s refused the request (401): %s; check "
                "host.admin.token, or %s/%s when the config sets none\n", c->base,
                msg ? msg : "unauthorized", c->data_dir, PX_ADMIN_TOKEN_FILE);
    } else if (status == 421) {
        const char *dir = json_string_value(json_object_get(body, "data_dir"));
        fprintf(stderr, "plexus: the host at %s serves data_dir %s, not %s\n", c->base,
                dir ? dir : "?", c->data_dir);
    } else {
        fprintf(stderr, "plexus: %s answered %ld%s%s\n", c->base, status, msg ? ": " : "",
                msg ? msg : "");
    }
}

/* GET/POST expecting 200 and a JSON object. Returns 0 with *out, or prints and returns < 0. */
static int call_ok(px_cli_admin *c, const char *method, const char *path, const json_t *body,
                   json_t **out, long *status_out)
{
    char err[512];
    long status = 0;
    json_t *res = NULL;
    int rc = px_cli_admin_call(c, method, path, body, &status, &res, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "plexus: %s\n", err);
        return rc;
    }
    if (status_out) {
        *status_out = status;
    }
    if (status != 200 || !json_is_object(res)) {
        if (status == 200) {
            fprintf(stderr, "plexus: %s answered with something else than JSON\n", c->base);
        } else if (status != 404 || !status_out) {
            print_refusal(c, status, res);
        }
        json_decref(res);
        return status == 404 ? PX_ENOENT : PX_EHTTP;
    }
    *out = res;
    return 0;
}

/* --- dead letters ------------------------------------------------------------------------ */

int px_cli_admin_probe(const char *config, px_cli_admin **out)
{
    *out = NULL;
    px_cli_admin *c = NULL;
    if (px_cli_admin_open(config, NULL, &c) < 0) {
        return 0; /* the offline path reports the config error */
    }
    char err[512];
    long status = 0;
    json_t *res = NULL;
    int rc = px_cli_admin_call(c, "GET", "/healthz", NULL, &status, &res, err, sizeof(err));
    if (rc == UV_ECONNREFUSED) {
        px_cli_admin_close(c);
        return 0;
    }
    if (rc < 0) {
        fprintf(stderr, "plexus: %s\n", err);
        px_cli_admin_close(c);
        return -1;
    }
    if (status == 421) {
        /* Another host owns the address: none of ours runs (it could not have bound it). */
        json_decref(res);
        px_cli_admin_close(c);
        return 0;
    }
    json_decref(res);
    if (status != 200) {
        fprintf(stderr, "plexus: %s answered /healthz with %ld\n", c->base, status);
        px_cli_admin_close(c);
        return -1;
    }
    *out = c;
    return 1;
}

static char *url_escape(px_cli_admin *c, const char *s)
{
    char *e = curl_easy_escape(c->curl, s, 0);
    char *r = px_xstrdup(e ? e : "");
    curl_free(e);
    return r;
}

int px_cli_admin_dlq_list(px_cli_admin *c, const char *sink, int64_t since_ms, size_t limit,
                          json_t **out)
{
    char *esink = sink ? url_escape(c, sink) : NULL;
    char *path = px_xasprintf("/admin/dlq?since=%lld&limit=%zu%s%s", (long long)since_ms, limit,
                              esink ? "&sink=" : "", esink ? esink : "");
    json_t *res = NULL;
    int rc = call_ok(c, "GET", path, NULL, &res, NULL);
    free(path);
    free(esink);
    if (rc < 0) {
        return rc;
    }
    json_t *list = json_object_get(res, "dead_letters");
    if (!json_is_array(list)) {
        json_decref(res);
        fprintf(stderr, "plexus: %s: no dead_letters array in the answer\n", c->base);
        return PX_EHTTP;
    }
    *out = json_incref(list);
    json_decref(res);
    return 0;
}

int px_cli_admin_dlq_show(px_cli_admin *c, int64_t id, json_t **out)
{
    char path[64];
    snprintf(path, sizeof(path), "/admin/dlq/%lld", (long long)id);
    long status = 0;
    return call_ok(c, "GET", path, NULL, out, &status);
}

static int select_call(px_cli_admin *c, const char *path, const int64_t *ids, size_t n,
                       const char *sink, int64_t before_ms, const char *field)
{
    json_t *body = json_object();
    if (ids && n) {
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++) {
            json_array_append_new(arr, json_integer(ids[i]));
        }
        json_object_set_new(body, "ids", arr);
    } else {
        json_object_set_new(body, "all", json_true());
        if (sink) {
            json_object_set_new(body, "sink", json_string(sink));
        }
        if (before_ms > 0) {
            json_object_set_new(body, "before", json_integer(before_ms));
        }
    }
    json_t *res = NULL;
    int rc = call_ok(c, "POST", path, body, &res, NULL);
    json_decref(body);
    if (rc < 0) {
        return rc;
    }
    json_t *count = json_object_get(res, field);
    rc = json_is_integer(count) ? (int)json_integer_value(count) : PX_EHTTP;
    json_decref(res);
    return rc;
}

int px_cli_admin_dlq_replay(px_cli_admin *c, const int64_t *ids, size_t n, const char *sink)
{
    return select_call(c, "/admin/dlq/replay", ids, n, sink, 0, "replayed");
}

int px_cli_admin_dlq_purge(px_cli_admin *c, const int64_t *ids, size_t n, const char *sink,
                           int64_t before_ms)
{
    return select_call(c, "/admin/dlq/purge", ids, n, sink, before_ms, "purged");
}

/* --- status ------------------------------------------------------------------------------ */

typedef struct cmd_args {
    const char *config, *admin;
    int json, help;
    const char *positional;
} cmd_args;

static int parse_cmd(int argc, char **argv, const char *default_config, int takes_positional,
                     cmd_args *a)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"admin", required_argument, NULL, 'A'},
        {"json", no_argument, NULL, 'j'},         {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    memset(a, 0, sizeof(*a));
    a->config = default_config;
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': a->config = optarg; break;
        case 'A': a->admin = optarg; break;
        case 'j': a->json = 1; break;
        case 'h': a->help = 1; break;
        default: return -1;
        }
    }
    if (optind < argc && takes_positional) {
        a->positional = argv[optind++];
    }
    if (optind < argc) {
        fprintf(stderr, "plexus: unexpected argument \"%s\"\n", argv[optind]);
        return -1;
    }
    return 0;
}

static const char *str(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s && *s ? s : "-";
}

static long long num(const json_t *o, const char *key)
{
    return (long long)json_integer_value(json_object_get(o, key));
}

static void print_duration(double s, char *buf, size_t len)
{
    long long t = (long long)s;
    if (t >= 86400) {
        snprintf(buf, len, "%lldd%lldh", t / 86400, t % 86400 / 3600);
    } else if (t >= 3600) {
        snprintf(buf, len, "%lldh%lldm", t / 3600, t % 3600 / 60);
    } else if (t >= 60) {
        snprintf(buf, len, "%lldm%llds", t / 60, t % 60);
    } else {
        snprintf(buf, len, "%.1fs", s);
    }
}

static void print_status(const json_t *st)
{
    char up[32];
    print_duration(json_number_value(json_object_get(st, "uptime_seconds")), up, sizeof(up));
    int ready = json_is_true(json_object_get(st, "ready"));
    printf("plexus %s (ABI %s)  pid %lld  up %s  %s\n", str(st, "version"), str(st, "abi"),
           num(st, "pid"), up, json_is_true(json_object_get(st, "stopping")) ? "STOPPING"
                                : ready                                        ? "ready"
                                                                               : "NOT READY");
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(st, "not_ready"), i, v) {
        printf("  not ready: %s\n", json_string_value(v));
    }
    printf("config    %s\ndata_dir  %s\n", str(st, "config"), str(st, "data_dir"));
    json_array_foreach(json_object_get(st, "plugin_path"), i, v) {
        printf("plugins   %s\n", json_string_value(v));
    }
    printf("\n");

    printf("%-16s %-14s %-10s %-11s %4s %-9s %5s  %-24s %s\n", "INSTANCE", "PLUGIN", "VERSION",
           "KIND", "GEN", "STATE", "BUSY", "LOADED", "LAST ERROR");
    json_array_foreach(json_object_get(st, "instances"), i, v) {
        char gen[16] = "-";
        if (json_is_integer(json_object_get(v, "generation"))) {
            snprintf(gen, sizeof(gen), "%lld", num(v, "generation"));
        }
        printf("%-16s %-14s %-10s %-11s %4s %-9s %5lld  %-24s %s\n", str(v, "name"),
               str(v, "plugin"), str(v, "version"), str(v, "kind"), gen, str(v, "state"),
               num(v, "inflight"), str(v, "loaded_at"), str(v, "last_error"));
    }
    printf("\n%-16s %-16s %-24s %s\n", "PIPELINE", "FROM", "TYPES", "TO");
    json_array_foreach(json_object_get(st, "pipelines"), i, v) {
        char types[256] = "", to[256] = "";
        size_t j, tl = 0, ol = 0;
        json_t *t;
        json_array_foreach(json_object_get(v, "types"), j, t) {
            tl += (size_t)snprintf(types + tl, tl < sizeof(types) ? sizeof(types) - tl : 0,
                                   "%s%s", j ? "," : "", json_string_value(t));
        }
        json_array_foreach(json_object_get(v, "to"), j, t) {
            const char *action = json_string_value(json_object_get(t, "action"));
            ol += (size_t)snprintf(to + ol, ol < sizeof(to) ? sizeof(to) - ol : 0, "%s%s%s%s",
                                   j ? ", " : "", json_string_value(json_object_get(t, "sink")),
                                   action && *action ? ":" : "", action ? action : "");
        }
        printf("%-16s %-16s %-24s %s\n", str(v, "name"), str(v, "from"), tl ? types : "*", to);
    }

    const json_t *sp = json_object_get(st, "spool");
    if (json_is_object(sp)) {
        printf("\nspool       %s, %lld queued, %lld commits, %lld rows, last batch %lld, max "
               "batch %lld, commit %.2f ms (max %.2f ms)\n",
               json_is_true(json_object_get(sp, "writable")) ? "writable" : "NOT WRITABLE",
               num(sp, "queued"), num(sp, "commits"), num(sp, "rows_committed"),
               num(sp, "last_batch"), num(sp, "max_batch"),
               json_number_value(json_object_get(sp, "commit_ms_last")),
               json_number_value(json_object_get(sp, "commit_ms_max")));
        printf("pending     %lld", num(sp, "pending_total"));
        const char *k;
        json_t *n;
        int first = 1;
        json_object_foreach(json_object_get(sp, "pending"), k, n) {
            printf("%s%s=%lld", first ? "  (" : ", ", k, (long long)json_integer_value(n));
            first = 0;
        }
        printf("%s\ndead letters %lld\n", first ? "" : ")", num(sp, "dead_letters"));
    }
    const json_t *cl = json_object_get(st, "cluster");
    if (json_is_object(cl)) {
        printf("store       %s, host %s%s\n", str(cl, "store"), str(cl, "host_id"),
               json_is_false(json_object_get(cl, "leased")) ? ", LEASE LAPSED: not delivering"
                                                            : "");
        const json_t *members = json_object_get(cl, "members");
        if (json_array_size(members) > 1) {
            printf("hosts       %lld alive of %zu\n", num(cl, "alive"), json_array_size(members));
            json_array_foreach(members, i, v) {
                printf("  %-24s %-8s %-10s config %s, heartbeat %lld ms ago%s\n",
                       str(v, "host_id"), json_is_true(json_object_get(v, "alive")) ? "alive"
                                                                                     : "GONE",
                       str(v, "version"), str(v, "config_hash"),
                       (long long)(px_now_ms() - num(v, "heartbeat_at")),
                       json_is_true(json_object_get(v, "self")) ? " (this host)" : "");
            }
        }
        if (json_is_string(json_object_get(cl, "warning"))) {
            printf("WARNING     %s\n", str(cl, "warning"));
        }
    }
    const json_t *ev = json_object_get(st, "events");
    printf("events      received %lld, unrouted %lld, duplicate %lld, refused %lld, mapping "
           "errors %lld\n",
           num(ev, "received"), num(ev, "unrouted"), num(ev, "duplicate"), num(ev, "refused"),
           num(ev, "mapping_errors"));
    const json_t *rl = json_object_get(st, "reload");
    if (json_is_object(rl)) {
        printf("reloads     ok %lld, failed %lld, last %s%s%s\n", num(rl, "ok"), num(rl, "failed"),
               str(rl, "last_at"), json_is_string(json_object_get(rl, "last_error")) ? ": FAILED: "
                                                                                  : "",
               json_is_string(json_object_get(rl, "last_error")) ? str(rl, "last_error") : "");
    }
    const json_t *ds = json_object_get(st, "dispatcher");
    if (json_is_object(ds)) {
        printf("deliveries  done %lld, retried %lld, rejected %lld, dead %lld, timeouts %lld\n",
               num(ds, "delivered"), num(ds, "retried"), num(ds, "rejected"), num(ds, "dead"),
               num(ds, "timeouts"));
    }
}

int px_cli_status(int argc, char **argv, const char *default_config)
{
    cmd_args a;
    if (parse_cmd(argc, argv, default_config, 0, &a) < 0) {
        fputs(usage_status, stderr);
        return 2;
    }
    if (a.help) {
        fputs(usage_status, stdout);
        return 0;
    }
    px_cli_admin *c = NULL;
    if (px_cli_admin_open(a.config, a.admin, &c) < 0) {
        return 78;
    }
    json_t *st = NULL;
    int rc = call_ok(c, "GET", "/admin/status", NULL, &st, NULL);
    if (rc == 0) {
        if (a.json) {
            char *s = json_dumps(st, JSON_INDENT(2));
            printf("%s\n", s);
            free(s);
        } else {
            print_status(st);
        }
        json_decref(st);
    }
    px_cli_admin_close(c);
    return rc == 0 ? 0 : 1;
}

int px_cli_reload(int argc, char **argv, const char *default_config)
{
    cmd_args a;
    if (parse_cmd(argc, argv, default_config, 1, &a) < 0) {
        fputs(usage_reload, stderr);
        return 2;
    }
    if (a.help) {
        fputs(usage_reload, stdout);
        return 0;
    }
    px_cli_admin *c = NULL;
    if (px_cli_admin_open(a.config, a.admin, &c) < 0) {
        return 78;
    }
    char *path;
    if (a.positional) {
        char *e = url_escape(c, a.positional);
        path = px_xasprintf("/admin/reload?instance=%s", e);
        free(e);
    } else {
        path = px_xstrdup("/admin/reload");
    }
    char err[512];
    long status = 0;
    json_t *res = NULL;
    int rc = px_cli_admin_call(c, "POST", path, NULL, &status, &res, err, sizeof(err));
    free(path);
    int exit_code = 1;
    const char *what = a.positional ? a.positional : "configuration";
    if (rc < 0) {
        fprintf(stderr, "plexus: %s\n", err);
    } else if (status == 200 && json_is_object(res)) {
        const char *msg = json_string_value(json_object_get(res, "message"));
        printf("reload of %s: ok%s%s\n", what, msg ? ": " : "", msg ? msg : "");
        exit_code = 0;
    } else if (json_is_object(res) && json_object_get(res, "result")) {
        fprintf(stderr, "reload of %s failed: %s\n", what,
                json_string_value(json_object_get(res, "error")));
    } else {
        print_refusal(c, status, res);
    }
    json_decref(res);
    px_cli_admin_close(c);
    return exit_code;
}
