#!/usr/bin/env bash
# Builds wasmtune's Debian and RPM packages into target/packages/:
#
#   wasmtune_VERSION-1_ARCH.deb      wasmtune-dev_VERSION-1_all.deb
#   wasmtune-VERSION-1.ARCH.rpm      wasmtune-devel-VERSION-1.noarch.rpm
#
# then checks them with lintian and rpmlint. The release binary is built
# with cargo; the man page wasmtune(8) and the shell completions are
# generated from it. The packages are assembled with dpkg-deb and rpmbuild
# (Debian's dpkg-dev and rpm), so one tree staged here feeds both formats
# and the unit can sit in /usr/lib/systemd/system on either.
#
# Usage: packaging/build-packages.sh [--no-build] [--no-lint]
#   --no-build  package the existing target/release/wasmtune
#   --no-lint   skip lintian and rpmlint
# Environment: CARGO_TARGET_DIR, as for cargo; SOURCE_DATE_EPOCH (default:
# the last commit's time) dates the changelogs and the compressed files.
set -euo pipefail
umask 022

say() { printf 'build-packages: %s\n' "$*"; }
die() {
    say "$*" >&2
    exit 1
}

build=1
lint=1
for arg in "$@"; do
    case "${arg}" in
    --no-build) build=0 ;;
    --no-lint) lint=0 ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument ${arg} (see --help)" ;;
    esac
done

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "${REPO}"
TARGET_DIR=${CARGO_TARGET_DIR:-${REPO}/target}
OUT=${TARGET_DIR}/packages
WORK=${TARGET_DIR}/packages-build
BIN=${TARGET_DIR}/release/wasmtune
MAINTAINER="wasmtune developers <wasmtune@users.noreply.github.com>"
EXAMPLE_POLICY=ip-frag

# --- tools -----------------------------------------------------------------
# command -> Debian package that has it.
declare -A TOOLS=(
    [dpkg-deb]=dpkg [dpkg-shlibdeps]=dpkg-dev [dpkg-gencontrol]=dpkg-dev
    [rpmbuild]=rpm [strip]=binutils [gzip]=gzip
)
if ((lint)); then
    TOOLS[lintian]=lintian
    TOOLS[rpmlint]=rpmlint
fi
missing=()
for tool in "${!TOOLS[@]}"; do
    command -v "${tool}" >/dev/null || missing+=("${TOOLS[${tool}]}")
