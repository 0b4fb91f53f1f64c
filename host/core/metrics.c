/* Metrics registry and Prometheus text rendering (see metrics.h). Series are found by the hash
 * of their rendered label set, so the text that identifies a series is the text that is printed:
 * two spellings of one label set cannot become two series. */
#include "metrics.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "err.h"
#include "log.h"
#include "mem.h"
#include "utf8.h"

#define MAX_PLUGIN_LABELS 16
#define MAX_PLUGIN_FAMILIES 256
#define MAX_WARNED 256

struct px_series {
    char *labels;      /* rendered label set, "" for none (owned) */
    uint32_t hash;
    double value;      /* counter/gauge value; histogram: sum of observations */
    uint64_t count;    /* histogram: observations */
    uint64_t *buckets; /* histogram: per-bucket counts, not cumulative, nbounds + 1 (owned) */
    px_metric *family; /* the family it belongs to */
    px_series *chain;  /* next in the hash bucket */
    px_series *next;   /* next in creation order */
};

struct px_metric {
    int type;
    char *name, *help;  /* owned */
    char **label_names; /* owned, nlabels entries */
    size_t nlabels;
    double *bounds;     /* histogram upper bounds (owned), nbounds entries, +Inf implied */
    size_t nbounds;
    px_series **table;  /* hash table, tcap (a power of two) slots */
    size_t tcap;
    px_series *head, *tail;
    size_t nseries;
    px_metric *next;
};

struct px_metrics {
    px_metric *head, *tail;
    size_t nfamilies;
    char *host_label; /* `host="..."` on every sample (px_metrics_set_host), or NULL (owned) */
};

/* --- small growable buffer --------------------------------------------------------------- */

typedef struct mbuf {
    char *p;
    size_t len, cap;
} mbuf;

static void mb_reserve(mbuf *b, size_t more)
{
    if (b->len + more + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + more + 1) {
            cap *= 2;
        }
        b->p = px_xrealloc(b->p, cap);
        b->cap = cap;
        b->p[b->len] = '\0';
    }
}

static void mb_putn(mbuf *b, const char *s, size_t n)
{
    mb_reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void mb_puts(mbuf *b, const char *s)
{
    mb_putn(b, s, strlen(s));
}

__attribute__((format(printf, 2, 3))) static void mb_printf(mbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0) {
        return;
    }
    mb_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* --- names, values, escaping ------------------------------------------------------------- */

static int is_alpha_(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static int is_digit(int c)
{
    return c >= '0' && c <= '9';
}

int px_metrics_valid_name(const char *name)
{
    if (!name || !(is_alpha_((unsigned char)name[0]) || name[0] == ':')) {
        return 0;
    }
    for (const char *p = name + 1; *p; p++) {
        if (!is_alpha_((unsigned char)*p) && !is_digit((unsigned char)*p) && *p != ':') {
            return 0;
        }
    }
    return 1;
}

int px_metrics_valid_label(const char *name)
{
    if (!name || !is_alpha_((unsigned char)name[0]) || strncmp(name, "__", 2) == 0) {
        return 0;
    }
    for (const char *p = name + 1; *p; p++) {
        if (!is_alpha_((unsigned char)*p) && !is_digit((unsigned char)*p)) {
            return 0;
        }
    }
    return 1;
}

/* Appends label value v escaped (\\, \", \n); bytes that are not UTF-8 become '?'. Returns 0,
 * or -1 when it does not fit in cap bytes (out[*len] stays within cap, NUL not written). */
static int escape_value(char *out, size_t *len, size_t cap, const char *v)
{
    size_t n = strlen(v);
    const unsigned char *s = (const unsigned char *)v;
    for (size_t i = 0; i < n;) {
        char esc[2];
        const char *put;
        size_t k;
        size_t u = px_utf8_len(s + i, n - i);
        if (s[i] == '\\' || s[i] == '"' || s[i] == '\n') {
            esc[0] = '\\';
            esc[1] = s[i] == '\n' ? 'n' : (char)s[i];
            put = esc, k = 2, u = 1;
        } else if (u == 0) {
            put = "?", k = 1, u = 1;
        } else {
            put = (const char *)s + i, k = u;
        }
        if (*len + k >= cap) {
            return -1;
        }
        memcpy(out + *len, put, k);
        *len += k;
        i += u;
    }
    return 0;
}

static int append_label(char *out, size_t *len, size_t cap, const char *name, const char *value)
{
    size_t nl = strlen(name);
    if (*len + nl + 4 >= cap) {
        return -1;
    }
    if (*len) {
        out[(*len)++] = ',';
    }
    memcpy(out + *len, name, nl);
    *len += nl;
    out[(*len)++] = '=';
    out[(*len)++] = '"';
    if (escape_value(out, len, cap, value) < 0 || *len + 1 >= cap) {
        return -1;
    }
    out[(*len)++] = '"';
    out[*len] = '\0';
    return 0;
}

/* Shortest text that reads back as v; Prometheus spellings for the special values. */
static void fmt_value(char *buf, size_t n, double v)
{
    if (isnan(v)) {
        snprintf(buf, n, "NaN");
    } else if (isinf(v)) {
        snprintf(buf, n, v > 0 ? "+Inf" : "-Inf");
    } else if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(buf, n, "%.0f", v);
    } else {
        snprintf(buf, n, "%.15g", v);
        if (strtod(buf, NULL) != v) {
            snprintf(buf, n, "%.17g", v);
        }
    }
}

static uint32_t hash_str(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) {
        h = (h ^ (unsigned char)*s) * 16777619u;
    }
    return h;
}

