#!/bin/sh
# bench/instr/run.sh: user-space instructions per request of ferry, counted by
# valgrind's callgrind, for a 4 KiB static file over keep-alive. Unlike CPU
# time, the count does not depend on what else the machine is doing, so two
# builds can be compared on a busy machine: it is the check for changes that
# must not move the static hot path (issue 12's per-worker counters).
#
#   bench/instr/run.sh [FERRY_BIN ...]     default: a release build of this tree
#
# INSTR_CASE picks the request: static (default, the 4 KiB file), or public or
# presign: a file missing under [offload] url_prefix, answered with a 302 to
# public_url or to a presigned URL of an s3 store (issue 9). The store's
# endpoint is a loopback port nothing listens on: presigning sends nothing.
# spool and signed: the 4 KiB file from the spool under url_prefix, without
# link_secret and with it (the GET then carries a link made by `ferry sign`,
# checked on every request): signed - spool is what the link check costs
# (issue 11, the same pair bench/links/run.sh times).
#
# Each binary runs twice (N1 and N2 requests on one connection, workers = 1);
# (Ir(N2) - Ir(N1)) / (N2 - N1) cancels start-up and shutdown. Kernel work
# (the syscalls themselves) is not counted: that is what bench/run.sh measures.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PY=/usr/bin/python3
N1=${INSTR_N1:-2000}
N2=${INSTR_N2:-12000}
CASE=${INSTR_CASE:-static}
case $CASE in
static | public | presign | spool | signed) ;;
*) echo "INSTR_CASE: want static, public, presign, spool or signed, not '$CASE'" >&2; exit 1 ;;
esac
command -v valgrind >/dev/null || { echo "valgrind is missing (apt-get install valgrind)" >&2; exit 1; }

if [ $# -eq 0 ]; then
    [ -d "$REPO/build-bench" ] || meson setup "$REPO/build-bench" --buildtype=release -Dwerror=true >/dev/null
    ninja -C "$REPO/build-bench" ferry >/dev/null
    set -- "$REPO/build-bench/ferry"
fi

DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT INT TERM
mkdir -p "$DIR/public" "$DIR/run" "$DIR/spool"
head -c 4096 /dev/urandom >"$DIR/public/4k.bin"
cp "$DIR/public/4k.bin" "$DIR/spool/4k.bin"

free_port() {
    $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# count BIN N: total instructions of one server run that answers N requests.
count() {
    port=$(free_port)
    cat >"$DIR/ferry.conf" <<CONF
[server]
listen = 127.0.0.1:$port
root = $DIR/public
workers = 1
admin_socket = $DIR/run/ferry.sock
state_dir = $DIR/run
access_log = off
error_log = $DIR/error.log
CONF
    if [ "$CASE" != static ]; then
        cat >>"$DIR/ferry.conf" <<CONF
[store]
type = s3
endpoint = http://127.0.0.1:$(free_port)
bucket = photos
region = us-east-1
prefix = originals/
access_key = AKIDEXAMPLE
secret_key = wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY
[offload]
spool = $DIR/spool
url_prefix = /static/
settle = 1h
rescan_interval = 0
CONF
        case $CASE in
        public) printf 'redirect = public\npublic_url = https://photos.s3.example.com/originals/\n' ;;
        *) printf 'redirect = presign\n' ;;
        esac >>"$DIR/ferry.conf"
        [ "$CASE" != signed ] || echo "link_secret = bench-link-secret-0123456789abcdef" >>"$DIR/ferry.conf"
    fi
    rm -f "$DIR/cg.out"
    valgrind --tool=callgrind --callgrind-out-file="$DIR/cg.out" "$1" serve -c "$DIR/ferry.conf" \
        2>"$DIR/valgrind.log" &
    pid=$!
    i=0
    until $PY -c "import socket,sys; socket.create_connection(('127.0.0.1',$port)).close()" 2>/dev/null; do
        i=$((i + 1))
        [ $i -lt 600 ] || { echo "ferry did not start under valgrind" >&2; cat "$DIR/valgrind.log" >&2; exit 1; }
        sleep 0.1
    done
    case $CASE in
    static) set -- "$1" "$2" /4k.bin 200 4096 ;;
    spool) set -- "$1" "$2" /static/4k.bin 200 4096 ;;
    signed) set -- "$1" "$2" "$("$1" sign -c "$DIR/ferry.conf" /static/4k.bin --ttl 1d)" 200 4096 ;;
    *) set -- "$1" "$2" /static/2026/12/05/IMG_1234.jpg 302 - ;;
    esac
    if ! $PY "$HERE/client.py" "$port" "$3" "$2" "$5" "$4" >&2; then
        kill -TERM $pid
        wait $pid || true
        echo "the client failed against $1" >&2
        exit 1
    fi
    kill -TERM $pid
    wait $pid || true
    sed -n 's/^summary: *//p' "$DIR/cg.out"
}

echo "case: $CASE"
printf '%-50s %12s %12s %14s\n' binary "Ir($N1)" "Ir($N2)" "instr/request"
first=""
for bin in "$@"; do
    a=$(count "$bin" "$N1")
    b=$(count "$bin" "$N2")
    per=$(( (b - a) / (N2 - N1) ))
    ratio=""
    if [ -z "$first" ]; then first=$per; else ratio=$($PY -c "print(f'{$per/$first:.3f}x of the first')"); fi
    printf '%-50s %12s %12s %14s %s\n' "$bin" "$a" "$b" "$per" "$ratio"
done
