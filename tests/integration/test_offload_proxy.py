"""`redirect = proxy` with the s3 store and `verify_remote` (issue 9), through
the real binary against s3rver behind the verifying, fault-injecting proxy
(tests/s3/s3proxy.py): the object streamed through ferry's workers, Range and
conditionals passed through, backpressure to the store, store failures and
timeouts, a client that hangs up; the store HEADed before a redirect."""
import hashlib
import json
import os
import socket
import sys
import time
from urllib.parse import quote, urlsplit

import pytest

from conftest import (connect_slow_reader, read_hashed, read_head, request, rss_kib, scaled,
                      wait_for)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "s3"))
from s3fixtures import ACCESS_KEY, BUCKET, SECRET_KEY  # noqa: E402

PREFIX = "pre/"


def enc(name):
    return quote(name, safe="/")


def s3_conf(port, extra_store=""):
    if "low_speed_time" not in extra_store:
        extra_store += "low_speed_time = 2s\n"
    return (f"[store]\ntype = s3\nendpoint = http://127.0.0.1:{port}\nbucket = {BUCKET}\n"
            f"region = us-east-1\naccess_key = {ACCESS_KEY}\nsecret_key = {SECRET_KEY}\n"
            f"prefix = {PREFIX}\nconnect_timeout = 2s\n{extra_store}")


def start(ferry_factory, tmp_path, proxy, offload="redirect = proxy\n", extra_store=""):
    spool = tmp_path / "spool"
    spool.mkdir(exist_ok=True)
    # settle = 1h: the offloader never takes the test's spool files away.
    conf = (s3_conf(proxy.port, extra_store) +
            f"\n[offload]\nspool = {spool}\nurl_prefix = /static/\nsettle = 1h\n{offload}")
    return ferry_factory(conf), spool


def put(direct, name, data, content_type=None):  # noqa: F811
    kw = {"ContentType": content_type} if content_type else {}
    direct.put_object(Bucket=BUCKET, Key=PREFIX + name, Body=data, **kw)


def log_notes(f, n):
    wait_for(lambda: f.access_log().count("\n") >= n, 5, f"{n} access log lines")
    return [line.rsplit(" ", 1)[1] for line in f.access_log().splitlines()[:n]]


def test_proxy_streams_the_object_with_its_headers(ferry_factory, tmp_path, s3proxy,
                                                   direct):  # noqa: F811
    f, _ = start(ferry_factory, tmp_path, s3proxy)
    data = os.urandom(3 * 1024 * 1024 + 17)
    put(direct, "d/a b.bin", data, "application/x-test")
    r = request(f.port, path="/static/d/a%20b.bin", timeout=20)
    assert r.status == 200, r
    assert r.body == data
    assert r.header("Content-Length") == str(len(data)), r
    assert r.header("Content-Type") == "application/x-test", r
    assert r.header("ETag") == '"%s"' % hashlib.md5(data).hexdigest(), r
    assert (r.header("Last-Modified") or "").endswith(" GMT"), r
    assert r.header("Location") is None
    # The proxy verified ferry's signature (it answers 403 otherwise) on the
    # prefixed key.
    assert ("GET", f"/{BUCKET}/{PREFIX}d/a b.bin", 200) in s3proxy.log, s3proxy.log
    # HEAD: the same head, no body, the connection kept.
    r = request(f.port, "HEAD", path="/static/d/a%20b.bin")
    assert r.status == 200 and r.body == b"", r
    assert r.header("Content-Length") == str(len(data)), r
    assert ("HEAD", f"/{BUCKET}/{PREFIX}d/a b.bin", 200) in s3proxy.log, s3proxy.log
    assert log_notes(f, 2) == ["offload=proxy"] * 2


