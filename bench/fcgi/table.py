#!/usr/bin/python3
"""The table of bench/fcgi/run.sh: results.jsonl (bench/measure.py wrk lines)
as Markdown, medians over the rounds, with ferry's ratios to each peer and
the targets of issue 10 (ferry's server CPU per request below every peer's,
its requests/s at least the best peer's).

    table.py RESULTS.jsonl
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from measure import load  # noqa: E402 - bench/measure.py, found through the path above

TITLES = {"hello": "GET hello world", "post1m": "POST 1 MiB",
          "accel4k": "X-Accel-Redirect 4 KiB"}
SERVERS = ("ferry", "nginx", "lighttpd")


def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "-"


def main(path):
    res = load(path)
    print("| test | server | requests/s | server CPU µs/request | app CPU µs/request | p99 ms "
          "| ferry/peer CPU | ferry/peer req/s |")
    print("|------|--------|-----------:|----------------------:|-------------------:|-------:"
          "|---------------:|-----------------:|")
    targets = []
    for test, title in TITLES.items():
        ferry = res.get((test, "ferry"))
        for name in SERVERS:
            r = res.get((test, name))
            if not r:
                continue
            cpu = f"{r['cpu_us_per_req']:.1f}" if r["cpu_us_per_req"] is not None else "-"
            if r["runs"] > 1 and r["cpu_min"] is not None:
                cpu += f" ({r['cpu_min']:.1f}–{r['cpu_max']:.1f})"
            app = f"{r['app_cpu_us_per_req']:.1f}" if r.get("app_cpu_us_per_req") is not None else "-"
            p99 = f"{r['p99_us'] / 1000:.2f}" if r.get("p99_us") is not None else "-"
            rc = rr = ""
            if ferry and name != "ferry":
                rc = ratio(ferry["cpu_us_per_req"], r["cpu_us_per_req"])
                rr = ratio(ferry["rps"], r["rps"])
            flag = " ⚠ " + "; ".join(r["problems"]) if r["problems"] else ""
            print(f"| {title} | {name} | {round(r['rps']):,}{flag} | {cpu} | {app} | {p99} "
                  f"| {rc} | {rr} |")
        peers = [res[(test, n)] for n in SERVERS[1:] if (test, n) in res]
        if ferry and peers and test != "accel4k":  # issue 11 asks for the figures only
            cpu_ok = all(ferry["cpu_us_per_req"] < p["cpu_us_per_req"] for p in peers)
            rps_ok = ferry["rps"] >= max(p["rps"] for p in peers)
            targets.append(f"- {title}: ferry CPU/request below every peer's: "
                           f"{'met' if cpu_ok else 'MISSED'}; requests/s at least the best "
                           f"peer's: {'met' if rps_ok else 'MISSED'}")
    print()
    print("\n".join(targets))


if __name__ == "__main__":
    main(sys.argv[1])
