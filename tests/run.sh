#!/usr/bin/env bash
# tests/run.sh — everything CI runs: install what is missing, build, run
# every test suite, and end with one line "N passed, N failed".
# Exit status is non-zero when any test failed or could not run.
#
# Three stages, each counted the same way (one result per test):
#   1. the normal build: CLI checks, unit suites, integration suites,
#      script tests, the upload page in headless Chromium (tests/browser),
#      and the benchmark's smoke run (tests/bench/run.sh --quick: it works
#      and writes every section; no number is checked);
#   2. the same suites built with AddressSanitizer + UndefinedBehavior-
#      Sanitizer (LeakSanitizer on), named "test_proto [asan]"...; any
#      sanitizer report, from a test or from a program a test spawned,
#      counts as one more failure;
#   3. each libFuzzer target of tests/fuzz/ for FUZZ_SECONDS: a crash is
#      one failed test, a clean run one passed.
#
#   BUILD_DIR=build          normal build directory
#   ASAN_BUILD_DIR           sanitizer build directory (default $BUILD_DIR-asan)
#   FUZZ_BUILD_DIR           fuzzer build directory (default $BUILD_DIR-fuzz)
#   FUZZ_SECONDS=30          time per fuzz target; 0 skips stage 3
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1
# The programs the tests start log as the tests read them: text. An
# operator's IMGP_LOG_FORMAT=json would reach them through the environment
# (test_jsonlogs asks for JSON itself, with the flag).
unset IMGP_LOG_FORMAT
build=${BUILD_DIR:-build}
asan=${ASAN_BUILD_DIR:-$build-asan}
fuzz=${FUZZ_BUILD_DIR:-$build-fuzz}
fuzz_seconds=${FUZZ_SECONDS:-30}
out=$(mktemp -d /tmp/imgpipe-tests.XXXXXX)
passed=0 failed=0 skipped=0
times=""

deploy/deps.sh --test || { echo "0 passed, 1 failed"; exit 1; }

# ---------------------------------------------------------------------------
# Helpers

# Note how long a stage took, for the summary at the end.
stage_done() {
    local name=$1 start=$2
    times+="${times:+, }$name $((SECONDS - start)) s"
}

# setup_build DIR LOG [meson args]: configure DIR, or reconfigure it when it
# exists. Meson keeps the compiler a directory was made with, so when CC
# asks for another one the directory is wiped and made again.
setup_build() {
    local dir=$1 log=$2
    shift 2
    local mode=()
    if [ -f "$dir/build.ninja" ]; then
        mode=(--reconfigure)
        if [ -n "${CC:-}" ] && ! grep -A1 '^rule c_COMPILER$' "$dir/build.ninja" \
                                | grep -q "command = $CC "; then
            mode=(--wipe)
        fi
    fi
    meson setup "${mode[@]}" "$dir" "$@" >"$log" 2>&1 || { cat "$log"; return 1; }
}

# ninja_build DIR LOG [targets]: ninja, showing the end of the log on failure.
ninja_build() {
    local dir=$1 log=$2
    shift 2
    ninja -C "$dir" "$@" >"$log" 2>&1 || { tail -50 "$log"; return 1; }
}

# One result line per test, counted from criterion's TAP report.
count_tap() {
    local tap=$1 took=$2
    local p f s
    s=$(grep -cE '^ok .*# SKIP' "$tap")
    p=$(grep -E '^ok ' "$tap" | grep -vc '# SKIP')
    f=$(grep -cE '^not ok ' "$tap")
    grep -E '^not ok |# SKIP' "$tap" | sed 's/^/    /'
    passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
    echo "  $p passed, $f failed, $s skipped ($took)"
}

# Set by stage 2: where sanitized processes write their reports, and the
# ASan options they run with (stage 2 says why each one).
san_dir=""
asan_options="halt_on_error=1:detect_leaks=1:fast_unwind_on_malloc=0:quarantine_size_mb=16"

# launch TAG COMMAND...: run COMMAND. In stage 2 it runs with the sanitizer
# options, and its reports (and those of every process it starts) go to
# $san_dir/TAG.PID; see stage 2 for why.
launch() {
    local tag=$1
    shift
    if [ -z "$san_dir" ]; then
        "$@"
        return
    fi
    ASAN_OPTIONS="$asan_options:log_path=$san_dir/$tag" \
    UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$san_dir/$tag" \
    LSAN_OPTIONS="suppressions=$top/tests/lsan.supp:print_suppressions=0" \
        "$@"
}

