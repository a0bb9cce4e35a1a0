/* fcgi_app: a FastCGI application on libfcgi for the backend tests, started
 * by ferry with the listening socket as fd 0.
 *
 *   fcgi_app [--version V] [--ready] [--never-ready] [--garbage] [--libfcgi-stop]
 *
 * Every response names the version (--version, else $APP_VERSION, else "v1")
 * and the process id, in headers (X-App-Version, X-App-Pid) and in the body:
 *
 *   version=V pid=P method=M length=N sha256=HEX query=Q
 *
 * where N and HEX are the request body's length and SHA-256. Query keys:
 *   sleep=MS       wait MS milliseconds before answering
 *   status=NNN     answer with this status
 *   body_kb=N      append N KiB of 'x' to the body (a long response)
 *   header_kb=N    add an X-Big header of N KiB (header block bounds)
 *   stderr=TEXT    write TEXT to FCGI_STDERR
 *   garbage=1      answer with bytes that are not FastCGI records, then close
 *   accel=PATH     add "X-Accel-Redirect: PATH" (PATH percent-decoded once)
 *   sendfile=PATH  add "X-Sendfile: PATH" (percent-decoded once)
 *   disposition=V  add "Content-Disposition: V" and "Set-Cookie: seen=1" (decoded)
 *   cache=V        add "Cache-Control: V" (decoded)
 *
 * --ready writes "READY\n" to $FERRY_READY_FD once listening; --never-ready
 * writes "STARTING\n" there and never accepts (until a signal ends it);
 * --garbage answers every request like garbage=1.
 *
 * Stopping: SIGUSR1 means "finish the request in hand, accept no more". By
 * default the app handles it itself: SIGUSR1 is blocked while a request is
 * served (libfcgi installs its handler without SA_RESTART, so a signal during
 * a blocking read of the body would break that request) and only delivered
 * while waiting in accept. --libfcgi-stop leaves SIGUSR1 to libfcgi instead.
 * FCGI_APP_PLAIN=1 in the environment makes it an unmodified libfcgi
 * application: no signal masking or handler of its own, FCGX_Accept_r() with
 * libfcgi's defaults (a SIGUSR1 during a blocking read of the body then cuts
 * that body short, which the echoed length and digest show). */
#include <fcgiapp.h>
#include <openssl/evp.h>

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop_requested;

static void on_usr1(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* The value of key in query (a copy in out), or false. */
static bool query_get(const char *query, const char *key, char *out, size_t outlen)
{
    size_t klen = strlen(key);
    const char *p = query;
    while (p && *p) {
        const char *end = strchr(p, '&');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len > klen && strncmp(p, key, klen) == 0 && p[klen] == '=') {
            size_t vlen = len - klen - 1;
            if (vlen >= outlen)
                vlen = outlen - 1;
            memcpy(out, p + klen + 1, vlen);
            out[vlen] = '\0';
            return true;
        }
        p = end ? end + 1 : NULL;
    }
    return false;
}

