#!/usr/bin/python3
"""Offload benchmark: `ferry offload --once` against `rclone move`, peers in the same
run, on the same files and at the same concurrency:

* into one s3rver (no proxy: the store's own speed), beside a raw-PUT client
  (curl --parallel at the same concurrency: unsigned single PUTs on kept-alive
  connections, which s3rver accepts; nothing hashed, verified or deleted, so
  it is the store's ceiling), and
* into a local directory (ferry's dir store, rclone's local backend).

    /usr/bin/python3 bench/offload/bench.py --ferry build-bench/ferry [--jobs 8]
        [--small 2000] [--small-kib 64] [--large 4] [--large-mib 256]
        [--threshold-mib 64] [--part-mib 16] [--keep]

Each run moves a fresh hard-linked copy of the data set (both delete what they
moved); the table shows files/s, MB/s, the mover's CPU seconds (user+sys from
wait4) and peak RSS, and ferry's ratio to rclone. rclone gets AWS_CA_BUNDLE
removed from its environment (it refuses to start with it set).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "s3"))
sys.path.insert(0, os.path.join(ROOT, "bench", "store"))
from s3fixtures import ACCESS_KEY, BUCKET, S3rver  # noqa: E402
from bench import SECRET  # noqa: E402
from bench import make_files, rclone_env  # noqa: E402  (bench/store/bench.py)


def timed(cmd, env):
    """Run cmd; returns (wall s, CPU s, peak RSS MiB). The peak RSS comes from
    /usr/bin/time: a child forked from this Python process would count Python's."""
    t0 = time.monotonic()
    with tempfile.NamedTemporaryFile("r") as rss:
        p = subprocess.Popen(["/usr/bin/time", "-o", rss.name, "-f", "%M", *cmd], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = p.stdout.read()
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.monotonic() - t0
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"{cmd[0]} failed:\n{out.decode(errors='replace')}")
        peak_kib = int(rss.read().split()[-1])
    return wall, ru.ru_utime + ru.ru_stime, peak_kib / 1024


def fresh_copy(master, dst):
    """A hard-linked copy of master at dst (cheap, and each mover deletes its own)."""
    shutil.rmtree(dst, ignore_errors=True)
    subprocess.run(["cp", "-al", master, dst], check=True)


def left_in(path):
    return sum(len(files) for _, _, files in os.walk(path))


