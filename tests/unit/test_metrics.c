/* Unit tests of the metrics registry: rendering, escaping, histograms, validation, plugin
 * metrics. */
#include "../../host/core/metrics.c"

#include <stdlib.h>

#include "test.h"

static char *render(px_metrics *m)
{
    return px_metrics_render(m, NULL);
}

static void test_counter_gauge_render(void)
{
    px_metrics *m = px_metrics_create();
    px_metric *c = px_metrics_family(m, PX_METRIC_COUNTER, "t_events_total", "Events seen.",
                                     (const char *[]){"source", NULL}, NULL, 0);
    px_metric *g = px_metrics_family(m, PX_METRIC_GAUGE, "t_pending", "Pending.", NULL, NULL, 0);
    PX_ASSERT(c && g);
    px_series *a = px_metric_at(c, (const char *[]){"a"});
    px_series_add(a, 1);
    px_series_add(a, 2);
    px_series_add(a, -5); /* counters only grow */
    PX_ASSERT(px_metric_at(c, (const char *[]){"a"}) == a);
    px_series_add(px_metric_at(c, (const char *[]){"b"}), 0.5);
    px_series_set(px_metric_at(g, NULL), -3);
    px_series_add(px_metric_at(g, NULL), 1);
    char *out = render(m);
    PX_ASSERT_STR_EQ(out, "# HELP t_events_total Events seen.\n"
                          "# TYPE t_events_total counter\n"
                          "t_events_total{source=\"a\"} 3\n"
                          "t_events_total{source=\"b\"} 0.5\n"
                          "# HELP t_pending Pending.\n"
                          "# TYPE t_pending gauge\n"
                          "t_pending -2\n");
    free(out);
    /* Same name again: the same family; another type: refused. */
    PX_ASSERT(px_metrics_family(m, PX_METRIC_COUNTER, "t_events_total", "x", NULL, NULL, 0) == c);
    PX_ASSERT(px_metrics_family(m, PX_METRIC_GAUGE, "t_events_total", "x", NULL, NULL, 0) ==
              NULL);
    px_metrics_destroy(m);
}

/* Several hosts on one store: every sample carries host="...", first; plugins cannot shadow it. */
static void test_host_label(void)
{
    px_metrics *m = px_metrics_create();
    px_metric *c = px_metrics_family(m, PX_METRIC_COUNTER, "t_total", "T.",
                                     (const char *[]){"sink", NULL}, NULL, 0);
    px_metric *g = px_metrics_family(m, PX_METRIC_GAUGE, "t_up", "Up.", NULL, NULL, 0);
    px_metric *h = px_metrics_family(m, PX_METRIC_HISTOGRAM, "t_sec", "S.", NULL,
                                     (const double[]){1}, 1);
    px_series_add(px_metric_at(c, (const char *[]){"out"}), 2);
    px_series_set(px_metric_at(g, NULL), 1);
    px_series_observe(px_metric_at(h, NULL), 0.5);
    px_metrics_set_host(m, "h\"1");
    char *out = render(m);
    PX_ASSERT_STR_HAS(out, "t_total{host=\"h\\\"1\",sink=\"out\"} 2\n");
    PX_ASSERT_STR_HAS(out, "t_up{host=\"h\\\"1\"} 1\n");
    PX_ASSERT_STR_HAS(out, "t_sec_bucket{host=\"h\\\"1\",le=\"1\"} 1\n");
    PX_ASSERT_STR_HAS(out, "t_sec_count{host=\"h\\\"1\"} 1\n");
    free(out);
    px_metrics_set_host(m, NULL);
    out = render(m);
    PX_ASSERT_STR_HAS(out, "t_up 1\n");
    free(out);
    char *rendered = NULL;
    const char *why = NULL;
    PX_ASSERT_INT_EQ(px_metrics_parse_labels("host=\"x\"", "instance", "i", &rendered, &why),
                     PX_EINVAL);
    PX_ASSERT_STR_EQ(why, "reserved label name");
    px_metrics_destroy(m);
}

static void test_label_and_help_escaping(void)
{
    px_metrics *m = px_metrics_create();
    px_metric *c = px_metrics_family(m, PX_METRIC_COUNTER, "t_x", "line1\nback\\slash \"q\"",
                                     (const char *[]){"a", "b", NULL}, NULL, 0);
    px_series_add(px_metric_at(c, (const char *[]){"q\"uote", "back\\slash\nnl"}), 1);
    px_series_add(px_metric_at(c, (const char *[]){"caf\xc3\xa9", "bad\xff"}), 1);
    char *out = render(m);
    PX_ASSERT_STR_HAS(out, "# HELP t_x line1\\nback\\\\slash \"q\"\n");
    PX_ASSERT_STR_HAS(out, "t_x{a=\"q\\\"uote\",b=\"back\\\\slash\\nnl\"} 1\n");
    PX_ASSERT_STR_HAS(out, "t_x{a=\"caf\xc3\xa9\",b=\"bad?\"} 1\n");
    free(out);
    px_metrics_destroy(m);
}

