#!/usr/bin/env bash
# Proves that the packages packaging/build-packages.sh wrote to
# target/packages/ install and work on a system other than the build host:
#
#  .deb  A fresh Debian root from Debian's packages (mmdebstrap, with this
#        machine's mirror and suite), with systemd, dbus and man-db. Inside
#        it (chroot): apt-get install ./wasmtune_*.deb ./wasmtune-dev_*.deb,
#        then wasmtune --version, wasmtune support, man wasmtune, the
#        layout, and `wasmtune new` on the installed SDK; the example policy
#        is built against the installed SDK when cargo is here.
#        Then the root is booted with systemd-nspawn -b in a network
#        namespace of its own (so no host sysctl is touched): systemctl
#        status wasmtune, wasmtune status over the control socket, an
#        upgrade (restart, state kept), removal (stop, rollback) and purge
#        (state directory gone).
#  .rpm  rpm -qlp of both packages; rpm --root DIR -i into a copy of the
#        Debian root (before the .deb went in), rpm -V, the scriptlets'
#        user and unit symlink, and rpm -e.
#  image packaging/container/Containerfile built with buildah on a Debian
#        base made by mmdebstrap (no image registry is needed), and
#        packaging/kubernetes/daemonset.yaml checked against the Kubernetes
#        OpenAPI schema (kubernetes-validate from PyPI, in a venv) with the
#        ConfigMap's config.toml checked by `wasmtune check-config`.
#
# Prints PASS, FAIL or SKIP (with the reason) per check and exits 1 when
# any check failed. Slow (minutes): not part of the test run. Needs root
# and the Debian mirror; installs mmdebstrap, systemd-container and rpm
# from apt when missing. Everything is built under
# /var/tmp/wasmtune-pkg-check.* and removed on exit, failure included.
set -euo pipefail
umask 022

say() { printf 'check-packages: %s\n' "$*"; }
die() {
    say "$*" >&2
    exit 1
}
indent() { sed 's/^/    | /'; }

[[ ${EUID} -eq 0 ]] || die "must run as root (mmdebstrap, chroot, systemd-nspawn, rpm --root)"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PKGS=${CARGO_TARGET_DIR:-${REPO}/target}/packages

