/* Metrics: a registry of counters, gauges and histograms with label sets, rendered in the
 * Prometheus text exposition format (version 0.0.4). A family is a metric name with its help text
 * and type; a series is one label set of a family. Looking a series up hashes its rendered label
 * set once; hot paths may keep the series handle instead, which stays valid until its family is
 * cleared or the registry destroyed. The host's own metrics live in one process-wide registry
 * (px_metrics_global) with helpers for the event and delivery paths; figures that already live
 * elsewhere (spool, dispatcher, HTTP servers) are copied in at scrape time (see admin.c).
 * Loop thread only. */
#ifndef PX_METRICS_H
#define PX_METRICS_H

#include <stddef.h>
#include <stdint.h>

typedef struct px_metrics px_metrics;
typedef struct px_metric px_metric; /* a family */
typedef struct px_series px_series; /* one label set of a family */

enum px_metric_type { PX_METRIC_COUNTER = 1, PX_METRIC_GAUGE, PX_METRIC_HISTOGRAM };

/* Limits: label sets longer than this are refused, series beyond the cap are not created. */
#define PX_METRICS_MAX_LABELS_LEN 1024
#define PX_METRICS_MAX_SERIES 10000

/* A new, empty registry (owned by caller; px_metrics_destroy). */
px_metrics *px_metrics_create(void);
/* Frees m and every family and series in it. NULL is a no-op. */
void px_metrics_destroy(px_metrics *m);

/* Returns the family `name` (borrowed, copied), creating it when missing. `help` (borrowed,
 * copied) is used at creation. label_names (borrowed, copied; NULL-terminated; NULL = none) fixes
 * the labels px_metric_at takes. bounds (borrowed, copied; nbounds strictly increasing finite
 * values, +Inf implied) are the histogram's upper bounds; NULL for other types. Returns a pointer
 * valid until px_metrics_destroy, or NULL when the name or a label name is invalid, the bounds
 * are not increasing, or a family of that name exists with another type. */
px_metric *px_metrics_family(px_metrics *m, int type, const char *name, const char *help,
                             const char *const *label_names, const double *bounds,
                             size_t nbounds);

/* The series of family f for label values (borrowed; as many as f's label names, in order),
 * created at 0 when missing. Returns a pointer valid until px_metric_clear(f) or the registry is
 * destroyed, or NULL when the label set is too long or f has PX_METRICS_MAX_SERIES series. */
px_series *px_metric_at(px_metric *f, const char *const *values);
/* Same, with the label set given already rendered and escaped (borrowed):
 * `name="value",name2="value2"` in a fixed order, "" for none. Not validated: for callers that
 * built it with px_metrics_parse_labels. */
px_series *px_metric_at_raw(px_metric *f, const char *rendered);
/* Removes every series of f (handles to them become invalid). For figures copied in at scrape
 * time, so that label sets that went away disappear. */
void px_metric_clear(px_metric *f);

/* Counter: adds delta (>= 0; others ignored). Gauge: adds delta (any sign). */
void px_series_add(px_series *s, double delta);
/* Gauge, or counter copied from a figure kept elsewhere: sets the value. */
void px_series_set(px_series *s, double value);
/* Histogram: counts value v in its bucket, adds it to the sum. */
void px_series_observe(px_series *s, double v);
/* The current value (counter/gauge) or count (histogram). */
double px_series_value(const px_series *s);

/* Shorthands: family lookup by name, then px_metric_at; nothing happens when the family does
 * not exist or the series cannot be created. */
void px_metrics_add(px_metrics *m, const char *name, const char *const *values, double delta);
void px_metrics_set(px_metrics *m, const char *name, const char *const *values, double value);

/* Renders every family in creation order: # HELP and # TYPE, then one line per series
 * (histograms: cumulative _bucket{le=...} lines ending with +Inf, then _sum and _count).
 * Returns a new NUL-terminated string (owned by caller; free) and its length in *len (may be
 * NULL). */
char *px_metrics_render(const px_metrics *m, size_t *len);

/* Validation helpers. A metric name matches [a-zA-Z_:][a-zA-Z0-9_:]*; a label name
 * [a-zA-Z_][a-zA-Z0-9_]* and does not start with "__". */
int px_metrics_valid_name(const char *name);
int px_metrics_valid_label(const char *name);

/* Parses a plugin's label text `key="value",key2="value2"` (borrowed; NULL or "" = none; spaces
 * around names, '=' and ',' allowed; values may use \\, \" and \n escapes). The result is
 * rendered canonically, sorted by name, with `first_name`="first_value" (both borrowed; NULL =
 * none) in front, which the text must not repeat. On success returns 0 and stores a new string
 * (owned by caller; free) in *out; on failure returns PX_EINVAL and writes the reason (static
 * storage) in *why. */
int px_metrics_parse_labels(const char *text, const char *first_name, const char *first_value,
                            char **out, const char **why);

/* Adds the label host="host_id" (borrowed, copied) to every sample m renders from now on (several
 * hosts on one store, so their series stay apart when scraped together); NULL removes it. Plugin
 * labels may not be named "host". */
void px_metrics_set_host(px_metrics *m, const char *host_id);

/* --- The host's registry --------------------------------------------------------------------- */

/* The process-wide registry with the host's families registered (created on first use). */
px_metrics *px_metrics_global(void);
/* Frees it (at process exit; the next px_metrics_global creates a fresh one). */
void px_metrics_global_free(void);

/* Event path: plexus_events_received_total{source}. */
void px_metrics_event_received(const char *source);
/* Delivery path: plexus_deliveries_total{pipeline,sink,outcome}, outcome one of "done",
 * "retry", "rejected", "dead", "timeout" (borrowed). For "done", event_time_ms > 0 also records
 * plexus_delivery_latency_seconds{sink} from the event's time to now. */
void px_metrics_delivery(const char *pipeline, const char *sink, const char *outcome,
                         int64_t event_time_ms);
/* Reload outcome: plexus_reloads_total{result} (result borrowed: "ok" or "failed"). */
void px_metrics_reload(const char *result);
/* Plugin-defined metrics (the SDK's counter_add / gauge_set): exported as
 * plexus_plugin_<name>{instance="<instance>",<labels>}. name must match [a-zA-Z_][a-zA-Z0-9_]*;
 * labels as for px_metrics_parse_labels ("instance" is reserved); counters only grow; a name keeps
 * the type it was first used with. Anything invalid is ignored, with one warning per instance and
 * name. All strings borrowed. */
void px_metrics_plugin_counter(const char *instance, const char *name, const char *labels,
                               double delta);
void px_metrics_plugin_gauge(const char *instance, const char *name, const char *labels,
                             double value);

#endif