/* --- registry ---------------------------------------------------------------------------- */

px_metrics *px_metrics_create(void)
{
    return px_xcalloc(1, sizeof(px_metrics));
}

static void series_free(px_series *s)
{
    free(s->labels);
    free(s->buckets);
    free(s);
}

void px_metric_clear(px_metric *f)
{
    px_series *s = f->head;
    while (s) {
        px_series *next = s->next;
        series_free(s);
        s = next;
    }
    f->head = f->tail = NULL;
    f->nseries = 0;
    memset(f->table, 0, f->tcap * sizeof(*f->table));
}

static void family_free(px_metric *f)
{
    px_metric_clear(f);
    free(f->table);
    for (size_t i = 0; i < f->nlabels; i++) {
        free(f->label_names[i]);
    }
    free(f->label_names);
    free(f->bounds);
    free(f->name);
    free(f->help);
    free(f);
}

void px_metrics_destroy(px_metrics *m)
{
    if (!m) {
        return;
    }
    px_metric *f = m->head;
    while (f) {
        px_metric *next = f->next;
        family_free(f);
        f = next;
    }
    free(m->host_label);
    free(m);
}

static px_metric *family_find(const px_metrics *m, const char *name)
{
    for (px_metric *f = m->head; f; f = f->next) {
        if (strcmp(f->name, name) == 0) {
            return f;
        }
    }
    return NULL;
}

px_metric *px_metrics_family(px_metrics *m, int type, const char *name, const char *help,
                             const char *const *label_names, const double *bounds,
                             size_t nbounds)
{
    if (!m || !px_metrics_valid_name(name) ||
        (type != PX_METRIC_COUNTER && type != PX_METRIC_GAUGE && type != PX_METRIC_HISTOGRAM)) {
        return NULL;
    }
    px_metric *f = family_find(m, name);
    if (f) {
        return f->type == type ? f : NULL;
    }
    size_t nl = 0;
    for (; label_names && label_names[nl]; nl++) {
        const char *ln = label_names[nl];
        if (!px_metrics_valid_label(ln) || (type == PX_METRIC_HISTOGRAM && !strcmp(ln, "le"))) {
            return NULL;
        }
        for (size_t j = 0; j < nl; j++) {
            if (strcmp(label_names[j], ln) == 0) {
                return NULL;
            }
        }
    }
    if (type == PX_METRIC_HISTOGRAM) {
        for (size_t i = 0; i < nbounds; i++) {
            if (!isfinite(bounds[i]) || (i && bounds[i] <= bounds[i - 1])) {
                return NULL;
            }
        }
    } else {
        nbounds = 0;
    }
    f = px_xcalloc(1, sizeof(*f));
    f->type = type;
    f->name = px_xstrdup(name);
    f->help = px_xstrdup(help ? help : "");
    f->nlabels = nl;
    f->label_names = px_xcalloc(nl ? nl : 1, sizeof(char *));
    for (size_t i = 0; i < nl; i++) {
        f->label_names[i] = px_xstrdup(label_names[i]);
    }
    f->nbounds = nbounds;
    if (nbounds) {
        f->bounds = px_xmalloc(nbounds * sizeof(double));
        memcpy(f->bounds, bounds, nbounds * sizeof(double));
    }
    f->tcap = 16;
    f->table = px_xcalloc(f->tcap, sizeof(*f->table));
    if (m->tail) {
        m->tail->next = f;
    } else {
        m->head = f;
    }
    m->tail = f;
    m->nfamilies++;
    return f;
}

