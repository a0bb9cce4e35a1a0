"""The Prometheus endpoint and `ferry status` (issue 12): /metrics on its own
listener, parsed with prometheus_client's parser and checked by promtool;
counters exact after known requests; histograms cumulative and consistent
with the counters; a scrape answers fast with 10,000 open connections; the
endpoint is not on the public port and refuses clients outside allow_from;
`ferry status` shows the same numbers."""
import json
import os
import resource
import socket
import subprocess
import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import (FERRY_BIN, free_port, raw_exchange, read_response, request, wait_closed,
                      wait_for)

PAGE = b"<h1>static page</h1>\n"


def scrape_raw(port, method="GET", path="/metrics", source=None, timeout=5.0):
    """One request to the metrics listener, from source if given; the
    listener must close the connection after its response."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        if source:
            s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        resp, rest = read_response(s, head_request=method == "HEAD", timeout=timeout)
        closed, extra = wait_closed(s, timeout=timeout, rest=rest)
        assert closed and extra == b"", (resp, extra)
        assert resp.header("Connection") == "close", resp
    return resp


def scrape(port):
    """GET /metrics: {name: {labels tuple: value}} for every sample, and the text."""
    r = scrape_raw(port)
    assert r.status == 200, r
    assert r.header("Content-Type").startswith("text/plain; version=0.0.4"), r
    text = r.body.decode()
    samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples, text


def value(samples, name, **labels):
    return samples[name][tuple(sorted(labels.items()))]


def promtool_check(text):
    p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0 and p.stdout.strip() == "" and p.stderr.strip() == "", \
        (p.returncode, p.stdout, p.stderr)


def metrics_conf(port, allow="127.0.0.1/32 ::1/128"):
    return f"\n[metrics]\nlisten = 127.0.0.1:{port}\nallow_from = {allow}\n"


def start_origin(ferry_factory, tmp_path, extra=""):
    """ferry with a static root, an offload spool on a dir store, maintenance
    and the metrics listener; returns (ferry, metrics port, spool, store)."""
    mport = free_port()
    spool, store = tmp_path / "spool", tmp_path / "store"
    spool.mkdir()
    store.mkdir()
    conf = ("[server]\n" + extra + "\n[maintenance]\npage = ./maintenance.html\n"
            f"[store]\ntype = dir\npath = {store}\n"
            f"[offload]\nspool = {spool}\nurl_prefix = /static/\nsettle = 1h\n"
            + metrics_conf(mport))
    f = ferry_factory(conf, start=False)
    with open(os.path.join(f.workdir, "maintenance.html"), "w") as fh:
        fh.write("<h1>down</h1>\n")
    with open(os.path.join(f.root, "page.txt"), "wb") as fh:
        fh.write(PAGE)
    f.start()
    return f, mport, spool, store


def cli(f, *args):
    p = f.run_cli(*args)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_counters_exact_after_known_requests(ferry_factory, tmp_path):
    f, mport, spool, store = start_origin(ferry_factory, tmp_path)
    (spool / "local.jpg").write_bytes(b"L" * 1000)
    (store / "remote.jpg").write_bytes(b"R" * 3000)
    body_bytes = {"static": 0, "core": 0, "offload_local": 0, "proxy": 0, "maintenance": 0}
    for _ in range(3):
        r = request(f.port, path="/page.txt")
        assert r.status == 200 and r.body == PAGE, r
        body_bytes["static"] += len(r.body)
    for _ in range(2):
        r = request(f.port, path="/missing.txt")
        assert r.status == 404, r
        body_bytes["static"] += len(r.body)
    for _ in range(2):
        r, _, _ = raw_exchange(f.port, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        assert r.status == 400, r
        body_bytes["core"] += len(r.body)
    for _ in range(4):
        r = request(f.port, path="/static/local.jpg")
        assert r.status == 200 and r.body == b"L" * 1000, r
        body_bytes["offload_local"] += len(r.body)
    for _ in range(5):
        r = request(f.port, path="/static/remote.jpg")
        assert r.status == 200 and r.body == b"R" * 3000, r
        body_bytes["proxy"] += len(r.body)

    samples, text = scrape(mport)
    assert value(samples, "ferry_maintenance_mode") == 0
    cli(f, "down")
    samples, _ = scrape(mport)
    assert value(samples, "ferry_maintenance_mode") == 1
    for _ in range(6):
        r = request(f.port, path="/page.txt")
        assert r.status == 503 and b"down" in r.body, r
        body_bytes["maintenance"] += len(r.body)
    cli(f, "up")
    # Workers count a request once its response is written; wait for the last.
    wait_for(lambda: value(scrape(mport)[0], "ferry_http_requests_total", handler="static",
                           **{"class": "5xx"}) == 0
             and sum(scrape(mport)[0]["ferry_http_requests_total"].values()) == 22, 5,
             "every request counted")
    samples, text = scrape(mport)
    promtool_check(text)
    want = {("static", "2xx"): 3, ("static", "4xx"): 2, ("core", "4xx"): 2,
            ("offload_local", "2xx"): 4, ("proxy", "2xx"): 5, ("maintenance", "5xx"): 6}
    for key_labels, n in sorted(samples["ferry_http_requests_total"].items()):
        labels = dict(key_labels)
        key = (labels["handler"], labels["class"])
        assert n == want.get(key, 0), (key, n)
    assert value(samples, "ferry_maintenance_mode") == 0
    assert value(samples, "ferry_maintenance_responses_total") == 6
    assert value(samples, "ferry_maintenance_bypassed_total") == 0
    for handler, n in body_bytes.items():
        assert value(samples, "ferry_http_response_body_bytes_total", handler=handler) == n, \
            handler
    assert value(samples, "ferry_http_connections_accepted_total") == 22
    assert value(samples, "ferry_http_connections_refused_total") == 0
    version = subprocess.run([FERRY_BIN, "version"], capture_output=True, text=True).stdout
    assert value(samples, "ferry_build_info", version=version.split()[1]) == 1
    start = value(samples, "ferry_process_start_time_seconds")
    assert time.time() - 600 < start <= time.time()

    # Histograms: cumulative buckets, +Inf == _count == the handler's requests.
    for handler in ("core", "static", "maintenance", "offload_local", "redirect", "presign",
                    "proxy", "backend"):
        buckets = sorted(
            ((float(dict(k)["le"]), v) for k, v in
             samples["ferry_http_request_duration_seconds_bucket"].items()
             if dict(k)["handler"] == handler))
        counts = [v for _, v in buckets]
        assert counts == sorted(counts), (handler, buckets)
        assert buckets[-1][0] == float("inf")
        total = sum(v for k, v in samples["ferry_http_requests_total"].items()
                    if dict(k)["handler"] == handler)
        assert value(samples, "ferry_http_request_duration_seconds_count",
                     handler=handler) == total == counts[-1], handler
        assert value(samples, "ferry_http_request_duration_seconds_sum", handler=handler) >= 0

    # The same numbers in `ferry status --json` and in its text.
    st = json.loads(cli(f, "status", "--json"))
    reqs = st["server"]["metrics"]["http_requests_total"]
    got = {(e["handler"], e["class"]): e["value"] for e in reqs if e["value"]}
    assert got == want, got
    assert st["maintenance"]["metrics"]["maintenance_responses_total"] == 6
    # The offloader keeps working between two reads, so compare a status and a
    # scrape taken back to back until they agree (they did 1 vs 0 under load).
    wait_for(lambda: json.loads(cli(f, "status", "--json"))["offload"]["metrics"]
             ["offload_backlog_files"] == value(scrape(mport)[0], "ferry_offload_backlog_files"),
             10, "the status and the scrape agreeing on the offload backlog")
    text = cli(f, "status")
    assert "  http_requests_total{handler=proxy,class=2xx} 5\n" in text, text
    assert "  maintenance_responses_total 6\n" in text, text


def test_redirect_and_presign_counted(ferry_factory, tmp_path):
    mport = free_port()
    spool = tmp_path / "spool"
    spool.mkdir()
    s3 = ("[store]\ntype = s3\nendpoint = http://127.0.0.1:9\nbucket = bkt\nregion = eu-west-3\n"
          "access_key = AKIDEXAMPLE\nsecret_key = wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY\n")
    f = ferry_factory(s3 + f"[offload]\nspool = {spool}\nurl_prefix = /static/\nsettle = 1h\n"
                      "redirect = presign\n" + metrics_conf(mport))
    for _ in range(3):
        r = request(f.port, path="/static/gone.jpg")
        assert r.status == 302 and "X-Amz-Signature=" in r.header("Location"), r
    mport2 = free_port()
    g = ferry_factory(s3 + f"[offload]\nspool = {spool}\nurl_prefix = /static/\nsettle = 1h\n"
                      "redirect = public\npublic_url = https://cdn.example.com/o/\n"
                      + metrics_conf(mport2), subdir="second")
    for _ in range(2):
        r = request(g.port, path="/static/gone.jpg")
        assert r.status == 302 and r.header("Location") == "https://cdn.example.com/o/gone.jpg", r
    wait_for(lambda: value(scrape(mport)[0], "ferry_http_requests_total", handler="presign",
                           **{"class": "3xx"}) == 3, 5, "3 presign redirects counted")
    wait_for(lambda: value(scrape(mport2)[0], "ferry_http_requests_total", handler="redirect",
                           **{"class": "3xx"}) == 2, 5, "2 public redirects counted")
    assert value(scrape(mport)[0], "ferry_http_requests_total", handler="redirect",
                 **{"class": "3xx"}) == 0


def test_not_on_the_main_listener_nor_the_maintenance_page(ferry_factory, tmp_path):
    f, mport, _, _ = start_origin(ferry_factory, tmp_path)
    r = request(f.port, path="/metrics")
    assert r.status == 404 and b"ferry_" not in r.body, r
    cli(f, "down")
    r = request(f.port, path="/metrics")
    assert r.status == 503 and b"ferry_" not in r.body, r
    samples, _ = scrape(mport)
    assert value(samples, "ferry_maintenance_mode") == 1
    cli(f, "up")


def test_paths_methods_and_allow_from(ferry_factory, tmp_path):
    mport = free_port()
    f = ferry_factory(metrics_conf(mport, allow="127.0.0.1/32"))
    r = scrape_raw(mport, path="/other")
    assert r.status == 404 and b"ferry_" not in r.body, r
    r = scrape_raw(mport, method="POST")
    assert r.status == 405 and r.header("Allow") == "GET, HEAD" and b"ferry_" not in r.body, r
    r = scrape_raw(mport, method="HEAD")
    assert r.status == 200 and r.body == b"" and int(r.header("Content-Length")) > 1000, r
    r = scrape_raw(mport, path="/metrics?x=1")
    assert r.status == 200 and b"# TYPE ferry_http_requests_total counter\n" in r.body, r
    # A client that sends half a head holds nobody up; a malformed line gets 400.
    with socket.create_connection(("127.0.0.1", mport)) as idle:
        idle.sendall(b"GET /metr")
        r = scrape_raw(mport)
        assert r.status == 200 and b"ferry_http_connections_open" in r.body, r
        r, closed, _ = raw_exchange(mport, b"GET\r\n\r\n")
        assert r.status == 400 and closed, r
    # 127.0.0.2 is loopback too, but outside allow_from.
    r = scrape_raw(mport, source="127.0.0.2")
    assert r.status == 403 and b"ferry_" not in r.body, r
    r = scrape_raw(mport, source="127.0.0.2", path="/other")
    assert r.status == 403, r


def test_scrape_fast_during_10000_open_connections(ferry_factory, tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 10_500:
        pytest.skip(f"the hard fd limit ({hard}) is below 10,500")
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 20_500), hard))
    conns = []
    try:
        mport = free_port()
        # ferry needs 10,000 fds of its own: its limit is raised in the child.
        f = ferry_factory("[server]\nmax_connections = 11000\nheader_timeout = 10m\n"
                          + metrics_conf(mport), start=False)
        f.preexec_fn = lambda: resource.setrlimit(resource.RLIMIT_NOFILE,
                                                  (min(hard, 10_500), hard))
        f.start()
        for _ in range(10_000):
            conns.append(socket.create_connection(("127.0.0.1", f.port)))
        wait_for(lambda: value(scrape(mport)[0], "ferry_http_connections_open") == 10_000, 30,
                 "10,000 connections open")
        times = []
        for _ in range(11):
            t0 = time.monotonic()
            r = scrape_raw(mport)
            times.append(time.monotonic() - t0)
            assert r.status == 200 and b"ferry_http_connections_open 10000\n" in r.body, r
        # The endpoint's thread never looks at the 10,000 connections, so a
        # scrape takes well under a millisecond; the median is what must stay
        # under 50 ms: on a loaded 2-core test machine one scrape in ten can
        # wait for a CPU that long, and that is the scheduler, not ferry.
        times.sort()
        assert times[5] < 0.050, f"median scrape {times[5] * 1000:.1f} ms: {times}"
        assert times[-1] < 0.5, f"slowest scrape {times[-1] * 1000:.1f} ms: {times}"
    finally:
        for c in conns:
            c.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def run_offload_alone(tmp_path, settle, files):
    """`ferry offload` alone on a dir store with [metrics] listen, once its
    endpoint answers; returns (process, metrics port, conf path)."""
    mport = free_port()
    spool, store, run = tmp_path / "spool", tmp_path / "store", tmp_path / "run"
    for d in (spool, store, run):
        d.mkdir()
    for name, data in files.items():
        (spool / name).write_bytes(data)
    conf = tmp_path / "ferry.conf"
    conf.write_text(f"[server]\nadmin_socket = {run}/ferry.sock\nstate_dir = {run}\n"
                    f"[store]\ntype = dir\npath = {store}\n"
                    f"[offload]\nspool = {spool}\nsettle = {settle}\n" + metrics_conf(mport))
    log = open(tmp_path / "offload.log", "wb")
    p = subprocess.Popen([FERRY_BIN, "offload", "-c", str(conf)], stdout=log,
                         stderr=subprocess.STDOUT, cwd=tmp_path)
    log.close()

    def up():
        assert p.poll() is None, (tmp_path / "offload.log").read_text()
        try:
            scrape(mport)
            return True
        except OSError:
            return False
    try:
        wait_for(up, 10, "the offloader's /metrics")
    except BaseException:
        p.kill()
        p.wait()
        raise
    return p, mport, conf


def stop_offload(p, tmp_path):
    p.terminate()
    assert p.wait(15) == 0, (tmp_path / "offload.log").read_text()


def test_offload_alone_serves_its_metrics(tmp_path):
    p, mport, conf = run_offload_alone(tmp_path, "1h", {"old.bin": b"x" * 100})
    try:
        wait_for(lambda: value(scrape(mport)[0], "ferry_offload_backlog_files") == 1, 10,
                 "the settling file in the backlog")
        samples, text = scrape(mport)
        promtool_check(text)
        assert value(samples, "ferry_offload_backlog_bytes") == 100
        assert value(samples, "ferry_offload_files_total", stage="deleted") == 0
        assert "ferry_http_requests_total" not in samples
        assert value(samples, "ferry_build_info", version=subprocess.run(
            [FERRY_BIN, "version"], capture_output=True, text=True).stdout.split()[1]) == 1
        st = subprocess.run([FERRY_BIN, "status", "-c", str(conf), "--json"], capture_output=True,
                            text=True, timeout=10)
        assert json.loads(st.stdout)["offload"]["metrics"]["offload_backlog_files"] == 1
    finally:
        stop_offload(p, tmp_path)


def test_offload_stages_and_store_requests_counted(tmp_path):
    files = {f"f{i}.bin": os.urandom(1000 + i) for i in range(3)}
    p, mport, _ = run_offload_alone(tmp_path, "0s", files)
    try:
        # The spool learns that a file is done after the finisher deleted it.
        def done():
            smp = scrape(mport)[0]
            return (value(smp, "ferry_offload_files_total", stage="deleted") == 3
                    and value(smp, "ferry_offload_backlog_files") == 0
                    and value(smp, "ferry_offload_transfers_in_flight") == 0)
        wait_for(done, 20, "3 files offloaded and out of the backlog")
        samples, text = scrape(mport)
        promtool_check(text)
        for stage in ("uploaded", "verified", "deleted"):
            assert value(samples, "ferry_offload_files_total", stage=stage) == 3, stage
        for stage in ("archived", "failed", "rejected"):
            assert value(samples, "ferry_offload_files_total", stage=stage) == 0, stage
        assert value(samples, "ferry_offload_uploaded_bytes_total") == \
            sum(len(d) for d in files.values())
        assert value(samples, "ferry_offload_backlog_files") == 0
        assert value(samples, "ferry_offload_transfers_in_flight") == 0
        hist = "ferry_store_request_duration_seconds"
        assert value(samples, hist + "_count", operation="put", outcome="ok") == 3
        assert value(samples, hist + "_bucket", operation="put", outcome="ok", le="+Inf") == 3
        assert value(samples, hist + "_count", operation="put", outcome="error") == 0
        # verify = head: one HEAD per file.
        assert value(samples, hist + "_count", operation="head", outcome="ok") == 3
    finally:
        stop_offload(p, tmp_path)


def test_status_watch_prints_once_per_interval_without_a_tty(ferry_factory):
    f = ferry_factory("")
    p = subprocess.Popen([FERRY_BIN, "status", "-c", f.conf_path, "--watch=1"],
                         stdout=subprocess.PIPE, text=True, cwd=f.workdir)
    try:
        seen, t0 = 0, time.monotonic()
        while seen < 2:
            line = p.stdout.readline()
            assert line, "ferry status --watch ended"
            seen += line.startswith("server: pid")
        # Two reports a second apart, without the terminal's clear-screen codes.
        assert time.monotonic() - t0 >= 0.9
        assert "\033" not in line
    finally:
        p.kill()
        p.wait()


def test_connections_open_and_refused_at_max_connections(ferry_factory):
    mport = free_port()
    f = ferry_factory("[server]\nmax_connections = 3\n" + metrics_conf(mport))
    held = [f.connect() for _ in range(3)]
    try:
        wait_for(lambda: value(scrape(mport)[0], "ferry_http_connections_open") == 3, 5,
                 "3 connections open")
        for _ in range(2):
            with socket.create_connection(("127.0.0.1", f.port), timeout=5) as extra:
                closed, _ = wait_closed(extra, timeout=3)
                assert closed, "a connection over max_connections was not closed"
        samples, _ = scrape(mport)
        assert value(samples, "ferry_http_connections_refused_total") == 2
        assert value(samples, "ferry_http_connections_accepted_total") == 3
        assert value(samples, "ferry_http_connections_open") == 3
    finally:
        for s in held:
            s.close()
    wait_for(lambda: value(scrape(mport)[0], "ferry_http_connections_open") == 0, 5,
             "the connections closed")


def backend_value(samples, name, **labels):
    return value(samples, "ferry_backend_" + name, **labels)


def processes_by_gen(samples):
    """{(generation, state): n} of ferry_backend_processes."""
    return {(dict(k)["generation"], dict(k)["state"]): v
            for k, v in samples["ferry_backend_processes"].items()}


def test_backend_counted(ferry_factory, tmp_path):
    """The FastCGI backend's families (issue 12): requests by handler, holds,
    hold timeouts, a full queue, errors, timeouts, retries, aborts, the
    processes by generation and state, respawns and a swap."""
    from test_fcgi import FAKE, backend_conf, get_body, timed  # noqa: I001 - shared helpers
    mport = free_port()
    log = str(tmp_path / "fake.log")
    f = ferry_factory(backend_conf(f"/usr/bin/python3 {FAKE} {log}", 2,
                                   "hold_timeout = 1s\nhold_queue = 1\ntimeout = 3s\n")
                      + metrics_conf(mport))

    def lines():
        try:
            with open(log) as fh:
                return [l.rstrip("\n") for l in fh if l.endswith("\n")]
        except OSError:
            return []

    wait_for(lambda: ("1", "ready") in processes_by_gen(scrape(mport)[0])
             and processes_by_gen(scrape(mport)[0])[("1", "ready")] == 2, 10, "2 ready processes")
    samples, _ = scrape(mport)
    assert processes_by_gen(samples) == {("1", "starting"): 0, ("1", "ready"): 2,
                                         ("1", "draining"): 0}
    assert backend_value(samples, "capacity") == 2

    n_ok = 5
    for i in range(n_ok):
        r = get_body(f.port, f"/app/n{i}")
        assert r.status == 200 and f"uri=/app/n{i}".encode() in r.body, r
    r = get_body(f.port, "/app/g?mode=garbage")
    assert r.status == 502 and r.body == b"502 Bad Gateway\n", r
    r = get_body(f.port, "/app/s?mode=silent")
    assert r.status == 504 and r.body == b"504 Gateway Timeout\n", r
    r = get_body(f.port, "/app/o?mode=overload")
    assert r.status == 200 and b"uri=/app/o?mode=overload" in r.body, r
    # Each process answers OVERLOADED once per URI: one retry or two.
    retries = lines().count("begin /app/o?mode=overload") - 1
    assert retries in (1, 2), lines()

    # Both slots busy: one request held (then timed out), one refused at once.
    res = {}
    slow = [threading.Thread(target=timed, args=(f.port, f"/app/slow{i}?sleep=2000", res, i))
            for i in range(2)]
    for t in slow:
        t.start()
    wait_for(lambda: all(f"begin /app/slow{i}?sleep=2000" in lines() for i in range(2)), 5,
             "both slow requests started")
    held = threading.Thread(target=timed, args=(f.port, "/app/held", res, "held"))
    held.start()
    wait_for(lambda: backend_value(scrape(mport)[0], "requests_held") == 1, 5, "one held")
    assert backend_value(scrape(mport)[0], "requests_in_flight") == 2
    r = request(f.port, path="/app/full")
    assert r.status == 503 and b"The application is busy" in r.body, r
    held.join()
    assert res["held"][0].status == 503, (res, lines())
    assert b"The application is busy" in res["held"][0].body
    for t in slow:
        t.join()
    assert all(res[i][0].status == 200 for i in range(2)), res

    # A client that goes away while the application has its request.
    s = socket.create_connection(("127.0.0.1", f.port), timeout=5)
    s.sendall(b"GET /app/gone?sleep=5000 HTTP/1.1\r\nHost: x\r\n\r\n")
    wait_for(lambda: "begin /app/gone?sleep=5000" in lines(), 5, "request reached the app")
    s.close()
    wait_for(lambda: backend_value(scrape(mport)[0], "client_aborts_total") == 1, 5, "abort")

    want = {("backend", "2xx"): n_ok + 1 + 2, ("backend", "5xx"): 4}  # 502 504 503 503
    total = sum(want.values()) + 1  # the aborted one (499, 4xx)
    want[("backend", "4xx")] = 1
    wait_for(lambda: sum(v for k, v in scrape(mport)[0]["ferry_http_requests_total"].items()
                         if dict(k)["handler"] == "backend") == total, 5, "every request counted")
    samples, text = scrape(mport)
    promtool_check(text)
    got = {(dict(k)["handler"], dict(k)["class"]): v
           for k, v in samples["ferry_http_requests_total"].items() if v}
    assert got == want, got
    assert value(samples, "ferry_http_request_duration_seconds_count", handler="backend") == total
    expect = {"holds_total": 1, "hold_timeouts_total": 1, "hold_queue_full_total": 1,
              "errors_total": 1, "timeouts_total": 1, "retries_total": retries,
              "client_aborts_total": 1, "requests_held": 0, "requests_in_flight": 0,
              "capacity": 2, "swaps_total": 0, "swaps_failed_total": 0, "respawns_total": 0}
    for name, n in expect.items():
        assert backend_value(samples, name) == n, (name, backend_value(samples, name))
    assert "# TYPE ferry_backend_hold_timeouts_total counter\n" in text
    assert "# TYPE ferry_backend_processes gauge\n" in text

    # `ferry status --json`: the same numbers in the backend section.
    st = json.loads(cli(f, "status", "--json"))["backend"]
    for name, n in expect.items():
        assert st["metrics"]["backend_" + name] == n, (name, st["metrics"])
    procs = {(e["generation"], e["state"]): e["value"] for e in st["metrics"]["backend_processes"]}
    assert procs == processes_by_gen(samples), procs
    assert st["held"] == 0 and st["capacity"] == 2
    assert "  backend_hold_timeouts_total 1\n" in cli(f, "status")

    # A process killed is respawned and counted.
    pid = st["generations"][0]["pids"][0]
    os.kill(pid, 9)
    wait_for(lambda: backend_value(scrape(mport)[0], "respawns_total") == 1
             and processes_by_gen(scrape(mport)[0])[("1", "ready")] == 2, 10, "respawned")

    # A swap: one more swap, and the processes are the next generation's.
    cli(f, "swap")
    samples, text = scrape(mport)
    assert backend_value(samples, "swaps_total") == 1
    assert backend_value(samples, "swaps_failed_total") == 0
    assert processes_by_gen(samples) == {("2", "starting"): 0, ("2", "ready"): 2,
                                         ("2", "draining"): 0}
    promtool_check(text)
    assert json.loads(cli(f, "status", "--json"))["backend"]["metrics"]["backend_swaps_total"] == 1
