"""Deferred handlers, streamed responses and request bodies through the real
server: ferry-test relays /_test/ to upstream.py (see conftest.relay_factory)."""
import hashlib
import os
import signal
import socket
import threading
import time

import pytest

from conftest import (ResponseReader, connect_slow_reader, raw_exchange, read_hashed, read_head,
                      read_response, rss_kib, wait_closed, wait_for)

LIMITS = "max_body_size = 64KiB\nbody_timeout = 500ms\n"


@pytest.fixture
def relay(relay_factory):
    f, up = relay_factory()
    with open(os.path.join(f.root, "ok.txt"), "wb") as fh:
        fh.write(b"static file\n")
    return f, up


@pytest.fixture
def limited(relay_factory):
    return relay_factory(LIMITS)


def get(path, version="HTTP/1.1", method="GET", extra=""):
    return f"{method} {path} {version}\r\nHost: x\r\n{extra}\r\n".encode()


def post(path, body, extra=""):
    return get(path, method="POST", extra=f"Content-Length: {len(body)}\r\n{extra}") + body


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def read_exact(sock, n):
    got = b""
    while len(got) < n:
        b = sock.recv(n - len(got))
        assert b, f"closed after {got!r}"
        got += b
    return got


class Sender(threading.Thread):
    """Send pieces on sock from a thread (while the test reads), counting the
    bytes sent; an OSError is kept in .error."""

    def __init__(self, sock, *pieces):
        super().__init__()
        self.sock, self.pieces, self.sent, self.error = sock, pieces, 0, None
        self.start()

    def run(self):
        try:
            for p in self.pieces:
                self.sock.sendall(p)
                self.sent += len(p)
        except OSError as e:
            self.error = e


def read_chunked(sock, buf, on_chunk=None):
    """De-chunk strictly (no extensions from ferry, no trailers); returns
    (body, bytes after the final CRLF). Linear in the body's size."""
    buf = bytearray(buf)
    pos = 0  # parse position in buf
    body = bytearray()

    def need(n):  # at least n unparsed bytes
        nonlocal buf, pos
        if pos > 1 << 20:
            del buf[:pos]
            pos = 0
        while len(buf) - pos < n:
            b = sock.recv(1 << 20)
            if not b:
                raise EOFError(f"closed inside chunked body after {len(body)} bytes")
            buf += b

    while True:
        while (end := buf.find(b"\r\n", pos)) < 0:
            need(len(buf) - pos + 1)
        line = bytes(buf[pos:end])
        assert line and all(c in b"0123456789abcdef" for c in line), line
        size = int(line, 16)
        pos = end + 2
        need(size + 2)
        data, crlf = bytes(buf[pos:pos + size]), bytes(buf[pos + size:pos + size + 2])
        assert crlf == b"\r\n", (line, crlf)
        pos += size + 2
        if size == 0:
            return bytes(body), bytes(buf[pos:])
        body += data
        if on_chunk:
            on_chunk(data)


# ---- deferred answers ----

def test_deferred_answer_keepalive(relay):
    f, up = relay
    with f.connect() as s:
        rd = ResponseReader(s)
        for _ in range(2):
            s.sendall(get("/_test/hello"))
            r = rd.next()
            assert r.status == 200, r
            assert r.body == b"hello\n"
            assert r.header("Content-Length") == "6"
            assert r.header("Content-Type") == "application/octet-stream"
            assert r.header("Transfer-Encoding") is None
            assert r.header("Connection") is None
    assert up.wait_event("/_test/hello", "done") >= 0


def test_pipelined_behind_deferred_in_order(relay):
    f, up = relay
    with f.connect() as s:
        s.sendall(get("/_test/delay/300") + get("/ok.txt") + get("/_test/hello") + get("/ok.txt"))
        rd = ResponseReader(s)
        bodies = [rd.next().body for _ in range(4)]
    assert bodies == [b"delayed\n", b"static file\n", b"hello\n", b"static file\n"]


def test_not_test_paths_pass_to_static(relay):
    f, up = relay
    resp, closed, _ = raw_exchange(f.port, get("/ok.txt", extra="Connection: close\r\n"))
    assert resp.body == b"static file\n"
    assert up.events() == []


# ---- streamed responses ----

