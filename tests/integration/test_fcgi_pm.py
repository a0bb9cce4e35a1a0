"""The FastCGI process manager (issue 10), tested at the backend socket: ferry
starts tests/tools/fcgi_app (libfcgi) and php-cgi, and the tests talk FastCGI
to the socket directly (fcgi_client.py), read `ferry status --json` and
/proc, and run `ferry swap`."""
import hashlib
import json
import os
import random
import signal
import socket
import stat
import subprocess
import threading
import time

import pytest

from conftest import wait_for
from backend_helpers import (backend, backend_conf, generations, reaped,
                             set_command, sock_path, wait_ready)
from fcgi_client import fcgi_app_path, require, fcgi_request

APP = fcgi_app_path()



@pytest.fixture(autouse=True)
def _needs_app():
    require(APP, "tests/tools/fcgi_app (libfcgi-dev)")


def test_processes_start_with_the_socket_as_fd0_and_a_clean_signal_state(ferry_factory):
    f = ferry_factory(backend_conf(f"{APP} --ready --version v1"))
    g = wait_ready(f, 3)
    assert g["generation"] == 1 and len(g["pids"]) == 3
    st = os.stat(sock_path(f))
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    b = backend(f)
    assert b["capacity"] == 3 and b["in_flight"] == 0
    for pid in g["pids"]:
        with open(f"/proc/{pid}/status") as fh:
            status = dict(line.split(":", 1) for line in fh.read().splitlines())
        assert int(status["PPid"]) == f.proc.pid
        assert status["SigBlk"].strip() == "0000000000000000"
        # fd 0 is the very socket ferry bound; fd 3 the readiness pipe; nothing else.
        assert os.readlink(f"/proc/{pid}/fd/0").startswith("socket:[")
        assert sorted(int(x) for x in os.listdir(f"/proc/{pid}/fd")) == [0, 1, 2, 3]
        with open(f"/proc/{pid}/environ", "rb") as fh:
            env = fh.read().split(b"\0")
        assert b"FERRY_READY_FD=3" in env
        # ferry's own systemd variables stay with ferry (the fixture sets them).
        assert not [e for e in env if e.startswith((b"NOTIFY_SOCKET=", b"LISTEN_"))], env
    # Non-blocking is the parent's business: the children's accept() must block.
    fd0_flags = open(f"/proc/{g['pids'][0]}/fdinfo/0").read()
    assert int(fd0_flags.split("flags:")[1].split()[0], 8) & os.O_NONBLOCK == 0
    body = os.urandom(300000)
    r = fcgi_request(sock_path(f), "POST", "a=1", body)
    fields = r.fields()
    assert r.headers["status"] == "200"
    assert fields["version"] == "v1" and int(fields["pid"]) in g["pids"]
    assert fields["sha256"] == hashlib.sha256(body).hexdigest()
    assert int(fields["length"]) == len(body)


def test_grace_readiness_for_a_process_that_does_not_report(ferry_factory):
    f = ferry_factory(backend_conf(f"{APP} --version quiet", processes=2, ready_grace="3s"))
    started = time.monotonic()
    g = generations(f)[0]
    assert g["state"] == "starting" and g["ready"] == 0 and backend(f)["capacity"] == 0
    wait_ready(f, 2)
    assert time.monotonic() - started >= 2.5
    assert backend(f)["capacity"] == 2


def test_a_process_that_reports_is_ready_at_once_not_after_the_grace(ferry_factory):
    f = ferry_factory(backend_conf(f"{APP} --ready", processes=2, ready_grace="20s"))
    wait_ready(f, 2, timeout=5)


def test_concurrency_multiplies_capacity(ferry_factory):
    f = ferry_factory(backend_conf(f"{APP} --ready", processes=3, concurrency=4))
    wait_ready(f, 3)
    assert backend(f)["capacity"] == 12


