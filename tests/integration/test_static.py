"""Static files from root: containment (traversal, symlinks), Content-Type,
validators and conditional requests, ranges, HEAD, directories, methods."""
import email.utils
import os
import socket
import time

import pytest

from conftest import (FerryProcess, ResponseReader, connect_slow_reader, http_raw, raw_exchange,
                      request, wait_closed)

SECRET = b"TOPSECRET-7f3a9c-outside-root\n"
HTML = b"<!doctype html><title>t</title><p>hello</p>\n"
CSS = b"body { color: red }\n"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
DATA = bytes((i * 7 + 3) % 256 for i in range(1000))  # 1000 distinct-ish bytes
INDEX = b"<h1>dir index</h1>\n"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """One ferry over a prepared tree, shared by the read-only tests here."""
    wd = tmp_path_factory.mktemp("static")
    f = FerryProcess(wd, "")
    root = f.root
    files = {
        "page.html": HTML, "style.css": CSS, "image.png": PNG, "data.bin": DATA,
        "noext": b"no extension\n", "file.unknownext": b"unknown extension\n",
        "dir/index.html": INDEX, "dir/sub.txt": b"sub\n", "dir/sub dir/x.txt": b"x\n", "noindex/a.txt": b"a\n",
        "ok.txt": b"inside root\n", "empty.txt": b"",
        "what?.txt": b"question\n", "a b.txt": b"space\n", "100%.txt": b"percent\n",
        "caf\u00e9.txt": b"utf8\n",
    }
    for name, content in files.items():
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(content)
    with open(os.path.join(wd, "secret.txt"), "wb") as fh:
        fh.write(SECRET)
    os.makedirs(os.path.join(wd, "outside-dir"))
    with open(os.path.join(wd, "outside-dir", "secret.txt"), "wb") as fh:
        fh.write(SECRET)
    # Symlinks out of root: relative, absolute, to a directory, to /etc.
    os.symlink("../secret.txt", os.path.join(root, "link-rel-out"))
    os.symlink(os.path.join(wd, "secret.txt"), os.path.join(root, "link-abs-out"))
    os.symlink("../outside-dir", os.path.join(root, "dirlink-out"))
    os.symlink("/etc", os.path.join(root, "etc"))
    os.symlink("loop", os.path.join(root, "loop"))
    os.mkfifo(os.path.join(root, "fifo"))
    # Symlinks that stay inside root.
    os.symlink("ok.txt", os.path.join(root, "link-in"))
    os.symlink("dir", os.path.join(root, "dirlink-in"))
    # A fixed mtime makes Last-Modified and If-Modified-Since predictable.
    for name in files:
        os.utime(os.path.join(root, name), (1700000000, 1700000000))
    f.start()
    yield f
    f.stop_checked()


def get(srv, path, method="GET", headers=None, body=b"", version="HTTP/1.1"):
    return request(srv.port, method=method, path=path, headers=headers, body=body,
                   version=version)


# ---- traversal and containment ----

BAD_PATH = b"400 Bad Request: invalid path\n"
NOT_FOUND = b"404 Not Found\n"

