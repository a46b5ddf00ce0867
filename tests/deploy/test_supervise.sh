#!/usr/bin/env bash
# tests/deploy/test_supervise.sh — deploy/run.sh keeps imgpipe running.
#
# Starts deploy/run.sh on free ports (frontend and the broker's), a temp
# spool, 2 resizers and an existing build (SKIP_BUILD=1: nothing is
# installed or built), uploads real images, then: SIGKILLs the resizer
# working on a slow job (an 800x800 AVIF) while the other uploads go on
# (the service keeps answering, run.sh logs the death and starts a new
# resizer, the broker sees 2 resizers again, every job in flight ends
# done, the killed resizer's own after a second attempt); kills that
# resizer again at once (the restart delay doubles); kills the frontend
# and the broker (each comes back and answers, the spool's jobs are still
# there); SIGTERM to run.sh (it exits 0 and no process it started is
# left), and SIGKILL to run.sh (its programs stop too). With `imgpipe
# keygen` in the build, the same run.sh with CURVE keys makes a thumbnail.
#
# Every wait is on a condition with a deadline; no check is on wall-clock
# time. One line per check ("ok - ...", "not ok - ...", "skipped - ..."),
# then "N skipped" (if any) and "N passed, N failed". Exit status 1 when a
# check failed, 77 when the test cannot run here (no build, curl, or
# images: the corpus photos, else PNGs made with python3), else 0.
#
# Usage: tests/deploy/test_supervise.sh [BUILD_DIR]
#   BUILD_DIR     an existing build (default $BUILD_DIR, else build)
#   IMGP_CORPUS   the corpus (default ../shared/corpus beside the checkout)
set -uo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-${BUILD_DIR:-build}}
[[ $build = /* ]] || build=$top/$build
# shellcheck source=tests/deploy/common.sh
. "$top/tests/deploy/common.sh"

for exe in broker/imgpipe-broker resizer/imgpipe-resizer http-frontend/imgpipe-frontend; do
    if [ ! -x "$build/$exe" ]; then
        skip_all "supervision: $build/$exe is not built (pass the build dir)"
    fi
done
command -v curl >/dev/null || skip_all "supervision: no curl"

tmp=$(mktemp -d /tmp/imgpipe-deploy.XXXXXX)
runlog=$tmp/run.log

# ---------------------------------------------------------------------------
# Images: the corpus photos (1-6 MB JPEGs), else noisy PNGs made here

corpus=${IMGP_CORPUS:-$top/../shared/corpus}
images=()
for f in "$corpus"/photos/*.jpg; do [ -f "$f" ] && images+=("$f"); done
if [ ${#images[@]} -eq 0 ] && command -v python3 >/dev/null; then
    python3 - "$tmp" <<'PY' || true
import os, struct, sys, zlib
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
w, h = 1600, 1200
for i in range(12):
    rows = b"".join(b"\0" + os.urandom(w * 3) for _ in range(h))
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) \
        + chunk(b"IDAT", zlib.compress(rows, 1)) + chunk(b"IEND", b"")
    open(os.path.join(sys.argv[1], "noise%02d.png" % i), "wb").write(png)
PY
    for f in "$tmp"/noise*.png; do [ -f "$f" ] && images+=("$f"); done
fi
if [ ${#images[@]} -eq 0 ]; then
    rm -rf "$tmp"
    skip_all "supervision: no images (no corpus at $corpus/photos, no python3 to make some)"
fi

# ---------------------------------------------------------------------------
# Ports: four free ones in a row (frontend, intake, status, jobs)

base=$(free_ports 4)
[ "$base" -ne 0 ] || { rm -rf "$tmp"; skip_all "supervision: no free ports"; }
port=$base
url=http://127.0.0.1:$port

# ---------------------------------------------------------------------------
# run.sh, and cleaning up after it whatever happens

run_pid=""
uploader=""
run_gone()   { ! kill -0 "$run_pid" 2>/dev/null; }
group_gone() { ! kill -0 -- "-$run_pid" 2>/dev/null; }
cleanup() {
    local pid
    if [ -n "$run_pid" ] && kill -0 "$run_pid" 2>/dev/null; then
        kill -TERM "$run_pid" 2>/dev/null
        wait_for 15 run_gone
        kill -KILL -- "-$run_pid" 2>/dev/null      # its process group (setsid)
    fi
    for pid in $(started_pids "$runlog"); do kill -KILL "$pid" 2>/dev/null; done
    if [ -n "$uploader" ]; then
        pkill -P "$uploader" 2>/dev/null
        kill "$uploader" 2>/dev/null
    fi
    if [ $failed -gt 0 ]; then echo "# logs kept in $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# run_start LOG [VAR=VALUE...]: deploy/run.sh in its own session (so its
# process group is everything it started), output to LOG.
run_start() {
    runlog=$1
    shift
    : >"$runlog"
    local setsid=()
    command -v setsid >/dev/null && setsid=(setsid)
    env SKIP_BUILD=1 BUILD_DIR="$build" PORT="$port" DATA_DIR="$tmp/data" RESIZERS=2 \
        IMGP_INTAKE=tcp://127.0.0.1:$((base + 1)) IMGP_STATUS=tcp://127.0.0.1:$((base + 2)) \
        IMGP_JOBS=tcp://127.0.0.1:$((base + 3)) \
        "$@" "${setsid[@]}" "$top/deploy/run.sh" >"$runlog" 2>&1 </dev/null &
    run_pid=$!
}

# run_stop: SIGTERM to run.sh; its exit status in $run_rc (-1: still running after 30 s).
run_stop() {
    kill -TERM "$run_pid" 2>/dev/null
    if wait_for 30 run_gone; then
        wait "$run_pid"; run_rc=$?
    else
        run_rc=-1
    fi
}

# The pid run.sh last started for SLOT.
pid_of() { grep -o "event=started proc=$1 pid=[0-9]*" "$runlog" | tail -1 | sed 's/.*pid=//'; }
# ms_of TIMESTAMP: a log line's time (2026-12-06T06:33:40.649Z) in epoch ms.
ms_of() { date -u -d "$1" +%s%3N 2>/dev/null; }
# The time of run.sh's last "event=started proc=SLOT" line, in epoch ms.
started_ms() { ms_of "$(grep "run.sh INFO event=started proc=$1 " "$runlog" | tail -1 | cut -d' ' -f1)"; }
# A line of run.sh's log matches.
logged() { grep -qE "$1" "$runlog"; }

# ---------------------------------------------------------------------------
# HTTP

code_of() { curl -s -o /dev/null -w '%{http_code}' --max-time 3 "$url$1"; }
healthy() { [ "$(code_of /healthz)" = 200 ]; }

# upload FILE [QUERY]: the new job's id on stdout (empty when not a 202).
upload() {
    curl -s --max-time 20 -F "img=@$1" "$url/v1/images${2:+?$2}" \
        | grep -o '"id":"[0-9a-f]*"' | head -1 | cut -d'"' -f4
}
status_of() {
    curl -s --max-time $((${2:-0} + 5)) "$url/v1/images/$1${2:+?wait=$2}" \
        | grep -o '"status":"[a-z]*"' | head -1 | cut -d'"' -f4
}
worker_of() { curl -s --max-time 5 "$url/v1/images/$1" | grep -o '"worker":"[^"]*"' | cut -d'"' -f4; }

# The cluster view: "resizers" is a count, or a list of {"name":...}.
cluster=""
get_cluster() { cluster=$(curl -s --max-time 3 "$url/v1/cluster"); }
cluster_is_list() { grep -qE '"resizers"[[:space:]]*:[[:space:]]*\[' <<<"$cluster"; }
cluster_names() { grep -oE '"name"[[:space:]]*:[[:space:]]*"[^"]*"' <<<"$cluster" | cut -d'"' -f4; }
cluster_count() {
    if cluster_is_list; then cluster_names | grep -c .
    else grep -oE '"resizers"[[:space:]]*:[[:space:]]*[0-9]+' <<<"$cluster" | grep -oE '[0-9]+$'; fi
}
two_resizers() { get_cluster; [ "$(cluster_count)" = 2 ]; }

# ---------------------------------------------------------------------------
# 1. It starts

run_start "$tmp/run.log"
check "run.sh starts: /healthz answers 200" wait_for 30 healthy
check "the broker sees 2 resizers (/v1/cluster)" wait_for 15 two_resizers
logged_all() { local s; for s in broker resizer1 resizer2 frontend; do [ -n "$(pid_of $s)" ] || return 1; done; }
if ! wait_for 5 logged_all; then
    not_ok "run.sh logged no event=started line with a pid for each program: nothing to kill"
    summary
    exit 1
fi

# ---------------------------------------------------------------------------
# 2. A resizer killed while jobs are in flight

# One slow job first, a 800x800 AVIF (seconds of encoding where a 100x100
# PNG takes tens of milliseconds), so the resizer that runs it is surely
# in the middle of a job when it is killed. The other uploads go on in the
# background meanwhile, so jobs are queued and running at the kill too.
slow_job=$(upload "${images[0]}" "width=800&height=800&format=avif")
: >"$tmp/ids"
(
    for f in "${images[@]}" "${images[@]}"; do
        id=$(upload "$f")
        echo "${id:--}" >>"$tmp/ids"
    done
) &
uploader=$!
uploads=$((2 * ${#images[@]}))

# The victim: the resizer working on the slow job, named (r1-..., r2-...)
# by the broker's log line "job=ID event=started worker=r2-...", else by
# the status's "worker"; else resizer1.
get_cluster
names_before=$(cluster_names)
slow_processing() { [ "$(status_of "$slow_job")" = processing ]; }
victim_job=""
[ -n "$slow_job" ] && wait_for 30 slow_processing && victim_job=$slow_job
slot=resizer1
worker=""
if [ -n "$victim_job" ]; then
    worker=$(grep -o "job=$victim_job event=started worker=[^ ]*" "$runlog" | tail -1 | sed 's/.*worker=//')
    [ -n "$worker" ] || worker=$(worker_of "$victim_job")
fi
[[ $worker =~ ^r([0-9]+)- ]] && slot=resizer${BASH_REMATCH[1]}
victim=$(pid_of "$slot")
joins_before=$(grep -c "worker=r${slot#resizer}-[^ ]* event=joined" "$runlog")
kill -KILL "$victim"
t_kill=$(now_ms)
uploaded=0 pending=0
while read -r id; do
    uploaded=$((uploaded + 1))
    [ "$id" = - ] || [ "$(status_of "$id")" = "done" ] || pending=$((pending + 1))
done <"$tmp/ids"
what="the slow job was processing when $slot (pid $victim) was killed${worker:+ (its worker: $worker)}"
check "$what; just after, $pending of $uploaded other uploaded jobs not done, $((uploads - uploaded)) uploads to come" \
    [ -n "$victim_job" ]

unanswered=0
# Each wait below also asks /healthz once a round: the service must answer
# all the time, not just at the end.
answering() { healthy || unanswered=$((unanswered + 1)); }
exited_line() { answering; logged "event=exited proc=$slot pid=$victim signal=KILL .*restart_in_s="; }
check "run.sh logs the death of $slot (signal=KILL) and its restart delay" wait_for 10 exited_line
delay1=$(grep -o "event=exited proc=$slot pid=$victim .*restart_in_s=[0-9.]*" "$runlog" | sed 's/.*=//')
new_started() { answering; local p; p=$(pid_of "$slot"); [ -n "$p" ] && [ "$p" != "$victim" ]; }
if wait_for 40 new_started; then
    ok "a new $slot started $(since_s "$t_kill" "$(started_ms "$slot")") s after the kill (restart_in_s=$delay1)"
else
    not_ok "no new $slot within 40 s of the kill"
fi
newpid=$(pid_of "$slot")

# Joined: with a list, 2 resizers and the killed one's name gone; with a
# count, 2 and the broker's log shows a new r<N>- worker joining.
killed_name=$(grep "^r${slot#resizer}-" <<<"$names_before" | head -1)
rejoined() {
    answering
    two_resizers || return 1
    if cluster_is_list; then
        ! cluster_names | grep -qx "$killed_name" && cluster_names | grep -q "^r${slot#resizer}-"
    else
        [ "$(grep -c "worker=r${slot#resizer}-[^ ]* event=joined" "$runlog")" -gt "$joins_before" ]
    fi
}
if wait_for 30 rejoined; then
    how="a count, and the broker logged a new r${slot#resizer}- joining"
    cluster_is_list && how="a list: ${killed_name:-?} gone, $(cluster_names | tr '\n' ' ')"
    # When the broker took the new one in: its log line's own time.
    joined=$(grep "worker=r${slot#resizer}-[^ ]* event=joined" "$runlog" | sed -n "$((joins_before + 1))p" \
             | cut -d' ' -f1)
    joined_ms=$(ms_of "$joined")
    [ -n "$joined_ms" ] && how+="; the broker logged it joined $(since_s "$t_kill" "$joined_ms") s after the kill"
    ok "/v1/cluster shows 2 resizers again $(since_s "$t_kill") s after the kill ($how)"
else
    not_ok "/v1/cluster: not 2 resizers with a new one within 30 s of the kill (last: $cluster)"
fi

uploader_done() { ! kill -0 "$uploader" 2>/dev/null; }
wait_for 120 uploader_done
ids=()
while read -r id; do [ "$id" != - ] && ids+=("$id"); done <"$tmp/ids"
check "${#ids[@]} of $uploads uploads answered 202" [ ${#ids[@]} -eq $uploads ]
[ -n "$slow_job" ] && ids+=("$slow_job")

# Every job ends done: ?wait= holds each request until its job ends.
t_end=$(($(now_ms) + 120000))
done_n=0 others=""
for id in "${ids[@]}"; do
    answering
    left=$(((t_end - $(now_ms)) / 1000))
    st=""
    while [ $left -gt 0 ]; do
        st=$(status_of "$id" $((left < 25 ? left : 25)))
        [ "$st" = "done" ] || [ "$st" = failed ] && break
        left=$(((t_end - $(now_ms)) / 1000))
    done
    if [ "$st" = "done" ]; then done_n=$((done_n + 1)); else others+=" $id:${st:-none}"; fi
done
check "every job in flight ended done: $done_n of ${#ids[@]}, $(since_s "$t_kill") s after the kill${others:+ (not:$others)}" \
    [ $done_n -eq ${#ids[@]} ]

# The jobs the killed resizer held: the broker logged them dispatched to
# it or started by it, and never done by it. Each must have been redone.
if [ -n "$worker" ]; then
    held=$(grep -oE "job=[0-9a-f]+ event=(dispatched|started) worker=$worker " "$runlog" \
           | cut -d' ' -f1 | sort -u)
    finished_there=$(grep -oE "job=[0-9a-f]+ event=done worker=$worker " "$runlog" | cut -d' ' -f1 | sort -u)
    held=$(comm -23 <(echo "$held") <(echo "$finished_there") | sed 's/^job=//' | grep .)
    redone="" bad=""
    for id in $held; do
        json=$(curl -s --max-time 5 "$url/v1/images/$id")
        redone+=" $(grep -o '"attempts":[0-9]*' <<<"$json" | cut -d: -f2)"
        [[ $json == *'"status":"done"'* ]] || bad+=" $id"
    done
    if [ -z "$held" ]; then
        skip "the killed resizer held no job at the kill (all it had started were done)"
    else
        check "the $(wc -w <<<"$held") job(s) the killed $worker held ended done, after attempts:$redone" \
            [ -z "$bad" ]
    fi
fi
check "/healthz answered 200 all along ($unanswered probes not 200)" [ $unanswered -eq 0 ]

# ---------------------------------------------------------------------------
# 3. The same resizer dies again at once: the delay grows

victim=$newpid
kill -KILL "$victim"
t_kill=$(now_ms)
if wait_for 10 exited_line; then
    delay2=$(grep -o "event=exited proc=$slot pid=$victim .*restart_in_s=[0-9.]*" "$runlog" | sed 's/.*=//')
    check "killed again at once, $slot restarts after a longer delay ($delay1 s, then $delay2 s)" \
        [ "$(tr -d . <<<"$delay2")" -eq $((2 * $(tr -d . <<<"$delay1"))) ]
else
    not_ok "run.sh did not log the second death of $slot"
fi
if wait_for 40 new_started; then
    ok "and it is started again $(since_s "$t_kill" "$(started_ms "$slot")") s after the kill"
else
    not_ok "$slot not started again within 40 s"
fi

# ---------------------------------------------------------------------------
# 4. The frontend and the broker come back

for victim_slot in frontend broker; do
    victim=$(pid_of "$victim_slot")
    kill -KILL "$victim"
    t_kill=$(now_ms)
    back() { local p; p=$(pid_of "$victim_slot"); [ -n "$p" ] && [ "$p" != "$victim" ] && healthy; }
    if wait_for 30 back; then
        ok "$victim_slot killed: a new one started and /healthz answers 200 $(since_s "$t_kill") s later"
    else
        not_ok "$victim_slot killed: no new one answering within 30 s"
    fi
    id=$(upload "${images[0]}")
    st=""
    [ -n "$id" ] && st=$(status_of "$id" 25)
    check "then an upload ends done (${st:-no 202})" [ "$st" = "done" ]
done
check "the spool kept the first jobs across the broker's restart" [ "$(status_of "${ids[0]}")" = "done" ]

# ---------------------------------------------------------------------------
# 5. SIGTERM stops everything

pids=$(started_pids "$runlog")
run_stop
check "SIGTERM: run.sh exits 0 (status $run_rc)" [ "$run_rc" -eq 0 ]
left=""
for pid in $pids; do kill -0 "$pid" 2>/dev/null && left+=" $pid"; done
check "no process run.sh started is left ($(wc -w <<<"$pids") started${left:+, left:$left})" [ -z "$left" ]
if command -v setsid >/dev/null; then
    check "its process group is empty" group_gone
fi
run_pid=""

# ---------------------------------------------------------------------------
# 6. run.sh killed with SIGKILL: the kernel stops its programs (setpriv
#    --pdeathsig), so nothing is left behind

if setpriv --pdeathsig TERM -- true 2>/dev/null; then
    run_start "$tmp/run-kill9.log"
    if wait_for 30 healthy; then
        pids=$(started_pids "$runlog")
        kill -KILL "$run_pid"
        wait "$run_pid" 2>/dev/null
        all_gone() { local pid; for pid in $pids; do kill -0 "$pid" 2>/dev/null && return 1; done; return 0; }
        if wait_for 20 all_gone; then
            ok "run.sh killed with SIGKILL: its $(wc -w <<<"$pids") programs stopped too"
        else
            not_ok "run.sh killed with SIGKILL: programs left:$(for p in $pids; do kill -0 "$p" 2>/dev/null && echo -n " $p"; done)"
        fi
    else
        not_ok "run.sh (for the SIGKILL check) did not answer within 30 s"
    fi
    run_pid=""
else
    skip "run.sh killed with SIGKILL: no setpriv --pdeathsig here"
fi

# ---------------------------------------------------------------------------
# 7. With CURVE keys (one key pair for the three programs on one host)

cli=$build/client/imgpipe
if [ -x "$cli" ] && "$cli" --help 2>&1 | grep -q keygen; then
    mkdir -p "$tmp/keys/clients"
    if "$cli" keygen "$tmp/keys/local" >/dev/null 2>&1 && cp "$tmp/keys/local" "$tmp/keys/clients/"; then
        run_start "$tmp/run-curve.log" IMGP_CURVE_SECRET="$tmp/keys/local_secret" \
            IMGP_CURVE_CLIENTS="$tmp/keys/clients" IMGP_CURVE_SERVER="$tmp/keys/local"
        check "with CURVE keys: /healthz answers 200" wait_for 30 healthy
        id=$(upload "${images[0]}")
        st=""
        [ -n "$id" ] && st=$(status_of "$id" 25)
        check "with CURVE keys: an upload ends done (${st:-no 202})" [ "$st" = "done" ]
        run_stop
        check "with CURVE keys: SIGTERM, run.sh exits 0 (status $run_rc)" [ "$run_rc" -eq 0 ]
        run_pid=""
    else
        not_ok "imgpipe keygen $tmp/keys/local failed"
    fi
else
    skip "with CURVE keys: $cli has no keygen"
fi

summary
[ $failed -eq 0 ]
