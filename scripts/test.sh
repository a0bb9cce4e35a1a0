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

step "integration tests"
FERRY_BIN="$PWD/build/ferry" FERRY_TEST_BIN="$PWD/build/tests/tools/ferry-test" \
    $PY -m pytest -q -p no:cacheprovider --junitxml=build/pytest.xml tests/integration

if [ "${FERRY_TEST_QUICK:-0}" != 1 ]; then
    step "sanitizer build (ASan+UBSan)"
    [ -d build-asan ] || CC=clang meson setup build-asan -Db_sanitize=address,undefined \
        -Db_lundef=false -Dbuildtype=debug -Dwerror=true -Dfuzz=true >/dev/null
    ninja -C build-asan
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:halt_on_error=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    meson test -C build-asan --suite unit --print-errorlogs
    FERRY_BIN="$PWD/build-asan/ferry" FERRY_TEST_BIN="$PWD/build-asan/tests/tools/ferry-test" \
        $PY -m pytest -q -p no:cacheprovider \
        --junitxml=build-asan/pytest.xml tests/integration

    step "fuzz: request parser 60 s, admin protocol 20 s, maintenance 20 s, Range 10 s, links 10 s, FastCGI 10 s"
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
    fuzz parser 60
    fuzz admin 20
    fuzz maint 20
    fuzz range 10
    fuzz link 10
    fuzz fcgi 10
fi

# One closing line over every suite that ran (set -e: reaching here means none failed).
logs="build/meson-logs/testlog.json build/pytest.xml"
[ "${FERRY_TEST_QUICK:-0}" = 1 ] || logs="$logs build-asan/meson-logs/testlog.json build-asan/pytest.xml"
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
