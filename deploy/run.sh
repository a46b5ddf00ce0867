#!/usr/bin/env bash
# deploy/run.sh — all of imgpipe on one host: installs what is missing,
# builds, then starts a broker, one resizer per core and a frontend on
# 127.0.0.1:$PORT (8080). Ctrl-C (or SIGTERM) stops everything it started.
#   PORT=8080                   frontend port
#   DATA_DIR=./imgpipe-data     broker spool (kept across runs: jobs survive)
#   RESIZERS=$(nproc)           number of resizer processes
#   BUILD_DIR=build             build directory
# Every program also reads its own IMGP_* variables (see --help of each).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
port=${PORT:-8080}
data=${DATA_DIR:-$top/imgpipe-data}
resizers=${RESIZERS:-$(nproc)}
build=${BUILD_DIR:-build}

deploy/deps.sh
[ -f "$build/build.ninja" ] || meson setup "$build" --buildtype=release >/dev/null
ninja -C "$build" >/dev/null

if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "run.sh: 127.0.0.1:$port is already in use (another imgpipe?). Stop it or set PORT=." >&2
    exit 1
fi

pids=()
stop() {
    trap - INT TERM EXIT
    echo "stopping imgpipe..." >&2
    [ ${#pids[@]} -gt 0 ] && kill -TERM "${pids[@]}" 2>/dev/null
    wait
}
trap stop INT TERM EXIT

mkdir -p "$data"
"$build/broker/imgpipe-broker" --data-dir "$data" & pids+=($!)
for _ in $(seq "$resizers"); do
    "$build/resizer/imgpipe-resizer" & pids+=($!)
done
"$build/http-frontend/imgpipe-frontend" --listen "127.0.0.1:$port" & pids+=($!)

url="http://127.0.0.1:$port"
for _ in $(seq 100); do
    curl -fs "$url/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
cat <<MSG

imgpipe is running at $url ($resizers resizers, spool $data). Try:
  curl -F img=@photo.jpg $url/v1/images
  curl $url/v1/images/ID            # status
  curl -o thumb.png $url/v1/images/ID/thumbnail
Ctrl-C stops it.

MSG
# Stop everything as soon as any process dies, or on Ctrl-C.
wait -n
