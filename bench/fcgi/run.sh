#!/bin/sh
# bench/fcgi/run.sh: the FastCGI path (issue 10). The same hello-world libfcgi
# application (bench/fcgi/hello.c), the same number of processes on one unix
# socket, behind ferry ([backend]: ferry starts the processes itself), nginx
# (fastcgi_pass) and lighttpd (mod_fastcgi); spawn.py starts them for the
# peers. Each server runs as its documentation recommends for speed (see the
# comments in the configurations next to this script).
#
#   bench/fcgi/run.sh                                  everything
#   BENCH_SECONDS=2 BENCH_WARM=1 BENCH_ROUNDS=1 bench/fcgi/run.sh   a smoke run
#   BENCH_SERVERS="ferry nginx" BENCH_PROCS=4 bench/fcgi/run.sh
#
# Tests: (a) GET of the hello-world page, keep-alive; (b) POST of 1 MiB
# bodies (BENCH_POST_BYTES) that the application reads and counts; (c) a 4 KiB
# file the application names with X-Accel-Redirect (ferry's accel_redirect,
# nginx's internal location; lighttpd with X-Sendfile, its equivalent). wrk (one
# thread, BENCH_CONNS connections) runs pinned to core 0; the server and the
# application processes share core 1. Reported per server: requests/s, the
# server's CPU µs per request (the application's processes left out; their
# CPU is shown apart), p99 latency, and ferry's ratios to each peer.
set -eu
BENCH_LIB="$(dirname "$0")/../lib.sh"
# shellcheck source=bench/lib.sh
. "$BENCH_LIB"
FCGI_HERE=$(cd "$(dirname "$0")" && pwd)

SECONDS_PER_RUN=${BENCH_SECONDS:-10}
WARM=${BENCH_WARM:-2}
ROUNDS=${BENCH_ROUNDS:-3}
SERVERS=${BENCH_SERVERS:-ferry nginx lighttpd}
PROCS=${BENCH_PROCS:-2}
POST_BYTES=${BENCH_POST_BYTES:-1048576}
SPAWN_PID=

bench_init
cleanup() {
    bench_stop
    stop_app
}
trap cleanup EXIT INT TERM
bench_build_ferry
[ -f /usr/include/fcgiapp.h ] || bench_die "libfcgi-dev is missing (fcgiapp.h)"
APP="$BENCH_DIR/hello"
cc -O2 -o "$APP" "$FCGI_HERE/hello.c" -lfcgi || bench_die "cannot build hello.c"
# nginx's worker (nobody) writes its temp files here and reads the socket.
chmod 777 "$BENCH_DIR/nginx-tmp"
mkdir -p "$BENCH_DIR/spool" "$BENCH_DIR/store"
head -c 4096 /dev/urandom >"$BENCH_DIR/spool/4k.bin"
export BENCH_SPOOL="$BENCH_DIR/spool"
: >"$BENCH_RESULTS"
export BENCH_WRK_LUA="$BENCH_HERE/wrk.lua" BENCH_POST_BYTES="$POST_BYTES"

# The placeholders of the configurations next to this script.
BENCH_CONF_DIR=$FCGI_HERE
bench_filter() {
    if [ "${BENCH_NGINX_KEEP_CONN:-0}" = 1 ]; then
        kc="fastcgi_keep_conn on;" ka="keepalive $PROCS;"
    else
        kc="" ka=""
    fi
    sed -e "s|@PROCS@|$PROCS|g" -e "s|@APP@|$APP|g" -e "s|@KEEP_CONN@|$kc|g" \
        -e "s|@KEEPALIVE@|$ka|g"
}

start_app() { # the peers' application processes, on the server's core
    taskset -c "$BENCH_SERVER_CPU" "$BENCH_PY" "$FCGI_HERE/spawn.py" "$BENCH_DIR/app.sock" \
        "$PROCS" "$APP" >"$BENCH_DIR/spawn.log" 2>&1 &
    SPAWN_PID=$!
    i=0
    while [ ! -S "$BENCH_DIR/app.sock" ]; do
        i=$((i + 1))
        [ $i -lt 200 ] || bench_die "spawn.py did not create $BENCH_DIR/app.sock"
        sleep 0.05
    done
}

