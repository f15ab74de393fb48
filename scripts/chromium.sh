#!/usr/bin/env bash
# Install Debian's chromium for tests/browser, which drive it headless with Playwright
# (executable_path=/usr/bin/chromium; Playwright's own browser download is not used).
# Needs root for apt-get; does nothing when chromium is already there.
set -euo pipefail
if [[ -x /usr/bin/chromium ]]; then
    exit 0
fi
echo "installing chromium"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
