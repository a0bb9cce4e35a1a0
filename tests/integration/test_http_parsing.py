"""Strict RFC 9112 request parsing, sent as raw bytes over a socket.

Every rejected shape must get its status, the plain-text error body, a
`Connection: close` header, and the server must really close the connection
(framing is in doubt after a malformed head, so nothing may follow).
"""
import socket

import pytest

from conftest import (FerryProcess, ResponseReader, raw_exchange, read_response,
                      wait_closed, wait_for)

INDEX = b"<h1>index</h1>\n"
PAGE = b"page body\n"

BODY_400 = b"400 Bad Request\n"


@pytest.fixture(scope="module")
def parsing_ferry(tmp_path_factory):
    """One ferry for the whole table: starting one per case would dominate
    the run time. Module-scoped, so it does its own teardown checks."""
    wd = tmp_path_factory.mktemp("parsing")
    f = FerryProcess(wd, "")
    with open(f.root + "/index.html", "wb") as fh:
        fh.write(INDEX)
    with open(f.root + "/page.txt", "wb") as fh:
        fh.write(PAGE)
    f.start()
    yield f
    f.stop_checked()


def req(head):
    """Build raw request bytes from a head written with \\r\\n line ends."""
    return head.encode("latin-1") if isinstance(head, str) else head


