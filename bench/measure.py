#!/usr/bin/python3
"""Measurement helpers shared by the benchmarks in bench/.

A server is identified by the pid of its top process; its descendants (nginx's
workers) are found through /proc and counted with it. CPU time is utime+stime
from /proc/PID/stat (all threads of each process), RSS is VmRSS from
/proc/PID/status, both summed over the process tree.

Subcommands (each prints one JSON object per line; -o FILE also appends it):

  measure.py wrk  --pid PID --name NAME --test TEST [-o FILE] -- WRK ARGS...
      run wrk (with bench/wrk.lua, which must be among WRK ARGS) and report
      requests/s, server CPU microseconds per request and server RSS;
      --exclude COMM (repeatable) leaves the server's children of that name
      out of the server and counts them as the application, with the process
      tree of --app-pid PID (an application started outside the server)
  measure.py idle --pid PID --name NAME --port PORT --path PATH [--count N] [-o FILE]
      open N keep-alive connections, make one request on each, leave them idle,
      then report the server's RSS (and how many connections are still open)
  measure.py table FILE
      print the results as a Markdown table with ratios to ferry and the targets
      ("user" is the share of the CPU time spent in user space, the rest is the kernel);
      repeated runs of a test are shown as their median (and CPU range)
  measure.py sample --pid PID
      print the server's CPU microseconds and RSS now (for scripts of their own)

Python: /usr/bin/python3, standard library only.
"""
import argparse
import json
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---- /proc sampling -------------------------------------------------------


def _stat_fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    # The command name may contain spaces and parentheses: split after the last ')'.
    return data[data.rindex(")") + 2:].split()


def proc_tree(pid):
    """pid and all its descendants that are alive now."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(_stat_fields(entry)[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_split_us(pids):
    """(utime, stime) of the processes, in microseconds."""
    user = system = 0
    for pid in pids:
        try:
            f = _stat_fields(pid)
        except OSError:
            continue
        # Fields 14 and 15 of stat(5); index 0 here is field 3 (state).
        user += int(f[11])
        system += int(f[12])
    return user * 1_000_000 // CLK_TCK, system * 1_000_000 // CLK_TCK


def cpu_us(pids):
    """utime+stime of the processes, in microseconds."""
    return sum(cpu_split_us(pids))


def _sum_kib(pids, name, field):
    """Sum a "Field:   N kB" line of /proc/PID/<name> over the processes."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/{name}") as f:
                for line in f:
                    if line.startswith(field):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def rss_kib(pids):
    return _sum_kib(pids, "status", "VmRSS:")


def pss_kib(pids):
    """Proportional set size: shared pages (libraries, nginx's master/worker
    sharing) are split between the processes that map them."""
    return _sum_kib(pids, "smaps_rollup", "Pss:")


def sample(pid):
    pids = proc_tree(pid)
    return {"pids": pids, "cpu_us": cpu_us(pids), "rss_kib": rss_kib(pids),
            "pss_kib": pss_kib(pids)}


def emit(result, out_path):
    line = json.dumps(result, sort_keys=True)
    print(line, flush=True)
    if out_path:
        with open(out_path, "a") as f:
            f.write(line + "\n")


# ---- wrk ------------------------------------------------------------------

BENCH_RE = re.compile(r"^BENCH (.*)$", re.M)


