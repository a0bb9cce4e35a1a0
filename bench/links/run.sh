#!/bin/sh
# bench/links/run.sh: what checking signed links (issue 11) costs. The same
# 4 KiB file under url_prefix, served from the spool, by ferry without
# link_secret ("unsigned": GET /static/4k.bin) and with it ("signed": the same
# GET with ?expires=&sig= made by `ferry sign`, so every request is checked and
# answered with Cache-Control). Both run in the same rounds, taking turns
# (order alternating per round), beside bench/floor.c (one recv + one send per
# request: what no server can beat). The measure is bench/run.sh's: the
# server's utime+stime over a wrk run divided by its requests; server pinned to
# $BENCH_SERVER_CPU, wrk -t1 to $BENCH_CLIENT_CPU.
#
# Target (issue 11): signed - unsigned <= 0.5 CPU µs per request (medians of
# the rounds). Needs a quiet machine: other load makes the difference noise.
# Even on a quiet one two runs of the same server differ by a few µs, so the
# same run also times the added work in-process (bench/links/micro.c: the link
# check, and parsing the longer request line) and prints both.
#
#   bench/links/run.sh                                   5 rounds of 10 s
#   BENCH_SECONDS=2 BENCH_ROUNDS=1 BENCH_WARM=1 bench/links/run.sh   smoke run
#
# Results: $BENCH_DIR/results.jsonl (one JSON line per run), then a summary.
set -eu
BENCH_LIB="$(cd "$(dirname "$0")/.." && pwd)/lib.sh"
# shellcheck source=bench/lib.sh
. "$BENCH_LIB"
LINKS_HERE=$(cd "$(dirname "$0")" && pwd)

SECONDS_PER_RUN=${BENCH_SECONDS:-10}
WARM=${BENCH_WARM:-2}
ROUNDS=${BENCH_ROUNDS:-5}
LIMIT_US=0.5

bench_init
trap 'bench_stop' EXIT INT TERM
bench_build_ferry
ninja -C "$BENCH_REPO/build-bench" -j2 src/offload/libferry_offload.a src/http/libferry_http.a \
    src/common/libferry_common.a >/dev/null || bench_die "build of the libraries failed"
MICRO="$BENCH_DIR/micro"
cc -O2 -I"$BENCH_REPO/src" -o "$MICRO" "$LINKS_HERE/micro.c" \
    "$BENCH_REPO/build-bench/src/offload/libferry_offload.a" \
    "$BENCH_REPO/build-bench/src/http/libferry_http.a" \
    "$BENCH_REPO/build-bench/src/common/libferry_common.a" -lcrypto ||
    bench_die "cannot build bench/links/micro.c"

mkdir -p "$BENCH_DIR/spool" "$BENCH_DIR/store"
head -c 4096 /dev/urandom >"$BENCH_DIR/spool/4k.bin"
# bench/floor.c answers with the file given to it: the same 4 KiB.
cp "$BENCH_DIR/spool/4k.bin" "$BENCH_DIR/public/4k.bin"
chmod 644 "$BENCH_DIR/spool/4k.bin" "$BENCH_DIR/public/4k.bin"
: >"$BENCH_RESULTS"
SECRET=$(head -c 32 /dev/urandom | base64 | tr -d '\n')

# start_ferry unsigned|signed: bench_start for bench/links/ferry.conf.
start_ferry() {
    SERVER_NAME=ferry-$1
    SERVER_PORT=$(bench_free_port)
    conf="$BENCH_DIR/ferry-$1.conf"
    bench_template "$LINKS_HERE/ferry.conf" "$conf"
    [ "$1" = unsigned ] || printf 'link_secret = %s\n' "$SECRET" >>"$conf"
    taskset -c "$BENCH_SERVER_CPU" "$FERRY_BIN" serve -c "$conf" >"$BENCH_DIR/$SERVER_NAME.log" 2>&1 &
    SERVER_PID=$!
    bench_wait_http
}

# check_bytes PATH: the server sends the spool file's bytes for PATH.
check_bytes() {
    curl -sf -o "$BENCH_DIR/check.bin" "$(bench_url "$1")" ||
        bench_die "$SERVER_NAME: GET /$1 failed"
    cmp -s "$BENCH_DIR/check.bin" "$BENCH_DIR/spool/4k.bin" ||
        bench_die "$SERVER_NAME: /$1 differs from the file in the spool"
}

bench_log "bench: $(nproc) CPUs ($(sed -n 's/^model name\t*: //p' /proc/cpuinfo | head -1)), $(uname -sr)"
bench_log "bench: load average before: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews the numbers)"
bench_log "bench: server on CPU $BENCH_SERVER_CPU, wrk -t1 -c$BENCH_CONNS on CPU $BENCH_CLIENT_CPU, ${SECONDS_PER_RUN}s per run, $ROUNDS rounds, files in $BENCH_DIR"