# (id, raw request, expected status, expected body)
REJECTED = [
    # Request smuggling shapes.
    ("cl-and-te", "POST /page.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
     "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, BODY_400),
    ("te-and-cl", "POST /page.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
     "Content-Length: 5\r\n\r\n0\r\n\r\n", 400, BODY_400),
    ("cl-differing-lines", "GET /page.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
     "Content-Length: 6\r\n\r\nabcdef", 400, BODY_400),
    ("cl-differing-list", "GET /page.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\n"
     "abcdef", 400, BODY_400),
    ("cl-plus", "GET /page.txt HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nabcde",
     400, BODY_400),
    ("cl-negative", "GET /page.txt HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
     400, BODY_400),
    ("cl-hex", "GET /page.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n",
     400, BODY_400),
    ("cl-exponent", "GET /page.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 1e3\r\n\r\n",
     400, BODY_400),
    ("cl-empty", "GET /page.txt HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n",
     400, BODY_400),
    ("cl-overflow", "GET /page.txt HTTP/1.1\r\nHost: x\r\n"
     "Content-Length: 99999999999999999999999\r\n\r\n", 400, BODY_400),
    ("cl-int64-plus-one", "GET /page.txt HTTP/1.1\r\nHost: x\r\n"
     "Content-Length: 9223372036854775808\r\n\r\n", 400, BODY_400),
    # A lone "gzip" leaves chunked not last: the body length cannot be
    # determined, and RFC 9112 6.3 says the server MUST answer 400 and close
    # (its 501 for unknown codings is only a SHOULD).
    ("te-gzip", "POST /page.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
     400, BODY_400),
    ("te-identity", "POST /page.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n",
     400, BODY_400),
    ("te-empty", "POST /page.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \r\n\r\n",
     400, BODY_400),
    ("te-gzip-chunked", "POST /page.txt HTTP/1.1\r\nHost: x\r\n"
     "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501, b"501 Not Implemented\n"),
    ("te-chunked-gzip", "POST /page.txt HTTP/1.1\r\nHost: x\r\n"
     "Transfer-Encoding: chunked, gzip\r\n\r\n", 400, BODY_400),
    ("te-chunked-chunked", "POST /page.txt HTTP/1.1\r\nHost: x\r\n"
     "Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400, BODY_400),
    ("te-two-lines", "POST /page.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
     "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, BODY_400),
    ("te-http10", "POST /page.txt HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
     "0\r\n\r\n", 400, BODY_400),
    # Field syntax.
    ("obs-fold", "GET /page.txt HTTP/1.1\r\nHost: x\r\nX-A: one\r\n two\r\n\r\n", 400, BODY_400),
    ("obs-fold-tab", "GET /page.txt HTTP/1.1\r\nHost: x\r\nX-A: one\r\n\ttwo\r\n\r\n",
     400, BODY_400),
    ("fold-after-request-line", "GET /page.txt HTTP/1.1\r\n Host: x\r\n\r\n", 400, BODY_400),
    ("space-before-colon", "GET /page.txt HTTP/1.1\r\nHost : x\r\n\r\n", 400, BODY_400),
    ("tab-before-colon", "GET /page.txt HTTP/1.1\r\nHost: x\r\nX-A\t: 1\r\n\r\n", 400, BODY_400),
    ("ctl-in-name", "GET /page.txt HTTP/1.1\r\nHost: x\r\nX\x01A: 1\r\n\r\n", 400, BODY_400),
    ("ctl-in-value", "GET /page.txt HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n", 400, BODY_400),
    ("del-in-value", "GET /page.txt HTTP/1.1\r\nHost: x\r\nX-A: a\x7fb\r\n\r\n", 400, BODY_400),
    ("esc-in-value", "GET /page.txt HTTP/1.1\r\nHost: x\r\nX-A: a\x1bb\r\n\r\n", 400, BODY_400),
    ("nul-in-value", "GET /page.txt HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400, BODY_400),
    ("nul-in-name", "GET /page.txt HTTP/1.1\r\nHost: x\r\nX\x00A: 1\r\n\r\n", 400, BODY_400),
    ("nul-in-target", "GET /page\x00.txt HTTP/1.1\r\nHost: x\r\n\r\n", 400, BODY_400),
    ("colon-less-line", "GET /page.txt HTTP/1.1\r\nHost: x\r\nnonsense\r\n\r\n", 400, BODY_400),
    ("empty-name", "GET /page.txt HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n", 400, BODY_400),
    ("bare-cr-in-value", "GET /page.txt HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", 400, BODY_400),
    ("bare-cr-line-end", "GET /page.txt HTTP/1.1\r\nHost: x\rX-A: 1\r\n\r\n", 400, BODY_400),
    ("bare-lf-everywhere", "GET /page.txt HTTP/1.1\nHost: x\n\n", 400, BODY_400),
    ("bare-lf-in-fields", "GET /page.txt HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n", 400, BODY_400),
    ("bare-lf-final", "GET /page.txt HTTP/1.1\r\nHost: x\r\n\n", 400, BODY_400),
    # Host.
    ("missing-host-11", "GET /page.txt HTTP/1.1\r\nX-A: 1\r\n\r\n", 400, BODY_400),
    ("two-hosts", "GET /page.txt HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, BODY_400),
    ("two-hosts-same", "GET /page.txt HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400, BODY_400),
    ("bad-host", "GET /page.txt HTTP/1.1\r\nHost: a b\r\n\r\n", 400, BODY_400),
    # Request line.
    ("http-2.0", "GET /page.txt HTTP/2.0\r\nHost: x\r\n\r\n", 505,
     b"505 HTTP Version Not Supported\n"),
    ("http-1.2", "GET /page.txt HTTP/1.2\r\nHost: x\r\n\r\n", 505,
     b"505 HTTP Version Not Supported\n"),
    ("http-1.10", "GET /page.txt HTTP/1.10\r\nHost: x\r\n\r\n", 400, BODY_400),
    ("lowercase-http", "GET /page.txt http/1.1\r\nHost: x\r\n\r\n", 400, BODY_400),
    ("version-missing", "GET /page.txt\r\nHost: x\r\n\r\n", 400, BODY_400),
    ("version-junk", "GET /page.txt HTTP/1.1x\r\nHost: x\r\n\r\n", 400, BODY_400),
    ("method-paren", "G(T /page.txt HTTP/1.1\r\nHost: x\r\n\r\n", 400, BODY_400),
    ("method-at", "GE@ /page.txt HTTP/1.1\r\nHost: x\r\n\r\n", 400, BODY_400),
    ("method-slash", "GET/ /page.txt HTTP/1.1\r\nHost: x\r\n\r\n", 400, BODY_400),
    ("method-8bit", "G\xc9T /page.txt HTTP/1.1\r\nHost: x\r\n\r\n", 400, BODY_400),
    ("double-space", "GET  /page.txt HTTP/1.1\r\nHost: x\r\n\r\n", 400, BODY_400),
    ("tab-separator", "GET\t/page.txt HTTP/1.1\r\nHost: x\r\n\r\n", 400, BODY_400),
    ("trailing-space", "GET /page.txt HTTP/1.1 \r\nHost: x\r\n\r\n", 400, BODY_400),
    ("space-in-target", "GET /page .txt HTTP/1.1\r\nHost: x\r\n\r\n", 400, BODY_400),
    ("fragment-in-target", "GET /page.txt#x HTTP/1.1\r\nHost: x\r\n\r\n", 400, BODY_400),
    ("bad-escape", "GET /page%zz.txt HTTP/1.1\r\nHost: x\r\n\r\n", 400, BODY_400),
    ("asterisk-get", "GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400, BODY_400),
    ("asterisk-head", "HEAD * HTTP/1.1\r\nHost: x\r\n\r\n", 400, BODY_400),
    ("relative-target", "GET page.txt HTTP/1.1\r\nHost: x\r\n\r\n", 400, BODY_400),
    ("authority-form-get", "GET example.com:80 HTTP/1.1\r\nHost: x\r\n\r\n", 400, BODY_400),
    ("absolute-userinfo", "GET http://u@x/page.txt HTTP/1.1\r\nHost: x\r\n\r\n", 400, BODY_400),
    ("absolute-ftp", "GET ftp://x/page.txt HTTP/1.1\r\nHost: x\r\n\r\n", 400, BODY_400),
    ("too-many-empty-lines", "\r\n" * 5 + "GET /page.txt HTTP/1.1\r\nHost: x\r\n\r\n",
     400, BODY_400),
]


def assert_closing_error(resp, closed, extra, status, body):
    assert resp.status == status, resp
    assert resp.body == body, resp
    assert resp.header("Content-Type") == "text/plain", resp
    assert resp.header("Content-Length") == str(len(body)), resp
    assert resp.header("Connection") == "close", resp
    assert resp.header("Server") == "ferry", resp
    assert resp.header("Date"), resp
    assert extra == b"", f"bytes after the error response: {extra!r}"
    assert closed, "server did not close the connection after the error"


@pytest.mark.parametrize("raw,status,body", [c[1:] for c in REJECTED],
                         ids=[c[0] for c in REJECTED])
def test_rejected(parsing_ferry, raw, status, body):
    resp, closed, extra = raw_exchange(parsing_ferry.port, req(raw))
    assert_closing_error(resp, closed, extra, status, body)


@pytest.mark.parametrize("raw,status,body", [c[1:] for c in REJECTED if c[2] == 400][:3],
                         ids=[c[0] for c in REJECTED if c[2] == 400][:3])
def test_rejected_after_good_request_on_same_connection(parsing_ferry, raw, status, body):
    """A bad request pipelined behind a good one: the good one is answered
    in full, then the error, then the close."""
    good = b"GET /page.txt HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", parsing_ferry.port), timeout=5) as s:
        s.sendall(good + req(raw))
        rd = ResponseReader(s)
        r1 = rd.next()
        assert r1.status == 200 and r1.body == PAGE, r1
        assert r1.header("Connection") is None, r1
        r2 = rd.next()
        closed = rd.closed()
        assert_closing_error(r2, closed, rd.buf, status, body)


# Shapes that are accepted: (id, raw request, status, body, keeps the connection)
ACCEPTED = [
    ("cl-list-identical-zero", "GET /page.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 0, 0\r\n\r\n",
     200, PAGE, True),
    ("cl-lines-identical-zero", "GET /page.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
     "Content-Length: 0\r\n\r\n", 200, PAGE, True),
    # Accepted by the parser (identical values), then refused by the static
    # handler, which takes no body: 413 and close.
    ("cl-list-identical-five", "GET /page.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n"
     "abcde", 413, b"413 Content Too Large: no request body is accepted here\n", False),
    ("absolute-form", "GET http://other.example/page.txt HTTP/1.1\r\nHost: x\r\n\r\n",
     200, PAGE, True),
    ("absolute-form-https-port", "GET https://other.example:8443/page.txt?q=1 HTTP/1.1\r\n"
     "Host: x\r\n\r\n", 200, PAGE, True),
    ("absolute-form-empty-path", "GET http://other.example HTTP/1.1\r\nHost: x\r\n\r\n",
     200, INDEX, True),
    ("http10-no-host", "GET /page.txt HTTP/1.0\r\n\r\n", 200, PAGE, False),
    ("leading-empty-line", "\r\nGET /page.txt HTTP/1.1\r\nHost: x\r\n\r\n", 200, PAGE, True),
    ("ows-around-value", "GET /page.txt HTTP/1.1\r\nHost:   x \t\r\nX-A:\tv\t\r\n\r\n",
     200, PAGE, True),
    ("obs-text-in-value", "GET /page.txt HTTP/1.1\r\nHost: x\r\nX-A: caf\xe9\r\n\r\n",
     200, PAGE, True),
    ("lowercase-method-is-just-unknown", "get /page.txt HTTP/1.1\r\nHost: x\r\n\r\n",
     405, b"405 Method Not Allowed\n", True),
    ("options-asterisk", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
     405, b"405 Method Not Allowed\n", True),
]


@pytest.mark.parametrize("raw,status,body,keeps", [c[1:] for c in ACCEPTED],
                         ids=[c[0] for c in ACCEPTED])
def test_accepted(parsing_ferry, raw, status, body, keeps):
    with socket.create_connection(("127.0.0.1", parsing_ferry.port), timeout=5) as s:
        s.sendall(req(raw))
        resp, rest = read_response(s)
        assert resp.status == status, resp
        assert resp.body == body, resp
        assert rest == b""
        if keeps:
            assert resp.header("Connection") is None, resp
            # The connection is still usable: a second request is answered.
            s.sendall(b"GET /page.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            r2, _ = read_response(s)
            assert r2.status == 200 and r2.body == PAGE, r2
            assert r2.header("Connection") == "close"
        else:
            assert resp.header("Connection") == "close", resp
        closed, extra = wait_closed(s)
        assert closed and extra == b""


def test_error_request_logged_with_dash(parsing_ferry):
    """A head that could not be parsed is logged with "-" as request line."""
    resp, closed, _ = raw_exchange(parsing_ferry.port,
                                   b"GET /x HTTP/1.1\r\nHost: x\r\nX-Q: a\x01\r\n\r\n")
    assert resp.status == 400 and closed
    # The access log is written asynchronously (buffered per worker, flushed
    # each loop turn): poll with a bounded deadline.
    wait_for(lambda: '"-" 400 16 "-" "-"' in parsing_ferry.access_log(), 5,
             "the 400 access log line")
