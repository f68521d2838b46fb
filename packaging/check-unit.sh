#!/usr/bin/env bash
# The shipped unit's exposure score (`systemd-analyze security --offline`),
# which must not rise above the threshold: every hardening directive the
# daemon can tune under stays on. Usage: packaging/check-unit.sh [MAX]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MAX=${1:-2.0}
UNIT=packaging/systemd/wasmtune.service

if ! command -v systemd-analyze >/dev/null; then
    echo "check-unit: systemd-analyze is missing (Debian package systemd)" >&2
    exit 1
fi
report=$(systemd-analyze security --offline=true --no-pager "${UNIT}" 2>&1)
score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"${report}")
if [[ -z ${score} ]]; then
    echo "check-unit: no score in the report:" >&2
    echo "${report}" >&2
    exit 1
fi
echo "check-unit: ${UNIT} scores ${score} (threshold ${MAX})"
if awk -v s="${score}" -v m="${MAX}" 'BEGIN { exit !(s > m) }'; then
    echo "check-unit: above the threshold; what is exposed:" >&2
    grep '✗' <<<"${report}" >&2 || true
    exit 1
fi
