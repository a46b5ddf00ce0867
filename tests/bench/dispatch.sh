#!/usr/bin/env bash
# tests/bench/dispatch.sh — does a job wait for its start while a resizer
# slot is free? The measurement behind the jobs link's dispatch rule
# (issue 9: "idle wait" under 50 ms at p99 with two resizers).
#
# Starts a broker, RESIZERS resizers (named r1, r2...) and a frontend on
# free loopback ports, as run.sh does. Warm-up: thumbnails every corpus
# photo to 64 px in jpeg, png and webp through the pipeline itself; those
# are the small originals. Then the measured run: BURSTS bursts of BURST
# uploads each (every BIG_EVERY-th a corpus photo, in turn, the rest small
# images), CONCURRENCY uploads at a time inside a burst, and a pause from
# GAPS (seconds, used in turn) after each burst, so the queue fills
# sometimes and empties sometimes. When every job has ended, the broker's
# log (INFO) goes through dispatch.awk: per job, plain wait (accepted ->
# started) and idle wait (the part of it during which some resizer slot
# was free). Prints percentiles of both, the job count and each resizer's
# share, with the load average before and after (2 cores shared with other
# work change the figures; say so when quoting them). Also, to tell the
# dispatcher from the machine: idle wait split at the job's dispatch, the
# broker-view idle wait (a slot free and no JOB sent to it: needs the
# broker to name the worker at dispatch), the resizers' reaction time (JOB
# sent to an idle resizer -> its STARTED), and start order against accept
# order (a job held behind a long one at a busy resizer is overtaken).
# dispatch_check.sh checks the parser on a worked example.
#
#   BUILD_DIR=build (any build, e.g. another branch's)  RESIZERS=2
#   BURSTS=10 BURST=12 BIG_EVERY=6 GAPS="0.3 2.5 1 4" CONCURRENCY=4
#   CORPUS=../shared/corpus  KEEP=1 keeps the work directory (logs)
#   RESIZER_NICE=N passes --nice N to the resizers (default: their own, 10).
#   On a machine busy with other work a niced resizer waits for the CPU
#   between a JOB's arrival and its STARTED, and that counts as idle wait.
# tests/bench/dispatch.sh --parse BROKER_LOG [SKIP_LINES]: the report of a
# saved log only.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
corpus=${CORPUS:-$top/../shared/corpus}
resizers=${RESIZERS:-2}
bursts=${BURSTS:-10}
burst=${BURST:-12}
big_every=${BIG_EVERY:-6}
read -r -a gaps <<<"${GAPS:-0.3 2.5 1 4}"
conc=${CONCURRENCY:-4}

# percentiles FILE COLUMN: "p50 X p90 X p99 X max X" (nearest rank, ms).
percentiles() {
    awk -v c="$2" '{print $c}' "$1" | sort -n | awk '
        { v[NR] = $1 }
        function at(p,   i) { i = int(p * NR + 0.999999); if (i < 1) i = 1; return v[i] }
        END { if (NR == 0) { print "none"; exit }
              printf "p50 %d  p90 %d  p99 %d  max %d ms", at(0.5), at(0.9), at(0.99), v[NR] }'
}

