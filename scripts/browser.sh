#!/usr/bin/env bash
# Debian's Chromium for the browser tests (tests/browser/): Playwright drives /usr/bin/chromium.
# Playwright's own browser download (`playwright install`) is not used: it fetches builds from outside
# the package registries. DejaVu fonts have every Vietnamese glyph for the screenshot.
# Idempotent: nothing happens when Chromium is already there.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
echo "==> installing chromium (Debian package)"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core
/usr/bin/chromium --version 2>/dev/null
