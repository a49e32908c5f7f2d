#!/usr/bin/env bash
# Install mmssr into ./.venv (idempotent). Used by both Quick-start commands and by CI.
#   MMSSR_EXTRAS: pip extras to install (default "hf,dev").
#   MMSSR_SYSTEM_PACKAGES=1: also apt-get the system services the full test suite uses
#   (chromium for the UI test, postgresql and redis-server for the integration tests).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${MMSSR_SYSTEM_PACKAGES:-0}" = "1" ]; then
  need=()
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  [ -x /usr/lib/postgresql/*/bin/initdb ] 2>/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  if [ ${#need[@]} -gt 0 ]; then
    echo "[install] apt-get install ${need[*]}" >&2
    SUDO=""; [ "$(id -u)" = "0" ] || SUDO="sudo"
    $SUDO apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need[@]}" >/dev/null
  fi
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[install] creating .venv" >&2
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | { grep -v "is ignored" || true; }
extras="${MMSSR_EXTRAS-hf,dev}"
echo "[install] pip install -e .[$extras]" >&2
# torch is pinned here (not in pyproject) so the `vllm` extra stays free to bring its own torch.
if [[ "$extras" == *hf* ]]; then
  .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1" 2>&1 | { grep -v "is ignored" || true; }
fi
target="."; [ -n "$extras" ] && target=".[$extras]"
.venv/bin/python -m pip install -q -e "$target" 2>&1 | { grep -v "is ignored" || true; }
.venv/bin/python -c "import mmssr_core, mmssr_assets" 

# LLaMA-Factory in its own environment (it pins transformers 5.6, ours is newer): the export tests load
# every export with its parser, loader and converter. With the dev extra only; MMSSR_LLAMAFACTORY=0 skips.
# About 2 minutes on a fresh machine (torch comes from local files, the rest from PyPI).
LF_VERSION=0.9.5
if [[ "$extras" == *dev* ]] && [ "${MMSSR_LLAMAFACTORY:-1}" = "1" ]; then
  if ! .venv-llamafactory/bin/python -c "import importlib.metadata as m; assert m.version('llamafactory') == '$LF_VERSION'" 2>/dev/null; then
    echo "[install] LLaMA-Factory $LF_VERSION into .venv-llamafactory" >&2
    [ -x .venv-llamafactory/bin/python ] || "$PY" -m venv .venv-llamafactory
    .venv-llamafactory/bin/python -m pip install -q --upgrade pip 2>&1 | { grep -v "is ignored" || true; }
    .venv-llamafactory/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1" 2>&1 | { grep -v "is ignored" || true; }
    .venv-llamafactory/bin/python -m pip install -q "llamafactory==$LF_VERSION" 2>&1 | { grep -v "is ignored" || true; }
  fi
fi
echo "[install] done" >&2
