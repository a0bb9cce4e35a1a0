"""The application decides (issue 11, second part): a FastCGI response with
X-Accel-Redirect (a URL path under url_prefix) or X-Sendfile (a file in the
spool) is not sent to the client; ferry serves that upload instead, as a
request under url_prefix would be served, keeping Content-Disposition,
Cache-Control, Expires and Set-Cookie. Applications: tests/tools/fcgi_app
(libfcgi; accel=, sendfile=, disposition= query keys) and php-cgi."""
import os
import socket
import subprocess
import sys
import urllib.request
from urllib.parse import quote

import pytest

from conftest import FERRY_BIN, read_head, request, wait_for
from fcgi_client import require
from test_fcgi import APP, PHP, backend_conf, status_json, wait_ready

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "s3"))
from s3fixtures import ACCESS_KEY, BUCKET, SECRET_KEY  # noqa: E402

DISPOSITION = 'attachment; filename="report.pdf"'


def dir_offload(tmp_path):
    spool, store = tmp_path / "spool", tmp_path / "store"
    spool.mkdir(exist_ok=True)
    store.mkdir(exist_ok=True)
    # settle = 1h: the offloader never takes the test's spool files away.
    return spool, store, (f"[store]\ntype = dir\npath = {store}\nprefix = pre/\n\n"
                          f"[offload]\nspool = {spool}\nurl_prefix = /static/\nsettle = 1h\n")


def s3_offload(tmp_path, port):
    spool = tmp_path / "spool"
    spool.mkdir(exist_ok=True)
    return spool, (f"[store]\ntype = s3\nendpoint = http://127.0.0.1:{port}\nbucket = {BUCKET}\n"
                   f"region = us-east-1\naccess_key = {ACCESS_KEY}\nsecret_key = {SECRET_KEY}\n"
                   f"prefix = pre/\n\n[offload]\nspool = {spool}\nurl_prefix = /static/\n"
                   f"settle = 1h\nredirect = presign\n")


def start_app(ferry_factory, offload, accel="on"):
    require(APP, "tests/tools/fcgi_app (libfcgi-dev)")
    f = ferry_factory(offload + "\n" + backend_conf(f"{APP} --ready", 1,
                                                    f"accel_redirect = {accel}\n"))
    wait_ready(f)
    return f


def put(root, rel, data):
    path = os.path.join(str(root), rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)


def ask(value, key="accel", extra=""):
    """The app's request-target answering with key's header set to value."""
    return (f"/app/download?{key}={quote(value, safe='')}"
            f"&disposition={quote(DISPOSITION, safe='')}{extra}")


def notes(f, n):
    """The notes (last field) of the first n access log lines."""
    wait_for(lambda: f.access_log().count("\n") >= n, 5, f"{n} access log lines")
    return [line.rsplit(" ", 1)[1] for line in f.access_log().splitlines()[:n]]


def assert_served(r, data, status=200):
    assert r.status == status and r.body == data, r
    assert r.header("Content-Disposition") == DISPOSITION, r
    assert r.header("Set-Cookie") == "seen=1", r
    # Nothing of the application's own response: its type, its headers, its body.
    assert r.header("X-Accel-Redirect") is None and r.header("X-Sendfile") is None, r
    assert r.header("X-App-Version") is None, r
    assert r.header("Content-Type") != "text/plain", r


def assert_refused(f, r, header, value):
    assert r.status == 502, r
    assert b"version=" not in r.body, r
    wait_for(lambda: f"{header} '{value}' refused" in f.log(), 5, "the refusal logged")


