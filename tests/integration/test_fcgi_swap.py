"""No failed request on swap (DESIGN.md, issue 10), end to end: HTTP clients
through ferry to FastCGI processes ferry started (tests/tools/fcgi_app on
libfcgi, and php-cgi), while `ferry swap` replaces them."""
import hashlib
import http.client
import json
import os
import random
import shutil
import signal
import stat
import threading
import time

import pytest

from conftest import scaled, wait_for
from backend_helpers import backend, backend_conf, reaped, set_command, wait_ready
from fcgi_client import fcgi_app_path, require

SWAPS = scaled(50, 10)  # the 50; fewer in the sanitizer pass

APP = fcgi_app_path()
PHP_CGI = shutil.which("php-cgi")



@pytest.fixture(autouse=True)
def _needs_app():
    require(APP, "tests/tools/fcgi_app (libfcgi-dev)")


def swap_conf(command, processes=4, **keys):
    """Timeouts generous enough for a loaded 2-core machine."""
    base = {"ready_timeout": "10s", "drain_timeout": "10s", "hold_timeout": "60s"}
    base.update(keys)
    return backend_conf(command, processes, **base)


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def sockets_in(d):
    return sorted(n for n in os.listdir(d) if stat.S_ISSOCK(os.lstat(os.path.join(d, n)).st_mode))


# Bodies from 0 bytes to 10 MiB, made once (the digest is what the app echoes).
SIZES = [0, 1, 1000, 65536, 300000, 1 << 20, 10 << 20]
BODIES = {n: os.urandom(n) for n in SIZES}
DIGESTS = {n: hashlib.sha256(b).hexdigest() for n, b in BODIES.items()}


def check_swap(f, r, i, load, after):
    """Swap i (result r) succeeded, its old processes are reaped, no socket
    file is left but the configured path (and the admin socket); then wait
    for `after` more good responses. Returns the reply."""
    assert r.returncode == 0, r.stderr
    reply = json.loads(r.stdout)
    for pid in reply["old_pids"]:
        assert reaped(pid, f.proc.pid), f"swap {i}: old process {pid} not reaped"
    assert sockets_in(os.path.join(f.workdir, "run")) == ["app.sock", "ferry.sock"]
    # Let the new generation take some requests before the next swap.
    n = len(load.seen)
    wait_for(lambda: len(load.seen) >= n + after, 60, "requests after the swap")
    return reply


class Load:
    """Clients sending a mix of fast, slow and POST (some chunked) requests on
    keep-alive connections until stopped; every response is checked."""

    def __init__(self, port, clients, seed=1, slow=(300, 2000)):
        self.port = port
        self.stop_ev = threading.Event()
        self.errors = []
        self.seen = []  # (version, pid) of every good response
        self.kinds = {}
        self.slow = slow
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(seed * 1000 + i,))
                        for i in range(clients)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(120)

    def one(self, conn, rnd):
        kind = rnd.choices(["fast", "slow", "post", "chunked"], weights=[5, 2, 3, 2])[0]
        size = 0
        headers = {}
        query = f"n={rnd.randint(0, 1 << 30)}"
        if kind == "slow":
            query += f"&sleep={rnd.randint(*self.slow)}"
        body = None
        if kind in ("post", "chunked"):
            size = rnd.choices(SIZES, weights=[3, 2, 3, 3, 2, 2, 1])[0]
            data = BODIES[size]
            if kind == "chunked":
                step = rnd.choice([1000, 65536, 1 << 20])
                body = (data[i:i + step] for i in range(0, len(data), step))
                conn.request("POST", f"/app/echo?{query}", body=body, encode_chunked=True,
                             headers={"Transfer-Encoding": "chunked"})
            else:
                conn.request("POST", f"/app/echo?{query}", body=data, headers=headers)
        else:
            conn.request("GET", f"/app/page?{query}")
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise AssertionError(f"{kind}: status {resp.status}: {data[:200]!r}")
        line = data.split(b"\n", 1)[0].decode()
        fields = dict(kv.split("=", 1) for kv in line.split(" ") if "=" in kv)
        if fields.get("sha256") != DIGESTS[size] or fields.get("length") != str(size):
            raise AssertionError(f"{kind}: wrong body echo for {size} bytes: {line}")
        if fields.get("query") != query:
            raise AssertionError(f"{kind}: wrong query echoed: {line} for {query}")
        if resp.getheader("X-App-Pid") != fields["pid"]:
            raise AssertionError(f"{kind}: header and body pids differ: {line}")
        with self.lock:
            self.seen.append((fields["version"], int(fields["pid"])))
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
        return resp.will_close

    def run(self, seed):
        rnd = random.Random(seed)
        conn = None
        while not self.stop_ev.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=90)
                if self.one(conn, rnd):
                    conn.close()
                    conn = None
            except Exception as e:  # noqa: BLE001 - every failure counts
                with self.lock:
                    self.errors.append(repr(e))
                if conn:
                    conn.close()
                conn = None
        if conn:
            conn.close()


