# Shell helpers shared by the benchmarks in bench/ (POSIX sh). A script outside
# bench/ sets BENCH_LIB to this file's path before sourcing it:
#   BENCH_LIB="$(dirname "$0")/../lib.sh"; . "$BENCH_LIB"
#
#   bench_init                     work dir $BENCH_DIR with public/, ulimit -n raised
#   bench_build_ferry              release build in build-bench/; sets $FERRY_BIN
#   bench_start NAME               start ferry|nginx|lighttpd on a free port, pinned
#                                  to $BENCH_SERVER_CPU, with $BENCH_CONF_DIR/NAME.conf
#                                  (default bench/); sets $SERVER_PID, $SERVER_PORT
#   bench_stop                     stop the server started last and wait for it
#   bench_url PATH                 http://127.0.0.1:$SERVER_PORT/PATH
#   bench_etag PATH                the server's ETag for PATH
#   bench_warm SECONDS PATH        unmeasured wrk run (fills caches)
#   bench_wrk TEST SECONDS PATH [measure.py options]
#                                  wrk pinned to $BENCH_CLIENT_CPU, measured by
#                                  measure.py, result appended to $BENCH_RESULTS
#
# Settings (environment): BENCH_SERVER_CPU (1), BENCH_CLIENT_CPU (0),
# BENCH_CONNS (50 wrk connections), BENCH_DIR (a fresh mktemp -d).

BENCH_HERE=$(cd "$(dirname "${BENCH_LIB:-$0}")" && pwd)
BENCH_REPO=$(cd "$BENCH_HERE/.." && pwd)
BENCH_PY=/usr/bin/python3
BENCH_SERVER_CPU=${BENCH_SERVER_CPU:-1}
BENCH_CLIENT_CPU=${BENCH_CLIENT_CPU:-0}
BENCH_CONNS=${BENCH_CONNS:-50}
SERVER_PID=
SERVER_PORT=
SERVER_NAME=

bench_log() { printf '%s\n' "$*" >&2; }
bench_die() { bench_log "bench: $*"; exit 1; }

bench_init() {
    for tool in wrk curl taskset nginx lighttpd; do
        command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] ||
            bench_die "$tool is missing: scripts/deps.sh --bench installs the peers"
    done
    # shellcheck disable=SC3045 # dash and bash both have ulimit -n and -H
    # 10,000 idle connections need more descriptors than the usual 1024, in the
    # client and in every server (they inherit this limit).
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    # shellcheck disable=SC3045
    [ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge 12000 ] ||
        bench_log "bench: warning: ulimit -n is $(ulimit -n); the idle test needs 12000"
    BENCH_DIR=${BENCH_DIR:-$(mktemp -d /tmp/ferry-bench.XXXXXX)}
    # nginx's worker and lighttpd must be able to read the files.
    chmod 755 "$BENCH_DIR"
    mkdir -p "$BENCH_DIR/public" "$BENCH_DIR/nginx-tmp" "$BENCH_DIR/ferry-run"
    BENCH_RESULTS=${BENCH_RESULTS:-$BENCH_DIR/results.jsonl}
    export BENCH_DIR BENCH_RESULTS
}

bench_build_ferry() {
    if [ ! -d "$BENCH_REPO/build-bench" ]; then
        meson setup "$BENCH_REPO/build-bench" "$BENCH_REPO" --buildtype=release >/dev/null ||
            bench_die "meson setup failed"
    fi
    ninja -C "$BENCH_REPO/build-bench" -j2 ferry >/dev/null || bench_die "build failed"
    FERRY_BIN="$BENCH_REPO/build-bench/ferry"
}

bench_free_port() {
    "$BENCH_PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Fill @DIR@, @ROOT@ and @PORT@ into a config template; a script may redefine
# bench_filter (stdin to stdout) for placeholders of its own.
bench_filter() { cat; }
bench_template() {
    sed -e "s|@DIR@|$BENCH_DIR|g" -e "s|@ROOT@|$BENCH_DIR/public|g" \
        -e "s|@PORT@|$SERVER_PORT|g" "$1" | bench_filter >"$2"
}

# Wait until the server answers HTTP (a benchmark helper, not a test: polling
# is fine here), or fail with its log.
bench_wait_http() {
    i=0
    while ! curl -s -o /dev/null "http://127.0.0.1:$SERVER_PORT/"; do
        kill -0 "$SERVER_PID" 2>/dev/null || bench_die "$SERVER_NAME exited; see $BENCH_DIR/$SERVER_NAME*.log"
        i=$((i + 1))
        [ $i -lt 200 ] || bench_die "$SERVER_NAME does not answer on port $SERVER_PORT"
        sleep 0.05
    done
}

bench_start() {
    SERVER_NAME=$1
    SERVER_PORT=$(bench_free_port)
    pin="taskset -c $BENCH_SERVER_CPU"
    confs=${BENCH_CONF_DIR:-$BENCH_HERE}
    case "$SERVER_NAME" in
    ferry)
        bench_template "$confs/ferry.conf" "$BENCH_DIR/ferry.conf"
        $pin "$FERRY_BIN" serve -c "$BENCH_DIR/ferry.conf" >"$BENCH_DIR/ferry.log" 2>&1 &
        ;;
    nginx)
        bench_template "$confs/nginx.conf" "$BENCH_DIR/nginx.conf"
        $pin nginx -p "$BENCH_DIR" -c "$BENCH_DIR/nginx.conf" -e "$BENCH_DIR/nginx-error.log" \
            >"$BENCH_DIR/nginx.log" 2>&1 &
        ;;
    lighttpd)
        bench_template "$confs/lighttpd.conf" "$BENCH_DIR/lighttpd.conf"
        $pin lighttpd -D -f "$BENCH_DIR/lighttpd.conf" >"$BENCH_DIR/lighttpd.log" 2>&1 &
        ;;
    floor)
        # Not a server: the recv+send cost floor for the 4 KiB test (bench/floor.c).
        cc -O2 -o "$BENCH_DIR/floor" "$BENCH_HERE/floor.c"
        $pin "$BENCH_DIR/floor" "$SERVER_PORT" "$BENCH_DIR/public/4k.bin" >"$BENCH_DIR/floor.log" 2>&1 &
        ;;
    *) bench_die "unknown server '$SERVER_NAME'" ;;
    esac
    SERVER_PID=$!
    bench_wait_http
}

bench_stop() {
    [ -n "$SERVER_PID" ] || return 0
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

bench_url() { printf 'http://127.0.0.1:%s/%s' "$SERVER_PORT" "$1"; }

bench_etag() {
    curl -sI "$(bench_url "$1")" | tr -d '\r' | sed -n 's/^[Ee][Tt][Aa][Gg]: *//p'
}

bench_warm() {
    taskset -c "$BENCH_CLIENT_CPU" wrk -t1 -c"$BENCH_CONNS" -d"${1}s" "$(bench_url "$2")" >/dev/null
}

# bench_wrk TEST SECONDS PATH [measure.py wrk options...]
bench_wrk() {
    test=$1 secs=$2 path=$3
    shift 3
    "$BENCH_PY" "$BENCH_HERE/measure.py" wrk --pid "$SERVER_PID" --name "$SERVER_NAME" \
        --test "$test" -o "$BENCH_RESULTS" "$@" -- \
        taskset -c "$BENCH_CLIENT_CPU" wrk -t1 -c"$BENCH_CONNS" -d"${secs}s" \
        -s "$BENCH_HERE/wrk.lua" "$(bench_url "$path")"
}
