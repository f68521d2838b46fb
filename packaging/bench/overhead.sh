#!/usr/bin/env bash
# What wasmtune costs the traffic it watches.
#
# 1. iperf3 throughput and CPU over loopback (inside a namespace) and over a
#    veth pair between two namespaces, in three modes, rounds interleaved so
#    drift on the machine hits every mode alike:
#      none      no wasmtune at all;
#      attached  every wasmtune program attached, the daemon stopped with
#                SIGSTOP after it became ready: the cost of the kernel hooks
#                alone (the ring buffer fills and the hooks drop records,
#                which costs no more than posting them);
#      running   the daemon running (--dry-run): hooks plus the daemon's own
#                CPU (drain, policies, /proc polling) on the same machine.
#    Prints the attached/none and running/none ratios per path (target for
#    the hooks: >= 0.99). iperf3's client and server are pinned to CPUs 0 and
#    1 so scheduling placement does not swing the figures between modes.
#    Kernel BPF run-time accounting stays off during these runs (it costs two
#    clock reads per program run itself).
# 2. One more run per path with kernel BPF run-time accounting on
#    (kernel.bpf_stats_enabled, restored on exit): how often each hook ran and
#    for how long, the direct cost, free of scheduling noise.
# 3. The daemon's idle CPU and RSS.
# 4. Events per second the drain carries and each hook's cost per run, from
#    the signals test that measures them.
#
# Usage: packaging/bench/overhead.sh [ROUNDS] [SECONDS]   (root; defaults 6 and 5)
# WASMTUNE=path/to/wasmtune overrides the binary (default: target/release/wasmtune).
# Touches one global sysctl, kernel.bpf_stats_enabled, and restores it;
# everything it makes is removed on exit.
set -euo pipefail

ROUNDS=${1:-6}
SECONDS_PER_RUN=${2:-5}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${WASMTUNE:-$ROOT/target/release/wasmtune}
TAG=wtbench$$
WORK=$(mktemp -d)
DAEMON_PID=
STATS_BEFORE=$(cat /proc/sys/kernel/bpf_stats_enabled)

for tool in ip iperf3 jq; do
    command -v "$tool" >/dev/null || { echo "overhead.sh: $tool is required" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "overhead.sh: run as root" >&2; exit 2; }
[ -x "$BIN" ] || { echo "overhead.sh: no wasmtune binary at $BIN (cargo build --release)" >&2; exit 2; }

cleanup() {
    stop_daemon
    echo "$STATS_BEFORE" >/proc/sys/kernel/bpf_stats_enabled
    for ns in "$TAG-lo" "$TAG-a" "$TAG-b"; do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

start_daemon() {
    "$BIN" run --dry-run --state-dir "$WORK/state" --control-socket "$WORK/control.sock" \
        --log-format json >"$WORK/daemon.log" 2>&1 &
    DAEMON_PID=$!
    for _ in $(seq 100); do
        grep -q '"event":"ready"' "$WORK/daemon.log" 2>/dev/null && return 0
        kill -0 "$DAEMON_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "overhead.sh: the daemon did not become ready:" >&2
    tail -5 "$WORK/daemon.log" >&2
    exit 1
}

stop_daemon() {
    if [ -n "$DAEMON_PID" ]; then
        kill -CONT "$DAEMON_PID" 2>/dev/null || true
        kill -TERM "$DAEMON_PID" 2>/dev/null || true
        wait "$DAEMON_PID" 2>/dev/null || true
        DAEMON_PID=
    fi
}

# Test bed: loopback inside one namespace; a veth pair between two.
ip netns add "$TAG-lo"; ip -n "$TAG-lo" link set lo up
ip netns add "$TAG-a"; ip netns add "$TAG-b"
ip -n "$TAG-a" link set lo up; ip -n "$TAG-b" link set lo up
ip link add "${TAG}a" netns "$TAG-a" type veth peer name "${TAG}b" netns "$TAG-b"
ip -n "$TAG-a" addr add 10.251.0.1/24 dev "${TAG}a"; ip -n "$TAG-a" link set "${TAG}a" up
ip -n "$TAG-b" addr add 10.251.0.2/24 dev "${TAG}b"; ip -n "$TAG-b" link set "${TAG}b" up

CPUS=$(nproc)
CLIENT_CPU=0
SERVER_CPU=$((CPUS > 1 ? 1 : 0))

# One iperf3 run: prints "gbit sender_cpu% receiver_cpu%".
iperf() { # SERVER_NS CLIENT_NS ADDRESS
    ip netns exec "$1" iperf3 -s -1 >/dev/null 2>&1 &
    local server=$!
    sleep 0.3
    ip netns exec "$2" iperf3 -c "$3" -A "$CLIENT_CPU,$SERVER_CPU" -t "$SECONDS_PER_RUN" -J >"$WORK/iperf.json" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    jq -r '[.end.sum_received.bits_per_second / 1e9, .end.cpu_utilization_percent.host_total,
            .end.cpu_utilization_percent.remote_total] | @tsv' "$WORK/iperf.json"
}