@pytest.mark.lane2
def test_fifty_swaps_under_load_fail_no_request(ferry_factory):
    f = ferry_factory(swap_conf(f"{APP} --ready --version v0", processes=4), workers=2)
    wait_ready(f, 4)
    run_dir = os.path.join(f.workdir, "run")
    ferry_pid = f.proc.pid
    fds_before = fd_count(ferry_pid)
    load = Load(f.port, clients=16).start()
    old_pids, new_pids, durations = [], [], []
    try:
        time.sleep(1)  # every kind of request in flight before the first swap
        for i in range(1, SWAPS + 1):
            set_command(f, f"--version v{i - 1}", f"--version v{i}")
            t0 = time.monotonic()
            r = f.run_cli("swap", "--json", timeout=120)
            durations.append(time.monotonic() - t0)
            reply = check_swap(f, r, i, load, 8)
            assert reply["generation"] == i + 1
            old_pids += reply["old_pids"]
            new_pids.append(reply["new_pids"])
    finally:
        load.stop()
    assert not load.errors, f"{len(load.errors)} failed requests: {load.errors[:5]}"
    versions = {v for v, _ in load.seen}
    assert versions >= {f"v{i}" for i in range(0, SWAPS + 1)}, sorted(versions)
    assert set(load.kinds) == {"fast", "slow", "post", "chunked"}, load.kinds
    assert len(old_pids) == SWAPS * 4 and len(set(old_pids)) == SWAPS * 4
    for pid in old_pids:
        assert reaped(pid, ferry_pid)
    g = backend(f)
    assert g["swaps"] == SWAPS and g["swaps_failed"] == 0 and g["in_flight"] == 0
    assert sorted(g["generations"][0]["pids"]) == sorted(new_pids[-1])
    # ferry's own fds come back to where they were (client connections gone).
    wait_for(lambda: fd_count(ferry_pid) == fds_before, 10,
             f"ferry's fd count back to {fds_before} (now {fd_count(ferry_pid)})")
    assert sockets_in(run_dir) == ["app.sock", "ferry.sock"]
    print(f"swap durations: min {min(durations):.3f}s max {max(durations):.3f}s "
          f"mean {sum(durations) / len(durations):.3f}s; {len(load.seen)} requests")
    assert f.stop() == 0
    assert sockets_in(run_dir) == []


def test_a_swap_that_never_becomes_ready_fails_no_request(ferry_factory):
    f = ferry_factory(swap_conf(f"{APP} --ready --version v1", processes=3,
                                ready_timeout="1500ms", ready_grace="10s"))
    old = wait_ready(f, 3)["pids"]
    load = Load(f.port, clients=12, slow=(100, 600)).start()
    try:
        time.sleep(0.5)
        set_command(f, "--ready --version v1", "--never-ready")
        r = f.run_cli("swap")
        assert r.returncode == 1 and "not ready within ready_timeout (1500 ms)" in r.stderr
        n = len(load.seen)
        wait_for(lambda: len(load.seen) >= n + 20, 30, "requests after the failed swap")
        # The next good version still swaps in.
        set_command(f, "--never-ready", "--ready --version v2")
        r = f.run_cli("swap")
        assert r.returncode == 0, r.stderr
        n = len(load.seen)
        wait_for(lambda: len(load.seen) >= n + 20, 30, "requests after the second swap")
    finally:
        load.stop()
    assert not load.errors, load.errors[:5]
    pids_v1 = {p for v, p in load.seen if v == "v1"}
    assert pids_v1 <= set(old) and {v for v, _ in load.seen} == {"v1", "v2"}
    assert backend(f)["swaps_failed"] == 1 and backend(f)["swaps"] == 1


