#!/usr/bin/env bash
# tests/bench/run.sh — the benchmark (issue 10): how close the whole
# pipeline comes to libvips alone on this machine, where every millisecond
# of CPU beyond libvips' own goes, and how many jobs one broker routes.
# It reports; it asserts nothing about time. Every wait has a deadline.
#
# How to run (after tests/run.sh, or `meson setup build -Dbuildtype=release`;
# quote numbers from a release build, and say the machine's load):
#
#   tests/bench/run.sh                  the full run, ~4 min on 2 cores
#   tests/bench/run.sh --quick          a smoke run, < 1 min (tests/run.sh runs it)
#   tests/bench/run.sh --threads 1      one resizer / one raw thread instead of one per core
#   tests/bench/run.sh --out FILE.json  where the JSON goes (default tests/bench/last.json,
#                                       not committed)
#   tests/bench/run.sh --table FILE.json  print the table of a saved run again
#   tests/bench/run.sh --only capacity  only some sections (comma list of raw, pipeline,
#                                       capacity), e.g. to measure a broker change
#   tests/bench/run.sh --rounds N       raw and pipeline N times, alternating (default 1); the
#                                       targets take each setting's median ratio
#   tests/bench/run.sh --concurrency C  jobs the load generator keeps in flight (default 8)
#   tests/bench/run.sh --nice N         the resizers' --nice (default 10, theirs), and raw
#                                       runs at the same priority (nice N, SCHED_BATCH), so
#                                       other work on the machine slows both alike
#   BUILD_DIR=build      the build measured (any branch's): its programs, and the tools
#                        of tests/bench/ unless TOOLS_DIR names another build
#   CORPUS=../shared/corpus  photos in $CORPUS/photos/*.jpg (or IMGP_CORPUS, as the tests);
#                        none there: exit status 77, nothing run
#   CAPACITY_DIR=/tmp    where the capacity runs put the broker's spool (/dev/shm: tmpfs)
#   TOOLS_DIR=DIR        the build of tests/bench/'s tools and of capacity's --dry-run
#                        resizer (default BUILD_DIR), for a BUILD_DIR without them
#   BASELINE_DIR=DIR     another build (e.g. main's) to measure beside BUILD_DIR, alternating
#                        run by run: its broker, resizers and frontend in the pipeline, its
#                        broker in the capacity points (with TOOLS_DIR's --dry-run resizer);
#                        rows marked "base"; the targets use BUILD_DIR's rows only
#   RESIZER_ARGS="--vips-threads 2"  more flags for the pipeline's resizers
#   KEEP=1               keep the work directory (processes' logs, each tool's JSON)
#
# What it runs, in one run, on the same files (each photo repeated to at
# least 200 jobs; --quick: 48):
#   1. raw: libvips alone (tests/bench/raw.c), one thread per core, files in
#      memory, vips_thumbnail_buffer + save; with glibc's malloc defaults and
#      with the resizer's malloc settings (--same-malloc). Two settings:
#      100x100 PNG (the default thumbnail) and 400x400 JPEG quality 80.
#   2. pipeline: a fresh broker, one resizer per core and a frontend on free
#      loopback ports, fed by tests/bench/loadgen.c (libcurl multi, 8 jobs in
#      flight: raw upload, GET ?wait= until done, GET thumbnail) for each
#      setting; images/s from the first upload to the last job done.
#   3. accounting: each process's CPU ms per image over that window (broker,
#      frontend, resizers, load generator) beside raw's; each resizer's idle
#      fraction from its stop line (event=stopped busy_ms=B waited_ms=W:
#      W / (B + W); absent from resizers that do not log it).
#   4. upload latency: the 202s' p50/p90/p99/max during run 2.
#   5. broker capacity (tests/bench/capacity.c): a fresh broker, K resizers
#      with --dry-run, C intake clients speaking the codec; tiny 1x1 PNG jobs
#      with K = 1, 4, 16 and C = 1, 4, and 1 MiB payloads (MB/s); --quick:
#      one small point of each.
#   6. memory: each process's RSS idle before run 2, its peak during it
#      (sampled every 100 ms), and 30 s after it (--quick: 3 s).
# Prints one table and writes the same figures as JSON (--out).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
# shellcheck source=../lib/wait.sh
. "$top/tests/lib/wait.sh"
cd "$top"
build=${BUILD_DIR:-build}
corpus=${CORPUS:-${IMGP_CORPUS:-$top/../shared/corpus}}
quick=0
threads=$(nproc)
nice=10
concurrency=8
rounds=1
only=raw,pipeline,capacity
out=$here/last.json