TRAVERSAL = [
    ("dotdot", "/../secret.txt", 400, BAD_PATH),
    ("dotdot-deep", "/dir/../../secret.txt", 400, BAD_PATH),
    ("dot-segment", "/./ok.txt", 400, BAD_PATH),
    ("enc-dotdot", "/%2e%2e/secret.txt", 400, BAD_PATH),
    ("enc-mixed-case-slash", "/%2E%2e%2fsecret.txt", 400, BAD_PATH),
    ("enc-slashes", "/dir%2f..%2f..%2fsecret.txt", 400, BAD_PATH),
    ("enc-dot-only", "/.%2e/secret.txt", 400, BAD_PATH),
    # Backslash is an ordinary byte on Linux: a file named "..\secret.txt"
    # which does not exist.
    ("enc-backslash", "/..%5csecret.txt", 404, NOT_FOUND),
    ("raw-backslash", "/..\\secret.txt", 404, NOT_FOUND),
    ("raw-backslash-dir", "/dir\\..\\..\\secret.txt", 404, NOT_FOUND),
    # Overlong UTF-8 for '.' is not a dot: literal bytes, no such directory.
    ("overlong-utf8", "/%c0%ae%c0%ae/secret.txt", 404, NOT_FOUND),
    ("overlong-utf8-slash", "/%c0%ae%c0%ae%c0%afsecret.txt", 404, NOT_FOUND),
    ("nul", "/ok.txt%00", 400, BAD_PATH),
    ("nul-ext", "/ok.txt%00.html", 400, BAD_PATH),
    # Decoded once only: "%2e%2e" stays a literal directory name.
    ("double-encoding", "/%252e%252e/secret.txt", 404, NOT_FOUND),
    ("double-encoding-slash", "/..%252fsecret.txt", 404, NOT_FOUND),
    ("truncated-escape", "/ok.txt%2", 400, b"400 Bad Request\n"),
    # Symlinks leading out of root.
    ("symlink-rel-out", "/link-rel-out", 404, NOT_FOUND),
    ("symlink-abs-out", "/link-abs-out", 404, NOT_FOUND),
    ("symlink-dir-out", "/dirlink-out/secret.txt", 404, NOT_FOUND),
    ("symlink-etc", "/etc/passwd", 404, NOT_FOUND),
    ("symlink-etc-hostname", "/etc/hostname", 404, NOT_FOUND),
    ("symlink-loop", "/loop", 404, NOT_FOUND),
    # Not a regular file: refused without blocking the worker on the FIFO.
    ("fifo", "/fifo", 403, b"403 Forbidden\n"),
]


@pytest.mark.parametrize("path,status,body", [t[1:] for t in TRAVERSAL],
                         ids=[t[0] for t in TRAVERSAL])
def test_traversal_refused(srv, path, status, body):
    raw = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode("latin-1")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(raw)
        rd = ResponseReader(s)
        resp = rd.next()
        s.shutdown(socket.SHUT_WR)
        _, everything = wait_closed(s, rest=rd.buf)
    assert resp.status == status, resp
    assert resp.body == body, resp
    assert b"TOPSECRET" not in resp.body + everything
    if path.startswith("/etc"):
        assert b"root:" not in resp.body


@pytest.mark.parametrize("path,content", [
    ("/link-in", b"inside root\n"),
    ("/dirlink-in/sub.txt", b"sub\n"),
    ("/dirlink-in/", INDEX),
    ("/dir//sub.txt", b"sub\n"),
    ("/%64ir/%73ub.txt", b"sub\n"),
    ("/what%3F.txt", b"question\n"),
    ("/a%20b.txt", b"space\n"),
    ("/100%25.txt", b"percent\n"),
    ("/caf%C3%A9.txt", b"utf8\n"),
])
def test_inside_root_works(srv, path, content):
    resp = get(srv, path)
    assert resp.status == 200, resp
    assert resp.body == content


# ---- Content-Type, validators ----

@pytest.mark.parametrize("path,ctype,content", [
    ("/page.html", "text/html", HTML),
    ("/style.css", "text/css", CSS),
    ("/image.png", "image/png", PNG),
    ("/noext", "application/octet-stream", b"no extension\n"),
    ("/file.unknownext", "application/octet-stream", b"unknown extension\n"),
    ("/dir/", "text/html", INDEX),
    ("/empty.txt", "text/plain", b""),
])
def test_content_type_and_body(srv, path, ctype, content):
    resp = get(srv, path)
    assert resp.status == 200, resp
    assert resp.header("Content-Type") == ctype
    assert resp.body == content
    assert resp.header("Content-Length") == str(len(content))
    assert resp.header("Accept-Ranges") == "bytes"