def test_requests_are_held_while_every_process_is_down_then_served(ferry_factory):
    f = ferry_factory(swap_conf(f"{APP} --ready", processes=3))
    old = wait_ready(f, 3)["pids"]
    for pid in old:
        os.kill(pid, signal.SIGKILL)
    # kill() returns before the process is gone: a request sent at once can be
    # accepted by a process the SIGKILL has woken but not yet ended, which then
    # dies holding it (a 502: its bytes reached the backend, so no retry). The
    # scenario is "ferry knows they are down": wait until it has reaped them.
    wait_for(lambda: all(reaped(pid, f.proc.pid) for pid in old), 10,
             "ferry reaped the killed processes")
    results, errors = [], []

    def get(i):
        try:
            c = http.client.HTTPConnection("127.0.0.1", f.port, timeout=30)
            c.request("GET", f"/app/x?i={i}")
            r = c.getresponse()
            results.append((r.status, r.read()))
            c.close()
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=get, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert [s for s, _ in results] == [200] * 12, results
    pids = {int(b.split(b"pid=")[1].split()[0]) for _, b in results}
    assert not pids & set(old), "a killed process answered"
    for pid in old:
        assert reaped(pid, f.proc.pid)
    assert backend(f)["respawns"] == 3


PHP_FRONT = """<?php
header('X-Php-Pid: ' . getmypid());
header('X-Set-By: php');
$body = file_get_contents('php://input');
echo 'pid=', getmypid(), ' method=', $_SERVER['REQUEST_METHOD'], ' q=', $_GET['q'] ?? '',
     ' a=', $_POST['a'] ?? '', ' len=', strlen($body), ' sha256=', hash('sha256', $body), "\\n";
"""