shopt -s nullglob
debs=("${PKGS}"/wasmtune_*_"$(dpkg --print-architecture)".deb)
devdebs=("${PKGS}"/wasmtune-dev_*_all.deb)
rpms=("${PKGS}"/wasmtune-[0-9]*."$(uname -m)".rpm)
devrpms=("${PKGS}"/wasmtune-devel-*.noarch.rpm)
shopt -u nullglob
for set in debs devdebs rpms devrpms; do
    declare -n list=${set}
    ((${#list[@]} == 1)) || die "expected one package of each kind in ${PKGS} (found ${#list[@]} for ${set}); run packaging/build-packages.sh"
done
DEB=${debs[0]} DEVDEB=${devdebs[0]} RPM=${rpms[0]} DEVRPM=${devrpms[0]}
VERSION=$(dpkg-deb -f "${DEB}" Version)
VERSION=${VERSION%-*}

# --- tools -----------------------------------------------------------------
declare -A TOOLS=([mmdebstrap]=mmdebstrap [systemd-nspawn]=systemd-container [rpm]=rpm
    [unshare]=util-linux [nsenter]=util-linux [buildah]=buildah [python3]=python3)
missing=()
for tool in "${!TOOLS[@]}"; do
    command -v "${tool}" >/dev/null || missing+=("${TOOLS[${tool}]}")
done
if ((${#missing[@]})); then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    say "installing ${missing[*]} from apt"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${missing[@]}" ||
        { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; }
fi

# --- work area and cleanup ---------------------------------------------------
WORK=$(mktemp -d /var/tmp/wasmtune-pkg-check.XXXXXX)
DEBROOT=${WORK}/deb-root
RPMROOT=${WORK}/rpm-root
INROOT_PKGS=/var/cache/wasmtune-check
MACHINE=wasmtune-pkg-check-$$
NSPAWN_PID=
# systemd-nspawn keeps its locks under /run/systemd/nspawn; on a host
# without systemd that directory is ours to remove afterwards.
[[ -e /run/systemd/nspawn ]] && nspawn_dir_existed=1 || nspawn_dir_existed=0
RESULTS=()

record() {
    RESULTS+=("$(printf '%-4s  %s%s' "$1" "$2" "${3:+  ($3)}")")
    say "$1: $2${3:+ ($3)}"
}

# Runs a check function in a subshell with errexit on (an `if` would turn
# it off), so that any failing step fails the check and the script goes on.
check() {
    local name=$1 rc
    shift
    say "--- ${name}"
    set +e
    (
        set -e
        "$@"
    )
    rc=$?
    set -e
    if ((rc == 0)); then record PASS "${name}"; else record FAIL "${name}" "exit ${rc}"; fi
    return 0
}

stop_container() {
    [[ -n ${NSPAWN_PID} ]] || return 0
    if kill -0 "${NSPAWN_PID}" 2>/dev/null; then
        say "shutting the container down"
        # nspawn turns SIGTERM into an orderly poweroff of the container.
        kill -TERM "${NSPAWN_PID}" 2>/dev/null || true
        local waited=0
        while kill -0 "${NSPAWN_PID}" 2>/dev/null && ((waited < 60)); do
            sleep 1
            waited=$((waited + 1))
        done
        if kill -0 "${NSPAWN_PID}" 2>/dev/null; then
            kill -KILL "${NSPAWN_PID}" 2>/dev/null || true
        fi
    fi
    wait "${NSPAWN_PID}" 2>/dev/null || true
    NSPAWN_PID=
}

cleanup() {
    local rc=$?
    set +e
    stop_container
    # Chroot commands run in mount namespaces of their own, so nothing
    # should be mounted here; this catches what an interrupted run left.
    local mnt
    while read -r mnt; do
        umount -l "${mnt}"
    done < <(awk -v w="${WORK}" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r)
    rm -rf "${WORK}"
    if ((!nspawn_dir_existed)) && [[ -d /run/systemd/nspawn ]]; then
        rm -rf /run/systemd/nspawn
    fi
    echo
    say "summary"
    local line failed=0
    for line in "${RESULTS[@]}"; do
        printf '  %s\n' "${line}"
        [[ ${line} == FAIL* ]] && failed=1
    done
    if ((rc == 0 && failed)); then rc=1; fi
    say "$( ((rc == 0)) && echo "all checks passed (SKIPs say why)" || echo "FAILED")"
    exit "${rc}"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Runs a command inside ROOT with /proc, /sys and cgroup2 mounted in a
# private mount namespace, so the mounts end with the command.
in_root() {
    local root=$1
    shift
    # shellcheck disable=SC2016 # expanded by the inner shell
    unshare --mount --fork -- sh -c '
        root=$1; shift
        mount -t proc proc "$root/proc"
        mount -t sysfs sysfs "$root/sys"
        mount -t cgroup2 cgroup2 "$root/sys/fs/cgroup" 2>/dev/null || true
        exec chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
            TERM=dumb DEBIAN_FRONTEND=noninteractive "$@"' sh "${root}" "$@"
}

# --- the Debian root ---------------------------------------------------------
# This machine's own Debian suite and mirrors (main suite, updates and
# security), as apt knows them, whatever the format of its sources.
SUITE=$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release | tr -d '"')
[[ -n ${SUITE} ]] || die "no VERSION_CODENAME in /etc/os-release"
# shellcheck disable=SC2016 # apt's own $(FIELD) placeholders
mapfile -t MIRRORS < <(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' 'Identifier: Packages' |
    awk -v s="${SUITE}" '$2 == s || $2 == s "-updates" || $2 == s "-security" { print "deb " $1 " " $2 " " $3 }' |
    sort -u)
((${#MIRRORS[@]})) || die "apt knows no source for ${SUITE}; run apt-get update"
say "suite ${SUITE}; sources: $(printf '%s; ' "${MIRRORS[@]}")"

make_root() {
    # iperf3 and procps: traffic and sysctl, to see the hardened unit tune.
    mmdebstrap --variant=apt --include=systemd,systemd-sysv,dbus,man-db,iperf3,procps \
        "${SUITE}" "${DEBROOT}" "${MIRRORS[@]}" 2>&1 | tail -n 3 | indent
    test -x "${DEBROOT}/lib/systemd/systemd"
    # apt inside the root resolves the package's dependencies from the mirror.
    cp -L /etc/resolv.conf "${DEBROOT}/etc/resolv.conf"
    # The rpm goes into a copy of the root as it is before the .deb.
    cp -a "${DEBROOT}" "${RPMROOT}"
}
check "mmdebstrap: ${SUITE} root with systemd, dbus, man-db, iperf3" make_root
[[ -d ${DEBROOT} ]] || die "no Debian root; nothing else can be checked"

install_deb() {
    # Not under /tmp: the booted container gets a fresh tmpfs there.
    mkdir -p "${DEBROOT}${INROOT_PKGS}"
    cp "${DEB}" "${DEVDEB}" "${DEBROOT}${INROOT_PKGS}/"
    in_root "${DEBROOT}" apt-get update -q >/dev/null
    in_root "${DEBROOT}" apt-get install -y -q "${INROOT_PKGS}/$(basename "${DEB}")" \
        "${INROOT_PKGS}/$(basename "${DEVDEB}")" 2>&1 | grep -E '^(Setting up|Unpacking|E:|W:|dpkg)' | indent
    in_root "${DEBROOT}" dpkg-query -W wasmtune wasmtune-dev | indent
}
check "deb: apt-get install ./$(basename "${DEB}") ./$(basename "${DEVDEB}")" install_deb

deb_version() {
    local out
    out=$(in_root "${DEBROOT}" wasmtune --version)
    echo "${out}" | indent
    [[ ${out} == "wasmtune ${VERSION}" ]]
}
check "deb: wasmtune --version" deb_version

deb_support() {
    local rc=0
    in_root "${DEBROOT}" wasmtune support >"${WORK}/support.txt" 2>&1 || rc=$?
    indent <"${WORK}/support.txt"
    echo "exit ${rc}" | indent
    # 0: every hook; 1: some (a chroot lacks what a booted system has);
    # 2 would mean this kernel supports none.
    ((rc == 0 || rc == 1))
}
check "deb: wasmtune support (exit 0 or 1)" deb_support

deb_man() {
    local page
    in_root "${DEBROOT}" man -P cat wasmtune >"${WORK}/man.txt" 2>&1
    head -n 12 "${WORK}/man.txt" | indent
    grep -q 'wasmtune' "${WORK}/man.txt"
    for page in "5 wasmtune.toml" "7 wasmtune-tcp-buffer"; do
        # shellcheck disable=SC2086 # section and name are two words
        in_root "${DEBROOT}" man -w ${page} | indent
    done
}
check "deb: man wasmtune (and wasmtune.toml(5), wasmtune-tcp-buffer(7))" deb_man

deb_layout() {
    local path
    for path in /usr/sbin/wasmtune /usr/lib/systemd/system/wasmtune.service /etc/wasmtune/config.toml \
        /usr/lib/sysusers.d/wasmtune.conf /usr/share/bash-completion/completions/wasmtune \
        /usr/share/zsh/vendor-completions/_wasmtune /usr/share/fish/vendor_completions.d/wasmtune.fish \
        /usr/share/doc/wasmtune/copyright /usr/share/doc/wasmtune/configuration.md \
        /usr/share/wasmtune/sdk/Cargo.toml /usr/share/wasmtune/wit/policy.wit \
        /usr/share/wasmtune/examples/ip-frag/Cargo.toml; do
        test -e "${DEBROOT}${path}" || {
            echo "missing ${path}"
            return 1
        }
    done
    for path in /etc/wasmtune/policies /etc/wasmtune/keys /usr/lib/wasmtune/policies; do
        test -d "${DEBROOT}${path}"
    done
    cmp "${REPO}/packaging/systemd/wasmtune.service" "${DEBROOT}/usr/lib/systemd/system/wasmtune.service"
    # shellcheck disable=SC2016 # a dpkg-query field, not a shell variable
    in_root "${DEBROOT}" dpkg-query -W -f='${Conffiles}\n' wasmtune | grep -q ' /etc/wasmtune/config.toml '
    in_root "${DEBROOT}" getent passwd wasmtune | indent
    # Enabled for the next boot although no systemd ran to start it.
    test -L "${DEBROOT}/etc/systemd/system/multi-user.target.wants/wasmtune.service"
    echo "multi-user.target.wants/wasmtune.service -> $(readlink "${DEBROOT}/etc/systemd/system/multi-user.target.wants/wasmtune.service")" | indent
}
check "deb: layout, conffile, wasmtune user, unit enabled" deb_layout

deb_new() {
    in_root "${DEBROOT}" sh -c 'cd /tmp && wasmtune new demo-policy >/dev/null && cat demo-policy/Cargo.toml' \
        >"${WORK}/new.txt"
    grep 'wasmtune-sdk' "${WORK}/new.txt" | indent
    grep -q 'path = "/usr/share/wasmtune/sdk"' "${WORK}/new.txt"
}
check "dev: 'wasmtune new' uses the installed SDK" deb_new

example_builds() {
    local example=${WORK}/example
    cp -r "${DEBROOT}/usr/share/wasmtune/examples/ip-frag" "${example}"
    # The same installed SDK, reached from outside the root.
    sed -i "s|path = \"/usr/share/wasmtune/sdk\"|path = \"${DEBROOT}/usr/share/wasmtune/sdk\"|" "${example}/Cargo.toml"
    (
        cd "${example}"
        export CARGO_TARGET_DIR=${WORK}/example-target
        cargo build -q --release --target wasm32-wasip2 --offline 2>/dev/null ||
            cargo build -q --release --target wasm32-wasip2
    )
    cp "${WORK}/example-target/wasm32-wasip2/release/ip_frag.wasm" "${DEBROOT}/tmp/"
    in_root "${DEBROOT}" wasmtune policy info /tmp/ip_frag.wasm | head -n 6 | indent
}
if command -v cargo >/dev/null && rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    check "dev: the example policy builds on the installed SDK" example_builds
else
    record SKIP "dev: the example policy builds on the installed SDK" "no cargo with the wasm32-wasip2 target here"
fi

# --- booting the root ----------------------------------------------------------
container_init() {
    local pid
    for pid in $(pgrep -P "${NSPAWN_PID}" 2>/dev/null); do
        [[ $(cat "/proc/${pid}/comm" 2>/dev/null) == systemd ]] && {
            echo "${pid}"
            return 0
        }
    done
    return 1
}
in_container() {
    local init
    init=$(container_init)
    nsenter --target "${init}" --all -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
        LANG=C.UTF-8 TERM=dumb DEBIAN_FRONTEND=noninteractive SYSTEMD_PAGER= "$@"
}

booted=0
# Not a check(): it runs in this shell, which must know nspawn's pid to
# stop it. Every step returns on failure by itself.
boot() {
    # --private-network: the daemon tunes the container's own network
    # namespace, never this host's. --register=no --keep-unit: no systemd
    # (machined) is needed on the host.
    # --system-call-filter=bpf: nspawn's own filter refuses bpf(2), which a
    # host does not; without it no kernel hook attaches in the container.
    systemd-nspawn --directory="${DEBROOT}" --boot --private-network --register=no --keep-unit --system-call-filter=bpf \
        --machine="${MACHINE}" --console=read-only </dev/null >"${WORK}/nspawn.log" 2>&1 &
    NSPAWN_PID=$!
    local waited=0 state=
    while ((waited < 150)); do
        kill -0 "${NSPAWN_PID}" 2>/dev/null || return 1
        if container_init >/dev/null; then
            state=$(in_container systemctl is-system-running 2>/dev/null || true)
            [[ ${state} == running || ${state} == degraded ]] && break
        fi
        sleep 1
        waited=$((waited + 1))
    done
    echo "systemd in the container: ${state:-no answer} after ${waited} s" | indent
    [[ ${state} == running || ${state} == degraded ]]
}
echo
say "--- booting the root with systemd-nspawn -b"
if boot; then
    booted=1
    record PASS "nspawn: the root boots with systemd"
else
    indent <"${WORK}/nspawn.log" | tail -n 20 || true
    reason=$(grep -v '^[[:space:]]*$' "${WORK}/nspawn.log" | tail -n 3 | tr '\n' ' ' || true)
    record SKIP "nspawn: the root boots with systemd" "systemd-nspawn could not boot it here: ${reason:-no output}"
    stop_container
fi

if ((booted)); then
    service_status() {
        in_container systemctl status wasmtune --no-pager --lines=5 | indent || true
        [[ $(in_container systemctl is-active wasmtune) == active ]]
    }
    check "nspawn: systemctl status wasmtune (active)" service_status

    daemon_status() {
        # Type=notify: "active" only once READY=1 was sent; the wait is for a slow start.
        local waited=0
        until in_container wasmtune status >/dev/null 2>&1 || ((waited >= 30)); do
            sleep 1
            waited=$((waited + 1))
        done
        in_container wasmtune status >"${WORK}/status.txt"
        head -n 14 "${WORK}/status.txt" | indent
        # The built-in policies must run: a daemon whose runtime process
        # cannot start still answers, with every policy not-running.
        local running
        running=$(grep -cE '^[a-z0-9-]+ +[0-9][^ ]* +running ' "${WORK}/status.txt" || true)
        echo "${running} policies running" | indent
        ((running > 0))
    }
    check "nspawn: wasmtune status over the control socket (policies running)" daemon_status

    notify() {
        # Type=notify: the status line the daemon sent with READY=1.
        local text watchdog
        text=$(in_container systemctl show -P StatusText wasmtune)
        watchdog=$(in_container systemctl show -P WatchdogUSec wasmtune)
        echo "StatusText=${text}" | indent
        echo "WatchdogUSec=${watchdog}" | indent
        [[ ${text} == "tuning: "*" policies, "*" kernel hooks attached"* ]]
        [[ ${watchdog} == 1min ]]
    }
    check "nspawn: READY with its status line, and the watchdog armed" notify

    # The container's network namespace is its own (--private-network):
    # a receive buffer limit far too low there, traffic over its loopback,
    # and the daemon, under every directive of the shipped unit, must
    # raise it, say so in the journal with its fields, and give the
    # original back on removal.
    TINY_RMEM="4096 131072 98304"
    tunes() {
        in_container sysctl -q -w net.ipv4.tcp_rmem="${TINY_RMEM}"
        # Two transfers: the daemon, in the container's pid namespace, must
        # tell its own first write from an administrator's and go on.
        local _
        for _ in 1 2; do
            in_container sh -c 'iperf3 -s -1 -D -p 5299 && sleep 1 && iperf3 -c 127.0.0.1 -p 5299 -t 3 >/dev/null'
        done
        local waited=0 entry='' changes
        until [[ -n ${entry} ]] || ((waited >= 20)); do
            # All of it, then its first line: `| head` would end journalctl
            # with SIGPIPE, which pipefail turns into a failure.
            entry=$(in_container journalctl -u wasmtune -o json --no-pager POLICY=tcp-buffer EVENT=sysctl-change)
            entry=${entry%%$'\n'*}
            [[ -n ${entry} ]] || { sleep 1; waited=$((waited + 1)); }
        done
        changes=$(in_container journalctl -u wasmtune -o cat --no-pager POLICY=tcp-buffer EVENT=sysctl-change | wc -l)
        echo "${changes} changes of tcp_rmem by tcp-buffer" | indent
        ((changes >= 2))
        [[ -z $(in_container journalctl -u wasmtune -o cat --no-pager EVENT=admin-override) ]]
        echo "journalctl -u wasmtune POLICY=tcp-buffer EVENT=sysctl-change:" | indent
        python3 -c 'import json,sys; e=json.loads(sys.argv[1]); [print("  %s=%s" % (k, e.get(k))) for k in ("MESSAGE_ID","TUNABLE","OLD","NEW","SCENARIO")]' \
            "${entry}" | indent
        local now
        now=$(in_container sysctl -n net.ipv4.tcp_rmem | awk '{$1 = $1; print}')
        echo "tcp_rmem now ${now} (was ${TINY_RMEM})" | indent
        [[ ${now} != "${TINY_RMEM}" ]]
    }
    check "nspawn: the daemon tunes under the shipped unit (journal fields, kernel value)" tunes

    reload() {
        in_container systemctl reload wasmtune
        sleep 1
        in_container journalctl -u wasmtune --no-pager -o cat EVENT=reload | tail -n 1 | indent
        [[ -n $(in_container journalctl -u wasmtune --no-pager -o cat EVENT=reload) ]]
        [[ $(in_container systemctl is-active wasmtune) == active ]]
    }
    check "nspawn: systemctl reload re-reads the configuration" reload

    upgrade() {
        local before after
        before=$(in_container systemctl show -P MainPID wasmtune)
        # Installing the same version again goes through the upgrade path:
        # prerm upgrade, then postinst configure with the old version.
        in_container dpkg -i "${INROOT_PKGS}/$(basename "${DEB}")" 2>&1 | grep -E '^(Preparing|Unpacking|Setting up)' | indent
        sleep 2
        after=$(in_container systemctl show -P MainPID wasmtune)
        echo "daemon pid ${before} -> ${after}" | indent
        [[ ${after} != 0 && ${after} != "${before}" ]]
        [[ $(in_container systemctl is-active wasmtune) == active ]]
        test -s "${DEBROOT}/var/lib/wasmtune/journal.jsonl"
    }
    check "nspawn: upgrade restarts the service and keeps /var/lib/wasmtune" upgrade

    remove() {
        # nspawn fakes the container's boot id with a bind mount, which the
        # unit's ProtectKernelTunables= remount of /proc/sys drops: the
        # daemon and prerm's rollback read different ids, and the journal
        # must still see one boot (it compares the kernel's start times).
        local pid
        pid=$(in_container systemctl show -P MainPID wasmtune)
        echo "boot id: the service sees $(in_container nsenter -t "${pid}" -m cat /proc/sys/kernel/random/boot_id)," \
            "prerm $(in_container cat /proc/sys/kernel/random/boot_id)" | indent
        in_container apt-get remove -y -q wasmtune-dev wasmtune >"${WORK}/remove.txt" 2>&1
        grep -E '^(Removing|wasmtune|nothing|restored|rollback)' "${WORK}/remove.txt" | indent
        grep -q 'wasmtune rollback' "${WORK}/remove.txt"
        [[ $(in_container systemctl is-active wasmtune || true) != active ]]
        # The tuner is gone, so is its tuning.
        local after
        after=$(in_container sysctl -n net.ipv4.tcp_rmem | awk '{$1 = $1; print}')
        echo "tcp_rmem after removal: ${after}" | indent
        [[ ${after} == "${TINY_RMEM}" ]]
        # Removal keeps the state directory; only purge deletes it.
        test -d "${DEBROOT}/var/lib/wasmtune"
        test -e "${DEBROOT}/etc/wasmtune/config.toml"
    }
    check "nspawn: apt-get remove stops the service, rolls back the tuned value, keeps state and conffile" remove

    purge() {
        in_container apt-get purge -y -q wasmtune 2>&1 | grep -E '^Purging' | indent
        test ! -e "${DEBROOT}/var/lib/wasmtune"
        test ! -e "${DEBROOT}/etc/wasmtune/config.toml"
        test ! -e "${DEBROOT}/etc/systemd/system/multi-user.target.wants/wasmtune.service"
    }
    check "nspawn: apt-get purge deletes /var/lib/wasmtune and the conffile" purge
    stop_container
else
    # No boot: removal is checked in the chroot, which shares this host's
    # network namespace. That is safe only while no daemon ever ran there
    # (no journal for the rollback to replay).
    if [[ -e ${DEBROOT}/var/lib/wasmtune/journal.jsonl ]]; then
        record SKIP "deb: apt-get remove/purge in the chroot" "a journal exists; its rollback would write this host's sysctls"
    else
        chroot_remove() {
            in_root "${DEBROOT}" apt-get remove -y -q wasmtune-dev wasmtune 2>&1 |
                grep -E '^(Removing|wasmtune|nothing)' | indent
            test -e "${DEBROOT}/etc/wasmtune/config.toml"
            in_root "${DEBROOT}" apt-get purge -y -q wasmtune 2>&1 | grep -E '^Purging' | indent
            test ! -e "${DEBROOT}/etc/wasmtune/config.toml"
            test ! -e "${DEBROOT}/var/lib/wasmtune"
        }
        check "deb: apt-get remove (rollback of an empty journal) and purge in the chroot" chroot_remove
    fi
fi

# --- rpm ---------------------------------------------------------------------
rpm_list() {
    local pkg
    for pkg in "${RPM}" "${DEVRPM}"; do
        echo "$(basename "${pkg}"):" | indent
        rpm -qlp "${pkg}" | indent
    done
    echo "requires: $(rpm -qp --requires "${RPM}" | grep -v '^rpmlib\|GLIBC_\|ELFUTILS_\|GCC_\|ZLIB_' | sort -u | tr '\n' ' ')" | indent
    rpm -qlp "${RPM}" | grep -qx /usr/sbin/wasmtune
}
check "rpm: rpm -qlp" rpm_list

rpm_install() {
    # What the rpm's Requires name (libelf.so.1, libz.so.1; libc is there),
    # as Debian's packages: rpm cannot install them here.
    in_root "${RPMROOT}" apt-get update -q >/dev/null
    in_root "${RPMROOT}" apt-get install -y -q --no-install-recommends libelf1 zlib1g 2>&1 |
        grep -E '^Setting up' | indent || true
    rpm --root "${RPMROOT}" --initdb
    # --nodeps: this root's rpm database is empty; libc, libelf, zlib,
    # /bin/sh and shadow-utils are there, but as dpkg's packages, which rpm
    # does not know. The scriptlets do run (in a chroot), with their guards
    # for a system without a running systemd.
    rpm --root "${RPMROOT}" -i --nodeps "${RPM}" "${DEVRPM}" 2>&1 | indent
    rpm --root "${RPMROOT}" -qa | indent
    rpm --root "${RPMROOT}" -V --nodeps wasmtune wasmtune-devel | indent
    rpm --root "${RPMROOT}" -qc wasmtune | indent
    in_root "${RPMROOT}" wasmtune --version | indent
    in_root "${RPMROOT}" getent passwd wasmtune | indent
    test -L "${RPMROOT}/etc/systemd/system/multi-user.target.wants/wasmtune.service"
    echo "multi-user.target.wants/wasmtune.service -> $(readlink "${RPMROOT}/etc/systemd/system/multi-user.target.wants/wasmtune.service")" | indent
}
check "rpm: rpm --root DIR -i --nodeps, rpm -V, scriptlets (user, enabled unit)" rpm_install

rpm_erase() {
    # The %preun rollback replays the root's journal against this host's
    # kernel; only with no journal there is that a no-op.
    test ! -e "${RPMROOT}/var/lib/wasmtune/journal.jsonl"
    rpm --root "${RPMROOT}" -e wasmtune-devel wasmtune 2>&1 | indent
    test ! -e "${RPMROOT}/usr/sbin/wasmtune"
    test ! -e "${RPMROOT}/etc/systemd/system/multi-user.target.wants/wasmtune.service"
}
check "rpm: rpm --root DIR -e (disable, rollback of an empty journal)" rpm_erase

# --- container image and Kubernetes manifests ----------------------------------
image_builds() {
    local storage=${WORK}/buildah
    local ba=(buildah --root "${storage}/root" --runroot "${storage}/run" --storage-driver vfs)
    # The base image is made here, like debian:SUITE-slim (minbase without
    # documentation), since no image registry may be reachable.
    mmdebstrap --variant=minbase --format=tar --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        "${SUITE}" "${WORK}/base.tar" "${MIRRORS[@]}" 2>&1 | tail -n 1 | indent
    local ctr
    ctr=$("${ba[@]}" from scratch)
    "${ba[@]}" add "${ctr}" "${WORK}/base.tar" / >/dev/null
    "${ba[@]}" commit -q "${ctr}" "localhost/debian-base:${SUITE}" >/dev/null
    "${ba[@]}" rm "${ctr}" >/dev/null
    "${ba[@]}" bud --isolation chroot --pull-never --build-arg "BASE_IMAGE=localhost/debian-base:${SUITE}" \
        -f "${REPO}/packaging/container/Containerfile" -t "localhost/wasmtune:${VERSION}" "${PKGS}" 2>&1 |
        grep -E '^(STEP|Setting up wasmtune|wasmtune [0-9]|Successfully)' | indent
    ctr=$("${ba[@]}" from --pull-never "localhost/wasmtune:${VERSION}")
    # Only commands that change nothing on this host: a container run by
    # buildah shares this host's network namespace.
    "${ba[@]}" run --isolation chroot "${ctr}" -- sh -ec \
        'wasmtune --version; getent passwd wasmtune; ls -ld /etc/wasmtune/policies' | indent
    "${ba[@]}" rm "${ctr}" >/dev/null
    "${ba[@]}" rmi --all -f >/dev/null
}
check "image: Containerfile builds from the .deb (buildah)" image_builds

manifests_valid() {
    local manifest=${REPO}/packaging/kubernetes/daemonset.yaml version
    python3 -m venv "${WORK}/venv"
    "${WORK}/venv/bin/pip" install -q kubernetes-validate pyyaml
    for version in 1.30.0 1.37.0; do
        "${WORK}/venv/bin/kubernetes-validate" --strict -k "${version}" "${manifest}" 2>&1 | indent
    done
    # The configuration the ConfigMap carries, as the daemon reads it.
    "${WORK}/venv/bin/python3" -c '
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "wasmtune-config")
open(sys.argv[2], "w").write(config["data"]["config.toml"])
' "${manifest}" "${WORK}/k8s-config.toml"
    "${WORK}/venv/bin/python3" -c '
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
pod = next(d for d in docs if d["kind"] == "DaemonSet")["spec"]["template"]
spec, notes = pod["spec"], pod["metadata"]["annotations"]
assert spec["hostNetwork"] and spec["hostPID"], "host network and PID namespaces"
assert notes["prometheus.io/scrape"] == "true" and notes["prometheus.io/port"] == "9560"
main = next(c for c in spec["containers"] if c["name"] == "wasmtune")
assert "0.0.0.0:9560" in main["args"], "--metrics 0.0.0.0:9560"
mounts = {m["mountPath"] for m in main["volumeMounts"]}
for path in ("/sys/kernel/btf", "/sys/fs/cgroup", "/var/lib/wasmtune", "/etc/wasmtune/policies"):
    assert path in mounts, path
caps = set(main["securityContext"]["capabilities"]["add"])
assert caps == {"SYS_ADMIN", "SETUID", "SETGID", "KILL"}, caps
print("host namespaces, metrics port and annotations, mounts and capabilities as documented")
' "${manifest}" | indent
    # The packaged binary, unpacked: check-config reads the file and stops.
    dpkg-deb -x "${DEB}" "${WORK}/unpacked"
    "${WORK}/unpacked/usr/sbin/wasmtune" check-config "${WORK}/k8s-config.toml" | indent
}
check "kubernetes: daemonset.yaml against the OpenAPI schema; its config.toml" manifests_valid
