"""Connection behaviour: keep-alive, pipelining, HTTP/1.0, Connection: close,
Date and Server on every response. (TCP_NODELAY is not observable from the
client side, so it is not tested here.)"""
import email.utils
import os
import socket
import time

import pytest

from conftest import FerryProcess, ResponseReader, connect_slow_reader, raw_exchange

FILES = {f"f{i}.txt": f"file number {i}\n".encode() * (i + 1) for i in range(5)}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    f = FerryProcess(tmp_path_factory.mktemp("conn"), "")
    for name, content in FILES.items():
        with open(os.path.join(f.root, name), "wb") as fh:
            fh.write(content)
    f.start()
    yield f
    f.stop_checked()


def check_common_headers(resp):
    assert resp.header("Server") == "ferry", resp
    date = resp.header("Date")
    assert date and date.endswith(" GMT"), resp
    when = email.utils.parsedate_to_datetime(date).timestamp()
    assert abs(when - time.time()) < 5, date


def test_keepalive_several_requests(srv):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        rd = ResponseReader(s)
        for i in range(5):
            s.sendall(f"GET /f{i}.txt HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            r = rd.next()
            assert r.status == 200 and r.body == FILES[f"f{i}.txt"]
            assert r.header("Connection") is None
            check_common_headers(r)
        s.sendall(b"GET /missing HTTP/1.1\r\nHost: x\r\n\r\n")
        r = rd.next()
        assert r.status == 404 and r.header("Connection") is None  # a 404 keeps the connection
        check_common_headers(r)
        s.sendall(b"GET /f0.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        assert rd.next().body == FILES["f0.txt"]


def test_pipelining_in_order(srv):
    reqs = b"".join(f"GET /f{i}.txt HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(5))
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(reqs)  # all five in one send
        rd = ResponseReader(s)
        for i in range(5):
            r = rd.next()
            assert r.status == 200, r
            assert r.body == FILES[f"f{i}.txt"], (i, r)
            check_common_headers(r)
        assert rd.buf == b""


def test_pipelining_mixed_with_head_and_close(srv):
    reqs = (b"HEAD /f1.txt HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /missing HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /f2.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            b"GET /f3.txt HTTP/1.1\r\nHost: x\r\n\r\n")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(reqs)
        rd = ResponseReader(s)
        h = rd.next(head_request=True)
        assert h.status == 200 and h.header("Content-Length") == str(len(FILES["f1.txt"]))
        assert rd.next().status == 404
        r = rd.next()
        assert r.body == FILES["f2.txt"] and r.header("Connection") == "close"
        # The request after Connection: close is never answered.
        assert rd.closed() and rd.buf == b""


def test_pipelining_split_across_sends(srv):
    """A head split at awkward places (inside CRLF pairs) is still one request."""
    data = b"GET /f1.txt HTTP/1.1\r\nHost: x\r\n\r\nGET /f2.txt HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pieces = [data[:21], data[21:33], data[33:35], data[35:]]
        for p in pieces:
            s.sendall(p)
        rd = ResponseReader(s)
        assert rd.next().body == FILES["f1.txt"]
        assert rd.next().body == FILES["f2.txt"]


def test_http10_closes_by_default(srv):
    resp, closed, extra = raw_exchange(srv.port, b"GET /f1.txt HTTP/1.0\r\n\r\n")
    assert resp.status == 200 and resp.body == FILES["f1.txt"]
    assert resp.version == "HTTP/1.1"
    assert resp.header("Connection") == "close"
    check_common_headers(resp)
    assert closed and extra == b""


def test_http10_keepalive(srv):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        rd = ResponseReader(s)
        for i in (1, 2):
            s.sendall(f"GET /f{i}.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".encode())
            r = rd.next()
            assert r.status == 200 and r.body == FILES[f"f{i}.txt"]
            assert r.header("Connection") == "keep-alive"
        s.sendall(b"GET /f3.txt HTTP/1.0\r\n\r\n")
        r = rd.next()
        assert r.body == FILES["f3.txt"] and r.header("Connection") == "close"
        assert rd.closed()


@pytest.mark.parametrize("value", ["close", "Close", "keep-alive, close", "CLOSE"])
def test_connection_close_honoured(srv, value):
    raw = f"GET /f1.txt HTTP/1.1\r\nHost: x\r\nConnection: {value}\r\n\r\n".encode()
    resp, closed, extra = raw_exchange(srv.port, raw)
    assert resp.status == 200 and resp.body == FILES["f1.txt"]
    assert resp.header("Connection") == "close"
    assert closed and extra == b""


def test_date_and_server_on_errors(srv):
    for raw in (b"GET /missing HTTP/1.1\r\nHost: x\r\n\r\n",
                b"BAD\r\n\r\n",
                b"DELETE /f1.txt HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET /f1.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=9999-\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(raw)
            check_common_headers(ResponseReader(s).next())


def test_client_half_close_still_answered(srv):
    """A client that sends its request and shuts down its write side still
    gets the response."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"GET /f4.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        rd = ResponseReader(s)
        r = rd.next()
        assert r.status == 200 and r.body == FILES["f4.txt"]


def test_many_pipelined_requests_beyond_the_input_buffer(srv):
    """200 pipelined requests (~60 KiB, several times max_header_size) in one
    send: all answered, in order, with the right bodies."""
    n = 200
    reqs = b"".join(
        f"GET /f{i % 5}.txt?n={i} HTTP/1.1\r\nHost: x\r\nX-Pad: {'p' * 200}\r\n\r\n".encode()
        for i in range(n))
    assert len(reqs) > 3 * 16384
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(reqs)
        rd = ResponseReader(s, timeout=10)
        for i in range(n):
            r = rd.next()
            assert r.status == 200 and r.body == FILES[f"f{i % 5}.txt"], (i, r)


def test_pipelined_large_responses_to_a_slow_reader(srv):
    """Pipelined requests whose responses fill the socket: the server must
    keep the queued requests until it can answer them."""
    big = os.urandom(1 << 20)
    with open(os.path.join(srv.root, "big1m.bin"), "wb") as fh:
        fh.write(big)
    reqs = b"".join(f"GET /{name} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                    for name in ["big1m.bin", "f1.txt", "big1m.bin", "f2.txt", "big1m.bin"])
    s = connect_slow_reader(srv.port, 8192)
    with s:
        s.sendall(reqs)
        rd = ResponseReader(s, timeout=10)
        for expect in [big, FILES["f1.txt"], big, FILES["f2.txt"], big]:
            r = rd.next()
            assert r.status == 200 and r.body == expect
        assert rd.buf == b""


def test_send_timeout_drops_a_reader_that_stops(ferry_factory):
    f = ferry_factory("[server]\nsend_timeout = 1s\n", start=False)
    with open(os.path.join(f.root, "big.bin"), "wb") as fh:
        fh.write(b"y" * (16 << 20))
    f.start()
    s = connect_slow_reader(f.port)
    with s:
        s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(5)
        assert s.recv(64).startswith(b"HTTP/1.1 200 OK")
        # Stop reading; once the server gives up it closes (or resets) the
        # connection, which we see by draining whatever remains buffered.
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", f.port), timeout=5) as probe:
            # While stuck on the slow reader, others are served.
            probe.sendall(b"GET /missing HTTP/1.1\r\nHost: x\r\n\r\n")
            assert ResponseReader(probe).next().status == 404
        # This is the stalled client's behaviour, not a wait for readiness:
        # it must read nothing for longer than send_timeout. Then drain.
        time.sleep(1.6)
        total = 0
        closed = False
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                b = s.recv(1 << 20)
            except ConnectionResetError:
                closed = True
                break
            if not b:
                closed = True
                break
            total += len(b)
        assert closed, "connection stuck past send_timeout was not closed"
        assert total < (16 << 20), "the whole file arrived: the test did not stall the sender"
        assert time.monotonic() - t0 < 5
