#!/usr/bin/env bash
# deploy/run.sh — all of imgpipe on one host: installs what is missing,
# builds, then starts a broker, one resizer per core and a frontend on
# 127.0.0.1:$PORT (8080), and keeps them running: a process that dies is
# started again. Ctrl-C (or SIGTERM) stops everything it started.
#   PORT=8080                   frontend port
#   DATA_DIR=./imgpipe-data     broker spool (kept across runs: jobs survive)
#   RESIZERS=$(nproc)           number of resizer processes
#   BUILD_DIR=build             build directory
#   SKIP_BUILD=1                use the programs in BUILD_DIR as they are
#                               (no package install, no build)
# Every program also reads its own IMGP_* variables (see --help of each),
# so IMGP_INTAKE, IMGP_JOBS... move the broker's ports, and the CURVE keys
# (IMGP_CURVE_SECRET, IMGP_CURVE_CLIENTS, IMGP_CURVE_SERVER; see
# deploy/README.md) reach the three programs from the environment.
#
# Supervision: a process that exits (crash, kill -9, OOM killer) is logged
# with its exit status or signal and started again after a delay: 0.5 s,
# doubled at each quick death up to 30 s, back to 0.5 s once it had stayed
# up 30 s. The delay is a `sleep` child of this script, so one `wait -n`
# sees both dying programs and elapsed delays: nothing polls. Exit status 2
# is the programs' "bad configuration": it would fail the same way again,
# so run.sh stops everything and says so. Log lines are the programs'
# format: "2026-12-06T06:40:00.123Z run.sh WARN event=exited proc=resizer2
# pid=4242 signal=KILL up_s=12.3 restart_in_s=0.5".
set -euo pipefail

# wait -n -p (which child ended) came with bash 5.1 (Debian 11).
if ((BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] < 501)); then
    echo "run.sh: needs bash 5.1 or later (this is $BASH_VERSION)" >&2
    exit 1
fi

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
port=${PORT:-8080}
data=${DATA_DIR:-$top/imgpipe-data}
resizers=${RESIZERS:-$(nproc)}
build=${BUILD_DIR:-build}

delay_first_ms=500          # first restart delay
delay_max_ms=30000          # longest restart delay
up_reset_ms=30000           # up this long: the next death is a first one again
stop_timeout_s=10           # SIGTERM, then this long, then SIGKILL

# ---------------------------------------------------------------------------
# Logging, in the programs' line format (proto/imgp_log.h), on fd 3: the
# supervisor's stderr, which the programs share. run.sh's own fd 2 goes to
# /dev/null once they run, because bash prints a "Killed" line with a line
# of this script for each program killed by a signal; our own line says it.

exec 3>&2

# Milliseconds since the epoch, into $now (no subshell).
set_now() { now=${EPOCHREALTIME/./}; now=$((now / 1000)); }

log() {
    local level=$1 t=${EPOCHREALTIME/./} stamp
    shift
    TZ=UTC0 printf -v stamp '%(%Y-%m-%dT%H:%M:%S)T.%03dZ' "$((t / 1000000))" \
           "$((t / 1000 % 1000))"
    if [ "${IMGP_LOG_FORMAT:-text}" = json ]; then
        log_json "$level" "$stamp" "$*" >&3
    else
        printf '%s run.sh %s %s\n' "$stamp" "$level" "$*" >&3
    fi
}