# report BROKER_LOG SKIP: the figures, from the log alone.
report() {
    local jobs n over
    jobs=$(mktemp -d)
    awk -v skip="$2" -f "$here/dispatch.awk" "$1" >"$jobs/all"
    grep -v '^#' "$jobs/all" >"$jobs/rows" || true
    awk '{print $1, $2 - $6}' "$jobs/rows" >"$jobs/queued"
    awk '$5 > 100000' "$jobs/rows" >"$jobs/big"
    awk '$5 <= 100000' "$jobs/rows" >"$jobs/small"
    grep '^# overtaken ' "$jobs/all" | awk '{print $3, $4}' >"$jobs/overtaken" || true
    n=$(wc -l <"$jobs/rows")
    over=$(awk '$2 > 50' "$jobs/rows" | wc -l)
    echo "jobs started: $n; $(grep -E '^# (accepted|done|failed|requeued|result_refused) ' "$jobs/all" |
        sed 's/^# //' | paste -sd, - | sed 's/,/, /g')"
    echo "idle wait (some slot free)    : $(percentiles "$jobs/rows" 2); jobs over 50 ms: $over"
    echo "plain wait (accepted->started): $(percentiles "$jobs/rows" 3)"
    echo "idle wait split: in the broker's queue $(percentiles "$jobs/queued" 2);"
    echo "    after its dispatch (in transit, or held by a busy resizer) $(percentiles "$jobs/rows" 6)"
    echo "idle wait, originals > 100 kB ($(wc -l <"$jobs/big")): $(percentiles "$jobs/big" 2)"
    echo "    smaller ones ($(wc -l <"$jobs/small")): $(percentiles "$jobs/small" 2)"
    echo "broker-view idle wait (a slot free and no job sent to it): $(percentiles "$jobs/rows" 8)"
    echo "dispatched->started (transit, a resizer's queue, its CPU share): $(percentiles "$jobs/rows" 7)"
    awk '$9 != "-"' "$jobs/rows" >"$jobs/idle_sent"
    echo "    of those sent to an idle resizer ($(wc -l <"$jobs/idle_sent"); its reaction time): $(percentiles "$jobs/idle_sent" 9)"
    echo "start order: $(awk '$2 > 0' "$jobs/overtaken" | wc -l) jobs started after one accepted later;" \
         "most overtaken: $(sort -k2 -n "$jobs/overtaken" | tail -1 | awk '{print $2 + 0}') later jobs"
    echo "per resizer, jobs done: $(grep '^# worker ' "$jobs/all" |
        awk '{printf "%s%s %d", (NR > 1 ? ", " : ""), $3, $4}')"
    rm -rf "$jobs"
}

if [ "${1:-}" = "--parse" ]; then
    report "$2" "${3:-0}"
    exit 0
fi

build=$(cd "${BUILD_DIR:-$top/build}" && pwd)
[ -d "$corpus/photos" ] || { echo "dispatch: no corpus at $corpus" >&2; exit 1; }
for program in broker/imgpipe-broker resizer/imgpipe-resizer http-frontend/imgpipe-frontend; do
    [ -x "$build/$program" ] || { echo "dispatch: $build/$program not built" >&2; exit 1; }
done
work=$(mktemp -d /tmp/imgpipe-dispatch.XXXXXX)

# A free port into the variable named $1: below the kernel's ephemeral
# range (so no outgoing connection of ours, e.g. a resizer's, holds it by
# the time its program binds), in use by no socket in any state, and not
# handed out already in this run.
taken=" "
read -r ephemeral_low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || ephemeral_low=32768
free_port() {
    local candidate
    while true; do
        candidate=$((10000 + RANDOM % (ephemeral_low - 10000)))
        case "$taken" in *" $candidate "*) continue ;; esac
        [ -z "$(ss -Htan "sport = :$candidate" 2>/dev/null)" ] || continue
        taken+="$candidate "
        printf -v "$1" '%s' "$candidate"
        return
    done
}
now() { date +%s.%N; }
ep() { echo "tcp://127.0.0.1:$1"; }

for name in INTAKE STATUS JOBS; do
    free_port port
    export "IMGP_$name=$(ep "$port")"
done
# The results endpoint exists only before the credit-based jobs link.
if "$build/broker/imgpipe-broker" --help 2>&1 | grep -q -- '--results'; then
    free_port port
    export IMGP_RESULTS=$(ep "$port")
fi
free_port web
url="http://127.0.0.1:$web"

source_dir=$(grep -o '"source": *"[^"]*"' "$build/meson-info/meson-info.json" | sed 's/.*"\([^"]*\)"$/\1/')
echo "build: $build ($(git -C "$source_dir" log -1 --format='%h %s' 2>/dev/null | cut -c1-70))"
echo "date: $(date -u +%FT%TZ), $(nproc) cores; before: $(uptime)"

