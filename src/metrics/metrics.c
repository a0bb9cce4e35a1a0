#include "metrics/metrics.h"

#include "admin/admin.h"
#include "common/alloc.h"
#include "common/buf.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef FERRY_VERSION
#define FERRY_VERSION "unknown"
#endif

struct metrics_group {
    char *component;
    const struct metrics_family *fams;
    size_t nfams;
    metrics_collect_fn fn;
    void *arg;
};

/* One series reported by a collector. */
struct metrics_sample {
    size_t family;
    char *labels[METRICS_MAX_LABELS];
    double value; /* counters and gauges; a histogram's sum */
    uint64_t counts[METRICS_MAX_BUCKETS + 1];
};

struct metrics_collector {
    const struct metrics_group *g;
    struct metrics_sample *s;
    size_t n, cap;
    int err;
};

struct metrics {
    pthread_mutex_t mu; /* serialises rendering (collectors run under it) */
    struct metrics_group *groups;
    size_t ngroups;
    double start_time; /* wall clock, seconds */
};

struct metrics *metrics_create(void)
{
    struct metrics *m = xcalloc(1, sizeof(*m));
    pthread_mutex_init(&m->mu, NULL);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    m->start_time = (double)ts.tv_sec + (double)(ts.tv_nsec / 1000000) / 1000.0;
    return m;
}

void metrics_destroy(struct metrics *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->ngroups; i++)
        free(m->groups[i].component);
    free(m->groups);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

static size_t family_nlabels(const struct metrics_family *f)
{
    size_t n = 0;
    while (n < METRICS_MAX_LABELS && f->labels[n])
        n++;
    return n;
}

/* [a-zA-Z_:][a-zA-Z0-9_:]* for names; labels the same without ':'. */
static bool valid_name(const char *s, bool colon)
{
    if (!s || !*s || (*s >= '0' && *s <= '9'))
        return false;
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || (colon && c == ':')))
            return false;
    }
    return true;
}

static bool valid_family(const struct metrics_family *f)
{
    if (!valid_name(f->name, true) || !f->help)
        return false;
    /* The naming convention promtool checks: counters, and only they, end
     * in _total. */
    size_t n = strlen(f->name);
    bool total = n > 6 && strcmp(f->name + n - 6, "_total") == 0;
    if (total != (f->type == METRICS_COUNTER))
        return false;
    for (size_t i = 0; i < family_nlabels(f); i++)
        if (!valid_name(f->labels[i], false) || strncmp(f->labels[i], "__", 2) == 0 ||
            (f->type == METRICS_HISTOGRAM && strcmp(f->labels[i], "le") == 0))
            return false;
    if (f->type != METRICS_HISTOGRAM)
        return true;
    if (!f->buckets || f->nbuckets == 0 || f->nbuckets > METRICS_MAX_BUCKETS)
        return false;
    for (size_t i = 1; i < f->nbuckets; i++)
        if (!(f->buckets[i] > f->buckets[i - 1]))
            return false;
    return true;
}

static const struct metrics_family *find_family(const struct metrics *m, const char *name)
{
    for (size_t g = 0; g < m->ngroups; g++)
        for (size_t i = 0; i < m->groups[g].nfams; i++)
            if (strcmp(m->groups[g].fams[i].name, name) == 0)
                return &m->groups[g].fams[i];
    return NULL;
}

int metrics_register(struct metrics *m, const char *component, const struct metrics_family *fams,
                     size_t n, metrics_collect_fn fn, void *arg)
{
    for (size_t i = 0; i < n; i++) {
        if (!valid_family(&fams[i]))
            return -EINVAL;
        for (size_t j = 0; j < i; j++)
            if (strcmp(fams[i].name, fams[j].name) == 0)
                return -EEXIST;
    }
    int r = 0;
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; r == 0 && i < n; i++)
        if (find_family(m, fams[i].name))
            r = -EEXIST;
    if (r == 0) {
        m->groups = xrealloc(m->groups, (m->ngroups + 1) * sizeof(*m->groups));
        m->groups[m->ngroups++] = (struct metrics_group){xstrdup(component), fams, n, fn, arg};
    }
    pthread_mutex_unlock(&m->mu);
    return r;
}

/* ---- process metrics ---- */

static const struct metrics_family process_families[] = {
    {.name = "build_info",
     .help = "ferry's version; the value is always 1.",
     .type = METRICS_GAUGE,
     .labels = {"version"}},
    {.name = "process_start_time_seconds",
     .help = "When the process started, in seconds since the epoch.",
     .type = METRICS_GAUGE},
};