def test_respawn_after_kill_with_backoff_and_reaping(ferry_factory):
    f = ferry_factory(backend_conf(f"{APP} --ready", processes=2))
    g = wait_ready(f, 2)
    victim = g["pids"][0]
    delays = []
    for _ in range(3):
        before = set(g["pids"])
        t0 = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: victim not in generations(f)[0]["pids"]
                 and len(generations(f)[0]["pids"]) == 2, 10, "a respawned process")
        delays.append(time.monotonic() - t0)
        assert reaped(victim, f.proc.pid), f"killed process {victim} not reaped"
        g = wait_ready(f, 2)
        # The respawned process, killed again at once: its delay doubles.
        (victim,) = set(g["pids"]) - before
    b = backend(f)
    assert b["respawns"] == 3 and generations(f)[0]["respawns"] == 3
    log = f.log()
    # 100 ms, then doubling while a process keeps dying young.
    assert "respawning in 100 ms" in log and "respawning in 200 ms" in log
    assert "respawning in 400 ms" in log, log
    assert "signal 9 (Killed)" in log
    assert delays[0] >= 0.09 and delays[2] >= 0.35, delays
    assert backend(f)["capacity"] == 2


def test_swap_replaces_every_process_and_reaps_the_old_ones(ferry_factory):
    f = ferry_factory(backend_conf(f"{APP} --ready --version v1"))
    old = wait_ready(f, 3)["pids"]
    set_command(f, "--version v1", "--version v2")
    t0 = time.monotonic()
    r = f.run_cli("swap", "--json")
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    reply = json.loads(r.stdout)
    assert sorted(reply["old_pids"]) == sorted(old)
    new = reply["new_pids"]
    assert len(new) == 3 and not set(new) & set(old) and reply["generation"] == 2
    for pid in old:
        assert reaped(pid, f.proc.pid), f"old process {pid} not reaped when swap returned"
    g = generations(f)
    assert len(g) == 1 and g[0]["generation"] == 2 and sorted(g[0]["pids"]) == sorted(new)
    assert "--version v2" in g[0]["command"]
    for _ in range(6):
        fields = fcgi_request(sock_path(f)).fields()
        assert fields["version"] == "v2" and int(fields["pid"]) in new
    b = backend(f)
    assert b["swaps"] == 1 and b["swaps_failed"] == 0 and b["capacity"] == 3
    assert took < 3, took
    # Text output names both sets of pids.
    set_command(f, "--version v2", "--version v3")
    r = f.run_cli("swap")
    assert r.returncode == 0 and "old pids " + " ".join(map(str, new)) in r.stdout, r.stdout


def test_swap_to_a_generation_that_never_becomes_ready(ferry_factory):
    f = ferry_factory(backend_conf(f"{APP} --ready --version v1", ready_timeout="1s",
                                   ready_grace="10s"))
    old = wait_ready(f, 3)["pids"]
    set_command(f, "--ready --version v1", "--never-ready")
    seen = {}

    def watch():  # the new generation's pids, while it exists
        while "done" not in seen:
            for g in generations(f):
                if g["generation"] == 2:
                    seen.setdefault("pids", set()).update(g["pids"])
                    seen["capacity"] = backend(f)["capacity"]
            time.sleep(0.05)

    t = threading.Thread(target=watch)
    t.start()
    r = f.run_cli("swap")
    seen["done"] = True
    t.join()
    assert r.returncode == 1
    assert "not ready within ready_timeout (1000 ms)" in r.stderr, r.stderr
    assert "old generation keeps serving" in r.stderr
    g = generations(f)
    assert len(g) == 1 and sorted(g[0]["pids"]) == sorted(old) and g[0]["state"] == "ready"
    assert seen.get("pids"), "the new generation was never visible in status"
    assert seen["capacity"] == 3  # a generation that is not ready adds no capacity
    for pid in seen["pids"]:
        assert reaped(pid, f.proc.pid)
    assert fcgi_request(sock_path(f)).fields()["version"] == "v1"
    assert backend(f)["swaps_failed"] == 1