def run_ferry(a, work, name, spool, store_conf):
    run = os.path.join(work, f"run-{name}")
    conf = os.path.join(work, f"ferry-{name}.conf")
    with open(conf, "w") as f:
        f.write(f"[server]\nadmin_socket = {run}/ferry.sock\nstate_dir = {run}\n"
                f"error_log = {work}/ferry-{name}.log\n\n{store_conf}\n"
                f"[offload]\nspool = {spool}\nsettle = 0\nrescan_interval = 0\n"
                f"concurrency = {a.jobs}\nmultipart_threshold = {a.threshold_mib}MiB\n"
                f"part_size = {a.part_mib}MiB\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return timed([a.ferry, "offload", "-c", conf, "--once"], env)


def run_rclone(a, src, dst, port):
    return timed(["rclone", "move", src, dst, "--transfers", str(a.jobs),
                  "--checkers", str(a.jobs), "--s3-upload-cutoff", f"{a.threshold_mib}M",
                  "--s3-chunk-size", f"{a.part_mib}M", "--s3-upload-concurrency", "1",
                  "--s3-no-check-bucket", "--no-check-dest", "--config", "/dev/null", "-q"],
                 rclone_env(port))


def run_raw(a, src, port, tag, work):
    """PUT every file of src with curl --parallel (a.jobs at once): the ceiling."""
    cfg = os.path.join(work, f"curl-{tag}.cfg")
    with open(cfg, "w") as f:
        for d, _, files in os.walk(src):
            for n in sorted(files):
                path = os.path.join(d, n)
                rel = os.path.relpath(path, src)
                f.write(f'upload-file = "{path}"\nurl = "http://127.0.0.1:{port}/{BUCKET}/'
                        f'{tag}/{rel}"\noutput = "/dev/null"\n')
    return timed(["curl", "-sS", "--fail", "--parallel", "--parallel-max", str(a.jobs),
                  "-K", cfg], os.environ.copy())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ferry", required=True)
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--small", type=int, default=2000)
    ap.add_argument("--small-kib", type=int, default=64)
    ap.add_argument("--large", type=int, default=4)
    ap.add_argument("--large-mib", type=int, default=256)
    ap.add_argument("--threshold-mib", type=int, default=64)
    ap.add_argument("--part-mib", type=int, default=16)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    if not shutil.which("rclone"):
        sys.exit("rclone is not installed (scripts/deps.sh --bench)")
    if not os.access("/usr/bin/time", os.X_OK):
        sys.exit("/usr/bin/time is missing (Debian: apt-get install time)")
    work = tempfile.mkdtemp(prefix="ferry-bench-offload-")
    sets = [("small", a.small, a.small_kib << 10), ("large", a.large, a.large_mib << 20)]
    rows = []
    try:
        for name, n, size in sets:
            make_files(os.path.join(work, "master", name), n, size)
        srv = S3rver(os.path.join(work, "s3rver")).start()
        try:
            for name, n, size in sets:
                master = os.path.join(work, "master", name)
                for target in ("s3rver", "dir"):
                    for mover in ("ferry", "rclone") + (("raw PUT",) if target == "s3rver"
                                                         else ()):
                        tag = f"{mover}-{name}-{target}"
                        src = os.path.join(work, "src-" + tag)
                        fresh_copy(master, src)
                        if target == "s3rver" and mover == "ferry":
                            store = (f"[store]\ntype = s3\nendpoint = http://127.0.0.1:{srv.port}"
                                     f"\nbucket = {BUCKET}\nprefix = {tag}/\n"
                                     f"access_key = {ACCESS_KEY}\nsecret_key = {SECRET}\n")
                            r = run_ferry(a, work, tag, src, store)
                        elif target == "dir" and mover == "ferry":
                            store = f"[store]\ntype = dir\npath = {work}/dst-{tag}\n"
                            r = run_ferry(a, work, tag, src, store)
                        elif mover == "raw PUT":
                            r = run_raw(a, src, srv.port, tag.replace(" ", ""), work)
                        elif target == "s3rver":
                            r = run_rclone(a, src, f"bench:{BUCKET}/{tag}", srv.port)
                        else:
                            r = run_rclone(a, src, f"{work}/dst-{tag}", srv.port)
                        if mover != "raw PUT" and left_in(src):
                            sys.exit(f"{tag}: {left_in(src)} files were not moved")
                        wall, cpu, rss = r
                        rows.append((f"{n} x {size >> 10} KiB" if size < 1 << 20
                                     else f"{n} x {size >> 20} MiB", target, mover,
                                     n / wall, n * size / 1e6 / wall, cpu, rss, wall))
        finally:
            srv.stop()
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"offload: ferry offload --once vs rclone move, {a.jobs} transfers, "
          f"multipart from {a.threshold_mib} MiB in {a.part_mib} MiB parts")
    print(f"{'files':<16}{'into':<8}{'mover':<8}{'files/s':>9}{'MB/s':>9}{'CPU s':>8}"
          f"{'RSS MiB':>9}{'wall s':>8}")
    for r in rows:
        print(f"{r[0]:<16}{r[1]:<8}{r[2]:<8}{r[3]:>9.1f}{r[4]:>9.1f}{r[5]:>8.2f}{r[6]:>9.1f}"
              f"{r[7]:>8.2f}")
    print("ferry / rclone and ferry / raw PUT (files/s and MB/s: higher is better for ferry; "
          "CPU s: lower)")
    by = {(r[0], r[1], r[2]): r for r in rows}
    for r in rows:
        if r[2] == "ferry":
            continue
        f = by[(r[0], r[1], "ferry")]
        print(f"{f[0]:<16}{f[1]:<8}{'/' + r[2]:<8}{f[3] / r[3]:>9.2f}{f[4] / r[4]:>9.2f}"
              f"{(f[5] / r[5]) if r[5] else float('inf'):>8.2f}{f[6] / r[6]:>9.2f}"
              f"{f[7] / r[7]:>8.2f}")
    targets = []
    for r in rows:
        if r[2] != "ferry" or r[1] != "s3rver":
            continue
        rc, raw = by[(r[0], r[1], "rclone")], by[(r[0], r[1], "raw PUT")]
        small = r is rows[0] or r[0] == rows[0][0]
        if small:
            targets.append(f"- small files: files/s >= 1.5x rclone's: {r[3] / rc[3]:.2f}x; "
                           f">= 0.8x raw PUT: {r[3] / raw[3]:.2f}x")
        else:
            targets.append(f"- large files: MB/s >= rclone's: {r[4] / rc[4]:.2f}x")
        targets.append(f"  CPU s <= rclone's: {r[5] / rc[5]:.2f}x; RSS < 64 MiB: {r[6]:.1f} MiB")
    print("targets (issue 8), s3rver:")
    print("\n".join(targets))


if __name__ == "__main__":
    main()
