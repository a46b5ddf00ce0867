#!/usr/bin/env bash
# tests/bench/bench.sh — throughput of the whole system against plain
# libvips on the same machine, in one run, reported as ratios.
#
# Starts a broker, RESIZERS resizers (default: one per core) and a frontend
# on free ports; uploads every corpus photo ROUNDS times with CONCURRENCY
# parallel clients; waits until all are done; then runs vips_baseline (plain
# vips_thumbnail_buffer, one process per core) over the same file list.
# Also reports the upload (202) latency while the resizers are saturated:
# the number that says whether the web server stays free under load, and
# where the CPU went: each process's CPU seconds, and the resizers' own time
# per image (their event=resized ms), to compare with vips_baseline's.
# On a machine with few cores the resizers share them with curl, the
# frontend and the broker while uploads run: compare "resize wall" with
# "resizer cpu" to see that contention.
#
# The baseline runs twice. "plain" is libvips with glibc's malloc defaults,
# the way a hand-written loop runs. "same malloc" gives it the allocator
# settings the resizer makes for itself (s_tune_malloc in
# resizer/imgp_thumb.c: one arena per libvips thread, 32 MB mmap threshold,
# 64 MB trim threshold). They speed plain libvips up too (one process over
# the 36 photos: 13.4 -> 16.8 images/s, 2026-11-28), so the ratio against
# it is the cost of the pipeline alone, and the one against "plain" what a
# user gains or loses over the loop they would have written.
#   CORPUS=../shared/corpus ROUNDS=3 CONCURRENCY=8 BUILD_DIR=build
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
build=${BUILD_DIR:-build}
corpus=${CORPUS:-$top/../shared/corpus}
rounds=${ROUNDS:-3}
conc=${CONCURRENCY:-8}
resizers=${RESIZERS:-$(nproc)}
work=$(mktemp -d /tmp/imgpipe-bench.XXXXXX)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }

[ -d "$corpus/photos" ] || { echo "bench: no corpus at $corpus" >&2; exit 1; }
ninja -C "$build" >/dev/null

p=() ; for i in 1 2 3 4; do p+=("$(free_port)"); done
ep() { echo "tcp://127.0.0.1:$1"; }
export IMGP_INTAKE=$(ep "${p[0]}") IMGP_STATUS=$(ep "${p[1]}") IMGP_JOBS=$(ep "${p[2]}")
pids=()
declare -A role
trap 'kill -TERM "${pids[@]}" 2>/dev/null; wait; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
"$build/broker/imgpipe-broker" --data-dir "$work/data" --max-queue 100000 2>"$work/broker.log" & pids+=($!); role[$!]=broker
for _ in $(seq "$resizers"); do "$build/resizer/imgpipe-resizer" 2>>"$work/resizer.log" & pids+=($!); role[$!]=resizers; done
"$build/http-frontend/imgpipe-frontend" --listen "127.0.0.1:${p[3]}" 2>"$work/frontend.log" & pids+=($!); role[$!]=frontend
url="http://127.0.0.1:${p[3]}"
# Every wait has a deadline: a process that failed must not hang the bench.
wait_for() {    # SECONDS DESCRIPTION COMMAND...
    local deadline=$((SECONDS + $1)) what=$2; shift 2
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || { echo "bench: $what did not happen in time" >&2; exit 1; }
        sleep 0.05
    done
}
wait_for 30 "the frontend's /healthz" curl -fs -o /dev/null "$url/healthz"

files=()
for _ in $(seq "$rounds"); do files+=("$corpus"/photos/*.jpg); done
n=${#files[@]}

# Plain curl, as a user runs it: it sends Expect: 100-continue for bodies
# over 1 MB, which the frontend answers at once.
t0=$(now)
printf '%s\n' "${files[@]}" | xargs -P "$conc" -I{} \
    curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -F img=@{} "$url/v1/images" >"$work/uploads"
t_up=$(now)
accepted=$(grep -c '^202 ' "$work/uploads" || true)
all_ended() {
    grep -q 'event=failed' "$work/broker.log" && { echo "bench: a job failed" >&2; exit 1; }
    [ "$(grep -c 'event=done' "$work/broker.log" || true)" -ge "$accepted" ]
}
wait_for 600 "every accepted job ending" all_ended
t1=$(now)

# CPU seconds (user + system) per role, from /proc while they still run.
tick=$(getconf CLK_TCK)
declare -A cpu=([broker]=0 [resizers]=0 [frontend]=0)
for pid in "${pids[@]}"; do
    [ -r "/proc/$pid/stat" ] || continue
    t=$(sed 's/^.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')
    cpu[${role[$pid]}]=$(( ${cpu[${role[$pid]}]} + t ))
done
read -r resized resize_ms < <(grep -o 'event=resized ms=[0-9]*' "$work/resizer.log" |
    awk -F= '{s += $3} END {print NR, s + 0}')

read -r _ base_s base_rate < <("$build/tests/vips_baseline" "$resizers" "${files[@]}" 2>/dev/null)
same_malloc=glibc.malloc.arena_max=1:glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=67108864
read -r _ tuned_s tuned_rate < <(GLIBC_TUNABLES=$same_malloc \
    "$build/tests/vips_baseline" "$resizers" "${files[@]}" 2>/dev/null)
sys_s=$(echo "$t1 - $t0" | bc -l)
sys_rate=$(echo "$n / $sys_s" | bc -l)
lat=$(awk '{print $2}' "$work/uploads" | sort -n | awk '{a[NR]=$1} END {i=int(NR*0.99)+1; if (i>NR) i=NR; printf "%.1f %.1f", a[int(NR*0.5)+1]*1000, a[i]*1000}')
printf 'images: %d (%d accepted), resizers: %d, upload concurrency: %d\n' "$n" "$accepted" "$resizers" "$conc"
printf 'imgpipe end to end : %6.2f images/s (%.2f s)\n' "$sys_rate" "$sys_s"
printf 'plain libvips      : %6.2f images/s (%.2f s)\n' "$base_rate" "$base_s"
printf 'libvips, same malloc: %5.2f images/s (%.2f s)\n' "$tuned_rate" "$tuned_s"
printf 'ratio imgpipe/vips : %6.2f (same malloc: %.2f)\n' "$(echo "$sys_rate / $base_rate" | bc -l)" \
    "$(echo "$sys_rate / $tuned_rate" | bc -l)"
printf 'resize wall (sum of event=resized ms): %.1f ms/image; resizer cpu %.1f ms/image; ' \
    "$(echo "$resize_ms / $resized" | bc -l)" "$(echo "${cpu[resizers]} * 1000 / $tick / $n" | bc -l)"
printf 'baseline %.1f (same malloc %.1f) ms/image per process\n' \
    "$(echo "$base_s * 1000 * $resizers / $n" | bc -l)" "$(echo "$tuned_s * 1000 * $resizers / $n" | bc -l)"
printf 'cpu s: resizers %.2f, broker %.2f, frontend %.2f (wall %.2f s on %d cores)\n' \
    "$(echo "${cpu[resizers]} / $tick" | bc -l)" "$(echo "${cpu[broker]} / $tick" | bc -l)" \
    "$(echo "${cpu[frontend]} / $tick" | bc -l)" "$sys_s" "$(nproc)"
printf 'upload 202 latency under load: p50 %s ms, p99 %s ms (all uploads done after %.2f s)\n' \
    ${lat} "$(echo "$t_up - $t0" | bc -l)"
