"""Process lifecycle: graceful SIGTERM, SIGHUP log reopening, the access log
format, listening without LISTEN_FDS, readiness."""
import errno
import hashlib
import os
import re
import select
import signal
import socket
import time

import pytest

from conftest import (ResponseReader, connect_slow_reader, free_port, read_hashed, request,
                      wait_closed, wait_for)

PAGE = b"lifecycle page\n"


def make(ferry_factory, conf="", **kw):
    f = ferry_factory(conf, start=False, **kw)
    with open(os.path.join(f.root, "page.txt"), "wb") as fh:
        fh.write(PAGE)
    return f


def test_sigterm_finishes_inflight_response(ferry_factory):
    # One worker: once the idle connection below is closed, that worker has
    # seen the stop, so a connection made afterwards must not be served. With
    # several workers each sees the stop at its own moment, and there is no
    # client-visible point after which all have.
    f = make(ferry_factory, "shutdown_timeout = 10s\n", workers=1)
    size = 24 * 1024 * 1024
    content = os.urandom(1024 * 1024) * 24
    with open(os.path.join(f.root, "big.bin"), "wb") as fh:
        fh.write(content)
    f.start()
    # An idle keep-alive connection, to be closed on SIGTERM.
    idle = socket.create_connection(("127.0.0.1", f.port), timeout=5)
    idle.sendall(b"GET /page.txt HTTP/1.1\r\nHost: x\r\n\r\n")
    idle_rd = ResponseReader(idle)
    assert idle_rd.next().body == PAGE
    # A slow reader: small receive buffer, reads the head and a little.
    slow = connect_slow_reader(f.port, 16384)
    slow.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    got = b""
    while b"\r\n\r\n" not in got:
        got += slow.recv(4096)
    head, body = got.split(b"\r\n\r\n", 1)
    assert b"Content-Length: %d" % size in head
    assert len(body) < size // 4, "the whole response fit the socket buffers; test is void"

    t_term = time.monotonic()
    f.proc.send_signal(signal.SIGTERM)
    # Idle keep-alive connections are closed at once.
    closed, data = wait_closed(idle, timeout=3)
    assert closed and data == b""
    assert time.monotonic() - t_term < 1.5
    idle.close()
    # New connections are no longer served: the kernel still completes the
    # handshake (the listening socket stays open until exit), but no answer comes.
    late = socket.create_connection(("127.0.0.1", f.port), timeout=5)
    late.sendall(b"GET /page.txt HTTP/1.1\r\nHost: x\r\n\r\n")
    r, _, _ = select.select([late], [], [], 0.5)
    if r:
        try:
            data = late.recv(100)
        except ConnectionResetError:
            data = b""
        assert data == b"", f"a connection made after SIGTERM was served: {data!r}"
    # The in-flight response completes with all its bytes.
    assert read_hashed(slow, size, body) == hashlib.sha256(content).digest()
    closed, extra = wait_closed(slow, timeout=5)
    assert closed and extra == b"", "connection not closed after the last response"
    slow.close()
    code = f.proc.wait(10)
    elapsed = time.monotonic() - t_term
    late.close()
    assert code == 0, f.log()
    assert elapsed < 5, f"ferry took {elapsed:.2f}s to exit after the response completed"
    assert "stopped" in f.log()
    # Every access log line was flushed before exit, the in-flight one included.
    log = f.access_log()
    assert f'"GET /big.bin HTTP/1.1" 200 {size} ' in log, log
    assert f'"GET /page.txt HTTP/1.1" 200 {len(PAGE)} ' in log, log


def test_sigterm_idle_exits_promptly(ferry_factory):
    f = make(ferry_factory).start()
    assert request(f.port, path="/page.txt").body == PAGE
    t0 = time.monotonic()
    code = f.stop()
    assert code == 0
    assert time.monotonic() - t0 < 2


