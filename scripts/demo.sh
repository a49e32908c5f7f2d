#!/usr/bin/env bash
# Quick start 1: install, materialize the whole graph on the bundled demo sources, then export the 10%
# subset as a training folder and print the command that fine-tunes on it with LLaMA-Factory.
set -euo pipefail
cd "$(dirname "$0")/.."
MMSSR_EXTRAS="${MMSSR_EXTRAS-}" bash scripts/install.sh
export MMSSR_STORE="${MMSSR_STORE:-$PWD/store}"
export MMSSR_SOURCES_ROOT="${MMSSR_SOURCES_ROOT:-$PWD/examples/sources}"
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/.dagster_home}"
mkdir -p "$DAGSTER_HOME"
[ -f "$DAGSTER_HOME/dagster.yaml" ] || cp .dagster_home/dagster.yaml "$DAGSTER_HOME/dagster.yaml"
.venv/bin/mmssr materialize "$@"

recipe=mmssr_10pct
export_dir="${MMSSR_EXPORT_DIR:-$PWD/exports/$recipe}"
.venv/bin/mmssr export --selection "$MMSSR_STORE/selections/$recipe.parquet" --store "$MMSSR_STORE" \
  --format llava --to "$export_dir" --name "$recipe"
echo
echo "training file (LLaVA; LLaMA-Factory reads $recipe.llamafactory.json through dataset_info.json):"
echo "  $export_dir/$recipe.json"
.venv/bin/python - "$export_dir/$recipe.json" <<'PY'
import json, sys
records = json.load(open(sys.argv[1]))
print(f"  {len(records)} samples, {len({r['id'] for r in records})} distinct ids; the first one:")
print("  " + json.dumps(records[0], ensure_ascii=False)[:400])
PY
echo
echo "fine-tune on it with LLaMA-Factory (GPU; pip install llamafactory==0.9.5):"
if [ "$export_dir" = "$PWD/exports/$recipe" ]; then
  echo "  llamafactory-cli train examples/llamafactory/mmssr_10pct_qwen2vl_lora_sft.yaml"
else
  echo "  llamafactory-cli train examples/llamafactory/mmssr_10pct_qwen2vl_lora_sft.yaml dataset_dir=$export_dir"
fi