def test_swap_to_a_missing_program_fails_at_once(ferry_factory):
    f = ferry_factory(backend_conf(f"{APP} --ready"))
    old = wait_ready(f, 3)["pids"]
    set_command(f, APP, APP + "-missing")
    r = f.run_cli("swap")
    assert r.returncode == 1 and "No such file or directory" in r.stderr, r.stderr
    assert sorted(generations(f)[0]["pids"]) == sorted(old)


def test_a_second_swap_is_refused_while_one_runs(ferry_factory):
    f = ferry_factory(backend_conf(f"{APP} --ready", ready_timeout="2s", ready_grace="10s"))
    wait_ready(f, 3)
    set_command(f, "--ready", "--never-ready")
    first = subprocess.Popen([f.binary, "swap", "-c", f.conf_path], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    wait_for(lambda: backend(f)["swap_in_progress"], 5, "the first swap to start")
    r = f.run_cli("swap")
    assert r.returncode == 1 and "a swap is already in progress" in r.stderr, r.stderr
    out, err = first.communicate(timeout=20)
    assert first.returncode == 1 and "not ready within ready_timeout" in err


def test_stale_socket_file_is_replaced(ferry_factory, tmp_path):
    wd = tmp_path / "ferry0"
    (wd / "run").mkdir(parents=True)
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(wd / "run" / "app.sock"))
    s.close()  # the file stays, nobody listens: a crashed ferry's leftover
    f = ferry_factory(backend_conf(f"{APP} --ready"))
    wait_ready(f, 3)
    assert fcgi_request(sock_path(f)).fields()["version"] == "v1"


def test_refuses_to_start_when_something_listens_on_the_socket(ferry_factory, tmp_path):
    wd = tmp_path / "ferry0"
    (wd / "run").mkdir(parents=True)
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(wd / "run" / "app.sock"))
    s.listen(1)
    f = ferry_factory(backend_conf(f"{APP} --ready"), start=False)
    with pytest.raises(RuntimeError, match="exited with 1"):
        f.start()
    assert "backend socket" in f.log() and "is in use: something is listening" in f.log()
    assert os.path.exists(str(wd / "run" / "app.sock"))  # not someone else's to remove
    s.close()


def test_refuses_to_start_when_the_command_cannot_run(ferry_factory):
    f = ferry_factory(backend_conf(APP + "-missing"), start=False)
    with pytest.raises(RuntimeError, match="exited with 1"):
        f.start()
    assert "cannot start the backend" in f.log() and "No such file" in f.log()
    assert not os.path.exists(sock_path(f))


def test_shutdown_stops_and_reaps_everything_and_removes_the_socket(ferry_factory):
    f = ferry_factory(backend_conf(f"{APP} --ready", processes=4))
    pids = wait_ready(f, 4)["pids"]
    ferry_pid = f.proc.pid
    assert f.stop() == 0
    for pid in pids:
        assert reaped(pid, ferry_pid)
        assert not os.path.exists(f"/proc/{pid}")
    assert not os.path.exists(sock_path(f))


def test_shutdown_kills_processes_that_ignore_the_stop_signal(ferry_factory, tmp_path):
    script = tmp_path / "stubborn.sh"
    script.write_text("#!/bin/sh\ntrap '' USR1 TERM\nwhile :; do sleep 1; done\n")
    script.chmod(0o755)
    f = ferry_factory(backend_conf(str(script), processes=2))
    pids = wait_ready(f, 2)["pids"]
    ferry_pid = f.proc.pid
    t0 = time.monotonic()
    assert f.stop() == 0
    assert time.monotonic() - t0 < 8
    for pid in pids:
        assert reaped(pid, ferry_pid)
    assert "SIGKILL" in f.log()