/* Decode %XX escapes of s in place (the test passes paths and header values). */
static void pct_decode(char *s)
{
    char *o = s;
    for (char *p = s; *p; p++) {
        unsigned int ch;
        if (p[0] == '%' && p[1] && p[2] && sscanf(p + 1, "%2x", &ch) == 1) {
            *o++ = (char)ch;
            p += 2;
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
}

/* Add "name: value" for a query key whose value is percent-decoded. */
static void header_from_query(FCGX_Request *req, const char *query, const char *key,
                              const char *name)
{
    char v[1024];
    if (!query_get(query, key, v, sizeof(v)))
        return;
    pct_decode(v);
    FCGX_FPrintF(req->out, "%s: %s\r\n", name, v);
}

static long query_long(const char *query, const char *key)
{
    char v[32];
    return query_get(query, key, v, sizeof(v)) ? strtol(v, NULL, 10) : 0;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static void write_garbage(FCGX_Request *req)
{
    static const char junk[] = "HTTP/1.1 200 OK\r\nthis is not FastCGI\r\n\r\n";
    ssize_t n = write(req->ipcFd, junk, sizeof(junk) - 1);
    (void)n;
}

static void handle(FCGX_Request *req, const char *version, bool garbage)
{
    const char *method = FCGX_GetParam("REQUEST_METHOD", req->envp);
    const char *query = FCGX_GetParam("QUERY_STRING", req->envp);
    if (!method)
        method = "";
    if (!query)
        query = "";
    if (garbage || query_long(query, "garbage")) {
        write_garbage(req);
        return;
    }
    /* Read the whole body (libfcgi ends FCGI_STDIN with EOF). */
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    static char buf[65536];
    unsigned long long total = 0;
    int n;
    while ((n = FCGX_GetStr(buf, sizeof(buf), req->in)) > 0) {
        EVP_DigestUpdate(md, buf, (size_t)n);
        total += (unsigned long long)n;
    }
    unsigned char dig[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    EVP_DigestFinal_ex(md, dig, &dlen);
    EVP_MD_CTX_free(md);
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    for (unsigned int i = 0; i < dlen; i++)
        snprintf(hex + 2 * i, 3, "%02x", dig[i]);

    long ms = query_long(query, "sleep");
    if (ms > 0)
        sleep_ms(ms);
    char text[256];
    if (query_get(query, "stderr", text, sizeof(text)))
        FCGX_FPrintF(req->err, "%s\n", text);

    long status = query_long(query, "status");
    FCGX_FPrintF(req->out, "Status: %ld\r\nContent-Type: text/plain\r\n", status ? status : 200);
    FCGX_FPrintF(req->out, "X-App-Version: %s\r\nX-App-Pid: %d\r\n", version, (int)getpid());
    header_from_query(req, query, "accel", "X-Accel-Redirect");
    header_from_query(req, query, "sendfile", "X-Sendfile");
    header_from_query(req, query, "disposition", "Content-Disposition");
    header_from_query(req, query, "cache", "Cache-Control");
    if (query_get(query, "disposition", text, sizeof(text)))
        FCGX_PutS("Set-Cookie: seen=1\r\n", req->out);
    long hkb = query_long(query, "header_kb");
    if (hkb > 0) {
        FCGX_PutS("X-Big: ", req->out);
        for (long i = 0; i < hkb * 1024; i++)
            FCGX_PutChar('h', req->out);
        FCGX_PutS("\r\n", req->out);
    }
    FCGX_FPrintF(req->out, "\r\nversion=%s pid=%d method=%s length=%llu sha256=%s query=%s\n",
                 version, (int)getpid(), method, total, hex, query);
    long bkb = query_long(query, "body_kb");
    if (bkb > 0) {
        memset(buf, 'x', 1024);
        for (long i = 0; i < bkb; i++)
            FCGX_PutStr(buf, 1024, req->out);
    }
}

/* Write line to the readiness pipe ferry passes (if any). */
static void report(const char *line)
{
    const char *fd = getenv("FERRY_READY_FD");
    if (!fd)
        return;
    ssize_t n = write(atoi(fd), line, strlen(line));
    (void)n;
}

int main(int argc, char **argv)
{
    const char *version = getenv("APP_VERSION");
    bool ready = false, never_ready = false, garbage = false, libfcgi_stop = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--version") == 0 && i + 1 < argc)
            version = argv[++i];
        else if (strcmp(argv[i], "--ready") == 0)
            ready = true;
        else if (strcmp(argv[i], "--never-ready") == 0)
            never_ready = true;
        else if (strcmp(argv[i], "--garbage") == 0)
            garbage = true;
        else if (strcmp(argv[i], "--libfcgi-stop") == 0)
            libfcgi_stop = true;
        else {
            fprintf(stderr, "fcgi_app: unknown argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!version)
        version = "v1";
    const char *plain = getenv("FCGI_APP_PLAIN");
    if (plain && strcmp(plain, "1") == 0)
        libfcgi_stop = true; /* everything below is then libfcgi's default */
    if (never_ready) {
        report("STARTING\n");
        for (;;)
            pause(); /* SIGUSR1/SIGTERM (default action) end it */
    }

    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    if (!libfcgi_stop) {
        /* Installed before FCGX_Init(), which then leaves SIGUSR1 alone. No
         * SA_RESTART: the signal must interrupt accept(). */
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_usr1;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGUSR1, &sa, NULL);
        sigprocmask(SIG_BLOCK, &usr1, NULL);
    }
    if (FCGX_Init() != 0) {
        fprintf(stderr, "fcgi_app: FCGX_Init failed\n");
        return 1;
    }
    FCGX_Request req;
    FCGX_InitRequest(&req, 0, libfcgi_stop ? 0 : FCGI_FAIL_ACCEPT_ON_INTR);
    if (ready)
        report("READY\n");
    for (;;) {
        if (!libfcgi_stop) {
            /* A signal that came while serving is delivered here. */
            sigprocmask(SIG_UNBLOCK, &usr1, NULL);
            if (stop_requested)
                break;
        }
        int r = FCGX_Accept_r(&req);
        if (!libfcgi_stop)
            sigprocmask(SIG_BLOCK, &usr1, NULL);
        if (r < 0)
            break;
        handle(&req, version, garbage);
        FCGX_Finish_r(&req);
    }
    return 0;
}
