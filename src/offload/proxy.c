#include "offload/proxy.h"

#include "common/alloc.h"
#include "common/buf.h"
#include "common/evloop.h"
#include "common/log.h"
#include "common/range.h"
#include "http/parser.h"
#include "http/response.h"
#include "http/server.h"
#include "store/s3.h"
#include "store/store.h"

#include <curl/curl.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PASS_HEADERS_MAX (16 * 1024) /* the store's headers we pass on */
#define ERRBODY_MAX (4 * 1024)       /* enough of an S3 error document for its Code */
#define CURL_BUFFER (64 * 1024)      /* curl's receive buffer per transfer */
/* Full-jitter backoff before a retried store request: short, a client is
 * waiting; throttling (503 SlowDown) starts from a longer cap. */
#define RETRY_BASE_MS 50
#define RETRY_SLOWDOWN_BASE_MS 200
#define RETRY_MAX_MS 1000

/* One worker's transfers: a multi handle on that worker's loop. */
struct proxy_loop {
    struct evloop *loop;
    CURLM *multi;
    struct evloop_timer timer; /* curl's timeout */
    int depth;                 /* > 0 while curl runs: handles are removed afterwards */
    struct xfer *reap;         /* stopped while curl ran: removed once it returned */
    _Atomic uint64_t retries;  /* store requests retried: this worker's, any thread reads */
    struct proxy_loop *next;
};

struct offload_proxy {
    uint64_t id; /* unique in the process: what the thread's cache matches */
    struct store *store;
    pthread_mutex_t *store_lock;
    uint64_t timeout_ms;
    unsigned retries;           /* store requests tried again after the first, at most */
    pthread_mutex_t loops_lock; /* taken once per worker, on its first transfer */
    struct proxy_loop *loops;
};

/* The last loop this thread used, the lookup without the lock. It is matched
 * by the proxy's id and the evloop's address, never dereferenced first, so a
 * proxy destroyed and another created at the same address cannot be
 * mistaken for it. */
static __thread struct {
    uint64_t id;
    const struct evloop *loop;
    struct proxy_loop *pl;
} tl_last;
static _Atomic uint64_t proxy_ids;

struct xfer {
    struct proxy_loop *pl;
    struct conn *c; /* NULL once the client left or the response is complete */
    CURL *easy;
    struct curl_slist *hl;
    bool check;                      /* offload_proxy_head(): done() answers */
    bool client_head;                /* the client asked HEAD: the store is asked HEAD too */
    bool streaming;                  /* the response head is out; body bytes follow */
    bool paused;                     /* the write callback paused the transfer: proceed() resumes */
    bool stopped;                    /* the client went away */
    bool has_type;                   /* the store sent Content-Type */
    unsigned attempt;                /* retries so far */
    unsigned retries;                /* at most */
    uint64_t timeout_ms;             /* the core's backstop, per attempt */
    uint64_t seed;                   /* the backoff's jitter */
    struct evloop_timer retry_timer; /* running: off the multi handle until it fires */
    char *key;                       /* for the log */
    long low_speed_s;
    int64_t length;  /* the store's Content-Length; -1: not sent */
    struct buf pass; /* the store's headers we pass on, "Name: value\r\n" */
    struct buf errbody;
    char *content_type; /* when the store sends none */
    /* X-Accel-Redirect (offload_proxy_get()'s app): the application's
     * status for a whole object (0: the store's) and its header lines, which
     * replace the store's lines of the same names. */
    int app_status;
    char *app_headers;
    size_t app_headers_len;
    offload_proxy_head_fn done;
    void *done_arg;
    struct xfer *reap_next;
};

/* HEAD responses count the body they do not send (conn_body_append() drops
 * the bytes without reading them); this is what is "appended". Never read. */
static char head_discard[64 * 1024];

/* ---- transfers ---- */