def test_stream_chunked_http11(relay):
    f, up = relay
    with f.connect() as s:
        s.sendall(get("/_test/chunks"))
        r, rest = read_head(s)
        assert r.status == 200, r
        assert r.header("Transfer-Encoding") == "chunked"
        assert r.header("Content-Length") is None
        seen = []

        def on_chunk(data):
            # The first piece reaches the client before the upstream wrote the last.
            if not seen:
                seen.append(any(e == "wrote " + str(7 + 8 * 5) for _, _, e in up.events()))
        body, rest = read_chunked(s, rest, on_chunk)
        assert body == b"".join(f"piece-{i}\n".encode() for i in range(5))
        assert seen == [False], "the body was not streamed: it arrived after the last write"
        # The connection stays usable after the terminating chunk.
        s.sendall(get("/_test/hello"))
        r2 = ResponseReader(s, buffered=rest).next()
        assert r2.body == b"hello\n"


@pytest.mark.parametrize("extra", ["", "Connection: keep-alive\r\n"])
def test_stream_http10_close_delimited(relay, extra):
    f, up = relay
    with f.connect() as s:
        s.sendall(get("/_test/chunks", version="HTTP/1.0", extra=extra))
        r, rest = read_head(s)
        closed, body = wait_closed(s, 5.0, rest)
    assert r.status == 200 and r.version == "HTTP/1.1", r
    assert r.header("Transfer-Encoding") is None and r.header("Content-Length") is None
    assert r.header("Connection") == "close"
    assert closed
    assert body == b"".join(f"piece-{i}\n".encode() for i in range(5))


@pytest.mark.parametrize("path,length", [("/_test/chunks", None), ("/_test/hello", "6")])
def test_head_on_streamed_response_has_no_body(relay, path, length):
    f, up = relay
    with f.connect() as s:
        s.sendall(get(path, method="HEAD"))
        r, rest = read_head(s)
        assert r.status == 200, r
        assert r.header("Content-Length") == length
        assert r.header("Transfer-Encoding") is None
        up.wait_event(path, "done")
        # No body bytes follow; the next request's answer comes next.
        s.sendall(get("/ok.txt"))
        r2 = ResponseReader(s, buffered=rest).next()
        assert r2.status == 200 and r2.body == b"static file\n", r2


# ---- upstream failures ----

def test_upstream_short_body_closes(relay):
    f, up = relay
    with f.connect() as s:
        s.sendall(get("/_test/short"))
        r, rest = read_head(s)
        closed, body = wait_closed(s, 5, rest)
    assert r.status == 200 and r.header("Content-Length") == "100", r
    # The head promised keep-alive; only closing can tell the client.
    assert body == b"only ten b\n" and closed


@pytest.mark.parametrize("path", ["/_test/badhead", "/_test/badlength"])
def test_upstream_bad_head_502(relay, path):
    # badlength: the handler has called conn_respond_start() when it aborts;
    # nothing was sent yet, so the client must still get a 502.
    f, up = relay
    resp, closed, _ = raw_exchange(f.port, get(path))
    assert resp.status == 502 and resp.body == b"502 Bad Gateway\n", resp
    assert resp.header("Connection") == "close" and closed


def test_upstream_error_mid_stream_leaves_chunked_unterminated(relay):
    f, up = relay
    with f.connect() as s:
        s.sendall(post("/_test/reset", b"z" * 100000))
        r, rest = read_head(s)
        closed, raw = wait_closed(s, 5, rest)
    assert r.status == 200 and r.header("Transfer-Encoding") == "chunked", r
    assert closed
    assert raw == b"8\r\npartial\n\r\n", raw  # no terminating 0 chunk
    up.wait_event("/_test/reset", "reset")


# ---- timeouts and clients that go away ----

def test_timeout_504_and_upstream_stopped(relay):
    f, up = relay
    t0 = time.monotonic()
    with f.connect() as s:
        s.sendall(get("/_test/hang", extra="X-Test-Timeout-Ms: 300\r\n"))
        r, _ = read_response(s)
        elapsed = time.monotonic() - t0
    assert r.status == 504, r
    assert r.body == b"504 Gateway Timeout\n"
    assert r.header("Connection") == "close"
    assert 0.25 <= elapsed <= 1.0, elapsed
    up.wait_event("/_test/hang", "closed by ferry", timeout=2.0)