def test_sigint_is_graceful_too(ferry_factory):
    f = make(ferry_factory).start()
    assert request(f.port, path="/page.txt").body == PAGE
    assert f.stop(sig=signal.SIGINT) == 0
    assert "SIGINT: stopping gracefully" in f.log()


def test_shutdown_timeout_bounds_exit(ferry_factory):
    """A client that never reads cannot hold ferry beyond shutdown_timeout."""
    f = make(ferry_factory, "shutdown_timeout = 1s\n")
    with open(os.path.join(f.root, "big.bin"), "wb") as fh:
        fh.write(b"x" * (16 * 1024 * 1024))
    f.start()
    stuck = connect_slow_reader(f.port)
    try:
        stuck.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        stuck.settimeout(5)
        assert stuck.recv(100).startswith(b"HTTP/1.1 200 OK")
        t0 = time.monotonic()
        f.proc.send_signal(signal.SIGTERM)
        code = f.proc.wait(10)
        elapsed = time.monotonic() - t0
        assert code == 0
        assert 0.9 <= elapsed < 3, elapsed
        assert "shutdown_timeout reached" in f.log()
    finally:
        stuck.close()


ACCESS_RE = re.compile(
    r'^127\.0\.0\.1 - - \[\d{2}/(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)/\d{4}'
    r':\d{2}:\d{2}:\d{2} \+0000\] "(?P<req>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+) '
    r'"(?P<ref>[^"]*)" "(?P<ua>[^"]*)"$')


def test_access_log_combined_format(ferry_factory):
    f = make(ferry_factory).start()
    request(f.port, path="/page.txt?x=1",
            headers={"Referer": "http://ref.example/a", "User-Agent": "tester/1.0 (x)"})
    request(f.port, path="/missing")
    request(f.port, method="HEAD", path="/page.txt")
    request(f.port, path="/page.txt", version="HTTP/1.0",
            headers={"User-Agent": 'quote"and\\back'})
    with socket.create_connection(("127.0.0.1", f.port), timeout=5) as s:
        s.sendall(b"GARBAGE\r\n\r\n")
        wait_closed(s)
    # The access log is buffered per worker and flushed asynchronously: poll
    # with a bounded deadline.
    wait_for(lambda: f.access_log().count("\n") >= 5, 5, "5 access log lines")
    lines = f.access_log().splitlines()
    parsed = []
    for line in lines:
        m = ACCESS_RE.match(line)
        assert m, f"not combined log format: {line!r}"
        parsed.append(m.groupdict())
    expected = [
        {"req": "GET /page.txt?x=1 HTTP/1.1", "status": "200", "bytes": str(len(PAGE)),
         "ref": "http://ref.example/a", "ua": "tester/1.0 (x)"},
        {"req": "GET /missing HTTP/1.1", "status": "404", "bytes": "14", "ref": "-", "ua": "-"},
        {"req": "HEAD /page.txt HTTP/1.1", "status": "200", "bytes": "0", "ref": "-", "ua": "-"},
        {"req": "GET /page.txt HTTP/1.0", "status": "200", "bytes": str(len(PAGE)),
         "ref": "-", "ua": "quote\\x22and\\x5Cback"},
        {"req": "-", "status": "400", "bytes": "16", "ref": "-", "ua": "-"},
    ]
    # Workers flush independently: compare without depending on order.
    key = lambda d: sorted(d.items())  # noqa: E731
    assert sorted(parsed, key=key) == sorted(expected, key=key)


