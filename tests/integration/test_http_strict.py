"""End to end: the strict request parser as a client sees it.

Malformed and smuggling-shaped requests sent as raw bytes get the right 4xx/5xx
and the connection is closed right after, so bytes a lenient front end might
have taken as a second request are never answered. Valid pipelined requests
are all answered, in order.
"""
import os

import pytest

from conftest import http_raw, read_response

GOOD = b"GET /hello.txt HTTP/1.1\r\nHost: a\r\n\r\n"

# (request bytes, expected status); each is followed by GOOD on the same
# connection, which must never be answered.
BAD = [
    (b"POST /hello.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST /hello.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
     b"Content-Length: 5\r\n\r\n0\r\n\r\n", 400),
    (b"POST /hello.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
     b"Content-Length: 50\r\n\r\nhello", 400),
    (b"POST /hello.txt HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello", 400),
    (b"POST /hello.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
     400),
    (b"POST /hello.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"
     b"0\r\n\r\n", 400),
    (b"POST /hello.txt HTTP/1.1\r\nHost: a\r\nX: y\r\n Transfer-Encoding: chunked\r\n\r\n", 400),
    (b"POST /hello.txt HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST /hello.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
     b"0\r\n\r\n", 501),
    (b"GET /hello.txt HTTP/1.1\nHost: a\n\n", 400),
    (b"GET /hello.txt HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", 400),
    (b"GET /hello.txt HTTP/1.1\r\n\r\n", 400),
    (b"GET /hello.txt HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET  /hello.txt HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"GET /hello.txt HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    (b"GET hello.txt HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
]


@pytest.fixture
def srv(ferry_factory):
    f = ferry_factory(start=False)
    with open(os.path.join(f.root, "hello.txt"), "wb") as fh:
        fh.write(b"hello, ferry\n")
    return f.start()


def _statuses(data):
    """Statuses of the responses in data, framed by their Content-Length."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"truncated response head: {data!r}"
        lines = head.split(b"\r\n")
        assert lines[0].startswith(b"HTTP/1.1 "), lines[0]
        out.append(int(lines[0].split(b" ")[1]))
        cl = [int(l.split(b":", 1)[1]) for l in lines[1:] if l.lower().startswith(b"content-length:")]
        assert len(cl) == 1, head
        assert len(rest) >= cl[0], data
        data = rest[cl[0]:]
    return out


@pytest.mark.parametrize("req,status", BAD, ids=[f"{i}-{s}" for i, (_, s) in enumerate(BAD)])
def test_bad_request_answered_and_closed(srv, req, status):
    with srv.connect() as s:
        data = http_raw(s, req + GOOD)
    # One response, the error; the pipelined GOOD is never answered.
    assert _statuses(data) == [status], data
    head, body = data.split(b"\r\n\r\n", 1)
    assert b"hello, ferry" not in data
    assert body.startswith(str(status).encode()), data
    assert b"\r\nconnection: close" in head.lower(), head


def test_uri_too_long_before_head_complete(srv):
    # The head never completes: the 414 must come from the target alone,
    # not from the header timeout.
    with srv.connect() as s:
        data = http_raw(s, b"GET /" + b"a" * (8 * 1024 + 10), timeout=5.0)
    assert _statuses(data) == [414], data[:200]


def test_header_too_large(srv):
    with srv.connect() as s:
        data = http_raw(s, b"GET /hello.txt HTTP/1.1\r\nHost: a\r\nX: " + b"y" * (17 * 1024),
                        timeout=5.0)
    assert _statuses(data) == [431], data[:200]


def test_pipelined_and_leading_crlf(srv):
    # Leading empty lines are skipped; three pipelined requests in one write
    # get three answers in order.
    reqs = (b"\r\n" + GOOD
            + b"GET /missing HTTP/1.1\r\nHost: a\r\n\r\n"
            + b"GET /hello.txt HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    with srv.connect() as s:
        s.sendall(reqs)
        r1, rest = read_response(s)
        assert r1.status == 200 and r1.body == b"hello, ferry\n"
        data = rest + http_raw(s, b"")
    assert _statuses(data) == [404, 200], data
    assert data.endswith(b"hello, ferry\n")


def test_absolute_form_and_obs_text(srv):
    req = (b"GET http://files.example/hello.txt HTTP/1.1\r\nHost: other\r\n"
           b"User-Agent: caf\xc3\xa9\tbot\r\nConnection: close\r\n\r\n")
    with srv.connect() as s:
        data = http_raw(s, req)
    assert _statuses(data) == [200], data
    assert data.endswith(b"hello, ferry\n")