# IMGP_LOG_FORMAT=json (which the programs read as --log-format): our lines
# as JSON objects like theirs, from the same key=value text. A value is a
# number when it reads as one and was not quoted (pids, seconds).
log_json() {
    local rest=$3 out key quoted value
    out="{\"time\":\"$2\",\"level\":\"${1,,}\",\"program\":\"run.sh\""
    while [[ $rest =~ ^\ *([a-z_]+)=(\"([^\"]*)\"|([^ ]*))(.*)$ ]]; do
        key=${BASH_REMATCH[1]} quoted=${BASH_REMATCH[3]-} value=${BASH_REMATCH[4]-}
        rest=${BASH_REMATCH[5]}
        if [[ -z $quoted && $value =~ ^-?(0|[1-9][0-9]*)(\.[0-9]+)?$ ]]; then
            out+=",\"$key\":$value"
        else
            value=$quoted$value
            value=${value//\\/\\\\}
            out+=",\"$key\":\"${value//\"/\\\"}\""
        fi
    done
    printf '%s}\n' "$out"
}

# secs VAR MS: VAR = MS as seconds, "1.5" (for logs and sleep).
secs() { printf -v "$1" '%d.%d' "$(($2 / 1000))" "$(($2 % 1000 / 100))"; }

# ---------------------------------------------------------------------------
# Before anything starts

[[ $resizers =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: RESIZERS must be a number from 1" >&2; exit 2; }
if [ "${SKIP_BUILD:-}" != 1 ]; then
    deploy/deps.sh
    [ -f "$build/build.ninja" ] || meson setup "$build" --buildtype=release >/dev/null
    ninja -C "$build" >/dev/null
fi
for exe in broker/imgpipe-broker resizer/imgpipe-resizer http-frontend/imgpipe-frontend; do
    [ -x "$build/$exe" ] || { echo "run.sh: $build/$exe is not built" >&2; exit 1; }
done

# in_use HOST PORT: something answers there.
in_use() {
    local host=$1
    case $host in '*' | 0.0.0.0) host=127.0.0.1 ;; esac
    (exec 3<>"/dev/tcp/$host/$2") 2>/dev/null
}
if in_use 127.0.0.1 "$port"; then
    echo "run.sh: 127.0.0.1:$port is already in use (another imgpipe?). Stop it or set PORT=." >&2
    exit 1
fi
# The broker's own ports: taken, the broker could only die at each restart.
for spec in IMGP_INTAKE=5571 IMGP_STATUS=5572 IMGP_JOBS=5573; do
    var=${spec%=*}
    endpoint=${!var:-tcp://127.0.0.1:${spec#*=}}
    if [[ $endpoint =~ ^tcp://([^:]+):([0-9]+)$ ]] \
       && in_use "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"; then
        echo "run.sh: the broker's $endpoint ($var) is already in use (another imgpipe?). Stop it or set $var=." >&2
        exit 1
    fi
done
# One host, one key pair: the broker reads SECRET and CLIENTS, resizers and
# the frontend SECRET and SERVER, all from the same environment.
curve_set=0
for var in IMGP_CURVE_SECRET IMGP_CURVE_CLIENTS IMGP_CURVE_SERVER; do
    [ -n "${!var:-}" ] && curve_set=$((curve_set + 1))
done
if [ $curve_set -ne 0 ] && [ $curve_set -ne 3 ]; then
    echo "run.sh: set IMGP_CURVE_SECRET, IMGP_CURVE_CLIENTS and IMGP_CURVE_SERVER together (see deploy/README.md)" >&2
    exit 2
fi
mkdir -p "$data"

# ---------------------------------------------------------------------------
# The supervised processes: one slot each, "broker", "resizer1".., "frontend"

slots=(broker)
for i in $(seq "$resizers"); do slots+=("resizer$i"); done
slots+=(frontend)

declare -A pid_of=()        # slot -> pid of its running program
declare -A timer_of=()      # slot -> pid of the sleep before its restart
declare -A slot_of=()       # pid (program or timer) -> slot
declare -A since_of=()      # slot -> when its program started (ms)
declare -A delay_of=()      # slot -> delay before its next restart (ms)
ready_pid=""                # the first /healthz probe, for the hint
deadline_pid=""             # the sleep that bounds the stop
stopping=""                 # why we stop: INT, TERM, HUP, config, exit
ended_pid="" ended_rc=0     # what next_ended found
now=0

# A program dies with us even when we are killed with SIGKILL (setpriv is
# in util-linux, --pdeathsig since 2.33; without it, a kill -9 of run.sh
# leaves the programs running).
pdeath=()
setpriv --pdeathsig TERM -- true 2>/dev/null && pdeath=(setpriv --pdeathsig TERM --)

start() {
    local slot=$1 cmd
    case $slot in
        broker)   cmd=("$build/broker/imgpipe-broker" --data-dir "$data") ;;
        resizer*) cmd=("$build/resizer/imgpipe-resizer" --name "${IMGP_NAME:-r}${slot#resizer}") ;;
        frontend) cmd=("$build/http-frontend/imgpipe-frontend" --listen "127.0.0.1:$port") ;;
    esac
    "${pdeath[@]}" "${cmd[@]}" 2>&3 3>&- &
    pid_of[$slot]=$!
    slot_of[$!]=$slot
    set_now
    since_of[$slot]=$now
    log INFO "event=started proc=$slot pid=$!"
}

# died SLOT PID RC: log the death and start the delay before the restart.
died() {
    local slot=$1 pid=$2 rc=$3 how up up_s delay delay_s
    unset "pid_of[$slot]"
    if [ "$rc" -gt 128 ] && [ "$rc" -le 192 ]; then
        how="signal=$(kill -l $((rc - 128)))"
    else
        how="status=$rc"
    fi
    set_now
    up=$((now - since_of[$slot]))
    secs up_s "$up"
    if [ "$rc" -eq 2 ]; then
        log ERROR "event=exited proc=$slot pid=$pid $how up_s=$up_s" \
                  "reason=\"bad configuration (see its lines above): not restarted, stopping\""
        stopping=config
        return
    fi
    delay=${delay_of[$slot]:-$delay_first_ms}
    [ $up -ge $up_reset_ms ] && delay=$delay_first_ms
    delay_of[$slot]=$((delay * 2 > delay_max_ms ? delay_max_ms : delay * 2))
    secs delay_s "$delay"
    log WARN "event=exited proc=$slot pid=$pid $how up_s=$up_s restart_in_s=$delay_s"
    sleep "$delay_s" &
    timer_of[$slot]=$!
    slot_of[$!]=$slot
}

url="http://127.0.0.1:$port"
hint() {
    local keys=""
    [ $curve_set -eq 3 ] && keys=", CURVE keys on"
    cat <<MSG

imgpipe is running at $url ($resizers resizers, spool $data$keys). Try:
  curl -F img=@photo.jpg $url/v1/images
  curl $url/v1/images/ID            # status
  curl -o thumb.png $url/v1/images/ID/thumbnail
  curl $url/v1/cluster              # the live resizers
A process that dies is started again. Ctrl-C stops it all.

MSG
}

# A child ended: a program died, a restart delay elapsed, or the probe ended.
reap() {
    local pid=$1 rc=$2 slot
    if [ "$pid" = "$ready_pid" ]; then
        ready_pid=""
        if [ "$rc" -eq 0 ]; then
            hint
        else
            log WARN "event=not_ready reason=\"no 200 from $url/healthz within 60 s; see the lines above\""
        fi
        return
    fi
    slot=${slot_of[$pid]:-}
    [ -n "$slot" ] || return
    unset "slot_of[$pid]"
    if [ "${timer_of[$slot]:-}" = "$pid" ]; then
        unset "timer_of[$slot]"
        start "$slot"
    else
        died "$slot" "$pid" "$rc"
    fi
}

# next_ended: wait until a child ends, or a trapped signal comes. Sets
# ended_pid (empty: a signal, or no child at all with ended_rc 127) and
# ended_rc. Why the look before wait -n: bash forgets a child that a signal
# killed as soon as it prints its "Killed" line (at its next fork), and
# wait -n would then never report it; `wait PID` still knows its status.
# So every child that is gone is collected by pid first. Only a child
# that is still running (or not yet reaped by bash) is left to wait -n.
next_ended() {
    local pid
    for pid in "${!slot_of[@]}" $ready_pid $deadline_pid; do
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid"
            ended_rc=$? ended_pid=$pid
            return
        fi
    done
    ended_pid="" ended_rc=0
    wait -n -p ended_pid || ended_rc=$?
}

# Stop: SIGTERM to every program (and pending delay), wait for them all up
# to stop_timeout_s, SIGKILL whatever is left.
stop_all() {
    local pids=() pid slot
    trap - INT TERM HUP EXIT
    log INFO "event=stopping reason=$stopping"
    for pid in "${!slot_of[@]}" $ready_pid; do pids+=("$pid"); done
    [ ${#pids[@]} -gt 0 ] && kill -TERM "${pids[@]}" 2>/dev/null
    sleep "$stop_timeout_s" &
    deadline_pid=$!
    while [ ${#pid_of[@]} -gt 0 ]; do
        next_ended
        pid=$ended_pid
        [ -n "$pid" ] || { [ "$ended_rc" -eq 127 ] && break; continue; }
        if [ "$pid" = "$deadline_pid" ]; then
            log ERROR "event=stop_timeout procs=\"${!pid_of[*]}\"" \
                      "reason=\"still running ${stop_timeout_s} s after SIGTERM: SIGKILL\""
            kill -KILL "${pid_of[@]}" 2>/dev/null
            deadline_pid=""
            break
        fi
        slot=${slot_of[$pid]:-}
        unset "slot_of[$pid]"
        [ "$pid" = "$ready_pid" ] && ready_pid=""
        if [ -n "$slot" ] && [ "${pid_of[$slot]:-}" = "$pid" ]; then
            unset "pid_of[$slot]"
            log INFO "event=stopped proc=$slot pid=$pid status=$ended_rc"
        fi
    done
    [ -n "$deadline_pid" ] && kill -TERM "$deadline_pid" 2>/dev/null
    wait
    log INFO "event=stopped"
}

# From here on every failure is handled where it happens (a kill of a pid
# that just died is no reason to leave the programs unsupervised).
set +e
exec 2>/dev/null
# shellcheck disable=SC2317  # called by the traps below
on_signal() { stopping=$1; }
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
trap 'on_signal HUP' HUP
trap '[ -n "$stopping" ] || stopping=exit; stop_all' EXIT

for slot in "${slots[@]}"; do start "$slot"; done
# The hint once the frontend answers; curl retries by itself (1 s apart,
# on refused connections and 503), off the supervision loop.
curl -fs -o /dev/null --max-time 2 --retry 60 --retry-connrefused --retry-delay 1 \
     --retry-max-time 60 "$url/healthz" &
ready_pid=$!

# Supervise: asleep in wait -n until a child ends or a signal comes.
while [ -z "$stopping" ]; do
    next_ended
    [ -n "$stopping" ] && break
    if [ -n "$ended_pid" ]; then
        reap "$ended_pid" "$ended_rc"
    elif [ "$ended_rc" -eq 127 ]; then
        log ERROR "event=no_children reason=\"nothing left to supervise\""
        stopping=bug
    fi
done
code=0
[ "$stopping" = config ] && code=2
stop_all
exit $code
