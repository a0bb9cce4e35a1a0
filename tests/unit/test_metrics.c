/* The metrics registry and the Prometheus text exposition (issue 12). */
#include "common/buf.h"
#include "metrics/metrics.h"
#include "test.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>

static const double bounds[] = {0.005, 0.5, 1, 2.5};

static const struct metrics_family fams[] = {
    {.name = "things_total",
     .help = "Things, with a \\ and a\nnewline.",
     .type = METRICS_COUNTER,
     .labels = {"kind"}},
    {.name = "level", .help = "A gauge.", .type = METRICS_GAUGE},
    {.name = "wait_seconds",
     .help = "Waits.",
     .type = METRICS_HISTOGRAM,
     .labels = {"op"},
     .buckets = bounds,
     .nbuckets = 4},
};

static int collect(struct metrics_collector *mc, void *arg)
{
    int *calls = arg;
    (*calls)++;
    metrics_value(mc, 0, (const char *const[]){"a\"b\\c\nd"}, 3);
    metrics_value(mc, 0, (const char *const[]){"plain"}, 0);
    metrics_value(mc, 1, NULL, 0.25);
    /* Not cumulative: 1 at <= 0.005, 0, 2 at <= 1, 0, 4 above 2.5. */
    const uint64_t counts[] = {1, 0, 2, 0, 4};
    metrics_histogram(mc, 2, (const char *const[]){"put"}, counts, 12.5);
    return 0;
}

static void test_exposition(void)
{
    struct metrics *m = metrics_create();
    int calls = 0;
    ASSERT_EQ(metrics_register(m, "widget", fams, 3, collect, &calls), 0);
    struct buf out;
    buf_init(&out, METRICS_TEXT_MAX);
    ASSERT_EQ(metrics_write_text(m, &out), 0);
    ASSERT_EQ(calls, 1);
    const char *want = "# HELP ferry_things_total Things, with a \\\\ and a\\nnewline.\n"
                       "# TYPE ferry_things_total counter\n"
                       "ferry_things_total{kind=\"a\\\"b\\\\c\\nd\"} 3\n"
                       "ferry_things_total{kind=\"plain\"} 0\n"
                       "# HELP ferry_level A gauge.\n"
                       "# TYPE ferry_level gauge\n"
                       "ferry_level 0.25\n"
                       "# HELP ferry_wait_seconds Waits.\n"
                       "# TYPE ferry_wait_seconds histogram\n"
                       "ferry_wait_seconds_bucket{op=\"put\",le=\"0.005\"} 1\n"
                       "ferry_wait_seconds_bucket{op=\"put\",le=\"0.5\"} 1\n"
                       "ferry_wait_seconds_bucket{op=\"put\",le=\"1\"} 3\n"
                       "ferry_wait_seconds_bucket{op=\"put\",le=\"2.5\"} 3\n"
                       "ferry_wait_seconds_bucket{op=\"put\",le=\"+Inf\"} 7\n"
                       "ferry_wait_seconds_sum{op=\"put\"} 12.5\n"
                       "ferry_wait_seconds_count{op=\"put\"} 7\n";
    ASSERT_MEMEQ(out.data, out.len, want);
    buf_finish(&out);
    metrics_destroy(m);
}

static void test_status(void)
{
    struct metrics *m = metrics_create();
    int calls = 0;
    ASSERT_EQ(metrics_register(m, "widget", fams, 3, collect, &calls), 0);
    json_t *section = json_object();
    struct buf text;
    buf_init(&text, 65536);
    ASSERT_EQ(metrics_render_status(m, "other", section, &text), 0);
    ASSERT_EQ(json_object_size(section), 0);
    ASSERT_EQ(calls, 0);
    ASSERT_EQ(metrics_render_status(m, "widget", section, &text), 0);
    char *js = json_dumps(section, JSON_COMPACT | JSON_SORT_KEYS);
    ASSERT_STREQ(js, "{\"metrics\":{\"level\":0.25,\"things_total\":[{\"kind\":\"a\\\"b\\\\c\\nd\","
                     "\"value\":3},{\"kind\":\"plain\",\"value\":0}],\"wait_seconds\":[{\"count\":"
                     "7,\"op\":\"put\",\"sum\":12.5}]}}");
    free(js);
    /* Labelled series that are zero are left out of the human text. */
    ASSERT_MEMEQ(text.data, text.len,
                 "  things_total{kind=a\"b\\c\nd} 3\n"
                 "  level 0.25\n"
                 "  wait_seconds{op=put} count 7, mean 1785.714 ms\n");
    buf_finish(&text);
    json_decref(section);
    metrics_destroy(m);
}

