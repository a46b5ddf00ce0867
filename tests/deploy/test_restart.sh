#!/usr/bin/env bash
# tests/deploy/test_restart.sh — deploy/run.sh's supervision rules, with
# stand-in programs (small scripts in a fake build directory) whose way of
# dying the test chooses: the restart delay doubles while a program keeps
# dying (0.5, 1, 2, 4 s), exit status 2 (bad configuration) stops
# everything with run.sh's exit 2, and a program that ignores SIGTERM is
# SIGKILLed at the stop deadline. test_supervise.sh does the same with the
# real programs and jobs; this one reaches the paths they never take.
#
# Checks read run.sh's log lines (the delays it says it will wait), never
# wall-clock times; every wait has a deadline. One line per check, then
# "N passed, N failed"; exit 1 when a check failed.
#
# Usage: tests/deploy/test_restart.sh
set -uo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/deploy/common.sh
. "$top/tests/deploy/common.sh"

tmp=$(mktemp -d /tmp/imgpipe-restart.XXXXXX)
port=$(free_ports 1)         # the frontend's, checked by run.sh; nothing listens

run_pid="" run_rc=""
runlog=""
cleanup() {
    local pid
    [ -n "$run_pid" ] && kill -KILL -- "-$run_pid" 2>/dev/null
    for pid in $(started_pids "$tmp"/*.log); do
        kill -KILL "$pid" 2>/dev/null
    done
    if [ $failed -gt 0 ]; then echo "# logs kept in $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# stub NAME BODY: a stand-in program in the fake build directory, where
# run.sh looks for it. BODY is bash; it gets the program's arguments.
stub() {
    local path=$tmp/build/$1
    mkdir -p "$(dirname "$path")"
    printf '#!/usr/bin/env bash\n%s\n' "$2" >"$path"
    chmod +x "$path"
}
long='exec sleep 1000'                          # runs until a signal

# run_start NAME: run.sh over the stubs, in its own session, log NAME.log.
run_start() {
    runlog=$tmp/$1.log
    : >"$runlog"                # before the checks read it, not when the child opens it
    local setsid=()
    command -v setsid >/dev/null && setsid=(setsid)
    SKIP_BUILD=1 BUILD_DIR="$tmp/build" PORT=$port DATA_DIR="$tmp/data" RESIZERS=1 \
    IMGP_INTAKE=tcp://127.0.0.1:$port IMGP_STATUS=tcp://127.0.0.1:$port \
    IMGP_JOBS=tcp://127.0.0.1:$port \
        "${setsid[@]}" "$top/deploy/run.sh" >"$runlog" 2>&1 </dev/null &
    run_pid=$!
}
run_gone() { ! kill -0 "$run_pid" 2>/dev/null; }
# run_end SECONDS: wait for run.sh to exit; its status in run_rc ("" if not).
run_end() {
    run_rc=""
    if wait_for "$1" run_gone; then wait "$run_pid"; run_rc=$?; fi
    run_pid=""
}
count() { grep -cE "$1" "$runlog"; }
delays() { grep -o "event=exited proc=$1 .*restart_in_s=[0-9.]*" "$runlog" | sed 's/.*=//' | tr '\n' ' '; }
# No program run.sh logged as started is still there.
none_left() {
    local pid
    for pid in $(started_pids "$runlog"); do
        kill -0 "$pid" 2>/dev/null && return 1
    done
    return 0
}

# ---------------------------------------------------------------------------
# 1. A resizer that dies at once, every time: 0.5, 1, 2, 4 s

stub broker/imgpipe-broker "$long"
stub http-frontend/imgpipe-frontend "$long"
stub resizer/imgpipe-resizer 'sleep 0.1; exit 1'
run_start backoff
fourth() { [ "$(count 'event=exited proc=resizer1 ')" -ge 4 ]; }
if wait_for 30 fourth; then
    seen=$(delays resizer1)
    check "a resizer dying again and again waits longer each time: $seen" \
        [ "${seen:0:15}" = "0.5 1.0 2.0 4.0" ]
    check "each death says its exit status" [ "$(count 'proc=resizer1 pid=[0-9]+ status=1 ')" -ge 4 ]
else
    not_ok "no 4 deaths of resizer1 within 30 s: $(delays resizer1)"
fi
check "the broker and frontend were not touched" [ "$(count 'event=exited proc=(broker|frontend) ')" -eq 0 ]
kill -TERM "$run_pid"
run_end 20
check "SIGTERM: run.sh exits 0 (status ${run_rc:-still running})" [ "$run_rc" = 0 ]
check "SIGTERM: no stand-in left" none_left

# ---------------------------------------------------------------------------
# 2. Exit status 2 (bad configuration): not restarted, everything stops

stub broker/imgpipe-broker 'echo "imgpipe-broker: --max-queue must be ..." >&2; exit 2'
stub resizer/imgpipe-resizer "$long"
run_start config
run_end 20
check "a program exiting 2 stops run.sh with status 2 (status ${run_rc:-still running})" [ "$run_rc" = 2 ]
said_why() {
    [ "$(count 'proc=broker .*status=2 .*reason="bad configuration')" -eq 1 ] \
        && [ "$(count 'event=started proc=broker ')" -eq 1 ]
}
check "it says why, and does not restart it" said_why
check "the others were stopped" none_left

# ---------------------------------------------------------------------------
# 3. A program that ignores SIGTERM: SIGKILL at the stop deadline (10 s)

stub broker/imgpipe-broker "$long"
stub http-frontend/imgpipe-frontend "trap '' TERM; $long"
run_start stubborn
started() { [ "$(count 'event=started proc=')" -ge 3 ]; }
wait_for 10 started
kill -TERM "$run_pid"
run_end 30
check "SIGTERM with a frontend that ignores it: run.sh still exits 0 (status ${run_rc:-still running})" \
    [ "$run_rc" = 0 ]
check "it says it had to SIGKILL the frontend" [ "$(count 'event=stop_timeout procs="frontend"')" -eq 1 ]
check "nothing left" none_left

summary
[ $failed -eq 0 ]
