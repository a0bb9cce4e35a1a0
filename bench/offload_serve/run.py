#!/usr/bin/python3
"""Offload serving benchmark (issue 9): what a request under url_prefix costs.

Tests, each server with one worker pinned to one CPU and wrk (one thread) on
another, servers taking turns over ROUNDS rounds (medians shown):

- hit:      GET /static/4k.bin, a file still in the spool (served locally);
- redirect: GET /static/missing.jpg, a file no longer local: 302 to the bucket;
- proxy:    GET /static/1m.bin, a 1 MiB object served through ferry from an
            origin (an nginx serving the bucket's files, pinned to the client's
            CPU, so the store is not the bottleneck) vs nginx proxy_pass to the
            same origin (upstream keepalive); and ferry's dir store proxy vs its
            own static 1 MiB file (targets: ferry's CPU/request at most 0.7x
            nginx's; dir proxy at least 0.9x static's throughput).

Peers: lighttpd 1.4 + mod_magnet with the classic script (the physical path
attracted to a Lua script that stats it and, when it is missing, sets
Location to the bucket URL plus the name and returns 302), nginx with
`try_files $uri @s3` and a redirect in @s3, and the floor (bench/floor.c: one
recv and one send of the same response bytes, no parsing, no files), which
bounds what any server can reach here. For the redirect the run also has
floor-open: the floor plus one openat() of the missing name in the spool per
request, the lookup every server here must make before it redirects (ferry's
openat2, lighttpd's and nginx's stat), so ferry's ratio to it is the part of
the target any server can act on. Also ferry's presign mode against its own
public redirect (target: at most 1.3x the CPU per request).

CPU per request is utime+stime of the server's process tree (from /proc) over
the run divided by the requests wrk completed.

Usage: bench/offload_serve/run.py [--ferry BIN] [--seconds S] [--rounds N] [--json FILE]
Standard library only; /usr/bin/python3.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "maint"))
from measure import cpu_us, proc_tree, rss_kib  # noqa: E402  (bench/measure.py)
from run import (CLIENT_CPU, CONNS, Server, fetch, free_port, log, run_wrk,  # noqa: E402
                 save_results,
                 start_ferry_with, start_lighttpd_with, start_nginx_with)  # (bench/maint/run.py)

PUBLIC = "https://photos.s3.example.com/originals/"
PEERS = ("ferry", "lighttpd", "nginx", "floor")


def setup(work):
    spool = f"{work}/spool"
    os.makedirs(spool, exist_ok=True)
    with open(f"{spool}/4k.bin", "wb") as f:
        f.write(bytes(range(256)) * 16)
    # nginx and lighttpd see the spool as /static/ below their document root.
    for root in ("ngx-root", "lt-root"):
        os.makedirs(f"{work}/{root}", exist_ok=True)
        os.symlink(spool, f"{work}/{root}/static")
    os.makedirs(f"{work}/run", exist_ok=True)
    os.makedirs(f"{work}/nginx", exist_ok=True)
    # The 1 MiB object: in the origin's bucket, in the dir store, and as a
    # static file for ferry's own baseline.
    big = os.urandom(1 << 20)
    for d in ("origin/photos/originals", "store/originals", "static-root", "origin-w/nginx"):
        os.makedirs(f"{work}/{d}", exist_ok=True)
    for d in ("origin/photos/originals", "store/originals", "static-root"):
        with open(f"{work}/{d}/1m.bin", "wb") as f:
            f.write(big)
    os.chmod(work, 0o755)
    return big


S3_STORE = """[store]
type = s3
endpoint = http://127.0.0.1:{port}
bucket = photos
region = us-east-1
prefix = originals/
access_key = AKIDEXAMPLE
secret_key = wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY
"""


def start_ferry(work, ferry_bin, name, origin_port=9):
    """ferry as name says: ferry (public redirect), ferry-presign,
    ferry-proxy (s3 store at the origin), ferry-dirproxy (dir store) or
    ferry-static (no offload section: root holds the file)."""
    if name == "ferry-static":
        return start_ferry_with(work, ferry_bin, f"{work}/static-root", "", name)
    mode = {"ferry": "public", "ferry-presign": "presign"}.get(name, "proxy")
    store = (f"[store]\ntype = dir\npath = {work}/store\nprefix = originals/\n"
             if name == "ferry-dirproxy" else S3_STORE.format(port=origin_port))
    return start_ferry_with(work, ferry_bin, f"{work}/run", store + f"""[offload]
