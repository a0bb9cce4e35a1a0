"""Requests under [offload] url_prefix (issue 9, first part), through the real
binary: a file still in the spool is served like a static file from its open
descriptor; a missing one is redirected to public_url, to a presigned URL, or
(dir store) served from the store's own file."""
import datetime
import hashlib
import os
import re
import subprocess
import types
import urllib.error
import urllib.request
from unittest import mock
from urllib.parse import quote, urlsplit, parse_qsl

import pytest
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from conftest import (FERRY_BIN, connect_slow_reader, read_hashed, read_head, request,
                      raw_exchange, wait_for)

PUBLIC = "https://photos.example.com/originals/"
NAMES = ["a b.jpg", "a+b.jpg", "100%.jpg", "x#y.jpg", "q?x=1.jpg", "a&b=c.jpg", "~t.jpg",
         "it's \"q\".jpg", "(p).jpg", "café.jpg", "\U0001F600.png", "dir/sub dir/\u00fc.txt"]
S3 = ("[store]\ntype = s3\nendpoint = http://127.0.0.1:9\nbucket = bkt\nregion = eu-west-3\n"
      "access_key = AKIDEXAMPLE\nsecret_key = wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY\n"
      "prefix = pre/\n")


def enc(name):
    """The request path and the expected Location suffix: every byte but RFC 3986
    unreserved and '/' as %XX, once."""
    return quote(name, safe="/")


def offload_conf(spool, extra=""):
    # settle = 1h: the offloader never takes the test's spool files away.
    return f"[offload]\nspool = {spool}\nurl_prefix = /static/\nsettle = 1h\n{extra}"


def start(ferry_factory, tmp_path, store, extra=""):
    spool = tmp_path / "spool"
    spool.mkdir(exist_ok=True)
    f = ferry_factory(store + "\n" + offload_conf(spool, extra))
    return f, spool


def log_notes(f, n):
    """The last field of the first n access log lines (workers flush their lines
    asynchronously, so wait for them)."""
    wait_for(lambda: f.access_log().count("\n") >= n, 5, f"{n} access log lines")
    return [line.rsplit(" ", 1)[1] for line in f.access_log().splitlines()[:n]]


def dir_store(tmp_path, prefix=""):
    store = tmp_path / "store"
    store.mkdir(exist_ok=True)
    return store, f"[store]\ntype = dir\npath = {store}\nprefix = {prefix}\n"


def test_local_file_served_like_a_static_file(ferry_factory, tmp_path):
    store, conf = dir_store(tmp_path)
    f, spool = start(ferry_factory, tmp_path, conf)
    (spool / "d").mkdir()
    data = os.urandom(10_000)
    (spool / "d" / "pic one.jpg").write_bytes(data)
    r = request(f.port, path="/static/d/pic%20one.jpg")
    assert r.status == 200 and r.body == data, r
    assert r.header("Content-Type") == "image/jpeg"
    etag = r.header("ETag")
    assert etag and etag.startswith('"'), r
    r = request(f.port, path="/static/d/pic%20one.jpg", headers={"Range": "bytes=100-199"})
    assert r.status == 206 and r.body == data[100:200], r
    assert r.header("Content-Range") == "bytes 100-199/10000"
    r = request(f.port, path="/static/d/pic%20one.jpg", headers={"If-None-Match": etag})
    assert r.status == 304 and r.body == b"" and r.header("ETag") == etag, r
    r = request(f.port, "HEAD", path="/static/d/pic%20one.jpg")
    assert r.status == 200 and r.header("Content-Length") == "10000" and r.body == b"", r
    assert log_notes(f, 4) == ["offload=local"] * 4


def test_methods_other_than_get_and_head_get_405(ferry_factory, tmp_path):
    _, conf = dir_store(tmp_path)
    f, spool = start(ferry_factory, tmp_path, conf)
    (spool / "x.txt").write_bytes(b"x")
    for path in ("/static/x.txt", "/static/absent.txt"):
        for method in ("POST", "PUT", "DELETE"):
            r = request(f.port, method, path=path)
            assert r.status == 405, r
            assert r.header("Allow") == "GET, HEAD", r
    assert (spool / "x.txt").read_bytes() == b"x"


