"""The FastCGI client (issue 10, request side): requests under [backend]
location go to processes ferry starts. Applications: tests/tools/fcgi_app
(libfcgi), php-cgi running a front controller, and fcgi_fake.py for the
faults a real library does not make (garbage, silence, OVERLOADED)."""
import hashlib
import json
import os
import shutil
import socket
import threading
import time

import pytest

from conftest import read_head, read_response, request, wait_closed, wait_for
from fcgi_client import fcgi_app_path, require

APP = fcgi_app_path()
FAKE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fcgi_fake.py")
PHP = shutil.which("php-cgi")

FRONT_PHP = r"""<?php
$path = $_SERVER['PATH_INFO'] ?? '';
if ($path === '/redirect') {
    header('Location: /app/elsewhere');
    exit;
}
if ($path === '/missing') {
    http_response_code(404);
    echo "no such thing\n";
    exit;
}
if ($path === '/upload') {
    $h = hash_init('sha256');
    $in = fopen('php://input', 'rb');
    $n = 0;
    while (!feof($in)) { $b = fread($in, 65536); $n += strlen($b); hash_update($h, $b); }
    echo "len=$n sha256=" . hash_final($h) . "\n";
    exit;
}
header('X-Php: yes');
header('Set-Cookie: a=1');
header('Set-Cookie: b=2', false);
echo "method=" . $_SERVER['REQUEST_METHOD'] . "\n";
echo "script_name=" . $_SERVER['SCRIPT_NAME'] . " path_info=$path\n";
echo "get=" . json_encode($_GET) . "\n";
echo "post=" . json_encode($_POST) . "\n";
echo "proxy=" . ($_SERVER['HTTP_PROXY'] ?? 'unset') . "\n";
"""


def backend_conf(command, processes=1, extra=""):
    return (f"[backend]\ncommand = {command}\nlocation = /app/\nsocket = ./run/app.sock\n"
            f"processes = {processes}\nready_grace = 50ms\n{extra}")


