#!/usr/bin/env bash
# Installs what building and testing wasmtune needs on a Debian-like
# machine, and only what is missing: the C/BPF toolchain and network tools
# from apt, the wasm32-wasip2 target, rustfmt, clippy, cargo-nextest and
# wit-bindgen's C generator (for the policy written in C, policies/c/).
# Idempotent; run as root.
set -euo pipefail

# lld: wasm-ld, the linker clang's wasm32 target uses (policies in C).
# prometheus: the metrics test's scraper (and promtool). systemd:
# systemd-analyze for the unit's score, and systemd-journald for the journal
# test; e2fsprogs and util-linux: the file system the watchdog test freezes
# (mkfs.ext4, fsfreeze) and the mount namespace of the journal test.
APT_PACKAGES=(
    clang llvm lld libbpf-dev libelf-dev zlib1g-dev pkg-config bpftool
    iproute2 iperf3 nftables ethtool
    prometheus
    systemd e2fsprogs util-linux
)

say() { printf 'install-deps: %s\n' "$*"; }

if [[ ${EUID} -ne 0 ]]; then
    say "must run as root (apt-get install)" >&2
    exit 1
fi

# --- Debian packages -------------------------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    if ! dpkg -s "${pkg}" 2>/dev/null | grep -q '^Status: install ok installed$'; then
        missing+=("${pkg}")
    fi
done
if ((${#missing[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    # Package lists are only fetched when a package is unknown to apt.
    needs_update=0
    for pkg in "${missing[@]}"; do
        if ! apt-cache show "${pkg}" >/dev/null 2>&1; then
            needs_update=1
        fi
    done
    if ((needs_update)); then
        say "apt-get update"
        apt-get update -q
    fi
    say "apt-get install ${missing[*]}"
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}"; then
        # Stale package lists are the usual cause (a version vanished).
        say "install failed; refreshing package lists and retrying"
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
else
    say "apt packages present: ${APT_PACKAGES[*]}"
fi

# --- Rust toolchain pieces -------------------------------------------------
export PATH="${CARGO_HOME:-${HOME}/.cargo}/bin:${PATH}"
if ! command -v cargo >/dev/null || ! command -v rustup >/dev/null; then
    say "cargo and rustup are required (https://rustup.rs); not installing a toolchain" >&2
    exit 1
fi

if rustup target list --installed | grep -qx 'wasm32-wasip2'; then
    say "rust target wasm32-wasip2 present"
else
    say "rustup target add wasm32-wasip2"
    rustup target add wasm32-wasip2
fi

for component in rustfmt clippy; do
    if rustup component list --installed | grep -q "^${component}"; then
        say "rust component ${component} present"
    else
        say "rustup component add ${component}"
        rustup component add "${component}"
    fi
done

if cargo nextest --version >/dev/null 2>&1; then
    say "cargo-nextest present"
else
    bin_dir="${CARGO_HOME:-${HOME}/.cargo}/bin"
    installed=0
    if command -v cargo-binstall >/dev/null; then
        say "cargo binstall cargo-nextest"
        cargo binstall --no-confirm cargo-nextest --secure && installed=1
    fi
    if ((!installed)) && command -v curl >/dev/null; then
        say "downloading the cargo-nextest release binary into ${bin_dir}"
        mkdir -p "${bin_dir}"
        if curl -LsSf https://get.nexte.st/latest/linux | tar zxf - -C "${bin_dir}"; then
            installed=1
        fi
    fi
    if ((!installed)) || ! cargo nextest --version >/dev/null 2>&1; then
        say "cargo install cargo-nextest --locked (building from source)"
        cargo install cargo-nextest --locked
    fi
fi

# wit-bindgen's C generator, pinned to the wit-bindgen the SDK uses. Built
# with the C generator only; another version already installed is left
# alone (policies/c/*/build.sh says which one it ran).
WIT_BINDGEN_VERSION=0.61.1
if command -v wit-bindgen >/dev/null; then
    say "wit-bindgen present: $(wit-bindgen --version)"
else
    say "cargo install wit-bindgen-cli ${WIT_BINDGEN_VERSION} --locked (C generator only)"
    cargo install wit-bindgen-cli --version "${WIT_BINDGEN_VERSION}" --locked --no-default-features --features c
fi

say "done"