static void test_histogram_buckets(void)
{
    px_metrics *m = px_metrics_create();
    const double b[] = {0.1, 1, 10};
    px_metric *h = px_metrics_family(m, PX_METRIC_HISTOGRAM, "t_lat_seconds", "Latency.",
                                     (const char *[]){"sink", NULL}, b, 3);
    PX_ASSERT(h);
    px_series *s = px_metric_at(h, (const char *[]){"out"});
    px_series_observe(s, 0.05);
    px_series_observe(s, 0.1); /* le is inclusive */
    px_series_observe(s, 5);
    px_series_observe(s, 100);
    px_series_add(s, 7); /* not for histograms */
    PX_ASSERT_INT_EQ(px_series_value(s), 4);
    char *out = render(m);
    PX_ASSERT_STR_EQ(out, "# HELP t_lat_seconds Latency.\n"
                          "# TYPE t_lat_seconds histogram\n"
                          "t_lat_seconds_bucket{sink=\"out\",le=\"0.1\"} 2\n"
                          "t_lat_seconds_bucket{sink=\"out\",le=\"1\"} 2\n"
                          "t_lat_seconds_bucket{sink=\"out\",le=\"10\"} 3\n"
                          "t_lat_seconds_bucket{sink=\"out\",le=\"+Inf\"} 4\n"
                          "t_lat_seconds_sum{sink=\"out\"} 105.15\n"
                          "t_lat_seconds_count{sink=\"out\"} 4\n");
    free(out);
    /* Bounds must increase; "le" is not a label of a histogram. */
    const double bad[] = {1, 1};
    PX_ASSERT(!px_metrics_family(m, PX_METRIC_HISTOGRAM, "t_h2", "", NULL, bad, 2));
    PX_ASSERT(!px_metrics_family(m, PX_METRIC_HISTOGRAM, "t_h3", "",
                                 (const char *[]){"le", NULL}, b, 3));
    px_metrics_destroy(m);
}

static void test_values_format(void)
{
    char buf[40];
    fmt_value(buf, sizeof(buf), 0.1);
    PX_ASSERT_STR_EQ(buf, "0.1");
    fmt_value(buf, sizeof(buf), 1e20);
    PX_ASSERT_STR_EQ(buf, "1e+20");
    fmt_value(buf, sizeof(buf), 123456789);
    PX_ASSERT_STR_EQ(buf, "123456789");
    fmt_value(buf, sizeof(buf), NAN);
    PX_ASSERT_STR_EQ(buf, "NaN");
    fmt_value(buf, sizeof(buf), -INFINITY);
    PX_ASSERT_STR_EQ(buf, "-Inf");
    fmt_value(buf, sizeof(buf), 1.0 / 3);
    PX_ASSERT(strtod(buf, NULL) == 1.0 / 3);
}

static void test_name_validation(void)
{
    PX_ASSERT(px_metrics_valid_name("plexus_events_total"));
    PX_ASSERT(px_metrics_valid_name("a:b_c9"));
    PX_ASSERT(!px_metrics_valid_name("9abc"));
    PX_ASSERT(!px_metrics_valid_name("a-b"));
    PX_ASSERT(!px_metrics_valid_name(""));
    PX_ASSERT(px_metrics_valid_label("sink"));
    PX_ASSERT(!px_metrics_valid_label("__name__"));
    PX_ASSERT(!px_metrics_valid_label("a:b"));
    PX_ASSERT(!px_metrics_valid_label("1a"));
    px_metrics *m = px_metrics_create();
    PX_ASSERT(!px_metrics_family(m, PX_METRIC_GAUGE, "bad-name", "", NULL, NULL, 0));
    PX_ASSERT(!px_metrics_family(m, PX_METRIC_GAUGE, "ok", "", (const char *[]){"x-y", NULL},
                                 NULL, 0));
    PX_ASSERT(!px_metrics_family(m, PX_METRIC_GAUGE, "ok", "", (const char *[]){"x", "x", NULL},
                                 NULL, 0));
    char *out = render(m);
    PX_ASSERT_STR_EQ(out, "");
    free(out);
    px_metrics_destroy(m);
}

static void test_parse_labels(void)
{
    char *out = NULL;
    const char *why = NULL;
    PX_ASSERT_INT_EQ(px_metrics_parse_labels(" zone = \"eu\" , a=\"x\\\"y\\\\z\\n\",", "instance",
                                             "in1", &out, &why),
                     0);
    PX_ASSERT_STR_EQ(out, "instance=\"in1\",a=\"x\\\"y\\\\z\\n\",zone=\"eu\"");
    free(out);
    PX_ASSERT_INT_EQ(px_metrics_parse_labels(NULL, NULL, NULL, &out, &why), 0);
    PX_ASSERT_STR_EQ(out, "");
    free(out);
    const char *bad[] = {"a=b", "a=\"x", "1a=\"x\"", "a=\"x\" b=\"y\"", "a=\"x\",a=\"y\"",
                         "instance=\"x\"", "__a=\"x\"", "a=\"\\t\"", "a=\"\xff\"", "=\"x\""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why = NULL;
        out = NULL;
        if (px_metrics_parse_labels(bad[i], "instance", "i", &out, &why) != PX_EINVAL || !why ||
            out) {
            fprintf(stderr, "accepted bad labels: %s\n", bad[i]);
            free(out);
            PX_ASSERT(0);
        }
    }
}