def test_proxy_range_and_conditionals(ferry_factory, tmp_path, s3proxy, direct):  # noqa: F811
    f, _ = start(ferry_factory, tmp_path, s3proxy)
    data = os.urandom(100_000)
    put(direct, "r.jpg", data)
    r = request(f.port, path="/static/r.jpg", headers={"Range": "bytes=1000-1999"})
    assert r.status == 206 and r.body == data[1000:2000], r
    assert r.header("Content-Range") == "bytes 1000-1999/100000", r
    assert r.header("Content-Length") == "1000", r
    # A suffix range goes to the store as the client wrote it (s3rver itself
    # reads "bytes=-10" as 0-10, so only what was asked is checked here).
    r = request(f.port, path="/static/r.jpg", headers={"Range": "bytes=-10"})
    assert r.status == 206, r
    sent = [h for m, _, h in s3proxy.requests if m == "GET"][-1]
    assert sent.get("Range") == "bytes=-10" and "range" in sent["Authorization"], sent
    # Several ranges are not a single range: the whole object, 200.
    r = request(f.port, path="/static/r.jpg", headers={"Range": "bytes=0-1,5-6"})
    assert r.status == 200 and r.body == data, r
    r = request(f.port, path="/static/r.jpg", headers={"Range": "bytes=200000-"})
    assert r.status == 416, r
    etag = request(f.port, "HEAD", path="/static/r.jpg").header("ETag")
    r = request(f.port, path="/static/r.jpg", headers={"If-None-Match": etag})
    # The store's 304 is passed on (s3rver's carries no ETag; S3's does).
    assert r.status == 304 and r.body == b"" and r.header("Content-Length") is None, r
    sent = [h for m, _, h in s3proxy.requests if m == "GET"][-1]
    assert sent.get("If-None-Match") == etag, sent
    r = request(f.port, path="/static/r.jpg", headers={"If-None-Match": '"other"'})
    assert r.status == 200 and r.body == data, r
    lm = r.header("Last-Modified")
    r = request(f.port, path="/static/r.jpg", headers={"If-Modified-Since": lm})
    assert r.status == 304 and r.body == b"", r
    # The store's Content-Type, whatever it is, not ferry's guess from the name.
    r = request(f.port, path="/static/r.jpg", headers={"Range": "bytes=0-0"})
    stored = direct.head_object(Bucket=BUCKET, Key=PREFIX + "r.jpg")["ContentType"]
    assert r.header("Content-Type") == stored, (r, stored)


def test_proxy_missing_object_404(ferry_factory, tmp_path, s3proxy):  # noqa: F811
    f, _ = start(ferry_factory, tmp_path, s3proxy)
    r = request(f.port, path="/static/none.bin")
    assert r.status == 404 and r.body == b"404 Not Found\n", r
    r = request(f.port, "HEAD", path="/static/none.bin")
    assert r.status == 404 and r.body == b"", r


def test_proxy_store_error_502_with_reason(ferry_factory, tmp_path, s3proxy,
                                           direct):  # noqa: F811
    f, _ = start(ferry_factory, tmp_path, s3proxy, extra_store="retries = 0\n")
    put(direct, "e.bin", b"x" * 100)
    s3proxy.add_fault("InternalError", method="GET")
    r = request(f.port, path="/static/e.bin")
    assert r.status == 502, r
    assert r.body == b"502 Bad Gateway: the store answered 500 (InternalError)\n", r
    s3proxy.add_fault("AccessDenied", method="GET")
    r = request(f.port, path="/static/e.bin")
    assert r.status == 502 and b"403 (AccessDenied)" in r.body, r
    # And the next request is fine.
    r = request(f.port, path="/static/e.bin")
    assert r.status == 200 and r.body == b"x" * 100, r


@pytest.mark.parametrize("retries", [0, 1])
def test_proxy_store_timeout(ferry_factory, tmp_path, s3proxy, direct, retries):  # noqa: F811
    f, _ = start(ferry_factory, tmp_path, s3proxy, extra_store=f"retries = {retries}\n")
    put(direct, "t.bin", b"t" * 100)
    s3proxy.add_fault("delay", method="GET", delay=5.0)
    t0 = time.monotonic()
    r = request(f.port, path="/static/t.bin", timeout=15)
    took = time.monotonic() - t0
    # low_speed_time (2 s); then 504, or the second GET answers at once.
    assert 1.5 < took < 4.5, took
    if retries == 0:
        assert r.status == 504, r
        assert r.body == b"504 Gateway Timeout: the store did not answer within 2s\n", r
    else:
        assert r.status == 200 and r.body == b"t" * 100, r
        assert "the store did not answer within 2s; retry 1 of 1" in f.log(), f.log()


