#!/usr/bin/env bash
# Installs Debian's Chromium for the end-to-end web test when it is missing (needs root/apt).
# Never fails the build: without a browser the e2e test skips and says why.
set -u
if [ -x /usr/bin/chromium ]; then exit 0; fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1 \
    || echo "install-browser: could not install chromium; the web end-to-end test will be skipped" >&2
else
  echo "install-browser: no apt-get or not root; the web end-to-end test will be skipped" >&2
fi
exit 0
