#!/usr/bin/env bash
# Runs the fuzz targets in fuzz/ (cargo-fuzz, libFuzzer) for EXECUTIONS
# inputs each, one target at a time, and prints per target the executions,
# executions a second and crashes. Not part of the test suite.
#
# Usage: packaging/fuzz.sh [EXECUTIONS [TARGET...]]
#   EXECUTIONS  inputs per target (-runs), default 10000000
#   TARGET      events manifest config journal control runtime (default: all)
#
# Environment:
#   FUZZ_TOOLCHAIN  a toolchain other than the pinned nightly (not recommended)
#   FUZZ_SANITIZER  none (default: the fuzzed code has no unsafe; debug
#                   assertions and overflow checks stay on) or address
#   FUZZ_TIMEOUT    seconds one input may take before it counts as a hang (10)
#   FUZZ_MAX_SECONDS  stop each target after this many seconds even if it
#                   has not reached EXECUTIONS (default: no limit)
#
# Each target starts from its seed corpus, fuzz/corpus/TARGET (read only),
# and keeps what it learns in fuzz/target/corpus/TARGET; a crash or hang is
# written to fuzz/artifacts/TARGET/ and stops that target. Logs are in
# fuzz/target/logs/. See docs/security.md, "Fuzzing".
set -euo pipefail

# The pinned nightly: cargo-fuzz needs one (-Z flags, sanitizer coverage).
# rustup names it nightly-2026-05-20; an undated `nightly` install is used
# when it is exactly this build.
PINNED_NIGHTLY=nightly-2026-05-20
PINNED_RUSTC="rustc 1.97.0-nightly (e50aa6fba 2026-05-19)"
ALL_TARGETS=(events manifest config journal control runtime)

EXECUTIONS=${1:-10000000}
[[ $# -gt 0 ]] && shift
TARGETS=("$@")
[[ ${#TARGETS[@]} -eq 0 ]] && TARGETS=("${ALL_TARGETS[@]}")
SANITIZER=${FUZZ_SANITIZER:-none}
TIMEOUT=${FUZZ_TIMEOUT:-10}
LIBFUZZER_FLAGS=(-runs="$EXECUTIONS" -timeout="$TIMEOUT" -print_final_stats=1)
[[ -n ${FUZZ_MAX_SECONDS:-} ]] && LIBFUZZER_FLAGS+=(-max_total_time="$FUZZ_MAX_SECONDS")

ROOT=$(cd "$(dirname "$0")/.." && pwd)

if [[ -n ${FUZZ_TOOLCHAIN:-} ]]; then
    TOOLCHAIN=$FUZZ_TOOLCHAIN
elif rustup run "$PINNED_NIGHTLY" rustc -V >/dev/null 2>&1; then
    TOOLCHAIN=$PINNED_NIGHTLY
elif [[ "$(rustup run nightly rustc -V 2>/dev/null)" == "$PINNED_RUSTC" ]]; then
    TOOLCHAIN=nightly
else
    echo "fuzz.sh: the pinned toolchain is missing: rustup toolchain install $PINNED_NIGHTLY" >&2
    echo "          (or FUZZ_TOOLCHAIN=NAME to use another, at your own risk)" >&2
    exit 1
fi
echo "toolchain: $TOOLCHAIN ($(rustup run "$TOOLCHAIN" rustc -V))"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
echo "cargo-fuzz: $(cargo fuzz --version)"

# The host embeds the built-in policies. The nightly has no wasm32-wasip2
# standard library, so they are built with the default toolchain, exactly
# as host/build.rs builds them (so a root build's output is reused), and
# handed to the fuzz build.
GUESTS="${CARGO_TARGET_DIR:-$ROOT/target}/guests"
cargo build --release --target wasm32-wasip2 --manifest-path "$ROOT/policies/Cargo.toml" --target-dir "$GUESTS"
export WASMTUNE_PREBUILT_POLICIES="$GUESTS/wasm32-wasip2/release"

cd "$ROOT"
FUZZ_FLAGS=(--sanitizer "$SANITIZER" --debug-assertions)
cargo "+$TOOLCHAIN" fuzz build "${FUZZ_FLAGS[@]}"

mkdir -p fuzz/target/logs
SUMMARY=()
FAILED=0
for target in "${TARGETS[@]}"; do
    mkdir -p "fuzz/target/corpus/$target"
    log="fuzz/target/logs/$target.log"
    echo "fuzzing $target for $EXECUTIONS executions (log: $log)"
    started=$(date +%s)
    status=0
    cargo "+$TOOLCHAIN" fuzz run "${FUZZ_FLAGS[@]}" "$target" "fuzz/target/corpus/$target" "fuzz/corpus/$target" -- \
        "${LIBFUZZER_FLAGS[@]}" >"$log" 2>&1 || status=$?
    seconds=$(($(date +%s) - started))
    executed=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    per_second=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    if [[ $status -eq 0 ]]; then
        crashes=0
    else
        crashes=1
        FAILED=1
        artifact=$(sed -n 's/.*Test unit written to //p' "$log" | tail -1)
        echo "  $target: stopped (exit $status): ${artifact:-see the log}"
    fi
    SUMMARY+=("$(printf '%-9s %12s executions %8s exec/s %6ss  crashes %s' \
        "$target" "${executed:-?}" "${per_second:-?}" "$seconds" "$crashes")")
done

echo
echo "toolchain $TOOLCHAIN, sanitizer $SANITIZER, $EXECUTIONS executions asked per target"
printf '%s\n' "${SUMMARY[@]}"
exit "$FAILED"