def test_public_redirect_encodes_each_name_once(ferry_factory, tmp_path):
    f, spool = start(ferry_factory, tmp_path, S3, f"public_url = {PUBLIC}\n")
    for name in NAMES:
        for method in ("GET", "HEAD"):
            r = request(f.port, method, path="/static/" + enc(name))
            assert r.status == 302, (name, r)
            # public_url includes the object prefix itself: the store prefix is not added.
            assert r.header("Location") == PUBLIC + enc(name), (name, r)
            if method == "HEAD":
                assert r.body == b"", r
            else:
                assert r.body == b"302 Found\n", r
    # The encoding is exact, not Python's: spot-check bytes a quote() mistake would hide.
    r = request(f.port, path="/static/" + enc("a b+c%d~e.jpg"))
    assert r.header("Location") == PUBLIC + "a%20b%2Bc%25d~e.jpg", r
    r = request(f.port, path="/static/" + enc("\U0001F600.png"))
    assert r.header("Location") == PUBLIC + "%F0%9F%98%80.png", r
    assert set(log_notes(f, 2 * len(NAMES) + 2)) == {"offload=redirect"}


def test_redirect_status_303_and_307(ferry_factory, tmp_path):
    for status in (303, 307):
        (tmp_path / str(status)).mkdir()
        f, _ = start(ferry_factory, tmp_path / str(status), S3,
                     f"public_url = {PUBLIC}\nredirect_status = {status}\n")
        r = request(f.port, path="/static/a.jpg")
        assert r.status == status and r.header("Location") == PUBLIC + "a.jpg", r


def test_the_prefix_is_matched_on_the_decoded_path(ferry_factory, tmp_path):
    f, spool = start(ferry_factory, tmp_path, S3, f"public_url = {PUBLIC}\n")
    os.makedirs(os.path.join(f.root, "staticx"))
    with open(os.path.join(f.root, "staticx", "a.jpg"), "wb") as fh:
        fh.write(b"from root")
    for path in ("//static/a.jpg", "/%73tatic/a.jpg", "/static%2Fa.jpg"):
        r = request(f.port, path=path)
        assert r.status == 302 and r.header("Location") == PUBLIC + "a.jpg", (path, r)
    # Outside the prefix: the static handler answers, no redirect.
    r = request(f.port, path="/staticx/a.jpg")
    assert r.status == 200 and r.body == b"from root", r
    r = request(f.port, path="/static")
    assert r.status == 404 and r.header("Location") is None, r


def test_local_file_wins_over_the_redirect(ferry_factory, tmp_path):
    f, spool = start(ferry_factory, tmp_path, S3, f"public_url = {PUBLIC}\n")
    (spool / "here.jpg").write_bytes(b"local bytes")
    r = request(f.port, path="/static/here.jpg")
    assert r.status == 200 and r.body == b"local bytes", r
    assert r.header("Location") is None


def test_ignored_names_are_served_locally_but_never_redirected(ferry_factory, tmp_path):
    f, spool = start(ferry_factory, tmp_path, S3, f"public_url = {PUBLIC}\n")
    (spool / "up.tmp").write_bytes(b"partial")
    r = request(f.port, path="/static/up.tmp")
    assert r.status == 200 and r.body == b"partial", r
    for path in ("/static/gone.tmp", "/static/x.part", "/static/.hidden", "/static/.d/a.jpg"):
        r = request(f.port, path=path)
        assert r.status == 404 and r.header("Location") is None, (path, r)


def test_no_open_redirect_no_header_break_no_traversal(ferry_factory, tmp_path):
    f, spool = start(ferry_factory, tmp_path, S3, f"public_url = {PUBLIC}\n")
    (tmp_path / "secret.txt").write_bytes(b"secret")
    # Repeated slashes collapse: the host is always public_url's.
    for path, want in (("/static//evil.com/x.jpg", "evil.com/x.jpg"),
                       ("/static/%2F%2Fevil.com/x.jpg", "evil.com/x.jpg"),
                       ("/static/http:%2F%2Fevil.com", "http%3A/evil.com"),
                       ("/static/@evil.com", "%40evil.com")):
        r = request(f.port, path=path)
        assert r.status == 302, (path, r)
        assert r.header("Location") == PUBLIC + want, (path, r)
    # CR/LF, NUL, backslash and dot segments never reach a Location or the disk.
    for path in ("/static/a%0d%0aSet-Cookie:%20x=1", "/static/a%0aX:y", "/static/a%00b",
                 "/static/a%5c..%5csecret.txt", "/static/../secret.txt",
                 "/static/%2e%2e/secret.txt", "/static/a/%2E%2E/%2e%2e/secret.txt"):
        data = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        r, _, _ = raw_exchange(f.port, data)
        assert r.status == 400, (path, r)
        assert r.header("Location") is None and r.header("Set-Cookie") is None, (path, r)
        assert b"secret" not in r.body
    # Refused by the offload handler itself, not by whichever handler follows it.
    assert sorted(log_notes(f, 11)) == ["offload=redirect"] * 4 + ["offload=refused"] * 7