static void xfer_free(struct xfer *x)
{
    evloop_timer_stop(x->pl->loop, &x->retry_timer);
    /* Also fine for a handle waiting for its retry (not in the multi). */
    curl_multi_remove_handle(x->pl->multi, x->easy);
    curl_easy_cleanup(x->easy);
    /* The lines carry the signature and perhaps a session token. */
    for (struct curl_slist *l = x->hl; l; l = l->next)
        OPENSSL_cleanse(l->data, strlen(l->data));
    curl_slist_free_all(x->hl);
    buf_finish(&x->pass);
    buf_finish(&x->errbody);
    free(x->content_type);
    free(x->app_headers);
    free(x->key);
    free(x);
}

/* Called by the connection when the client goes away (or a timeout passed):
 * the transfer is aborted, which closes its connection to the store. */
static void xfer_stop(struct conn *c, void *arg)
{
    struct xfer *x = arg;
    x->c = NULL;
    x->stopped = true;
    if (x->check)
        x->done(NULL, x->done_arg, -ECANCELED, "the client went away");
    if (x->pl->depth > 0) {
        x->reap_next = x->pl->reap;
        x->pl->reap = x;
        return;
    }
    xfer_free(x);
}

static void loop_after(struct proxy_loop *pl);

/* The client drained its queue: let curl deliver again. */
static void xfer_proceed(struct conn *c, void *arg)
{
    struct xfer *x = arg;
    if (!x->paused)
        return;
    x->paused = false;
    struct proxy_loop *pl = x->pl;
    pl->depth++;
    /* Delivers what curl held back from inside this call (the write
     * callback may pause again), and expires the transfer at once so that
     * the loop's timer drives it on. */
    curl_easy_pause(x->easy, CURLPAUSE_CONT);
    pl->depth--;
    loop_after(pl);
}

static const struct conn_producer get_producer = {xfer_proceed, xfer_stop};
static const struct conn_producer check_producer = {NULL, xfer_stop};

/* The store's headers passed to the client, with the spelling we send. */
static const char *const pass_names[] = {
    "Content-Type",     "ETag",    "Last-Modified", "Content-Range",       "Cache-Control",
    "Content-Encoding", "Expires", "Accept-Ranges", "Content-Disposition", "Content-Language",
};

static bool value_is_clean(const char *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)v[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return false;
    }
    return true;
}

/* Whether the application's lines have a header named name[0..nl). */
static bool app_has(const struct xfer *x, const char *name, size_t nl)
{
    if (!x->app_headers_len)
        return false;
    const char *p = x->app_headers, *end = p + x->app_headers_len;
    while (p && p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if ((size_t)(end - p) > nl && p[nl] == ':' && strncasecmp(p, name, nl) == 0)
            return true;
        p = eol ? eol + 1 : NULL;
    }
    return false;
}

static void head_line(struct xfer *x, const char *line, size_t n)
{
    const char *colon = memchr(line, ':', n);
    if (!colon)
        return;
    size_t nl = (size_t)(colon - line);
    const char *v = colon + 1;
    size_t vl = n - nl - 1;
    while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' ' || v[vl - 1] == '\t'))
        vl--;
    while (vl && (*v == ' ' || *v == '\t')) {
        v++;
        vl--;
    }
    if (!value_is_clean(v, vl))
        return;
    if (nl == 14 && strncasecmp(line, "Content-Length", 14) == 0) {
        char tmp[24];
        if (vl == 0 || vl >= sizeof(tmp))
            return;
        memcpy(tmp, v, vl);
        tmp[vl] = '\0';
        char *end;
        long long len = strtoll(tmp, &end, 10);
        if (*end == '\0' && len >= 0)
            x->length = len;
        return;
    }
    for (size_t i = 0; i < sizeof(pass_names) / sizeof(pass_names[0]); i++) {
        if (nl == strlen(pass_names[i]) && strncasecmp(line, pass_names[i], nl) == 0) {
            if (app_has(x, pass_names[i], nl))
                return; /* the application's Cache-Control (say) wins */
            x->has_type |= i == 0;
            buf_printf(&x->pass, "%s: %.*s\r\n", pass_names[i], (int)vl, v);
            return;
        }
    }
}

