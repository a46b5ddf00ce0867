#!/usr/bin/env bash
# tests/load/run.sh — the frontend under hostile loads, end to end: starts
# the stack the README way (deploy/run.sh, on a free port, spool in a temp
# directory), runs imgpipe-load against it, stops the stack and prints the
# table. Not part of tests/run.sh: a full run takes a few minutes.
#   BUILD_DIR=build            build directory (deploy/run.sh builds it)
#   CORPUS=../shared/corpus    photos for the upload loads
#   KEEP=1                     keep the temp directory (logs, JSON)
# Arguments go to imgpipe-load: --quick, --only NAME, --duration S...
# (tests/load/run.sh --help lists them after starting nothing).
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
build=${BUILD_DIR:-build}
corpus=${CORPUS:-$top/../shared/corpus}
load="$build/tests/imgpipe-load"

for arg in "$@"; do
    if [ "$arg" = --help ] || [ "$arg" = --version ]; then
        ninja -C "$build" tests/imgpipe-load >/dev/null && exec "$load" "$arg"
    fi
done

work=$(mktemp -d /tmp/imgpipe-load.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
stack=""

stop_stack() {
    [ -n "$stack" ] || return 0
    kill -TERM "$stack" 2>/dev/null || true
    # deploy/run.sh stops its children on SIGTERM; give it a deadline.
    local deadline=$((SECONDS + 30))
    while kill -0 "$stack" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    kill -0 "$stack" 2>/dev/null && { echo "load: deploy/run.sh did not stop; killing it" >&2; kill -KILL "$stack"; }
    wait "$stack" 2>/dev/null || true
    stack=""
}
cleanup() {
    stop_stack
    if [ -n "${KEEP:-}" ]; then echo "load: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "load: starting the stack on $url (log: $work/stack.log)" >&2
PORT=$port DATA_DIR="$work/data" BUILD_DIR="$build" deploy/run.sh >"$work/stack.log" 2>&1 &
stack=$!

# deploy/run.sh builds first: a generous deadline, but a deadline.
deadline=$((SECONDS + 600))
until curl -fs -o /dev/null --max-time 2 "$url/healthz"; do
    if ! kill -0 "$stack" 2>/dev/null; then
        echo "load: deploy/run.sh exited before /healthz answered:" >&2
        tail -20 "$work/stack.log" >&2; exit 1
    fi
    [ $SECONDS -lt $deadline ] || { echo "load: no /healthz on $url in time" >&2; exit 1; }
    sleep 0.1
done
ninja -C "$build" tests/imgpipe-load >/dev/null \
    || { echo "load: imgpipe-load is not built (libcurl missing? deploy/deps.sh --test)" >&2; exit 1; }

rc=0
"$load" --addr "127.0.0.1:$port" --photos "$corpus/photos" --json "$work/load.json" "$@" \
    >"$work/table.md" || rc=$?
stop_stack
cat "$work/table.md"
echo "load: JSON in $work/load.json${KEEP:+}" >&2
exit $rc