def test_timeout_between_streamed_pieces_cuts_the_body(relay):
    f, up = relay
    # The pieces come 1.5 s apart; 400 ms without an append is too long. (With
    # 150 ms and 100 ms, a loaded machine sometimes took the 100 ms before the
    # first piece and the body was cut empty.)
    with f.connect() as s:
        s.sendall(get("/_test/chunks/1500", extra="X-Test-Timeout-Ms: 400\r\n"))
        r, rest = read_head(s)
        closed, raw = wait_closed(s, 5, rest)
    assert r.status == 200 and r.header("Transfer-Encoding") == "chunked", r
    assert closed
    assert raw == b"8\r\npiece-0\n\r\n", raw  # cut, with no terminating chunk
    up.wait_event("/_test/chunks/1500", "closed by ferry")


def test_client_hangup_stops_upstream(relay):
    f, up = relay
    s = f.connect()
    s.sendall(get("/_test/delay/2000"))
    up.wait_event("/_test/delay/2000", "eof from ferry")
    time.sleep(0.1)
    s.close()
    cid = up.conn_for("/_test/delay/2000")
    t_closed = up.wait_event("/_test/delay/2000", "closed by ferry", timeout=1.5)
    t_accepted = [ms for ms, e in up.conn_events(cid) if e == "accepted"][0]
    assert t_closed - t_accepted < 1000, up.conn_events(cid)
    # ferry stays healthy.
    resp, _, _ = raw_exchange(f.port, get("/_test/hello", extra="Connection: close\r\n"))
    assert resp.body == b"hello\n"
    wait_for(lambda: "/_test/hello" in f.access_log(), 5, "the access log line")
    assert '"GET /_test/delay/2000 HTTP/1.1" 499 0 ' in f.access_log(), f.access_log()


def test_sigterm_lets_a_deferred_answer_finish(relay):
    f, up = relay
    with f.connect() as s:
        s.sendall(get("/_test/delay/300"))
        up.wait_event("/_test/delay/300", "eof from ferry")
        f.proc.send_signal(signal.SIGTERM)
        r, _ = read_response(s)
        assert r.status == 200 and r.body == b"delayed\n", r
        assert r.header("Connection") == "close"
    assert f.proc.wait(5) == 0


def test_shutdown_timeout_stops_waiting_upstreams(relay_factory):
    f, up = relay_factory("shutdown_timeout = 500ms\n")
    with f.connect() as s:
        s.sendall(get("/_test/hang"))
        up.wait_event("/_test/hang", "eof from ferry")
        t0 = time.monotonic()
        f.proc.send_signal(signal.SIGTERM)
        closed, data = wait_closed(s, 5)
        assert closed and data == b"", data
        assert f.proc.wait(5) == 0
        assert time.monotonic() - t0 < 3
    up.wait_event("/_test/hang", "closed by ferry")


# ---- backpressure ----

