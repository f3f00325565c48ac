#!/usr/bin/env bash
# Installs everything the tests need (a virtual environment with the dev extras; Debian's Chromium for the
# browser tests, PostgreSQL for the feedback store's tests, and the fonts training draws letters from) and runs
# the whole pytest suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

# The tests start their own throwaway PostgreSQL cluster from these binaries, on a free loopback port
# (tests/conftest.py); whatever cluster the package itself sets up is not used.
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
# The fonts the default recipe draws its non-digit letters and signs from (src/digitrecognizer/negatives.py).
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSansCondensed.ttf ] || missing+=(fonts-dejavu-extra)
[ -d /usr/share/fonts/truetype/liberation ] || missing+=(fonts-liberation)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
    as_root=""
    [ "$(id -u)" = 0 ] || as_root=sudo
    $as_root apt-get update -qq
    $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
# torch is pinned (==2.13.0, CPU build) in the 'train' extra that 'dev' pulls in.
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"
exec .venv/bin/python -m pytest "$@"