static void respond_head(struct conn *c, int status, const struct buf *pass)
{
    conn_respond_start(c, status);
    if (pass->data)
        conn_respond_headers_raw(c, pass->data, pass->len);
}

static void respond_app_headers(struct conn *c, const struct xfer *x)
{
    if (x->app_headers_len)
        conn_respond_headers_raw(c, x->app_headers, x->app_headers_len);
}

/* The store's head is complete: a success starts the client's response at
 * once (its body streams as it comes); errors wait for the error document. */
static void head_end(struct xfer *x)
{
    long status = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || x->check || !x->c)
        return;
    struct conn *c = x->c;
    if (status == 304) {
        respond_head(c, 304, &x->pass);
        respond_app_headers(c, x);
        conn_respond_body(c, NULL, 0, NULL, NULL);
        x->c = NULL;
        return;
    }
    if (status != 200 && status != 206)
        return;
    /* The application's own status applies to the whole object (it was asked
     * for without Range). */
    conn_respond_start(c, status == 200 && x->app_status ? x->app_status : (int)status);
    if (!x->has_type && x->content_type)
        conn_respond_header(c, "Content-Type", x->content_type);
    if (x->pass.data)
        conn_respond_headers_raw(c, x->pass.data, x->pass.len);
    respond_app_headers(c, x);
    conn_respond_stream(c, x->length);
    x->streaming = true;
    if (x->client_head) {
        for (int64_t left = x->length; left > 0;) {
            size_t n = left < (int64_t)sizeof(head_discard) ? (size_t)left : sizeof(head_discard);
            conn_body_append(c, head_discard, n);
            left -= (int64_t)n;
        }
    }
}

static size_t on_header(char *line, size_t size, size_t nmemb, void *user)
{
    struct xfer *x = user;
    size_t n = size * nmemb;
    if (x->stopped)
        return 0;
    if (n >= 5 && strncmp(line, "HTTP/", 5) == 0) {
        /* A new head (after a 100 Continue): start afresh. */
        buf_reset(&x->pass);
        x->length = -1;
        x->has_type = false;
    } else if (n <= 2 && (line[0] == '\r' || line[0] == '\n')) {
        head_end(x);
    } else {
        head_line(x, line, n);
    }
    return n;
}

static size_t on_write(char *p, size_t size, size_t nmemb, void *user)
{
    struct xfer *x = user;
    size_t n = size * nmemb;
    if (x->stopped)
        return 0; /* aborts; the transfer is removed once curl returns */
    if (!x->streaming) {
        /* An error document: keep its start for the Code. */
        if (x->errbody.len < ERRBODY_MAX)
            buf_append(&x->errbody, p,
                       n < ERRBODY_MAX - x->errbody.len ? n : ERRBODY_MAX - x->errbody.len);
        return n;
    }
    if (!x->c)
        return n;
    if (!conn_body_wants_more(x->c)) {
        x->paused = true;
        return CURL_WRITEFUNC_PAUSE;
    }
    int r = conn_body_append(x->c, p, n);
    if (r == -ENOBUFS) {
        x->paused = true;
        return CURL_WRITEFUNC_PAUSE;
    }
    return r < 0 ? 0 : n; /* more than the store's Content-Length: abort */
}

