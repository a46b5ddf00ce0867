#!/usr/bin/env bash
# tests/run.sh — everything CI runs: install what is missing, build, run
# every test suite, and end with one line "N passed, N failed".
# Exit status is non-zero when any test failed or could not run.
#   BUILD_DIR=build-test  build directory (default build)
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
build=${BUILD_DIR:-build}
out=$(mktemp -d /tmp/imgpipe-tests.XXXXXX)
passed=0 failed=0 skipped=0

deploy/deps.sh --test || { echo "0 passed, 1 failed"; exit 1; }

if [ -f "$build/build.ninja" ]; then
    meson setup --reconfigure "$build" >"$out/setup.log" 2>&1
else
    meson setup "$build" >"$out/setup.log" 2>&1
fi || { cat "$out/setup.log"; echo "0 passed, 1 failed"; exit 1; }
ninja -C "$build" >"$out/build.log" 2>&1 \
    || { tail -50 "$out/build.log"; echo "0 passed, 1 failed"; exit 1; }

# One result line per test, counted from criterion's TAP report.
count_tap() {
    local tap=$1
    local p f s
    s=$(grep -cE '^ok .*# SKIP' "$tap")
    p=$(grep -E '^ok ' "$tap" | grep -vc '# SKIP')
    f=$(grep -cE '^not ok ' "$tap")
    grep -E '^not ok |# SKIP' "$tap" | sed 's/^/    /'
    passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
    echo "  $p passed, $f failed, $s skipped"
}

run_suite() {
    local name=$1 exe="$build/tests/$1"
    shift
    if [ ! -x "$exe" ]; then
        echo "== $name: not built"; failed=$((failed + 1)); return
    fi
    echo "== $name"
    "$exe" --tap="$out/$name.tap" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    count_tap "$out/$name.tap"
    # A crash that leaves no "not ok" line must still fail the run.
    if [ $rc -ne 0 ] && ! grep -qE '^not ok ' "$out/$name.tap"; then
        echo "    $name exited $rc; log: $out/$name.log"; failed=$((failed + 1))
    fi
}

# Programs answer --help and --version and refuse an unknown flag.
check_cli() {
    local exe=$1
    if "$exe" --help >/dev/null && "$exe" --version >/dev/null \
       && ! "$exe" --no-such-flag >/dev/null 2>&1; then
        passed=$((passed + 1))
    else
        echo "    not ok: $exe --help/--version/unknown flag"; failed=$((failed + 1))
    fi
}
echo "== cli"
for exe in broker/imgpipe-broker resizer/imgpipe-resizer \
           http-frontend/imgpipe-frontend client/imgpipe; do
    check_cli "$build/$exe"
done

for suite in test_proto test_broker test_resizer test_frontend; do
    run_suite "$suite"
done
# End-to-end suites start real processes; run them one at a time.
for suite in test_e2e test_faults; do
    [ -f "tests/integration/$suite.c" ] && run_suite "$suite" --jobs 1
done

echo "logs: $out"
[ $skipped -gt 0 ] && echo "$skipped skipped"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