def test_backpressure_big_response(relay):
    f, up = relay
    n = 256 * 1024 * 1024
    base = rss_kib(f.proc.pid)
    s = connect_slow_reader(f.port, rcvbuf=65536, timeout=30)
    try:
        s.sendall(get(f"/_test/big/{n}"))
        path = f"/_test/big/{n}"
        up.wait_event(path, "wrote " + str(len(f"200 {n}\n")))
        time.sleep(1.0)  # the client reads nothing for a second

        def written():
            return max(int(e.split()[1]) for _, c, e in up.events()
                       if c == up.conn_for(path) and e.startswith("wrote "))
        w1 = written()
        grown = rss_kib(f.proc.pid) - base
        assert w1 < 16 * 1024 * 1024, f"upstream wrote {w1} bytes to a client reading nothing"
        assert grown < 64 * 1024, f"ferry's RSS grew by {grown} KiB"
        # Now read everything and check the bytes.
        r, rest = read_head(s)
        assert r.header("Content-Length") == str(n), r
        got = read_hashed(s, n, rest)
    finally:
        s.close()
    block = bytes(range(256)) * 4096
    want = hashlib.sha256()
    for _ in range(n // len(block)):
        want.update(block)
    assert got == want.digest()


def test_client_gone_mid_stream_stops_upstream(relay):
    f, up = relay
    n = 256 * 1024 * 1024
    path = f"/_test/big/{n}"
    s = f.connect()
    s.sendall(get(path))
    r, rest = read_head(s)
    read_exact(s, 1 << 20)
    s.close()
    up.wait_event(path, "closed by ferry")
    resp, _, _ = raw_exchange(f.port, get("/_test/hello", extra="Connection: close\r\n"))
    assert resp.body == b"hello\n"


def test_many_concurrent_deferred_requests(relay):
    f, up = relay
    socks = []
    for i in range(200):
        s = f.connect()
        s.sendall(get(f"/_test/delay/{200 + i % 7}", extra="Connection: close\r\n"))
        socks.append(s)
    t0 = time.monotonic()
    for s in socks:
        r, _ = read_response(s)
        assert r.status == 200 and r.body == b"delayed\n", r
        s.close()
    assert time.monotonic() - t0 < 5
    wait_for(lambda: f.access_log().count(" 200 8 ") == 200, 5, "200 access log lines")


def test_slow_client_does_not_trip_the_upstream_timeout(relay):
    # The producer is paused by the client's backpressure, not late: the
    # 300 ms upstream timeout must not cut the response while it waits.
    f, up = relay
    n = 64 * 1024 * 1024
    s = connect_slow_reader(f.port, rcvbuf=65536, timeout=30)
    try:
        s.sendall(get(f"/_test/big/{n}", extra="X-Test-Timeout-Ms: 300\r\n"))
        time.sleep(1.0)  # the client reads nothing for a second
        r, rest = read_head(s)
        assert r.status == 200 and r.header("Content-Length") == str(n), r
        got = read_hashed(s, n, rest)
    finally:
        s.close()
    block = bytes(range(256)) * 4096
    assert got == hashlib.sha256(block * 64).digest()


# ---- request bodies ----

def test_echo_content_length_small_keepalive(relay):
    f, up = relay
    with f.connect() as s:
        s.sendall(post("/_test/echo", b"hello world"))
        r, rest = read_head(s)
        assert r.status == 200 and r.header("Transfer-Encoding") == "chunked", r
        body, rest = read_chunked(s, rest)
        assert body == b"hello world"
        assert r.header("Connection") is None
        # A pipelined request right after a body on the same connection.
        s.sendall(post("/_test/echo", b"abc") + get("/_test/hello"))
        r2, rest = read_head(s, rest)
        body2, rest = read_chunked(s, rest)
        assert body2 == b"abc"
        assert ResponseReader(s, buffered=rest).next().body == b"hello\n"
    assert ("body 11 bytes" in [e for _, _, e in up.events()])


def test_empty_body_ends_at_once(relay):
    f, up = relay
    with f.connect() as s:
        s.sendall(post("/_test/echo", b"") + get("/_test/hello"))
        r, rest = read_head(s)
        body, rest = read_chunked(s, rest)
        assert r.status == 200 and body == b""
        assert ResponseReader(s, buffered=rest).next().body == b"hello\n"
    assert "body 0 bytes" in [e for _, _, e in up.events()]


def test_answer_before_the_body_closes_the_connection(relay):
    f, up = relay
    with f.connect() as s:
        s.sendall(get("/_test/early", method="POST", extra="Content-Length: 1000000\r\n")
                  + b"a" * 10)
        r, rest = read_head(s)
        assert r.status == 200 and r.header("Content-Length") == "6", r
        # The rest of the body was never read: the framing is in doubt.
        assert r.header("Connection") == "close"
        body = read_exact(s, 6 - len(rest)) if len(rest) < 6 else b""
        assert rest + body == b"early\n"
        closed, extra = wait_closed(s, 5)
        assert closed and extra == b""


def test_echo_8mib(relay):
    f, up = relay
    data = os.urandom(8 * 1024 * 1024)
    with f.connect(timeout=30) as s:
        s.sendall(post("/_test/echo", data))
        r, rest = read_head(s)
        body, _ = read_chunked(s, rest)
    assert r.status == 200
    assert len(body) == len(data) and hashlib.sha256(body).digest() == hashlib.sha256(data).digest()


def test_duplex_body_streamed_back_while_uploading(relay_factory):
    # The response is being written (CONN_WRITE) while the body is still read.
    f, up = relay_factory("max_body_size = 64MiB\n")
    data = os.urandom(16 * 1024 * 1024)
    s = f.connect(timeout=30)
    t = Sender(s, post("/_test/duplex", data))
    try:
        r, rest = read_head(s)
        body, rest = read_chunked(s, rest)
        t.join(30)
        assert t.error is None, t.error
        assert r.status == 200 and r.header("Transfer-Encoding") == "chunked", r
        assert len(body) == len(data) and body == data
        # The head went out before the body's end, when ferry could not know
        # it would read it all: it says close, and closes.
        assert r.header("Connection") == "close"
        closed, extra = wait_closed(s, 5, rest)
        assert closed and extra == b""
    finally:
        s.close()
        t.join(30)


def test_echo_chunked_with_extensions_and_trailers(relay):
    f, up = relay
    raw = (b"POST /_test/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5;ext=1\r\nhello\r\n6;a=b;c=\"d e\"\r\n world\r\n"
           b"0\r\nX-Trailer: yes\r\nX-Other: 2\r\n\r\n")
    with f.connect() as s:
        s.sendall(raw + get("/_test/hello"))
        r, rest = read_head(s)
        body, rest = read_chunked(s, rest)
        assert body == b"hello world"
        assert r.header("Connection") is None
        assert ResponseReader(s, buffered=rest).next().body == b"hello\n"


def test_expect_100_continue(relay):
    f, up = relay
    with f.connect() as s:
        s.sendall(get("/_test/echo", method="POST",
                      extra="Content-Length: 5\r\nExpect: 100-continue\r\n"))
        assert read_exact(s, len(CONTINUE)) == CONTINUE
        s.sendall(b"12345")
        r, rest = read_head(s)
        assert r.status == 200, r
        body, _ = read_chunked(s, rest)
        assert body == b"12345"


def test_content_length_over_max_413_at_once(limited):
    f, up = limited
    with f.connect() as s:
        s.sendall(get("/_test/echo", method="POST",
                      extra="Content-Length: 100000\r\nExpect: 100-continue\r\n"))
        s.settimeout(5)
        first = s.recv(65536)
        # No 100 Continue: the refusal is the first thing on the wire.
        assert first.startswith(b"HTTP/1.1 413 "), first
        r, rest = read_head(s, first)
        assert r.header("Connection") == "close"
        closed, extra = wait_closed(s, 5, rest)
    assert extra == b"413 Content Too Large\n" and closed
    assert up.events() == [], "the upstream was contacted for a refused body"


def chunked_request(path, chunks, tail=b"0\r\n\r\n"):
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + tail
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
            + body)