/* Why the store failed, in one line, and the result for offload_proxy_head(). */
static int xfer_failure(struct xfer *x, CURLcode cc, long status, char *why, size_t whylen)
{
    if (cc == CURLE_OPERATION_TIMEDOUT) {
        snprintf(why, whylen, "the store did not answer within %lds", x->low_speed_s);
        return -ETIMEDOUT;
    }
    if (cc != CURLE_OK) {
        snprintf(why, whylen, "the store cannot be reached (%s)", curl_easy_strerror(cc));
        return -EIO;
    }
    char code[64] = "";
    if (x->errbody.data)
        s3_xml_text(x->errbody.data, x->errbody.len, "Code", code, sizeof(code));
    if (status == 404 && (!code[0] || strcmp(code, "NoSuchKey") == 0))
        return -ENOENT;
    snprintf(why, whylen, "the store answered %ld%s%s%s", status, code[0] ? " (" : "", code,
             code[0] ? ")" : "");
    return -EIO;
}

/* "502 Bad Gateway: why" (or 504 Gateway Timeout). */
static void respond_text(struct conn *c, int status, const char *why)
{
    char body[512];
    snprintf(body, sizeof(body), "%s: %s\n",
             status == 504 ? "504 Gateway Timeout" : "502 Bad Gateway", why);
    conn_respond_simple(c, status, "text/plain", body);
}

/* The transfer ended (cc is its result): complete the client's answer. */
static void xfer_finish(struct xfer *x, CURLcode cc)
{
    long status = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    struct conn *c = x->c;
    x->c = NULL;
    char why[256] = "";
    if (x->check) {
        int r = cc == CURLE_OK && status == 200 ? 0 : xfer_failure(x, cc, status, why, sizeof(why));
        x->done(c, x->done_arg, r, why);
        return;
    }
    if (!c)
        return; /* answered already (304) */
    if (x->streaming) {
        if (cc == CURLE_OK)
            conn_body_end(c);
        else
            conn_respond_abort(c); /* the client sees a short body */
        return;
    }
    if (cc == CURLE_OK && status == 416) {
        respond_head(c, 416, &x->pass);
        conn_respond_header(c, "Content-Type", "text/plain");
        static const char body[] = "416 Range Not Satisfiable\n";
        conn_respond_body(c, body, sizeof(body) - 1, NULL, NULL);
        return;
    }
    int r = xfer_failure(x, cc, status, why, sizeof(why));
    if (r == -ENOENT)
        conn_respond_simple(c, 404, "text/plain", "404 Not Found\n");
    else if (r == -ETIMEDOUT)
        respond_text(c, 504, why);
    else
        respond_text(c, 502, why);
}

/* Whether a failed transfer starts over (nginx's proxy_next_upstream error
 * timeout http_500 http_502 http_503 http_504, S3's retryable codes): only a
 * GET or HEAD for a client (never a check, whose caller answers), only while
 * nothing of it went to the client, within the bound. *slowdown: the store
 * throttles. */
static bool xfer_retryable(const struct xfer *x, CURLcode cc, long status, bool *slowdown)
{
    *slowdown = false;
    if (x->check || !x->c || x->streaming || x->stopped || x->attempt >= x->retries)
        return false;
    switch (cc) {
    case CURLE_OK:
        break;
    case CURLE_COULDNT_CONNECT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE: /* an error document cut short */
        return true;
    case CURLE_OPERATION_TIMEDOUT:
        /* Once: each attempt may wait low_speed_time, and a client kept
         * waiting retries x low_speed_time is worse than a 504. */
        return x->attempt == 0;
    default:
        return false;
    }
    char code[64] = "";
    if (x->errbody.data)
        s3_xml_text(x->errbody.data, x->errbody.len, "Code", code, sizeof(code));
    *slowdown = strcmp(code, "SlowDown") == 0;
    return status == 500 || status == 502 || status == 503 || status == 504 ||
           (status >= 400 && s3_code_is_retryable(code));
}

static void xfer_retry_fired(struct evloop *l, void *arg)
{
    struct xfer *x = arg;
    /* The core's backstop is per attempt: handing c over to x again (nothing
     * of the answer started) restarts it. */
    conn_defer(x->c, &get_producer, x, x->timeout_ms);
    /* The same signed request again (valid for minutes): curl asks for its
     * timer at once and the loop's timer starts it. */
    if (curl_multi_add_handle(x->pl->multi, x->easy) != CURLM_OK)
        abort(); /* only on allocation failure or misuse */
}