static int process_collect(struct metrics_collector *mc, void *arg)
{
    const struct metrics *m = arg;
    metrics_value(mc, 0, (const char *const[]){FERRY_VERSION}, 1);
    metrics_value(mc, 1, NULL, m->start_time);
    return 0;
}

int metrics_register_process(struct metrics *m, const char *component)
{
    return metrics_register(m, component, process_families,
                            sizeof(process_families) / sizeof(process_families[0]), process_collect,
                            m);
}

/* ---- collecting ---- */

static struct metrics_sample *sample_add(struct metrics_collector *mc, size_t family,
                                         const char *const *label_values, enum metrics_type type)
{
    if (mc->err)
        return NULL;
    if (family >= mc->g->nfams ||
        (mc->g->fams[family].type == METRICS_HISTOGRAM) != (type == METRICS_HISTOGRAM)) {
        mc->err = -EINVAL;
        return NULL;
    }
    size_t nl = family_nlabels(&mc->g->fams[family]);
    if (nl && !label_values) {
        mc->err = -EINVAL;
        return NULL;
    }
    if (mc->n == mc->cap) {
        mc->cap = mc->cap ? 2 * mc->cap : 16;
        mc->s = xrealloc(mc->s, mc->cap * sizeof(*mc->s));
    }
    struct metrics_sample *s = &mc->s[mc->n++];
    memset(s, 0, sizeof(*s));
    s->family = family;
    for (size_t i = 0; i < nl; i++)
        s->labels[i] = xstrdup(label_values[i] ? label_values[i] : "");
    return s;
}

void metrics_value(struct metrics_collector *mc, size_t family, const char *const *label_values,
                   double value)
{
    struct metrics_sample *s = sample_add(mc, family, label_values, METRICS_GAUGE);
    if (s)
        s->value = value;
}

void metrics_histogram(struct metrics_collector *mc, size_t family, const char *const *label_values,
                       const uint64_t *counts, double sum)
{
    struct metrics_sample *s = sample_add(mc, family, label_values, METRICS_HISTOGRAM);
    if (!s)
        return;
    s->value = sum;
    memcpy(s->counts, counts, (mc->g->fams[family].nbuckets + 1) * sizeof(*counts));
}

static void collector_finish(struct metrics_collector *mc)
{
    for (size_t i = 0; i < mc->n; i++)
        for (size_t j = 0; j < METRICS_MAX_LABELS; j++)
            free(mc->s[i].labels[j]);
    free(mc->s);
    memset(mc, 0, sizeof(*mc));
}

/* Run g's collector into mc (empty). Returns 0 or -errno. */
static int group_collect(const struct metrics_group *g, struct metrics_collector *mc)
{
    memset(mc, 0, sizeof(*mc));
    mc->g = g;
    int r = g->fn(mc, g->arg);
    return r < 0 ? r : mc->err;
}

/* ---- the exposition ---- */

int metrics_escape_label(struct buf *out, const char *s, size_t n)
{
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        const char *rep = s[i] == '\\'   ? "\\\\"
                          : s[i] == '"'  ? "\\\""
                          : s[i] == '\n' ? "\\n"
                                         : NULL;
        if (!rep)
            continue;
        if (buf_append(out, s + start, i - start) < 0 || buf_append(out, rep, 2) < 0)
            return -ENOBUFS;
        start = i + 1;
    }
    return buf_append(out, s + start, n - start) < 0 ? -ENOBUFS : 0;
}

int metrics_escape_help(struct buf *out, const char *s)
{
    for (; *s; s++) {
        int r = *s == '\\'   ? buf_append(out, "\\\\", 2)
                : *s == '\n' ? buf_append(out, "\\n", 2)
                             : buf_append(out, s, 1);
        if (r < 0)
            return -ENOBUFS;
    }
    return 0;
}

/* The shortest form that reads back as the same double ("0.005", "2.5"), as
 * Prometheus clients write bucket bounds. */
static int format_shortest(struct buf *out, double v)
{
    char tmp[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof(tmp), "%.*g", prec, v);
        if (strtod(tmp, NULL) == v)
            break;
    }
    return buf_append_str(out, tmp) < 0 ? -ENOBUFS : 0;
}

