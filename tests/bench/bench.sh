#!/usr/bin/env bash
# tests/bench/bench.sh — throughput of the whole system against plain
# libvips on the same machine, in one run, reported as ratios.
#
# Starts a broker, RESIZERS resizers (default: one per core) and a frontend
# on free ports; uploads every corpus photo ROUNDS times with CONCURRENCY
# parallel clients; waits until all are done; then runs vips_baseline (plain
# vips_thumbnail_buffer, one process per core) over the same file list.
# Also reports the upload (202) latency while the resizers are saturated:
# the number that says whether the web server stays free under load.
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

p=() ; for i in 1 2 3 4 5; do p+=("$(free_port)"); done
ep() { echo "tcp://127.0.0.1:$1"; }
export IMGP_INTAKE=$(ep "${p[0]}") IMGP_STATUS=$(ep "${p[1]}") IMGP_JOBS=$(ep "${p[2]}") IMGP_RESULTS=$(ep "${p[3]}")
pids=()
trap 'kill -TERM "${pids[@]}" 2>/dev/null; wait; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
"$build/broker/imgpipe-broker" --data-dir "$work/data" --max-queue 100000 2>"$work/broker.log" & pids+=($!)
for _ in $(seq "$resizers"); do "$build/resizer/imgpipe-resizer" 2>>"$work/resizer.log" & pids+=($!); done
"$build/http-frontend/imgpipe-frontend" --listen "127.0.0.1:${p[4]}" 2>"$work/frontend.log" & pids+=($!)
url="http://127.0.0.1:${p[4]}"
until curl -fs "$url/healthz" >/dev/null; do sleep 0.1; done

files=()
for _ in $(seq "$rounds"); do files+=("$corpus"/photos/*.jpg); done
n=${#files[@]}

# -H 'Expect:': curl waits 1 s for a "100 Continue" before bodies over 1 MB,
# which civetweb 1.15 never sends in this handler (README, known limits).
t0=$(now)
printf '%s\n' "${files[@]}" | xargs -P "$conc" -I{} \
    curl -s -o /dev/null -H 'Expect:' -w '%{http_code} %{time_total}\n' -F img=@{} "$url/v1/images" >"$work/uploads"
t_up=$(now)
accepted=$(grep -c '^202 ' "$work/uploads" || true)
until [ "$(grep -c 'event=done' "$work/broker.log" || true)" -ge "$accepted" ]; do
    sleep 0.05
    grep -q 'event=failed' "$work/broker.log" && { echo "bench: a job failed" >&2; break; }
done
t1=$(now)

read -r _ base_s base_rate < <("$build/tests/vips_baseline" "$resizers" "${files[@]}" 2>/dev/null)
sys_s=$(echo "$t1 - $t0" | bc -l)
sys_rate=$(echo "$n / $sys_s" | bc -l)
lat=$(awk '{print $2}' "$work/uploads" | sort -n | awk '{a[NR]=$1} END {i=int(NR*0.99)+1; if (i>NR) i=NR; printf "%.1f %.1f", a[int(NR*0.5)+1]*1000, a[i]*1000}')
printf 'images: %d (%d accepted), resizers: %d, upload concurrency: %d\n' "$n" "$accepted" "$resizers" "$conc"
printf 'imgpipe end to end : %6.2f images/s (%.2f s)\n' "$sys_rate" "$sys_s"
printf 'plain libvips      : %6.2f images/s (%.2f s)\n' "$base_rate" "$base_s"
printf 'ratio imgpipe/vips : %6.2f\n' "$(echo "$sys_rate / $base_rate" | bc -l)"
printf 'upload 202 latency under load: p50 %s ms, p99 %s ms (all uploads done after %.2f s)\n' \
    ${lat} "$(echo "$t_up - $t0" | bc -l)"
