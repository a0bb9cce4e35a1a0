"""Helpers shared by the backend process-manager and swap tests: the
[backend] section, `ferry status --json`'s backend section, /proc checks."""
import json
import os

from conftest import wait_for


def backend_conf(command, processes=3, **keys):
    """A [backend] section; keys override the test defaults."""
    conf = {"command": command, "socket": "./run/app.sock", "processes": str(processes),
            "ready_grace": "300ms", "ready_timeout": "5s", "drain_timeout": "5s"}
    conf.update(keys)
    return "[backend]\n" + "".join(f"{k} = {v}\n" for k, v in conf.items())


def sock_path(f):
    return os.path.join(f.workdir, "run", "app.sock")


def backend(f):
    r = f.run_cli("status", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["backend"]


def generations(f):
    return backend(f)["generations"]


def wait_ready(f, processes, timeout=10.0):
    """Wait until one generation runs with every process ready; returns it."""
    def ok():
        g = generations(f)
        return len(g) == 1 and g[0]["state"] == "ready" and g[0]["ready"] == processes
    wait_for(ok, timeout, f"{processes} ready backend processes")
    return generations(f)[0]


def reaped(pid, parent):
    """True once pid is no longer a child (running or zombie) of parent."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return True
    return int(fields[1]) != parent  # the pid was reused by someone else's process


def set_command(f, old, new):
    """Edit the config file in place (what `ferry swap` re-reads)."""
    with open(f.conf_path) as fh:
        text = fh.read()
    assert old in text, (old, text)
    with open(f.conf_path, "w") as fh:
        fh.write(text.replace(old, new))