# The daemon's programs, by the ids behind its descriptors (other processes
# may load programs of the same names).
daemon_progs() {
    local ids
    ids=$({ grep -hs '^prog_id:' "/proc/${DAEMON_PID:-0}/fdinfo/"* || true; } | awk '{print $2}' | sort -un | paste -sd, -)
    bpftool -j prog show | jq --argjson ids "[${ids}]" '[.[] | select(.id as $id | $ids | index($id))]'
}
# Run count and run time (ns) summed over the daemon's programs.
bpf_totals() {
    daemon_progs | jq -r '"\(map(.run_cnt // 0) | add // 0) \(map(.run_time_ns // 0) | add // 0)"'
}
# name=runs:ns per program, to tell which hook costs what.
bpf_by_program() {
    daemon_progs | jq -r '.[] | "\(.name) \(.run_cnt // 0) \(.run_time_ns // 0)"'
}
echo 0 >/proc/sys/kernel/bpf_stats_enabled

declare -A SUM COUNT
record() { # KEY VALUE
    SUM[$1]=$(echo "${SUM[$1]:-0} + $2" | bc -l)
    COUNT[$1]=$(( ${COUNT[$1]:-0} + 1 ))
}
mean() { echo "scale=3; ${SUM[$1]} / ${COUNT[$1]}" | bc -l; }
run_path() { # PATH
    if [ "$1" = loopback ]; then iperf "$TAG-lo" "$TAG-lo" 127.0.0.1; else iperf "$TAG-b" "$TAG-a" 10.251.0.2; fi
}

echo "== throughput: $ROUNDS rounds x ${SECONDS_PER_RUN}s per path and mode, interleaved (iperf3 on CPUs $CLIENT_CPU,$SERVER_CPU)"
for round in $(seq "$ROUNDS"); do
    for mode in none attached running; do
        case $mode in
        attached) start_daemon; kill -STOP "$DAEMON_PID" ;;
        running) start_daemon ;;
        esac
        for path in loopback veth; do
            read -r gbit cpu_tx cpu_rx <<<"$(run_path "$path")"
            printf 'round %d %-8s %-8s %7.2f Gbit/s  cpu sender %5.1f%%  receiver %5.1f%%\n' \
                "$round" "$mode" "$path" "$gbit" "$cpu_tx" "$cpu_rx"
            record "$path-$mode-gbit" "$gbit"
            record "$path-$mode-cpu" "$(echo "$cpu_tx + $cpu_rx" | bc -l)"
        done
        [ "$mode" = none ] || stop_daemon
    done
done
echo
for path in loopback veth; do
    none=$(mean "$path-none-gbit"); attached=$(mean "$path-attached-gbit"); running=$(mean "$path-running-gbit")
    printf '%-8s none %6.2f  attached %6.2f  running %6.2f Gbit/s   attached/none %.4f  running/none %.4f\n' \
        "$path" "$none" "$attached" "$running" "$(echo "$attached / $none" | bc -l)" "$(echo "$running / $none" | bc -l)"
    printf '%-8s cpu (sender+receiver): none %5.1f%%  attached %5.1f%%  running %5.1f%%\n' \
        "$path" "$(mean "$path-none-cpu")" "$(mean "$path-attached-cpu")" "$(mean "$path-running-cpu")"
done

echo
echo "== time in wasmtune hooks (kernel BPF run-time accounting on, daemon running, one ${SECONDS_PER_RUN}s run per path)"
echo 1 >/proc/sys/kernel/bpf_stats_enabled
start_daemon
for path in loopback veth; do
    read -r runs0 ns0 <<<"$(bpf_totals)"
    bpf_by_program >"$WORK/progs0"
    read -r gbit _ _ <<<"$(run_path "$path")"
    read -r runs1 ns1 <<<"$(bpf_totals)"
    bpf_by_program >"$WORK/progs1"
    runs=$((runs1 - runs0)); ns=$((ns1 - ns0))
    printf '%-8s %6.2f Gbit/s  hooks: %d runs, %d ns/run, %.3f%% of one core; by hook:\n' "$path" "$gbit" \
        "$runs" "$((runs > 0 ? ns / runs : 0))" "$(echo "$ns / ($SECONDS_PER_RUN * 10000000)" | bc -l)"
    join <(sort "$WORK/progs0") <(sort "$WORK/progs1") |
        awk -v s="$SECONDS_PER_RUN" '{r=$4-$2; t=$5-$3; if (r > 0) printf "    %-32s %9d runs/s %6.0f ns/run %6.3f%% of one core\n", $1, r/s, t/r, t/(s*1e7)}' |
        sort -k6 -n -r
done
stop_daemon
echo "$STATS_BEFORE" >/proc/sys/kernel/bpf_stats_enabled

echo
echo "== daemon at idle (10 s)"
start_daemon
sleep 2
ticks() { awk '{print $14 + $15}' "/proc/$DAEMON_PID/stat"; }
t0=$(ticks); sleep 10; t1=$(ticks)
hz=$(getconf CLK_TCK)
rss=$(awk '/VmRSS/ {print $2}' "/proc/$DAEMON_PID/status")
printf 'idle CPU %.3f%% of one core, RSS %d KiB\n' "$(echo "($t1 - $t0) * 100 / $hz / 10" | bc -l)" "$rss"
stop_daemon

echo
echo "== drain rate and cost per event (kernel BPF run-time accounting)"
cd "$ROOT"
cargo test --release -q -p wasmtune-tests --test signals measure_drain -- --nocapture 2>/dev/null |
    grep -E '^(hook |drain:)' || echo "(the signals test could not run)"