int metrics_format_number(struct buf *out, double v)
{
    int r;
    if (isnan(v))
        r = buf_append_str(out, "NaN");
    else if (isinf(v))
        r = buf_append_str(out, v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 9007199254740992.0)
        r = buf_printf(out, "%.0f", v);
    else
        r = format_shortest(out, v);
    return r < 0 ? -ENOBUFS : 0;
}

/* NAME{l1="v1",l2="v2"[,le="B"]} — the braces only when there is a label. */
static int write_series_name(struct buf *out, const struct metrics_family *f, const char *suffix,
                             const struct metrics_sample *s, const double *le)
{
    if (buf_printf(out, METRICS_PREFIX "%s%s", f->name, suffix) < 0)
        return -ENOBUFS;
    size_t nl = family_nlabels(f);
    if (!nl && !le)
        return 0;
    if (buf_append(out, "{", 1) < 0)
        return -ENOBUFS;
    for (size_t i = 0; i < nl; i++) {
        if (buf_printf(out, "%s%s=\"", i ? "," : "", f->labels[i]) < 0 ||
            metrics_escape_label(out, s->labels[i], strlen(s->labels[i])) < 0 ||
            buf_append(out, "\"", 1) < 0)
            return -ENOBUFS;
    }
    if (le) {
        if (buf_printf(out, "%sle=\"", nl ? "," : "") < 0)
            return -ENOBUFS;
        int r = metrics_format_number(out, *le);
        if (r < 0 || buf_append(out, "\"", 1) < 0)
            return -ENOBUFS;
    }
    return buf_append(out, "}", 1) < 0 ? -ENOBUFS : 0;
}

static int write_line(struct buf *out, const struct metrics_family *f, const char *suffix,
                      const struct metrics_sample *s, const double *le, double v)
{
    if (write_series_name(out, f, suffix, s, le) < 0 || buf_append(out, " ", 1) < 0 ||
        metrics_format_number(out, v) < 0 || buf_append(out, "\n", 1) < 0)
        return -ENOBUFS;
    return 0;
}

static int write_histogram(struct buf *out, const struct metrics_family *f,
                           const struct metrics_sample *s)
{
    uint64_t cum = 0;
    for (size_t b = 0; b <= f->nbuckets; b++) {
        cum += s->counts[b];
        double le = b < f->nbuckets ? f->buckets[b] : (double)INFINITY;
        if (write_line(out, f, "_bucket", s, &le, (double)cum) < 0)
            return -ENOBUFS;
    }
    if (write_line(out, f, "_sum", s, NULL, s->value) < 0 ||
        write_line(out, f, "_count", s, NULL, (double)cum) < 0)
        return -ENOBUFS;
    return 0;
}

static const char *type_name(enum metrics_type t)
{
    return t == METRICS_COUNTER ? "counter" : t == METRICS_GAUGE ? "gauge" : "histogram";
}

static int write_group(struct buf *out, const struct metrics_group *g,
                       const struct metrics_collector *mc)
{
    for (size_t i = 0; i < g->nfams; i++) {
        const struct metrics_family *f = &g->fams[i];
        if (buf_printf(out, "# HELP " METRICS_PREFIX "%s ", f->name) < 0 ||
            metrics_escape_help(out, f->help) < 0 ||
            buf_printf(out, "\n# TYPE " METRICS_PREFIX "%s %s\n", f->name, type_name(f->type)) < 0)
            return -ENOBUFS;
        for (size_t j = 0; j < mc->n; j++) {
            const struct metrics_sample *s = &mc->s[j];
            if (s->family != i)
                continue;
            int r = f->type == METRICS_HISTOGRAM ? write_histogram(out, f, s)
                                                 : write_line(out, f, "", s, NULL, s->value);
            if (r < 0)
                return r;
        }
    }
    return 0;
}

int metrics_write_text(struct metrics *m, struct buf *out)
{
    int r = 0;
    pthread_mutex_lock(&m->mu);
    for (size_t g = 0; r == 0 && g < m->ngroups; g++) {
        struct metrics_collector mc;
        r = group_collect(&m->groups[g], &mc);
        if (r == 0)
            r = write_group(out, &m->groups[g], &mc);
        collector_finish(&mc);
    }
    pthread_mutex_unlock(&m->mu);
    return r;
}

/* ---- status ---- */

static json_t *json_number(double v)
{
    if (v == floor(v) && fabs(v) < 9007199254740992.0)
        return json_integer((json_int_t)v);
    return json_real(v);
}

static uint64_t sample_count(const struct metrics_family *f, const struct metrics_sample *s)
{
    uint64_t n = 0;
    for (size_t b = 0; b <= f->nbuckets; b++)
        n += s->counts[b];
    return n;
}