def test_swap_escalates_to_sigterm_and_sigkill(ferry_factory, tmp_path):
    script = tmp_path / "stubborn.sh"
    script.write_text("#!/bin/sh\ntrap '' USR1 TERM\nwhile :; do sleep 1; done\n")
    script.chmod(0o755)
    f = ferry_factory(backend_conf(str(script), processes=2, drain_timeout="300ms"))
    old = wait_ready(f, 2)["pids"]
    set_command(f, str(script), f"{APP} --ready")
    r = f.run_cli("swap", "--json")
    assert r.returncode == 0, r.stderr
    assert sorted(json.loads(r.stdout)["old_pids"]) == sorted(old)
    for pid in old:
        assert reaped(pid, f.proc.pid)
    log = f.log()
    assert "did not exit within drain_timeout (300 ms): SIGTERM" in log
    assert "SIGKILL to 2 process(es)" in log and "stopped (killed after" in log


def test_old_generation_finishes_what_it_accepted(ferry_factory):
    """Requests sent straight to the socket during swaps: each is answered in
    full by whichever generation accepted it, POST bodies included."""
    f = ferry_factory(backend_conf(f"{APP} --ready --version v1", processes=3))
    wait_ready(f, 3)
    path = sock_path(f)
    errors, results = [], []
    stop = threading.Event()

    def client(seed):
        rnd = random.Random(seed)
        while not stop.is_set():
            kind = rnd.choice(["fast", "slow", "post"])
            body = os.urandom(rnd.choice([0, 1000, 200000, 2 << 20])) if kind == "post" else b""
            query = f"sleep={rnd.randint(300, 1000)}" if kind == "slow" else ""
            try:
                r = fcgi_request(path, "POST" if body else "GET", query, body, timeout=30)
                fl = r.fields()
                assert r.headers.get("status") == "200", r.stdout[:200]
                assert fl["sha256"] == hashlib.sha256(body).hexdigest()
                results.append(fl["version"])
            except Exception as e:  # noqa: BLE001 - every failure counts
                errors.append(f"{kind}: {e!r}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    versions = ["v1"]
    try:
        for i in range(2, 8):
            set_command(f, f"--version {versions[-1]}", f"--version v{i}")
            versions.append(f"v{i}")
            r = f.run_cli("swap")
            assert r.returncode == 0, r.stderr
            time.sleep(0.2)  # let requests reach the new generation
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[:5]
    assert set(versions) <= set(results), (versions, sorted(set(results)))
    assert len(results) > 50
    assert len(generations(f)) == 1 and backend(f)["swaps"] == 6


def test_swap_without_a_backend_says_so(ferry):
    r = ferry.run_cli("swap")
    assert r.returncode == 1 and "no backend to swap: [backend] command is empty" in r.stderr
    assert "backend" not in json.loads(ferry.run_cli("status", "--json").stdout)


def test_swap_refused_when_the_config_no_longer_parses(ferry_factory):
    f = ferry_factory(backend_conf(f"{APP} --ready"))
    old = wait_ready(f, 3)["pids"]
    set_command(f, "processes = 3", "processes = many")
    r = f.run_cli("swap")
    # The CLI itself reads the file first and reports the problem (exit 2).
    assert r.returncode == 2 and "key 'processes'" in r.stderr, r.stderr
    set_command(f, "processes = many", "processes = 3")
    assert sorted(generations(f)[0]["pids"]) == sorted(old)


def test_swap_replaces_a_first_generation_that_never_became_ready(ferry_factory):
    f = ferry_factory(backend_conf(f"{APP} --never-ready", processes=2, ready_grace="10s",
                                   ready_timeout="2s"))
    first = generations(f)[0]
    assert first["state"] == "starting"
    wait_for(lambda: "generation 1 not ready within ready_timeout (2000 ms)" in f.log(), 8,
             "the warning about the first generation")
    assert generations(f)[0]["pids"] == first["pids"]  # it is not killed: nothing to fall back to
    set_command(f, "--never-ready", "--ready --version v2")
    r = f.run_cli("swap", "--json")
    assert r.returncode == 0, r.stderr
    assert sorted(json.loads(r.stdout)["old_pids"]) == sorted(first["pids"])
    for pid in first["pids"]:
        assert reaped(pid, f.proc.pid)
    assert fcgi_request(sock_path(f)).fields()["version"] == "v2"
