#!/usr/bin/env bash
# What an idle daemon costs: wake-ups per second by thread (the daemon and
# its runtime process), CPU and memory over a quiet period. The daemon runs
# in dry-run, tuning only a namespace this script makes, so nothing on the
# machine changes; it is stopped however the script ends.
# Usage: packaging/bench/idle.sh [SECONDS]   (root; default 30)
set -euo pipefail
SECONDS_IDLE=${1:-30}
BIN=${WASMTUNE_BIN:-$(dirname "$0")/../../target/release/wasmtune}
[[ -x $BIN ]] || { echo "idle.sh: no wasmtune binary at $BIN (cargo build --release)" >&2; exit 1; }
[[ $EUID -eq 0 ]] || { echo "idle.sh: must run as root" >&2; exit 1; }

WORK=$(mktemp -d)
NETNS=wt-idle-$$
PID=
cleanup() {
    [[ -n $PID ]] && kill -INT "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
    ip netns del "$NETNS" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
ip netns add "$NETNS"

"$BIN" run --dry-run --netns "$NETNS" --state-dir "$WORK/state" --control-socket "$WORK/control.sock" \
    --policy-dir "$WORK/none" >"$WORK/log" 2>&1 &
PID=$!
for _ in $(seq 100); do grep -q '"ready"\|event="ready"' "$WORK/log" 2>/dev/null && break; sleep 0.1; done
sleep 3
RUNTIME=$(pgrep -P "$PID" | head -1)

switches() {
    for task in /proc/"$PID"/task/* /proc/"$RUNTIME"/task/*; do
        printf '%s %s\n' "$(cat "$task/comm")" \
            "$(awk '/^(voluntary|nonvoluntary)_ctxt_switches/ {s += $2} END {print s}' "$task/status")"
    done | awk '{a[$1] += $2} END {for (k in a) print k, a[k]}' | sort
}
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }

switches >"$WORK/before"; D0=$(cpu "$PID"); R0=$(cpu "$RUNTIME")
sleep "$SECONDS_IDLE"
switches >"$WORK/after"; D1=$(cpu "$PID"); R1=$(cpu "$RUNTIME")

echo "idle for ${SECONDS_IDLE} s: wake-ups per second by thread"
join "$WORK/before" "$WORK/after" | awk -v s="$SECONDS_IDLE" '{d = ($3 - $2) / s; t += d; if (d > 0) printf "  %-18s %6.1f\n", $1, d} END {printf "  %-18s %6.1f\n", "total", t}'
echo "CPU: daemon $((D1 - D0)), runtime $((R1 - R0)) clock ticks ($(getconf CLK_TCK)/s)"
echo "RSS: daemon $(awk '/VmRSS/ {print $2, $3}' /proc/"$PID"/status), runtime $(awk '/VmRSS/ {print $2, $3}' /proc/"$RUNTIME"/status)"