static void table_grow(px_metric *f)
{
    size_t cap = f->tcap * 2;
    px_series **t = px_xcalloc(cap, sizeof(*t));
    for (px_series *s = f->head; s; s = s->next) {
        size_t i = s->hash & (cap - 1);
        s->chain = t[i];
        t[i] = s;
    }
    free(f->table);
    f->table = t;
    f->tcap = cap;
}

px_series *px_metric_at_raw(px_metric *f, const char *rendered)
{
    if (!f || !rendered) {
        return NULL;
    }
    uint32_t h = hash_str(rendered);
    for (px_series *s = f->table[h & (f->tcap - 1)]; s; s = s->chain) {
        if (s->hash == h && strcmp(s->labels, rendered) == 0) {
            return s;
        }
    }
    if (f->nseries >= PX_METRICS_MAX_SERIES || strlen(rendered) > PX_METRICS_MAX_LABELS_LEN) {
        return NULL;
    }
    if (f->nseries >= f->tcap) {
        table_grow(f);
    }
    px_series *s = px_xcalloc(1, sizeof(*s));
    s->labels = px_xstrdup(rendered);
    s->hash = h;
    s->family = f;
    if (f->type == PX_METRIC_HISTOGRAM) {
        s->buckets = px_xcalloc(f->nbounds + 1, sizeof(uint64_t));
    }
    size_t i = h & (f->tcap - 1);
    s->chain = f->table[i];
    f->table[i] = s;
    if (f->tail) {
        f->tail->next = s;
    } else {
        f->head = s;
    }
    f->tail = s;
    f->nseries++;
    return s;
}

px_series *px_metric_at(px_metric *f, const char *const *values)
{
    if (!f) {
        return NULL;
    }
    char buf[PX_METRICS_MAX_LABELS_LEN + 1];
    size_t len = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < f->nlabels; i++) {
        const char *v = values && values[i] ? values[i] : "";
        if (append_label(buf, &len, sizeof(buf), f->label_names[i], v) < 0) {
            return NULL;
        }
    }
    return px_metric_at_raw(f, buf);
}

void px_series_add(px_series *s, double delta)
{
    if (!s || isnan(delta) || s->family->type == PX_METRIC_HISTOGRAM ||
        (s->family->type == PX_METRIC_COUNTER && delta < 0)) {
        return;
    }
    s->value += delta;
}

void px_series_set(px_series *s, double value)
{
    if (s && s->family->type != PX_METRIC_HISTOGRAM) {
        s->value = value;
    }
}

void px_series_observe(px_series *s, double v)
{
    if (!s || s->family->type != PX_METRIC_HISTOGRAM || isnan(v)) {
        return;
    }
    const px_metric *f = s->family;
    size_t i = 0;
    while (i < f->nbounds && v > f->bounds[i]) {
        i++;
    }
    s->buckets[i]++;
    s->count++;
    s->value += v;
}

double px_series_value(const px_series *s)
{
    if (!s) {
        return 0;
    }
    return s->buckets ? (double)s->count : s->value;
}

void px_metrics_add(px_metrics *m, const char *name, const char *const *values, double delta)
{
    px_series_add(px_metric_at(m ? family_find(m, name) : NULL, values), delta);
}

void px_metrics_set(px_metrics *m, const char *name, const char *const *values, double value)
{
    px_series_set(px_metric_at(m ? family_find(m, name) : NULL, values), value);
}

/* --- rendering --------------------------------------------------------------------------- */

static const char *type_name(int type)
{
    switch (type) {
    case PX_METRIC_COUNTER: return "counter";
    case PX_METRIC_GAUGE: return "gauge";
    default: return "histogram";
    }
}