def status_json(f):
    r = f.run_cli("status", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def in_flight(f):
    """Requests holding a backend slot (the gate's count)."""
    return status_json(f)["backend"]["in_flight"]


def wait_ready(f):
    """Until the backend reports capacity (the processes are ready)."""
    wait_for(lambda: status_json(f)["backend"]["capacity"] > 0, 10, "backend ready")


@pytest.fixture
def app(ferry_factory):
    require(APP, "tests/tools/fcgi_app (libfcgi-dev)")

    def make(processes=2, extra="", args="--ready"):
        f = ferry_factory(backend_conf(f"{APP} {args}", processes, extra))
        wait_ready(f)
        return f
    return make


class Fake:
    def __init__(self, f, log):
        self.f, self.log_path = f, log

    def lines(self):
        try:
            with open(self.log_path) as fh:
                return [l.rstrip("\n") for l in fh if l.endswith("\n")]
        except OSError:
            return []


@pytest.fixture
def fake(ferry_factory, tmp_path):
    def make(processes=1, extra=""):
        log = str(tmp_path / "fake.log")
        f = ferry_factory(backend_conf(f"/usr/bin/python3 {FAKE} {log}", processes, extra))
        wait_ready(f)
        return Fake(f, log)
    return make


def dechunk(body):
    """The data of a chunked body (no extensions, no trailers)."""
    out = b""
    while True:
        size, rest = body.split(b"\r\n", 1)
        n = int(size, 16)
        if n == 0:
            return out
        out += rest[:n]
        body = rest[n + 2:]


def body_fields(body):
    return dict(kv.split("=", 1) for kv in body.decode().split() if "=" in kv)


# ---- a real libfcgi application ----

def test_get_with_query_streams_chunked(app):
    f = app()
    r = request(f.port, path="/app/hello/world?a=1&b=two")
    assert r.status == 200, r
    assert r.header("X-App-Version") == "v1"
    # the app sets no Content-Length: chunked to an HTTP/1.1 client
    assert r.header("Transfer-Encoding") == "chunked"
    fields = body_fields(r.body.split(b"\r\n", 1)[1]) if r.body[:1] != b"v" else body_fields(r.body)
    assert fields["method"] == "GET"
    assert fields["query"] == "a=1&b=two"
    assert fields["length"] == "0"
    wait_for(lambda: "backend=ok" in f.access_log(), 5, "access log line")
    assert '"GET /app/hello/world?a=1&b=two HTTP/1.1" 200' in f.access_log()


def get_body(port, path, method="GET", body=b"", headers=None, version="HTTP/1.0", timeout=5.0):
    """HTTP/1.0: a close-delimited body, no chunk framing to undo."""
    return request(port, method=method, path=path, body=body, headers=headers, version=version,
                   timeout=timeout)


def test_upload_10mib_sha256(app):
    f = app()
    data = os.urandom(10 * 1024 * 1024)
    r = get_body(f.port, "/app/upload", "POST", data, {"Content-Length": str(len(data))},
                 timeout=60)
    assert r.status == 200, r
    fields = body_fields(r.body)
    assert fields["length"] == str(len(data))
    assert fields["sha256"] == hashlib.sha256(data).hexdigest()


def test_chunked_upload_is_decoded_into_stdin(app):
    f = app()
    pieces = [os.urandom(n) for n in (1, 1000, 70000, 5, 300000)]
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", f.port), timeout=10) as s:
        s.sendall(b"POST /app/chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                  b"Connection: close\r\n\r\n")
        for i in range(0, len(body), 50000):
            s.sendall(body[i:i + 50000])
        resp, _ = read_response(s, timeout=60)
    assert resp.status == 200
    # the body is chunked too: strip the framing
    text = b"".join(resp.body.split(b"\r\n")[1::2])
    fields = body_fields(text)
    data = b"".join(pieces)
    assert fields["length"] == str(len(data))
    assert fields["sha256"] == hashlib.sha256(data).hexdigest()


def test_status_from_app_and_stderr_to_log(app):
    f = app()
    r = get_body(f.port, "/app/x?status=404&stderr=something+odd")
    assert r.status == 404
    assert b"query=status=404" in r.body
    wait_for(lambda: "backend stderr: something+odd" in f.log()
             or "backend stderr: something odd" in f.log(), 5, "stderr line in the error log")


def test_garbage_is_502_for_that_request_only(app):
    f = app()
    r = get_body(f.port, "/app/bad?garbage=1")
    assert r.status == 502
    assert r.body == b"502 Bad Gateway\n"
    r = get_body(f.port, "/app/good")
    assert r.status == 200 and b"method=GET" in r.body
    wait_for(lambda: "backend=error" in f.access_log(), 5, "access log line")


def test_header_block_over_64k_is_502(app):
    f = app()
    r = get_body(f.port, "/app/x?header_kb=70")
    assert r.status == 502 and r.body == b"502 Bad Gateway\n"
    r = get_body(f.port, "/app/x?header_kb=32")
    assert r.status == 200 and len(r.header("X-Big")) >= 32 * 1024


def test_outside_location_is_not_the_backend(app):
    f = app()
    with open(os.path.join(f.root, "apple.txt"), "w") as fh:
        fh.write("static\n")
    r = get_body(f.port, "/apple.txt")
    assert r.status == 200 and r.body == b"static\n"


# ---- holding ----

def timed(port, path, results, key, timeout=10):
    """results[key] = (Response or exception, seconds taken, monotonic end)."""
    t0 = time.monotonic()
    try:
        r = get_body(port, path, timeout=timeout)
    except Exception as e:  # noqa: BLE001 - reported by the assertion
        r = e
    end = time.monotonic()
    results[key] = (r, end - t0, end)


def test_busy_backend_holds_the_request_then_serves_it(app):
    f = app(processes=1, extra="hold_timeout = 10s\n")
    res = {}
    slow = threading.Thread(target=timed, args=(f.port, "/app/slow?sleep=1500", res, "slow"))
    slow.start()
    wait_for(lambda: in_flight(f) == 1, 5, "the slow request in flight")
    timed(f.port, "/app/next", res, "next")
    slow.join()
    r, _, end = res["next"]
    assert r.status == 200, r
    assert b"query=" in r.body
    assert res["slow"][0].status == 200
    # one process: the held request was answered only once the slow one was
    assert end >= res["slow"][2] - 0.05, f"answered {res['slow'][2] - end:.3f}s before the slow one"


def test_hold_timeout_gives_503_page_and_the_app_never_sees_it(fake):
    fk = fake(processes=1, extra="hold_timeout = 300ms\n")
    f = fk.f
    res = {}
    slow = threading.Thread(target=timed, args=(f.port, "/app/slow?sleep=1500", res, "slow"))
    slow.start()
    wait_for(lambda: "begin /app/slow?sleep=1500" in fk.lines(), 5, "slow request started")
    r = request(f.port, path="/app/held", headers={"Accept": "text/html"})
    assert r.status == 503
    assert r.header("Retry-After") == "1"
    assert b"The application is busy" in r.body
    assert r.header("Content-Type").startswith("text/html")
    slow.join()
    assert res["slow"][0].status == 200
    # the slot is free again: a new request is served
    assert get_body(f.port, "/app/after").status == 200
    assert not any("/app/held" in l for l in fk.lines()), fk.lines()
    wait_for(lambda: "backend=busy" in f.access_log(), 5, "access log line")


def test_full_hold_queue_gives_503_at_once(fake):
    fk = fake(processes=1, extra="hold_timeout = 5s\nhold_queue = 1\n")
    f = fk.f
    res = {}
    t1 = threading.Thread(target=timed, args=(f.port, "/app/a?sleep=1200", res, "a"))
    t1.start()
    wait_for(lambda: "begin /app/a?sleep=1200" in fk.lines(), 5, "first request started")
    t2 = threading.Thread(target=timed, args=(f.port, "/app/b", res, "b"))
    t2.start()
    wait_for(lambda: _held(f) == 1, 5, "second request held")
    t0 = time.monotonic()
    r = request(f.port, path="/app/c", headers={"Accept": "application/json"})
    took = time.monotonic() - t0
    assert r.status == 503
    assert json.loads(r.body)["message"].startswith("The application is busy")
    assert took < 0.5, f"503 after {took:.3f}s"
    t1.join()
    t2.join()
    assert res["b"][0].status == 200
    assert not any("/app/c" in l for l in fk.lines())
    assert status_json(f)["backend"]["held"] == 0


def _held(f):
    """Requests ferry holds (the backend status section)."""
    return status_json(f)["backend"]["held"]


# ---- faults ----

def test_silent_backend_gives_504_and_is_closed(fake):
    fk = fake(extra="timeout = 1s\n")
    f = fk.f
    t0 = time.monotonic()
    r = get_body(f.port, "/app/s?mode=silent")
    took = time.monotonic() - t0
    assert r.status == 504 and r.body == b"504 Gateway Timeout\n"
    assert 0.9 < took < 3, took
    wait_for(lambda: any(l in ("abort /app/s?mode=silent", "closed /app/s?mode=silent")
                         for l in fk.lines()), 5, "the app saw the abort")
    wait_for(lambda: in_flight(f) == 0, 5, "slot released")
    assert get_body(f.port, "/app/ok").status == 200


def test_bighead_and_nohead_are_502(fake):
    f = fake().f
    assert get_body(f.port, "/app/x?mode=bighead").status == 502
    assert get_body(f.port, "/app/x?mode=nohead").status == 502
    assert get_body(f.port, "/app/x").status == 200


def test_overloaded_is_retried_on_a_new_connection(fake):
    fk = fake()
    r = get_body(fk.f.port, "/app/o?mode=overload")
    assert r.status == 200 and b"uri=/app/o?mode=overload" in r.body
    assert fk.lines().count("begin /app/o?mode=overload") == 2


def test_params_never_carry_http_proxy(fake):
    fk = fake()
    r = get_body(fk.f.port, "/app/p/q", headers={"Proxy": "http://evil:1/", "X-A": "1",
                                                 "X_A": "spoofed"})
    assert r.status == 200
    fields = body_fields(r.body)
    assert fields["proxy"] == "None"
    assert fields["x_a"] == "1"
    assert fields["script_name"] == "/app" and fields["path_info"] == "/p/q"


def test_stderr_lines_go_to_the_error_log(fake):
    fk = fake()
    r = get_body(fk.f.port, "/app/e?mode=stderr")
    assert r.status == 200
    log = fk.f.log()
    assert "backend stderr: first problem" in log
    assert "backend stderr: second problem" in log


def test_client_disconnect_aborts_the_backend_request(fake):
    fk = fake()
    f = fk.f
    s = socket.create_connection(("127.0.0.1", f.port), timeout=5)
    s.sendall(b"GET /app/gone?sleep=5000 HTTP/1.1\r\nHost: x\r\n\r\n")
    wait_for(lambda: "begin /app/gone?sleep=5000" in fk.lines(), 5, "request reached the app")
    assert in_flight(f) == 1
    s.close()
    wait_for(lambda: any(l in ("abort /app/gone?sleep=5000", "closed /app/gone?sleep=5000")
                         for l in fk.lines()), 5, "the app saw the abort")
    wait_for(lambda: in_flight(f) == 0, 5, "slot released")
    assert get_body(f.port, "/app/after").status == 200
    wait_for(lambda: '"GET /app/gone?sleep=5000 HTTP/1.1" 499' in f.access_log(), 5, "log line")
    line = [l for l in f.access_log().splitlines() if "/app/gone" in l][0]
    assert line.endswith("backend=aborted"), line


# ---- php-cgi ----

@pytest.fixture
def php(ferry_factory, tmp_path):
    require(PHP, "php-cgi")
    front = tmp_path / "front.php"
    front.write_text(FRONT_PHP)
    f = ferry_factory(backend_conf(f"{PHP} -d post_max_size=64M -d upload_max_filesize=64M", 1,
                                   f"script_filename = {front}\n"))
    wait_ready(f)
    return f


def test_php_get_query_and_headers(php):
    r = get_body(php.port, "/app/some/where?x=1&y=z", headers={"Proxy": "http://evil:1/"})
    assert r.status == 200, r
    assert r.header("X-Php") == "yes"
    cookies = [v for k, v in r.headers if k.lower() == "set-cookie"]
    assert cookies == ["a=1", "b=2"]
    text = r.body.decode()
    assert "method=GET" in text
    assert "script_name=/app path_info=/some/where" in text
    assert 'get={"x":"1","y":"z"}' in text
    assert "proxy=unset" in text


def test_php_post_form(php):
    body = b"name=ferry&n=42"
    r = get_body(php.port, "/app/form", "POST", body,
                 {"Content-Type": "application/x-www-form-urlencoded",
                  "Content-Length": str(len(body))})
    assert r.status == 200
    assert 'post={"name":"ferry","n":"42"}' in r.body.decode()


def test_php_upload_10mib(php):
    data = os.urandom(10 * 1024 * 1024)
    r = get_body(php.port, "/app/upload", "POST", data,
                 {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))},
                 timeout=60)
    assert r.status == 200
    assert r.body.decode().strip() == f"len={len(data)} sha256={hashlib.sha256(data).hexdigest()}"