def test_proxy_store_timeout_is_retried_once_only(ferry_factory, tmp_path, s3proxy,  # noqa: F811
                                                  direct):
    f, _ = start(ferry_factory, tmp_path, s3proxy, extra_store="retries = 3\n")
    put(direct, "t2.bin", b"t" * 100)
    for _ in range(2):
        s3proxy.add_fault("delay", method="GET", delay=5.0)
    t0 = time.monotonic()
    r = request(f.port, path="/static/t2.bin", timeout=20)
    took = time.monotonic() - t0
    # Two attempts of low_speed_time (2 s) each, not four: then 504.
    assert 3.5 < took < 7.5, took
    assert r.status == 504, r
    assert "retry 1 of 3" in f.log() and "retry 2 of 3" not in f.log(), f.log()


def test_store_unreachable_502(ferry_factory, tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    f = ferry_factory(s3_conf(port) + f"\n[offload]\nspool = {spool}\nsettle = 1h\n"
                      "redirect = proxy\n")
    r = request(f.port, path="/static/x.bin")
    assert r.status == 502 and r.body.startswith(b"502 Bad Gateway: the store cannot be reached"), r


# ---- retries (nginx's proxy_next_upstream, HAProxy's retry-on) ----

def proxy_retries(f):
    r = f.run_cli("status", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["offload"]["metrics"]["offload_proxy_retries_total"]


def retry_lines(f):
    return [line for line in f.log().splitlines() if "proxy: GET '" in line and " retry " in line]


def test_store_failures_before_the_head_are_retried(ferry_factory, tmp_path, s3proxy,
                                                    direct):  # noqa: F811
    f, _ = start(ferry_factory, tmp_path, s3proxy, extra_store="retries = 4\n")
    data = os.urandom(300_000)
    put(direct, "r/a.bin", data)
    # A reset before any answer, then 500, 503 SlowDown and a gateway's 502:
    # four failures, four retries, the fifth GET answers.
    for kind in ("reset_request", "InternalError", "SlowDown", "status502"):
        s3proxy.add_fault(kind, method="GET")
    r = request(f.port, path="/static/r/a.bin", headers={"Range": "bytes=10-"}, timeout=20)
    assert r.status == 206 and r.body == data[10:], r
    assert r.header("Content-Range") == f"bytes 10-299999/{len(data)}", r
    assert s3proxy.outcomes("GET") == ["reset_request", "InternalError", "SlowDown", "502", 206]
    # Each retry signed as the first (the verifying proxy checked them all).
    sent = [h for m, _, h in s3proxy.requests if m == "GET"]
    assert len(sent) == 5 and all(h.get("Range") == "bytes=10-" for h in sent), sent
    lines = retry_lines(f)
    assert len(lines) == 4 and proxy_retries(f) == 4, f.log()
    assert "r/a.bin': the store answered 503 (SlowDown); retry 3 of 4 in " in lines[2], lines
    # A HEAD is retried the same way.
    s3proxy.add_fault("InternalError", method="HEAD")
    r = request(f.port, "HEAD", path="/static/r/a.bin")
    assert r.status == 200 and r.header("Content-Length") == str(len(data)), r
    assert s3proxy.outcomes("HEAD") == ["InternalError", 200]


def test_more_failures_than_the_bound_get_the_stores_error(ferry_factory, tmp_path, s3proxy,
                                                          direct):  # noqa: F811
    f, _ = start(ferry_factory, tmp_path, s3proxy, extra_store="retries = 2\n")
    put(direct, "b.bin", b"b" * 100)
    s3proxy.add_fault("InternalError", method="GET", times=10)
    r = request(f.port, path="/static/b.bin")
    assert r.status == 502, r
    assert r.body == b"502 Bad Gateway: the store answered 500 (InternalError)\n", r
    assert s3proxy.outcomes("GET") == ["InternalError"] * 3  # the first and two retries
    assert len(retry_lines(f)) == 2, f.log()
    assert proxy_retries(f) == 2
    # Not retryable: a 403 is answered at once.
    s3proxy.reset()
    s3proxy.add_fault("AccessDenied", method="GET", times=10)
    r = request(f.port, path="/static/b.bin")
    assert r.status == 502 and b"403 (AccessDenied)" in r.body, r
    assert s3proxy.outcomes("GET") == ["AccessDenied"]
    # Nor is a missing object.
    s3proxy.reset()
    r = request(f.port, path="/static/none.bin")
    assert r.status == 404 and r.body == b"404 Not Found\n", r
    assert len(s3proxy.outcomes("GET")) == 1
    assert len(retry_lines(f)) == 2, f.log()
    assert proxy_retries(f) == 2


def test_failure_after_the_head_cuts_the_connection_without_retry(ferry_factory, tmp_path,
                                                                  s3proxy, direct):  # noqa: F811
    f, _ = start(ferry_factory, tmp_path, s3proxy, extra_store="retries = 3\n")
    data = os.urandom(1024 * 1024)
    put(direct, "c.bin", data)
    s3proxy.add_fault("reset_response", method="GET")
    s = socket.create_connection(("127.0.0.1", f.port), timeout=10)
    try:
        s.sendall(b"GET /static/c.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        r, got = read_head(s)
        assert r.status == 200 and r.header("Content-Length") == str(len(data)), r
        while True:
            b = s.recv(65536)
            if not b:
                break
            got += b
    except ConnectionResetError:
        pass
    finally:
        s.close()
    assert len(got) < len(data) and data.startswith(got), len(got)
    assert s3proxy.outcomes("GET") == ["reset_response"]
    assert retry_lines(f) == [], f.log()
    r = request(f.port, path="/static/c.bin", timeout=20)
    assert r.status == 200 and r.body == data, r


def test_slow_client_backpressure_reaches_the_store(ferry_factory, tmp_path, s3proxy,
                                                    direct):  # noqa: F811
    f, _ = start(ferry_factory, tmp_path, s3proxy, extra_store="low_speed_time = 30s\n")
    n = 256 * 1024 * 1024
    block = hashlib.sha256(b"block").digest() * 2048  # 64 KiB
    path = tmp_path / "big.bin"
    want = hashlib.sha256()
    with open(path, "wb") as fh:
        for _ in range(n // len(block)):
            fh.write(block)
            want.update(block)
    direct.upload_file(str(path), BUCKET, PREFIX + "big.bin")
    base = rss_kib(f.proc.pid)
    s = connect_slow_reader(f.port, rcvbuf=65536, timeout=60)
    try:
        s.sendall(b"GET /static/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        # Let the store push as hard as it can while the client reads nothing.
        wait_for(lambda: any(m == "GET" for m, _, _ in s3proxy.requests), 10, "the store GET")
        time.sleep(2.0)
        grown = rss_kib(f.proc.pid) - base
        assert grown < 32 * 1024, f"ferry's RSS grew by {grown} KiB for a client reading nothing"
        r, rest = read_head(s)
        assert r.status == 200 and r.header("Content-Length") == str(n), r
        assert read_hashed(s, n, rest) == want.digest()
    finally:
        s.close()


def test_paused_transfer_is_not_a_store_timeout(ferry_factory, tmp_path, s3proxy,
                                               direct):  # noqa: F811
    # A client that reads nothing for longer than low_speed_time holds the
    # store transfer paused; that is not the store being slow.
    f, _ = start(ferry_factory, tmp_path, s3proxy, extra_store="low_speed_time = 1s\n")
    data = os.urandom(32 * 1024 * 1024)
    put(direct, "p.bin", data)
    s = connect_slow_reader(f.port, rcvbuf=65536, timeout=30)
    try:
        s.sendall(b"GET /static/p.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for(lambda: any(m == "GET" for m, _, _ in s3proxy.requests), 10, "the store GET")
        time.sleep(3.0)
        r, rest = read_head(s)
        assert r.status == 200, r
        assert read_hashed(s, len(data), rest) == hashlib.sha256(data).digest()
    finally:
        s.close()


def test_client_hangup_aborts_the_store_transfer(ferry_factory, tmp_path, s3proxy,
                                                 direct):  # noqa: F811
    f, _ = start(ferry_factory, tmp_path, s3proxy)
    data = os.urandom(8 * 1024 * 1024)
    put(direct, "h.bin", data)
    s3proxy.add_fault("slow_body", method="GET", delay=0.02)
    s = socket.create_connection(("127.0.0.1", f.port), timeout=10)
    s.sendall(b"GET /static/h.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    r, rest = read_head(s)
    assert r.status == 200, r
    s.close()
    # 8 MiB at 64 KiB per 20 ms would take 2.5 s; the store sees ferry close
    # the transfer well before.
    wait_for(lambda: "slow_body:closed" in s3proxy.outcomes("GET"), 10, "the store transfer closed")
    assert "slow_body:sent" not in s3proxy.outcomes("GET")
    # The worker goes on serving.
    r = request(f.port, path="/static/h.bin", timeout=20)
    assert r.status == 200 and r.body == data


# ---- verify_remote ----

PUBLIC = "https://photos.example.com/pre/"


@pytest.mark.parametrize("mode", ["public", "presign"])
def test_verify_remote_404_when_in_neither_place(ferry_factory, tmp_path, s3proxy, direct,
                                                 mode):  # noqa: F811
    f, spool = start(ferry_factory, tmp_path, s3proxy,
                     f"redirect = {mode}\npublic_url = {PUBLIC}\nverify_remote = on\n")
    put(direct, "there.jpg", b"stored")
    (spool / "local.jpg").write_bytes(b"local")
    r = request(f.port, path="/static/there.jpg")
    assert r.status == 302, r
    loc = r.header("Location")
    if mode == "public":
        assert loc == PUBLIC + "there.jpg", r
    else:
        assert loc.startswith(f"http://127.0.0.1:{s3proxy.port}/{BUCKET}/{PREFIX}there.jpg?"), r
        assert (r.header("Cache-Control") or "").startswith("private, max-age="), r
    r = request(f.port, path="/static/gone.jpg")
    assert r.status == 404 and r.body == b"404 Not Found\n" and r.header("Location") is None, r
    r = request(f.port, "HEAD", path="/static/gone.jpg")
    assert r.status == 404 and r.body == b"", r
    r = request(f.port, path="/static/local.jpg")
    assert r.status == 200 and r.body == b"local", r
    heads = [(m, p) for m, p, _ in s3proxy.log if m == "HEAD"]
    assert heads == [("HEAD", f"/{BUCKET}/{PREFIX}there.jpg"), ("HEAD", f"/{BUCKET}/{PREFIX}gone.jpg"),
                     ("HEAD", f"/{BUCKET}/{PREFIX}gone.jpg")], s3proxy.log
    notes = log_notes(f, 4)
    assert sorted(notes) == sorted(["offload=redirect" if mode == "public" else "offload=presign",
                                    "offload=missing", "offload=missing", "offload=local"]), notes


def test_verify_remote_store_errors(ferry_factory, tmp_path, s3proxy):  # noqa: F811
    f, _ = start(ferry_factory, tmp_path, s3proxy,
                 f"redirect = public\npublic_url = {PUBLIC}\nverify_remote = on\n")
    s3proxy.add_fault("InternalError", method="HEAD")
    r = request(f.port, path="/static/x.jpg")
    assert r.status == 502 and r.body == b"502 Bad Gateway: the store answered 500\n", r
    assert r.header("Location") is None
    s3proxy.add_fault("delay", method="HEAD", delay=5.0)
    r = request(f.port, path="/static/x.jpg", timeout=15)
    assert r.status == 504 and b"did not answer within 2s" in r.body, r


# ---- never neither ----

# The 1,000 files on s3rver behind the verifying proxy, in each mode:
# 55-110 s a mode here (the offloader's uploads go through the Python proxy
# that 32 clients keep busy), so those three run in the second lane
# (conftest.py marks them lane2). The RGW runs, which repeat the check on a
# real store, flow 250 files. FERRY_NEVER_NEITHER_FILES sets every run's count.
def load_files(store):
    if os.environ.get("FERRY_NEVER_NEITHER_FILES"):
        return int(os.environ["FERRY_NEVER_NEITHER_FILES"])
    return scaled(1000 if store == "s3rver" else 250, 100)


LOAD_CLIENTS = 32


def fetch(conns, url_or_path, ferry_port):
    """GET a path from ferry or an absolute URL (the store) on the connections
    kept in conns; returns (status, body, response)."""
    import http.client
    from urllib.parse import urlsplit as split
    if url_or_path.startswith("http://"):
        u = split(url_or_path)
        host, port, target = u.hostname, u.port, u.path + ("?" + u.query if u.query else "")
    else:
        host, port, target = "127.0.0.1", ferry_port, url_or_path
    for attempt in range(2):
        conn = conns.get(port)
        if conn is None:
            conn = conns[port] = http.client.HTTPConnection(host, port, timeout=30)
        try:
            conn.request("GET", target)
            resp = conn.getresponse()
            body = resp.read()
            if resp.getheader("Connection", "").lower() == "close":
                conn.close()
                del conns[port]
            return resp.status, body, resp
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            # A kept-alive connection the server had closed: once more, fresh.
            conn.close()
            del conns[port]
            if attempt:
                raise
    raise AssertionError("unreachable")


@pytest.mark.parametrize("mode", ["proxy", "presign", "public"])
def test_never_neither_under_load(ferry_factory, tmp_path, s3proxy, s3backend, direct,  # noqa: F811
                                  mode):
    """Files flow through the offloader while 32 clients GET them continuously,
    following redirects into the store: every answer has the right bytes, no
    404, no error, in each mode."""
    import random
    import threading
    load = load_files(s3backend.name)
    prefix = f"nn-{mode}/"
    spool = tmp_path / "spool"
    spool.mkdir()
    offload = (f"[offload]\nspool = {spool}\nurl_prefix = /static/\nsettle = 50ms\n"
               f"rescan_interval = 0\nconcurrency = 8\nredirect = {mode}\n")
    if mode == "public":
        # Anonymous reads from the store itself (the verifying proxy refuses
        # them): s3rver allows them; RGW once the bucket's policy says so.
        if s3backend.rgw:
            direct.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps({
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                               "Resource": f"arn:aws:s3:::{BUCKET}/{prefix}*"}]}))
        port = urlsplit(direct.meta.endpoint_url).port
        offload += f"public_url = http://127.0.0.1:{port}/{BUCKET}/{prefix}\n"
    conf = s3_conf(s3proxy.port).replace(f"prefix = {PREFIX}\n", f"prefix = {prefix}\n")
    f = ferry_factory(conf + "\n" + offload)
    digests = {}  # name -> sha256, once the file is in the spool under its name
    names = []
    lock = threading.Lock()
    done = threading.Event()
    errors = []
    counts = {"local": 0, "remote": 0}

    def client(seed):
        rnd = random.Random(seed)
        conns = {}
        try:
            while not done.is_set():
                with lock:
                    name = rnd.choice(names) if names else None
                if name is None:
                    time.sleep(0.01)
                    continue
                status, body, resp = fetch(conns, "/static/" + enc(name), f.port)
                how = "local"
                if status == 302 and mode != "proxy":
                    status, body, _ = fetch(conns, resp.getheader("Location"), f.port)
                    how = "remote"
                if status != 200 or hashlib.sha256(body).digest() != digests[name]:
                    errors.append((name, status, body[:200]))
                    continue
                # Proxied answers carry the store's ETag (the MD5), local ones ferry's.
                if resp.getheader("ETag") == '"%s"' % hashlib.md5(body).hexdigest():
                    how = "remote"
                with lock:
                    counts[how] += 1
        except Exception as e:  # noqa: BLE001 - every failure counts
            errors.append(("exception", repr(e)))
        finally:
            for c in conns.values():
                c.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(LOAD_CLIENTS)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    try:
        rnd = random.Random(1)
        for i in range(load):
            name = f"d{i % 10}/f {i}.bin"
            data = os.urandom(rnd.randint(100, 16384))
            (spool / name).parent.mkdir(exist_ok=True)
            tmp = spool / (name + ".tmp")
            tmp.write_bytes(data)
            with lock:
                digests[name] = hashlib.sha256(data).digest()
            os.rename(tmp, spool / name)
            with lock:
                names.append(name)
            if i % 50 == 49:
                time.sleep(0.05)  # let requests interleave with the offloader
        wait_for(lambda: not any(p.is_file() for p in spool.rglob("*")), 120,
                 "every file offloaded")
        time.sleep(0.5)  # requests for files that are only in the store now
    finally:
        done.set()
        for t in threads:
            t.join(60)
    took = time.monotonic() - t0
    print(f"never neither ({mode}): {load} files, {counts} in {took:.1f}s")
    assert not errors, errors[:10]
    assert counts["local"] > 0 and counts["remote"] > load / 10, counts
    # Every file once more, now from the store only.
    conns = {}
    for name in names:
        status, body, resp = fetch(conns, "/static/" + enc(name), f.port)
        if status == 302:
            status, body, _ = fetch(conns, resp.getheader("Location"), f.port)
        assert status == 200 and hashlib.sha256(body).digest() == digests[name], (name, status)
