#!/usr/bin/env bash
# What the daemon costs: wake-ups (voluntary context switches: each is a
# sleep ended) per second by thread (the daemon and its
# runtime process), CPU and memory, first over a quiet period, then during
# a bulk transfer between two namespaces this script makes. The daemon runs
# in dry-run, tuning only the receiving namespace, so nothing on the machine
# changes; it is stopped and the namespaces removed however the script ends.
# Usage: packaging/bench/idle.sh [SECONDS] [BULK_SECONDS]   (root; defaults 30 and 10; 0 skips the transfer)
set -euo pipefail
SECONDS_IDLE=${1:-30}
SECONDS_BULK=${2:-10}
BIN=${WASMTUNE_BIN:-$(dirname "$0")/../../target/release/wasmtune}
[[ -x $BIN ]] || { echo "idle.sh: no wasmtune binary at $BIN (cargo build --release)" >&2; exit 1; }
[[ $EUID -eq 0 ]] || { echo "idle.sh: must run as root" >&2; exit 1; }

WORK=$(mktemp -d)
RX=wt-idle-rx-$$
TX=wt-idle-tx-$$
PID=
cleanup() {
    [[ -n $PID ]] && kill -INT "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
    ip netns pids "$RX" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns del "$RX" 2>/dev/null || true
    ip netns del "$TX" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
ip netns add "$RX"
ip netns add "$TX"
ip link add veth-idle netns "$RX" type veth peer name veth-idle netns "$TX"
ip -n "$RX" addr add 10.199.0.1/24 dev veth-idle
ip -n "$TX" addr add 10.199.0.2/24 dev veth-idle
for ns in "$RX" "$TX"; do ip -n "$ns" link set veth-idle up; ip -n "$ns" link set lo up; done

"$BIN" run --dry-run --netns "$RX" --state-dir "$WORK/state" --control-socket "$WORK/control.sock" \
    --policy-dir "$WORK/none" >"$WORK/log" 2>&1 &
PID=$!
for _ in $(seq 100); do grep -q '"ready"\|event="ready"' "$WORK/log" 2>/dev/null && break; sleep 0.1; done
sleep 3
RUNTIME=$(pgrep -P "$PID" | head -1)

switches() {
    for task in /proc/"$PID"/task/* /proc/"$RUNTIME"/task/*; do
        printf '%s %s\n' "$(cat "$task/comm")" \
            "$(awk '/^voluntary_ctxt_switches/ {print $2}' "$task/status")"
    done | awk '{a[$1] += $2} END {for (k in a) print k, a[k]}' | sort
}
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# measure LABEL SECONDS COMMAND...: wake-ups by thread and CPU while COMMAND runs.
measure() {
    local label=$1 seconds=$2
    shift 2
    switches >"$WORK/before"; local d0 r0 d1 r1; d0=$(cpu "$PID"); r0=$(cpu "$RUNTIME")
    "$@"
    switches >"$WORK/after"; d1=$(cpu "$PID"); r1=$(cpu "$RUNTIME")
    echo "${label} for ${seconds} s: wake-ups per second by thread"
    join "$WORK/before" "$WORK/after" | awk -v s="$seconds" '{d = ($3 - $2) / s; t += d; if (d > 0) printf "  %-18s %8.1f\n", $1, d} END {printf "  %-18s %8.1f\n", "total", t}'
    echo "CPU: daemon $((d1 - d0)), runtime $((r1 - r0)) clock ticks ($(getconf CLK_TCK)/s)"
    echo "RSS: daemon $(awk '/VmRSS/ {print $2, $3}' /proc/"$PID"/status), runtime $(awk '/VmRSS/ {print $2, $3}' /proc/"$RUNTIME"/status)"
}

measure idle "$SECONDS_IDLE" sleep "$SECONDS_IDLE"

if ((SECONDS_BULK > 0)); then
    if ! command -v iperf3 >/dev/null; then
        echo "bulk: skipped (no iperf3)"
        exit 0
    fi
    ip netns exec "$RX" iperf3 -s -1 -D -p 5299
    sleep 0.5
    bulk() { ip netns exec "$TX" iperf3 -c 10.199.0.1 -p 5299 -t "$SECONDS_BULK" -J >"$WORK/iperf.json"; }
    measure "bulk transfer" "$SECONDS_BULK" bulk
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("throughput: %.2f Gbit/s" % (d["end"]["sum_received"]["bits_per_second"] / 1e9))' "$WORK/iperf.json"
fi
