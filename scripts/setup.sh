#!/usr/bin/env bash
# One-time set-up on a fresh clone: a virtualenv with jodo and its dev tools.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev,dlms,sim-dlms,cim]'
