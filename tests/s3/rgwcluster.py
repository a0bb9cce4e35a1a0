"""A throwaway single-node Ceph cluster with an S3 gateway, for the store tests.

One monitor, one OSD (memstore: objects live in the OSD's memory) and radosgw
with the beast frontend, all on 127.0.0.1, all state in one directory, no
mgr, `auth none` between the daemons. Every daemon runs in the foreground as a
child of this process (so its PID is known and it is reaped, never left a
zombie), every wait polls with a deadline, and stop() ends each daemon by its
recorded PID.

Used by tests/s3/s3fixtures.py (once per pytest session); also runnable by
hand to poke at RGW:

    python3 tests/s3/rgwcluster.py /tmp/rgw     # prints the endpoint, Ctrl-C stops

Traps this file works around (measured on Debian 12, Ceph 16.2):
* radosgw insists on a secure session with the monitor even with auth none
  and retries forever (get_initial_auth_request returned -13) unless
  `ms mon client mode = crc secure`;
* deleted objects' space only comes back after RGW's garbage collection,
  2 h by default: the gc intervals are shortened;
* beast answers a GET's head and body in separate writes: without
  tcp_nodelay each GET waits out the client's delayed ACK (about 45 ms, against
  5 ms for a HEAD);
* memstore keeps everything in RAM and writes hang (not fail) near its cap,
  so the cap is set well above what the suites store at once (the normal
  suites end with about 650 MiB RSS over the three daemons);
* RGW creates its pools on first use: with the default 32 PGs per pool and a
  1 s paxos interval the first bucket write took 2 s; one PG per pool and a
  50 ms interval make it 0.3 s and the whole start about 2.5 s (idle).
No mgr daemon is needed for S3.
"""
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

BINARIES = ("ceph-mon", "ceph-osd", "radosgw", "monmaptool", "ceph", "radosgw-admin")


def _die_with_parent():
    """In the child before exec: SIGTERM when the test process dies, so a
    killed pytest leaves no daemon behind (PR_SET_PDEATHSIG)."""
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ClusterError(RuntimeError):
    pass