spool = {work}/spool
url_prefix = /static/
settle = 1h
rescan_interval = 0
redirect = {mode}
public_url = {PUBLIC}
""", name)


def start_nginx(work):
    return start_nginx_with(work, free_port(), f"""        root {work}/ngx-root;
        location /static/ {{
            try_files $uri @s3;
        }}
        location @s3 {{
            rewrite ^/static/(.*)$ {PUBLIC}$1 redirect;
        }}""")


def start_origin(work):
    """The bucket's files over HTTP, pinned to the client's CPU."""
    return start_nginx_with(f"{work}/origin-w", free_port(), f"        root {work}/origin;",
                            name="origin", cpu=CLIENT_CPU)


def start_nginx_proxy(work, origin_port):
    return start_nginx_with(work, free_port(), """        location /static/ {
            proxy_pass http://origin/photos/originals/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_max_temp_file_size 0;
        }""", http=f"    upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 16; }}",
                            name="nginx-proxy")


def start_lighttpd(work):
    port = free_port()
    with open(os.path.join(HERE, "redirect.lua")) as src, open(f"{work}/redirect.lua", "w") as dst:
        dst.write(src.read().replace("@PUBLIC@", PUBLIC).replace("@SKIP@", str(len("/static/") + 1)))
    return start_lighttpd_with(work, port, f"{work}/lt-root", f"""server.follow-symlink = "enable"
