#!/usr/bin/env bash
# Installs everything the tests need (a virtual environment with the dev extras, and Debian's Chromium
# for the browser tests) and runs the whole pytest suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
# torch is pinned (==2.13.0, CPU build) in the 'train' extra that 'dev' pulls in.
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"
exec .venv/bin/python -m pytest "$@"