def _comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def run_wrk(pid, wrk_cmd, exclude=(), app_pid=None):
    """Run wrk while sampling the server's CPU; returns the measurement dict.
    Processes named in exclude, and the tree of app_pid, are measured apart
    as the application."""
    tree = proc_tree(pid)
    pids = [p for p in tree if _comm(p) not in exclude]
    app = [p for p in tree if p not in pids] + (proc_tree(app_pid) if app_pid else [])
    user0, sys0 = cpu_split_us(pids)
    app0 = cpu_us(app)
    proc = subprocess.run(wrk_cmd, capture_output=True, text=True)
    user1, sys1 = cpu_split_us(pids)
    app1 = cpu_us(app)
    before, after = user0 + sys0, user1 + sys1
    rss = rss_kib(pids)
    pss = pss_kib(pids)
    if proc.returncode != 0:
        raise SystemExit(f"wrk failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    m = BENCH_RE.search(proc.stdout)
    if not m:
        raise SystemExit("wrk printed no BENCH line (is bench/wrk.lua passed with -s?):\n"
                         + proc.stdout + proc.stderr)
    w = {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    requests = w["requests"]
    seconds = w["duration_us"] / 1e6
    errors = w["connect"] + w["read"] + w["write"] + w["status"] + w["timeout"]
    return {
        "requests": requests,
        "seconds": round(seconds, 3),
        "rps": round(requests / seconds) if seconds else 0,
        "server_cpu_us": after - before,
        "user_share": round((user1 - user0) / (after - before), 3) if after > before else None,
        "cpu_us_per_req": round((after - before) / requests, 3) if requests else None,
        "rss_kib": rss,
        "pss_kib": pss,
        "processes": len(pids),
        "bytes_per_req": round(w["bytes"] / requests) if requests else 0,
        "errors": errors,
        "p50_us": w["p50_us"],
        "p99_us": w["p99_us"],
        "app_cpu_us_per_req": round((app1 - app0) / requests, 3) if requests and app else None,
    }


def cmd_wrk(args):
    if not args.wrk:
        raise SystemExit("measure.py wrk: give the wrk command after --")
    r = run_wrk(args.pid, args.wrk, tuple(args.exclude or ()), args.app_pid)
    r.update({"server": args.name, "test": args.test, "kind": "wrk"})
    problems = []
    if r["errors"]:
        problems.append(f"{r['errors']} wrk errors")
    if args.min_bytes is not None and r["bytes_per_req"] < args.min_bytes:
        problems.append(f"{r['bytes_per_req']} bytes/response < {args.min_bytes}")
    if args.max_bytes is not None and r["bytes_per_req"] > args.max_bytes:
        problems.append(f"{r['bytes_per_req']} bytes/response > {args.max_bytes}")
    r["problems"] = problems
    emit(r, args.output)
    # Problems are recorded and flagged in the table; the other runs go on.
    return 0


# ---- idle keep-alive connections --------------------------------------------


def _read_response(sock):
    """Read one HTTP response with Content-Length (blocking socket with a
    timeout); returns (status, body length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside the body")
        rest += chunk
    return status, len(rest)


def open_idle(port, path, count, batch=250, host="127.0.0.1"):
    """Open count connections and make one request on each; returns the open
    (now non-blocking) sockets. Works in batches so the listen backlog and
    the socket buffers stay small."""
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    socks = []
    while len(socks) < count:
        group = []
        for _ in range(min(batch, count - len(socks))):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(30)
            s.connect((host, port))
            group.append(s)
        for s in group:
            s.sendall(request)
        for s in group:
            status, _ = _read_response(s)
            if status != 200:
                raise RuntimeError(f"idle: request {path} got {status}")
            s.setblocking(False)
        socks.extend(group)
    return socks


def still_open(socks):
    """How many sockets the server has not closed (no EOF, no error)."""
    alive = 0
    for s in socks:
        try:
            if s.recv(1, socket.MSG_PEEK) == b"":
                continue
            alive += 1  # unexpected data, but open
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    return alive


def cmd_idle(args):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.count + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.count + 1000), hard))
    base = sample(args.pid)
    t0 = time.monotonic()
    socks = open_idle(args.port, args.path, args.count)
    opened = time.monotonic() - t0
    time.sleep(args.settle)  # let the server go idle before sampling; not a test
    after = sample(args.pid)
    alive = still_open(socks)
    r = {
        "server": args.name, "test": "idle", "kind": "idle",
        "connections": args.count, "still_open": alive,
        "rss_kib": after["rss_kib"], "rss_base_kib": base["rss_kib"],
        "bytes_per_conn": round((after["rss_kib"] - base["rss_kib"]) * 1024 / args.count),
        "cpu_us_per_req": round((after["cpu_us"] - base["cpu_us"]) / args.count, 3),
        "open_seconds": round(opened, 2), "processes": len(after["pids"]),
        "pss_kib": after["pss_kib"],
        "problems": [] if alive == args.count else [f"only {alive} of {args.count} still open"],
    }
    for s in socks:
        s.close()
    emit(r, args.output)
    return 0


# ---- table ------------------------------------------------------------------

TEST_TITLES = {
    "4k": "4 KiB file, keep-alive",
    "1m": "1 MiB file, keep-alive",
    "304": "304 revalidation (If-None-Match)",
    "idle": "{n:,} idle keep-alive connections",
}
# Targets from issue 2: (test, metric, peer, max ratio ferry/peer).
TARGETS = [
    ("4k", "cpu_us_per_req", "lighttpd", 0.7),
    ("4k", "cpu_us_per_req", "nginx", 0.5),
    ("idle", "rss_kib", "lighttpd", 1.0),
]


def load(path):
    """Results per (test, server); repeated runs (rounds) are combined into
    their median, with the CPU range kept for the table."""
    runs = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                runs.setdefault((r["test"], r["server"]), []).append(r)
    results = {}
    for key, rs in runs.items():
        agg = dict(rs[0])
        for field in ("rps", "cpu_us_per_req", "user_share", "rss_kib", "pss_kib", "still_open",
                      "app_cpu_us_per_req", "p99_us"):
            values = [r[field] for r in rs if r.get(field) is not None]
            if values:
                agg[field] = statistics.median(values)
        cpus = [r["cpu_us_per_req"] for r in rs if r.get("cpu_us_per_req") is not None]
        agg["runs"] = len(rs)
        agg["cpu_min"], agg["cpu_max"] = (min(cpus), max(cpus)) if cpus else (None, None)
        agg["problems"] = [p for r in rs for p in r.get("problems", [])]
        results[key] = agg
    return results


def _title(results, test):
    counts = [r["connections"] for (t, _), r in results.items() if t == test and "connections" in r]
    return TEST_TITLES[test].format(n=counts[0] if counts else 10000)


def _ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "-"


def table(results, servers=("ferry", "nginx", "lighttpd", "floor")):
    out = []
    out.append("| test | server | requests/s | CPU µs/request | user | RSS MiB | PSS MiB "
               "| ferry/peer CPU | ferry/peer RSS |")
    out.append("|------|--------|-----------:|---------------:|-----:|--------:|--------:"
               "|---------------:|---------------:|")
    for test in TEST_TITLES:
        ferry = results.get((test, "ferry"))
        title = _title(results, test)
        for name in servers:
            r = results.get((test, name))
            if not r:
                continue
            rps = f"{round(r['rps']):,}" if "rps" in r else "-"
            if test == "idle":
                rps = f"{round(r['still_open']):,} open"
            cpu = f"{r['cpu_us_per_req']:.2f}" if r.get("cpu_us_per_req") is not None else "-"
            if r["runs"] > 1 and r["cpu_min"] is not None:
                cpu += f" ({r['cpu_min']:.2f}–{r['cpu_max']:.2f})"
            if test == "idle":
                cpu = f"{cpu} (per connect)"
            user = f"{r['user_share'] * 100:.0f}%" if r.get("user_share") is not None else "-"
            rss = f"{r['rss_kib'] / 1024:.1f}"
            pss = f"{r['pss_kib'] / 1024:.1f}" if "pss_kib" in r else "-"
            rc = rr = ""
            if ferry and name != "ferry":
                rc = _ratio(ferry.get("cpu_us_per_req"), r.get("cpu_us_per_req"))
                rr = _ratio(ferry["rss_kib"], r["rss_kib"])
            flag = " ⚠ " + "; ".join(r["problems"]) if r.get("problems") else ""
            out.append(f"| {title} | {name} | {rps} | {cpu} | {user} | {rss}{flag} | {pss} "
                       f"| {rc} | {rr} |")
    out.append("")
    for test, metric, peer, limit in TARGETS:
        f, p = results.get((test, "ferry")), results.get((test, peer))
        what = "CPU/request" if metric == "cpu_us_per_req" else "RSS"
        title = _title(results, test)
        if not f or not p or not p.get(metric):
            out.append(f"- target {title}: ferry {what} <= {limit}x {peer}'s: not measured")
            continue
        ratio = f[metric] / p[metric]
        verdict = "met" if ratio <= limit else "MISSED"
        line = f"- target {title}: ferry {what} <= {limit}x {peer}'s: {ratio:.2f}x, {verdict}"
        fl = results.get((test, "floor"))
        if fl and fl.get(metric):
            # What a server that only does recv+send would score on the same target.
            line += f" (floor: {fl[metric] / p[metric]:.2f}x; ferry/floor {f[metric] / fl[metric]:.2f}x)"
        out.append(line)
    return "\n".join(out)


def cmd_table(args):
    print(table(load(args.file)))
    return 0


def cmd_sample(args):
    s = sample(args.pid)
    print(json.dumps(s))
    return 0


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("wrk")
    w.add_argument("--pid", type=int, required=True)
    w.add_argument("--name", required=True)
    w.add_argument("--test", required=True)
    w.add_argument("--min-bytes", type=int)
    w.add_argument("--max-bytes", type=int)
    w.add_argument("--exclude", action="append")
    w.add_argument("--app-pid", type=int)
    w.add_argument("-o", "--output")
    w.add_argument("wrk", nargs=argparse.REMAINDER)
    i = sub.add_parser("idle")
    i.add_argument("--pid", type=int, required=True)
    i.add_argument("--name", required=True)
    i.add_argument("--port", type=int, required=True)
    i.add_argument("--path", required=True)
    i.add_argument("--count", type=int, default=10000)
    i.add_argument("--settle", type=float, default=1.0)
    i.add_argument("-o", "--output")
    t = sub.add_parser("table")
    t.add_argument("file")
    s = sub.add_parser("sample")
    s.add_argument("--pid", type=int, required=True)
    args = ap.parse_args(argv)
    if args.cmd == "wrk" and args.wrk and args.wrk[0] == "--":
        args.wrk = args.wrk[1:]
    return {"wrk": cmd_wrk, "idle": cmd_idle, "table": cmd_table, "sample": cmd_sample}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