done
if ((${#missing[@]})); then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    [[ ${EUID} -eq 0 ]] || die "missing ${missing[*]}; run as root to install them, or install them with apt-get"
    say "installing ${missing[*]} from apt"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${missing[@]}" ||
        { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; }
fi
# The rpm's license file is the text Debian ships in base-files.
LICENSE_TEXT=/usr/share/common-licenses/Apache-2.0
[[ -r ${LICENSE_TEXT} ]] || die "${LICENSE_TEXT} is missing (base-files)"

# --- the binary --------------------------------------------------------------
if ((build)); then
    say "cargo build --release -p wasmtune"
    cargo build --release -p wasmtune
fi
[[ -x ${BIN} ]] || die "${BIN} is missing; build it or drop --no-build"
VERSION=$("${BIN}" --version | awk '{print $2}')
[[ ${VERSION} =~ ^[0-9][0-9A-Za-z.+~-]*$ ]] || die "cannot read a version from '${BIN} --version'"
REVISION=1
DEB_VERSION=${VERSION}-${REVISION}
DEB_ARCH=$(dpkg --print-architecture)
RPM_ARCH=$(uname -m)
if [[ -z ${SOURCE_DATE_EPOCH:-} ]]; then
    SOURCE_DATE_EPOCH=$(git -C "${REPO}" log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH
say "packaging wasmtune ${VERSION} (deb ${DEB_VERSION} ${DEB_ARCH}, rpm ${VERSION}-${REVISION} ${RPM_ARCH})"

rm -rf "${WORK}"
mkdir -p "${WORK}" "${OUT}"
# The staged trees are only an intermediate; the packages are the output.
trap 'rm -rf "${WORK}"' EXIT
rm -f "${OUT}"/wasmtune*.deb "${OUT}"/wasmtune*.rpm

gz() { gzip -9n -c "$1" >"$2"; }

# --- the tree both formats share ----------------------------------------------
# Only what differs between distributions (zsh's vendor directory, the
# copyright/license files, Debian's changelog) is added per format below.
stage_main() {
    local root=$1 gen=${WORK}/generated
    say "staging the wasmtune package tree in ${root#"${REPO}"/}"
    mkdir -p "${gen}"
    "${BIN}" generate man --out "${gen}" >/dev/null
    "${BIN}" generate completions --out "${gen}" >/dev/null
    for file in wasmtune.8 wasmtune _wasmtune wasmtune.fish; do
        [[ -s ${gen}/${file} ]] || die "'wasmtune generate' did not write ${file}"
    done

    # Debug line tables make the binary ~150 MB; a package ships it stripped,
    # as dh_strip would (the build-id note stays).
    install -d "${root}/usr/sbin"
    strip --remove-section=.comment --remove-section=.note --strip-unneeded \
        -o "${root}/usr/sbin/wasmtune" "${BIN}"
    chmod 0755 "${root}/usr/sbin/wasmtune"

    install -D -m 0644 packaging/systemd/wasmtune.service "${root}/usr/lib/systemd/system/wasmtune.service"
    install -D -m 0644 packaging/deb/sysusers.conf "${root}/usr/lib/sysusers.d/wasmtune.conf"
    install -D -m 0644 packaging/config.toml "${root}/etc/wasmtune/config.toml"
    # The daemon takes policy files only from directories root owns that no
    # one else may write.
    install -d -m 0755 "${root}/etc/wasmtune/policies" "${root}/etc/wasmtune/keys" \
        "${root}/usr/lib/wasmtune/policies"

    install -d "${root}/usr/share/man/man5" "${root}/usr/share/man/man7" "${root}/usr/share/man/man8"
    gz "${gen}/wasmtune.8" "${root}/usr/share/man/man8/wasmtune.8.gz"
    gz packaging/man/wasmtune.toml.5 "${root}/usr/share/man/man5/wasmtune.toml.5.gz"
    local page
    for page in packaging/man/wasmtune-*.7; do
        gz "${page}" "${root}/usr/share/man/man7/$(basename "${page}").gz"
    done

    install -D -m 0644 "${gen}/wasmtune" "${root}/usr/share/bash-completion/completions/wasmtune"
    install -D -m 0644 "${gen}/wasmtune.fish" "${root}/usr/share/fish/vendor_completions.d/wasmtune.fish"
    install -D -m 0644 "${gen}/_wasmtune" "${WORK}/zsh/_wasmtune"

    # Flat, as the configuration file's comment refers to
    # /usr/share/doc/wasmtune/configuration.md; tuners/ keeps the docs'
    # relative links to it working. Left uncompressed so those paths hold.
    local doc=${root}/usr/share/doc/wasmtune
    install -d "${doc}/tuners"
    install -m 0644 README.md SECURITY.md docs/*.md "${doc}/"
    install -m 0644 docs/tuners/*.md "${doc}/tuners/"
    # The drop-in the unit points to for the metrics endpoint, which the
    # shipped unit's address-family and IP restrictions would otherwise block.
    if [[ -f packaging/systemd/metrics.conf ]]; then
        install -D -m 0644 packaging/systemd/metrics.conf "${doc}/examples/metrics.conf"
    fi
}

stage_dev() {
    local root=$1 share=$1/usr/share/wasmtune
    say "staging the development package tree in ${root#"${REPO}"/}"
    install -d "${share}/wit" "${share}/sdk" "${share}/examples"

    # The SDK as cargo publishes it: its manifest no longer refers to this
    # workspace, so it builds as a path dependency from anywhere.
    local crates=${WORK}/sdk-crate
    cargo package -p wasmtune-sdk --no-verify --allow-dirty --offline --target-dir "${crates}" -q ||
        cargo package -p wasmtune-sdk --no-verify --allow-dirty --target-dir "${crates}" -q
    tar -xzf "${crates}/package/wasmtune-sdk-${VERSION}.crate" -C "${share}/sdk" --strip-components=1 \
        --exclude=.cargo_vcs_info.json --exclude=Cargo.toml.orig --exclude=Cargo.lock
    [[ -f ${share}/sdk/Cargo.toml && -f ${share}/sdk/wit/policy.wit ]] || die "the SDK crate lacks Cargo.toml or wit/"

    # wit/policy.wit is the SDK's copy in the source tree too.
    install -m 0644 wit/README.md "${share}/wit/README.md"
    ln -s ../sdk/wit/policy.wit "${share}/wit/policy.wit"

    # The example is a member of the policies' workspace in the source
    # tree; installed, it is a crate of its own on the installed SDK.
    local example=${share}/examples/${EXAMPLE_POLICY} src=policies/${EXAMPLE_POLICY}
    install -d "${example}/src"
    install -m 0644 "${src}/policy.toml" "${example}/"
    install -m 0644 "${src}"/src/*.rs "${example}/src/"
    local description
    description=$(sed -n 's/^description = //p' "${src}/Cargo.toml" | head -n 1)
    cat >"${example}/Cargo.toml" <<EOF
[package]
name = "${EXAMPLE_POLICY}"
version = "${VERSION}"
edition = "2024"
description = ${description}
license = "Apache-2.0"
publish = false

[lib]
# cdylib: the component; rlib: native unit tests of the decision logic.
crate-type = ["cdylib", "rlib"]

[dependencies]
wasmtune-sdk = { version = "${VERSION}", path = "/usr/share/wasmtune/sdk" }

[profile.release]
opt-level = "s"
strip = "debuginfo"
lto = true
codegen-units = 1
panic = "abort"

# A workspace of its own, wherever it is copied to.
[workspace]
EOF
    cat >"${example}/README.md" <<EOF
# ${EXAMPLE_POLICY}: an example wasmtune policy

One of wasmtune's built-in policies, as a crate of its own that builds on
the SDK installed in /usr/share/wasmtune/sdk. Copy it somewhere writable:

    cp -r /usr/share/wasmtune/examples/${EXAMPLE_POLICY} ~/ && cd ~/${EXAMPLE_POLICY}
    cargo build --release --target wasm32-wasip2
    cargo test
    wasmtune policy info target/wasm32-wasip2/release/${EXAMPLE_POLICY//-/_}.wasm

\`wasmtune new NAME\` starts a new policy on the same installed SDK. The
SDK's own dependencies (wit-bindgen and what it uses) come from crates.io
the first time, or from a vendored directory (\`cargo vendor\`) offline.
EOF
}

stage_main "${WORK}/common"
stage_dev "${WORK}/common-dev"

# --- Debian ---------------------------------------------------------------
build_deb() {
    local src=${WORK}/deb-src
    say "building the .deb packages"
    mkdir -p "${src}/debian"
    cp packaging/deb/control "${src}/debian/control"
    local date
    date=$(date -u -R -d "@${SOURCE_DATE_EPOCH}")
    cat >"${src}/debian/changelog" <<EOF
wasmtune (${DEB_VERSION}) unstable; urgency=medium

  * wasmtune ${VERSION}.

 -- ${MAINTAINER}  ${date}
EOF

    local pkg dir
    for pkg in wasmtune wasmtune-dev; do
        dir=${src}/debian/${pkg}
        if [[ ${pkg} == wasmtune ]]; then
            cp -a "${WORK}/common" "${dir}"
            install -D -m 0644 "${WORK}/zsh/_wasmtune" "${dir}/usr/share/zsh/vendor-completions/_wasmtune"
            install -d -m 0755 "${dir}/DEBIAN"
            install -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm "${dir}/DEBIAN/"
            install -m 0644 packaging/deb/conffiles "${dir}/DEBIAN/"
        else
            cp -a "${WORK}/common-dev" "${dir}"
            install -d -m 0755 "${dir}/DEBIAN"
        fi
        install -D -m 0644 packaging/deb/copyright "${dir}/usr/share/doc/${pkg}/copyright"
        if [[ -f packaging/deb/${pkg}.lintian-overrides ]]; then
            install -D -m 0644 "packaging/deb/${pkg}.lintian-overrides" "${dir}/usr/share/lintian/overrides/${pkg}"
        fi
        gz "${src}/debian/changelog" "${dir}/usr/share/doc/${pkg}/changelog.Debian.gz"
    done

    # ${shlibs:Depends}: the libraries the binary links, as Debian names them.
    (cd "${src}" && dpkg-shlibdeps -Tdebian/wasmtune.substvars debian/wasmtune/usr/sbin/wasmtune)
    say "wasmtune $(grep '^shlibs:Depends=' "${src}/debian/wasmtune.substvars")"

    for pkg in wasmtune wasmtune-dev; do
        dir=${src}/debian/${pkg}
        local substvars=()
        [[ -f ${src}/debian/${pkg}.substvars ]] && substvars=("-Tdebian/${pkg}.substvars")
        (cd "${src}" && dpkg-gencontrol -p"${pkg}" -P"debian/${pkg}" "${substvars[@]}")
        (cd "${dir}" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z |
            xargs -0 md5sum >DEBIAN/md5sums)
        chmod 0644 "${dir}/DEBIAN/md5sums"
        dpkg-deb --root-owner-group -Zxz --build "${dir}" "${OUT}/" >/dev/null
    done
}

# --- RPM -------------------------------------------------------------------
build_rpm() {
    local top=${WORK}/rpm stage=${WORK}/rpm-root
    say "building the .rpm packages"
    mkdir -p "${top}"/{BUILD,BUILDROOT,RPMS,SOURCES,SPECS,SRPMS}
    cp -a "${WORK}/common" "${stage}"
    cp -a "${WORK}/common-dev/." "${stage}/"
    # Fedora's zsh reads vendor functions from site-functions.
    install -D -m 0644 "${WORK}/zsh/_wasmtune" "${stage}/usr/share/zsh/site-functions/_wasmtune"
    install -D -m 0644 "${LICENSE_TEXT}" "${stage}/usr/share/licenses/wasmtune/LICENSE"

    local spec=${top}/SPECS/wasmtune.spec
    cp packaging/rpm/wasmtune.spec "${spec}"
    printf '* %s %s - %s-%s\n- wasmtune %s.\n' \
        "$(LC_ALL=C date -u -d "@${SOURCE_DATE_EPOCH}" '+%a %b %d %Y')" "${MAINTAINER}" \
        "${VERSION}" "${REVISION}" "${VERSION}" >>"${spec}"
    rpmbuild -bb --quiet --target "${RPM_ARCH}" \
        --define "_topdir ${top}" \
        --define "stage ${stage}" \
        --define "pkg_version ${VERSION}" \
        --define "packager ${MAINTAINER}" \
        --define "_source_date_epoch_from_changelog 0" \
        --define "use_source_date_epoch_as_buildtime 1" \
        "${spec}"
    find "${top}/RPMS" -name '*.rpm' -exec cp {} "${OUT}/" \;
}

build_deb
build_rpm

# --- checks ----------------------------------------------------------------
status=0
if ((lint)); then
    say "lintian (errors fail the build; warnings and info shown)"
    lintian=(lintian --display-info --fail-on error)
    nobody=(setpriv --reuid=nobody --regid=nogroup --clear-groups --reset-env)
    if [[ ${EUID} -eq 0 ]] && command -v setpriv >/dev/null && getent group nogroup >/dev/null &&
        "${nobody[@]}" test -r "${OUT}/wasmtune_${DEB_VERSION}_${DEB_ARCH}.deb"; then
        # lintian unpacks the archives it checks, and warns when run as root.
        lintian=("${nobody[@]}" "${lintian[@]}")
    fi
    if ! "${lintian[@]}" "${OUT}"/*.deb; then
        status=1
    fi
    say "rpmlint (errors fail the build)"
    if ! rpmlint -c packaging/rpm/rpmlint.toml "${OUT}"/*.rpm; then
        status=1
    fi
fi

say "packages in ${OUT#"${REPO}"/}:"
(cd "${OUT}" && for file in *.deb *.rpm; do
    printf '  %-44s %8s KiB\n' "${file}" "$(($(stat -c %s "${file}") / 1024))"
done)
exit "${status}"