def test_public_url_must_fix_the_host(tmp_path):
    for url, why in (("https://cdn.example.com", "URL with a host"),
                     ("https://cdn.example.com/originals", "must end with '/'"),
                     ("ftp://cdn/", "not an http:// or https:// URL"),
                     ("https:///x/", "not an http:// or https:// URL"),
                     ("https://cdn/a b/", "needs encoded")):
        conf = tmp_path / "c.conf"
        conf.write_text(S3 + f"[offload]\npublic_url = {url}\n")
        p = subprocess.run([FERRY_BIN, "check", "-c", str(conf)], capture_output=True, text=True)
        assert p.returncode == 2, p
        assert "public_url" in p.stderr and why in p.stderr, p.stderr


def test_check_accepts_proxy_with_s3_refuses_public_without_url(tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text(S3 + "[offload]\nredirect = proxy\n")
    p = subprocess.run([FERRY_BIN, "check", "-c", str(conf)], capture_output=True, text=True)
    assert p.returncode == 0, p
    conf.write_text(S3 + "[offload]\nredirect = public\n")
    p = subprocess.run([FERRY_BIN, "check", "-c", str(conf)], capture_output=True, text=True)
    assert p.returncode == 2 and "public needs public_url" in p.stderr, p
    conf.write_text(S3 + "[offload]\npresign_ttl = 8d\n")
    p = subprocess.run([FERRY_BIN, "check", "-c", str(conf)], capture_output=True, text=True)
    assert p.returncode == 2 and "presign_ttl" in p.stderr, p
    conf.write_text(S3 + "[offload]\nredirect_status = 301\n")
    p = subprocess.run([FERRY_BIN, "check", "-c", str(conf)], capture_output=True, text=True)
    assert p.returncode == 2 and "redirect_status" in p.stderr, p
    conf.write_text(S3 + f"[offload]\nredirect = public\npublic_url = {PUBLIC}\n")
    p = subprocess.run([FERRY_BIN, "check", "-c", str(conf)], capture_output=True, text=True)
    assert p.returncode == 0, p


def botocore_presign(url_no_query, when, expires):
    class Fixed(datetime.datetime):
        @classmethod
        def utcnow(cls):
            return when

    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    aws = AWSRequest(method="GET", url=url_no_query)
    with mock.patch("botocore.auth.datetime", types.SimpleNamespace(datetime=Fixed)):
        S3SigV4QueryAuth(creds, "s3", "eu-west-3", expires=expires).add_auth(aws)
    return aws.url


def test_presign_redirect_verified_by_botocore(ferry_factory, tmp_path):
    f, _ = start(ferry_factory, tmp_path, S3, "presign_ttl = 10m\n")
    for name in NAMES:
        r = request(f.port, path="/static/" + enc(name))
        assert r.status == 302, (name, r)
        loc = r.header("Location")
        parts = urlsplit(loc)
        assert (parts.scheme, parts.netloc) == ("http", "127.0.0.1:9"), loc
        # The store prefix is added to the key, the bucket in the path (path style).
        assert parts.path == "/bkt/pre/" + enc(name), loc
        q = dict(parse_qsl(parts.query, keep_blank_values=True))
        assert q["X-Amz-Expires"] == "600", loc
        when = datetime.datetime.strptime(q["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
        theirs = botocore_presign(f"http://127.0.0.1:9{parts.path}", when, 600)
        tq = dict(parse_qsl(urlsplit(theirs).query, keep_blank_values=True))
        assert q == tq, (loc, theirs)
        cc = r.header("Cache-Control")
        m = re.fullmatch(r"private, max-age=(\d+)", cc or "")
        assert m and 0 < int(m.group(1)) <= 600, cc
    assert set(log_notes(f, len(NAMES))) == {"offload=presign"}


def test_proxy_with_the_dir_store_serves_the_object(ferry_factory, tmp_path):
    store, conf = dir_store(tmp_path, prefix="pre/")
    f, spool = start(ferry_factory, tmp_path, conf)
    data = os.urandom(70_000)
    (store / "pre" / "d").mkdir(parents=True)
    (store / "pre" / "d" / "x y.bin").write_bytes(data)
    r = request(f.port, path="/static/d/x%20y.bin")
    assert r.status == 200 and r.body == data, r
    assert r.header("Location") is None
    r = request(f.port, path="/static/d/x%20y.bin", headers={"Range": "bytes=-10"})
    assert r.status == 206 and r.body == data[-10:], r
    assert r.header("Content-Range") == "bytes 69990-69999/70000", r
    etag = r.header("ETag")
    r = request(f.port, path="/static/d/x%20y.bin", headers={"If-None-Match": etag})
    assert r.status == 304, r
    r = request(f.port, path="/static/d/absent.bin")
    assert r.status == 404 and r.header("Location") is None, r
    assert set(log_notes(f, 4)) == {"offload=proxy"}


def test_file_unlinked_after_open_is_served_whole(ferry_factory, tmp_path):
    _, conf = dir_store(tmp_path)
    f, spool = start(ferry_factory, tmp_path, conf)
    size = 64 << 20
    path = spool / "big.bin"
    with open(path, "wb") as fh:
        for i in range(64):
            fh.write(hashlib.sha256(str(i).encode()).digest() * (1 << 15))
    want = hashlib.sha256(path.read_bytes()).digest()
    s = connect_slow_reader(f.port, timeout=30)
    try:
        s.sendall(b"GET /static/big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        resp, rest = read_head(s)
        assert resp.status == 200 and resp.header("Content-Length") == str(size), resp
        os.unlink(path)  # as the offloader does once the object is verified
        assert read_hashed(s, size, rest) == want
    finally:
        s.close()


def test_offloaded_file_is_then_served_from_the_dir_store(ferry_factory, tmp_path):
    # The real offloader moves the file; the same URL keeps answering with the
    # same bytes (first local, then through proxy mode). The store directory
    # does not exist before ferry starts.
    store = tmp_path / "store"
    spool = tmp_path / "spool"
    spool.mkdir()
    f = ferry_factory(f"[store]\ntype = dir\npath = {store}\nprefix = up/\n\n"
                      f"[offload]\nspool = {spool}\nsettle = 100ms\nrescan_interval = 0\n")
    data = os.urandom(30_000)
    (spool / "d").mkdir()
    path = "/static/d/" + enc("caf\u00e9 1.jpg")
    # A file open for writing is never picked up: it stays local until closed.
    with open(spool / "d" / "caf\u00e9 1.jpg", "wb") as fh:
        fh.write(data)
        fh.flush()
        r = request(f.port, path=path)
        assert r.status == 200 and r.body == data, r
    wait_for(lambda: not (spool / "d" / "caf\u00e9 1.jpg").exists(), 20, "the file offloaded")
    assert (store / "up" / "d" / "caf\u00e9 1.jpg").read_bytes() == data
    r = request(f.port, path=path, headers={"Range": "bytes=10-19"})
    assert r.status == 206 and r.body == data[10:20], r
    assert sorted(log_notes(f, 2)) == ["offload=local", "offload=proxy"]  # workers flush apart


def test_proxy_never_serves_the_dir_stores_own_files(ferry_factory, tmp_path):
    store, conf = dir_store(tmp_path)
    # ignore = (nothing): only the store's own key rules stand in the way.
    f, spool = start(ferry_factory, tmp_path, conf, "ignore = none.none\n")
    (store / "a.jpg").write_bytes(b"object")
    (store / "a.jpg.ferry-sum").write_bytes(b"digest sidecar")
    (store / ".ferry-tmp.1.abcdef").write_bytes(b"half written")
    assert request(f.port, path="/static/a.jpg").body == b"object"
    for path in ("/static/a.jpg.ferry-sum", "/static/.ferry-tmp.1.abcdef"):
        r = request(f.port, path=path)
        assert r.status == 404 and r.body == b"404 Not Found\n", (path, r)


def test_directories_name_no_file(ferry_factory, tmp_path):
    f, spool = start(ferry_factory, tmp_path, S3, f"public_url = {PUBLIC}\n")
    (spool / "d").mkdir()
    r = request(f.port, path="/static/d/")
    assert r.status == 404 and r.header("Location") is None, r
    r = request(f.port, path="/static/d")
    assert r.status == 403 and r.header("Location") is None, r


def test_presign_head_and_307(ferry_factory, tmp_path):
    f, _ = start(ferry_factory, tmp_path, S3, "redirect = presign\nredirect_status = 307\n"
                 f"public_url = {PUBLIC}\npresign_ttl = 7d\n")
    r = request(f.port, "HEAD", path="/static/x.jpg")
    assert r.status == 307 and r.body == b"", r
    loc = r.header("Location")
    assert loc.startswith("http://127.0.0.1:9/bkt/pre/x.jpg?"), loc
    assert "X-Amz-Expires=604800" in loc, loc
    assert r.header("Cache-Control") == f"private, max-age={604800 - 60480}", r


def test_presign_redirect_is_fetched_from_the_store(ferry_factory, tmp_path, s3backend, direct):
    """The presign redirect for every odd name, followed to the real store (RGW
    itself, or the verifying proxy in front of s3rver): the object's exact bytes
    for a GET, its length for a HEAD."""
    from s3fixtures import ACCESS_KEY, BUCKET, SECRET_KEY
    store = (f"[store]\ntype = s3\nendpoint = http://127.0.0.1:{s3backend.port}\n"
             f"bucket = {BUCKET}\nregion = us-east-1\naccess_key = {ACCESS_KEY}\n"
             f"secret_key = {SECRET_KEY}\nprefix = served/\n")
    f, _ = start(ferry_factory, tmp_path, store, "redirect = presign\npresign_ttl = 5m\n")
    for name in NAMES:
        data = hashlib.sha256(name.encode()).digest() * 40
        direct.put_object(Bucket=BUCKET, Key="served/" + name, Body=data)
        r = request(f.port, path="/static/" + enc(name))
        assert r.status == 302, (name, r)
        loc = r.header("Location")
        assert loc.startswith(f"http://127.0.0.1:{s3backend.port}/{BUCKET}/served/"), loc
        with urllib.request.urlopen(loc) as got:
            assert got.read() == data, (name, loc)
        # The signature covers the method: a HEAD is redirected to a URL for a
        # HEAD (the GET URL would be refused with 403 SignatureDoesNotMatch).
        r = request(f.port, "HEAD", path="/static/" + enc(name))
        assert r.status == 302, (name, r)
        head_loc = r.header("Location")
        with urllib.request.urlopen(urllib.request.Request(head_loc, method="HEAD")) as got:
            assert got.headers["Content-Length"] == str(len(data)), (name, head_loc)
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(urllib.request.Request(loc, method="HEAD"))
        assert e.value.code == 403, (name, loc)
    # A name the store does not have: the redirect is made, the store says 404.
    r = request(f.port, path="/static/" + enc("missing one.jpg"))
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(r.header("Location"))
    assert e.value.code == 404 and b"<Code>NoSuchKey</Code>" in e.value.read()


def test_presign_never_outlives_the_credentials(ferry_factory, tmp_path):
    # Session credentials that expire in 2 minutes: presign_ttl = 1h is cut to
    # what is left, and the cache lifetime with it.
    spool = tmp_path / "spool"
    spool.mkdir()
    expiry = datetime.datetime.utcnow().replace(microsecond=0) + datetime.timedelta(seconds=120)
    env = {"AWS_ACCESS_KEY_ID": "ASIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret",
           "AWS_SESSION_TOKEN": "token", "AWS_CREDENTIAL_EXPIRATION": expiry.isoformat() + "Z",
           "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}
    store = "\n".join(line for line in S3.splitlines() if not line.startswith(("access_key",
                                                                               "secret_key")))
    f = ferry_factory(store + "\n" + offload_conf(spool, "redirect = presign\npresign_ttl = 1h\n"),
                      env=env)
    r = request(f.port, path="/static/x.jpg")
    assert r.status == 302, r
    q = dict(parse_qsl(urlsplit(r.header("Location")).query))
    signed = datetime.datetime.strptime(q["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
    expires = int(q["X-Amz-Expires"])
    assert signed + datetime.timedelta(seconds=expires) == expiry, (q, expiry)
    assert 100 <= expires <= 120, q
    assert q["X-Amz-Security-Token"] == "token", q
    m = re.fullmatch(r"private, max-age=(\d+)", r.header("Cache-Control") or "")
    assert m and 0 < int(m.group(1)) <= expires * 0.9 + 1, r


def test_presign_with_expired_credentials_is_refused(ferry_factory, tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    env = {"AWS_ACCESS_KEY_ID": "ASIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret",
           "AWS_SESSION_TOKEN": "token", "AWS_CREDENTIAL_EXPIRATION": "2020-01-01T00:00:00Z",
           "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}
    store = "\n".join(line for line in S3.splitlines() if not line.startswith(("access_key",
                                                                               "secret_key")))
    f = ferry_factory(store + "\n" + offload_conf(spool, "redirect = presign\n"), env=env)
    r = request(f.port, path="/static/x.jpg")
    assert r.status == 500 and r.header("Location") is None, r
    assert r.body == b"500 Internal Server Error: the store's credentials have expired\n", r


def test_verify_remote_with_the_dir_store(ferry_factory, tmp_path):
    # A public redirect only for what the dir store holds; 404 for a file in
    # neither place.
    store, conf = dir_store(tmp_path, prefix="pre/")
    f, spool = start(ferry_factory, tmp_path, conf,
                     f"redirect = public\npublic_url = {PUBLIC}\nverify_remote = on\n")
    (store / "pre").mkdir()
    (store / "pre" / "there.jpg").write_bytes(b"stored")
    r = request(f.port, path="/static/there.jpg")
    assert r.status == 302 and r.header("Location") == PUBLIC + "there.jpg", r
    r = request(f.port, path="/static/gone.jpg")
    assert r.status == 404 and r.header("Location") is None and r.body == b"404 Not Found\n", r
    assert sorted(log_notes(f, 2)) == ["offload=missing", "offload=redirect"]


def test_out_of_descriptors_is_503_never_a_false_404(ferry_factory, tmp_path):
    """A stored or local file that cannot be opened for want of descriptors is
    503, not 404 ("never a false 404") nor a bare 500. ferry's fd limit is
    lowered while it runs so that the accepted connection takes the last one."""
    import resource
    import socket
    store, conf = dir_store(tmp_path, prefix="pre/")
    (store / "pre").mkdir()
    (store / "pre" / "stored.bin").write_bytes(b"stored bytes")
    (tmp_path / "spool").mkdir()
    (tmp_path / "spool" / "local.bin").write_bytes(b"local bytes")
    # Both files in place before the start, so that no descriptor comes and
    # goes for them while the limit is computed.
    f, spool = start(ferry_factory, tmp_path, conf + "[server]\nworkers = 1\n")
    pid = f.proc.pid
    hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)[1]
    fds = lambda: {int(n) for n in os.listdir(f"/proc/{pid}/fd")}  # noqa: E731
    seen = []

    def settled():
        # The same descriptors over 5 polls (100 ms): start-up work and the
        # previous connection are done, so no fd comes free after the limit
        # is computed.
        seen.append(fds())
        return len(seen) >= 5 and all(x == seen[-1] for x in seen[-5:])

    try:
        for path in ("/static/stored.bin", "/static/local.bin"):
            seen.clear()
            wait_for(settled, 5, "ferry's descriptors to settle")
            # A limit that leaves exactly one free descriptor number: accept()
            # takes it, and the open of the file is the one that fails.
            used = fds()
            limit, free = 0, 0
            while free < 2:
                free += limit not in used
                limit += 1
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit - 1, hard))
            s = socket.create_connection(("127.0.0.1", f.port))
            try:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
                r, rest = read_head(s)
                assert r.status == 503, (path, r)
                assert r.header("Location") is None
            finally:
                s.close()
                resource.prlimit(pid, resource.RLIMIT_NOFILE, (hard, hard))
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (hard, hard))
    # With descriptors again, both are served.
    assert request(f.port, path="/static/local.bin").body == b"local bytes"
    assert request(f.port, path="/static/stored.bin").body == b"stored bytes"
