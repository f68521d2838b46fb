#!/usr/bin/env bash
# tcp-cong: the learned congestion control choice against every static one,
# per peer, over a clean veth path and one losing 2 % of its segments.
#
# Runs the end-to-end test tcp_cong_learns_per_peer_against_every_static_choice
# (tests/tests/e2e/alone/tuners.rs) with more and longer rounds than the test suite
# uses: the daemon learns per peer from the connections it sees, then each
# round measures, per peer, the learned choice (set by the daemon's sockops
# program) and every algorithm this kernel offers and tcp-cong may use, set
# statically with iperf3 -C from the same namespace over the same veth to a
# second address of the same peer, kept out of tcp-cong's reach by the
# administrator's [tcp] prefixes. iperf3's client and server are pinned to CPUs 0 and 1.
# Prints, per peer, the median and spread of each choice and the ratio of
# the learned median to the best static median. The figures are also
# appended to target/e2e-results.jsonl (test "tuners::tcp_cong").
#
# Usage: packaging/bench/tcp-cong.sh [ROUNDS] [SECONDS]   (root; defaults 7 and 2)
# Run it on an otherwise idle machine: other load swings single runs two- to
# threefold, and the medians only tame part of that.
set -euo pipefail

ROUNDS=${1:-7}
SECONDS_PER_RUN=${2:-2}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)

for tool in ip iperf3 nft cargo; do
    command -v "$tool" >/dev/null || { echo "tcp-cong.sh: $tool is required" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "tcp-cong.sh: run as root" >&2; exit 2; }
cargo nextest --version >/dev/null 2>&1 || { echo "tcp-cong.sh: cargo-nextest is required" >&2; exit 2; }

cd "$ROOT"
cargo build --release --quiet -p wasmtune
cargo nextest run --release -p wasmtune-tests --test tuners --no-run >/dev/null 2>&1
echo "tcp-cong: $ROUNDS interleaved rounds of ${SECONDS_PER_RUN}-s runs per choice and peer; $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
if ! WASMTUNE_CONG_ROUNDS=$ROUNDS WASMTUNE_CONG_SECONDS=$SECONDS_PER_RUN \
    cargo nextest run --release -p wasmtune-tests --test tuners --no-capture \
    -E 'test(tcp_cong_learns_per_peer_against_every_static_choice)' >"$OUT" 2>&1; then
    grep -v '^{"timestamp' "$OUT" | tail -40 >&2
    echo "tcp-cong.sh: the measurement failed" >&2
    exit 1
fi
# The table: each peer's summary line, its per-choice lines and the
# learner's own view.
grep -E '^tcp-cong |^ +[a-z]+: median |^  learner' "$OUT"
