"""Pytest fixtures for the store tests, run against each S3 store:

  s3rver     s3rver (pinned in tests/s3rver) behind the verifying, fault-injecting
             proxy: the proxy checks signatures and digests and emulates what
             s3rver lacks; the faults suites run here;
  rgw-proxy  Ceph's RADOS Gateway (tests/s3/rgwcluster.py, one cluster per
             pytest session) behind the same proxy in pass-through mode: RGW
             judges every request, the proxy only logs and injects faults;
  rgw        RGW directly, for the tests that need no proxy.

A test that asks for `s3proxy` runs on s3rver and rgw-proxy, one that asks only
for `store` / `direct` on s3rver and rgw. A test that needs behaviour one store
lacks says so with @pytest.mark.s3stores("s3rver", reason="..."): it runs on the
stores named, and the terminal summary lists it with its reason next to the
count of tests that ran against each store (see tests/integration/conftest.py).

Also: a direct boto3 client for reading back what was really stored, and a
runner for tests/tools/store_tool."""
import os
import select
import subprocess
import time

import boto3
import pytest
from botocore.config import Config

import storetest
from rgwcluster import ClusterError, RgwCluster
from s3proxy import S3Proxy

S3RVER_DIR = os.path.join(storetest.ROOT, "tests", "s3rver")
S3RVER_BIN = os.path.join(S3RVER_DIR, "node_modules", "s3rver", "bin", "s3rver.js")
BUCKET = "ferry-test"
ACCESS_KEY = "S3RVER"  # s3rver only knows this access key id
SECRET_KEY = "ferry/test+secret=KEY"


class S3rver:
    def __init__(self, workdir, args=()):
        self.workdir = str(workdir)
        self.args = list(args)
        self.data = os.path.join(self.workdir, "data")
        os.makedirs(self.data, exist_ok=True)
        self.proc = None
        self.port = None
        self.output = b""

    def start(self, timeout=20.0):
        if not os.path.exists(S3RVER_BIN):
            pytest.fail(f"s3rver is not installed: run scripts/deps.sh --test ({S3RVER_BIN})")
        self.proc = subprocess.Popen(
            ["node", S3RVER_BIN, "-d", self.data, "-a", "127.0.0.1", "-p", "0",
             "--service-endpoint", "localhost", *self.args, "--configure-bucket", BUCKET],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=self.workdir)
        # Ready when it prints its port; wait on the pipe, never sleep.
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"listening on" not in self.output or not self.output.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.stop()
                pytest.fail(f"s3rver did not start:\n{self.output.decode(errors='replace')}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    continue
                self.output += chunk
        line = [ln for ln in self.output.decode().splitlines() if "listening on" in ln][0]
        self.port = int(line.rsplit(":", 1)[1])
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


STORES = ("s3rver", "rgw-proxy", "rgw")
PROXIED = ("s3rver", "rgw-proxy")


@pytest.fixture(scope="module")
def s3rver(tmp_path_factory):
    srv = S3rver(tmp_path_factory.mktemp("s3rver")).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def s3rver_proxy(s3rver):
    proxy = S3Proxy(s3rver.port, ACCESS_KEY, SECRET_KEY).start()
    yield proxy
    proxy.stop()


# Start time and daemon RSS of the session's cluster, for the terminal summary.
RGW_STATS = {}


@pytest.fixture(scope="session")
def rgw_cluster(tmp_path_factory):
    """One RGW cluster for the whole session. It must start: a machine
    without it fails these tests loudly (scripts/deps.sh --test installs it)."""
    problem = None
    cluster = RgwCluster(tmp_path_factory.mktemp("rgw"), ACCESS_KEY, SECRET_KEY)
    try:
        cluster.start()
        rgw_client(cluster.port).create_bucket(Bucket=BUCKET)
    except ClusterError as e:
        problem = str(e)
    except Exception as e:  # noqa: BLE001 - any failure here must name the cluster
        problem = f"RGW cluster: creating bucket {BUCKET} failed: {e}"
    if problem:
        cluster.stop()
        pytest.fail(problem, pytrace=False)
    RGW_STATS["start_seconds"] = cluster.start_seconds
    RGW_STATS["stages"] = cluster.timings
    RGW_STATS["rss_start_kib"] = cluster.rss_kib()
    yield cluster
    RGW_STATS["rss_end_kib"] = cluster.rss_kib()
    cluster.stop()


@pytest.fixture(scope="session")
def rgw_proxy(rgw_cluster):
    proxy = S3Proxy(rgw_cluster.port, ACCESS_KEY, SECRET_KEY, verify=False).start()
    yield proxy
    proxy.stop()


def rgw_client(port):
    return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}",
                        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                        region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}))


