"""The systemd units in dist/ match ferry: the socket listens where ferry would
by default, the service runs `ferry serve` as Type=notify, and systemd itself
accepts both files (systemd-analyze verify, when it is installed)."""
import os
import shutil
import subprocess

import pytest

from conftest import FERRY_BIN, ROOT

DIST = os.path.join(ROOT, "dist")


def unit_keys(path):
    """{(section, key): [values]} of a systemd unit file."""
    keys, section = {}, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            k, _, v = line.partition("=")
            keys.setdefault((section, k.strip()), []).append(v.strip())
    return keys


def default_listen(tmp_path):
    # Built-in defaults: run where no ./ferry.conf exists.
    out = subprocess.run([FERRY_BIN, "check", "--print"], cwd=tmp_path, capture_output=True,
                         text=True, check=True, env={**os.environ, "HOME": str(tmp_path)})
    for line in out.stdout.splitlines():
        if line.startswith("listen = "):
            return line.split(" = ", 1)[1].split()
    raise AssertionError("no listen in ferry check --print:\n" + out.stdout)


def test_socket_listens_on_ferrys_default_address(tmp_path):
    if os.path.exists("/etc/ferry/ferry.conf"):
        pytest.skip("/etc/ferry/ferry.conf exists: defaults are not built in here")
    sock = unit_keys(os.path.join(DIST, "ferry.socket"))
    assert sock[("Socket", "ListenStream")] == default_listen(tmp_path)
    assert sock.get(("Socket", "Accept"), ["no"]) == ["no"]


def test_service_runs_serve_as_notify():
    svc = unit_keys(os.path.join(DIST, "ferry.service.in"))
    assert svc[("Service", "Type")] == ["notify"]
    assert svc[("Service", "ExecStart")] == ["@BINDIR@/ferry serve -c /etc/ferry/ferry.conf"]
    assert svc[("Service", "ExecReload")] == ["/bin/kill -HUP $MAINPID"]
    # Configuration errors exit 2: restarting would only loop.
    assert "2" in svc[("Service", "RestartPreventExitStatus")]
    # ferry stops its children itself; systemd sends SIGTERM to ferry alone.
    assert svc[("Service", "KillMode")] == ["mixed"]


def test_systemd_accepts_the_units(tmp_path):
    # scripts/deps.sh --test installs systemd: a missing tool is a failure, not a skip.
    assert shutil.which("systemd-analyze"), "systemd-analyze missing: run scripts/deps.sh --test"
    with open(os.path.join(DIST, "ferry.service.in")) as f:
        text = f.read().replace("@BINDIR@", os.path.dirname(os.path.abspath(FERRY_BIN)))
    (tmp_path / "ferry.service").write_text(text)
    shutil.copy(os.path.join(DIST, "ferry.socket"), tmp_path / "ferry.socket")
    r = subprocess.run(["systemd-analyze", "verify", "--man=no",
                        str(tmp_path / "ferry.service"), str(tmp_path / "ferry.socket")],
                       capture_output=True, text=True)
    assert r.returncode == 0 and not r.stderr.strip(), r.stdout + r.stderr