# table FILE.json: the human table of a run's JSON.
table() { jq -r -f "$here/table.jq" "$1"; }

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case $1 in
        --quick) quick=1 ;;
        --threads) threads=${2:?--threads needs N}; shift ;;
        --out) out=${2:?--out needs FILE}; shift ;;
        --nice) nice=${2:?--nice needs N}; shift ;;
        --concurrency) concurrency=${2:?--concurrency needs C}; shift ;;
        --rounds) rounds=${2:?--rounds needs N}; shift ;;
        --only) only=${2:?--only needs a list}; shift ;;
        --table) table "${2:?--table needs FILE.json}"; exit ;;
        --help) usage; exit 0 ;;
        *) echo "bench: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[[ $threads =~ ^[1-9][0-9]*$ ]] || { echo "bench: --threads needs a number ≥ 1" >&2; exit 2; }
[[ $concurrency =~ ^[1-9][0-9]*$ ]] || { echo "bench: --concurrency needs a number ≥ 1" >&2; exit 2; }
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "bench: --rounds needs a number ≥ 1" >&2; exit 2; }
wants() { [[ ",$only," == *",$1,"* ]]; }
for part in ${only//,/ }; do
    [[ $part =~ ^(raw|pipeline|capacity)$ ]] || { echo "bench: --only takes raw, pipeline, capacity" >&2; exit 2; }
done
read -r -a resizer_args <<<"${RESIZER_ARGS:-}"
[[ $nice =~ ^[0-9]+$ ]] && [ "$nice" -le 19 ] || { echo "bench: --nice needs 0..19" >&2; exit 2; }
# raw at the resizers' priority (what their --nice does: nice + SCHED_BATCH)
at_nice=()
[ "$nice" -gt 0 ] && at_nice=(chrt -b 0 nice -n "$nice")

if [ $quick -eq 1 ]; then
    min_jobs=40 after_s=3 cap_jobs=2000 cap_mb_jobs=100 deadline_s=120
    cap_points=("4 2 0 $cap_jobs" "4 1 1048576 $cap_mb_jobs")
else
    min_jobs=200 after_s=30 cap_jobs=10000 cap_mb_jobs=1000 deadline_s=600
    cap_points=()
    for k in 1 4 16; do for c in 1 4; do cap_points+=("$k $c 0 $cap_jobs"); done; done
    cap_points+=("1 1 1048576 $cap_mb_jobs" "4 1 1048576 $cap_mb_jobs" "4 4 1048576 $cap_mb_jobs")
fi
settings=("100 100 png 80" "400 400 jpeg 80")

shopt -s nullglob
photos=("$corpus"/photos/*.jpg)
shopt -u nullglob
# 77: could not run here (tests/run.sh counts it as skipped, not failed).
[ ${#photos[@]} -gt 0 ] || { echo "bench: no photos in $corpus/photos (set CORPUS)" >&2; exit 77; }
# Every photo equally often: the next multiple of their count.
jobs=$(( (min_jobs + ${#photos[@]} - 1) / ${#photos[@]} * ${#photos[@]} ))

tools=(tests/bench/imgpipe-bench-raw tests/bench/imgpipe-bench-load
       tests/bench/imgpipe-bench-capacity broker/imgpipe-broker resizer/imgpipe-resizer
       http-frontend/imgpipe-frontend)
# The measuring tools (and capacity's --dry-run resizer) come from
# TOOLS_DIR, the programs measured from BUILD_DIR: a branch without
# tests/bench/ can be measured with another build's tools.
tools_dir=${TOOLS_DIR:-$build}
ninja -C "$tools_dir" "${tools[@]}" >/dev/null \
    || { echo "bench: build failed in $tools_dir" >&2; exit 1; }
ninja -C "$build" "${tools[@]:3}" >/dev/null || { echo "bench: build failed in $build" >&2; exit 1; }
bin() { echo "$tools_dir/$1"; }
# The builds measured: BUILD_DIR ("test"), after BASELINE_DIR ("base") if set.
baseline=${BASELINE_DIR:-}
builds=("test:$build")
if [ -n "$baseline" ]; then
    ninja -C "$baseline" "${tools[@]:3}" >/dev/null \
        || { echo "bench: build failed in $baseline" >&2; exit 1; }
    builds=("base:$baseline" "test:$build")
fi
buildtype=$(meson introspect --buildoptions "$build" 2>/dev/null \
            | jq -r '.[] | select(.name == "buildtype") | .value' || echo unknown)
[ "$buildtype" = release ] || echo "bench: $build is a $buildtype build; quote numbers from a release build" >&2

work=$(mktemp -d /tmp/imgpipe-bench.XXXXXX)
pids=()
gone() {            # PID...: 0 when none of them runs any more
    local pid
    for pid; do kill -0 "$pid" 2>/dev/null && return 1; done
    return 0
}
stop_pids() {       # SIGTERM, then SIGKILL after 10 s: every process this script started
    [ ${#pids[@]} -gt 0 ] || return 0
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait_for 10 gone "${pids[@]}" || true
    local pid
    for pid in "${pids[@]}"; do
        kill -0 "$pid" 2>/dev/null && { echo "bench: pid $pid did not stop; killing it" >&2
                                        kill -KILL "$pid" 2>/dev/null || true; }
        wait "$pid" 2>/dev/null || true
    done
    pids=()
}
cleanup() {
    stop_pids
    if [ -n "${KEEP:-}" ]; then echo "bench: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# set -e stops the run at a failed command: say which one.
trap 'echo "bench: stopped: line $LINENO: $BASH_COMMAND exited $?" >&2' ERR

# A free loopback port: below the kernel's ephemeral range (so no outgoing
# connection of this or any other program takes it before our bind), no
# socket on it in any state now, not handed out before in this run.
ephemeral_low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
used_ports=" "
free_port() {
    local port
    while :; do
        port=$((10000 + RANDOM % (ephemeral_low - 10000)))
        [[ $used_ports == *" $port "* ]] && continue
        ss -Htan "sport = :$port" | grep -q . && continue
        used_ports+="$port "
        echo "$port"
        return
    done
}

# The end of each log of the stack being started, when it failed to start.
stack_dir=""
show_logs() {
    local log
    [ -n "$stack_dir" ] || return 0
    for log in "$stack_dir"/*.log; do
        echo "--- $log" >&2
        tail -5 "$log" >&2
    done
}

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
load_before=$(loadavg)
started_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
echo "bench: $started_at, load average $load_before, $threads thread(s), $jobs jobs a run" \
     "(work: $work)" >&2

# ---------------------------------------------------------------------------
# 1. raw libvips

# run_raw "W H FORMAT Q" glibc|resizer ROUND: one raw run, its JSON into raw.jsonl.
run_raw() {
    local w h fmt q malloc=$2 round=$3 flag=()
    read -r w h fmt q <<<"$1"
    [ "$malloc" = resizer ] && flag=(--same-malloc)
    echo "bench: raw ${w}x$h $fmt, $malloc malloc" >&2
    timeout $deadline_s "${at_nice[@]}" "$(bin tests/bench/imgpipe-bench-raw)" \
        --threads "$threads" --jobs "$jobs" --width "$w" --height "$h" --format "$fmt" \
        --quality "$q" "${flag[@]}" "${photos[@]}" \
        | jq -c --argjson round "$round" '. + {round: $round}' >>"$work/raw.jsonl" \
        || echo "bench: raw ${w}x$h $fmt, $malloc malloc: some thumbnail failed or no answer" >&2
}

# ---------------------------------------------------------------------------
# 2-4, 6. the pipeline

# launch_stack DIR PROGS: PROGS's broker, $threads resizers (each with its
# own log, for its stop line) and frontend, on fresh ports and a fresh spool
# in DIR; sets url, broker_pid, frontend_pid, resizer_pids.
launch_stack() {
    local dir=$1 progs=$2 intake status jobs_ep i
    rm -rf "$dir"
    mkdir -p "$dir"
    stack_dir=$dir
    intake=tcp://127.0.0.1:$(free_port) status=tcp://127.0.0.1:$(free_port)
    jobs_ep=tcp://127.0.0.1:$(free_port)
    url=http://127.0.0.1:$(free_port)
    "$progs/broker/imgpipe-broker" --data-dir "$dir/data" --max-queue 100000 \
        --intake "$intake" --status "$status" --jobs "$jobs_ep" 2>"$dir/broker.log" &
    broker_pid=$!; pids+=($!)
    resizer_pids=()
    for i in $(seq "$threads"); do
        "$progs/resizer/imgpipe-resizer" --jobs "$jobs_ep" --name "bench$i" --nice "$nice" \
            "${resizer_args[@]}" \
            2>"$dir/resizer-$i.log" &
        resizer_pids+=($!); pids+=($!)
    done
    "$progs/http-frontend/imgpipe-frontend" --listen "${url#http://}" --intake "$intake" \
        --status "$status" 2>"$dir/frontend.log" &
    frontend_pid=$!; pids+=($!)
}

stack_settled() {   # ready, or the broker or the frontend gone (no use waiting)
    ! kill -0 "$broker_pid" 2>/dev/null || ! kill -0 "$frontend_pid" 2>/dev/null \
    || { curl -fs -o /dev/null --max-time 2 "$url/readyz" \
         && [ "$(curl -fs --max-time 2 "$url/v1/cluster" | jq .resizers_live)" = "$threads" ]; }
}
# stack_ready: 0 once the frontend is ready and the broker counts every
# resizer live; 1 when the broker or the frontend exited, or after 90 s (a
# generous deadline: on a machine loaded by other work the resizers, at
# nice 10, take seconds to start).
stack_ready() {
    wait_for 90 stack_settled \
    && kill -0 "$broker_pid" 2>/dev/null && kill -0 "$frontend_pid" 2>/dev/null
}

# start_stack N PROGS: a stack of build PROGS in work directory
# pipeline-N, ready; three attempts (a port taken between our check and
# the bind is the likely failure), then the run stops.
start_stack() {
    local attempt
    for attempt in 1 2 3; do
        launch_stack "$work/pipeline-$1" "$2"
        stack_ready && return 0
        echo "bench: the stack did not start (attempt $attempt of 3)" >&2
        show_logs
        stop_pids
    done
    exit 1
}

# idle_json DIR: each resizer's stop line as JSON {jobs, busy_ms, waited_ms, idle}.
idle_json() {
    local log
    for log in "$1"/resizer-*.log; do
        grep -h 'event=stopped' "$log" | tail -1 | grep -oE '[a-z_]+=[0-9]+' \
            | jq -Rn '[inputs | split("=") | {(.[0]): (.[1] | tonumber)}] | add // {}
                      | if .busy_ms != null and .waited_ms != null
                           and .busy_ms + .waited_ms > 0
                        then . + {idle: (.waited_ms / (.busy_ms + .waited_ms))}
                        else . + {idle: null} end'
    done | jq -s .
}

# run_pipeline "W H FORMAT Q" ROUND N LABEL:DIR: one pipeline run of build
# DIR on a fresh stack (work directory pipeline-N), its JSON into
# pipeline.jsonl.
run_pipeline() {
    local w h fmt q round=$2 n=$3 label=${4%%:*} progs=${4#*:} watch pid rc=0
    read -r w h fmt q <<<"$1"
    echo "bench: pipeline ${w}x$h $fmt, $threads resizer(s), $concurrency in flight ($label: $progs)" >&2
    start_stack "$n" "$progs"
    watch=(--watch "broker=$broker_pid" --watch "frontend=$frontend_pid")
    for pid in "${resizer_pids[@]}"; do watch+=(--watch "resizer=$pid"); done
    "$(bin tests/bench/imgpipe-bench-load)" --url "$url" --concurrency "$concurrency" \
        --jobs "$jobs" --width "$w" --height "$h" --format "$fmt" --quality "$q" \
        --deadline-s $deadline_s --after-s $after_s "${watch[@]}" "${photos[@]}" \
        >"$work/pipeline-$n.json" || rc=$?
    stop_pids
    [ $rc -eq 0 ] || echo "bench: the pipeline run did not complete (exit $rc)" >&2
    jq -c --argjson idle "$(idle_json "$work/pipeline-$n")" --argjson round "$round" \
        --arg build "$label" --arg dir "$progs" \
        '. + {resizer_stops: $idle, round: $round, build: $build, build_dir: $dir}' \
        "$work/pipeline-$n.json" \
        >>"$work/pipeline.jsonl"
}

# Raw and pipeline alternate, setting by setting, round by round, so a
# ratio compares runs minutes apart at most.
: >"$work/raw.jsonl"
: >"$work/pipeline.jsonl"
n=0
for round in $(seq "$rounds"); do
    for setting in "${settings[@]}"; do
        if wants raw; then
            run_raw "$setting" glibc "$round"
            run_raw "$setting" resizer "$round"
        fi
        if wants pipeline; then
            for b in "${builds[@]}"; do
                n=$((n + 1))
                run_pipeline "$setting" "$round" $n "$b"
            done
        fi
    done
done

# ---------------------------------------------------------------------------
# 5. broker capacity

cap_base=${CAPACITY_DIR:-$work}
cap_fs=$(df --output=fstype "$cap_base" | tail -1)
: >"$work/capacity.jsonl"
wants capacity || cap_points=()
n=0
for point in "${cap_points[@]}"; do
    read -r k c payload njobs <<<"$point"
    for b in "${builds[@]}"; do
        label=${b%%:*} progs=${b#*:}
        n=$((n + 1))
        dir=$(mktemp -d "$cap_base/imgpipe-cap.XXXXXX")
        echo "bench: capacity K=$k resizers, C=$c clients, payload ${payload/#0/1x1 png}," \
             "$njobs jobs ($label: $progs)" >&2
        # The resizers are TOOLS_DIR's, whatever the broker: --dry-run is theirs.
        timeout 300 "$(bin tests/bench/imgpipe-bench-capacity)" \
            --broker "$progs/broker/imgpipe-broker" --resizer "$(bin resizer/imgpipe-resizer)" \
            --dir "$dir" --resizers "$k" --clients "$c" --jobs "$njobs" --payload "$payload" \
            --window $([ "$payload" = 0 ] && echo 256 || echo 8) \
            --deadline-s $((deadline_s < 120 ? deadline_s : 120)) \
            | jq -c --arg build "$label" --arg dir "$progs" '. + {build: $build, build_dir: $dir}' \
            >>"$work/capacity.jsonl" \
            || echo "bench: capacity point K=$k C=$c did not complete (logs: $dir)" >&2
        [ -n "${KEEP:-}" ] || rm -rf "$dir"
    done
done

# ---------------------------------------------------------------------------
# The JSON, then the table from it

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
mkdir -p "$(dirname "$out")"
jq -n --arg at "$started_at" --arg cpu "$cpu" --argjson cores "$(nproc)" \
      --arg load_before "$load_before" --arg load_after "$(loadavg)" --arg build "$buildtype" \
      --argjson quick $quick --argjson threads "$threads" --argjson jobs "$jobs" --argjson nice "$nice" \
      --argjson rounds "$rounds" --arg build_dir "$build" --arg baseline_dir "$baseline" \
      --arg cap_fs "$cap_fs" --argjson max_photo "$(stat -c %s "${photos[@]}" | sort -n | tail -1)" \
      --slurpfile raw "$work/raw.jsonl" --slurpfile pipe "$work/pipeline.jsonl" \
      --slurpfile cap "$work/capacity.jsonl" --arg resizer_args "${RESIZER_ARGS:-}" \
      -f "$here/assemble.jq" >"$out"

table "$out"
echo "bench: JSON in $out" >&2
