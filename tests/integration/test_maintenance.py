"""Maintenance mode end to end: the acknowledged switch under load, the exact
503 responses, exemptions, bypass cookies, persistence, schedules, drain, and
the admin socket's resistance to abuse."""
import bisect
import hashlib
import hmac
import json
import os
import re
import select
import socket
import subprocess
import threading
import time
from email.utils import parsedate_to_datetime

import pytest

from conftest import FERRY_BIN, http_raw, request

PAGE = "<!DOCTYPE html>\n<title>Maintenance</title>\n<p>{{message}}</p>\n<p>retry: {{retry_after}}</p>\n"


def make(ferry_factory, maint="", server="", page=PAGE, **kw):
    f = ferry_factory(conf="[server]\n" + server + "\n[maintenance]\npage = ./maintenance.html\n"
                      + maint, start=False, **kw)
    if page is not None:
        with open(os.path.join(f.workdir, "maintenance.html"), "w") as fh:
            fh.write(page)
    with open(os.path.join(f.root, "index.html"), "w") as fh:
        fh.write("live site\n")
    with open(os.path.join(f.root, "healthz"), "w") as fh:
        fh.write("ok\n")
    return f.start()


def cli(f, *args, check=True):
    p = f.run_cli(*args)
    if check and p.returncode != 0:
        raise AssertionError(f"ferry {' '.join(args)} exited {p.returncode}: {p.stderr}")
    return p


def status(f):
    return json.loads(cli(f, "status", "--json").stdout)


def get(f, path="/", method="GET", headers=None, body=b""):
    return request(f.port, method=method, path=path, headers=headers, body=body)


def is_maint(r):
    """A 503 from the maintenance handler, not from anything else that may say 503."""
    return r.status == 503 and r.header("X-Maintenance-Mode") == "1"


def is_live(r):
    """The site itself answered (make() writes "live site" as its index)."""
    return r.status == 200 and r.body == b"live site\n"


def assert_maint_headers(r, ctype, retry="300"):
    assert r.status == 503, r
    assert r.reason == "Service Unavailable"
    assert r.header("Content-Type") == ctype
    assert r.header("Retry-After") == retry
    assert r.header("X-Maintenance-Mode") == "1"
    assert r.header("Cache-Control") == "no-store"