# libzmq_leak_only REPORT: true when REPORT holds leaks only, every one
# allocated with no frame of ours on its stack: inside libzmq's own I/O
# thread, whose decoder buffer is lost when a connection drops in the middle
# of a message (zeromq/libzmq#2830, seen at random when a resizer stops or
# its broker restarts while a JOB is on the wire). Debian's libzmq has no
# symbols, so lsan.supp cannot name the function; this looks at whole
# stacks instead, and a leak with any frame of ours still fails the run.
libzmq_leak_only() {
    grep -q 'ERROR: LeakSanitizer' "$1" \
    && ! grep -qE 'ERROR: AddressSanitizer|runtime error:' "$1" \
    && awk '/^ *#[0-9]+ 0x/ && !/__interceptor_|libzmq\.so|libstdc\+\+\.so|start_thread|clone/ {
                ours = 1 }
            END { exit ours }' "$1"
}

# count_san_reports LABEL TAG: in stage 2, one failure per report that the
# processes launched with TAG left.
count_san_reports() {
    local label=$1 tag=$2 report program
    [ -n "$san_dir" ] || return 0
    for report in "$san_dir/$tag".*; do
        if [ ! -f "$report" ] || ! grep -qE 'ERROR: |runtime error:' "$report"; then
            continue        # no file matched the glob, or nothing but notes
        fi
        if libzmq_leak_only "$report"; then
            echo "    note: $label: a leak inside libzmq only (zeromq/libzmq#2830), not ours: $report"
            continue
        fi
        failed=$((failed + 1))
        program=$(grep -m1 -oE 'in _start \([^+)]+' "$report" | sed 's/.*(//')
        echo "    not ok: $label: sanitizer report from ${program:-a process}: $report"
        grep -m1 -E 'ERROR: |runtime error:' "$report" | sed 's/^/      /'
        grep -m1 '^SUMMARY' "$report" | sed 's/^/      /'
    done
}