/* HELP text escapes only backslash and newline. */
static void put_help(mbuf *b, const char *help)
{
    for (const char *p = help; *p; p++) {
        if (*p == '\\') {
            mb_puts(b, "\\\\");
        } else if (*p == '\n') {
            mb_puts(b, "\\n");
        } else {
            mb_putn(b, p, 1);
        }
    }
}

static void put_sample(mbuf *b, const char *name, const char *suffix, const char *host,
                       const char *labels, const char *extra, double v)
{
    char num[40];
    fmt_value(num, sizeof(num), v);
    mb_puts(b, name);
    mb_puts(b, suffix);
    if (host || *labels || extra) {
        mb_printf(b, "{%s%s%s%s%s}", host ? host : "", host && (*labels || extra) ? "," : "",
                  labels, *labels && extra ? "," : "", extra ? extra : "");
    }
    mb_printf(b, " %s\n", num);
}

void px_metrics_set_host(px_metrics *m, const char *host_id)
{
    free(m->host_label);
    m->host_label = NULL;
    if (host_id) {
        char buf[PX_METRICS_MAX_LABELS_LEN + 1];
        size_t len = 0;
        buf[0] = '\0';
        if (append_label(buf, &len, sizeof(buf), "host", host_id) == 0) {
            m->host_label = px_xstrdup(buf);
        }
    }
}

char *px_metrics_render(const px_metrics *m, size_t *len)
{
    mbuf b = {0};
    mb_reserve(&b, 4096);
    for (const px_metric *f = m ? m->head : NULL; f; f = f->next) {
        mb_printf(&b, "# HELP %s%s", f->name, *f->help ? " " : "");
        put_help(&b, f->help);
        mb_printf(&b, "\n# TYPE %s %s\n", f->name, type_name(f->type));
        for (const px_series *s = f->head; s; s = s->next) {
            if (f->type != PX_METRIC_HISTOGRAM) {
                put_sample(&b, f->name, "", m->host_label, s->labels, NULL, s->value);
                continue;
            }
            uint64_t cum = 0;
            for (size_t i = 0; i <= f->nbounds; i++) {
                char le[48], num[40];
                cum += s->buckets[i];
                if (i < f->nbounds) {
                    fmt_value(num, sizeof(num), f->bounds[i]);
                } else {
                    snprintf(num, sizeof(num), "+Inf");
                }
                snprintf(le, sizeof(le), "le=\"%s\"", num);
                put_sample(&b, f->name, "_bucket", m->host_label, s->labels, le, (double)cum);
            }
            put_sample(&b, f->name, "_sum", m->host_label, s->labels, NULL, s->value);
            put_sample(&b, f->name, "_count", m->host_label, s->labels, NULL,
                       (double)s->count);
        }
    }
    if (len) {
        *len = b.len;
    }
    return b.p;
}

/* --- plugin label text ------------------------------------------------------------------- */

typedef struct label_pair {
    char name[64];
    char *value; /* decoded (owned) */
} label_pair;

static int pair_cmp(const void *a, const void *b)
{
    return strcmp(((const label_pair *)a)->name, ((const label_pair *)b)->name);
}

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t') {
        p++;
    }
    return p;
}

/* Parses text into pairs; returns the count or -1 with *why set. */
static int parse_pairs(const char *text, label_pair *pairs, size_t max, const char **why)
{
    int n = 0;
    const char *p = skip_ws(text);
    while (*p) {
        if ((size_t)n == max) {
            *why = "too many labels";
            return -1;
        }
        label_pair *lp = &pairs[n];
        size_t nl = 0;
        while (is_alpha_((unsigned char)*p) || (nl && is_digit((unsigned char)*p))) {
            if (nl + 1 >= sizeof(lp->name)) {
                *why = "label name too long";
                return -1;
            }
            lp->name[nl++] = *p++;
        }
        lp->name[nl] = '\0';
        if (!px_metrics_valid_label(lp->name)) {
            *why = "invalid label name";
            return -1;
        }
        p = skip_ws(p);
        if (*p++ != '=') {
            *why = "expected '=' after a label name";
            return -1;
        }
        p = skip_ws(p);
        if (*p++ != '"') {
            *why = "label value must be double-quoted";
            return -1;
        }
        mbuf v = {0};
        mb_reserve(&v, 16);
        for (;;) {
            if (*p == '\0' || *p == '\n') {
                free(v.p);
                *why = "unterminated label value";
                return -1;
            }
            if (*p == '"') {
                p++;
                break;
            }
            if (*p == '\\') {
                char c = p[1] == 'n' ? '\n' : p[1];
                if (c != '\\' && c != '"' && c != '\n') {
                    free(v.p);
                    *why = "invalid escape in a label value";
                    return -1;
                }
                mb_putn(&v, &c, 1);
                p += 2;
                continue;
            }
            size_t u = px_utf8_len((const unsigned char *)p, strlen(p));
            if (!u) {
                free(v.p);
                *why = "label value is not UTF-8";
                return -1;
            }
            mb_putn(&v, p, u);
            p += u;
        }
        lp->value = v.p;
        n++;
        p = skip_ws(p);
        if (*p == ',') {
            p = skip_ws(p + 1);
        } else if (*p) {
            *why = "expected ',' between labels";
            return -1;
        }
    }
    return n;
}