@pytest.mark.parametrize("raw,status", [
    # chunked data summing past max_body_size (64 KiB)
    (chunked_request("/_test/echo", [b"x" * 40000, b"y" * 40000]), 413),
    # a chunk size that is not hex
    (chunked_request("/_test/echo", [b"hello"], tail=b"zz\r\n"), 400),
])
def test_bad_chunked_body_answered_and_upstream_stopped(limited, raw, status):
    f, up = limited
    resp, closed, extra = raw_exchange(f.port, raw)
    assert resp.status == status, resp
    assert resp.body == f"{status} {resp.reason}\n".encode()
    assert resp.reason in ("Content Too Large", "Bad Request")
    assert resp.header("Connection") == "close" and closed
    up.wait_event("/_test/echo", "closed by ferry")


def test_client_stops_sending_body_408(limited):
    f, up = limited
    t0 = time.monotonic()
    with f.connect() as s:
        s.sendall(get("/_test/echo", method="POST", extra="Content-Length: 100\r\n") + b"x" * 10)
        r, rest = read_response(s)
    elapsed = time.monotonic() - t0
    assert r.status == 408, r
    assert r.body == b"408 Request Timeout\n"
    assert r.header("Connection") == "close"
    assert 0.4 <= elapsed < 3, elapsed
    up.wait_event("/_test/echo", "closed by ferry")


def test_body_timeout_after_100_continue(relay_factory):
    # send_timeout is longer than body_timeout: the 408 must come from the latter.
    f, up = relay_factory(LIMITS + "send_timeout = 3s\n")
    with f.connect(timeout=10) as s:
        t0 = time.monotonic()
        s.sendall(get("/_test/echo", method="POST",
                      extra="Content-Length: 5\r\nExpect: 100-continue\r\n"))
        assert read_exact(s, len(CONTINUE)) == CONTINUE
        r, _ = read_response(s, timeout=10)
        elapsed = time.monotonic() - t0
    assert r.status == 408 and r.body == b"408 Request Timeout\n", r
    assert 0.4 <= elapsed < 1.5, f"408 after {elapsed:.2f} s with body_timeout = 500ms"
    up.wait_event("/_test/echo", "closed by ferry")


