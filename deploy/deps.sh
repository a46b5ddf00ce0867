#!/usr/bin/env bash
# deploy/deps.sh — install the Debian packages imgpipe needs, only those
# missing, with one apt-get update. Used by deploy/run.sh and tests/run.sh.
# Usage: deploy/deps.sh [--test]   (--test adds what the test suite needs)
set -euo pipefail

packages=(gcc pkg-config meson ninja-build curl libczmq-dev libzmq3-dev
          libcivetweb-dev libvips-dev libjansson-dev)
if [ "${1:-}" = "--test" ]; then
    packages+=(libcriterion-dev clang libclang-rt-dev libcurl4-openssl-dev
               iproute2 jq util-linux procps)
fi

# The browser test (tests/browser) wants Chromium and node with npm. They
# are installed with the rest but are not required: where they cannot be
# had, the rest still goes in and that test says skipped. node and npm are
# looked for as commands, not packages: NodeSource's nodejs carries its own
# npm and conflicts with Debian's.
browser=()

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

missing=()
for p in "${packages[@]}"; do
    installed "$p" || missing+=("$p")
done
if [ "${1:-}" = "--test" ]; then
    installed chromium || browser+=(chromium)
    command -v node >/dev/null || browser+=(nodejs)
    command -v npm >/dev/null || browser+=(npm)
fi
[ ${#missing[@]} -eq 0 ] && [ ${#browser[@]} -eq 0 ] && exit 0

# The browser's packages cannot be installed: say so, and when nothing else
# is missing, end here as a success.
optional() {
    [ ${#browser[@]} -gt 0 ] \
        && echo "deps: could not install ${browser[*]}: the browser test will say skipped" >&2
    [ ${#missing[@]} -gt 0 ] || exit 0
}

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null; then
        optional || true
        echo "deps: need root or sudo to install: ${missing[*]}" >&2
        exit 1
    fi
    sudo="sudo"
fi
echo "deps: installing ${missing[*]} ${browser[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q || optional
if [ ${#browser[@]} -gt 0 ]; then
    $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" "${browser[@]}" && exit 0
    optional
fi
[ ${#missing[@]} -eq 0 ] || $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