int px_metrics_parse_labels(const char *text, const char *first_name, const char *first_value,
                            char **out, const char **why)
{
    label_pair pairs[MAX_PLUGIN_LABELS];
    memset(pairs, 0, sizeof(pairs));
    const char *reason = NULL;
    int n = parse_pairs(text ? text : "", pairs, MAX_PLUGIN_LABELS, &reason);
    if (n >= 0) {
        qsort(pairs, (size_t)n, sizeof(*pairs), pair_cmp);
        for (int i = 0; i < n && !reason; i++) {
            if (i && strcmp(pairs[i].name, pairs[i - 1].name) == 0) {
                reason = "duplicate label name";
            } else if ((first_name && strcmp(pairs[i].name, first_name) == 0) ||
                       strcmp(pairs[i].name, "host") == 0) {
                reason = "reserved label name";
            }
        }
    }
    char buf[PX_METRICS_MAX_LABELS_LEN + 1];
    size_t len = 0;
    buf[0] = '\0';
    if (!reason && first_name &&
        append_label(buf, &len, sizeof(buf), first_name, first_value ? first_value : "") < 0) {
        reason = "labels too long";
    }
    for (int i = 0; i < n && !reason; i++) {
        if (append_label(buf, &len, sizeof(buf), pairs[i].name, pairs[i].value) < 0) {
            reason = "labels too long";
        }
    }
    for (size_t i = 0; i < MAX_PLUGIN_LABELS; i++) {
        free(pairs[i].value);
    }
    if (reason) {
        *why = reason;
        return PX_EINVAL;
    }
    *out = px_xstrdup(buf);
    return 0;
}

/* --- the host's registry ----------------------------------------------------------------- */

static const double latency_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                        1,     2.5,  5,     10,   30,  60,  300, 1800};

static struct {
    px_metrics *m;
    px_metric *received, *deliveries, *latency, *reloads;
    size_t plugin_families;
    char *warned[MAX_WARNED];
    size_t nwarned;
} G;

px_metrics *px_metrics_global(void)
{
    if (G.m) {
        return G.m;
    }
    G.m = px_metrics_create();
    G.received = px_metrics_family(G.m, PX_METRIC_COUNTER, "plexus_events_received_total",
                                   "Events emitted by each source instance.",
                                   (const char *[]){"source", NULL}, NULL, 0);
    G.deliveries = px_metrics_family(
        G.m, PX_METRIC_COUNTER, "plexus_deliveries_total",
        "Delivery attempts by outcome: done, retry, timeout (retried later), rejected or dead "
        "(dead-lettered).",
        (const char *[]){"pipeline", "sink", "outcome", NULL}, NULL, 0);
    G.latency = px_metrics_family(
        G.m, PX_METRIC_HISTOGRAM, "plexus_delivery_latency_seconds",
        "Time from an event's time to its successful delivery, per sink.",
        (const char *[]){"sink", NULL}, latency_bounds,
        sizeof(latency_bounds) / sizeof(latency_bounds[0]));
    G.reloads = px_metrics_family(G.m, PX_METRIC_COUNTER, "plexus_reloads_total",
                                  "Configuration and plugin reloads by result.",
                                  (const char *[]){"result", NULL}, NULL, 0);
    px_metric_at(G.reloads, (const char *[]){"ok"});
    px_metric_at(G.reloads, (const char *[]){"failed"});
    return G.m;
}