def test_steady_upload_longer_than_the_upstream_timeout(relay):
    # While the client uploads, the time is the client's (body_timeout between
    # reads), as nginx starts its upstream timeouts only once the request is
    # sent: a steady upload longer than the producer's timeout still succeeds.
    f, up = relay
    with f.connect() as s:
        s.sendall(get("/_test/echo", method="POST",
                      extra="Content-Length: 10000\r\nX-Test-Timeout-Ms: 500\r\n"))
        try:
            for _ in range(10):  # 1 s of upload, a piece every 100 ms
                s.sendall(b"x" * 1000)
                time.sleep(0.1)
        except OSError:
            pass
        r, rest = read_head(s)
        assert r.status == 200, r
        body, _ = read_chunked(s, rest)
        assert body == b"x" * 10000


def test_body_timeout_does_not_run_while_the_upstream_is_paused(relay_factory):
    # The upstream reads nothing for 1.2 s, longer than body_timeout: the
    # client is not late, ferry stopped reading from it, so no 408.
    f, up = relay_factory("body_timeout = 500ms\nmax_body_size = 64MiB\n")
    data = os.urandom(8 * 1024 * 1024)
    s = f.connect(timeout=30)
    t = Sender(s, post("/_test/stall/1200", data))
    try:
        r, rest = read_head(s)
        body, _ = read_chunked(s, rest)
    finally:
        t.join(30)
        s.close()
    assert t.error is None, t.error
    assert r.status == 200, r
    assert body == f"{len(data)} {hashlib.sha256(data).hexdigest()}\n".encode()


def test_large_body_to_slow_upstream_is_paused(relay_factory):
    f, up = relay_factory("max_body_size = 256MiB\n")
    n = 64 * 1024 * 1024
    block = os.urandom(1 << 20)
    want = hashlib.sha256(block * 64).hexdigest()
    base = rss_kib(f.proc.pid)
    s = f.connect(timeout=30)
    t = Sender(s, get("/_test/stall/1500", method="POST", extra=f"Content-Length: {n}\r\n"),
               *([block] * 64))
    try:
        up.wait_event("/_test/stall/1500", "accepted")
        time.sleep(1.0)  # the upstream reads nothing for 1.5 s
        grown = rss_kib(f.proc.pid) - base
        assert t.sent < 48 * 1024 * 1024, f"client sent {t.sent} bytes to a stalled upstream"
        assert grown < 32 * 1024, f"ferry's RSS grew by {grown} KiB: the body was buffered"
        t.join(30)
        assert t.error is None, t.error
        r, rest = read_head(s)
        body, _ = read_chunked(s, rest)
    finally:
        s.close()
        t.join(30)
    assert r.status == 200, r
    assert body == f"{n} {want}\n".encode()


# ---- static paths are unchanged ----

def test_static_still_refuses_bodies(relay):
    f, up = relay
    resp, closed, extra = raw_exchange(
        f.port, b"POST /ok.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcd")
    assert resp.status == 405 and resp.header("Allow") == "GET, HEAD"
    assert resp.header("Connection") == "close" and closed and extra == b""
    resp, closed, extra = raw_exchange(
        f.port, b"GET /ok.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
    assert resp.status == 413, resp
    assert resp.body == b"413 Content Too Large: no request body is accepted here\n"
    assert resp.header("Connection") == "close" and closed and extra == b""
    assert up.events() == []


def test_client_gone_half_way_through_body(relay):
    f, up = relay
    with f.connect() as s:
        s.sendall(get("/_test/echo", method="POST", extra="Content-Length: 100\r\n") + b"x" * 10)
        up.wait_event("/_test/echo", "accepted")
    up.wait_event("/_test/echo", "closed by ferry")
    wait_for(lambda: "/_test/echo" in f.access_log(), 5, "the access log line")
    assert '"POST /_test/echo HTTP/1.1" 499 0 ' in f.access_log(), f.access_log()