def test_accel_redirect_serves_the_local_file(ferry_factory, tmp_path):
    spool, _, conf = dir_offload(tmp_path)
    f = start_app(ferry_factory, conf)
    data = os.urandom(100_000)
    put(spool, "d/a b.pdf", data)
    r = request(f.port, path=ask("/static/d/a%20b.pdf"))
    assert_served(r, data)
    assert r.header("Content-Type") == "application/pdf", r
    assert r.header("Content-Length") == str(len(data)), r
    # The client's Range and conditional headers apply to the upload.
    r = request(f.port, path=ask("/static/d/a%20b.pdf"), headers={"Range": "bytes=10-99"})
    assert_served(r, data[10:100], 206)
    assert r.header("Content-Range") == f"bytes 10-99/{len(data)}", r
    r = request(f.port, path=ask("/static/d/a%20b.pdf"),
                headers={"If-None-Match": r.header("ETag")})
    assert r.status == 304 and r.body == b"", r
    assert r.header("Content-Disposition") == DISPOSITION, r
    # HEAD: the same head, no body.
    r = request(f.port, method="HEAD", path=ask("/static/d/a%20b.pdf"))
    assert r.status == 200 and r.body == b"" and r.header("Content-Length") == str(len(data))
    # A POST with a body: the application read it and decided; the file is the answer.
    r = request(f.port, method="POST", path=ask("/static/d/a%20b.pdf"), body=b"x=1",
                headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_served(r, data)
    assert notes(f, 5) == ["accel=local"] * 5
    # Each counts as a response the application completed.
    assert status_json(f)["backend"]["served"] == 5


def test_the_applications_own_status_is_kept_on_the_whole_file(ferry_factory, tmp_path):
    spool, _, conf = dir_offload(tmp_path)
    f = start_app(ferry_factory, conf)
    put(spool, "gone.png", b"placeholder image")
    r = request(f.port, path=ask("/static/gone.png", extra="&status=404"),
                headers={"Range": "bytes=0-3"})
    assert_served(r, b"placeholder image", 404)


def test_x_sendfile_serves_a_file_in_the_spool(ferry_factory, tmp_path):
    spool, _, conf = dir_offload(tmp_path)
    f = start_app(ferry_factory, conf)
    data = os.urandom(5000)
    put(spool, "u/caf\u00e9.bin", data)
    # The spool as configured and with its symlinks resolved are both accepted.
    for base in {str(spool), os.path.realpath(spool)}:
        r = request(f.port, path=ask(f"{base}/u/caf\u00e9.bin", key="sendfile"))
        assert_served(r, data)
    assert set(notes(f, 1)) == {"accel=local"}


def test_offloaded_file_is_proxied_from_the_dir_store(ferry_factory, tmp_path):
    spool, store, conf = dir_offload(tmp_path)
    f = start_app(ferry_factory, conf)
    data = os.urandom(70_000)
    put(store, "pre/d/x y.bin", data)  # offloaded: in the store, gone from the spool
    assert not os.path.exists(spool / "d")
    r = request(f.port, path=ask("/static/d/x%20y.bin"))
    assert_served(r, data)
    r = request(f.port, path=ask(f"{spool}/d/x y.bin", key="sendfile"),
                headers={"Range": "bytes=-10"})
    assert_served(r, data[-10:], 206)
    assert r.header("Content-Range") == "bytes 69990-69999/70000", r
    r = request(f.port, path=ask("/static/d/absent.bin"))
    assert r.status == 404 and b"version=" not in r.body, r
    assert notes(f, 3) == ["accel=proxy"] * 3


def test_no_signed_link_is_asked_for(ferry_factory, tmp_path):
    spool, _, conf = dir_offload(tmp_path)
    f = start_app(ferry_factory, conf + "link_secret = private downloads\n")
    put(spool, "paid.zip", b"the goods")
    assert request(f.port, path="/static/paid.zip").status == 403  # directly: a link is needed
    r = request(f.port, path=ask("/static/paid.zip"))
    assert_served(r, b"the goods")  # the application decided
    assert r.header("Cache-Control") is None, r  # no link: no link-bounded max-age
    assert notes(f, 2) == ["offload=unsigned", "accel=local"]


def fetch(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, resp.headers.get("Content-Range"), resp.read()


def test_offloaded_file_gets_a_presigned_redirect_into_the_store(ferry_factory, tmp_path,
                                                                 s3proxy, direct):
    spool, conf = s3_offload(tmp_path, s3proxy.port)
    f = start_app(ferry_factory, conf)
    data = os.urandom(20_000)
    direct.put_object(Bucket=BUCKET, Key="pre/d/caf\u00e9 1.jpg", Body=data)
    r = request(f.port, path=ask("/static/d/caf%C3%A9%201.jpg"))
    assert r.status == 302 and r.body == b"302 Found\n", r
    loc = r.header("Location")
    assert loc.startswith(f"http://127.0.0.1:{s3proxy.port}/{BUCKET}/pre/d/caf%C3%A9%201.jpg?")
    assert "X-Amz-Signature=" in loc, loc
    # The cookie is kept; a download name means nothing on a redirect.
    assert r.header("Set-Cookie") == "seen=1" and r.header("Content-Disposition") is None, r
    assert r.header("Cache-Control").startswith("private, max-age="), r
    # Followed into the store through the verifying proxy: the bytes, and a Range.
    assert fetch(loc) == (200, None, data)
    assert fetch(loc, {"Range": "bytes=100-199"}) == (206, "bytes 100-199/20000", data[100:200])
    # A local copy still wins.
    put(spool, "d/caf\u00e9 1.jpg", b"local")
    r = request(f.port, path=ask(f"{spool}/d/caf\u00e9 1.jpg", key="sendfile"))
    assert_served(r, b"local")
    assert notes(f, 2) == ["accel=presign", "accel=local"]


def s3_proxy_offload(tmp_path, port):
    spool, conf = s3_offload(tmp_path, port)
    # retries = 0: a store error is answered at once (test_offload_proxy.py
    # has the retries).
    conf = conf.replace("redirect = presign", "redirect = proxy")
    return spool, conf.replace("prefix = pre/\n", "prefix = pre/\nretries = 0\n")


CACHE = "private, max-age=77"


def test_offloaded_file_is_streamed_from_the_s3_store(ferry_factory, tmp_path, s3proxy, direct):
    spool, conf = s3_proxy_offload(tmp_path, s3proxy.port)
    f = start_app(ferry_factory, conf)
    data = os.urandom(3 * 1024 * 1024 + 5)
    direct.put_object(Bucket=BUCKET, Key="pre/d/caf\u00e9 1.bin", Body=data,
                      ContentType="application/x-stored", CacheControl="public, max-age=9")
    cache = "&cache=" + quote(CACHE, safe="")
    r = request(f.port, path=ask("/static/d/caf%C3%A9%201.bin", extra=cache), timeout=20)
    assert_served(r, data)
    assert r.header("Content-Length") == str(len(data)), r
    assert r.header("Content-Type") == "application/x-stored", r
    # The application's Cache-Control, not the store's (header() fails on two).
    assert r.header("Cache-Control") == CACHE, r
    assert r.header("Location") is None, r
    # A Range goes to the store: 206 with those bytes.
    r = request(f.port, path=ask(f"{spool}/d/caf\u00e9 1.bin", key="sendfile"),
                headers={"Range": "bytes=1000-1999"})
    assert_served(r, data[1000:2000], 206)
    assert r.header("Content-Range") == f"bytes 1000-1999/{len(data)}", r
    # The application's own status: the whole object, the Range not asked for.
    r = request(f.port, path=ask("/static/d/caf%C3%A9%201.bin", extra="&status=203"),
                headers={"Range": "bytes=0-9"}, timeout=20)
    assert_served(r, data, 203)
    # HEAD: the head alone.
    r = request(f.port, method="HEAD", path=ask("/static/d/caf%C3%A9%201.bin"))
    assert r.status == 200 and r.body == b"" and r.header("Content-Length") == str(len(data)), r
    # A POST whose body the application read: the object is the answer.
    r = request(f.port, method="POST", path=ask("/static/d/caf%C3%A9%201.bin"), body=b"x=1",
                headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=20)
    assert_served(r, data)
    gets = [p for m, p, _ in s3proxy.requests if m in ("GET", "HEAD")]
    assert gets == [f"/{BUCKET}/pre/d/caf\u00e9 1.bin"] * 5, gets
    assert notes(f, 5) == ["accel=proxy"] * 5
    assert status_json(f)["backend"]["served"] == 5
    # A local copy still wins.
    put(spool, "d/caf\u00e9 1.bin", b"local")
    assert_served(request(f.port, path=ask("/static/d/caf%C3%A9%201.bin")), b"local")


def test_missing_object_gets_what_a_plain_proxied_request_gets(ferry_factory, tmp_path, s3proxy):
    _, conf = s3_proxy_offload(tmp_path, s3proxy.port)
    f = start_app(ferry_factory, conf)
    plain = request(f.port, path="/static/none.bin")
    r = request(f.port, path=ask("/static/none.bin"))
    assert (r.status, r.body) == (plain.status, plain.body) == (404, b"404 Not Found\n"), (r, plain)
    assert r.header("X-App-Version") is None, r
    # A store error is the proxy's 502 with its reason (retries = 0).
    s3proxy.add_fault("InternalError", method="GET")
    r = request(f.port, path=ask("/static/none.bin"))
    assert r.status == 502, r
    assert r.body == b"502 Bad Gateway: the store answered 500 (InternalError)\n", r
    assert notes(f, 3) == ["offload=proxy", "accel=proxy", "accel=proxy"]


def test_client_hangup_mid_body_cancels_the_store_transfer(ferry_factory, tmp_path, s3proxy,
                                                          direct):
    _, conf = s3_proxy_offload(tmp_path, s3proxy.port)
    f = start_app(ferry_factory, conf)
    data = os.urandom(8 * 1024 * 1024)
    direct.put_object(Bucket=BUCKET, Key="pre/h.bin", Body=data)
    for _ in range(3):  # more than the backend's one process: no slot may leak
        s3proxy.reset()
        s3proxy.add_fault("slow_body", method="GET", delay=0.02)
        s = socket.create_connection(("127.0.0.1", f.port), timeout=10)
        s.sendall(f"GET {ask('/static/h.bin')} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        r, _ = read_head(s)
        assert r.status == 200 and r.header("Content-Disposition") == DISPOSITION, r
        s.close()
        # 8 MiB at 64 KiB per 20 ms would take 2.5 s; ferry closes the transfer before.
        wait_for(lambda: "slow_body:closed" in s3proxy.outcomes("GET"), 10,
                 "the store transfer closed")
        assert "slow_body:sent" not in s3proxy.outcomes("GET")
    # ferry and the application go on serving.
    assert_served(request(f.port, path=ask("/static/h.bin"), timeout=20), data)
    r = request(f.port, path="/app/plain")
    assert r.status == 200 and b"version=" in r.body, r
    st = status_json(f)["backend"]
    assert st["served"] == 5, st


def test_php_front_controller_on_the_s3_proxy(ferry_factory, tmp_path, s3proxy, direct):
    require(PHP, "php-cgi")
    front = tmp_path / "front.php"
    front.write_text(FRONT_PHP)
    _, conf = s3_proxy_offload(tmp_path, s3proxy.port)
    f = ferry_factory(conf + "\n" + backend_conf(
        PHP, 1, f"script_filename = {front}\naccel_redirect = on\n"))
    wait_ready(f)
    stored = os.urandom(500_000)
    direct.put_object(Bucket=BUCKET, Key="pre/p/stored.pdf", Body=stored,
                      CacheControl="public, max-age=9")
    r = request(f.port, path="/app/get?f=" + quote("/static/p/stored.pdf", safe=""),
                headers={"Range": "bytes=1000-"})
    assert_served(r, stored[1000:], 206)
    assert r.header("Content-Range") == "bytes 1000-499999/500000", r
    assert r.header("Cache-Control") == "private, max-age=60", r
    assert r.header("Expires") == "Thu, 01 Jan 2037 00:00:00 GMT", r
    assert r.header("X-Powered-By") is None, r
    r = request(f.port, path="/app/get?f=" + quote("/static/p/stored.pdf", safe=""))
    assert_served(r, stored)
    r = request(f.port, path="/app/get?f=" + quote("/static/p/none.pdf", safe=""))
    assert r.status == 404 and r.body == b"404 Not Found\n", r
    assert notes(f, 3) == ["accel=proxy"] * 3
    assert " died: " not in f.log() and "respawn" not in f.log(), f.log()


def test_paths_outside_url_prefix_or_spool_get_502_and_a_log_line(ferry_factory, tmp_path):
    spool, _, conf = dir_offload(tmp_path)
    f = start_app(ferry_factory, conf)
    put(spool, "ok.txt", b"ok")
    put(tmp_path, "outside.txt", b"secret")
    cases = [("accel", "X-Accel-Redirect", "/etc/passwd"),
             ("accel", "X-Accel-Redirect", "/static/../outside.txt"),
             ("accel", "X-Accel-Redirect", "/static/"),
             ("accel", "X-Accel-Redirect", "/staticok.txt"),
             ("sendfile", "X-Sendfile", "/etc/passwd"),
             ("sendfile", "X-Sendfile", f"{spool}/../outside.txt"),
             ("sendfile", "X-Sendfile", "ok.txt"),
             ("sendfile", "X-Sendfile", f"{spool}")]
    for key, header, value in cases:
        r = request(f.port, path=ask(value, key=key))
        assert_refused(f, r, header, value)
        assert b"secret" not in r.body and b"root:" not in r.body, r
    assert notes(f, len(cases)) == ["accel=refused"] * len(cases)


def test_x_sendfile_never_follows_a_symlink_out_of_the_spool(ferry_factory, tmp_path):
    spool, _, conf = dir_offload(tmp_path)
    f = start_app(ferry_factory, conf)
    put(tmp_path, "outside/secret.txt", b"secret")
    os.symlink(tmp_path / "outside" / "secret.txt", spool / "link.txt")
    os.symlink(tmp_path / "outside", spool / "dirlink")
    for value in (f"{spool}/link.txt", f"{spool}/dirlink/secret.txt"):
        r = request(f.port, path=ask(value, key="sendfile"))
        assert_refused(f, r, "X-Sendfile", value)
        assert b"secret" not in r.body, r
    r = request(f.port, path=ask("/static/dirlink/secret.txt"))
    assert_refused(f, r, "X-Accel-Redirect", "/static/dirlink/secret.txt")


def test_accel_redirect_off_passes_the_header_and_the_body(ferry_factory, tmp_path):
    spool, _, conf = dir_offload(tmp_path)
    f = start_app(ferry_factory, conf, accel="off")
    put(spool, "a.bin", b"the upload")
    r = request(f.port, path=ask("/static/a.bin"))
    assert r.status == 200, r
    assert r.header("X-Accel-Redirect") == "/static/a.bin", r
    assert r.header("X-App-Version") == "v1", r
    assert r.header("Content-Disposition") == DISPOSITION, r
    assert b"version=v1" in r.body and b"the upload" not in r.body, r
    assert notes(f, 1) == ["backend=ok"]


def test_accel_redirect_needs_an_offload_spool(tmp_path):
    conf = tmp_path / "ferry.conf"
    conf.write_text(backend_conf("/bin/true", 1, "accel_redirect = on\n"))
    p = subprocess.run([FERRY_BIN, "check", "-c", str(conf)], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 2, p
    assert "key 'accel_redirect': needs [offload] spool" in p.stderr, p


FRONT_PHP = r"""<?php
$f = $_GET['f'] ?? '';
header('Content-Type: text/html');
header('Content-Disposition: attachment; filename="report.pdf"');
header('Set-Cookie: seen=1');
header('Cache-Control: private, max-age=60');
header('Expires: Thu, 01 Jan 2037 00:00:00 GMT');
header('X-Powered-By: dropped');
if (($_GET['kind'] ?? '') === 'sendfile')
    header('X-Sendfile: ' . $f);
else
    header('X-Accel-Redirect: ' . $f);
echo str_repeat("the application's body\n", 200000);  // 4.6 MB, never read
"""


@pytest.fixture
def php_accel(ferry_factory, tmp_path):
    require(PHP, "php-cgi")
    front = tmp_path / "front.php"
    front.write_text(FRONT_PHP)
    spool, store, conf = dir_offload(tmp_path)
    f = ferry_factory(conf + "\n" + backend_conf(
        PHP, 1, f"script_filename = {front}\naccel_redirect = on\n"))
    wait_ready(f)
    return f, spool, store


def test_php_front_controller_decides(php_accel):
    f, spool, store = php_accel
    local, stored = os.urandom(300_000), os.urandom(40_000)
    put(spool, "p/local.pdf", local)
    put(store, "pre/p/stored.pdf", stored)
    r = request(f.port, path="/app/get?f=" + quote("/static/p/local.pdf", safe=""))
    assert_served(r, local)
    assert r.header("Cache-Control") == "private, max-age=60", r
    assert r.header("Expires") == "Thu, 01 Jan 2037 00:00:00 GMT", r
    assert r.header("X-Powered-By") is None and r.header("Content-Type") == "application/pdf", r
    r = request(f.port, path="/app/get?f=" + quote("/static/p/stored.pdf", safe=""),
                headers={"Range": "bytes=1000-"})
    assert_served(r, stored[1000:], 206)
    assert r.header("Content-Range") == "bytes 1000-39999/40000", r
    r = request(f.port, path=f"/app/get?kind=sendfile&f={quote(str(spool))}/p/local.pdf")
    assert_served(r, local)
    r = request(f.port, path="/app/get?f=/etc/passwd")
    assert_refused(f, r, "X-Accel-Redirect", "/etc/passwd")
    assert notes(f, 4) == ["accel=local", "accel=proxy", "accel=local", "accel=refused"]
    # php-cgi took the connection closed under its long body in its stride.
    assert " died: " not in f.log() and "respawn" not in f.log(), f.log()


def test_a_long_body_after_the_header_is_never_read_and_the_app_lives_on(ferry_factory, tmp_path):
    spool, _, conf = dir_offload(tmp_path)
    f = start_app(ferry_factory, conf)
    put(spool, "a.bin", b"the upload")
    before = request(f.port, path="/app/pid").header("X-App-Pid")
    # 4 MiB of body behind the header: ferry closes the connection instead.
    r = request(f.port, path=ask("/static/a.bin", extra="&body_kb=4096"))
    assert_served(r, b"the upload")
    # The application took the closed connection in its stride: same process.
    r = request(f.port, path="/app/pid")
    assert r.status == 200 and r.header("X-App-Pid") == before, r
    assert " died: " not in f.log() and "respawn" not in f.log(), f.log()