void px_metrics_global_free(void)
{
    px_metrics_destroy(G.m);
    for (size_t i = 0; i < G.nwarned; i++) {
        free(G.warned[i]);
    }
    memset(&G, 0, sizeof(G));
}

void px_metrics_event_received(const char *source)
{
    px_metrics_global();
    px_series_add(px_metric_at(G.received, &source), 1);
}

static double now_s(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

void px_metrics_delivery(const char *pipeline, const char *sink, const char *outcome,
                         int64_t event_time_ms)
{
    px_metrics_global();
    px_series_add(px_metric_at(G.deliveries, (const char *[]){pipeline, sink, outcome}), 1);
    if (event_time_ms > 0 && strcmp(outcome, "done") == 0) {
        double lat = now_s() - (double)event_time_ms / 1000.0;
        px_series_observe(px_metric_at(G.latency, &sink), lat < 0 ? 0 : lat);
    }
}

void px_metrics_reload(const char *result)
{
    px_metrics_global();
    px_series_add(px_metric_at(G.reloads, &result), 1);
}

/* One warning per instance and metric name, for the first MAX_WARNED of them. */
static void warn_once(const char *instance, const char *name, const char *why)
{
    char *key = px_xasprintf("%s\x1f%s", instance, name);
    for (size_t i = 0; i < G.nwarned; i++) {
        if (strcmp(G.warned[i], key) == 0) {
            free(key);
            return;
        }
    }
    if (G.nwarned == MAX_WARNED) {
        free(key);
        return;
    }
    G.warned[G.nwarned++] = key;
    PX_LOG_WARN(instance, "plugin metric ignored name=%.80s reason=%s%s", name, why,
                G.nwarned == MAX_WARNED ? " (further such warnings suppressed)" : "");
}

static int valid_plugin_name(const char *name)
{
    if (!name || !is_alpha_((unsigned char)name[0]) || strlen(name) > 100) {
        return 0;
    }
    for (const char *p = name; *p; p++) {
        if (!is_alpha_((unsigned char)*p) && !is_digit((unsigned char)*p)) {
            return 0;
        }
    }
    return 1;
}

static void plugin_update(const char *instance, const char *name, const char *labels, double v,
                          int type)
{
    px_metrics_global();
    if (!instance) {
        return;
    }
    const char *why = NULL;
    char *fname = NULL, *rendered = NULL;
    if (!valid_plugin_name(name)) {
        why = "invalid name (letters, digits and _ only)";
        name = name ? name : "(null)";
    } else if (type == PX_METRIC_COUNTER && !(v >= 0 && isfinite(v))) {
        why = "a counter only grows by a finite amount";
    } else if (px_metrics_parse_labels(labels, "instance", instance, &rendered, &why) == 0) {
        fname = px_xasprintf("plexus_plugin_%s", name);
        px_metric *f = family_find(G.m, fname);
        if (f && f->type != type) {
            why = f->type == PX_METRIC_COUNTER ? "name already used by a counter"
                                               : "name already used by a gauge";
        } else if (!f && G.plugin_families >= MAX_PLUGIN_FAMILIES) {
            why = "too many plugin metric names";
        } else {
            if (!f) {
                f = px_metrics_family(G.m, type, fname,
                                      type == PX_METRIC_COUNTER ? "Plugin-defined counter."
                                                                : "Plugin-defined gauge.",
                                      NULL, NULL, 0);
                G.plugin_families++;
            }
            px_series *s = px_metric_at_raw(f, rendered);
            if (!s) {
                why = "too many label sets";
            } else if (type == PX_METRIC_COUNTER) {
                px_series_add(s, v);
            } else {
                px_series_set(s, v);
            }
        }
    }
    if (why) {
        warn_once(instance, name, why);
    }
    free(fname);
    free(rendered);
}

void px_metrics_plugin_counter(const char *instance, const char *name, const char *labels,
                               double delta)
{
    plugin_update(instance, name, labels, delta, PX_METRIC_COUNTER);
}

void px_metrics_plugin_gauge(const char *instance, const char *name, const char *labels,
                             double value)
{
    plugin_update(instance, name, labels, value, PX_METRIC_GAUGE);
}