static void test_plugin_metrics(void)
{
    px_log_set_level(PX_LOG_ERROR); /* the warnings are expected */
    px_metrics_plugin_counter("src", "polls_total", "queue=\"q1\"", 2);
    px_metrics_plugin_counter("src", "polls_total", " queue = \"q1\" ", 3);
    px_metrics_plugin_counter("src", "polls_total", NULL, 1);
    px_metrics_plugin_counter("src", "polls_total", "queue=\"q1\"", -1); /* ignored */
    px_metrics_plugin_gauge("src", "polls_total", NULL, 9);               /* type clash */
    px_metrics_plugin_gauge("sink", "depth", "b=\"2\",a=\"1\"", 4);
    px_metrics_plugin_gauge("sink", "depth", "a=\"1\",b=\"2\"", 5);
    px_metrics_plugin_gauge("sink", "bad-name", NULL, 1);
    px_metrics_plugin_gauge("sink", "depth", "instance=\"forged\"", 1);
    char *out = render(px_metrics_global());
    PX_ASSERT_STR_HAS(out, "# TYPE plexus_plugin_polls_total counter\n"
                           "plexus_plugin_polls_total{instance=\"src\",queue=\"q1\"} 5\n"
                           "plexus_plugin_polls_total{instance=\"src\"} 1\n");
    PX_ASSERT_STR_HAS(out, "# TYPE plexus_plugin_depth gauge\n"
                           "plexus_plugin_depth{instance=\"sink\",a=\"1\",b=\"2\"} 5\n");
    PX_ASSERT(!strstr(out, "forged"));
    PX_ASSERT(!strstr(out, "bad"));
    PX_ASSERT(!strstr(out, "polls_total 9"));
    free(out);
    PX_ASSERT_INT_EQ(G.nwarned, 3); /* src/polls_total once, sink/bad-name, sink/depth */
    px_metrics_global_free();
    px_log_set_level(PX_LOG_INFO);
}

static void test_host_helpers(void)
{
    px_metrics_event_received("src");
    px_metrics_event_received("src");
    px_metrics_delivery("p", "out", "done", 1);
    px_metrics_delivery("p", "out", "retry", 0);
    px_metrics_reload("ok");
    char *out = render(px_metrics_global());
    PX_ASSERT_STR_HAS(out, "plexus_events_received_total{source=\"src\"} 2\n");
    PX_ASSERT_STR_HAS(out, "plexus_deliveries_total{pipeline=\"p\",sink=\"out\","
                           "outcome=\"done\"} 1\n");
    PX_ASSERT_STR_HAS(out, "plexus_delivery_latency_seconds_bucket{sink=\"out\",le=\"+Inf\"} 1\n");
    /* An event from 1970 is far older than the last bound. */
    PX_ASSERT_STR_HAS(out, "plexus_delivery_latency_seconds_bucket{sink=\"out\",le=\"1800\"} 0\n");
    PX_ASSERT_STR_HAS(out, "plexus_reloads_total{result=\"ok\"} 1\n");
    PX_ASSERT_STR_HAS(out, "plexus_reloads_total{result=\"failed\"} 0\n");
    free(out);
    px_metrics_global_free();
}

static void test_clear_and_many_series(void)
{
    px_metrics *m = px_metrics_create();
    px_metric *g = px_metrics_family(m, PX_METRIC_GAUGE, "t_g", "", (const char *[]){"k", NULL},
                                     NULL, 0);
    char v[16];
    for (int i = 0; i < 1000; i++) {
        snprintf(v, sizeof(v), "v%d", i);
        px_series_set(px_metric_at(g, (const char *[]){v}), i);
    }
    for (int i = 0; i < 1000; i++) {
        snprintf(v, sizeof(v), "v%d", i);
        PX_ASSERT_INT_EQ(px_series_value(px_metric_at(g, (const char *[]){v})), i);
    }
    PX_ASSERT_INT_EQ(g->nseries, 1000);
    px_metric_clear(g);
    char *out = render(m);
    PX_ASSERT_STR_EQ(out, "# HELP t_g\n# TYPE t_g gauge\n");
    free(out);
    px_series_set(px_metric_at(g, (const char *[]){"again"}), 1);
    PX_ASSERT_INT_EQ(g->nseries, 1);
    px_metrics_destroy(m);
}

PX_TEST_MAIN(PX_TEST(test_counter_gauge_render), PX_TEST(test_host_label),
             PX_TEST(test_label_and_help_escaping),
             PX_TEST(test_histogram_buckets), PX_TEST(test_values_format),
             PX_TEST(test_name_validation), PX_TEST(test_parse_labels),
             PX_TEST(test_plugin_metrics), PX_TEST(test_host_helpers),
             PX_TEST(test_clear_and_many_series))
