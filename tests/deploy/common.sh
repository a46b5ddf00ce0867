# tests/deploy/common.sh — what the deploy tests share, sourced by each:
# the result lines tests/run.sh counts, waiting on a condition with
# a deadline, free ports, and the pids deploy/run.sh logs.
# shellcheck shell=bash

passed=0 failed=0 skipped=0
ok()      { echo "ok - $*"; passed=$((passed + 1)); }
not_ok()  { echo "not ok - $*"; failed=$((failed + 1)); }
skip()    { echo "skipped - $*"; skipped=$((skipped + 1)); }
check()   { local what=$1; shift; if "$@"; then ok "$what"; else not_ok "$what"; fi; }
# The last line is what tests/run.sh counts: "N passed, N failed"; the
# checks that could not run here are a line before it, "N skipped".
summary() {
    [ "$skipped" -gt 0 ] && echo "$skipped skipped"
    echo "$passed passed, $failed failed"
}
# skip_all REASON: the whole test cannot run here; tests/run.sh counts
# exit 77 as skipped, never as passed.
skip_all() { skip "$1"; summary; exit 77; }

# shellcheck source=tests/lib/wait.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/wait.sh"
# since_s FROM_MS [TO_MS]: seconds from FROM_MS to TO_MS (default now), "1.23".
since_s() { local d=$((${2:-$(now_ms)} - $1)); printf '%d.%02d' $((d / 1000)) $((d % 1000 / 10)); }

# in_use PORT: something accepts connections on 127.0.0.1:PORT.
in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_ports N: the first of N free ports in a row (0 when none was found).
free_ports() {
    local try p
    for _ in $(seq 50); do
        try=$((20000 + RANDOM % 40000))
        for p in $(seq "$try" $((try + $1 - 1))); do in_use "$p" && continue 2; done
        echo "$try"
        return
    done
    echo 0
}

# started_pids LOG...: every pid deploy/run.sh logged as started.
started_pids() {
    grep -ho 'event=started proc=[a-z0-9]* pid=[0-9]*' "$@" 2>/dev/null | sed 's/.*pid=//'
}
