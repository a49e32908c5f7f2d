#!/usr/bin/env bash
# Build the documentation site (docs/ + mkdocs.yml) with strict link and anchor checking.
#   bash scripts/docs.sh            build into a temporary folder and delete it (what scripts/test.sh runs)
#   bash scripts/docs.sh DIR        build into DIR (open DIR/index.html)
#   bash scripts/docs.sh serve      preview on http://127.0.0.1:8000 while you edit
set -euo pipefail
cd "$(dirname "$0")/.."
MKDOCS=.venv/bin/mkdocs
[ -x "$MKDOCS" ] || MKDOCS=mkdocs
if [ "${1:-}" = "serve" ]; then
  exec "$MKDOCS" serve --strict -a 127.0.0.1:8000
fi
if [ -n "${1:-}" ]; then
  exec "$MKDOCS" build --strict --quiet -d "$(realpath -m "$1")"
fi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
"$MKDOCS" build --strict --quiet -d "$out"
echo "[docs] site builds (strict: links and anchors checked)" >&2