/* The JSON of one series: its value, or {"count","sum"} for a histogram; with
 * labels, an object holding them and "value" (or count and sum). */
static json_t *sample_json(const struct metrics_family *f, const struct metrics_sample *s)
{
    size_t nl = family_nlabels(f);
    json_t *o;
    if (f->type == METRICS_HISTOGRAM)
        o = json_pack("{s:I, s:o}", "count", (json_int_t)sample_count(f, s), "sum",
                      json_number(s->value));
    else if (nl)
        o = json_pack("{s:o}", "value", json_number(s->value));
    else
        return json_number(s->value);
    for (size_t i = 0; o && i < nl; i++)
        if (json_object_set_new(o, f->labels[i], json_string(s->labels[i])) < 0) {
            json_decref(o);
            o = NULL;
        }
    return o;
}

/* "  NAME{a=x,b=y} VALUE" or, for a histogram, "  NAME{...} count N, mean X ms". */
static int sample_text(struct buf *text, const struct metrics_family *f,
                       const struct metrics_sample *s)
{
    size_t nl = family_nlabels(f);
    if (buf_printf(text, "  %s", f->name) < 0)
        return -ENOBUFS;
    for (size_t i = 0; i < nl; i++)
        if (buf_printf(text, "%s%s=%s", i ? "," : "{", f->labels[i], s->labels[i]) < 0)
            return -ENOBUFS;
    if (nl && buf_append(text, "}", 1) < 0)
        return -ENOBUFS;
    if (f->type == METRICS_HISTOGRAM) {
        uint64_t n = sample_count(f, s);
        return buf_printf(text, " count %llu, mean %.3f ms\n", (unsigned long long)n,
                          n ? s->value * 1000.0 / (double)n : 0.0) < 0
                   ? -ENOBUFS
                   : 0;
    }
    if (buf_append(text, " ", 1) < 0 || metrics_format_number(text, s->value) < 0 ||
        buf_append(text, "\n", 1) < 0)
        return -ENOBUFS;
    return 0;
}

static bool sample_is_zero(const struct metrics_family *f, const struct metrics_sample *s)
{
    return f->type == METRICS_HISTOGRAM ? sample_count(f, s) == 0 : s->value == 0;
}

static int group_status(const struct metrics_group *g, const struct metrics_collector *mc,
                        json_t *obj, struct buf *text)
{
    for (size_t i = 0; i < g->nfams; i++) {
        const struct metrics_family *f = &g->fams[i];
        bool labelled = family_nlabels(f) > 0;
        json_t *arr = labelled ? json_array() : NULL;
        if (labelled && (!arr || json_object_set_new(obj, f->name, arr) < 0))
            return -ENOMEM;
        for (size_t j = 0; j < mc->n; j++) {
            const struct metrics_sample *s = &mc->s[j];
            if (s->family != i)
                continue;
            json_t *v = sample_json(f, s);
            int r = labelled ? json_array_append_new(arr, v) : json_object_set_new(obj, f->name, v);
            if (!v || r < 0)
                return -ENOMEM;
            /* A human reader wants what happened, not every empty combination. */
            if ((!labelled || !sample_is_zero(f, s)) && sample_text(text, f, s) < 0)
                return -ENOBUFS;
        }
    }
    return 0;
}

int metrics_render_status(struct metrics *m, const char *component, json_t *section,
                          struct buf *text)
{
    int r = 0;
    json_t *obj = NULL;
    pthread_mutex_lock(&m->mu);
    for (size_t g = 0; r == 0 && g < m->ngroups; g++) {
        if (strcmp(m->groups[g].component, component) != 0)
            continue;
        if (!obj) {
            obj = json_object();
            if (!obj || json_object_set_new(section, "metrics", obj) < 0) {
                r = -ENOMEM;
                break;
            }
        }
        struct metrics_collector mc;
        r = group_collect(&m->groups[g], &mc);
        if (r == 0)
            r = group_status(&m->groups[g], &mc, obj, text);
        collector_finish(&mc);
    }
    pthread_mutex_unlock(&m->mu);
    return r;
}

static int status_hook(const char *name, json_t *section, struct buf *text, void *arg)
{
    return metrics_render_status(arg, name, section, text);
}

int metrics_attach_admin(struct metrics *m, struct admin *a)
{
    admin_set_status_hook(a, status_hook, m);
    return 0;
}
