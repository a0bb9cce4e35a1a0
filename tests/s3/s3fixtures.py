"""Pytest fixtures for the store tests: s3rver (pinned in tests/s3rver), the
verifying proxy in front of it, a direct boto3 client for reading back what was
really stored, and a runner for tests/tools/store_tool."""
import os
import select
import subprocess
import time

import boto3
import pytest
from botocore.config import Config

import storetest
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


@pytest.fixture(scope="module")
def s3rver(tmp_path_factory):
    srv = S3rver(tmp_path_factory.mktemp("s3rver")).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def s3proxy_module(s3rver):
    proxy = S3Proxy(s3rver.port, ACCESS_KEY, SECRET_KEY).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def s3proxy(s3proxy_module):
    s3proxy_module.reset()
    yield s3proxy_module
    s3proxy_module.reset()


@pytest.fixture(scope="module")
def direct(s3rver):
    """A boto3 client talking to s3rver itself, bypassing ferry and the proxy."""
    return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{s3rver.port}",
                        aws_access_key_id=ACCESS_KEY, aws_secret_access_key="S3RVER",
                        region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}))


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
def store(tmp_path, s3proxy):
    return StoreRunner(tmp_path, s3proxy.port)
