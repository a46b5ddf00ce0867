#!/usr/bin/env bash
# tests/bench/dispatch_check.sh — dispatch.awk on a hand-made broker log
# whose answers are worked out below, so a change to the parser that
# miscounts fails here rather than in a measurement someone quotes.
# Prints "ok" or the difference; exit status 0 or 1.
#
# Two resizers, a (READY, 1 slot) and b (joined). j1 goes to a while both
# are free; j2 is prefetched to a (busy with j1) while b is free; j3 goes
# to b. Worked out, in ms:
#   j1: idle 20, wait 20, after dispatch 10, dispatched->started 10,
#       broker-view 20 (b stays open), reaction 10 (a was idle)
#   j3: idle 30 (b free 1.200-1.230), wait 30, after dispatch 20, d->s 20,
#       broker-view 10 (b open until its JOB at 1.210), reaction 20
#   j2: idle 140 (b free 1.100-1.230, a free 1.500-1.510), wait 410, after
#       dispatch 140, d->s 410, broker-view 110 (b open 1.100-1.210; a is
#       not open at 1.500, j2 is already sent to it), reaction "-"
#   j2 is overtaken by j3 (accepted later, started earlier).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

log() { printf '2026-12-06T00:00:%s broker INFO %s\n' "$1" "$2"; }
input=$( {
    log 00.000Z "worker=a event=ready slots=1 credit=2"
    log 00.000Z "worker=b event=joined by=heartbeat"
    log 01.000Z "job=j1 event=accepted bytes=10"
    log 01.010Z "job=j1 event=dispatched worker=a attempt=1"
    log 01.020Z "job=j1 event=started worker=a attempt=1"
    log 01.100Z "job=j2 event=accepted bytes=200000"
    log 01.100Z "job=j2 event=dispatched worker=a attempt=1"
    log 01.200Z "job=j3 event=accepted bytes=30"
    log 01.210Z "job=j3 event=dispatched worker=b attempt=1"
    log 01.230Z "job=j3 event=started worker=b attempt=1"
    log 01.500Z "job=j1 event=done worker=a ms=480"
    log 01.510Z "job=j2 event=started worker=a attempt=1"
    log 01.600Z "job=j3 event=done worker=b ms=370"
    log 01.700Z "job=j2 event=done worker=a ms=190"
} )
expected='j1 20 20 a 10 10 10 20 10
j3 30 30 b 30 20 20 10 20
j2 140 410 a 200000 140 410 110 -
# accepted 3
# done 3
# failed 0
# requeued 0
# result_refused 0
# overtaken j1 0
# overtaken j2 1
# overtaken j3 0
# worker a 2
# worker b 1'
got=$(awk -v skip=0 -f "$here/dispatch.awk" <<<"$input")
if diff <(sort <<<"$expected") <(sort <<<"$got"); then
    echo ok
else
    echo "dispatch.awk: the lines above differ (< expected, > got)" >&2
    exit 1
fi