# run_suite LABEL EXE [args]: run a criterion suite and count its tests.
run_suite() {
    local label=$1 exe=$2
    shift 2
    local file=${label//[^A-Za-z0-9_]/_}
    if [ ! -x "$exe" ]; then
        echo "== $label: not built"; failed=$((failed + 1)); return
    fi
    echo "== $label"
    local started=$SECONDS
    launch "$file" "$exe" --tap="$out/$file.tap" "$@" >"$out/$file.log" 2>&1
    local rc=$?
    count_tap "$out/$file.tap" "$((SECONDS - started)) s"
    # A crash that leaves no "not ok" line must still fail the run.
    if [ $rc -ne 0 ] && ! grep -qE '^not ok ' "$out/$file.tap"; then
        echo "    $label exited $rc; log: $out/$file.log"; failed=$((failed + 1))
    fi
    count_san_reports "$label" "$file"
}

# Programs answer --help and --version and refuse an unknown flag.
check_cli() {
    local exe=$1 tag
    tag=cli_$(basename "$exe")
    if launch "$tag" "$exe" --help >/dev/null && launch "$tag" "$exe" --version >/dev/null \
       && ! launch "$tag" "$exe" --no-such-flag >/dev/null 2>&1; then
        passed=$((passed + 1))
    else
        echo "    not ok: $exe --help/--version/unknown flag"; failed=$((failed + 1))
    fi
    count_san_reports "cli: $exe" "$tag"
}

programs="broker/imgpipe-broker resizer/imgpipe-resizer
          http-frontend/imgpipe-frontend client/imgpipe"
# Every suite in the tree runs, so a new one cannot be forgotten here: one
# per tests/unit/test_*.c and tests/integration/test_*.c.
suites_in() {
    local file
    for file in "$1"/test_*.c; do
        [ -e "$file" ] && basename "$file" .c
    done
}
unit_suites=$(suites_in tests/unit)
integration_suites=$(suites_in tests/integration)

# run_all_suites LABEL DIR: the CLI checks and every suite of build DIR.
run_all_suites() {
    local tag=$1 dir=$2
    echo "== cli$tag"
    for exe in $programs; do
        check_cli "$dir/$exe"
    done
    for suite in $unit_suites; do
        run_suite "$suite$tag" "$dir/tests/$suite"
    done
    # End-to-end suites start real processes; they run one test at a time.
    for suite in $integration_suites; do
        run_suite "$suite$tag" "$dir/tests/$suite" --jobs 1
    done
}

# ---------------------------------------------------------------------------
# Stage 1: the normal build

start=$SECONDS
if ! setup_build "$build" "$out/setup.log" || ! ninja_build "$build" "$out/build.log"; then
    echo "0 passed, 1 failed"; exit 1
fi
run_all_suites "" "$build"
stage_done normal $start

# ----------------------------------------------------------------------
# Script tests: whole deployments driven from bash (deploy/run.sh under
# supervision, hosts in network namespaces). Each prints one line per
# check and ends with "N passed, N failed"; exit 77 means it could not run
# here (no privilege, no tool) and counts as skipped, never as passed.

run_script() {
    local label=$1
    shift
    local log="$out/${label//[^A-Za-z0-9_]/_}.log" started=$SECONDS
    echo "== $label"
    "$@" >"$log" 2>&1
    local rc=$? counts p f
    counts=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -1)
    grep -E '^(FAIL|not ok|skipped)' "$log" | sed 's/^/    /'
    if [ $rc -eq 77 ]; then
        skipped=$((skipped + 1))
        echo "  skipped ($((SECONDS - started)) s)"
    elif [ -n "$counts" ]; then
        p=${counts%% passed*} f=${counts#*, } f=${f%% failed}
        passed=$((passed + p)) failed=$((failed + f))
        [ $rc -ne 0 ] && [ "$f" -eq 0 ] && failed=$((failed + 1)) && echo "    exited $rc"
        echo "  $p passed, $f failed ($((SECONDS - started)) s); log: $log"
    else
        failed=$((failed + 1))
        echo "    not ok: $label exited $rc without a count; log: $log"
    fi
}

start=$SECONDS
for script in tests/deploy/test_*.sh tests/cluster/test_*.sh; do
    [ -x "$script" ] && run_script "$(basename "$script" .sh)" "$script" "$build"
done
stage_done scripts $start

# ----------------------------------------------------------------------
# The browser test: the upload page (GET /) in headless Chromium driven by
# playwright-core, against the real programs with API keys on
# (tests/browser/run.sh; the checks are listed in upload-page.test.mjs).
# Counted like the script tests, one result per check; skipped, never
# passed, where deps.sh could not install chromium or node, or npm ci could
# not fetch playwright-core. Its screenshot: $build/browser/upload-page.png.

start=$SECONDS
run_script browser tests/browser/run.sh "$build"
stage_done browser $start

# ----------------------------------------------------------------------
# The benchmark's smoke run: tests/bench/run.sh --quick (under a minute)
# still runs end to end and writes its JSON with every section, every job
# of it done. One test, skipped where there are no corpus photos. Its
# numbers are not checked: the benchmark reports, it asserts nothing about
# time (and this build is not release).

bench_smoke() {
    local log="$out/bench.log" json="$out/bench.json" started=$SECONDS
    echo "== bench --quick"
    BUILD_DIR=$build timeout -k 30 300 tests/bench/run.sh --quick --out "$json" >"$log" 2>&1
    local rc=$?
    if [ $rc -eq 77 ]; then         # no corpus photos here: nothing to measure
        skipped=$((skipped + 1))
        echo "  skipped: $(tail -1 "$log")"
        return
    fi
    if [ $rc -eq 0 ] && jq -e '(.raw | length) == 4 and all(.raw[]; .failed == 0)
                 and (.pipeline | length) == 2 and all(.pipeline[]; .done == .jobs)
                 and (.capacity | length) >= 1 and all(.capacity[]; .done == .jobs)' \
              "$json" >/dev/null; then
        passed=$((passed + 1))
        echo "  ok ($((SECONDS - started)) s); log: $log"
    else
        failed=$((failed + 1))
        echo "    not ok: tests/bench/run.sh --quick; log: $log"
        tail -5 "$log" | sed 's/^/      /'
    fi
}
start=$SECONDS
bench_smoke
stage_done bench $start

# ---------------------------------------------------------------------------
# Stage 2: the same suites under AddressSanitizer + UBSan + LeakSanitizer.
#
# Built with clang: its sanitizers are one runtime, so UBSan honours
# log_path like ASan does (gcc's separate libubsan prints to stderr only).
#
# Why log_path: a report must fail the run wherever it happens, and two
# kinds would otherwise go unseen. LeakSanitizer reports when a process
# exits, after criterion has already recorded the test as passed; and the
# integration suites spawn the real programs, whose stderr goes to a log
# the harness deletes when the test passes (only the SIGTERM shutdown test
# checks their exit status). Every sanitized process inherits the options
# set by launch and writes its report to $san_dir/SUITE.PID, which
# count_san_reports reads after each suite. fast_unwind_on_malloc=0 gives
# leaks whole stacks (the frame-pointer unwinder stops in libraries built
# without frame pointers), which tests/lsan.supp needs and a reader wants.
# quarantine_size_mb=16: ASan keeps freed blocks (256 MB by default) to
# catch use after free; with image-sized buffers that fills up and reads as
# RSS growth in the bounded-memory fault test. 16 MB still holds dozens of
# uploads and thousands of small blocks, and keeps RSS flat enough for the
# test's limits to mean something under ASan too.

start=$SECONDS
if CC=clang setup_build "$asan" "$out/asan-setup.log" \
       -Db_sanitize=address,undefined -Db_lundef=false \
   && ninja_build "$asan" "$out/asan-build.log"; then
    san_dir="$out/san"
    mkdir -p "$san_dir"
    run_all_suites " [asan]" "$asan"
    san_dir=""
else
    echo "== sanitizer build failed"; failed=$((failed + 1))
fi
stage_done asan $start

# ---------------------------------------------------------------------------
# Stage 3: libFuzzer targets (see tests/fuzz/README.md)

# run_fuzzer TARGET: fuzz for $fuzz_seconds from the checked-in seeds
# (read-only) and a work corpus kept in the build directory, so coverage
# grows from run to run. A crash, leak, UB or slow input (-timeout) ends
# the run with a non-zero exit and a reproducer in $out.
run_fuzzer() {
    local target=$1
    local exe="$fuzz/tests/fuzz/$target" work="$fuzz/corpus/$target"
    local dict=()
    [ -f "tests/fuzz/$target.dict" ] && dict=(-dict="tests/fuzz/$target.dict")
    mkdir -p "$work"
    echo "== $target [fuzz ${fuzz_seconds} s]"
    ASAN_OPTIONS="halt_on_error=1:detect_leaks=1" \
    UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
        "$exe" -max_total_time="$fuzz_seconds" -timeout=10 -print_final_stats=1 \
               -artifact_prefix="$out/$target-" "${dict[@]}" \
               "$work" "tests/fuzz/corpus/$target" >"$out/$target.log" 2>&1
    local rc=$?
    local runs cov
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/$target.log")
    cov=$(grep -oE 'cov: [0-9]+' "$out/$target.log" | tail -1)
    if [ $rc -eq 0 ]; then
        passed=$((passed + 1))
        echo "  ok: ${runs:-?} runs, $cov"
    else
        failed=$((failed + 1))
        echo "    not ok: $target exited $rc after ${runs:-?} runs; log: $out/$target.log"
        grep -m3 -E '^==[0-9]+==ERROR|runtime error:|^SUMMARY|^fuzz_|Test unit written' \
            "$out/$target.log" | sed 's/^/      /'
    fi
}

fuzz_targets=(fuzz_msg_decode fuzz_opts_query fuzz_id_valid fuzz_magic)
if [ "$fuzz_seconds" -gt 0 ]; then
    start=$SECONDS
    if CC=clang setup_build "$fuzz" "$out/fuzz-setup.log" \
           -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false \
       && ninja_build "$fuzz" "$out/fuzz-build.log" \
              "${fuzz_targets[@]/#/tests/fuzz/}" tests/fuzz/fuzz_seeds; then
        # Fresh seeds from the codec itself, so they follow the wire format.
        mkdir -p "$fuzz/corpus/fuzz_msg_decode"
        "$fuzz/tests/fuzz/fuzz_seeds" "$fuzz/corpus/fuzz_msg_decode" \
            || { echo "    not ok: fuzz_seeds could not encode every message"; failed=$((failed + 1)); }
        for target in "${fuzz_targets[@]}"; do
            run_fuzzer "$target"
        done
    else
        echo "== fuzzer build failed"; failed=$((failed + 1))
    fi
    stage_done fuzz $start
fi

echo "logs: $out"
echo "times: $times, total $SECONDS s"
[ $skipped -gt 0 ] && echo "$skipped skipped"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
