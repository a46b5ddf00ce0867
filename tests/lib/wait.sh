# tests/lib/wait.sh — waiting on a condition with a deadline, for the
# script tests (tests/deploy, tests/cluster): the harness's h_wait_until,
# in bash. Sourced; defines functions only.
# shellcheck shell=bash

# now_ms: the wall clock in milliseconds.
now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }

# wait_for SECONDS COMMAND...: run COMMAND every 50 ms until it succeeds
# (0) or SECONDS pass (1).
wait_for() {
    local deadline=$(($(now_ms) + $1 * 1000))
    shift
    until "$@"; do
        [ "$(now_ms)" -lt $deadline ] || return 1
        sleep 0.05
    done
}