/* Take x off the multi handle and start it again after a full-jitter
 * backoff. Outside curl's calls only (loop_done()). */
static void xfer_retry(struct xfer *x, CURLcode cc, long status, bool slowdown)
{
    char why[256] = "";
    if (xfer_failure(x, cc, status, why, sizeof(why)) == -ENOENT)
        snprintf(why, sizeof(why), "the store answered %ld", status);
    unsigned ms = s3_backoff_ms(x->attempt, slowdown ? RETRY_SLOWDOWN_BASE_MS : RETRY_BASE_MS,
                                RETRY_MAX_MS, &x->seed);
    x->attempt++;
    atomic_fetch_add_explicit(&x->pl->retries, 1, memory_order_relaxed);
    log_warn("proxy: %s '%.200s': %s; retry %u of %u in %u ms", x->client_head ? "HEAD" : "GET",
             x->key, why, x->attempt, x->retries, ms);
    curl_multi_remove_handle(x->pl->multi, x->easy);
    buf_reset(&x->pass);
    buf_reset(&x->errbody);
    x->length = -1;
    x->has_type = false;
    evloop_timer_start(x->pl->loop, &x->retry_timer, ms);
}

/* ---- the worker's loop ---- */

static void loop_done(struct proxy_loop *pl)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(pl->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        struct xfer *x = NULL;
        CURL *e = m->easy_handle;
        CURLcode cc = m->data.result;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&x);
        if (x->stopped)
            continue; /* on the reap list */
        long status = 0;
        bool slowdown;
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        if (xfer_retryable(x, cc, status, &slowdown)) {
            xfer_retry(x, cc, status, slowdown);
            continue;
        }
        xfer_finish(x, cc);
        xfer_free(x);
    }
}

/* After curl returned: finish what ended, remove what was stopped inside it. */
static void loop_after(struct proxy_loop *pl)
{
    if (pl->depth > 0)
        return;
    loop_done(pl);
    while (pl->reap) {
        struct xfer *x = pl->reap;
        pl->reap = x->reap_next;
        xfer_free(x);
    }
}

static void loop_act(struct proxy_loop *pl, curl_socket_t fd, int flags)
{
    int running;
    pl->depth++;
    curl_multi_socket_action(pl->multi, fd, flags, &running);
    pl->depth--;
    loop_after(pl);
}

static void on_fd(struct evloop *l, int fd, uint32_t events, void *arg)
{
    int flags = 0;
    if (events & EPOLLIN)
        flags |= CURL_CSELECT_IN;
    if (events & EPOLLOUT)
        flags |= CURL_CSELECT_OUT;
    if (events & (EPOLLERR | EPOLLHUP))
        flags |= CURL_CSELECT_ERR;
    loop_act(arg, fd, flags);
}

static void on_timer_fired(struct evloop *l, void *arg)
{
    loop_act(arg, CURL_SOCKET_TIMEOUT, 0);
}

static int on_socket(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp)
{
    struct proxy_loop *pl = userp;
    if (what == CURL_POLL_REMOVE) {
        evloop_fd_del(pl->loop, fd);
        return 0;
    }
    uint32_t ev = 0;
    if (what & CURL_POLL_IN)
        ev |= EPOLLIN;
    if (what & CURL_POLL_OUT)
        ev |= EPOLLOUT;
    if (evloop_fd_mod(pl->loop, fd, ev) == -ENOENT)
        return evloop_fd_add(pl->loop, fd, ev, on_fd, pl) < 0 ? -1 : 0;
    return 0;
}

static int on_curl_timer(CURLM *m, long ms, void *userp)
{
    struct proxy_loop *pl = userp;
    if (ms < 0)
        evloop_timer_stop(pl->loop, &pl->timer);
    else
        evloop_timer_start(pl->loop, &pl->timer, (uint64_t)ms);
    return 0;
}

