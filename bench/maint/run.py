#!/usr/bin/python3
"""Maintenance benchmark: ferry's 503 vs lighttpd+mod_magnet and nginx's
`if (-f flag) { return 503; }` recipe, and how long `ferry down` takes to return.

Each server runs one worker pinned to one CPU, wrk (one thread) is pinned to
another. Per run: requests/s, server CPU microseconds per request
(utime+stime of the server's process tree from /proc/PID/stat over the run,
divided by the requests wrk completed), and the server's RSS after the run.
Servers take turns over ROUNDS rounds; the table shows medians.

Then, with wrk loading ferry, `ferry down`/`ferry up` are toggled TOGGLES times:
the CLI's wall time to return (median, p99), and the admin-socket round trip
alone (connect, `down`, reply) which excludes process start-up.

Usage: bench/maint/run.py [--ferry BIN] [--seconds S] [--rounds N] [--toggles N]
Standard library only; /usr/bin/python3.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))
from measure import cpu_us, proc_tree, rss_kib  # noqa: E402  (bench/measure.py)
SERVER_CPU = os.environ.get("BENCH_SERVER_CPU", "1")
CLIENT_CPU = os.environ.get("BENCH_CLIENT_CPU", "0")
CONNS = int(os.environ.get("BENCH_CONNS", "50"))

# A realistic maintenance page (about 1.5 KB).
PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Down for maintenance</title>
<style>
body { font-family: system-ui, sans-serif; margin: 0; background: #f6f6f4; color: #222; }
main { max-width: 36rem; margin: 12vh auto; padding: 2rem; background: #fff;
       border-radius: 8px; box-shadow: 0 1px 4px rgba(0,0,0,.08); }
h1 { font-size: 1.6rem; margin-top: 0; }
p { line-height: 1.5; }
.small { color: #666; font-size: .9rem; }
</style>
</head>
<body>
<main>
<h1>We'll be right back</h1>
<p>{{message}}</p>
<p>Uploads and downloads are paused while we upgrade our storage. Nothing you
uploaded is lost; please try again in a few minutes.</p>
<p class="small">Retry after: {{retry_after}} seconds.</p>
</main>
</body>
</html>
"""
MESSAGE = "Scheduled maintenance in progress."


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, proc, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("server did not start listening")