def test_sighup_reopens_access_log(ferry_factory):
    f = make(ferry_factory).start()
    log = os.path.join(f.workdir, "access.log")
    assert request(f.port, path="/page.txt?before").status == 200
    wait_for(lambda: "before" in f.access_log(), 5, "the first access log line")
    os.rename(log, log + ".1")
    f.proc.send_signal(signal.SIGHUP)
    # The supervisor handles the signal asynchronously and says so in the error log.
    wait_for(lambda: "SIGHUP: logs reopened" in f.log(), 5, "the SIGHUP log line")
    assert request(f.port, path="/page.txt?after").status == 200
    # The access log is written asynchronously (per-worker buffer): poll.
    wait_for(lambda: os.path.exists(log) and "after" in f.access_log(), 5,
             "the new access.log with the new line")
    new = f.access_log()
    assert "GET /page.txt?after HTTP/1.1" in new and "before" not in new
    with open(log + ".1") as fh:
        old = fh.read()
    assert "before" in old and "after" not in old
    assert f.proc.poll() is None


def test_listen_without_listen_fds(ferry_factory):
    for attempt in range(2):
        port = free_port()
        f = make(ferry_factory, f"listen = 127.0.0.1:{port}\n", listen=False)
        try:
            f.start()
            break
        except RuntimeError as e:
            # Someone took the port between our probe and ferry's bind: retry once.
            if attempt == 0 and os.strerror(errno.EADDRINUSE) in str(e):
                continue
            raise
    f.port = port
    r = request(port, path="/page.txt")
    assert r.status == 200 and r.body == PAGE
    assert f"on 127.0.0.1:{port}" in f.log()
    assert f.stop() == 0
    # After exit the port is released: nothing listens there any more.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_listen_ipv6_without_listen_fds(ferry_factory):
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
            port = probe.getsockname()[1]
    except OSError as e:
        pytest.skip(f"no IPv6 loopback here: {e}")
    f = make(ferry_factory, f"listen = [::1]:{port}\n", listen=False).start()
    with socket.create_connection(("::1", port), timeout=5) as s:
        s.sendall(b"GET /page.txt HTTP/1.1\r\nHost: [::1]\r\nUser-Agent: v6\r\n\r\n")
        r = ResponseReader(s).next()
        assert r.status == 200 and r.body == PAGE
    wait_for(lambda: '"v6"' in f.access_log(), 5, "the IPv6 access log line")
    assert f.access_log().startswith("::1 - - [")


def test_listen_fds_wins_over_listen(ferry_factory):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    try:
        busy = blocker.getsockname()[1]
        # The configured address is taken; ferry must not even try it.
        f = make(ferry_factory, f"listen = 127.0.0.1:{busy}\n").start()
        assert request(f.port, path="/page.txt").body == PAGE
    finally:
        blocker.close()


def test_ready_only_after_listening(ferry_factory):
    """READY=1 (what start() waits on) means requests are served at once."""
    f = make(ferry_factory).start()
    r = request(f.port, path="/page.txt")
    assert r.status == 200 and r.body == PAGE


def test_bad_root_exits_1(ferry_factory):
    f = make(ferry_factory, "root = /nonexistent/ferry-root\n")
    with pytest.raises(RuntimeError, match="exited with 1 before ready"):
        f.start()
    assert "root '/nonexistent/ferry-root'" in f.log()


def test_aborted_response_is_logged(ferry_factory):
    # One worker: its log buffer is flushed in order, so once the later
    # request's line is there, the aborted one's would be too.
    f = make(ferry_factory, workers=1)
    with open(os.path.join(f.root, "big.bin"), "wb") as fh:
        fh.write(b"z" * (16 << 20))
    f.start()
    s = connect_slow_reader(f.port)
    s.sendall(b"GET /big.bin?aborted HTTP/1.1\r\nHost: x\r\n\r\n")
    s.settimeout(5)
    assert s.recv(64).startswith(b"HTTP/1.1 200 OK")
    # Reset the connection with unread data: the server's next write fails.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()
    assert request(f.port, path="/page.txt?later").status == 200
    wait_for(lambda: "later" in f.access_log(), 5, "the later request's log line")
    line = [ln for ln in f.access_log().splitlines() if "aborted" in ln]
    assert line, f.access_log()
    m = ACCESS_RE.match(line[0])
    assert m and m.group("status") == "200"
    assert int(m.group("bytes")) < 16 << 20