static struct proxy_loop *loop_for(struct offload_proxy *p, struct evloop *l)
{
    if (tl_last.id == p->id && tl_last.loop == l)
        return tl_last.pl;
    struct proxy_loop *pl;
    pthread_mutex_lock(&p->loops_lock);
    for (pl = p->loops; pl && pl->loop != l; pl = pl->next)
        ;
    if (!pl) {
        pl = xcalloc(1, sizeof(*pl));
        pl->loop = l;
        pl->multi = curl_multi_init();
        if (!pl->multi)
            abort(); /* allocation failure, as everywhere */
        curl_multi_setopt(pl->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
        curl_multi_setopt(pl->multi, CURLMOPT_SOCKETDATA, pl);
        curl_multi_setopt(pl->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
        curl_multi_setopt(pl->multi, CURLMOPT_TIMERDATA, pl);
        evloop_timer_init(&pl->timer, on_timer_fired, pl);
        pl->next = p->loops;
        p->loops = pl;
    }
    pthread_mutex_unlock(&p->loops_lock);
    tl_last.id = p->id;
    tl_last.loop = l;
    tl_last.pl = pl;
    return pl;
}

struct offload_proxy *offload_proxy_create(struct store *store, pthread_mutex_t *lock,
                                           uint64_t timeout_ms, unsigned retries)
{
    struct offload_proxy *p = xcalloc(1, sizeof(*p));
    p->id = atomic_fetch_add(&proxy_ids, 1) + 1; /* 0 is the empty cache's */
    p->store = store;
    p->store_lock = lock;
    p->timeout_ms = timeout_ms;
    p->retries = retries;
    pthread_mutex_init(&p->loops_lock, NULL);
    return p;
}

uint64_t offload_proxy_retries(struct offload_proxy *p)
{
    uint64_t n = 0;
    /* The lock keeps the list steady; each worker's count is its own. */
    pthread_mutex_lock(&p->loops_lock);
    for (const struct proxy_loop *pl = p->loops; pl; pl = pl->next)
        n += atomic_load_explicit(&pl->retries, memory_order_relaxed);
    pthread_mutex_unlock(&p->loops_lock);
    return n;
}

void offload_proxy_destroy(struct offload_proxy *p)
{
    if (!p)
        return;
    while (p->loops) {
        struct proxy_loop *pl = p->loops;
        p->loops = pl->next;
        /* The loop may be gone: curl must not call back into it. */
        curl_multi_setopt(pl->multi, CURLMOPT_SOCKETFUNCTION, NULL);
        curl_multi_setopt(pl->multi, CURLMOPT_TIMERFUNCTION, NULL);
        curl_multi_cleanup(pl->multi);
        free(pl);
    }
    pthread_mutex_destroy(&p->loops_lock);
    free(p);
}

/* Sign and set up a transfer of key for c. Returns it, or NULL with why
 * filled. */
static struct xfer *xfer_create(struct offload_proxy *p, struct conn *c, const char *method,
                                const char *key, const char *range, char why[320])
{
    struct store_signed sg;
    struct store_error err = {0};
    pthread_mutex_lock(p->store_lock);
    int r = store_sign_request(p->store, method, key, range, &sg, &err);
    pthread_mutex_unlock(p->store_lock);
    if (r < 0) {
        snprintf(why, 320, "cannot sign the store request (%s)",
                 err.message[0] ? err.message : strerror(-r));
        return NULL;
    }
    struct xfer *x = xcalloc(1, sizeof(*x));
    x->pl = loop_for(p, conn_loop(c));
    x->c = c;
    x->length = -1;
    x->retries = p->retries;
    x->timeout_ms = p->timeout_ms;
    x->seed = (uint64_t)(uintptr_t)x ^ evloop_now_us(x->pl->loop) ^ p->id;
    evloop_timer_init(&x->retry_timer, xfer_retry_fired, x);
    x->key = xstrdup(key);
    x->low_speed_s = sg.low_speed_time_s;
    buf_init(&x->pass, PASS_HEADERS_MAX);
    buf_init(&x->errbody, ERRBODY_MAX);
    for (size_t i = 0; i < sg.nheaders; i++)
        if (!(x->hl = curl_slist_append(x->hl, sg.headers[i])))
            abort();
    CURL *e = x->easy = curl_easy_init();
    if (!e)
        abort();
    curl_easy_setopt(e, CURLOPT_URL, sg.url);
    curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, sg.connect_timeout_ms);
    /* A store that sends nothing for low_speed_time is a timeout; a transfer
     * paused by the client's backpressure is not checked. */
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, sg.low_speed_time_s);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (sg.ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, sg.ca_file);
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, (long)CURL_BUFFER);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    store_signed_finish(&sg);
    return x;
}

