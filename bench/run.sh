#!/bin/sh
# bench/run.sh: ferry against nginx and lighttpd, one after another, on the same
# files over loopback. Builds ferry (release) first. On a 2-core machine wrk
# (one thread) runs pinned to core 0 and the server to core 1; since the load
# generator saturates its core, the comparison that matters is the server's
# CPU time per request (utime+stime over the run / requests), with RSS.
#
#   bench/run.sh                    everything (about 6 minutes)
#   BENCH_SECONDS=5 BENCH_ROUNDS=1 bench/run.sh    shorter
#   BENCH_SERVERS="nginx lighttpd" bench/run.sh
#
# "floor" (bench/floor.c) is not a server but the cost of one recv and one
# send per request over loopback: the 4 KiB row shows what no server can beat.
#
# Tests: (a) 4 KiB file keep-alive, (b) 1 MiB file keep-alive, (c) 304
# revalidation with the server's own ETag, (d) 10,000 idle keep-alive
# connections (RSS). Results: $BENCH_DIR/results.jsonl, then a Markdown table
# with ratios to ferry and the targets of issue 2.
set -eu
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

SECONDS_PER_RUN=${BENCH_SECONDS:-10}
WARM=${BENCH_WARM:-2}
SERVERS=${BENCH_SERVERS:-ferry nginx lighttpd floor}
IDLE=${BENCH_IDLE:-10000}
ROUNDS=${BENCH_ROUNDS:-3}

bench_init
trap 'bench_stop' EXIT INT TERM
case " $SERVERS " in *" ferry "*) bench_build_ferry ;; esac

head -c 4096 /dev/urandom >"$BENCH_DIR/public/4k.bin"
head -c 1048576 /dev/urandom >"$BENCH_DIR/public/1m.bin"
cp "$BENCH_REPO/public/index.html" "$BENCH_DIR/public/index.html"
chmod 644 "$BENCH_DIR/public/"*
: >"$BENCH_RESULTS"

bench_log "bench: $(nproc) CPUs ($(sed -n 's/^model name\t*: //p' /proc/cpuinfo | head -1)), $(uname -sr)"
bench_log "bench: load average before: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews the numbers)"
bench_log "bench: server on CPU $BENCH_SERVER_CPU, wrk -t1 -c$BENCH_CONNS on CPU $BENCH_CLIENT_CPU, ${SECONDS_PER_RUN}s per run, files in $BENCH_DIR"

# Rounds: every server runs every test once per round, servers taking turns,
# so that other load on the machine spreads over all of them; the table shows
# the median of the rounds.
check_server() {
    # Every peer must serve the same bytes before its numbers count.
    for f in 4k.bin 1m.bin; do
        curl -sf -o "$BENCH_DIR/check.bin" "$(bench_url "$f")" ||
            bench_die "$SERVER_NAME: GET /$f failed"
        cmp -s "$BENCH_DIR/check.bin" "$BENCH_DIR/public/$f" ||
            bench_die "$SERVER_NAME: /$f differs from the file on disk"
    done
    etag=$(bench_etag 4k.bin)
    [ -n "$etag" ] || bench_die "$SERVER_NAME: no ETag for /4k.bin"
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: $etag" "$(bench_url 4k.bin)")
    [ "$code" = 304 ] || bench_die "$SERVER_NAME: If-None-Match $etag got $code, not 304"
}

round=1
while [ "$round" -le "$ROUNDS" ]; do
    for name in $SERVERS; do
        bench_start "$name"
        bench_log "bench: round $round/$ROUNDS: $name (pid $SERVER_PID, port $SERVER_PORT)"
        if [ "$name" = floor ]; then
            # The floor only answers the 4 KiB test (see bench/floor.c).
            curl -sf -o "$BENCH_DIR/check.bin" "$(bench_url 4k.bin)" &&
                cmp -s "$BENCH_DIR/check.bin" "$BENCH_DIR/public/4k.bin" ||
                bench_die "floor: /4k.bin differs from the file on disk"
            bench_warm "$WARM" 4k.bin
            bench_wrk 4k "$SECONDS_PER_RUN" 4k.bin --min-bytes 4096 --max-bytes 4700
            bench_stop
            continue
        fi
        check_server
        bench_warm "$WARM" 4k.bin
        bench_wrk 4k "$SECONDS_PER_RUN" 4k.bin --min-bytes 4096 --max-bytes 4700
        bench_warm "$WARM" 1m.bin
        bench_wrk 1m "$SECONDS_PER_RUN" 1m.bin --min-bytes 1048576
        BENCH_IF_NONE_MATCH=$etag bench_wrk 304 "$SECONDS_PER_RUN" 4k.bin --max-bytes 600
        bench_stop
    done
    round=$((round + 1))
done

# Idle connections on a fresh server, so that buffers grown by the runs above
# do not count. Memory does not depend on timing: one round is enough.
for name in $SERVERS; do
    [ "$name" = floor ] && continue
    bench_start "$name"
    bench_log "bench: $IDLE idle connections: $name (pid $SERVER_PID, port $SERVER_PORT)"
    taskset -c "$BENCH_CLIENT_CPU" "$BENCH_PY" "$BENCH_HERE/measure.py" idle --pid "$SERVER_PID" \
        --name "$name" --port "$SERVER_PORT" --path /4k.bin --count "$IDLE" -o "$BENCH_RESULTS"
    bench_stop
done

bench_log "bench: load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "ferry bench, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($(sed -n 's/^model name\t*: //p' /proc/cpuinfo | head -1)), $(uname -sr)"
echo "nginx $(nginx -v 2>&1 | sed 's|.*/||'), lighttpd $(lighttpd -v | sed -n 's|^lighttpd/\([^ ]*\).*|\1|p'), wrk -t1 -c$BENCH_CONNS, median of $ROUNDS rounds of ${SECONDS_PER_RUN}s runs"
echo
"$BENCH_PY" "$BENCH_HERE/measure.py" table "$BENCH_RESULTS"