pids=()
trap 'kill -TERM "${pids[@]}" 2>/dev/null; wait; [ -n "${KEEP:-}" ] && echo "kept $work" || rm -rf "$work"' EXIT
"$build/broker/imgpipe-broker" --data-dir "$work/data" --max-queue 100000 2>"$work/broker.log" &
pids+=($!)
for i in $(seq "$resizers"); do
    "$build/resizer/imgpipe-resizer" --name "r$i" ${RESIZER_NICE:+--nice "$RESIZER_NICE"} \
        2>>"$work/resizer.log" &
    pids+=($!)
done
"$build/http-frontend/imgpipe-frontend" --listen "127.0.0.1:$web" 2>"$work/frontend.log" &
pids+=($!)

# Every wait has a deadline: a process that failed must not hang the run.
wait_for() {    # SECONDS DESCRIPTION COMMAND...
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || { echo "dispatch: $what did not happen in time" >&2; exit 1; }
        sleep 0.05
    done
}
joined() {      # every resizer named in a joined or ready line
    [ "$(grep -o 'worker=[^ ]* event=\(joined\|ready\)' "$work/broker.log" | cut -d" " -f1 | sort -u | wc -l)" \
        -ge "$resizers" ]
}
wait_for 30 "the frontend's /healthz" curl -fs -o /dev/null "$url/healthz"
wait_for 30 "every resizer joining" joined

# upload FILE [QUERY]: prints the job id (empty when refused).
upload() {
    curl -s -F "img=@$1" "$url/v1/images${2:+?$2}" | sed -n 's/.*"id":"\([0-9a-f]*\)".*/\1/p'
}

# Warm-up, which also makes the small originals.
mkdir -p "$work/small"
photos=("$corpus"/photos/*.jpg)
for photo in "${photos[@]}"; do
    for format in jpeg png webp; do
        id=$(upload "$photo" "width=64&height=64&format=$format")
        out="$work/small/$(basename "$photo" .jpg).$format"
        curl -fs -o "$out" "$url/v1/images/$id/thumbnail?wait=30" ||
            { echo "dispatch: warm-up thumbnail of $photo failed" >&2; exit 1; }
    done
done
small=("$work"/small/*)
mark=$(wc -l <"$work/broker.log")

# The measured run: bursts with gaps.
t0=$(now)
b=0 s=0
for k in $(seq 0 $((bursts - 1))); do
    list=()
    for i in $(seq 0 $((burst - 1))); do
        if [ $((i % big_every)) -eq 0 ]; then
            list+=("${photos[$((b % ${#photos[@]}))]}")
            b=$((b + 1))
        else
            list+=("${small[$((s % ${#small[@]}))]}")
            s=$((s + 1))
        fi
    done
    printf '%s\n' "${list[@]}" | xargs -P "$conc" -I{} \
        curl -s -o /dev/null -w '%{http_code}\n' -F img=@{} "$url/v1/images" >>"$work/uploads"
    sleep "${gaps[$((k % ${#gaps[@]}))]}"
done
accepted=$(grep -c '^202' "$work/uploads" || true)
ended() {
    [ "$(tail -n +"$((mark + 1))" "$work/broker.log" | grep -c 'event=\(done\|failed\) ' || true)" \
        -ge "$accepted" ]
}
wait_for 900 "every accepted job ending" ended
t1=$(now)

printf 'uploads: %d (%d accepted: %d photos, %d small), %d bursts of %d, gaps %s s, %d at a time; ' \
    "$((bursts * burst))" "$accepted" "$b" "$s" "$bursts" "$burst" "${gaps[*]}" "$conc"
printf 'resizers: %d (nice %s); run %.1f s\n' "$resizers" "${RESIZER_NICE:-default}" "$(echo "$t1 - $t0" | bc -l)"
report "$work/broker.log" "$mark"
echo "after: $(uptime)"
