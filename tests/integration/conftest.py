"""Fixtures that start the real ferry binary.

The fixture binds 127.0.0.1:0 itself and hands the socket to ferry as fd 3
(LISTEN_FDS, systemd style), then waits for READY=1 on a NOTIFY_SOCKET it
created: no sleeps, no port races. If ferry dies before it is ready the test
fails at once with ferry's log; every test that fails prints the log.
"""
import hashlib
import os
import select
import signal
import socket
import subprocess
import time

import sys
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "s3"))
# The S3 store fixtures, shared by every module (the RGW cluster once per session).
import s3fixtures  # noqa: E402
from s3fixtures import (direct, rgw_cluster, rgw_proxy, s3backend, s3proxy,  # noqa: E402,F401
                        s3rver, s3rver_proxy, store)
FERRY_BIN = os.environ.get("FERRY_BIN", os.path.join(ROOT, "build", "ferry"))
# ferry-test: ferry plus the test-only /_test/ relay handler (tests/tools/).


def _sanitized(path):
    try:
        with open(path, "rb") as f:
            return b"AddressSanitizer" in f.read()
    except OSError:
        return False


# The sanitizer pass (scripts/test.sh runs every suite again on an ASan+UBSan
# build) looks for memory and UB errors, not for load behaviour: the long load
# tests run scaled down there (scaled()), and the S3 suites run against s3rver
# only (RGW's semantics were checked by the normal pass), so that CI stays
# within its time budget.
SANITIZED = _sanitized(FERRY_BIN)


def scaled(normal, sanitized):
    """A load test's size: normal in the normal build, sanitized under ASan."""
    return sanitized if SANITIZED else normal


FERRY_TEST_BIN = os.environ.get("FERRY_TEST_BIN",
                                os.path.join(ROOT, "build", "tests", "tools", "ferry-test"))


