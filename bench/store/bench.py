#!/usr/bin/python3
"""Upload benchmark: ferry's store client vs `rclone copy`, same s3rver, same
concurrency.

    /usr/bin/python3 bench/store/bench.py [--jobs 8] [--small 2000] [--large 4]
                                          [--build build] [--keep]

Uploads N x 64 KiB files and M x 256 MiB files (multipart: 64 MiB threshold,
16 MiB parts for both clients, one part in flight per file) to a fresh s3rver
on 127.0.0.1 and prints files/s, MB/s and the client's CPU seconds (user+sys
from wait4) side by side. s3rver is the same for both and is usually the
bottleneck; the CPU column is the client's own cost.
"""
import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "s3"))
from s3fixtures import ACCESS_KEY, BUCKET, S3rver  # noqa: E402

SECRET = "S3RVER"


def make_files(root, count, size):
    os.makedirs(root, exist_ok=True)
    block = os.urandom(1 << 20)
    for i in range(count):
        with open(os.path.join(root, f"f{i:05d}.bin"), "wb") as f:
            left = size
            # Distinct content per file without paying for urandom each time.
            f.write(i.to_bytes(8, "little"))
            left -= 8
            while left > 0:
                n = min(left, len(block))
                f.write(block[:n])
                left -= n


def timed(cmd, env):
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{cmd[0]} failed:\n{out.decode(errors='replace')}")
    return wall, ru.ru_utime + ru.ru_stime


def run_ferry(build, port, src, prefix, jobs, workdir):
    conf = os.path.join(workdir, f"ferry-{prefix}.conf")
    with open(conf, "w") as f:
        f.write(f"[store]\ntype = s3\nendpoint = http://127.0.0.1:{port}\nbucket = {BUCKET}\n"
                f"prefix = {prefix}/\naccess_key = {ACCESS_KEY}\nsecret_key = {SECRET}\n")
    tool = os.path.join(ROOT, build, "tests", "tools", "store_tool")
    return timed([tool, "-c", conf, "--threshold", "64MiB", "--part-size", "16MiB",
                  "put-many", str(jobs), src], dict(os.environ))


def rclone_env(port):
    """rclone's environment: remote "bench:" is the s3rver on port. Without
    AWS_CA_BUNDLE, which rclone refuses to start with."""
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    env.update({
        "RCLONE_CONFIG_BENCH_TYPE": "s3", "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
        "RCLONE_CONFIG_BENCH_ENDPOINT": f"http://127.0.0.1:{port}",
        "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": ACCESS_KEY,
        "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": SECRET,
        "RCLONE_CONFIG_BENCH_REGION": "us-east-1",
        "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true",
    })
    return env


def run_rclone(port, src, prefix, jobs):
    env = rclone_env(port)
    return timed(["rclone", "copy", src, f"bench:{BUCKET}/{prefix}", "--transfers", str(jobs),
                  "--checkers", str(jobs), "--s3-upload-cutoff", "64M", "--s3-chunk-size", "16M",
                  "--s3-upload-concurrency", "1", "--s3-no-check-bucket", "--no-check-dest",
                  "--config", "/dev/null", "-q"], env)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--small", type=int, default=2000)
    ap.add_argument("--large", type=int, default=4)
    ap.add_argument("--build", default="build")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    if not shutil.which("rclone"):
        sys.exit("rclone is not installed (scripts/deps.sh --bench)")
    work = tempfile.mkdtemp(prefix="ferry-bench-store-")
    try:
        small, large = os.path.join(work, "small"), os.path.join(work, "large")
        make_files(small, a.small, 64 * 1024)
        make_files(large, a.large, 256 * 1024 * 1024)
        srv = S3rver(os.path.join(work, "s3rver")).start()
        rows = []
        try:
            for name, src, nfiles, size in (("small", small, a.small, 64 * 1024),
                                            ("large", large, a.large, 256 << 20)):
                for client in ("ferry", "rclone"):
                    prefix = f"{client}-{name}"
                    if client == "ferry":
                        wall, cpu = run_ferry(a.build, srv.port, src, prefix, a.jobs, work)
                    else:
                        wall, cpu = run_rclone(srv.port, src, prefix, a.jobs)
                    mb = nfiles * size / 1e6
                    rows.append((f"{a.small if name == 'small' else a.large} x "
                                 f"{'64 KiB' if name == 'small' else '256 MiB'}", client,
                                 nfiles / wall, mb / wall, cpu, wall))
        finally:
            srv.stop()
        print(f"store upload to s3rver 3.7.1, {a.jobs} concurrent transfers")
        print(f"{'files':<16}{'client':<8}{'files/s':>10}{'MB/s':>10}{'CPU s':>10}{'wall s':>10}")
        for r in rows:
            print(f"{r[0]:<16}{r[1]:<8}{r[2]:>10.1f}{r[3]:>10.1f}{r[4]:>10.2f}{r[5]:>10.2f}")
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
