"""Limits: head size (431), URI length (414), header_timeout (408), keepalive
timeout, max_connections, and 1,000 slow clients that must not stop a normal
one. Timings are measured against the clock, never slept."""
import os
import resource
import selectors
import socket
import time

import pytest

from conftest import ResponseReader, raw_exchange, request, wait_closed

PAGE = b"limits page\n"


def make(ferry_factory, conf):
    f = ferry_factory("[server]\n" + conf, start=False)
    with open(os.path.join(f.root, "page.txt"), "wb") as fh:
        fh.write(PAGE)
    return f.start()


def test_header_size_431(ferry_factory):
    f = make(ferry_factory, "max_header_size = 4KiB\n")
    base = "GET /page.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    # Exactly at the limit: served.
    pad = 4096 - len(base) - len("X-Pad: \r\n\r\n")
    ok = (base + "X-Pad: " + "a" * pad + "\r\n\r\n").encode()
    assert len(ok) == 4096
    resp, closed, extra = raw_exchange(f.port, ok)
    assert resp.status == 200 and resp.body == PAGE and closed
    # One byte over: 431.
    resp, closed, extra = raw_exchange(f.port, ok.replace(b"X-Pad: ", b"X-Pad: a"))
    assert resp.status == 431 and closed
    # Over it, complete head: 431 and close.
    big = (base + "X-Pad: " + "a" * 5000 + "\r\n\r\n").encode()
    resp, closed, extra = raw_exchange(f.port, big)
    assert resp.status == 431, resp
    assert resp.body == b"431 Request Header Fields Too Large\n"
    assert resp.header("Connection") == "close"
    assert closed and extra == b""
    # Over it with many small fields and no end of head in sight: 431 as soon
    # as the buffer is full, not at header_timeout.
    many = (base + "".join(f"X-H{i}: {'b' * 50}\r\n" for i in range(100))).encode()
    t0 = time.monotonic()
    resp, closed, extra = raw_exchange(f.port, many)
    assert resp.status == 431 and closed
    assert time.monotonic() - t0 < 2


def test_uri_414(ferry_factory):
    f = make(ferry_factory, "max_uri_size = 512\n")
    r = request(f.port, path="/page.txt?" + "q" * 400)
    assert r.status == 200 and r.body == PAGE
    raw = ("GET /" + "u" * 600 + " HTTP/1.1\r\nHost: x\r\n\r\n").encode()
    resp, closed, extra = raw_exchange(f.port, raw)
    assert resp.status == 414, resp
    assert resp.body == b"414 URI Too Long\n"
    assert resp.header("Connection") == "close"
    assert closed and extra == b""
    # 414 even before the request line is complete.
    with socket.create_connection(("127.0.0.1", f.port), timeout=5) as s:
        s.sendall(("GET /" + "u" * 600).encode())
        rd = ResponseReader(s)
        r = rd.next()
        assert r.status == 414 and rd.closed()


