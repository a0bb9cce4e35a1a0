/* The metrics registry (issue 12): every component registers its metric
 * families here, with one collect callback that reads its counters, and the
 * registry renders them two ways from the same samples:
 *
 *   - the Prometheus text exposition format 0.0.4 (metrics_write_text(), served
 *     at [metrics] listen by metrics/metrics_http.h): "# HELP" and "# TYPE"
 *     lines, every name prefixed "ferry_", label values escaped;
 *   - the `ferry status` sections: metrics_attach_admin() hooks the admin's
 *     `status` command so that the section named after a component (server,
 *     maintenance, offload, backend) gets a "metrics" member holding that
 *     component's families, and its human text gets one line per series.
 *
 * The contract: a counter exists once, as a registered family. Registering it
 * makes it appear both in /metrics and in `ferry status` (text and --json);
 * nothing else has to change. Components keep only state that is not a metric
 * (maintenance message, last errors) in their own status sections.
 *
 * Conventions: names are snake_case after the implied "ferry_" prefix and end
 * in a base unit (_seconds, _bytes) and, for counters, in _total; label values
 * are small fixed sets (handler names, status classes), never paths or keys.
 *
 * Threads: metrics_register() may run on any thread at any time (under the
 * registry's mutex), usually at startup; there is no unregistering, so what a
 * collector reads must outlive the listener and the admin. Rendering (metrics_write_text(), the
 * status hook) may run on any thread; the registry serialises it with its own mutex, so a collect
 * callback never runs concurrently with itself, but it does run on a thread that is not its
 * component's (the metrics listener's, the admin loop's): it must read its counters with relaxed
 * atomic loads or under its component's own lock, and must not block for long.
 *
 * How a component adds its metrics (the backend, src/fcgi, for example):
 *
 *     static const double wait_buckets[] = {0.001, 0.01, 0.1, 1, 10};
 *     static const struct metrics_family fams[] = {  // designated: -Wextra
 *         {.name = "backend_swaps_total", .help = "Backend swaps completed.",
 *          .type = METRICS_COUNTER},
 *         {.name = "backend_processes", .help = "Backend processes, by generation and state.",
 *          .type = METRICS_GAUGE, .labels = {"generation", "state"}},
 *         {.name = "backend_hold_seconds", .help = "Time requests waited for a backend.",
 *          .type = METRICS_HISTOGRAM, .buckets = wait_buckets, .nbuckets = 5},
 *     };
 *     static int collect(struct metrics_collector *mc, void *arg)
 *     {
 *         struct pm *pm = arg;
 *         metrics_value(mc, 0, NULL, (double)atomic_load_explicit(&pm->swaps, ...));
 *         metrics_value(mc, 1, (const char *[]){"3", "ready"}, 4);
 *         metrics_histogram(mc, 2, NULL, counts, sum_seconds);
 *         return 0;
 *     }
 *     metrics_register(m, "backend", fams, 3, collect, pm);
 *
 * and the section of `ferry status` named "backend" (admin_register_status())
 * shows them. cmd_serve.c creates the registry before the server and passes
 * it to each component's *_register_metrics() in one block; requests a
 * handler answers are counted by the server once the handler says which it
 * is with conn_set_handler() (http/response.h). */
#ifndef FERRY_METRICS_METRICS_H
#define FERRY_METRICS_METRICS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct admin;
struct buf;
struct metrics;
struct metrics_collector;

#define METRICS_PREFIX "ferry_"
#define METRICS_MAX_LABELS 4        /* label names per family */
#define METRICS_MAX_BUCKETS 32      /* histogram buckets per family, +Inf not counted */
#define METRICS_TEXT_MAX (4u << 20) /* the longest exposition */

enum metrics_type {
    METRICS_COUNTER,   /* only goes up (until the process restarts); name ends in _total */
    METRICS_GAUGE,     /* a value now */
    METRICS_HISTOGRAM, /* observations counted in buckets, with their sum */
};

/** One metric family. Every pointer is static storage (or outlives the
 * registry); a family is used as registered, never copied. */
struct metrics_family {
    const char *name; /* without "ferry_": "http_requests_total" */
    const char *help; /* one line; escaped on output */
    enum metrics_type type;
    const char *labels[METRICS_MAX_LABELS]; /* label names, unused slots NULL */
    const double *buckets; /* histograms: upper bounds, strictly ascending, +Inf implied */
    size_t nbuckets;       /* at most METRICS_MAX_BUCKETS */
};

