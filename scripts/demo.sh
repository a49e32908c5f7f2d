#!/usr/bin/env bash
# Quick start 1: install, then materialize the whole graph on the bundled demo sources.
set -euo pipefail
cd "$(dirname "$0")/.."
MMSSR_EXTRAS="${MMSSR_EXTRAS-}" bash scripts/install.sh
export MMSSR_STORE="${MMSSR_STORE:-$PWD/store}"
export MMSSR_SOURCES_ROOT="${MMSSR_SOURCES_ROOT:-$PWD/examples/sources}"
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/.dagster_home}"
mkdir -p "$DAGSTER_HOME"
[ -f "$DAGSTER_HOME/dagster.yaml" ] || cp dagster.yaml "$DAGSTER_HOME/dagster.yaml"
exec .venv/bin/mmssr materialize "$@"