class RgwCluster:
    """RgwCluster(dir, access_key, secret_key).start() -> a running cluster with
    an S3 user holding those keys, answering on 127.0.0.1:self.port; raises
    ClusterError (with the daemons' log tails) when it cannot. stop() is
    idempotent. Not thread-safe: one test process drives it."""

    def __init__(self, workdir, access_key, secret_key, memstore_bytes=3 << 30):
        self.dir = os.path.abspath(str(workdir))
        self.access_key = access_key
        self.secret_key = secret_key
        self.memstore_bytes = memstore_bytes
        self.conf = os.path.join(self.dir, "ceph.conf")
        self.procs = {}  # name -> Popen (pid recorded in run/NAME.pid as well)
        self.port = None
        self.mon_port = None
        self.start_seconds = None
        self.timings = []  # (stage, seconds since start)

    # -- helpers --
    def log_tail(self, name, lines=40):
        try:
            with open(os.path.join(self.dir, "log", name + ".log"), "rb") as f:
                text = f.read().decode(errors="replace")
        except OSError:
            return f"(no log for {name})"
        return "\n".join(text.splitlines()[-lines:])

    def fail(self, what):
        logs = "\n".join(f"---- {n} log (tail) ----\n{self.log_tail(n)}"
                         for n in ("mon.a", "osd.0", "client.rgw"))
        self.stop()
        raise ClusterError(f"RGW cluster: {what}\nstate in {self.dir}\n{logs}")

    def run(self, *argv, timeout=30):
        """Run a Ceph tool against this cluster; returns stdout, fails on error."""
        try:
            p = subprocess.run([*argv, "-c", self.conf], capture_output=True, text=True,
                               timeout=timeout, cwd=self.dir)
        except subprocess.TimeoutExpired:
            self.fail(f"{' '.join(argv)} did not finish within {timeout} s")
        if p.returncode != 0:
            self.fail(f"{' '.join(argv)} exited {p.returncode}: {p.stderr.strip()}")
        return p.stdout

    def spawn(self, name, argv):
        out = open(os.path.join(self.dir, "log", name + ".out"), "ab")
        proc = subprocess.Popen([*argv, "-f", "-c", self.conf], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=self.dir, start_new_session=True,
                                preexec_fn=_die_with_parent)
        out.close()
        self.procs[name] = proc
        with open(os.path.join(self.dir, "run", name + ".pid"), "w") as f:
            f.write(f"{proc.pid}\n")
        return proc

    def wait(self, what, pred, timeout):
        """Poll pred() (0.1 s apart) until true; fail loudly after timeout, or
        at once when a daemon died."""
        deadline = time.monotonic() + timeout
        while True:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    self.fail(f"{name} exited with {proc.returncode} while waiting for {what}")
            if pred():
                return
            if time.monotonic() > deadline:
                self.fail(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.1)

    def write_conf(self):
        d = self.dir
        text = f"""[global]
fsid = {uuid.uuid4()}
mon host = v2:127.0.0.1:{self.mon_port}
mon initial members = a
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc secure
run dir = {d}/run
admin socket = {d}/run/$name.asok
log file = {d}/log/$name.log
pid file = {d}/run/$name.daemon.pid
keyring = {d}/keyring
log to stderr = false
err to stderr = true
debug ms = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 1
osd pool default pgp num = 1
mon osd pool default pg num = 1
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0

[mon]
mon data = {d}/mon
paxos propose interval = 0.05
paxos min wait = 0.01
mon cluster log file = {d}/log/cluster.log

[osd]
osd data = {d}/osd
osd objectstore = memstore
memstore device bytes = {self.memstore_bytes}
osd max object size = 134217728

[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:{self.port} tcp_nodelay=1
rgw data = {d}/rgw
rgw dns name = s3.localhost
rgw gc obj min wait = 5
rgw gc processor period = 5
rgw gc processor max time = 5
rgw lc debug interval = 10
rgw enable usage log = false
"""
        with open(self.conf, "w") as f:
            f.write(text)

    # -- lifecycle --
    def start(self, timeout=60.0):
        t0 = time.monotonic()
        missing = [b for b in BINARIES
                   if not any(os.access(os.path.join(p, b), os.X_OK)
                              for p in os.environ.get("PATH", "/usr/bin").split(":"))]
        if missing:
            raise ClusterError(f"RGW cluster: {', '.join(missing)} not installed: "
                               "run scripts/deps.sh --test")
        for sub in ("run", "log", "mon", "osd", "rgw"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        self.mon_port = free_port()
        self.port = free_port()
        self.write_conf()
        deadline = t0 + timeout

        def left():
            return max(1.0, deadline - time.monotonic())

        def mark(stage):
            self.timings.append((stage, round(time.monotonic() - t0, 2)))

        monmap = os.path.join(self.dir, "monmap")
        self.run("monmaptool", "--create", "--clobber", "--fsid",
                 self.conf_value("fsid"), "--addv", "a",
                 f"[v2:127.0.0.1:{self.mon_port}]", monmap)
        self.run("ceph-mon", "--mkfs", "-i", "a", "--monmap", monmap)
        self.spawn("mon.a", ["ceph-mon", "-i", "a"])
        mark('mkfs')
        osd_uuid = str(uuid.uuid4())
        # The first `ceph` command also proves the monitor answers.
        osd_id = self.run("ceph", "osd", "new", osd_uuid, timeout=left()).strip()
        if osd_id != "0":
            self.fail(f"ceph osd new returned {osd_id!r}, expected 0")
        self.run("ceph-osd", "-i", "0", "--mkfs", "--osd-uuid", osd_uuid, timeout=left())
        self.spawn("osd.0", ["ceph-osd", "-i", "0"])
        mark('osd mkfs')
        self.wait("osd.0 up", self.osd_up, left())
        mark('osd up')
        self.spawn("client.rgw", ["radosgw", "-n", "client.rgw"])
        self.wait("radosgw answering on 127.0.0.1:%d" % self.port, self.http_answers, left())
        mark('rgw up')
        self.run("radosgw-admin", "user", "create", "--uid", "ferry", "--display-name",
                 "ferry tests", "--access-key", self.access_key, "--secret", self.secret_key,
                 timeout=left())
        self.start_seconds = time.monotonic() - t0
        return self

    def conf_value(self, key):
        with open(self.conf) as f:
            for line in f:
                k, _, v = line.partition("=")
                if k.strip() == key:
                    return v.strip()
        raise KeyError(key)

    def osd_up(self):
        p = subprocess.run(["ceph", "osd", "dump", "--format", "json", "-c", self.conf],
                           capture_output=True, text=True, timeout=30, cwd=self.dir)
        if p.returncode != 0:
            return False
        osds = json.loads(p.stdout).get("osds", [])
        return any(o.get("osd") == 0 and o.get("up") == 1 for o in osds)

    def http_answers(self):
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            c.request("GET", "/")
            status = c.getresponse().status
            c.close()
            return status in (200, 403)
        except OSError:
            return False

    def rss_kib(self):
        """Resident memory of each daemon (KiB), from /proc."""
        out = {}
        for name, proc in self.procs.items():
            try:
                with open(f"/proc/{proc.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            out[name] = int(line.split()[1])
            except OSError:
                pass
        return out

    def stop(self, timeout=15.0):
        """SIGTERM each daemon by its PID (gateway first), wait a bounded time,
        then SIGKILL; every child is reaped."""
        for name in ("client.rgw", "osd.0", "mon.a"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = {}


def main():
    wd = sys.argv[1] if len(sys.argv) > 1 else "/tmp/ferry-rgw"
    os.makedirs(wd, exist_ok=True)
    c = RgwCluster(wd, "S3RVER", "ferry/test+secret=KEY").start()
    print(f"endpoint http://127.0.0.1:{c.port} access_key {c.access_key} "
          f"secret_key {c.secret_key} (started in {c.start_seconds:.1f} s, "
          f"RSS KiB {c.rss_kib()}) {c.timings}", flush=True)
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT, signal.SIGTERM])
    try:
        signal.sigwait([signal.SIGINT, signal.SIGTERM])
    finally:
        c.stop()


if __name__ == "__main__":
    main()