/* Start x on its worker's multi handle and defer c's answer to it. */
static int xfer_start(struct offload_proxy *p, struct xfer *x, const struct conn_producer *prod)
{
    curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, x->hl);
    if (curl_multi_add_handle(x->pl->multi, x->easy) != CURLM_OK)
        abort(); /* only on allocation failure or misuse */
    return conn_defer(x->c, prod, x, p->timeout_ms);
}

static void add_line(struct xfer *x, const char *name, struct http_str v)
{
    char *line = xasprintf("%s: %.*s", name, (int)v.len, v.p);
    if (!(x->hl = curl_slist_append(x->hl, line)))
        abort();
    free(line);
}

int offload_proxy_get(struct offload_proxy *p, struct conn *c, const struct http_request *req,
                      const char *key, const char *content_type,
                      const struct offload_proxy_app *app)
{
    /* The application's own status is for the whole object: the client's
     * Range and conditionals do not apply (as static_serve_fd_opts()). */
    bool whole = app && app->status && app->status != 200;
    /* Only a single range we would serve ourselves is asked for; If-Range
     * cannot be checked before the store answers, so it drops the Range. */
    char range[128];
    const char *rp = NULL;
    uint64_t off, len;
    if (!whole && req->range.p && !req->if_range.p && req->range.len < sizeof(range) &&
        range_parse(req->range.p, req->range.len, INT64_MAX, &off, &len) != RANGE_IGNORE) {
        memcpy(range, req->range.p, req->range.len);
        range[req->range.len] = '\0';
        rp = range;
    }
    bool head = req->method_id == HTTP_M_HEAD;
    char why[320];
    struct xfer *x = xfer_create(p, c, head ? "HEAD" : "GET", key, rp, why);
    if (!x) {
        respond_text(c, 502, why);
        return HANDLER_DONE;
    }
    x->client_head = head;
    x->content_type = content_type ? xstrdup(content_type) : NULL;
    if (app) {
        x->app_status = whole ? app->status : 0;
        if (app->headers_len) {
            x->app_headers = xmalloc(app->headers_len);
            memcpy(x->app_headers, app->headers, app->headers_len);
            x->app_headers_len = app->headers_len;
        }
    }
    /* S3 needs no signature on the conditionals: the parser guarantees the
     * values hold no line break. */
    if (!whole && req->if_none_match.p)
        add_line(x, "If-None-Match", req->if_none_match);
    if (!whole && req->if_modified_since.p)
        add_line(x, "If-Modified-Since", req->if_modified_since);
    return xfer_start(p, x, &get_producer);
}

int offload_proxy_head(struct offload_proxy *p, struct conn *c, const char *key,
                       offload_proxy_head_fn done, void *arg)
{
    char why[320];
    struct xfer *x = xfer_create(p, c, "HEAD", key, NULL, why);
    if (!x) {
        done(c, arg, -EIO, why);
        return HANDLER_DONE;
    }
    x->check = true;
    x->done = done;
    x->done_arg = arg;
    return xfer_start(p, x, &check_producer);
}
