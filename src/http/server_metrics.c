#include "http/server_metrics.h"

#include "http/internal.h"
#include "metrics/metrics.h"

#include <string.h>

static const char *const handler_names[HANDLER_KIND_COUNT] = {
    [HANDLER_KIND_CORE] = "core",
    [HANDLER_KIND_STATIC] = "static",
    [HANDLER_KIND_MAINTENANCE] = "maintenance",
    [HANDLER_KIND_OFFLOAD_LOCAL] = "offload_local",
    [HANDLER_KIND_REDIRECT] = "redirect",
    [HANDLER_KIND_PRESIGN] = "presign",
    [HANDLER_KIND_PROXY] = "proxy",
    [HANDLER_KIND_BACKEND] = "backend",
};

static const char *const class_names[STATUS_CLASSES] = {"1xx", "2xx", "3xx", "4xx", "5xx"};

static const double duration_bounds[HTTP_DURATION_BUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
};

enum {
    F_REQUESTS,
    F_BODY_BYTES,
    F_DURATION,
    F_INFLIGHT,
    F_CONNS_OPEN,
    F_CONNS_ACCEPTED,
    F_CONNS_REFUSED,
    F_COUNT,
};

static const struct metrics_family families[F_COUNT] = {
    [F_REQUESTS] = {.name = "http_requests_total",
                    .help =
                        "HTTP requests answered, by the handler that answered and status class.",
                    .type = METRICS_COUNTER,
                    .labels = {"handler", "class"}},
    [F_BODY_BYTES] = {.name = "http_response_body_bytes_total",
                      .help =
                          "Response body bytes sent (as the access log counts them), by handler.",
                      .type = METRICS_COUNTER,
                      .labels = {"handler"}},
    [F_DURATION] = {.name = "http_request_duration_seconds",
                    .help = "Time from a request's head to the end of its response (the worker "
                            "loop's clock: a response written at once counts as 0), by handler.",
                    .type = METRICS_HISTOGRAM,
                    .labels = {"handler"},
                    .buckets = duration_bounds,
                    .nbuckets = HTTP_DURATION_BUCKETS},
    [F_INFLIGHT] = {.name = "http_requests_in_flight",
                    .help = "Requests whose response is not finished.",
                    .type = METRICS_GAUGE},
    [F_CONNS_OPEN] = {.name = "http_connections_open",
                      .help = "Client connections open now.",
                      .type = METRICS_GAUGE},
    [F_CONNS_ACCEPTED] = {.name = "http_connections_accepted_total",
                          .help = "Client connections accepted.",
                          .type = METRICS_COUNTER},
    [F_CONNS_REFUSED] = {.name = "http_connections_refused_total",
                         .help = "Client connections closed at once: [server] max_connections "
                                 "reached.",
                         .type = METRICS_COUNTER},
};

const char *server_handler_name(int kind)
{
    return kind >= 0 && kind < HANDLER_KIND_COUNT ? handler_names[kind] : "core";
}

static uint64_t load(const _Atomic uint64_t *p)
{
    return atomic_load_explicit(p, memory_order_relaxed);
}

static int collect(struct metrics_collector *mc, void *arg)
{
    struct server *s = arg;
    struct worker_metrics sum;
    memset(&sum, 0, sizeof(sum));
    uint64_t open = 0, accepted = 0, inflight = 0;
    /* Relaxed loads of each worker's counters: a scrape during traffic may be
     * a request apart between two families, never torn. The lock only keeps
     * the workers' array from being freed under us (server_run()). */
    pthread_mutex_lock(s->workers_mu);
    for (int i = 0; s->workers && i < s->nworkers; i++) {
        const struct worker *wk = &s->workers[i];
        const struct worker_metrics *w = &wk->metrics;
        open += load(&wk->stat_conns_open);
        accepted += load(&wk->stat_conns_total);
        inflight += load(&wk->stat_inflight);
        for (int k = 0; k < HANDLER_KIND_COUNT; k++) {
            for (int c = 0; c < STATUS_CLASSES; c++)
                sum.requests[k][c] += load(&w->requests[k][c]);
            sum.body_bytes[k] += load(&w->body_bytes[k]);
            for (int b = 0; b <= HTTP_DURATION_BUCKETS; b++)
                sum.duration[k][b] += load(&w->duration[k][b]);
            sum.duration_us[k] += load(&w->duration_us[k]);
        }
        sum.conns_refused += load(&w->conns_refused);
    }
    pthread_mutex_unlock(s->workers_mu);
    for (int k = 0; k < HANDLER_KIND_COUNT; k++) {
        for (int c = 0; c < STATUS_CLASSES; c++)
            metrics_value(mc, F_REQUESTS, (const char *const[]){handler_names[k], class_names[c]},
                          (double)sum.requests[k][c]);
    }
    for (int k = 0; k < HANDLER_KIND_COUNT; k++)
        metrics_value(mc, F_BODY_BYTES, &handler_names[k], (double)sum.body_bytes[k]);
    for (int k = 0; k < HANDLER_KIND_COUNT; k++) {
        uint64_t counts[HTTP_DURATION_BUCKETS + 1];
        for (int b = 0; b <= HTTP_DURATION_BUCKETS; b++)
            counts[b] = sum.duration[k][b];
        metrics_histogram(mc, F_DURATION, &handler_names[k], counts,
                          (double)sum.duration_us[k] / 1e6);
    }
    metrics_value(mc, F_INFLIGHT, NULL, (double)inflight);
    metrics_value(mc, F_CONNS_OPEN, NULL, (double)open);
    metrics_value(mc, F_CONNS_ACCEPTED, NULL, (double)accepted);
    metrics_value(mc, F_CONNS_REFUSED, NULL, (double)sum.conns_refused);
    return 0;
}

int server_register_metrics(struct server *s, struct metrics *m)
{
    return metrics_register(m, "server", families, F_COUNT, collect, s);
}