class FerryProcess:
    """One running `ferry serve` with its own config, root and sockets."""

    def __init__(self, workdir, conf="", workers=2, env=None, listen=True, args=None,
                 preexec_fn=None, binary=None):
        self.binary = binary or FERRY_BIN
        self.workdir = str(workdir)
        self.conf_path = os.path.join(self.workdir, "ferry.conf")
        self.log_path = os.path.join(self.workdir, "ferry.log")
        self.root = os.path.join(self.workdir, "public")
        os.makedirs(self.root, exist_ok=True)
        os.makedirs(os.path.join(self.workdir, "run"), exist_ok=True)
        self.admin_socket = os.path.join(self.workdir, "run", "ferry.sock")
        text = conf
        if "[server]" not in text:
            text = "[server]\n" + text
        # Defaults that keep tests self-contained; a test's own keys come first
        # and win because inih reports duplicates as errors, so only add missing ones.
        defaults = {
            "root": self.root,
            "workers": str(workers),
            "admin_socket": self.admin_socket,
            "state_dir": os.path.join(self.workdir, "run"),
            "access_log": os.path.join(self.workdir, "access.log"),
        }
        server_lines = []
        for k, v in defaults.items():
            if not _has_key(text, "server", k):
                server_lines.append(f"{k} = {v}")
        text = text.replace("[server]\n", "[server]\n" + "\n".join(server_lines) + "\n", 1)
        with open(self.conf_path, "w") as f:
            f.write(text)
        self.env = dict(os.environ)
        self.env.update(env or {})
        self.listen = listen
        self.args = args or []
        # Run in the child before exec (e.g. to lower RLIMIT_NOFILE).
        self.preexec_fn = preexec_fn
        self.proc = None
        self.sock = None
        self.port = None
        # ferry_factory fails the test when a ferry still running at teardown
        # does not exit 0 on SIGTERM; a test that kills ferry on purpose sets False.
        self.expect_clean_exit = True

    def start(self, timeout=10.0):
        pass_fds = []
        env = dict(self.env)
        if self.listen:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind(("127.0.0.1", 0))
            self.sock.listen(1024)
            self.port = self.sock.getsockname()[1]
            pass_fds = [self.sock.fileno()]
        notify_path = os.path.join(self.workdir, "notify.sock")
        if os.path.exists(notify_path):
            os.unlink(notify_path)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(notify_path)
        env["NOTIFY_SOCKET"] = notify_path
        cmd = [self.binary, "serve", "-c", self.conf_path] + self.args
        if self.listen:
            # LISTEN_PID must be ferry's own pid: the shell execs ferry in place.
            # bash, not sh: dash cannot redirect from fds above 9, and under
            # pytest the socket's fd is often 10 or more.
            fd = self.sock.fileno()
            move = "" if fd == 3 else f"exec 3<&{fd} {fd}<&-; "
            shell = move + 'export LISTEN_PID=$$ LISTEN_FDS=1; exec "$@"'
            cmd = ["/bin/bash", "-c", shell, "bash"] + cmd
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=self.workdir, env=env, pass_fds=pass_fds,
                                     stdout=self.logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, preexec_fn=self.preexec_fn)
        try:
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError("ferry did not report READY=1 in time\n" + self.log())
                r, _, _ = select.select([notify], [], [], min(left, 0.05))
                if r:
                    msg = notify.recv(4096).decode()
                    if "READY=1" in msg.split("\n"):
                        break
                if self.proc.poll() is not None:
                    raise RuntimeError(f"ferry exited with {self.proc.returncode} before ready\n"
                                       + self.log())
        finally:
            notify.close()
        return self

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def access_log(self):
        try:
            with open(os.path.join(self.workdir, "access.log"), "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        """Stop ferry and return its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.sock:
            self.sock.close()
            self.sock = None
        self.logf.close()
        return self.proc.returncode

    def stop_checked(self):
        """Stop with SIGTERM and fail unless ferry exited 0 without sanitizer
        reports (for fixtures that manage a FerryProcess themselves)."""
        code = self.stop()
        log = self.log()
        if code != 0 or sanitizer_reports(log):
            pytest.fail(f"ferry exited {code}; sanitizer reports: {sanitizer_reports(log)}\n"
                        + log, pytrace=False)

    def run_cli(self, *args, timeout=30.0):
        """Run `ferry ARGS -c conf` and return the CompletedProcess."""
        argv = [self.binary, args[0], "-c", self.conf_path] + list(args[1:])
        return subprocess.run(argv, cwd=self.workdir, env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def connect(self, timeout=5.0):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s


SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer")


def sanitizer_reports(log_text):
    """The sanitizer markers (ASan, UBSan, LSan) found in a ferry log."""
    return [m for m in SANITIZER_MARKERS if m in log_text]


def _has_key(text, section, key):
    cur = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            cur = line.strip("[]")
        elif cur == section and "=" in line and line.split("=", 1)[0].strip() == key:
            return True
    return False


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "s3backend" in callspec.params:
        rep.s3store = callspec.params["s3backend"]


# ---- S3 stores (tests/s3/s3fixtures.py): each S3 test runs on every store it can ----

S3_RESTRICTED = []  # (test, stores it runs on, why not the others)
S3_COUNTS = {}  # store -> {outcome: n}


def pytest_configure(config):
    config.addinivalue_line("markers", "lane2: a long test that mostly waits (slow backend "
                            "requests, kill -9 cycles, 1,000 files through the proxy); "
                            "scripts/test.sh runs these in a second pytest beside the rest")
    config.addinivalue_line("markers", "s3stores(*stores, reason): the only S3 stores "
                            "(s3rver, rgw-proxy, rgw) this test can run on, and why")


def pytest_generate_tests(metafunc):
    if "s3backend" not in metafunc.fixturenames:
        return
    stores, reason = s3fixtures.stores_for(metafunc)
    if SANITIZED and "s3rver" in stores and len(stores) > 1:
        stores = ("s3rver",)
        reason = "sanitizer build: RGW's semantics are checked in the normal build"
    if reason:
        S3_RESTRICTED.append((metafunc.definition.nodeid, stores, reason))
    metafunc.parametrize("s3backend", stores, indirect=True, ids=stores)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    # The 1,000-file never-neither runs on s3rver (test_offload_proxy.py) are
    # long waits too: second lane (before -m selects).
    for item in items:
        callspec = getattr(item, "callspec", None)
        if (item.originalname == "test_never_neither_under_load" and callspec is not None
                and callspec.params.get("s3backend") == "s3rver"):
            item.add_marker(pytest.mark.lane2)


def pytest_runtest_logreport(report):
    store = getattr(report, "s3store", None)
    if store is None:
        return
    counts = S3_COUNTS.setdefault(store, {})
    if report.when == "call" or (report.when == "setup" and not report.passed):
        counts[report.outcome] = counts.get(report.outcome, 0) + 1


def pytest_terminal_summary(terminalreporter):
    if not S3_COUNTS and not S3_RESTRICTED:
        return
    tr = terminalreporter
    tr.section("S3 stores")
    for store in s3fixtures.STORES:
        counts = S3_COUNTS.get(store, {})
        text = ", ".join(f"{n} {o}" for o, n in sorted(counts.items())) or "none"
        tr.write_line(f"{store:10} {sum(counts.values()):4} tests: {text}")
    for nodeid, stores, reason in S3_RESTRICTED:
        tr.write_line(f"only on {'/'.join(stores)}: {nodeid}: {reason}")
    stats = s3fixtures.RGW_STATS
    if stats:
        rss = lambda k: sum(stats.get(k, {}).values()) // 1024  # noqa: E731
        tr.write_line(f"RGW cluster: started in {stats['start_seconds']:.1f} s "
                      f"{stats['stages']}, RSS {rss('rss_start_kib')} MiB at start, "
                      f"{rss('rss_end_kib')} MiB at the end {stats.get('rss_end_kib')}")


@pytest.fixture
def ferry_factory(tmp_path, request):
    """Start ferry processes with custom configs; all are stopped afterwards and
    their logs printed when the test failed."""
    started = []

    def make(conf="", start=True, subdir=None, **kw):
        wd = tmp_path / (subdir or f"ferry{len(started)}")
        wd.mkdir(exist_ok=True)
        f = FerryProcess(wd, conf, **kw)
        started.append(f)
        if start:
            f.start()
        return f

    yield make
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    problems = []
    for f in started:
        running = f.proc is not None and f.proc.poll() is None
        code = f.stop()
        if failed:
            print(f"---- ferry log ({f.workdir}) ----\n{f.log()}")
        # A ferry the test left running must stop cleanly on SIGTERM; one the
        # test stopped itself was checked (or deliberately killed) by the test.
        if running and f.expect_clean_exit and code != 0:
            problems.append(f"ferry ({f.workdir}) exited {code} after SIGTERM, not 0")
        found = sanitizer_reports(f.log())
        if found:
            problems.append(f"ferry ({f.workdir}) log has sanitizer reports: {found}")
    if problems and not failed:
        logs = "\n".join(f"---- ferry log ({f.workdir}) ----\n{f.log()}" for f in started)
        pytest.fail("\n".join(problems) + "\n" + logs, pytrace=False)


@pytest.fixture
def ferry(ferry_factory):
    """A ferry on built-in defaults plus the test paths, with 2 workers."""
    return ferry_factory()


def http_raw(sock, data, timeout=5.0):
    """Send raw bytes and read until the server closes the connection."""
    sock.settimeout(timeout)
    if data:
        sock.sendall(data)
    chunks = []
    while True:
        try:
            b = sock.recv(65536)
        except ConnectionResetError:
            break
        if not b:
            break
        chunks.append(b)
    return b"".join(chunks)


class Response:
    def __init__(self, status, reason, headers, body, version):
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (name, value) in order
        self.body = body
        self.version = version

    def header(self, name):
        vals = [v for k, v in self.headers if k.lower() == name.lower()]
        if len(vals) > 1:
            raise AssertionError(f"header {name} appears {len(vals)} times")
        return vals[0] if vals else None

    def __repr__(self):
        return f"<Response {self.status} {self.headers} {self.body[:80]!r}>"


def parse_head(head):
    """A Response (without body) from a response head without its blank line."""
    lines = head.decode("latin-1").split("\r\n")
    version, status, *reason = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        k, v = line.split(":", 1)
        headers.append((k, v.strip()))
    return Response(int(status), reason[0] if reason else "", headers, b"", version)


def read_head(sock, buf=b""):
    """Read one response head (buf: bytes already received); returns
    (Response without body, the bytes that followed the head)."""
    while b"\r\n\r\n" not in buf:
        b = sock.recv(65536)
        if not b:
            raise EOFError(f"connection closed mid-head: {buf!r}")
        buf += b
    head, rest = buf.split(b"\r\n\r\n", 1)
    return parse_head(head), rest


def read_hashed(sock, size, first=b""):
    """Read a body of size bytes (first: its bytes already received) without
    keeping it; returns its SHA-256 digest. Fails if the peer closes early."""
    h = hashlib.sha256(first)
    n = len(first)
    while n < size:
        chunk = sock.recv(1 << 20)
        assert chunk, f"response cut at {n} of {size} bytes"
        h.update(chunk)
        n += len(chunk)
    assert n == size, f"{n} bytes instead of {size}"
    return h.digest()


def read_response(sock, head_request=False, timeout=5.0):
    """Read exactly one response from sock (Content-Length or close framing)."""
    sock.settimeout(timeout)
    resp, rest = read_head(sock)
    cl = resp.header("Content-Length")
    if head_request or resp.status in (204, 304) or 100 <= resp.status < 200:
        resp.body = b""
        return resp, rest
    if cl is not None:
        n = int(cl)
        while len(rest) < n:
            b = sock.recv(max(65536, n - len(rest)))
            if not b:
                raise EOFError("connection closed mid-body")
            rest += b
        resp.body = rest[:n]
        return resp, rest[n:]
    while True:
        b = sock.recv(65536)
        if not b:
            break
        rest += b
    resp.body = rest
    return resp, b""


def request(port, method="GET", path="/", headers=None, body=b"", version="HTTP/1.1",
            timeout=5.0):
    """One request on a fresh connection (Connection: close); returns Response."""
    hdrs = {"Host": "localhost", "Connection": "close"}
    hdrs.update(headers or {})
    lines = [f"{method} {path} {version}"] + [f"{k}: {v}" for k, v in hdrs.items()]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        resp, _ = read_response(s, head_request=(method == "HEAD"), timeout=timeout)
        return resp


def raw_exchange(port, data, head_request=False, timeout=5.0):
    """Send raw bytes on a fresh connection, read one response, then report
    whether the server closed the connection afterwards.

    Returns (Response, closed, extra): closed is True when recv returned b''
    (or the connection was reset) within timeout after the response; extra is
    any bytes that followed the response before that."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        resp, rest = read_response(s, head_request=head_request, timeout=timeout)
        closed, extra = wait_closed(s, timeout=timeout, rest=rest)
        return resp, closed, extra


def wait_closed(sock, timeout=5.0, rest=b""):
    """Read until the peer closes; returns (closed, bytes read). closed is
    False when nothing ended the connection within timeout."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    data = rest
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False, data
        sock.settimeout(left)
        try:
            b = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return True, data
        except socket.timeout:
            return False, data
        if not b:
            return True, data
        data += b


def wait_for(pred, timeout, what):
    """Poll pred() until true within a bounded deadline (used only for effects
    ferry produces asynchronously and announces nowhere else)."""
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def free_port():
    """A loopback port that was free a moment ago (bind to 0, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ResponseReader:
    """Reads consecutive responses from one socket, keeping the bytes that
    arrived after a response for the next one (pipelining)."""

    def __init__(self, sock, timeout=5.0, buffered=b""):
        self.sock = sock
        self.timeout = timeout
        self.buf = buffered

    def _fill(self):
        self.sock.settimeout(self.timeout)
        b = self.sock.recv(65536)
        if not b:
            raise EOFError(f"connection closed; buffered {self.buf[:200]!r}")
        self.buf += b

    def next(self, head_request=False):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        resp = parse_head(head)
        if head_request or resp.status in (204, 304) or 100 <= resp.status < 200:
            return resp
        cl = resp.header("Content-Length")
        if cl is None:
            raise AssertionError(f"response without Content-Length: {resp}")
        n = int(cl)
        while len(self.buf) < n:
            self._fill()
        resp.body, self.buf = self.buf[:n], self.buf[n:]
        return resp

    def closed(self, timeout=None):
        """True when the server closes the connection with nothing more sent
        (within timeout); the extra bytes stay in self.buf."""
        closed, data = wait_closed(self.sock, timeout or self.timeout, self.buf)
        self.buf = data
        return closed


def rss_kib(pid):
    """The resident set size of process pid, in KiB."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def connect_slow_reader(port, rcvbuf=4096, timeout=5.0):
    """A connection with a small receive buffer (set before connect, so the
    window is small from the start): the server's sends stall as soon as the
    client stops reading."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    return s


class Upstream:
    """tests/integration/upstream.py on a unix socket the fixture binds (so it
    accepts from the start), with its event log."""

    def __init__(self, sockdir):
        self.path = os.path.join(sockdir, "up.sock")
        self.log_path = os.path.join(sockdir, "up.log")
        open(self.log_path, "w").close()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(1024)
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "upstream.py")
        fd = self.sock.fileno()
        move = "" if fd == 3 else f"exec 3<&{fd} {fd}<&-; "
        self.proc = subprocess.Popen(["/bin/bash", "-c", move + 'exec "$@"', "bash",
                                      "/usr/bin/python3", script, self.log_path],
                                     pass_fds=[fd], stdin=subprocess.DEVNULL)

    def events(self):
        """[(ms, conn id, event)] logged so far."""
        out = []
        with open(self.log_path) as f:
            for line in f:
                if line.endswith("\n"):
                    ms, cid, event = line.rstrip("\n").split(" ", 2)
                    out.append((int(ms), int(cid), event))
        return out

    def conn_events(self, cid):
        return [(ms, e) for ms, c, e in self.events() if c == cid]

    def conn_for(self, path):
        """The id of the last connection that carried a request for path."""
        ids = [c for _, c, e in self.events() if e.split(" ", 2)[2:] == [path]]
        return ids[-1] if ids else None

    def wait_event(self, path, event, timeout=5.0):
        """Wait until the connection for path logged event; returns its ms."""
        found = []

        def pred():
            cid = self.conn_for(path)
            if cid is None:
                return False
            found[:] = [ms for ms, e in self.conn_events(cid) if e == event]
            return bool(found)
        wait_for(pred, timeout, f"upstream event {event!r} for {path}: {self.events()[-20:]}")
        return found[0]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.sock.close()


@pytest.fixture
def relay_factory(ferry_factory, tmp_path, request):
    """Start upstream.py and a ferry-test relaying /_test/ to it; returns
    (FerryProcess, Upstream). Fails when ferry-test was not built."""
    import shutil
    import tempfile
    assert os.access(FERRY_TEST_BIN, os.X_OK), (
        f"{FERRY_TEST_BIN} missing: build it (ninja -C build) or set FERRY_TEST_BIN")
    # sun_path is 108 bytes: keep the socket out of pytest's long tmp paths.
    sockdir = tempfile.mkdtemp(prefix="ferry-up-", dir="/tmp")
    ups = []

    def make(conf="", **kw):
        up = Upstream(sockdir if not ups else tempfile.mkdtemp(prefix="ferry-up-", dir="/tmp"))
        ups.append(up)
        env = {"FERRY_TEST_UPSTREAM": up.path}
        # ASan's quarantine would hold every freed chunk (256 MiB by default)
        # and hide whether ferry's own memory stays bounded.
        if "ASAN_OPTIONS" in os.environ:
            env["ASAN_OPTIONS"] = os.environ["ASAN_OPTIONS"] + ":quarantine_size_mb=8"
        env.update(kw.pop("env", {}))
        f = ferry_factory(conf, binary=FERRY_TEST_BIN, env=env, **kw)
        return f, up

    yield make
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for up in ups:
        up.stop()
        if failed:
            with open(up.log_path) as lf:
                print(f"---- upstream log ({up.log_path}) ----\n{lf.read()}")
        shutil.rmtree(os.path.dirname(up.path), ignore_errors=True)
