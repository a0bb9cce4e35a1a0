/* CGI/1.1 (RFC 3875) as FastCGI uses it: the request meta-variables sent as
 * PARAMS, and the header block that starts an application's STDOUT. */
#ifndef FERRY_FCGI_CGI_H
#define FERRY_FCGI_CGI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "http/parser.h"

struct buf;

/* A response header block longer than this is refused (502). */
#define CGI_HEAD_MAX (64 * 1024)
/* At most this many header lines in it. */
#define CGI_MAX_HEADERS 128

/* What the meta-variables are made from. Views, not copied. */
struct cgi_request_info {
    const struct http_request *req;
    const struct sockaddr *peer; /* REMOTE_ADDR, REMOTE_PORT */
    const char *path;            /* the decoded, normalised path (static_decode_path) */
    size_t path_len;             /* under location (the caller checked) */
    const char *location;        /* [backend] location, e.g. "/app/" */
    const char *document_root;   /* absolute */
    const char *script_filename; /* [backend] script_filename; "" = document_root + path */
    const char *server_software; /* "ferry/1.0" */
    unsigned server_port;        /* used when Host carries no port */
    int64_t content_length;      /* CONTENT_LENGTH; -1: none (a chunked body streamed) */
    bool https;                  /* the request came over TLS: HTTPS=on */
};

/**
 * Append the request's meta-variables to out as FastCGI name-value pairs
 * (the content of PARAMS records): GATEWAY_INTERFACE, SERVER_SOFTWARE,
 * SERVER_PROTOCOL, SERVER_NAME, SERVER_PORT, REQUEST_METHOD, REQUEST_URI,
 * QUERY_STRING, SCRIPT_NAME (location without its trailing slash), PATH_INFO
 * (the rest of the path), SCRIPT_FILENAME, DOCUMENT_ROOT, REMOTE_ADDR,
 * REMOTE_PORT, CONTENT_LENGTH (in->content_length when >= 0), CONTENT_TYPE
 * (when present), REDIRECT_STATUS=200 (php-cgi's
 * force_redirect), HTTPS=on when it applies, and HTTP_<NAME> for every other
 * header (repeats joined with ", ", Cookie with "; "). Never HTTP_PROXY
 * (httpoxy), never a header whose name contains '_' (it would be
 * indistinguishable from one with '-'), never Content-Length, Content-Type,
 * Transfer-Encoding or Connection as HTTP_*.
 * Returns 0, or -ENOBUFS when out's maximum is reached. Any thread.
 */
int cgi_params_build(struct buf *out, const struct cgi_request_info *in);

/* One response header line: views into the parsed buffer. */
struct cgi_header {
    struct http_str name;
    struct http_str value; /* surrounding whitespace removed */
};

/* A parsed CGI response header block. */
struct cgi_head {
    int status;             /* from Status:, else 302 with a Location, else 200 */
    int64_t content_length; /* from Content-Length, -1 when absent */
    struct http_str location;
    bool local_redirect; /* Location is a local path ("/...") and no Status was given */
    /* Every header to pass to the client: all but Status, Content-Length and
     * the hop-by-hop ones (Connection, Keep-Alive, Transfer-Encoding, TE,
     * Trailer, Upgrade, Proxy-Connection). Location is included. */
    struct cgi_header headers[CGI_MAX_HEADERS];
    size_t num_headers;
};

/**
 * Parse the header block at the front of (buf, len): lines ending in LF or
 * CRLF, up to an empty line. Returns the bytes of the block (the body starts
 * there), -2 when it is incomplete and still shorter than CGI_HEAD_MAX, -1
 * when it is invalid: a line that is not "token: value" (obs-fold
 * included), control characters in a value, a malformed Status (three
 * digits 200-599 — or 1xx never —, then SP or the end), a Content-Length
 * that is not digits or disagrees with an earlier one, more than
 * CGI_MAX_HEADERS lines, or no end within CGI_HEAD_MAX bytes. Views point
 * into buf. Pure; any thread; stateless (call again on the grown buffer).
 */
long cgi_parse_head(const char *buf, size_t len, struct cgi_head *out);

#endif