stop_app() {
    [ -n "$SPAWN_PID" ] || return 0
    kill -TERM "$SPAWN_PID" 2>/dev/null || true
    wait "$SPAWN_PID" 2>/dev/null || true
    SPAWN_PID=
}

start() { # NAME: ferry starts the application itself, the peers need spawn.py
    [ "$1" = ferry ] || start_app
    bench_start "$1"
}

stop() {
    bench_stop
    stop_app
}

# Every server must answer correctly before its numbers count.
check() {
    body=$(curl -sf "$(bench_url hello)") || bench_die "$SERVER_NAME: GET /hello failed"
    [ "$body" = "Hello, world! read 0 bytes" ] || bench_die "$SERVER_NAME: GET /hello: '$body'"
    head -c "$POST_BYTES" /dev/zero | tr '\0' x >"$BENCH_DIR/post.bin"
    body=$(curl -sf --data-binary @"$BENCH_DIR/post.bin" -H 'Content-Type: application/octet-stream' \
        "$(bench_url post)") || bench_die "$SERVER_NAME: POST /post failed"
    [ "$body" = "Hello, world! read $POST_BYTES bytes" ] ||
        bench_die "$SERVER_NAME: POST of $POST_BYTES bytes: '$body'"
    curl -sf -o "$BENCH_DIR/accel.out" "$(bench_url "$(accel_path)")" ||
        bench_die "$SERVER_NAME: GET /$(accel_path) failed"
    cmp -s "$BENCH_DIR/accel.out" "$BENCH_DIR/spool/4k.bin" ||
        bench_die "$SERVER_NAME: /$(accel_path) did not send the spool's 4k.bin"
}

accel_path() { # lighttpd honours X-Sendfile, the others X-Accel-Redirect
    if [ "$SERVER_NAME" = lighttpd ]; then echo sendfile; else echo accel; fi
}

run() { # TEST WRK_SCRIPT PATH
    test=$1 script=$2 path=$3
    # app pids: ferry's own children named hello, or spawn.py's tree.
    app="--exclude hello"
    [ -n "$SPAWN_PID" ] && app="--app-pid $SPAWN_PID"
    # shellcheck disable=SC2086
    "$BENCH_PY" "$BENCH_HERE/measure.py" wrk --pid "$SERVER_PID" --name "$SERVER_NAME" \
        --test "$test" -o "$BENCH_RESULTS" $app -- \
        taskset -c "$BENCH_CLIENT_CPU" wrk -t1 -c"$BENCH_CONNS" -d"${SECONDS_PER_RUN}s" \
        -s "$script" "$(bench_url "$path")"
}

bench_log "bench: $(nproc) CPUs ($(sed -n 's/^model name\t*: //p' /proc/cpuinfo | head -1)), $(uname -sr)"
bench_log "bench: load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
bench_log "bench: server and $PROCS application processes on CPU $BENCH_SERVER_CPU, wrk -t1 -c$BENCH_CONNS on CPU $BENCH_CLIENT_CPU, ${SECONDS_PER_RUN}s per run"

round=1
while [ "$round" -le "$ROUNDS" ]; do
    for name in $SERVERS; do
        start "$name"
        bench_log "bench: round $round/$ROUNDS: $name (pid $SERVER_PID, port $SERVER_PORT)"
        check
        bench_warm "$WARM" hello
        run hello "$BENCH_HERE/wrk.lua" hello
        run post1m "$FCGI_HERE/post.lua" post
        run accel4k "$BENCH_HERE/wrk.lua" "$(accel_path)"
        stop
    done
    round=$((round + 1))
done

bench_log "bench: load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "ferry FastCGI bench, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(uname -sr)"
echo "nginx $(nginx -v 2>&1 | sed 's|.*/||'), lighttpd $(lighttpd -v | sed -n 's|^lighttpd/\([^ ]*\).*|\1|p'), $PROCS application processes, wrk -t1 -c$BENCH_CONNS, median of $ROUNDS rounds of ${SECONDS_PER_RUN}s runs"
echo
"$BENCH_PY" "$FCGI_HERE/table.py" "$BENCH_RESULTS"
