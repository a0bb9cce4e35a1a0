#!/bin/sh
# Maintenance benchmark (issue 3): ferry's 503 vs lighttpd+mod_magnet and nginx,
# and `ferry down` return latency under load. Needs scripts/deps.sh --bench.
#   bench/maint/run.sh [--seconds S] [--rounds N] [--toggles N]
set -eu
cd "$(dirname "$0")/../.."
for tool in wrk nginx lighttpd taskset; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || {
        echo "bench: $tool is missing (scripts/deps.sh --bench)" >&2; exit 1; }
done
PATH="$PATH:/usr/sbin"
[ -d build-bench ] || meson setup build-bench -Dbuildtype=release -Db_ndebug=true >/dev/null
ninja -C build-bench -j2 ferry >/dev/null
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec /usr/bin/python3 bench/maint/run.py --ferry "$PWD/build-bench/ferry" "$@"
