#!/bin/sh
# bench/offload/run.sh: `ferry offload --once` against `rclone move` (issue 8), both
# in the same run, on the same files, at the same concurrency, into one s3rver and
# into a local directory. Builds ferry (release, build-bench/) unless FERRY_BIN is set.
#
#   bench/offload/run.sh                     2,000 x 64 KiB and 4 x 256 MiB, 8 transfers
#   BENCH_SMOKE=1 bench/offload/run.sh       a tiny run that shows the script works
#   bench/offload/run.sh --jobs 16 --small 5000     (options go to bench.py)
#
# Needs rclone (scripts/deps.sh --bench) and s3rver (scripts/deps.sh --test).
# Run it on a quiet machine: other work skews every column.
set -eu
BENCH_LIB="$(dirname "$0")/../lib.sh"
# shellcheck source=bench/lib.sh
. "$BENCH_LIB"

command -v rclone >/dev/null 2>&1 || bench_die "rclone is missing: scripts/deps.sh --bench"
if [ -z "${FERRY_BIN:-}" ]; then
    bench_build_ferry
fi
bench_log "bench: $(nproc) CPUs, load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -n "${BENCH_SMOKE:-}" ]; then
    set -- --small 20 --small-kib 16 --large 1 --large-mib 12 --threshold-mib 5 \
        --part-mib 5 --jobs 4 "$@"
fi
exec "$BENCH_PY" "$BENCH_HERE/offload/bench.py" --ferry "$FERRY_BIN" "$@"