def test_uri_size_boundary(ferry_factory):
    f = make(ferry_factory, "max_uri_size = 512\n")
    at = "/page.txt?" + "q" * (512 - len("/page.txt?"))
    assert len(at) == 512
    r = request(f.port, path=at)
    assert r.status == 200 and r.body == PAGE
    resp, closed, _ = raw_exchange(f.port, f"GET {at}q HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert resp.status == 414 and resp.body == b"414 URI Too Long\n" and closed


def test_too_many_header_fields_431(ferry_factory):
    f = make(ferry_factory, "")
    # Host and Connection plus 98 make 100 fields, the most accepted.
    fields = "".join(f"X-F{i}: v\r\n" for i in range(98))
    resp, closed, _ = raw_exchange(
        f.port, f"GET /page.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{fields}\r\n".encode())
    assert resp.status == 200 and resp.body == PAGE
    fields = "".join(f"X-F{i}: v\r\n" for i in range(100))  # 101 with Host
    resp, closed, _ = raw_exchange(f.port, f"GET /page.txt HTTP/1.1\r\nHost: x\r\n{fields}\r\n".encode())
    assert resp.status == 431 and resp.body == b"431 Request Header Fields Too Large\n"
    assert resp.header("Connection") == "close" and closed


def test_header_timeout_408(ferry_factory):
    f = make(ferry_factory, "header_timeout = 1s\n")
    with socket.create_connection(("127.0.0.1", f.port), timeout=5) as s:
        t0 = time.monotonic()
        s.sendall(b"GET /page.txt HTTP/1.1\r\nHost: x\r\n")
        rd = ResponseReader(s, timeout=5)
        r = rd.next()
        elapsed = time.monotonic() - t0
        assert r.status == 408, r
        assert r.body == b"408 Request Timeout\n"
        assert r.header("Connection") == "close"
        assert rd.closed(timeout=3) and rd.buf == b""
    assert 0.9 <= elapsed <= 1.8, elapsed
    # A connection that sends nothing at all is closed (silently) at the timeout.
    with socket.create_connection(("127.0.0.1", f.port), timeout=5) as s:
        t0 = time.monotonic()
        closed, data = wait_closed(s, timeout=4)
        elapsed = time.monotonic() - t0
        assert closed and data == b""
    assert 0.9 <= elapsed <= 1.8, elapsed


def test_header_timeout_is_for_the_whole_head(ferry_factory):
    """Trickling bytes does not extend the deadline."""
    f = make(ferry_factory, "header_timeout = 1s\n")
    with socket.create_connection(("127.0.0.1", f.port), timeout=5) as s:
        t0 = time.monotonic()
        s.sendall(b"GET /page.txt HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        sel = selectors.DefaultSelector()
        sel.register(s, selectors.EVENT_READ)
        # Send a byte every 100 ms until the server answers.
        while not sel.select(timeout=0.1):
            assert time.monotonic() - t0 < 3, "no answer at header_timeout"
            s.sendall(b"a")
        r = ResponseReader(s).next()
        elapsed = time.monotonic() - t0
        assert r.status == 408
    assert 0.9 <= elapsed <= 1.8, elapsed


def test_keepalive_timeout(ferry_factory):
    f = make(ferry_factory, "keepalive_timeout = 1s\n")
    with socket.create_connection(("127.0.0.1", f.port), timeout=5) as s:
        s.sendall(b"GET /page.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        rd = ResponseReader(s)
        assert rd.next().body == PAGE
        t0 = time.monotonic()
        assert rd.closed(timeout=4), "idle keep-alive connection was not closed"
        elapsed = time.monotonic() - t0
        assert rd.buf == b""  # closed silently, no 408 for an idle connection
    assert 0.8 <= elapsed <= 1.8, elapsed


def test_keepalive_timeout_zero_disables_keepalive(ferry_factory):
    f = make(ferry_factory, "keepalive_timeout = 0\n")
    resp, closed, extra = raw_exchange(f.port, b"GET /page.txt HTTP/1.1\r\nHost: x\r\n\r\n")
    assert resp.body == PAGE and resp.header("Connection") == "close" and closed


def connect_served(port):
    """A connection that ferry has accepted and served once (so it counts)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /page.txt HTTP/1.1\r\nHost: x\r\n\r\n")
    rd = ResponseReader(s)
    assert rd.next().body == PAGE
    return s, rd


def test_max_connections(ferry_factory):
    f = make(ferry_factory, "max_connections = 20\n")
    held = [connect_served(f.port) for _ in range(20)]
    try:
        # The 21st is accepted by the kernel and closed by ferry at once.
        with socket.create_connection(("127.0.0.1", f.port), timeout=5) as extra:
            t0 = time.monotonic()
            try:
                extra.sendall(b"GET /page.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            closed, data = wait_closed(extra, timeout=3)
            assert closed, "connection over max_connections was not closed"
            assert time.monotonic() - t0 < 1.0
            assert b"limits page" not in data
        # The served ones are unaffected.
        for s, rd in held[:3] + held[-2:]:
            s.sendall(b"GET /page.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            assert rd.next().body == PAGE
        # Free five slots; new connections are accepted again. The server
        # notices the closes asynchronously, so retry within a bounded deadline.
        for s, _ in held[:5]:
            s.close()
        del held[:5]
        deadline = time.monotonic() + 3
        got = 0
        while got < 5:
            assert time.monotonic() < deadline, f"only {got} of 5 freed slots reusable"
            try:
                s, rd = connect_served(f.port)
            except (EOFError, ConnectionResetError, BrokenPipeError):
                time.sleep(0.02)
                continue
            held.append((s, rd))
            got += 1
        # And the limit still holds.
        with socket.create_connection(("127.0.0.1", f.port), timeout=5) as extra:
            try:
                extra.sendall(b"GET /page.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            closed, data = wait_closed(extra, timeout=3)
            assert closed and b"limits page" not in data
    finally:
        for s, _ in held:
            s.close()


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        new = min(n, hard) if hard != resource.RLIM_INFINITY else n
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def test_slow_clients(ferry_factory):
    """1,000 connections trickle header bytes; a normal client is still served
    fast, and all 1,000 get 408 (or are closed) at header_timeout."""
    n = 1000
    if raise_nofile(n + 200) < n + 100:
        pytest.skip("RLIMIT_NOFILE too low for 1,000 client sockets")
    f = make(ferry_factory, "header_timeout = 2s\nmax_connections = 5000\n")
    sel = selectors.DefaultSelector()
    conns = []
    opened = {}
    try:
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", f.port), timeout=5)
            s.setblocking(False)
            conns.append(s)
            opened[s] = time.monotonic()
            sel.register(s, selectors.EVENT_READ, i)
        head = b"GET /page.txt HTTP/1.1\r\nHost: x\r\nX-Trickle: " + b"z" * 10000
        pos = [0] * n
        done = {}           # index -> (time, what)
        latencies = []
        t_start = time.monotonic()
        next_trickle = t_start
        next_probe = t_start + 0.3
        while len(done) < n:
            now = time.monotonic()
            assert now - t_start < 8, f"only {len(done)} of {n} closed"
            if now >= next_trickle:
                # One byte on every live connection every ~100 ms.
                for i, s in enumerate(conns):
                    if i in done:
                        continue
                    try:
                        s.send(head[pos[i]:pos[i] + 1])
                        pos[i] += 1
                    except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                        pass
                next_trickle = now + 0.1
            if now >= next_probe and len(latencies) < 5:
                t0 = time.monotonic()
                r = request(f.port, path="/page.txt", timeout=2)
                latencies.append(time.monotonic() - t0)
                assert r.status == 200 and r.body == PAGE
                next_probe = time.monotonic() + 0.3
            for key, _ in sel.select(timeout=0.02):
                s, i = key.fileobj, key.data
                try:
                    b = s.recv(4096)
                except (ConnectionResetError, BrokenPipeError):
                    b = b""
                except BlockingIOError:
                    continue
                if b and b"408 Request Timeout" not in b and not b.startswith(b"HTTP/1.1 408"):
                    raise AssertionError(f"unexpected answer to a slow client: {b[:100]!r}")
                if b.startswith(b"HTTP/1.1 408") or not b:
                    if i not in done:
                        done[i] = (time.monotonic() - opened[s], "408" if b else "closed")
                    if not b:
                        sel.unregister(s)
        worst = max(t for t, _ in done.values())
        first = min(t for t, _ in done.values())
        got_408 = sum(1 for _, what in done.values() if what == "408")
        print(f"slow clients: {n} closed between {first:.2f}s and {worst:.2f}s after connect,"
              f" {got_408} got a 408 first; normal client latencies "
              f"{[round(x * 1000, 1) for x in latencies]} ms")
        assert len(latencies) >= 3
        assert max(latencies) < 0.5, latencies
        assert first >= 1.8, first
        assert worst <= 3.5, worst
        assert got_408 == n, f"{n - got_408} slow clients were closed without a 408"
    finally:
        for s in conns:
            s.close()
