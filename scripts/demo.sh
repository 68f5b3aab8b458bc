#!/usr/bin/env bash
# The main job on a real dataset: ingest -> (index, audit, ... as available) -> reports.
# Usage: scripts/demo.sh [DATA_DIR] [DB]
set -euo pipefail
DATA="${1:-../shared/data}"
DB="${2:-out/demo.duckdb}"
BIN="${BIN:-.venv/bin}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$(dirname "$DB")"
run() { echo "+ itaudit $*" >&2; "$BIN/itaudit" "$@" --db "$DB"; }

if [ -f "$DATA/alpaca/alpaca_5000.json" ]; then
  SRC="$DATA/alpaca/alpaca_5000.json"
else
  echo "($DATA not found: using the bundled sample)" >&2
  SRC="examples/sample_alpaca.jsonl"
fi
run ingest "$SRC" --name alpaca --skip-invalid
[ -f "$DATA/mt_bench/question.jsonl" ] && run ingest "$DATA/mt_bench/question.jsonl" --name mt_bench --format prompts
run datasets
run query --report rejected