def test_php_cgi_started_by_ferry_serves_and_swaps(ferry_factory, tmp_path):
    require(PHP_CGI, "php-cgi")
    front = tmp_path / "index.php"
    front.write_text(PHP_FRONT)
    cmd = f"{PHP_CGI} -d cgi.force_redirect=0 -d post_max_size=64M -d memory_limit=256M"
    env = {k: v for k, v in os.environ.items() if k != "PHP_FCGI_CHILDREN"}
    f = ferry_factory(swap_conf(cmd, processes=2, script_filename=str(front)), env=env)
    old = wait_ready(f, 2)["pids"]

    def call(method, path, body=None, headers=None):
        c = http.client.HTTPConnection("127.0.0.1", f.port, timeout=30)
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        c.close()
        return r, data.decode()

    r, text = call("GET", "/app/index.php?q=hello")
    assert r.status == 200 and " q=hello " in text and r.getheader("X-Set-By") == "php", text
    assert int(r.getheader("X-Php-Pid")) in old
    r, text = call("POST", "/app/form", "a=b%20c",
                   {"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 200 and "method=POST" in text and " a=b c " in text, text
    big = BODIES[10 << 20]
    r, text = call("POST", "/app/upload", big, {"Content-Type": "application/octet-stream"})
    assert r.status == 200 and f"len={len(big)} sha256={DIGESTS[10 << 20]}" in text, text

    set_command(f, "memory_limit=256M", "memory_limit=257M")
    r = f.run_cli("swap", "--json")
    assert r.returncode == 0, r.stderr + f.log()
    reply = json.loads(r.stdout)
    assert sorted(reply["old_pids"]) == sorted(old)
    for pid in old:
        assert reaped(pid, f.proc.pid)
    log = f.log()
    # Idle php-cgi ends on SIGUSR1 by itself: no SIGTERM was needed.
    assert "did not exit within drain_timeout" not in log
    for _ in range(4):
        r, text = call("GET", "/app/?q=after")
        assert r.status == 200 and int(r.getheader("X-Php-Pid")) in reply["new_pids"], text


def test_down_drain_waits_for_backend_requests_in_flight(ferry_factory):
    f = ferry_factory(swap_conf(f"{APP} --ready", processes=2))
    with open(os.path.join(f.workdir, "maintenance.html"), "w") as fh:
        fh.write("<h1>down</h1>")
    wait_ready(f, 2)
    done = {}

    def slow():
        c = http.client.HTTPConnection("127.0.0.1", f.port, timeout=30)
        c.request("GET", "/app/slow?sleep=1500")
        r = c.getresponse()
        done["status"], done["body"], done["at"] = r.status, r.read(), time.monotonic()
        c.close()

    t = threading.Thread(target=slow)
    started = time.monotonic()
    t.start()
    wait_for(lambda: backend(f)["in_flight"] == 1, 5, "the backend request in flight")
    asked = time.monotonic()
    r = f.run_cli("down", "--drain", "--json")
    returned = time.monotonic()
    t.join()
    assert r.returncode == 0, r.stderr
    drain = json.loads(r.stdout)["drain"]
    # It waited for the rest of the backend's 1.5 s (less the CLI's own start,
    # slow under ASan; a drain that does not wait reports about 0).
    left_ms = (started + 1.5 - asked) * 1000
    assert drain["drained"] is True and drain["waited_ms"] >= left_ms - 400, (drain, left_ms)
    assert done["status"] == 200 and b"sleep=1500" in done["body"]
    # down returned only once the backend had answered (it sleeps 1.5 s).
    assert returned - started >= 1.45, returned - started
    assert backend(f)["in_flight"] == 0
    assert f.run_cli("up").returncode == 0


def test_status_shows_requests_held_for_a_slot(ferry_factory):
    f = ferry_factory(swap_conf(f"{APP} --ready", processes=1))
    wait_ready(f, 1)
    got = []

    def get(q):
        c = http.client.HTTPConnection("127.0.0.1", f.port, timeout=30)
        c.request("GET", f"/app/x?{q}")
        r = c.getresponse()
        got.append((r.status, r.read()))
        c.close()

    slow = threading.Thread(target=get, args=("sleep=1500",))
    slow.start()
    wait_for(lambda: backend(f)["in_flight"] == 1, 5, "the slow request in flight")
    fast = threading.Thread(target=get, args=("fast=1",))
    fast.start()
    wait_for(lambda: backend(f)["held"] == 1, 5, "the second request held")
    assert backend(f)["capacity"] == 1
    assert "held 1," in f.run_cli("status").stdout
    slow.join()
    fast.join()
    assert sorted(s for s, _ in got) == [200, 200]
    b = backend(f)
    assert b["held"] == 0 and b["in_flight"] == 0 and b["served"] == 2, b


# ---- one socket per generation (issue 10: unmodified libfcgi apps) ----

UPLOAD_SIZES = [1 << 20, 2 << 20, 5 << 20, 10 << 20]
for _n in UPLOAD_SIZES:
    BODIES.setdefault(_n, os.urandom(_n))
    DIGESTS.setdefault(_n, hashlib.sha256(BODIES[_n]).hexdigest())


class Uploads(Load):
    """Clients POSTing 1-10 MiB bodies until stopped, half of them slowly (64
    KiB pieces with pauses), so that some are always in the middle of their
    body, i.e. the application is blocked reading STDIN, when a swap signals
    the old generation. Every response is checked: status, length, digest."""

    def one(self, rnd, slow):
        size = rnd.choice(UPLOAD_SIZES)
        data = BODIES[size]
        if slow:
            step = 65536

            def pieces():
                for i in range(0, len(data), step):
                    time.sleep(0.008)
                    yield data[i:i + step]
            body = pieces()
        else:
            body = data
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=90)
        try:
            conn.request("POST", f"/app/upload?slow={int(slow)}", body=body,
                         headers={"Content-Length": str(size)})
            resp = conn.getresponse()
            got = resp.read()
        finally:
            conn.close()
        line = got.split(b"\n", 1)[0].decode(errors="replace")
        fields = dict(kv.split("=", 1) for kv in line.split(" ") if "=" in kv)
        if resp.status != 200:
            raise AssertionError(f"{size} bytes: status {resp.status}: {got[:200]!r}")
        if fields.get("length") != str(size) or fields.get("sha256") != DIGESTS[size]:
            raise AssertionError(f"{size} bytes (slow={slow}): the app saw {line}")
        with self.lock:
            self.seen.append((fields["version"], int(fields["pid"])))

    def run(self, seed):
        rnd = random.Random(seed)
        while not self.stop_ev.is_set():
            try:
                self.one(rnd, slow=seed % 2 == 0)
            except Exception as e:  # noqa: BLE001 - every failure counts
                with self.lock:
                    self.errors.append(repr(e))


def test_swaps_during_uploads_to_an_unmodified_libfcgi_app(ferry_factory):
    """The app is plain libfcgi (SIGUSR1 is libfcgi's handler, without
    SA_RESTART, and nothing is masked): a stop signal that reaches a process
    reading a request body cuts the body short and the app answers 200 with
    the wrong digest. ferry must signal a generation only once it is idle."""
    swaps = scaled(10, 5)
    env = dict(os.environ, FCGI_APP_PLAIN="1")
    f = ferry_factory(swap_conf(f"{APP} --version v0", processes=3), env=env)
    wait_ready(f, 3)
    run_dir = os.path.join(f.workdir, "run")
    ferry_pid = f.proc.pid
    up = Uploads(f.port, clients=6).start()
    old_pids = []
    try:
        wait_for(lambda: len(up.seen) >= 3, 60, "first uploads")
        for i in range(1, swaps + 1):
            set_command(f, f"--version v{i - 1}", f"--version v{i}")
            r = f.run_cli("swap", "--json", timeout=120)
            old_pids += check_swap(f, r, i, up, 3)["old_pids"]
    finally:
        up.stop()
    assert not up.errors, f"{len(up.errors)} failed uploads: {up.errors[:5]}"
    assert len(old_pids) == swaps * 3 and all(reaped(p, ferry_pid) for p in old_pids)
    assert {v for v, _ in up.seen} >= {f"v{i}" for i in range(1, swaps + 1)}
    assert "sending stop_signal anyway" not in f.log()
    assert sockets_in(run_dir) == ["app.sock", "ferry.sock"]
    assert f.stop() == 0
    assert sockets_in(run_dir) == []


def get_page(port, path):
    """GET path on a connection of its own: (status, body)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def test_the_socket_path_accepts_connections_throughout_swaps(ferry_factory):
    """Each generation listens on its own socket; the new one's is renamed
    over the configured path, so the path never goes missing."""
    env = dict(os.environ, FCGI_APP_PLAIN="1")
    f = ferry_factory(swap_conf(f"{APP} --version v0", processes=2), env=env)
    wait_ready(f, 2)
    path = os.path.join(f.workdir, "run", "app.sock")
    stop = threading.Event()
    counts = {"ok": 0, "failed": []}

    def poll_connect():
        import socket
        while not stop.is_set():
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
                counts["ok"] += 1
            except OSError as e:
                counts["failed"].append(repr(e))
            finally:
                s.close()

    t = threading.Thread(target=poll_connect)
    t.start()
    try:
        for i in range(1, 6):
            set_command(f, f"--version v{i - 1}", f"--version v{i}")
            r = f.run_cli("swap", "--json", timeout=60)
            assert r.returncode == 0, r.stderr
    finally:
        stop.set()
        t.join()
    assert counts["failed"] == [], counts["failed"][:5]
    assert counts["ok"] > 100, counts
    status, body = get_page(f.port, "/app/x")
    assert status == 200 and body.startswith(b"version=v5 ")


def test_a_never_ready_generation_leaves_no_socket_file(ferry_factory):
    f = ferry_factory(swap_conf(f"{APP} --ready --version v1", processes=2,
                                ready_timeout="1500ms", ready_grace="10s"))
    wait_ready(f, 2)
    run_dir = os.path.join(f.workdir, "run")
    set_command(f, "--ready --version v1", "--never-ready")
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", f.run_cli("swap")))
    t.start()
    # While it starts, the new generation listens on its own socket.
    wait_for(lambda: "app.sock.swap.2" in sockets_in(run_dir), 5, "the new generation's socket")
    t.join()
    r = result["r"]
    assert r.returncode == 1 and "not ready within ready_timeout (1500 ms)" in r.stderr
    assert sockets_in(run_dir) == ["app.sock", "ferry.sock"]
    status, body = get_page(f.port, "/app/x")
    assert status == 200 and body.startswith(b"version=v1 ")
    assert f.stop() == 0
    assert sockets_in(run_dir) == []


def test_old_generation_busy_past_drain_timeout_is_signalled_anyway(ferry_factory):
    """The old generation is signalled once idle, or at drain_timeout at the
    latest (logged); the app here finishes its request after the signal."""
    f = ferry_factory(swap_conf(f"{APP} --ready --version v1", processes=1,
                                drain_timeout="1s"))
    wait_ready(f, 1)
    got = {}
    t = threading.Thread(target=lambda: got.setdefault("r", get_page(f.port, "/app/x?sleep=2500")))
    t.start()
    wait_for(lambda: backend(f)["in_flight"] == 1, 5, "the slow request in flight")
    set_command(f, "--version v1", "--version v2")
    t0 = time.monotonic()
    swap = {}
    st = threading.Thread(target=lambda: swap.setdefault("r", f.run_cli("swap", "--json")))
    st.start()
    # While the old generation drains, status shows its request in flight.
    wait_for(lambda: any(g["state"] == "draining" and g["in_flight"] == 1
                         for g in backend(f)["generations"]), 5, "a draining generation")
    st.join()
    t.join()
    r = swap["r"]
    assert r.returncode == 0, r.stderr
    assert got["r"][0] == 200 and got["r"][1].startswith(b"version=v1 ")
    assert time.monotonic() - t0 >= 1.0
    assert "still has 1 request(s) in flight after drain_timeout (1000 ms): " \
           "sending stop_signal anyway" in f.log()
    assert sockets_in(os.path.join(f.workdir, "run")) == ["app.sock", "ferry.sock"]