def test_php_chunked_upload_gets_a_content_length(php):
    """A chunked body is read whole first, so php-cgi gets CONTENT_LENGTH and
    reads it (without one it reads nothing)."""
    pieces = [os.urandom(n) for n in (10, 65536, 3, 1000000, 77)]
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    data = b"".join(pieces)
    with socket.create_connection(("127.0.0.1", php.port), timeout=30) as s:
        s.sendall(b"POST /app/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                  b"Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n")
        s.sendall(body)
        resp, _ = read_response(s, timeout=30)
    assert resp.status == 200, resp
    assert dechunk(resp.body).decode().strip() == \
        f"len={len(data)} sha256={hashlib.sha256(data).hexdigest()}"


def test_php_status_404_and_redirect(php):
    r = get_body(php.port, "/app/missing")
    assert r.status == 404 and r.body == b"no such thing\n"
    r = get_body(php.port, "/app/redirect")
    assert r.status == 302
    assert r.header("Location") == "/app/elsewhere"


# ---- backpressure and hang-ups ----

def test_large_response_to_a_slow_reader_arrives_whole(app):
    f = app()
    s = socket.create_connection(("127.0.0.1", f.port), timeout=20)
    s.sendall(b"GET /app/big?body_kb=65536 HTTP/1.0\r\nHost: x\r\n\r\n")
    # the client reads nothing yet: 64 MiB cannot all be buffered in the
    # sockets, so ferry's queue fills and it stops reading from the backend
    wait_for(lambda: in_flight(f) == 1, 5, "request in flight")
    time.sleep(0.3)
    assert in_flight(f) == 1
    parts = []
    while True:
        b = s.recv(1 << 20)
        if not b:
            break
        parts.append(b)
    s.close()
    head, body = b"".join(parts).split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200")
    assert len(body) > 64 * 1024 * 1024 and body.endswith(b"x" * 65536 * 1024)
    wait_for(lambda: in_flight(f) == 0, 5, "slot released")


def test_head_request_gets_no_body(app):
    f = app()
    with socket.create_connection(("127.0.0.1", f.port), timeout=5) as s:
        s.sendall(b"HEAD /app/h HTTP/1.1\r\nHost: x\r\n\r\nGET /app/g HTTP/1.1\r\nHost: x\r\n"
                  b"Connection: close\r\n\r\n")
        resp, rest = read_head(s)
        assert resp.status == 200 and resp.header("X-App-Version") == "v1"
        closed, data = wait_closed(s, 5, rest)
    # the next response follows at once: the HEAD answer carried no body bytes
    assert data.startswith(b"HTTP/1.1 200"), data[:100]
    assert b"method=GET" in data


def test_client_gone_while_held_never_reaches_the_app(fake):
    fk = fake(extra="hold_timeout = 5s\n")
    f = fk.f
    res = {}
    slow = threading.Thread(target=timed, args=(f.port, "/app/slow?sleep=1000", res, "slow"))
    slow.start()
    wait_for(lambda: "begin /app/slow?sleep=1000" in fk.lines(), 5, "slow request started")
    s = socket.create_connection(("127.0.0.1", f.port), timeout=5)
    s.sendall(b"GET /app/quitter HTTP/1.1\r\nHost: x\r\n\r\n")
    wait_for(lambda: _held(f) == 1, 5, "request held")
    s.close()
    wait_for(lambda: _held(f) == 0, 5, "held request dropped")
    slow.join()
    assert res["slow"][0].status == 200
    assert get_body(f.port, "/app/after").status == 200
    assert not any("/app/quitter" in l for l in fk.lines()), fk.lines()
    assert in_flight(f) == 0
    line = [l for l in f.access_log().splitlines() if "/app/quitter" in l][0]
    assert " 499 " in line and line.endswith("backend=held"), line