static const struct metrics_family bad_name[] = {
    {.name = "9lives", .help = "x", .type = METRICS_GAUGE}};
static const struct metrics_family bad_le[] = {{.name = "h",
                                                .help = "x",
                                                .type = METRICS_HISTOGRAM,
                                                .labels = {"le"},
                                                .buckets = bounds,
                                                .nbuckets = 4}};
static const double unsorted[] = {1, 0.5};
static const struct metrics_family bad_buckets[] = {
    {.name = "h", .help = "x", .type = METRICS_HISTOGRAM, .buckets = unsorted, .nbuckets = 2}};
static const struct metrics_family counter_no_total[] = {
    {.name = "things", .help = "x", .type = METRICS_COUNTER}};
static const struct metrics_family gauge_total[] = {
    {.name = "things_total", .help = "x", .type = METRICS_GAUGE}};
static const struct metrics_family no_buckets[] = {
    {.name = "h", .help = "x", .type = METRICS_HISTOGRAM}};

static int collect_wrong(struct metrics_collector *mc, void *arg)
{
    metrics_value(mc, 7, NULL, 1); /* no such family */
    return 0;
}

static void test_register_checks(void)
{
    struct metrics *m = metrics_create();
    int calls = 0;
    ASSERT_EQ(metrics_register(m, "a", bad_name, 1, collect, &calls), -EINVAL);
    ASSERT_EQ(metrics_register(m, "a", bad_le, 1, collect, &calls), -EINVAL);
    ASSERT_EQ(metrics_register(m, "a", bad_buckets, 1, collect, &calls), -EINVAL);
    ASSERT_EQ(metrics_register(m, "a", no_buckets, 1, collect, &calls), -EINVAL);
    ASSERT_EQ(metrics_register(m, "a", counter_no_total, 1, collect, &calls), -EINVAL);
    ASSERT_EQ(metrics_register(m, "a", gauge_total, 1, collect, &calls), -EINVAL);
    ASSERT_EQ(metrics_register(m, "a", fams, 3, collect, &calls), 0);
    /* A family name is unique across components. */
    ASSERT_EQ(metrics_register(m, "b", fams + 1, 1, collect, &calls), -EEXIST);
    metrics_destroy(m);

    m = metrics_create();
    ASSERT_EQ(metrics_register(m, "a", fams, 3, collect_wrong, NULL), 0);
    struct buf out;
    buf_init(&out, METRICS_TEXT_MAX);
    ASSERT_EQ(metrics_write_text(m, &out), -EINVAL);
    buf_finish(&out);
    metrics_destroy(m);
}

static void test_numbers(void)
{
    struct buf b;
    buf_init(&b, 1024);
    metrics_format_number(&b, 0);
    buf_append(&b, " ", 1);
    metrics_format_number(&b, 18446744073709551615.0);
    buf_append(&b, " ", 1);
    metrics_format_number(&b, 0.1);
    buf_append(&b, " ", 1);
    metrics_format_number(&b, 1e-7);
    buf_append(&b, " ", 1);
    metrics_format_number(&b, (double)INFINITY);
    buf_append(&b, " ", 1);
    metrics_format_number(&b, -(double)INFINITY);
    buf_append(&b, " ", 1);
    metrics_format_number(&b, (double)NAN);
    ASSERT_MEMEQ(b.data, b.len, "0 1.8446744073709552e+19 0.1 1e-07 +Inf -Inf NaN");
    buf_finish(&b);
    ASSERT_EQ(metrics_bucket_index(bounds, 4, 0.005), 0);
    ASSERT_EQ(metrics_bucket_index(bounds, 4, 0.0051), 1);
    ASSERT_EQ(metrics_bucket_index(bounds, 4, 99), 4);
}

static void test_process(void)
{
    struct metrics *m = metrics_create();
    ASSERT_EQ(metrics_register_process(m, "server"), 0);
    struct buf out;
    buf_init(&out, METRICS_TEXT_MAX);
    ASSERT_EQ(metrics_write_text(m, &out), 0);
    ASSERT_TRUE(strstr(out.data, "ferry_build_info{version=\"" FERRY_VERSION "\"} 1\n") != NULL);
    ASSERT_TRUE(strstr(out.data, "# TYPE ferry_process_start_time_seconds gauge\n") != NULL);
    buf_finish(&out);
    metrics_destroy(m);
}

int main(void)
{
    test_exposition();
    test_status();
    test_register_checks();
    test_numbers();
    test_process();
    TEST_MAIN_END();
}