def fetch(port, path="/", method="GET"):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    body = "Content-Length: 5\r\n\r\nhello" if method == "POST" else "\r\n"
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n{body}".encode())
    data = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    hdrs = {k.lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
    return int(lines[0].split()[1]), hdrs, body


class Server:
    def __init__(self, name, argv, port, env=None, cwd=None, cpu=None):
        self.name, self.port = name, port
        self.proc = subprocess.Popen(["taskset", "-c", cpu or SERVER_CPU] + argv, cwd=cwd, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port, self.proc)
        self.pid = self.proc.pid

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run_wrk(port, seconds, path="/"):
    out = subprocess.run(["taskset", "-c", CLIENT_CPU, "wrk", "-t1", f"-c{CONNS}", f"-d{seconds}s",
                          f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True,
                         check=True).stdout
    n = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return n, rps, int(non2xx.group(1)) if non2xx else 0, errors.group(1) if errors else ""


def measure(server, seconds):
    run_wrk(server.port, 1)  # warm-up, unmeasured
    c0 = cpu_us(proc_tree(server.pid))
    n, rps, non2xx, errors = run_wrk(server.port, seconds)
    c1 = cpu_us(proc_tree(server.pid))
    if non2xx != n:
        raise RuntimeError(f"{server.name}: {n - non2xx} of {n} responses were not 503 ({errors})")
    return {"server": server.name, "requests": n, "rps": rps, "cpu_us_per_req": (c1 - c0) / n,
            "rss_kib": rss_kib(proc_tree(server.pid)), "socket_errors": errors}


def check_503(name, port, expect_body):
    st, h, body = fetch(port)
    assert st == 503, (name, st)
    assert h.get("x-maintenance-mode") == "1", (name, h)
    assert h.get("retry-after") == "300", (name, h)
    assert "no-store" in h.get("cache-control", ""), (name, h)
    assert body == expect_body, (name, body[:200])
    st, h, body = fetch(port, "/", "POST")
    assert st == 503, (name, "POST", st)


def setup(work, ferry_bin):
    os.makedirs(f"{work}/public", exist_ok=True)
    os.makedirs(f"{work}/run", exist_ok=True)
    os.makedirs(f"{work}/nginx", exist_ok=True)
    with open(f"{work}/public/index.html", "w") as f:
        f.write("<h1>the live site</h1>\n")
    with open(f"{work}/maintenance.html", "w") as f:
        f.write(PAGE)
    # The page the peers send is the rendered one, so all three send the same bytes.
    rendered = PAGE.replace("{{message}}", MESSAGE).replace("{{retry_after}}", "300")
    with open(f"{work}/public/maintenance-rendered.html", "w") as f:
        f.write(rendered)
    open(f"{work}/maintenance.flag", "w").close()
    os.chmod(work, 0o755)
    return rendered.encode()


def start_ferry_with(work, ferry_bin, root, sections, name="ferry"):
    """ferry with one worker, no access log and its state under work/run,
    serving root, with the config sections given (also used by
    bench/offload_serve/run.py)."""
    port = free_port()
    with open(f"{work}/ferry.conf", "w") as f:
        f.write(f"""[server]
listen = 127.0.0.1:{port}
root = {root}
workers = 1
admin_socket = {work}/run/ferry.sock
state_dir = {work}/run
access_log = off
error_log = {work}/ferry.log
{sections}""")
    return Server(name, [ferry_bin, "serve", "-c", f"{work}/ferry.conf"], port, cwd=work)


def start_ferry(work, ferry_bin):
    return start_ferry_with(work, ferry_bin, f"{work}/public", f"""[maintenance]
page = {work}/maintenance.html
retry_after = 300
allow_paths = /healthz
""")


def start_nginx_with(work, port, server, http="", name="nginx", cpu=None):
    """nginx with one worker and everything under work/nginx, listening on
    port with the server block's other directives given, and more http-level
    directives (also used by bench/offload_serve/run.py)."""
    with open(f"{work}/nginx/nginx.conf", "w") as f:
        f.write(f"""worker_processes 1;
daemon off;
master_process on;
pid {work}/nginx/nginx.pid;
error_log {work}/nginx/error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {work}/nginx;
    proxy_temp_path {work}/nginx;
    fastcgi_temp_path {work}/nginx;
    uwsgi_temp_path {work}/nginx;
    scgi_temp_path {work}/nginx;
{http}
    server {{
        listen 127.0.0.1:{port};
{server}
    }}
}}
""")
    return Server(name, ["nginx", "-c", f"{work}/nginx/nginx.conf", "-p", f"{work}/nginx"],
                  port, cpu=cpu)


def start_nginx(work):
    port = free_port()
    return start_nginx_with(work, port, f"""        root {work}/public;
        error_page 503 /maintenance-rendered.html;
        location / {{
            if (-f {work}/maintenance.flag) {{ return 503; }}
        }}
        location = /maintenance-rendered.html {{
            internal;
            default_type text/html;
            add_header X-Maintenance-Mode 1 always;
            add_header Retry-After 300 always;
            add_header Cache-Control no-store always;
        }}""")


def start_lighttpd(work):
    port = free_port()
    with open(os.path.join(HERE, "maint.lua")) as src, open(f"{work}/maint.lua", "w") as dst:
        dst.write(src.read().replace("@PAGE@", f"{work}/lt/maintenance.html"))
    # The Lua script sends doc-root/../maintenance.html: the rendered page.
    os.makedirs(f"{work}/lt/public", exist_ok=True)
    shutil.copy(f"{work}/public/maintenance-rendered.html", f"{work}/lt/maintenance.html")
    return start_lighttpd_with(work, port, f"{work}/lt/public",
                               f'magnet.attract-raw-url-to = ( "{work}/maint.lua" )\n')


def start_lighttpd_with(work, port, docroot, lines):
    """lighttpd with mod_magnet on port serving docroot, with more config lines
    (also used by bench/offload_serve/run.py)."""
    with open(f"{work}/lighttpd.conf", "w") as f:
        f.write(f"""server.modules = ( "mod_magnet" )
server.document-root = "{docroot}"
server.bind = "127.0.0.1"
server.port = {port}
server.errorlog = "{work}/lighttpd-error.log"
server.max-connections = 4096
{lines}""")
    return Server("lighttpd", ["lighttpd", "-D", "-f", f"{work}/lighttpd.conf"], port)


def start_floor(work, expect):
    """bench/floor.c answering with the same 503 bytes: what one recv and one
    send per request cost here, a bound no server can beat."""
    port = free_port()
    floor = f"{work}/floor"
    subprocess.run(["cc", "-O2", "-o", floor, os.path.join(REPO, "bench", "floor.c")], check=True)
    body = f"{work}/floor-body.html"
    with open(body, "wb") as f:
        f.write(expect)
    extra = "X-Maintenance-Mode: 1\r\nRetry-After: 300\r\nCache-Control: no-store\r\n"
    return Server("floor", [floor, str(port), body, "503 Service Unavailable", extra], port)


def ferry_cli(ferry_bin, work, *args):
    return subprocess.run([ferry_bin, args[0], "-c", f"{work}/ferry.conf"] + list(args[1:]),
                          capture_output=True, text=True, cwd=work)


def admin_roundtrip(path, line):
    t0 = time.monotonic()
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.sendall(line)
    data = b""
    while not data.endswith(b"\n"):
        data += s.recv(65536)
    s.close()
    t1 = time.monotonic()
    assert json.loads(data)["ok"] is True, data
    return t1 - t0


def save_results(path, results):
    """Append results as JSON lines to path (nothing when path is None)."""
    if path:
        with open(path, "a") as f:
            for r in results:
                f.write(json.dumps(r) + "\n")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ferry", default=os.path.join(REPO, "build-bench", "ferry"))
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--toggles", type=int, default=100)
    ap.add_argument("--json", help="append raw results here")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="ferry-bench-maint.")
    expect = setup(work, args.ferry)
    results = []
    try:
        for rnd in range(args.rounds):
            for name in ("ferry", "lighttpd", "nginx", "floor"):
                if name == "floor":
                    srv = start_floor(work, expect)
                elif name == "ferry":
                    srv = start_ferry(work, args.ferry)
                    p = ferry_cli(args.ferry, work, "down", "--message", MESSAGE,
                                  "--retry-after", "300")
                    assert p.returncode == 0, p.stderr
                elif name == "lighttpd":
                    srv = start_lighttpd(work)
                else:
                    srv = start_nginx(work)
                try:
                    check_503(name, srv.port, expect)
                    r = measure(srv, args.seconds)
                    r["round"] = rnd
                    results.append(r)
                    log(f"round {rnd} {name}: {r['rps']:.0f} req/s, "
                        f"{r['cpu_us_per_req']:.2f} us CPU/req, RSS {r['rss_kib']} KiB")
                finally:
                    srv.stop()

        # `ferry down` latency under load (ferry serving the live page).
        srv = start_ferry(work, args.ferry)
        ferry_cli(args.ferry, work, "up")
        wrk = subprocess.Popen(["taskset", "-c", CLIENT_CPU, "wrk", "-t1", f"-c{CONNS}",
                                f"-d{max(60, args.toggles)}s", f"http://127.0.0.1:{srv.port}/"],
                               stdout=subprocess.DEVNULL)
        cli_down, cli_up, sock_down = [], [], []
        try:
            time.sleep(1)  # let wrk ramp up: the point is to switch under load
            for _ in range(args.toggles):
                t0 = time.monotonic()
                p = ferry_cli(args.ferry, work, "down")
                cli_down.append(time.monotonic() - t0)
                assert p.returncode == 0, p.stderr
                t0 = time.monotonic()
                p = ferry_cli(args.ferry, work, "up")
                cli_up.append(time.monotonic() - t0)
                assert p.returncode == 0, p.stderr
            for _ in range(args.toggles):
                sock_down.append(admin_roundtrip(f"{work}/run/ferry.sock", b"down\n"))
                admin_roundtrip(f"{work}/run/ferry.sock", b"up\n")
        finally:
            wrk.terminate()
            wrk.wait()
            srv.stop()
    finally:
        save_results(args.json, results)
        shutil.rmtree(work, ignore_errors=True)

    med = {}
    for name in ("ferry", "lighttpd", "nginx", "floor"):
        rs = [r for r in results if r["server"] == name]
        med[name] = {k: statistics.median(r[k] for r in rs)
                     for k in ("rps", "cpu_us_per_req", "rss_kib")}
        med[name]["cpu_range"] = (min(r["cpu_us_per_req"] for r in rs),
                                  max(r["cpu_us_per_req"] for r in rs))
    f = med["ferry"]
    print(f"\n## Maintenance response (503 + page), wrk -t1 -c{CONNS} -d{args.seconds}s, "
          f"1 server worker, median of {args.rounds} rounds\n")
    print("| server | req/s | CPU us/req (range) | RSS KiB | req/s vs ferry | CPU/req vs ferry |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in ("ferry", "lighttpd", "nginx", "floor"):
        m = med[name]
        print(f"| {name} | {m['rps']:.0f} | {m['cpu_us_per_req']:.2f} "
              f"({m['cpu_range'][0]:.2f}-{m['cpu_range'][1]:.2f}) | {m['rss_kib']:.0f} | "
              f"{m['rps'] / f['rps']:.2f}x | {m['cpu_us_per_req'] / f['cpu_us_per_req']:.2f}x |")
    ratio = f["cpu_us_per_req"] / med["lighttpd"]["cpu_us_per_req"]
    floor = med["floor"]["cpu_us_per_req"] / med["lighttpd"]["cpu_us_per_req"]
    print(f"\nferry CPU/request is {ratio:.2f}x lighttpd+mod_magnet's "
          f"(target <= 0.6x: {'met' if ratio <= 0.6 else 'NOT met'}); the floor "
          f"(bench/floor.c, one recv and one send of the same bytes) is {floor:.2f}x, "
          f"ferry/floor {f['cpu_us_per_req'] / med['floor']['cpu_us_per_req']:.2f}x")
    ms = lambda x: x * 1000
    print(f"\n## `ferry down` under load ({args.toggles} toggles, wrk -c{CONNS} on the live page)\n")
    print(f"- CLI `ferry down` returns in median {ms(statistics.median(cli_down)):.1f} ms, "
          f"p99 {ms(pct(cli_down, 99)):.1f} ms (`ferry up`: median "
          f"{ms(statistics.median(cli_up)):.1f} ms, p99 {ms(pct(cli_up, 99)):.1f} ms)")
    print(f"- admin socket round trip for `down` (no process start): median "
          f"{ms(statistics.median(sock_down)):.2f} ms, p99 {ms(pct(sock_down, 99)):.2f} ms")


if __name__ == "__main__":
    main()