magnet.attract-physical-path-to = ( "{work}/redirect.lua" )
""")


def start_floor(work, test, ferry_answer, name="floor"):
    """bench/floor.c sending ferry's own answer's status, body and main
    headers for this test; floor-open also opens the missing file's name in
    the spool for each request."""
    port = free_port()
    floor = f"{work}/floor"
    if not os.path.exists(floor):
        subprocess.run(["cc", "-O2", "-o", floor, os.path.join(REPO, "bench", "floor.c")],
                       check=True)
    status, hdrs, body = ferry_answer
    path = f"{work}/floor-{test}.body"
    with open(path, "wb") as f:
        f.write(body)
    if status == 302:
        args = ["302 Found", f"Location: {hdrs['location']}\r\n"]
    else:
        args = ["200 OK", f"Last-Modified: {hdrs.get('last-modified', '')}\r\n"]
    env = None
    if name == "floor-open":
        env = dict(os.environ, FLOOR_OPENAT=f"{work}/spool/missing name.jpg")
    return Server(name, [floor, str(port), path] + args, port, env=env)


TESTS = {"hit": "/static/4k.bin", "redirect": "/static/missing%20name.jpg",
         "proxy": "/static/1m.bin"}
SERVERS = {"hit": PEERS, "redirect": PEERS + ("floor-open", "ferry-presign"),
           "proxy": ("ferry-proxy", "nginx-proxy", "ferry-dirproxy", "ferry-static")}


def path_of(name, test):
    return "/1m.bin" if name == "ferry-static" else TESTS[test]


def check(name, port, test, expect_body):
    st, h, body = fetch(port, path_of(name, test))
    if test in ("hit", "proxy"):
        assert st == 200 and body == expect_body, (name, test, st, body[:100])
    else:
        assert st == 302, (name, test, st, h)
        loc = h.get("location", "")
        want = PUBLIC + "missing%20name.jpg"
        if name.startswith("ferry-presign"):
            assert loc.startswith("http://127.0.0.1:") and "/photos/originals/missing%20name.jpg?" in loc, loc
        else:
            # lighttpd's script appends the decoded path, as the classic one did.
            assert loc in (want, PUBLIC + "missing name.jpg"), (name, loc)


def measure(server, test, seconds):
    path = path_of(server.name, test)
    run_wrk(server.port, 1, path)  # warm-up, unmeasured
    c0 = cpu_us(proc_tree(server.pid))
    n, rps, bad, errors = run_wrk(server.port, seconds, path)
    c1 = cpu_us(proc_tree(server.pid))
    if bad:
        raise RuntimeError(f"{server.name} {test}: {bad} of {n} responses were 4xx/5xx")
    return {"server": server.name, "test": test, "requests": n, "rps": rps,
            "cpu_us_per_req": (c1 - c0) / n, "rss_kib": rss_kib(proc_tree(server.pid)),
            "socket_errors": errors}


WHAT = {"hit": "local hit, 4 KiB", "redirect": "redirect for a missing file (302)",
        "proxy": "1 MiB object through ferry (proxy mode)"}


def table(test, names, med, base, args):
    """Print the markdown table of medians, CPU/request relative to base."""
    print(f"\n## Offload prefix: {WHAT[test]}; wrk -t1 -c{CONNS} -d{args.seconds}s, "
          f"1 server worker, median of {args.rounds} rounds\n")
    print("| server | req/s | CPU us/req (range) | RSS KiB | CPU/req vs first |")
    print("|---|---:|---:|---:|---:|")
    for name in names:
        m = med[name]
        print(f"| {name} | {m['rps']:.0f} | {m['cpu_us_per_req']:.2f} "
              f"({m['range'][0]:.2f}-{m['range'][1]:.2f}) | {m['rss_kib']:.0f} | "
              f"{m['cpu_us_per_req'] / base['cpu_us_per_req']:.2f}x |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ferry", default=os.path.join(REPO, "build-bench", "ferry"))
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", help="append raw results here")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="ferry-bench-offload.")
    big = setup(work)
    expect = {"hit": bytes(range(256)) * 16, "redirect": None, "proxy": big}
    results = []
    origin = None
    try:
        origin = start_origin(work)
        # ferry's answers, which the floor repeats byte for byte.
        srv = start_ferry(work, args.ferry, "ferry")
        try:
            answers = {t: fetch(srv.port, TESTS[t]) for t in ("hit", "redirect")}
        finally:
            srv.stop()
        for rnd in range(args.rounds):
            for test in TESTS:
                for name in SERVERS[test]:
                    if name.startswith("floor"):
                        srv = start_floor(work, test, answers[test], name)
                    elif name.startswith("ferry"):
                        srv = start_ferry(work, args.ferry, name, origin.port)
                    elif name == "lighttpd":
                        srv = start_lighttpd(work)
                    elif name == "nginx-proxy":
                        srv = start_nginx_proxy(work, origin.port)
                    else:
                        srv = start_nginx(work)
                    try:
                        if not name.startswith("floor"):
                            check(name, srv.port, test, expect[test])
                        r = measure(srv, test, args.seconds)
                        r["round"] = rnd
                        results.append(r)
                        log(f"round {rnd} {test} {name}: {r['rps']:.0f} req/s, "
                            f"{r['cpu_us_per_req']:.2f} us CPU/req, RSS {r['rss_kib']} KiB")
                    finally:
                        srv.stop()
    finally:
        if origin:
            origin.stop()
        save_results(args.json, results)
        shutil.rmtree(work, ignore_errors=True)

    for test in TESTS:
        names = [n for n in SERVERS[test]
                 if any(r["server"] == n and r["test"] == test for r in results)]
        med = {}
        for name in names:
            rs = [r for r in results if r["server"] == name and r["test"] == test]
            med[name] = {k: statistics.median(r[k] for r in rs)
                         for k in ("rps", "cpu_us_per_req", "rss_kib")}
            med[name]["range"] = (min(r["cpu_us_per_req"] for r in rs),
                                  max(r["cpu_us_per_req"] for r in rs))
        if test == "proxy":
            table(test, names, med, med["ferry-proxy"], args)
            pr = med["ferry-proxy"]["cpu_us_per_req"] / med["nginx-proxy"]["cpu_us_per_req"]
            dr = med["ferry-dirproxy"]["rps"] / med["ferry-static"]["rps"]
            print(f"\nferry proxy CPU/request: {pr:.2f}x nginx proxy_pass's (target <= 0.7x: "
                  f"{'met' if pr <= 0.7 else 'NOT met'}); dir store proxy throughput "
                  f"{dr:.2f}x ferry's static (target >= 0.9x: {'met' if dr >= 0.9 else 'NOT met'})")
            continue
        f = med["ferry"]
        table(test, names, med, f, args)
        fc = f["cpu_us_per_req"]
        peers = ", ".join(f"{fc / med[p]['cpu_us_per_req']:.2f}x {p}'s"
                          for p in ("lighttpd", "nginx"))
        floor = fc / med["floor"]["cpu_us_per_req"]
        print(f"\nferry CPU/request: {peers}; {floor:.2f}x the floor"
              + (f" (target: below every peer and <= 1.10x the floor: "
                 f"{'met' if floor <= 1.10 and all(fc < med[p]['cpu_us_per_req'] for p in ('lighttpd', 'nginx')) else 'NOT met'})"
                 if test == "redirect" else ""))
        if test == "redirect" and "floor-open" in med:
            print(f"ferry CPU/request: {fc / med['floor-open']['cpu_us_per_req']:.2f}x the floor "
                  f"with its one openat() per request ({med['floor-open']['cpu_us_per_req']:.2f} "
                  f"vs {med['floor']['cpu_us_per_req']:.2f} us without)")
        if test == "redirect" and "ferry-presign" in med:
            pr = med["ferry-presign"]["cpu_us_per_req"] / fc
            print(f"ferry presign CPU/request: {pr:.2f}x its public redirect's "
                  f"(target <= 1.3x: {'met' if pr <= 1.3 else 'NOT met'})")


if __name__ == "__main__":
    main()
