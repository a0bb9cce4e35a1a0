"""The admin socket under abuse (issue 15): leaked idle connections and
half-sent commands cannot lock the operator out, a slow client is cut at the
command deadline, and `ferry status` counts the clients dropped and why."""
import json
import os
import resource
import select
import socket
import subprocess
import time

import pytest

from conftest import request

PAGE = "<h1>down for {{message}}</h1>\n"


@pytest.fixture(autouse=True)
def enough_fds():
    """1,000 connections need more than the usual 1,024 fds once ferry's and
    pytest's own are counted: raise the soft limit (ferry inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 1100:
        pytest.skip("the fd limit is below 1,100 and cannot be raised")
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def make(ferry_factory, server=""):
    f = ferry_factory(conf="[server]\n" + server + "\n[maintenance]\npage = ./maintenance.html\n",
                      start=False)
    with open(os.path.join(f.workdir, "maintenance.html"), "w") as fh:
        fh.write(PAGE)
    with open(os.path.join(f.root, "index.html"), "w") as fh:
        fh.write("live site\n")
    return f.start()


def status(f):
    p = f.run_cli("status", "--json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def connect(f):
    s = socket.socket(socket.AF_UNIX)
    # Blocking: a unix socket whose backlog is full makes a non-blocking
    # connect fail with EAGAIN instead of waiting for the server to accept.
    s.connect(f.admin_socket)
    s.settimeout(10)
    return s


def read_to_eof(s, timeout=10):
    """Everything the server sends until it closes; waits on the socket."""
    s.settimeout(timeout)
    got = b""
    while True:
        try:
            b = s.recv(4096)
        except ConnectionResetError:
            break
        if not b:
            break
        got += b
    return got


def test_down_with_1000_idle_clients_and_a_half_sent_command(ferry_factory):
    f = make(ferry_factory)
    half = connect(f)
    half.sendall(b"down message=half")  # no newline: never completed
    idle = [connect(f) for _ in range(1000)]
    t0 = time.monotonic()
    p = f.run_cli("down", "--message", "maintenance")
    took = time.monotonic() - t0
    assert p.returncode == 0, p.stderr
    assert "every worker has switched" in p.stdout
    assert took < 1.0, f"ferry down took {took:.2f} s"
    # It switched: the 503 page with its headers.
    r = request(f.port, path="/")
    assert r.status == 503
    assert r.body == b"<h1>down for maintenance</h1>\n"
    assert r.header("X-Maintenance-Mode") == "1"
    assert r.header("Retry-After") == "300"
    assert r.header("Content-Type") == "text/html; charset=utf-8"
    # The half-sent command was the client idle longest: dropped first, told why.
    got = read_to_eof(half)
    assert json.loads(got) == {"ok": False, "error": "the admin socket is full: this connection, "
                               "idle longest, was dropped to serve a new one"}
    st = status(f)
    assert st["maintenance"]["mode"] == "on"
    adm = st["admin"]
    # 1,001 clients plus `down` and `status` on 64 slots.
    assert adm["evicted"] >= 1001 - 64, adm
    assert adm["accepted"] == 1003, adm
    assert adm["clients"] <= 64, adm
    assert adm["dropped_idle"] == 0 and adm["refused"] == 0, adm
    # The survivors are the newest: each still answers.
    for s in idle[-10:]:
        s.sendall(b"ping\n")
        assert json.loads(s.recv(4096)) == {"ok": True, "pong": True}
    for s in idle + [half]:
        s.close()


def test_slowloris_cut_at_the_deadline(ferry_factory):
    f = make(ferry_factory, server="admin_timeout = 1s")
    s = connect(f)
    t0 = time.monotonic()
    got = b""
    # One byte per second of a command that would be valid, waiting on the
    # socket (its reply and EOF end the wait at once).
    for b in b"status\n":
        r, _, _ = select.select([s], [], [], 1.0)
        if r:
            got = read_to_eof(s)
            break
        try:
            s.send(bytes([b]))
        except (BrokenPipeError, ConnectionResetError):
            got = read_to_eof(s)
            break
    took = time.monotonic() - t0
    assert json.loads(got) == {"ok": False,
                               "error": "no complete command line within 1 s; closing"}
    assert 1.0 <= took < 1.8, f"cut after {took:.2f} s"
    s.close()
    # A client that completes its command in time is served, and a later
    # partial command gets its own deadline from its first byte.
    s = connect(f)
    s.sendall(b"ping\n")
    assert json.loads(s.recv(4096)) == {"ok": True, "pong": True}
    s.sendall(b"pi")
    t0 = time.monotonic()
    got = read_to_eof(s)
    took = time.monotonic() - t0
    assert json.loads(got)["error"] == "no complete command line within 1 s; closing"
    assert 0.9 <= took < 1.8, f"cut after {took:.2f} s"
    s.close()
    # The counters say so, in JSON and in text.
    st = status(f)
    assert st["admin"]["dropped_deadline"] == 2, st["admin"]
    assert st["admin"]["evicted"] == 0, st["admin"]
    p = f.run_cli("status")
    assert p.returncode == 0, p.stderr
    assert "dropped 2 at the command deadline, 0 idle, 0 evicted to make room" in p.stdout


def test_held_drain_is_never_evicted(ferry_factory):
    """A `down --drain` being held keeps its connection while 100 others come
    and go, and gets its answer."""
    f = make(ferry_factory, server="workers = 1")
    # A request in flight that is not exempt keeps the drain waiting: a slow
    # reader of a large file.
    with open(os.path.join(f.root, "big.bin"), "wb") as fh:
        fh.write(b"x" * (32 << 20))
    slow = socket.create_connection(("127.0.0.1", f.port))
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    slow.recv(1024)
    drain = connect(f)
    drain.sendall(b"down drain=1\n")
    others = [connect(f) for _ in range(100)]
    # Still held: no reply yet, not evicted.
    r, _, _ = select.select([drain], [], [], 0.3)
    assert not r, drain.recv(65536)
    slow.close()
    drain.settimeout(10)
    reply = json.loads(drain.recv(65536))
    assert reply["ok"] is True and reply["drain"]["drained"] is True, reply
    assert status(f)["admin"]["evicted"] >= 100 - 64
    for s in others:
        s.close()
    drain.close()


def test_message_must_be_utf8(ferry_factory):
    """The message goes into JSON (replies, the state file, the 503 body):
    bytes that are not UTF-8 are refused before anything switches."""
    f = make(ferry_factory)
    s = connect(f)
    s.sendall(b"down message=caf%E9\n")
    assert json.loads(s.recv(4096)) == {"ok": False, "error": "down: message is not UTF-8"}
    s.sendall(b"down message=caf%C3%A9\n")
    assert json.loads(s.recv(65536))["message"] == "caf\u00e9"
    s.close()
    r = request(f.port, path="/", headers={"Accept": "application/json"})
    assert r.status == 503
    assert json.loads(r.body) == {"status": "maintenance", "message": "caf\u00e9",
                                  "retry_after": 300}
