#!/usr/bin/env bash
# Quick start 2: install everything (system services included), lint and format-check the code (ruff),
# build the docs site with strict link checking, and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
MMSSR_SYSTEM_PACKAGES=1 bash scripts/install.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
bash scripts/docs.sh
exec .venv/bin/python -m pytest -q "$@"