def test_etag_last_modified_stable(srv):
    r1 = get(srv, "/page.html")
    r2 = get(srv, "/page.html")
    etag = r1.header("ETag")
    assert etag and etag.startswith('"') and etag.endswith('"'), r1
    assert r2.header("ETag") == etag
    assert r1.header("Last-Modified") == "Tue, 14 Nov 2023 22:13:20 GMT"
    assert r2.header("Last-Modified") == r1.header("Last-Modified")
    # Different files (different sizes) have different ETags.
    assert get(srv, "/style.css").header("ETag") != etag


def test_etag_changes_when_file_changes(ferry_factory):
    # Without the file cache every request sees the file as it is now.
    f = ferry_factory("[server]\nfile_cache_valid = 0\n")
    path = os.path.join(f.root, "f.txt")
    with open(path, "wb") as fh:
        fh.write(b"one")
    os.utime(path, (1700000000, 1700000000))
    e1 = request(f.port, path="/f.txt").header("ETag")
    with open(path, "wb") as fh:
        fh.write(b"three")
    os.utime(path, (1700000100, 1700000100))
    r = request(f.port, path="/f.txt", headers={"If-None-Match": e1})
    assert r.status == 200 and r.body == b"three"
    assert r.header("ETag") != e1


@pytest.mark.parametrize("rel,url", [("f.txt", "/f.txt"), ("d/index.html", "/d/")])
def test_file_cache_sees_a_change_within_file_cache_valid(ferry_factory, rel, url):
    """With the small-file cache on, a replaced file (a directory's index too)
    may be served from the cache for up to file_cache_valid, but every response
    pairs its body with that body's own ETag and Last-Modified, and the new file
    is served once file_cache_valid has passed."""
    f = ferry_factory("[server]\nfile_cache_valid = 500ms\n")
    path = os.path.join(f.root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(b"old")
    os.utime(path, (1700000000, 1700000000))
    old = request(f.port, path=url)
    for _ in range(4):  # warm every worker's cache
        assert request(f.port, path=url).header("ETag") == old.header("ETag")
    tmp = path + ".new"
    with open(tmp, "wb") as fh:
        fh.write(b"new content")
    os.utime(tmp, (1700000100, 1700000100))
    os.rename(tmp, path)  # how uploads are usually replaced
    t0 = time.monotonic()
    pairs = {(old.header("ETag"), old.header("Last-Modified"), old.body)}
    while True:
        r = request(f.port, path=url)
        pair = (r.header("ETag"), r.header("Last-Modified"), r.body)
        if r.body == b"new content":
            pairs.add(pair)
            elapsed = time.monotonic() - t0
            if elapsed > 0.5:
                break
        else:
            assert pair in pairs, f"old body with new validators: {pair}"
            assert time.monotonic() - t0 < 0.5 + 0.8, "stale file served past file_cache_valid"
    # Two versions only, each with its own validators.
    assert len(pairs) == 2 and len({p[0] for p in pairs}) == 2
    new = [p for p in pairs if p[2] == b"new content"][0]
    assert new[1] == "Tue, 14 Nov 2023 22:15:00 GMT"


def etag_of(srv, path="/page.html"):
    return get(srv, path).header("ETag")


@pytest.mark.parametrize("inm", [
    "{etag}",
    '"nope", {etag}',
    '"a","b" ,{etag}',
    "W/{etag}",
    '"nope", W/{etag}',
    "*",
])
def test_if_none_match_304(srv, inm):
    etag = etag_of(srv)
    resp = get(srv, "/page.html", headers={"If-None-Match": inm.format(etag=etag)})
    assert resp.status == 304, resp
    assert resp.header("ETag") == etag
    assert resp.header("Last-Modified") == "Tue, 14 Nov 2023 22:13:20 GMT"
    assert resp.header("Content-Length") is None
    assert resp.header("Content-Type") is None


@pytest.mark.parametrize("inm", ['"nope"', '"nope", W/"also-nope"', 'W/"x"'])
def test_if_none_match_miss_200(srv, inm):
    resp = get(srv, "/page.html", headers={"If-None-Match": inm})
    assert resp.status == 200 and resp.body == HTML


def test_304_has_no_body_on_keepalive(srv):
    """No body bytes after a 304: the next response on the connection starts
    right after the 304's head."""
    etag = etag_of(srv)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(f"GET /page.html HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n\r\n"
                  "GET /style.css HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        rd = ResponseReader(s)
        r1 = rd.next()
        assert r1.status == 304
        assert rd.buf == b"" or rd.buf.startswith(b"HTTP/1.1 200 OK\r\n"), rd.buf[:80]
        r2 = rd.next()
        assert r2.status == 200 and r2.body == CSS
        assert rd.closed() and rd.buf == b""


MTIME_HTTP = "Tue, 14 Nov 2023 22:13:20 GMT"


@pytest.mark.parametrize("ims,status", [
    (MTIME_HTTP, 304),
    ("Tue, 14 Nov 2023 22:13:21 GMT", 304),
    ("Wed, 01 Jan 2031 00:00:00 GMT", 304),
    ("Tue, 14 Nov 2023 22:13:19 GMT", 200),
    ("Mon, 01 Jan 2001 00:00:00 GMT", 200),
    ("garbage", 200),
    ("", 200),
    ("Tue, 14 Nov 2023 22:13:20", 200),
])
def test_if_modified_since(srv, ims, status):
    resp = get(srv, "/page.html", headers={"If-Modified-Since": ims})
    assert resp.status == status, resp
    if status == 304:
        assert resp.body == b"" and resp.header("ETag") == etag_of(srv)
    else:
        assert resp.body == HTML


def test_if_none_match_wins_over_if_modified_since(srv):
    # RFC 9110 13.2.2: If-Modified-Since is ignored when If-None-Match is present.
    resp = get(srv, "/page.html", headers={"If-None-Match": '"other"',
                                           "If-Modified-Since": MTIME_HTTP})
    assert resp.status == 200 and resp.body == HTML


# ---- ranges ----

@pytest.mark.parametrize("rng,start,end", [
    ("bytes=0-9", 0, 9),
    ("bytes=10-", 10, 999),
    ("bytes=-5", 995, 999),
    ("bytes=990-5000", 990, 999),
    ("bytes=-5000", 0, 999),
    ("bytes=999-999", 999, 999),
    ("bytes=0-0", 0, 0),
])
def test_range_206(srv, rng, start, end):
    resp = get(srv, "/data.bin", headers={"Range": rng})
    assert resp.status == 206, resp
    assert resp.body == DATA[start:end + 1]
    assert resp.header("Content-Range") == f"bytes {start}-{end}/1000"
    assert resp.header("Content-Length") == str(end - start + 1)
    assert resp.header("Content-Type") == "application/octet-stream"
    assert resp.header("ETag") == etag_of(srv, "/data.bin")


@pytest.mark.parametrize("rng", ["bytes=0-1,5-6", "bytes=0-9, 20-29", "bytes=5-2",
                                 "items=0-9", "bytes=abc", "bytes=-"])
def test_range_ignored_gives_full_200(srv, rng):
    resp = get(srv, "/data.bin", headers={"Range": rng})
    assert resp.status == 200, resp
    assert resp.body == DATA
    assert resp.header("Content-Range") is None


@pytest.mark.parametrize("rng", ["bytes=1000-", "bytes=1000-2000", "bytes=5000-5001", "bytes=-0"])
def test_range_unsatisfiable_416(srv, rng):
    resp = get(srv, "/data.bin", headers={"Range": rng})
    assert resp.status == 416, resp
    assert resp.header("Content-Range") == "bytes */1000"
    assert resp.body == b"416 Range Not Satisfiable\n"


def test_range_on_empty_file_416(srv):
    resp = get(srv, "/empty.txt", headers={"Range": "bytes=0-"})
    assert resp.status == 416
    assert resp.header("Content-Range") == "bytes */0"


def test_if_range(srv):
    etag = etag_of(srv, "/data.bin")
    lm = get(srv, "/data.bin").header("Last-Modified")
    r = get(srv, "/data.bin", headers={"Range": "bytes=0-3", "If-Range": etag})
    assert r.status == 206 and r.body == DATA[:4]
    r = get(srv, "/data.bin", headers={"Range": "bytes=0-3", "If-Range": lm})
    assert r.status == 206 and r.body == DATA[:4]
    for stale in ['"stale-etag"', "Mon, 01 Jan 2001 00:00:00 GMT", "W/" + etag]:
        r = get(srv, "/data.bin", headers={"Range": "bytes=0-3", "If-Range": stale})
        assert r.status == 200, (stale, r)
        assert r.body == DATA and r.header("Content-Range") is None


# ---- HEAD ----

VOLATILE = {"date"}


@pytest.mark.parametrize("path,headers", [
    ("/page.html", {}),
    ("/data.bin", {"Range": "bytes=0-9"}),
    ("/missing", {}),
    ("/dir", {}),
    ("/dir/", {}),
    ("/noindex/", {}),
    ("/data.bin", {"Range": "bytes=5000-"}),
])
def test_head_matches_get(srv, path, headers):
    g = get(srv, path, headers=headers)
    h = get(srv, path, method="HEAD", headers=headers)
    assert h.status == g.status
    assert [(k, v) for k, v in h.headers if k.lower() not in VOLATILE] == \
        [(k, v) for k, v in g.headers if k.lower() not in VOLATILE]
    assert h.body == b""


@pytest.fixture(scope="module")
def srv_nocache(tmp_path_factory):
    """The same files with the file cache off: every answer then comes from
    static_serve_fd(), the function static.h exports for the offload prefix."""
    wd = tmp_path_factory.mktemp("static-nocache")
    f = FerryProcess(wd, "file_cache_size = 0\n")
    for name, content in {"data.bin": DATA, "page.html": HTML, "dir/index.html": INDEX,
                          "empty.txt": b""}.items():
        path = os.path.join(f.root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(content)
        os.utime(path, (1700000000, 1700000000))
    f.start()
    yield f
    f.stop_checked()


LM = "Tue, 14 Nov 2023 22:13:20 GMT"  # Last-Modified of mtime 1700000000


@pytest.mark.parametrize("method,path,headers,want", [
    ("GET", "/data.bin", {}, 200),
    ("HEAD", "/data.bin", {}, 200),
    ("GET", "/page.html", {}, 200),
    ("GET", "/dir/", {}, 200),
    ("GET", "/data.bin", {"Range": "bytes=10-19"}, 206),
    ("HEAD", "/data.bin", {"Range": "bytes=10-19"}, 206),
    ("GET", "/data.bin", {"Range": "bytes=-7"}, 206),
    ("GET", "/data.bin", {"Range": "bytes=990-"}, 206),
    ("GET", "/data.bin", {"Range": "bytes=0-1,4-5"}, 200),
    ("GET", "/data.bin", {"Range": "bytes=+1-2"}, 200),
    ("GET", "/data.bin", {"Range": "bytes=1000-"}, 416),
    ("GET", "/empty.txt", {"Range": "bytes=0-"}, 416),
    ("GET", "/data.bin", {"If-None-Match": '"6553f100-3e8"'}, 304),
    ("GET", "/data.bin", {"If-None-Match": '"other"'}, 200),
    ("GET", "/data.bin", {"If-Modified-Since": LM}, 304),
    ("GET", "/data.bin", {"Range": "bytes=0-3", "If-Range": '"6553f100-3e8"'}, 206),
    ("GET", "/data.bin", {"Range": "bytes=0-3", "If-Range": '"stale"'}, 200),
    ("GET", "/data.bin", {"Range": "bytes=0-3", "If-Range": LM}, 206),
])
def test_serve_fd_answers_like_the_cache(srv, srv_nocache, method, path, headers, want):
    """static_serve_fd() (cache off) and the cached path give the same status,
    headers and bytes for validators, conditional requests, Range and HEAD."""
    a = get(srv, path, method=method, headers=headers)
    b = get(srv_nocache, path, method=method, headers=headers)
    assert a.status == b.status == want, (a, b)
    assert sorted((k.lower(), v) for k, v in a.headers if k.lower() not in VOLATILE) == \
        sorted((k.lower(), v) for k, v in b.headers if k.lower() not in VOLATILE)
    assert a.body == b.body
    if path == "/data.bin" and method == "GET" and a.status == 206:
        lo, hi = a.header("Content-Range").split()[1].split("/")[0].split("-")
        assert b.body == DATA[int(lo):int(hi) + 1]


def test_head_has_no_body_on_the_wire(srv):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"HEAD /data.bin HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /ok.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        rd = ResponseReader(s)
        h = rd.next(head_request=True)
        assert h.status == 200 and h.header("Content-Length") == "1000"
        r2 = rd.next()
        assert r2.status == 200 and r2.body == b"inside root\n"
        assert rd.closed() and rd.buf == b""


# ---- directories, errors, methods ----

def test_directory_index(srv):
    r = get(srv, "/dir/")
    assert r.status == 200 and r.body == INDEX
    assert r.header("Content-Type") == "text/html"
    # root has no index.html: a directory without index, never a listing
    r = get(srv, "/")
    assert r.status == 403 and b"ok.txt" not in r.body


@pytest.mark.parametrize("path,location", [
    ("/dir", "/dir/"),
    ("/dir?a=1&b=2", "/dir/?a=1&b=2"),
    ("/noindex", "/noindex/"),
    ("/dirlink-in", "/dirlink-in/"),
    # Built from the normalised path: never protocol-relative, re-encoded.
    ("//dir", "/dir/"),
    ("///dir?x=1", "/dir/?x=1"),
    ("/%2Fdir", "/dir/"),
    ("/dir//sub%20dir", "/dir/sub%20dir/"),
])
def test_directory_redirect(srv, path, location):
    r = get(srv, path)
    assert r.status == 301, r
    assert r.header("Location") == location
    assert r.body == b"301 Moved Permanently\n"


@pytest.mark.parametrize("target,location", [
    (b"//dir", b"/dir/"),
    (b"////dir", b"/dir/"),
    (b"//dir//sub%20dir", b"/dir/sub%20dir/"),
])
def test_directory_redirect_never_protocol_relative(srv, target, location):
    """`GET //images` used to answer `Location: //images/`, which a browser
    reads as the host `images`. Check the exact header bytes on the wire."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        data = http_raw(s, b"GET " + target +
                        b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    head = data.split(b"\r\n\r\n", 1)[0]
    assert head.startswith(b"HTTP/1.1 301 "), data
    lines = [ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"location:")]
    assert lines == [b"Location: " + location], head


def test_directory_without_index_403_no_listing(srv):
    r = get(srv, "/noindex/")
    assert r.status == 403, r
    assert r.body == b"403 Forbidden: directory listing is not allowed\n"
    assert b"a.txt" not in r.body


def test_404(srv):
    r = get(srv, "/no/such/file.html")
    assert r.status == 404
    assert r.body == NOT_FOUND
    assert r.header("Content-Type") == "text/plain"
    assert r.header("Content-Length") == str(len(NOT_FOUND))


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "FOO"])
def test_other_methods_405(srv, method):
    raw = f"{method} /page.html HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(raw)
        rd = ResponseReader(s)
        r = rd.next()
        assert r.status == 405, r
        assert r.header("Allow") == "GET, HEAD"
        assert r.body == b"405 Method Not Allowed\n"
        # Without a body the connection stays usable.
        s.sendall(b"GET /ok.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        assert rd.next().body == b"inside root\n"


def test_post_with_body_405_and_close(srv):
    resp, closed, extra = raw_exchange(
        srv.port, b"POST /page.html HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcd")
    assert resp.status == 405 and resp.header("Allow") == "GET, HEAD"
    # The body was not read: the connection must not be reused.
    assert resp.header("Connection") == "close"
    assert closed and extra == b""


@pytest.mark.parametrize("extra_head,body", [
    ("Content-Length: 5\r\n", b"hello"),
    ("Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
])
def test_get_with_body_413(srv, extra_head, body):
    raw = f"GET /page.html HTTP/1.1\r\nHost: x\r\n{extra_head}\r\n".encode() + body
    resp, closed, extra = raw_exchange(srv.port, raw)
    assert resp.status == 413, resp
    assert resp.body == b"413 Content Too Large: no request body is accepted here\n"
    assert resp.header("Connection") == "close"
    assert closed and extra == b""


# ---- files over 4 GiB ----

def test_file_over_4gib(ferry_factory, tmp_path):
    f = ferry_factory(start=False)
    path = os.path.join(f.root, "big.bin")
    size = 5 * 1024 ** 3 + 123
    marker_off = 4 * 1024 ** 3 + 512 * 1024 ** 2  # 4.5 GiB
    marker = b"MARKER-at-4.5GiB-0123456789abcdef"
    try:
        with open(path, "wb") as fh:
            fh.truncate(size)
            fh.seek(marker_off)
            fh.write(marker)
            fh.seek(size - 4)
            fh.write(b"TAIL")
    except OSError as e:
        pytest.skip(f"the filesystem refuses a sparse {size}-byte file: {e}")
    st = os.stat(path)
    if st.st_blocks * 512 > 64 * 1024 ** 2:
        os.unlink(path)
        pytest.skip("the filesystem does not keep files sparse; a 5 GiB file would be written")
    f.start()
    h = request(f.port, method="HEAD", path="/big.bin")
    assert h.status == 200
    assert h.header("Content-Length") == str(size)
    r = request(f.port, path="/big.bin",
                headers={"Range": f"bytes={marker_off}-{marker_off + len(marker) - 1}"})
    assert r.status == 206, r
    assert r.body == marker
    assert r.header("Content-Range") == \
        f"bytes {marker_off}-{marker_off + len(marker) - 1}/{size}"
    r = request(f.port, path="/big.bin", headers={"Range": "bytes=-6"})
    assert r.status == 206 and r.body == b"\0\0TAIL"
    assert r.header("Content-Range") == f"bytes {size - 6}-{size - 1}/{size}"
    r = request(f.port, path="/big.bin", headers={"Range": f"bytes={size}-"})
    assert r.status == 416 and r.header("Content-Range") == f"bytes */{size}"


def test_last_modified_is_http_date(srv):
    lm = get(srv, "/ok.txt").header("Last-Modified")
    assert email.utils.parsedate_to_datetime(lm).timestamp() == 1700000000


def test_file_cache_eviction_with_responses_in_flight(ferry_factory):
    """A cached file whose response is still being written survives being
    evicted by other files (the ASan build catches a use after free)."""
    # 1 MiB bodies: far more than the socket buffers of a stalled reader hold.
    f = ferry_factory("[server]\nfile_cache_size = 3MiB\nfile_cache_max_file = 2MiB\n"
                      "file_cache_valid = 1h\n", start=False, workers=1)
    contents = {}
    for i in range(12):
        data = os.urandom(1024 * 1024)
        contents[f"/c{i}.bin"] = data
        with open(os.path.join(f.root, f"c{i}.bin"), "wb") as fh:
            fh.write(data)
    f.start()
    # Stalled reader holds c0's in-memory body half-sent.
    slow = connect_slow_reader(f.port, 2048)
    try:
        slow.sendall(b"GET /c0.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        first = slow.recv(16)
        assert first.startswith(b"HTTP/1.1 200")
        # Others fill the cache several times over, evicting c0.
        for _ in range(3):
            for i in range(1, 12):
                r = request(f.port, path=f"/c{i}.bin")
                assert r.status == 200 and r.body == contents[f"/c{i}.bin"], i
        rd = ResponseReader(slow, buffered=first)
        r = rd.next()
        assert r.body == contents["/c0.bin"]
        # c0 is served again, correct, after its eviction.
        slow.sendall(b"GET /c0.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        assert rd.next().body == contents["/c0.bin"]
    finally:
        slow.close()
