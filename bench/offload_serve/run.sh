#!/bin/sh
# Offload serving benchmark (issue 9): a local hit and a redirect for a missing
# file, ferry vs lighttpd+mod_magnet (stat, else 302) and nginx (try_files +
# redirect), with bench/floor.c in the same run; ferry's presign vs public.
# Needs scripts/deps.sh --bench.
#   bench/offload_serve/run.sh [--seconds S] [--rounds N]
set -eu
cd "$(dirname "$0")/../.."
for tool in wrk nginx lighttpd taskset cc; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || {
        echo "bench: $tool is missing (scripts/deps.sh --bench)" >&2; exit 1; }
done
[ -e /usr/lib/lighttpd/mod_magnet.so ] || {
    echo "bench: lighttpd's mod_magnet is missing (lighttpd-modules-lua)" >&2; exit 1; }
PATH="$PATH:/usr/sbin"
[ -d build-bench ] || meson setup build-bench -Dbuildtype=release -Db_ndebug=true >/dev/null
ninja -C build-bench -j2 ferry >/dev/null
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec /usr/bin/python3 bench/offload_serve/run.py --ferry "$PWD/build-bench/ferry" "$@"
