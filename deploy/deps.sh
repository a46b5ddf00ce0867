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

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