def test_responses_exact(ferry_factory):
    f = make(ferry_factory)
    assert get(f).body == b"live site\n"
    msg = 'Upgrading <db> & "cache"'
    p = cli(f, "down", "--message", msg, "--retry-after", "120")
    assert "every worker has switched" in p.stdout

    html = get(f, headers={"Accept": "text/html,*/*;q=0.8"})
    assert_maint_headers(html, "text/html; charset=utf-8", "120")
    expect = PAGE.replace("{{message}}", "Upgrading &lt;db&gt; &amp; &quot;cache&quot;").replace(
        "{{retry_after}}", "120").encode()
    assert html.body == expect
    assert html.header("Content-Length") == str(len(expect))

    js = get(f, headers={"Accept": "application/json"})
    assert_maint_headers(js, "application/json", "120")
    assert js.body == (b'{"status":"maintenance","message":"Upgrading <db> & \\"cache\\"",'
                       b'"retry_after":120}\n')
    assert json.loads(js.body) == {"status": "maintenance", "message": msg, "retry_after": 120}

    txt = get(f, headers={"Accept": "text/plain"})
    assert_maint_headers(txt, "text/plain; charset=utf-8", "120")
    assert txt.body == (msg + "\n").encode()

    # No Accept at all: the page.
    assert get(f).body == expect

    # HEAD: same head, no body (read to the close: nothing follows the head).
    with f.connect() as s:
        raw = http_raw(s, b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, sep, after = raw.partition(b"\r\n\r\n")
    assert sep and after == b"", raw
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 503 Service Unavailable"
    hdrs = dict(line.split(": ", 1) for line in lines[1:])
    assert hdrs["Content-Length"] == str(len(expect))
    assert hdrs["Retry-After"] == "120" and hdrs["X-Maintenance-Mode"] == "1"
    assert hdrs["Cache-Control"] == "no-store"
    assert hdrs["Content-Type"] == "text/html; charset=utf-8"

    # Every method gets the 503, POST with a body too (not 405).
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
        r = get(f, method=method, headers={"Content-Length": "5", "Accept": "application/json"},
                body=b"hello")
        assert_maint_headers(r, "application/json", "120")
        assert json.loads(r.body)["status"] == "maintenance"

    # The default message when none is given.
    cli(f, "down")
    r = get(f, headers={"Accept": "text/plain"})
    assert_maint_headers(r, "text/plain; charset=utf-8", "300")
    assert r.body == b"This site is down for maintenance.\n"

    p = cli(f, "up")
    assert "every worker has switched" in p.stdout
    r = get(f)
    assert r.status == 200 and r.body == b"live site\n"
    assert r.header("X-Maintenance-Mode") is None


def test_page_reread_on_each_down(ferry_factory):
    f = make(ferry_factory)
    cli(f, "down")
    assert b"retry: 300" in get(f).body
    with open(os.path.join(f.workdir, "maintenance.html"), "w") as fh:
        fh.write("<p>second page {{message}}</p>")
    # Already down: the page in memory does not change behind the operator's back...
    assert b"retry: 300" in get(f).body
    # ...but the next `ferry down` reads it again.
    cli(f, "down", "--message", "m2")
    assert get(f).body == b"<p>second page m2</p>"


def test_until_gives_http_date_and_switches_off(ferry_factory):
    f = make(ferry_factory)
    t0 = time.time()
    cli(f, "down", "--until", "+1500ms", "--message", "short")
    r = get(f, headers={"Accept": "application/json"})
    assert r.status == 503
    when = parsedate_to_datetime(r.header("Retry-After")).timestamp()
    assert t0 + 0.5 <= when <= t0 + 3.5, (t0, r.header("Retry-After"))
    assert json.loads(r.body)["retry_after"] == r.header("Retry-After")
    st = status(f)["maintenance"]
    assert st["mode"] == "on" and "until" in st and st["message"] == "short"
    # Time must pass here: wait (bounded) for the server to switch itself off.
    deadline = time.monotonic() + 10
    while get(f).status == 503:
        assert time.monotonic() < deadline, "maintenance did not end at --until"
        time.sleep(0.05)
    assert time.time() >= st["until"] / 1000 - 0.05
    assert status(f)["maintenance"]["mode"] == "off"
    assert get(f).body == b"live site\n"


def test_scheduled_window(ferry_factory):
    f = make(ferry_factory)
    # A window of 3 s: long enough that a loaded machine still sees it open.
    p = cli(f, "down", "--at", "+1s", "--until", "+4s", "--json")
    reply = json.loads(p.stdout)
    assert reply["mode"] == "scheduled"
    at, until = reply["at"] / 1000, reply["until"] / 1000
    assert status(f)["maintenance"]["mode"] == "scheduled"
    seen_on = None
    deadline = time.monotonic() + 15
    while True:
        t = time.time()
        r = get(f)
        if r.status == 503 and seen_on is None:
            seen_on = t
            assert t >= at - 0.05, "switched on before --at"
        if r.status == 200 and seen_on is not None:
            assert time.time() >= until - 0.05
            break
        if r.status == 200 and seen_on is None:
            assert t < at + 2, "did not switch on at --at"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert status(f)["maintenance"]["mode"] == "off"


def test_exempt_paths_and_networks(ferry_factory):
    f = make(ferry_factory, maint="allow_paths = /healthz /public-api/\n")
    cli(f, "down")
    assert get(f, "/healthz").body == b"ok\n"
    assert is_maint(get(f, "/"))
    assert get(f, "/public-api/x").status == 404  # exempt: reaches the static handler
    assert is_maint(get(f, "/public-ap"))
    full = status(f)
    st = full["maintenance"]
    assert st["bypassed"] == 2 and st["served"] == 2
    assert full["server"]["pid"] == f.proc.pid and full["server"]["requests_total"] == 4
    text = cli(f, "status").stdout
    assert "maintenance: ON since " in text and "maintenance responses served: 2" in text

    g = make(ferry_factory, maint="allow_from = 10.0.0.0/8 ::1/128\n")
    cli(g, "down")
    assert is_maint(get(g))  # 127.0.0.1 is not in the list
    h = make(ferry_factory, maint="allow_from = 10.0.0.0/8 127.0.0.0/8\n")
    cli(h, "down")
    r = get(h)
    assert r.status == 200 and r.body == b"live site\n"


def test_exempt_paths_match_decoded_segments(ferry_factory):
    """allow_paths = /status exempts /status and what lies below it, matched on
    whole decoded segments: not /statusX, not a path with dot segments."""
    f = make(ferry_factory, maint="allow_paths = /status\n")
    os.makedirs(os.path.join(f.root, "status"))
    with open(os.path.join(f.root, "status", "index.html"), "w") as fh:
        fh.write("status page\n")
    with open(os.path.join(f.root, "statusX"), "w") as fh:
        fh.write("not exempt\n")
    cli(f, "down")
    for path in ["/status/", "/%73tatus/", "/status%2Findex.html", "/status/index.html"]:
        r = get(f, path)
        assert r.status == 200 and r.body == b"status page\n", (path, r)
        assert r.header("X-Maintenance-Mode") is None, path
    for path in ["/statusX", "/status%58", "/status/../index.html", "/status/%2e%2e/index.html",
                 "//status/", "/status//index.html"]:
        r = get(f, path)
        assert is_maint(r), (path, r)
        assert r.body.startswith(b"<!DOCTYPE html>"), (path, r)
    cli(f, "up")
    assert get(f, "/statusX").body == b"not exempt\n"


def test_missing_state_dir_is_created_at_start(ferry_factory, tmp_path):
    """A state_dir that does not exist used to let `ferry serve` start and made
    `ferry down` fail when it was needed; serve now creates it (0700, parents
    too) before it starts."""
    state = tmp_path / "var" / "lib" / "ferry"
    f = make(ferry_factory, server=f"state_dir = {state}\n")
    assert oct(os.stat(state).st_mode & 0o777) == "0o700"
    assert oct(os.stat(state.parent).st_mode & 0o777) == "0o700"
    p = cli(f, "down", "--message", "back soon")
    assert "maintenance: ON" in p.stdout, p.stdout
    with open(state / "maintenance.state", "rb") as fh:
        saved = fh.read()
    assert saved.startswith(b"ferry-maintenance 1\nmode=on\n") and b"back soon" in saved, saved
    r = get(f, "/")
    assert is_maint(r) and b"back soon" in r.body, r


def test_state_dir_that_cannot_be_created_refuses_to_start(ferry_factory, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    f = ferry_factory(conf=f"[server]\nstate_dir = {blocker}/state\n", start=False)
    with pytest.raises(RuntimeError, match="exited with 1 before ready"):
        f.start()
    assert f"cannot start: state_dir '{blocker}/state': cannot create it: a component is not " \
           "a directory" in f.log(), f.log()


def sign(secret, expires):
    mac = hmac.new(secret.encode(), f"ferry-bypass:{expires}".encode(), hashlib.sha256)
    return f"{expires}.{mac.hexdigest()}"


def test_bypass_cookie(ferry_factory):
    secret = "correct horse battery staple"
    f = make(ferry_factory, maint=f"bypass_secret = {secret}\nbypass_ttl = 1h\n")
    reply = json.loads(cli(f, "down", "--json").stdout)
    cookie = reply["bypass_cookie"]
    name, value = cookie.split("=", 1)
    assert name == "ferry_bypass"
    assert 3500 <= reply["bypass_expires"] - time.time() <= 3700
    assert value == sign(secret, reply["bypass_expires"])
    text = cli(f, "down").stdout
    assert "Cookie: ferry_bypass=" in text

    ok = get(f, headers={"Cookie": f"session=1; {cookie}"})
    assert ok.status == 200 and ok.body == b"live site\n"
    exp = int(value.split(".")[0])
    mac = value.split(".")[1]
    bad = [
        sign("wrong secret", exp),                          # forged with another key
        f"{exp + 3600}.{mac}",                              # expiry extended
        f"{exp}.{mac[:-1]}{'0' if mac[-1] != '0' else '1'}",  # MAC tampered
        sign(secret, int(time.time()) - 1),                 # expired
        f"{exp}.",                                          # truncated
        "garbage",
    ]
    for v in bad:
        r = get(f, headers={"Cookie": f"ferry_bypass={v}"})
        assert r.status == 503, v
    # A fresh, correctly signed cookie works: the format is what we think.
    assert get(f, headers={"Cookie": "ferry_bypass=" + sign(secret, int(time.time()) + 60)}
               ).status == 200
    st = status(f)["maintenance"]
    assert st["bypassed"] == 2 and st["served"] == len(bad)


def test_state_survives_restart(ferry_factory):
    f = make(ferry_factory)
    cli(f, "down", "--message", "persisted", "--retry-after", "77")
    assert f.stop() == 0
    # Change the page on disk: the restored window keeps what the operator saw.
    with open(os.path.join(f.workdir, "maintenance.html"), "w") as fh:
        fh.write("changed {{message}}")
    f.start()
    # The very first request after READY=1 already gets the 503.
    r = get(f, headers={"Accept": "application/json"})
    assert r.status == 503 and r.header("Retry-After") == "77"
    assert json.loads(r.body) == {"status": "maintenance", "message": "persisted",
                                  "retry_after": 77}
    st = status(f)["maintenance"]
    assert st["mode"] == "on" and st["message"] == "persisted"
    cli(f, "up")
    assert f.stop() == 0
    f.start()
    assert is_live(get(f))
    assert status(f)["maintenance"]["mode"] == "off"


def test_missing_page_changes_nothing(ferry_factory):
    f = make(ferry_factory, page=None)
    p = cli(f, "down", check=False)
    assert p.returncode == 1
    assert "cannot read maintenance page" in p.stderr and "No such file" in p.stderr
    assert status(f)["maintenance"]["mode"] == "off"
    assert is_live(get(f))
    os.mkdir(os.path.join(f.workdir, "maintenance.html"))  # unreadable as a page
    p = cli(f, "down", check=False)
    assert p.returncode == 1 and "cannot read maintenance page" in p.stderr
    assert is_live(get(f))
    # And while down, a failed `down` keeps the current window.
    os.rmdir(os.path.join(f.workdir, "maintenance.html"))
    with open(os.path.join(f.workdir, "maintenance.html"), "w") as fh:
        fh.write("first {{message}}")
    cli(f, "down", "--message", "one")
    os.unlink(os.path.join(f.workdir, "maintenance.html"))
    assert cli(f, "down", "--message", "two", check=False).returncode == 1
    assert get(f).body == b"first one"


def test_cli_without_server(ferry_factory):
    f = make(ferry_factory)
    f.stop()
    for cmd in (["down"], ["up"], ["status"]):
        p = cli(f, *cmd, check=False)
        assert p.returncode == 1, cmd
        assert "no server running" in p.stderr, p.stderr
    # A stale socket file left by a crash: the next start replaces it.
    s = socket.socket(socket.AF_UNIX)
    s.bind(f.admin_socket)
    s.close()
    p = cli(f, "status", check=False)
    assert p.returncode == 1 and "no server running" in p.stderr
    f.start()
    assert status(f)["maintenance"]["mode"] == "off"
    assert oct(os.stat(f.admin_socket).st_mode & 0o777) == "0o600"
    # A second server on the same admin socket refuses to start.
    g = FerryLike(f)
    assert g.returncode == 1 and "another ferry is running" in g.output


def FerryLike(f):
    """Run a second `ferry serve` with f's config; it must exit at once."""
    p = subprocess.run([FERRY_BIN, "serve", "-c", f.conf_path], cwd=f.workdir, capture_output=True,
                       text=True, timeout=10, env={**f.env, "LISTEN_FDS": "", "LISTEN_PID": ""})
    p.output = p.stdout + p.stderr
    return p


def admin_exchange(path, data, timeout=5):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(path)
    s.sendall(data)
    out = b""
    while True:
        try:
            b = s.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            break
        if not b:
            break
        out += b
        if data.endswith(b"\n") and out.count(b"\n") >= data.count(b"\n"):
            break
    s.close()
    return out


def test_admin_socket_abuse(ferry_factory):
    f = make(ferry_factory)
    path = f.admin_socket
    r = json.loads(admin_exchange(path, b"frobnicate\n"))
    assert r == {"ok": False, "error": "unknown command 'frobnicate'"}
    r = json.loads(admin_exchange(path, b"\x00\xff\xfe garbage\n"))
    assert r["ok"] is False and "malformed" in r["error"]
    r = json.loads(admin_exchange(path, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert r["ok"] is False and "malformed" in r["error"]
    r = json.loads(admin_exchange(path, b"down retry_after=abc\n"))
    assert r["ok"] is False and "bad numeric" in r["error"]
    r = json.loads(admin_exchange(path, b"down bogus=1\n"))
    assert r["ok"] is False and "unknown argument 'bogus'" in r["error"]
    # Numbers are digits only: no blanks, signs or encoded NULs for strtoll to skip.
    for bad in (b"%205", b"%00", b"+5", b"5%00"):
        r = json.loads(admin_exchange(path, b"down retry_after=" + bad + b"\n"))
        assert r["ok"] is False and "bad numeric" in r["error"], bad
    # A message with a NUL would be cut short wherever it is shown: refused.
    r = json.loads(admin_exchange(path, b"down message=a%00b\n"))
    assert r == {"ok": False, "error": "down: message contains a NUL byte"}
    assert status(f)["maintenance"]["mode"] == "off"
    # An oversized line is refused and the connection closed.
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    try:
        s.sendall(b"status " + b"a" * (1 << 20))
    except (BrokenPipeError, ConnectionResetError):
        pass
    s.settimeout(5)
    got = b""
    try:
        while not got.endswith(b"\n"):
            b = s.recv(4096)
            if not b:
                break
            got += b
    except ConnectionResetError:
        pass
    s.close()
    assert json.loads(got) == {"ok": False, "error": "request line too long (at most 16384 bytes)"}
    # Several requests on one connection, pipelined, each answered in order.
    out = admin_exchange(path, b"ping\nstatus\nnope\n").split(b"\n")
    assert json.loads(out[0]) == {"ok": True, "pong": True}
    assert json.loads(out[1])["maintenance"]["mode"] == "off"
    assert json.loads(out[2])["ok"] is False
    # A client that shuts down its side after the request still gets the reply.
    c = socket.socket(socket.AF_UNIX)
    c.connect(path)
    c.sendall(b"ping\nnope\n")
    c.shutdown(socket.SHUT_WR)
    c.settimeout(5)
    got = b""
    while True:
        b = c.recv(4096)
        if not b:
            break
        got += b
    c.close()
    lines = got.split(b"\n")
    assert json.loads(lines[0]) == {"ok": True, "pong": True} and lines[2] == b""
    assert json.loads(lines[1]) == {"ok": False, "error": "unknown command 'nope'"}
    # Many clients at once: past the limit each newcomer is served and the
    # client idle longest (the first ones) is told so and closed (issue 15);
    # HTTP is unaffected.
    clients = []
    for _ in range(80):
        c = socket.socket(socket.AF_UNIX)
        c.connect(path)
        clients.append(c)
    assert is_live(get(f))
    for c in clients[:80 - 64]:
        c.settimeout(5)
        data = c.recv(4096)
        assert json.loads(data) == {"ok": False, "error": "the admin socket is full: this "
                                    "connection, idle longest, was dropped to serve a new one"}
        assert c.recv(4096) == b""
    # The others are served: each answers a ping.
    for c in clients[80 - 64:]:
        c.sendall(b"ping\n")
    for c in clients[80 - 64:]:
        c.settimeout(5)
        assert json.loads(c.recv(4096)) == {"ok": True, "pong": True}
    for c in clients:
        c.close()
    # Clients that vanish mid-request change nothing either.
    for _ in range(20):
        c = socket.socket(socket.AF_UNIX)
        c.connect(path)
        c.sendall(b"stat")
        c.close()
    assert status(f)["maintenance"]["mode"] == "off"
    cli(f, "down")
    assert is_maint(get(f))
    cli(f, "up")
    assert is_live(get(f))
    assert f.proc.poll() is None


def test_drain(ferry_factory):
    f = make(ferry_factory, maint="drain_timeout = 1s\n")
    big = os.path.join(f.root, "big.bin")
    with open(big, "wb") as fh:
        fh.write(os.urandom(1 << 20) * 32)
    # A download the client does not read stays in flight.
    s = f.connect()
    s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    s.recv(100)  # the response has started
    t = time.monotonic()
    p = cli(f, "down", "--drain", "--json", check=False)
    took = time.monotonic() - t
    assert p.returncode == 1, p
    reply = json.loads(p.stdout)
    assert reply["drain"]["drained"] is False and reply["drain"]["inflight"] == 1
    assert 0.9 <= took < 5, took
    assert is_maint(get(f))  # maintenance stays on
    # Now drain while the client finishes: down --drain returns once it has.
    cli(f, "up")
    f2 = make(ferry_factory, maint="drain_timeout = 30s\n")
    with open(os.path.join(f2.root, "big.bin"), "wb") as fh:
        fh.write(os.urandom(1 << 20) * 32)
    s2 = f2.connect()
    s2.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    s2.recv(100)
    proc = subprocess.Popen([FERRY_BIN, "down", "-c", f2.conf_path, "--drain", "--json"],
                            cwd=f2.workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    # down returns before the drain only once the switch is acknowledged; the
    # drain itself waits for our download.
    deadline = time.monotonic() + 10
    while get(f2).status != 503:
        assert time.monotonic() < deadline
    assert proc.poll() is None, "down --drain returned with a request in flight"
    finished_at = None
    while True:
        b = s2.recv(1 << 20)
        if not b:
            finished_at = time.monotonic()
            break
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    reply = json.loads(out)
    assert reply["drain"]["drained"] is True and reply["drain"]["inflight"] == 0
    assert time.monotonic() >= finished_at
    s.close()
    s2.close()
    # An exempt request in flight (allow_paths /healthz) does not hold up
    # the drain, even one that started before maintenance was switched on.
    cli(f2, "up")
    os.rename(os.path.join(f2.root, "big.bin"), os.path.join(f2.root, "healthz"))
    s3 = f2.connect()
    s3.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert s3.recv(100).startswith(b"HTTP/1.1 200 ")
    assert status(f2)["maintenance"]["requests_inflight"] == 1
    reply = json.loads(cli(f2, "down", "--drain", "--json").stdout)
    assert reply["drain"]["drained"] is True
    s3.close()


def test_acknowledged_switch_under_load(ferry_factory):
    """32 keep-alive clients hammer the server while `ferry down`/`ferry up` are
    toggled 100 times; a request that starts after a command returned must see
    that command's state."""
    f = make(ferry_factory, server="max_connections = 1000\n", workers=2)
    nconn, toggles = 32, 100
    stop = threading.Event()
    results = [[] for _ in range(nconn)]  # (sent_at, answered_at, status)
    errors = []

    def client(i):
        try:
            s = f.connect()
            req = b"GET / HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\n\r\n"
            rest = b""
            while not stop.is_set():
                t = time.monotonic()
                s.sendall(req)
                buf = rest
                while b"\r\n\r\n" not in buf:
                    b = s.recv(65536)
                    if not b:
                        raise EOFError("server closed a keep-alive connection")
                    buf += b
                head, rest = buf.split(b"\r\n\r\n", 1)
                status = int(head[9:12])
                cl = 0
                for line in head.split(b"\r\n")[1:]:
                    k, v = line.split(b":", 1)
                    if k.lower() == b"content-length":
                        cl = int(v)
                while len(rest) < cl:
                    rest += s.recv(65536)
                body, rest = rest[:cl], rest[cl:]
                if status == 503:
                    assert body == b"This site is down for maintenance.\n", body
                elif status == 200:
                    assert body == b"live site\n", body
                results[i].append((t, time.monotonic(), status))
            s.close()
        except Exception as e:  # reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(nconn)]
    for t in threads:
        t.start()
    commands = []  # (issued_at, returned_at, expect_status)
    down_latency = []
    try:
        for _ in range(toggles):
            for cmd, expect in (("down", 503), ("up", 200)):
                t0 = time.monotonic()
                p = f.run_cli(cmd)
                t1 = time.monotonic()
                assert p.returncode == 0, p.stderr
                commands.append((t0, t1, expect))
                if cmd == "down":
                    down_latency.append(t1 - t0)
                # Hold each state a little so that requests start between one
                # command's return and the next one's start (this is load time,
                # not waiting for the switch).
                time.sleep(0.02)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors[:5]
    checked = {200: 0, 503: 0}
    bad = []
    returned = [c[1] for c in commands]
    for per in results:
        for t, t_end, st in per:
            k = bisect.bisect_left(returned, t) - 1
            if k < 0:
                continue  # before the first command returned
            # Bound by command k: sent after it returned, and answered before the
            # next command was issued. A request that overlaps a command may
            # legitimately see either state (and a client thread can be
            # preempted between taking the time and sending).
            if k + 1 < len(commands) and t_end >= commands[k + 1][0]:
                continue
            expect = commands[k][2]
            if st != expect:
                bad.append((t, t_end, st, expect, k))
            checked[expect] += 1
    assert not bad, f"{len(bad)} requests saw the wrong state, e.g. {bad[:5]}"
    assert checked[200] > 500 and checked[503] > 500, checked
    down_latency.sort()
    print(f"ferry down CLI latency under load: median {down_latency[50] * 1000:.1f} ms, "
          f"p99 {down_latency[98] * 1000:.1f} ms; requests checked {checked}")


def test_drain_answered_when_server_stops(ferry_factory):
    f = make(ferry_factory, maint="drain_timeout = 60s\n", server="shutdown_timeout = 500ms\n")
    with open(os.path.join(f.root, "big.bin"), "wb") as fh:
        fh.write(os.urandom(1 << 20) * 32)
    s = f.connect()
    s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    assert s.recv(100).startswith(b"HTTP/1.1 200 ")
    proc = subprocess.Popen([FERRY_BIN, "down", "-c", f.conf_path, "--drain"], cwd=f.workdir,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while get(f).status != 503:
        assert time.monotonic() < deadline
    f.stop()
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 1
    assert "NOT drained" in err and "the server is stopping" in err, (out, err)
    s.close()


def test_scheduled_window_survives_restart(ferry_factory):
    f = make(ferry_factory)
    reply = json.loads(cli(f, "down", "--at", "+1500ms", "--until", "+3s", "--message", "sched",
                           "--json").stdout)
    assert reply["mode"] == "scheduled"
    assert f.stop() == 0
    f.start()
    st = status(f)["maintenance"]
    assert st["mode"] == "scheduled" and st["message"] == "sched"
    assert st["at"] == reply["at"] and st["until"] == reply["until"]
    # Time must pass: the restored timers switch on at --at and off at --until.
    deadline = time.monotonic() + 10
    while get(f).status != 503:
        assert time.monotonic() < deadline, "the restored window never started"
        time.sleep(0.02)
    assert time.time() >= reply["at"] / 1000 - 0.05
    r = get(f, headers={"Accept": "text/plain"})
    assert r.status == 503 and r.body == b"sched\n"
    while get(f).status != 200:
        assert time.monotonic() < deadline, "the restored window never ended"
        time.sleep(0.02)
    assert time.time() >= reply["until"] / 1000 - 0.05
    # And a window that ended while the server was stopped stays ended.
    cli(f, "down", "--until", "+300ms")
    assert f.stop() == 0
    while time.time() * 1000 < status_until(f):
        time.sleep(0.02)
    f.start()
    assert is_live(get(f))
    assert status(f)["maintenance"]["mode"] == "off"


def status_until(f):
    with open(os.path.join(f.workdir, "run", "maintenance.state")) as fh:
        return int(re.search(r"^until=(\d+)$", fh.read(), re.M).group(1))


def test_allow_from_ipv6(ferry_factory):
    """allow_from matches IPv6 clients too (ferry listening on [::1])."""
    def start6(allow):
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        port = s.getsockname()[1]
        s.close()  # ferry binds it itself; a port race here is harmless in practice
        f = ferry_factory(conf=f"[server]\nlisten = [::1]:{port}\n[maintenance]\n"
                               f"page = ./maintenance.html\nallow_from = {allow}\n",
                          start=False, listen=False)
        with open(os.path.join(f.workdir, "maintenance.html"), "w") as fh:
            fh.write("down")
        with open(os.path.join(f.root, "index.html"), "w") as fh:
            fh.write("live site\n")
        f.start()
        f.port = port
        cli(f, "down")
        return f

    def get6(port):
        with socket.create_connection(("::1", port), timeout=5) as s:
            raw = http_raw(s, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return raw.split(b"\r\n", 1)[0], raw.split(b"\r\n\r\n", 1)[1]

    f = start6("10.0.0.0/8 ::1/128")
    assert get6(f.port) == (b"HTTP/1.1 200 OK", b"live site\n")
    g = start6("127.0.0.0/8 2001:db8::/32")
    assert get6(g.port) == (b"HTTP/1.1 503 Service Unavailable", b"down")
