#!/usr/bin/env bash
# tests/browser/run.sh [BUILD_DIR] — the upload page (GET /) in headless
# Chromium: upload-page.test.mjs starts the real broker, two resizers and a
# frontend with API keys from BUILD_DIR (default build), drives the page with
# playwright-core (pinned in package-lock.json, installed here by `npm ci`)
# and Debian's /usr/bin/chromium, and saves BUILD_DIR/browser/upload-page.png.
#
# Prints one line per check and ends with "N passed, N failed"; exits 77
# (skipped, never passed) when the browser or node cannot be had here:
# tests/run.sh installs them through deploy/deps.sh --test, so a skip means
# that install was impossible. Bounded: the test is killed after 170 s.
#   CHROMIUM=/usr/bin/chromium   the browser
#   IMGP_CORPUS                  photos and bad files (default ../shared/corpus
#                                beside the checkout; without one the browser
#                                draws its own)
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
build=${1:-$top/build}
[ -d "$build" ] || { echo "run.sh: no build directory $build"; exit 1; }
build=$(cd "$build" && pwd)
chromium=${CHROMIUM:-/usr/bin/chromium}

skip() { echo "skipped: $*"; exit 77; }
command -v node >/dev/null || skip "no node (Debian package nodejs)"
command -v npm >/dev/null || skip "no npm"
[ -x "$chromium" ] || skip "no $chromium (Debian package chromium)"
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 18 ] || skip "node $(node --version) is older than 18 (playwright-core needs 18)"

# The exact playwright-core of package-lock.json, nothing else. Without the
# registry (and no copy in npm's cache) there is nothing to run: skipped.
cd "$here" || exit 1
if ! npm ci --no-audit --no-fund --prefer-offline >"$build/browser-npm.log" 2>&1; then
    tail -5 "$build/browser-npm.log"
    skip "npm ci could not install playwright-core (log: $build/browser-npm.log)"
fi

CHROMIUM=$chromium timeout -k 10 170 node upload-page.test.mjs "$build" "$build/browser"
rc=$?
if [ $rc -eq 124 ]; then
    echo "not ok - the browser test did not finish within 170 s"
    echo "0 passed, 1 failed"
fi
exit $rc