run_one() {
    case $1 in
    floor)
        bench_start floor
        check_bytes 4k.bin
        path=4k.bin
        ;;
    unsigned)
        start_ferry unsigned
        path=static/4k.bin
        check_bytes "$path"
        ;;
    signed)
        start_ferry signed
        # The link expires long after the run; made by ferry itself.
        path=$("$FERRY_BIN" sign -c "$BENCH_DIR/ferry-signed.conf" /static/4k.bin --ttl 1d | cut -c2-)
        check_bytes "$path"
        code=$(curl -s -o /dev/null -w '%{http_code}' "$(bench_url static/4k.bin)")
        [ "$code" = 403 ] || bench_die "ferry-signed: unsigned GET got $code, not 403"
        curl -sI "$(bench_url "$path")" | grep -qi '^Cache-Control: private, max-age=' ||
            bench_die "ferry-signed: no Cache-Control: private on the signed response"
        ;;
    esac
    bench_log "bench: round $round/$ROUNDS: $SERVER_NAME (pid $SERVER_PID, port $SERVER_PORT)"
    bench_warm "$WARM" "$path"
    bench_wrk 4k "$SECONDS_PER_RUN" "$path" --min-bytes 4096 --max-bytes 4750
    bench_stop
}

round=1
while [ "$round" -le "$ROUNDS" ]; do
    # Alternate which ferry goes first, so that drift over a round cancels out.
    if [ $((round % 2)) = 1 ]; then order="unsigned signed floor"; else order="signed unsigned floor"; fi
    for what in $order; do
        run_one "$what"
    done
    round=$((round + 1))
done

bench_log "bench: load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
taskset -c "$BENCH_SERVER_CPU" "$MICRO" >"$BENCH_DIR/micro.txt" || bench_die "bench/links/micro.c failed"
echo
echo "ferry links bench, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($(sed -n 's/^model name\t*: //p' /proc/cpuinfo | head -1)), $(uname -sr)"
echo "4 KiB file from the spool, wrk -t1 -c$BENCH_CONNS, $ROUNDS rounds of ${SECONDS_PER_RUN}s runs"
echo
"$BENCH_PY" - "$BENCH_RESULTS" "$LIMIT_US" "$BENCH_DIR/micro.txt" <<'PY'
import json, statistics, sys

runs = {}
with open(sys.argv[1]) as f:
    for line in f:
        if line.strip():
            r = json.loads(line)
            runs.setdefault(r["server"], []).append(r)
limit = float(sys.argv[2])
print("| server | requests/s (median) | CPU µs/request (median) | range | bytes/response | problems |")
print("|--------|--------------------:|------------------------:|------:|---------------:|----------|")
med = {}
for name in ("ferry-unsigned", "ferry-signed", "floor"):
    rs = runs.get(name, [])
    if not rs:
        continue
    cpu = [r["cpu_us_per_req"] for r in rs]
    med[name] = statistics.median(cpu)
    problems = "; ".join(p for r in rs for p in r.get("problems", [])) or "-"
    print(f"| {name} | {round(statistics.median(r['rps'] for r in rs)):,} | {med[name]:.3f} "
          f"| {min(cpu):.3f}–{max(cpu):.3f} | {rs[0]['bytes_per_req']} | {problems} |")
print()
u, s = runs.get("ferry-unsigned", []), runs.get("ferry-signed", [])
if med.get("ferry-unsigned") is not None and med.get("ferry-signed") is not None:
    delta = med["ferry-signed"] - med["ferry-unsigned"]
    # Per round: each signed run against the unsigned run of the same round.
    pairs = [f"{b['cpu_us_per_req'] - a['cpu_us_per_req']:+.3f}" for a, b in zip(u, s)]
    verdict = "met" if delta <= limit else "MISSED"
    print(f"- target: the link check adds <= {limit} CPU µs per request: "
          f"{delta:+.3f} µs (signed - unsigned medians), {verdict}; per round: {', '.join(pairs)}")
    micro = dict(line.split() for line in open(sys.argv[3]))
    added = (float(micro["check"]) + float(micro["parse"])) / 1000
    verdict = "met" if added <= limit else "MISSED"
    print(f"- in-process (bench/links/micro.c, best of 5): link check {float(micro['check']):.1f} ns "
          f"+ longer request line {float(micro['parse']):.1f} ns = {added:.3f} µs, {verdict} "
          "(without the Cache-Control line and the 39 more bytes sent)")
    if med.get("floor"):
        print(f"- ferry/floor CPU: unsigned {med['ferry-unsigned'] / med['floor']:.2f}x, "
              f"signed {med['ferry-signed'] / med['floor']:.2f}x")
PY
