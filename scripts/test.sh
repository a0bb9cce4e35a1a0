#!/bin/sh
# Build ferry twice and run every test against each build:
#   build/       -Werror, optimised: unit tests + integration tests
#   build-asan/  ASan+UBSan: unit tests + integration tests
# then short libFuzzer runs (request parser, admin protocol, maintenance) and a
# clang-format check.
# Set FERRY_TEST_QUICK=1 to skip the sanitizer build while iterating.
set -eu
cd "$(dirname "$0")/.."
PY=/usr/bin/python3   # Debian's python with python3-pytest and python3-boto3

step() { printf '\n==== %s ====\n' "$*"; }

step "format check"
files=$(git ls-files 'src/*.c' 'src/*.h' 'tests/*.c' 'tests/*.h')
if ! clang-format --dry-run --Werror $files; then
    echo "clang-format: the files above need formatting (clang-format -i)" >&2
    exit 1
fi

step "build (-Werror)"
[ -d build ] || meson setup build -Dwerror=true >/dev/null
ninja -C build

step "unit tests"
meson test -C build --suite unit --print-errorlogs

# The integration suite against BUILD (a build directory) in two lanes: the long
# tests marked lane2 (they mostly wait: slow backend requests across 50 swaps,
# kill -9 cycles, 1,000 files through the S3 proxy) run in a second pytest beside the rest, so the
# machine's second core is used. Each lane writes its own junit file.
integration() {
    export FERRY_BIN="$PWD/$1/ferry" FERRY_TEST_BIN="$PWD/$1/tests/tools/ferry-test"
    $PY -m pytest -q -p no:cacheprovider -m lane2 --junitxml="$1/pytest-lane2.xml" \
        tests/integration >"$1/pytest-lane2.log" 2>&1 &
    lane2=$!
    rc=0
    $PY -m pytest -q -p no:cacheprovider -m "not lane2" --junitxml="$1/pytest.xml" \
        tests/integration || rc=$?
    rc2=0
    wait "$lane2" || rc2=$?
    printf '\n---- the long tests (lane2), run beside the above ----\n'
    cat "$1/pytest-lane2.log"
    unset FERRY_BIN FERRY_TEST_BIN
    [ "$rc" = 0 ] && [ "$rc2" = 0 ]
}

asan_setup() {
    [ -d build-asan ] || CC=clang meson setup build-asan -Db_sanitize=address,undefined \
        -Db_lundef=false -Dbuildtype=debug -Dwerror=true -Dfuzz=true >/dev/null
}

if [ "${FERRY_TEST_QUICK:-0}" != 1 ]; then
    # The sanitizer build compiles while the normal integration tests run (they
    # mostly wait on processes and sockets); its output is shown when it is needed.
    (asan_setup && ninja -C build-asan) >build/asan-build.log 2>&1 &
    asan_build=$!
    trap 'kill "$asan_build" 2>/dev/null || true' EXIT # a failed step stops it too
fi

step "integration tests"
integration build

if [ "${FERRY_TEST_QUICK:-0}" != 1 ]; then
    step "sanitizer build (ASan+UBSan), compiled during the integration tests"
    if ! wait "$asan_build"; then
        cat build/asan-build.log
        echo "the sanitizer build failed (log above)" >&2
        exit 1
    fi
    tail -n 1 build/asan-build.log
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:halt_on_error=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    meson test -C build-asan --suite unit --print-errorlogs
    integration build-asan

    step "fuzz: request parser 30 s, admin protocol 10 s, maintenance 10 s, Range 5 s, links 5 s, FastCGI 5 s"
    fuzz() { # NAME SECONDS: run one target on its seeds plus a corpus kept in build-asan/
        if [ ! -x "build-asan/tests/fuzz/fuzz_$1" ]; then
            echo "build-asan has no fuzz_$1: reconfigure it with -Dfuzz=true" >&2
            exit 1
        fi
        mkdir -p "build-asan/fuzz-corpus/$1"
        dict=""
        [ -f "tests/fuzz/$1.dict" ] && dict="-dict=tests/fuzz/$1.dict"
        "build-asan/tests/fuzz/fuzz_$1" -max_total_time="$2" -timeout=5 $dict \
            "build-asan/fuzz-corpus/$1" "tests/fuzz/corpus/$1"
    }
    fuzz parser 30
    fuzz admin 10
    fuzz maint 10
    fuzz range 5
    fuzz link 5
    fuzz fcgi 5
fi

# One closing line over every suite that ran (set -e: reaching here means none failed).
logs="build/meson-logs/testlog.json build/pytest.xml build/pytest-lane2.xml"
[ "${FERRY_TEST_QUICK:-0}" = 1 ] ||
    logs="$logs build-asan/meson-logs/testlog.json build-asan/pytest.xml build-asan/pytest-lane2.xml"
$PY - $logs <<'PYEOF'
import json, os, sys
import xml.etree.ElementTree as ET
passed = failed = skipped = 0
for path in sys.argv[1:]:
    if not os.path.exists(path):
        continue
    if path.endswith(".json"):
        for line in open(path):
            r = json.loads(line)
            if r.get("result") in ("OK", "EXPECTEDFAIL"):
                passed += 1
            elif r.get("result") == "SKIP":
                skipped += 1
            else:
                failed += 1
    else:
        root = ET.parse(path).getroot()
        for s in ([root] if root.tag == "testsuite" else root.iter("testsuite")):
            n, f = int(s.get("tests")), int(s.get("failures")) + int(s.get("errors"))
            k = int(s.get("skipped"))
            passed += n - f - k
            failed += f
            skipped += k
print(f"summary: {passed} passed, {failed} failed, {skipped} skipped")
PYEOF
