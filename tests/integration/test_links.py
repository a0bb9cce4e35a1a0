"""Signed, expiring links under [offload] url_prefix (issue 11, first part),
through the real binary: links made here with Python's hmac (an implementation
independent of ferry's), by `ferry sign`, and by the README's snippets in
Python, PHP, Node.js and Perl are accepted; missing, tampered, foreign and
expired ones are refused; what a good link gets never outlives it."""
import base64
import datetime
import hashlib
import hmac
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from urllib.parse import parse_qsl, quote, urlsplit

import pytest

from conftest import FERRY_BIN, ROOT, request, wait_for

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "s3"))
from s3fixtures import ACCESS_KEY, BUCKET, SECRET_KEY  # noqa: E402

SECRET = "link-secret/with+odd=chars and spaces"
OLD = "the previous secret"
NAMES = ["a b.jpg", "a+b.jpg", "100%.jpg", "caf\u00e9.jpg", "\U0001F600.png",
         "dir/sub dir/\u00fc.txt", "x#y&z=1;q?.txt", "it's (1).txt"]
HOUR = 3600


def sig_of(secret, expires, path):
    """The signature, computed here with Python's hmac, as the README defines it."""
    mac = hmac.new(secret.encode(), f"{expires}\n{path}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def link(path, secret=SECRET, expires=None, ttl=HOUR):
    """A signed request-target for the decoded path."""
    expires = int(time.time()) + ttl if expires is None else expires
    return f"{quote(path, safe='/')}?expires={expires}&sig={sig_of(secret, expires, path)}"


def dir_conf(tmp_path, extra=""):
    spool = tmp_path / "spool"
    store = tmp_path / "store"
    spool.mkdir(exist_ok=True)
    store.mkdir(exist_ok=True)
    # settle = 1h: the offloader never takes the test's spool files away.
    return spool, store, (f"[store]\ntype = dir\npath = {store}\n\n"
                          f"[offload]\nspool = {spool}\nurl_prefix = /static/\nsettle = 1h\n"
                          f"link_secret = {SECRET}\n{extra}")


def start(ferry_factory, tmp_path, extra=""):
    spool, store, conf = dir_conf(tmp_path, extra)
    return ferry_factory(conf), spool, store


def put(root, rel, data):
    path = os.path.join(str(root), rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def notes(f, n):
    """The offload= notes of the first n access log lines (flushed asynchronously)."""
    wait_for(lambda: f.access_log().count("\n") >= n, 5, f"{n} access log lines")
    return [line.rsplit(" ", 1)[1] for line in f.access_log().splitlines()[:n]]


def max_age(r):
    m = re.fullmatch(r"private, max-age=(\d+)", r.header("Cache-Control") or "")
    assert m, r
    return int(m.group(1))


def assert_forbidden(r, secret_bytes=b"", status=403):
    body = {403: b"403 Forbidden\n", 410: b"410 Gone\n"}[status]
    assert r.status == status and r.body == body, r
    assert r.header("Location") is None and r.header("Cache-Control") is None, r
    if secret_bytes:
        assert secret_bytes not in r.body, r


def test_good_link_serves_the_local_file_privately(ferry_factory, tmp_path):
    f, spool, _ = start(ferry_factory, tmp_path)
    data = os.urandom(5000)
    put(spool, "d/pic.jpg", data)
    target = link("/static/d/pic.jpg", ttl=HOUR)
    r = request(f.port, path=target)
    assert r.status == 200 and r.body == data, r
    assert r.header("Content-Type") == "image/jpeg", r
    # private, and cacheable no longer than the link lives.
    assert HOUR - 5 <= max_age(r) <= HOUR, r
    etag = r.header("ETag")
    r = request(f.port, path=target, headers={"Range": "bytes=10-19"})
    assert r.status == 206 and r.body == data[10:20] and max_age(r) <= HOUR, r
    r = request(f.port, path=target, headers={"If-None-Match": etag})
    assert r.status == 304 and r.body == b"" and max_age(r) <= HOUR, r
    r = request(f.port, "HEAD", path=target)
    assert r.status == 200 and r.body == b"" and r.header("Content-Length") == "5000", r
    assert notes(f, 4) == ["offload=local"] * 4


def test_missing_parameters_get_403(ferry_factory, tmp_path):
    f, spool, _ = start(ferry_factory, tmp_path)
    put(spool, "a.jpg", b"private bytes")
    good = link("/static/a.jpg")
    expires = re.search(r"expires=(\d+)", good).group(1)
    sig = re.search(r"sig=([^&]+)", good).group(1)
    for q in ("", "?", f"?expires={expires}", f"?sig={sig}", f"?Expires={expires}&sig={sig}",
              f"?expires%3D{expires}&sig={sig}"):
        r = request(f.port, path="/static/a.jpg" + q)
        assert_forbidden(r)
        assert b"private" not in r.body
    # A file that does not exist is refused the same way: nothing is revealed.
    assert_forbidden(request(f.port, path="/static/absent.jpg"))
    assert notes(f, 7) == ["offload=unsigned"] * 7
    # Outside url_prefix nothing is asked for.
    with open(os.path.join(f.root, "pub.txt"), "wb") as fh:
        fh.write(b"public")
    r = request(f.port, path="/pub.txt")
    assert r.status == 200 and r.body == b"public", r


def test_tampered_and_foreign_links_get_403(ferry_factory, tmp_path):
    f, spool, _ = start(ferry_factory, tmp_path)
    put(spool, "a.jpg", b"A")
    put(spool, "b.jpg", b"B")
    e = int(time.time()) + HOUR
    good_sig = sig_of(SECRET, e, "/static/a.jpg")
    assert request(f.port, path=f"/static/a.jpg?expires={e}&sig={good_sig}").body == b"A"
    tampered = [
        f"/static/b.jpg?expires={e}&sig={good_sig}",              # another path
        f"/static/a.jpg?expires={e + 1}&sig={good_sig}",          # a later expiry
        f"/static/a.jpg?expires={e + 10**6}&sig={good_sig}",
        f"/static/a.jpg?expires=0{e}&sig={good_sig}",             # the digits are signed
        f"/static/a.jpg?expires={e}&sig={good_sig[:-1]}",         # shortened
        f"/static/a.jpg?expires={e}&sig={good_sig}A",             # lengthened
        f"/static/a.jpg?expires={e}&sig={good_sig}=",             # padded
        f"/static/a.jpg?expires={e}&sig={good_sig[:-1] + ('A' if good_sig[-1] != 'A' else 'B')}",
        f"/static/a.jpg?expires={e}&sig={sig_of('wrong secret', e, '/static/a.jpg')}",
        f"/static/a.jpg?expires={e}&sig={sig_of(SECRET, e, 'static/a.jpg')}",
        f"/static/a.jpg?expires={e}&sig={sig_of(SECRET, e, '/a.jpg')}",
        f"/static/a.jpg?expires={e}&sig={sig_of(SECRET, e, '/static/a.jpg?')}",
        f"/static/a.jpg?expires={e}&sig={good_sig}&sig={good_sig}",  # repeated
        f"/static/a.jpg?expires={e}&expires={e}&sig={good_sig}",
        f"/static/a.jpg?expires=-1&sig={good_sig}",
    ]
    for target in tampered:
        r = request(f.port, path=target)
        assert_forbidden(r)
        assert r.body != b"A"
    assert sorted(notes(f, 1 + len(tampered))) == (["offload=badsig"] * len(tampered) +
                                                   ["offload=local"])
    # Nothing about the secret or the expected signature in the logs.
    log = f.log() + f.access_log()
    assert SECRET not in log and sig_of(SECRET, e, "/static/b.jpg") not in log


def test_expired_link_gets_410_and_a_forged_expired_one_403(ferry_factory, tmp_path):
    f, spool, _ = start(ferry_factory, tmp_path)
    put(spool, "a.jpg", b"A")
    past = int(time.time()) - 1
    assert_forbidden(request(f.port, path=link("/static/a.jpg", expires=past)), status=410)
    assert_forbidden(request(f.port, path=link("/static/a.jpg", expires=1)), status=410)
    # Wrong signature and expired: 403, so that 410 proves the signature was good.
    forged = link("/static/a.jpg", secret="wrong", expires=past)
    assert_forbidden(request(f.port, path=forged), status=403)
    assert sorted(notes(f, 3)) == ["offload=badsig", "offload=expired", "offload=expired"]


def test_replay_after_expiry_gets_410(ferry_factory, tmp_path):
    f, spool, _ = start(ferry_factory, tmp_path)
    put(spool, "a.jpg", b"A")
    expires = int(time.time()) + 2
    target = link("/static/a.jpg", expires=expires)
    r = request(f.port, path=target)
    assert r.status == 200 and r.body == b"A" and max_age(r) <= 2, r
    # Wait for the wall clock (not for ferry) to pass the link's expiry.
    time.sleep(max(0.0, expires - time.time()) + 0.05)
    assert_forbidden(request(f.port, path=target), status=410)


def test_previous_secret_is_accepted_for_rotation(ferry_factory, tmp_path):
    f, spool, _ = start(ferry_factory, tmp_path, f"link_secret_previous = {OLD}\n")
    put(spool, "a.jpg", b"A")
    for secret in (SECRET, OLD):
        r = request(f.port, path=link("/static/a.jpg", secret=secret))
        assert r.status == 200 and r.body == b"A", (secret, r)
    assert_forbidden(request(f.port, path=link("/static/a.jpg", secret="a third one")))
    # Expired links of the previous secret are still 410, not 403.
    old_past = link("/static/a.jpg", secret=OLD, expires=int(time.time()) - 5)
    assert_forbidden(request(f.port, path=old_past), status=410)
    # Once the previous secret is dropped, its links stop working.
    (tmp_path / "g").mkdir()
    gspool, _, gconf = dir_conf(tmp_path / "g")
    g = ferry_factory(gconf)
    put(gspool, "a.jpg", b"A")
    assert request(g.port, path=link("/static/a.jpg")).status == 200
    assert_forbidden(request(g.port, path=link("/static/a.jpg", secret=OLD)))


def test_odd_names_signed_here_and_by_ferry_sign(ferry_factory, tmp_path):
    f, spool, _ = start(ferry_factory, tmp_path)
    expires = int(time.time()) + HOUR
    for i, name in enumerate(NAMES):
        data = f"file {i}".encode()
        put(spool, name, data)
        path = "/static/" + name
        mine = link(path, expires=expires)
        p = f.run_cli("sign", path, "--expires", str(expires))
        assert p.returncode == 0 and p.stderr == "", p
        # ferry sign encodes exactly as the redirects do (and as quote() here).
        assert p.stdout == mine + "\n", (name, p.stdout, mine)
        r = request(f.port, path=mine)
        assert r.status == 200 and r.body == data, (name, r)
    # The decoded path is signed: another encoding of the same name passes...
    e = expires
    s = sig_of(SECRET, e, "/static/a+b.jpg")
    for raw in ("/static/a+b.jpg", "/static/a%2Bb.jpg", "/static/a%2bb.jpg", "//static/a+b.jpg",
                "/%73tatic/a+b.jpg"):
        r = request(f.port, path=f"{raw}?expires={e}&sig={s}")
        assert r.status == 200 and r.body == b"file 1", (raw, r)
    # ...but '+' is not a space, and '%' is a byte like any other.
    assert_forbidden(request(f.port, path=f"/static/a%20b.jpg?expires={e}&sig={s}"))
    s = sig_of(SECRET, e, "/static/100%25.jpg")
    assert_forbidden(request(f.port, path=f"/static/100%25.jpg?expires={e}&sig={s}"))
    # UTF-8 names are signed as their bytes (NFC here; NFD is another name).
    s = sig_of(SECRET, e, "/static/cafe\u0301.jpg")
    assert_forbidden(request(f.port, path=f"/static/caf%C3%A9.jpg?expires={e}&sig={s}"))


def test_other_parameters_are_ignored(ferry_factory, tmp_path):
    f, spool, _ = start(ferry_factory, tmp_path)
    put(spool, "a.jpg", b"A")
    target = link("/static/a.jpg")
    q = target.split("?", 1)[1]
    for t in (f"/static/a.jpg?utm=1&{q}", f"/static/a.jpg?{q}&x", f"/static/a.jpg?&&{q}&=&y=z"):
        r = request(f.port, path=t)
        assert r.status == 200 and r.body == b"A", (t, r)


def test_proxied_dir_store_file_is_private_too(ferry_factory, tmp_path):
    f, spool, store = start(ferry_factory, tmp_path)
    data = os.urandom(3000)
    put(store, "d/x y.bin", data)
    r = request(f.port, path=link("/static/d/x y.bin", ttl=600))
    assert r.status == 200 and r.body == data, r
    assert 590 <= max_age(r) <= 600, r
    assert_forbidden(request(f.port, path="/static/d/x%20y.bin"))
    assert sorted(notes(f, 2)) == ["offload=proxy", "offload=unsigned"]


def test_without_link_secret_nothing_changes(ferry_factory, tmp_path):
    spool, _, conf = dir_conf(tmp_path)
    f = ferry_factory(conf.replace(f"link_secret = {SECRET}\n", ""))
    put(spool, "a.jpg", b"A")
    r = request(f.port, path="/static/a.jpg")
    assert r.status == 200 and r.body == b"A" and r.header("Cache-Control") is None, r


# ---- offloaded files: presigned redirects into the store ----

def s3_conf(tmp_path, port, extra=""):
    spool = tmp_path / "spool"
    spool.mkdir(exist_ok=True)
    return spool, (f"[store]\ntype = s3\nendpoint = http://127.0.0.1:{port}\nbucket = {BUCKET}\n"
                   f"region = us-east-1\naccess_key = {ACCESS_KEY}\nsecret_key = {SECRET_KEY}\n"
                   f"prefix = pre/\n\n"
                   f"[offload]\nspool = {spool}\nurl_prefix = /static/\nsettle = 1h\n"
                   f"redirect = presign\nlink_secret = {SECRET}\n{extra}")


def presign_parts(r):
    loc = r.header("Location")
    q = dict(parse_qsl(urlsplit(loc).query, keep_blank_values=True))
    when = datetime.datetime.strptime(q["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
    start = int(when.replace(tzinfo=datetime.timezone.utc).timestamp())
    return loc, q, start, int(q["X-Amz-Expires"])


def fetch(url):
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, resp.read()


def test_presign_validity_is_bounded_by_the_link(ferry_factory, tmp_path, s3proxy, direct):
    spool, conf = s3_conf(tmp_path, s3proxy.port, "presign_ttl = 15m\n")
    f = ferry_factory(conf)
    data = os.urandom(20_000)
    direct.put_object(Bucket=BUCKET, Key="pre/d/caf\u00e9 1.jpg", Body=data)
    path = "/static/d/caf\u00e9 1.jpg"
    # A link shorter than presign_ttl: the URL (and its max-age) end with the link.
    for ttl in (60, 5):
        expires = int(time.time()) + ttl
        target = link(path, expires=expires)
        r = request(f.port, path=target + "&utm_source=mail&X-Amz-Expires=999999")
        assert r.status == 302 and r.body == b"302 Found\n", r
        loc, q, start, valid = presign_parts(r)
        assert 0 < valid <= ttl and start + valid <= expires, (loc, expires)
        assert 0 < max_age(r) <= valid, r
        # Other query parameters never reach the Location.
        assert "utm" not in loc and "999999" not in loc and "sig=" not in loc, loc
        assert urlsplit(loc).path == "/" + BUCKET + "/pre/" + quote("d/caf\u00e9 1.jpg"), loc
        # The redirect works: followed into the store through the verifying proxy.
        assert fetch(loc) == (200, data)
    # A link longer than presign_ttl: presign_ttl stands.
    r = request(f.port, path=link(path, ttl=7 * 86400))
    _, q, _, valid = presign_parts(r)
    assert valid == 900 and max_age(r) == 810, r
    # Refusals redirect nowhere.
    assert_forbidden(request(f.port, path=quote(path)))
    assert_forbidden(request(f.port, path=link(path, expires=int(time.time()) - 1)), status=410)
    assert sorted(notes(f, 5)) == ["offload=expired"] + ["offload=presign"] * 3 + [
        "offload=unsigned"]


def test_presign_local_file_still_wins(ferry_factory, tmp_path, s3proxy):
    spool, conf = s3_conf(tmp_path, s3proxy.port)
    f = ferry_factory(conf)
    put(spool, "here.jpg", b"local")
    r = request(f.port, path=link("/static/here.jpg", ttl=120))
    assert r.status == 200 and r.body == b"local" and max_age(r) <= 120, r
    assert r.header("Location") is None, r


# ---- configuration and ferry sign ----

def check(tmp_path, text):
    conf = tmp_path / "check.conf"
    conf.write_text(text)
    return subprocess.run([FERRY_BIN, "check", "-c", str(conf)], capture_output=True, text=True)


def test_check_refuses_link_secret_with_public_redirect_and_previous_alone(tmp_path):
    s3 = ("[store]\ntype = s3\nendpoint = http://127.0.0.1:9\nbucket = b\nregion = us-east-1\n"
          "access_key = AK\nsecret_key = SK\n")
    for offload in ("redirect = public\npublic_url = https://cdn.example.com/o/\n",
                    "public_url = https://cdn.example.com/o/\n"):  # auto resolves to public
        p = check(tmp_path, s3 + f"[offload]\n{offload}link_secret = {SECRET}\n")
        assert p.returncode == 2, p
        assert ("key 'link_secret': signed links with a public redirect would let anyone "
                "bypass the check at public_url (use redirect = presign or proxy)") in p.stderr
        assert SECRET not in p.stderr + p.stdout
    p = check(tmp_path, f"[offload]\nlink_secret_previous = {OLD}\n")
    assert p.returncode == 2, p
    assert "key 'link_secret_previous': set without link_secret" in p.stderr, p
    assert OLD not in p.stderr + p.stdout
    p = check(tmp_path, s3 + f"[offload]\nredirect = presign\npublic_url = https://c.example/o/\n"
              f"link_secret = {SECRET}\nlink_secret_previous = {OLD}\n")
    assert p.returncode == 0, p


def test_ferry_sign_errors(tmp_path):
    conf = tmp_path / "plain.conf"
    conf.write_text(f"[offload]\nspool = {tmp_path}\n")
    p = subprocess.run([FERRY_BIN, "sign", "-c", str(conf), "/static/a.jpg"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and p.stdout == "", p
    assert f"ferry sign: no [offload] link_secret in '{conf}'" in p.stderr, p
    conf.write_text(f"[offload]\nspool = {tmp_path}\nlink_secret = {SECRET}\n")
    for path, why in (("/other/a.jpg", "is not under url_prefix '/static/'"),
                      ("static/a.jpg", "is not under url_prefix"),
                      ("/static//a.jpg", "names no file ferry serves"),
                      ("/static/../a.jpg", "names no file ferry serves"),
                      ("/static/", "names no file ferry serves")):
        p = subprocess.run([FERRY_BIN, "sign", "-c", str(conf), path],
                           capture_output=True, text=True)
        assert p.returncode == 2 and p.stdout == "" and why in p.stderr, (path, p)
    for args, why in ((["--ttl", "0"], "--ttl '0'"), (["--ttl", "1.5s"], "--ttl '1.5s'"),
                      (["--expires", "soon"], "--expires 'soon'"), ([], "usage: ferry sign")):
        p = subprocess.run([FERRY_BIN, "sign", "-c", str(conf), *args] +
                           (["/static/a.jpg"] if args else []), capture_output=True, text=True)
        assert p.returncode == 2 and why in p.stderr, (args, p)
    # --ttl counts from now.
    before = int(time.time())
    p = subprocess.run([FERRY_BIN, "sign", "-c", str(conf), "/static/a.jpg", "--ttl", "2h"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p
    e = int(re.search(r"expires=(\d+)", p.stdout).group(1))
    assert before + 7200 <= e <= int(time.time()) + 7200, p.stdout
    assert p.stdout == link("/static/a.jpg", expires=e) + "\n"


# ---- the README's snippets, run for real ----

def readme_snippets():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    section = text.split("## Signed, expiring links", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"```(python|php|js|perl)\n(.*?)```", section, re.S))


DRIVERS = {
    "python": ("{code}\nimport sys\nprint(signed_link(sys.argv[1], sys.argv[2], int(sys.argv[3])))\n",
               ["/usr/bin/python3"], ".py"),
    "php": ("{code}\necho signed_link($argv[1], $argv[2], (int)$argv[3]), \"\\n\";\n",
            ["php"], ".php"),
    "js": ("{code}\nconsole.log(signedLink(process.argv[2], process.argv[3], "
           "Number(process.argv[4])));\n", ["node"], ".js"),
    "perl": ("{code}\nprint signed_link(@ARGV), \"\\n\";\n", ["perl"], ".pl"),
}


def test_readme_has_all_four_snippets():
    assert set(readme_snippets()) == {"python", "php", "js", "perl"}


@pytest.mark.parametrize("lang", ["python", "php", "js", "perl"])
def test_readme_snippet_makes_links_ferry_accepts(ferry_factory, tmp_path, lang):
    if lang != "python" and not shutil.which(DRIVERS[lang][1][0]):
        pytest.fail(f"{DRIVERS[lang][1][0]} is not installed: run scripts/deps.sh --test")
    template, argv, ext = DRIVERS[lang]
    prog = tmp_path / ("snippet" + ext)
    prog.write_text(template.replace("{code}", readme_snippets()[lang]))
    f, spool, _ = start(ferry_factory, tmp_path)
    for i, name in enumerate(NAMES):
        put(spool, name, f"#{i}".encode())
        path = "/static/" + name
        p = subprocess.run(argv + [str(prog), path, SECRET, "600"], capture_output=True,
                           text=True, timeout=30)
        assert p.returncode == 0 and p.stderr == "", (lang, p)
        made = p.stdout.strip()
        e = int(re.search(r"expires=(\d+)", made).group(1))
        # Byte for byte what ferry sign prints for the same expiry...
        s = f.run_cli("sign", path, "--expires", str(e))
        assert s.returncode == 0 and made == s.stdout.strip(), (lang, name, made, s.stdout)
        # ...and ferry serves it.
        r = request(f.port, path=made)
        assert r.status == 200 and r.body == f"#{i}".encode(), (lang, name, r)
        assert 590 <= max_age(r) <= 600, r