/**
 * Read the component's counters and report them: one metrics_value() or
 * metrics_histogram() per series, in any order (a family's series are output
 * in the order reported). family indexes the array given to metrics_register().
 * Returns 0, or -errno to fail the rendering (the scrape gets a 500, the
 * status an error naming the component). See the threads note above.
 */
typedef int (*metrics_collect_fn)(struct metrics_collector *mc, void *arg);

/** Create an empty registry. Records the process start time (see
 * metrics_register_process()). Caller's: metrics_destroy(). */
struct metrics *metrics_create(void);

/** Free the registry. NULL-safe. Nothing may render any more: stop the
 * listener and destroy the admin first. */
void metrics_destroy(struct metrics *m);

/**
 * Register n families fams (not copied: static storage) of component
 * (copied) with their collector fn(mc, arg); arg stays the caller's and must
 * outlive every rendering (destroy the listener and the admin before it).
 * Several registrations may share a component name; they are shown together.
 * Returns 0, -EEXIST when a family name is already registered, or -EINVAL
 * for a family the exposition could not name (empty name, bad characters, a
 * histogram without buckets, too many labels or buckets, a counter whose
 * name does not end in _total or another type whose name does). Any thread.
 */
int metrics_register(struct metrics *m, const char *component, const struct metrics_family *fams,
                     size_t n, metrics_collect_fn fn, void *arg);

/** Register ferry_build_info{version} and ferry_process_start_time_seconds
 * under component. Returns as metrics_register(). */
int metrics_register_process(struct metrics *m, const char *component);

/**
 * Report a counter's or a gauge's series of family (an index into the
 * registration's array) with label_values (one per label name of the family,
 * copied; NULL when the family has none). Inside a collect callback only.
 * A mismatch (wrong type, bad index) fails the rendering with -EINVAL.
 */
void metrics_value(struct metrics_collector *mc, size_t family, const char *const *label_values,
                   double value);

/**
 * Report a histogram's series: counts has the family's nbuckets + 1 entries,
 * NOT cumulative: counts[i] observations fell in (bucket[i-1], bucket[i]],
 * the last one above the largest bucket. The exposition makes them
 * cumulative, so _count is exactly the +Inf bucket. sum is in the family's
 * unit (seconds). Copied. Inside a collect callback only.
 */
void metrics_histogram(struct metrics_collector *mc, size_t family, const char *const *label_values,
                       const uint64_t *counts, double sum);

/**
 * Append the Prometheus text exposition (format 0.0.4) of every family to out
 * (which should have a maximum of METRICS_TEXT_MAX). Returns 0, -ENOBUFS when
 * it does not fit, or a collect callback's error. Any thread.
 */
int metrics_write_text(struct metrics *m, struct buf *out);

/**
 * Render component's families into a status section: JSON members under
 * "metrics" of section (unlabelled: a number; labelled: an array of objects
 * with the labels and "value"; histograms: {"count", "sum"}, labelled ones in
 * an array) and lines "  NAME{LABELS} VALUE" in text (labelled series only
 * when non-zero). Components with nothing registered add nothing. Returns 0
 * or -errno. Any thread.
 */
int metrics_render_status(struct metrics *m, const char *component, json_t *section,
                          struct buf *text);

/**
 * Install the status hook on a: every status section whose name is a
 * registered component gets metrics_render_status() after its own function.
 * m must outlive a. Returns 0. The admin's loop thread.
 */
int metrics_attach_admin(struct metrics *m, struct admin *a);

/* ---- helpers for collectors and tests ---- */

/** Append s (n bytes) to out escaped as a label value: backslash, double
 * quote and newline become \\, \" and \n. Returns 0 or -ENOBUFS. */
int metrics_escape_label(struct buf *out, const char *s, size_t n);

/** Append s escaped as HELP text: backslash and newline. Returns 0 or -ENOBUFS. */
int metrics_escape_help(struct buf *out, const char *s);

/** Append v as the exposition writes numbers: integers without a fraction,
 * others in the shortest form that reads back exactly, "+Inf", "-Inf", "NaN". Returns 0
 * or -ENOBUFS. */
int metrics_format_number(struct buf *out, double v);

/** Which observations bucket an upper-bounds array puts v in: the first i
 * with v <= bounds[i], or n (the overflow bucket). Any thread. */
static inline size_t metrics_bucket_index(const double *bounds, size_t n, double v)
{
    size_t i = 0;
    while (i < n && v > bounds[i])
        i++;
    return i;
}

#endif