class Backend:
    """One store as a test sees it: the port ferry talks to, the proxy in
    between (or None) and a boto3 client on the store itself."""

    def __init__(self, name, port, proxy, direct):
        self.name = name
        self.port = port
        self.proxy = proxy
        self.direct = direct

    @property
    def rgw(self):
        return self.name.startswith("rgw")


@pytest.fixture
def s3backend(request):
    """The store this test instance runs against (parametrized by
    pytest_generate_tests in tests/integration/conftest.py)."""
    name = request.param
    if name == "s3rver":
        srv = request.getfixturevalue("s3rver")
        proxy = request.getfixturevalue("s3rver_proxy")
        # s3rver ignores signatures but only knows its own key id and secret.
        direct = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{srv.port}",
                              aws_access_key_id=ACCESS_KEY, aws_secret_access_key="S3RVER",
                              region_name="us-east-1",
                              config=Config(s3={"addressing_style": "path"}))
        return Backend(name, proxy.port, proxy, direct)
    cluster = request.getfixturevalue("rgw_cluster")
    direct = rgw_client(cluster.port)
    if name == "rgw-proxy":
        proxy = request.getfixturevalue("rgw_proxy")
        return Backend(name, proxy.port, proxy, direct)
    return Backend(name, cluster.port, None, direct)


@pytest.fixture
def s3proxy(s3backend):
    proxy = s3backend.proxy
    assert proxy is not None, f"{s3backend.name} has no proxy: s3proxy only runs on {PROXIED}"
    proxy.reset()
    yield proxy
    proxy.reset()


@pytest.fixture
def direct(s3backend):
    """A boto3 client talking to the store itself, bypassing ferry and the proxy."""
    return s3backend.direct


def stores_for(metafunc):
    """(stores a test runs on, reason it skips the others or None)."""
    mark = metafunc.definition.get_closest_marker("s3stores")
    default = PROXIED if "s3proxy" in metafunc.fixturenames else ("s3rver", "rgw")
    if mark is None:
        return default, None
    wanted = tuple(mark.args)
    unknown = [n for n in wanted if n not in STORES]
    assert not unknown and mark.kwargs.get("reason"), \
        f"{metafunc.definition.nodeid}: s3stores needs known stores and a reason"
    return wanted, mark.kwargs["reason"]


def clean_env(extra=None):
    """The environment without AWS credentials, so each test says what it uses."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                        "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE")}
    env["HOME"] = "/nonexistent"
    env.update(extra or {})
    return env


class StoreRunner:
    def __init__(self, workdir, port):
        self.workdir = str(workdir)
        self.port = port

    def conf(self, extra="", creds=True):
        text = (f"[store]\ntype = s3\nendpoint = http://127.0.0.1:{self.port}\n"
                f"bucket = {BUCKET}\nregion = us-east-1\n"
                "connect_timeout = 2s\nlow_speed_time = 1s\n")
        if "retries =" not in extra:
            text += "retries = 4\n"
        if creds:
            text += f"access_key = {ACCESS_KEY}\nsecret_key = {SECRET_KEY}\n"
        text += extra
        path = os.path.join(self.workdir, "store.conf")
        with open(path, "w") as f:
            f.write(text)
        return path

    def run(self, *args, conf_extra="", creds=True, env=None, opts=(), timeout=60):
        conf = self.conf(conf_extra, creds)
        cmd = [storetest.tool("store_tool"), "-c", conf, "--retry-base", "10", *opts, *args]
        p = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(env),
                           timeout=timeout)
        return p


@pytest.fixture
def store(tmp_path, s3backend):
    if s3backend.proxy is not None:
        s3backend.proxy.reset()
    return StoreRunner(tmp_path, s3backend.port)
