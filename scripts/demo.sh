#!/usr/bin/env bash
# The main job on a real dataset: ingest -> audit -> filter -> report, then a small token-shift
# and trace run with the two real small models. Usage: scripts/demo.sh [DATA_DIR] [DB]
set -euo pipefail
DATA="${1:-../shared/data}"
DB="${2:-out/demo.duckdb}"
BIN="${BIN:-.venv/bin}"
OUT="$(dirname "$DB")"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export ITAUDIT_DB="$DB" ITAUDIT_INDEX_DIR="${ITAUDIT_INDEX_DIR:-$OUT/indexes}"
mkdir -p "$OUT"
run() { echo "+ itaudit $*" >&2; "$BIN/itaudit" "$@"; }

if [ -f "$DATA/alpaca/alpaca_5000.json" ]; then
  SRC="$DATA/alpaca/alpaca_5000.json"
  EVAL="$DATA/mt_bench/question.jsonl,$DATA/gsm8k/test.jsonl"
  PROMPTS="$DATA/mt_bench/question.jsonl"
else
  echo "($DATA not found: using the bundled sample)" >&2
  SRC="examples/sample_alpaca.jsonl"
  EVAL="examples/sample_eval.jsonl"
  PROMPTS="examples/sample_eval.jsonl"
fi

# 1. ingest -> 2. audit -> 3. filter -> 4. report
run ingest "$SRC" --name alpaca --skip-invalid
run audit alpaca -c exact_duplicates,duplicate_instructions,near_duplicates,conflicting_neighbors,style,verifier,contamination,risk \
    -s "contamination.against=$EVAL"
run filter alpaca --policy default --out "$OUT/alpaca_clean.jsonl"
run report alpaca --html "$OUT/alpaca_report.html"

# Token distribution shift (SmolLM2-135M-Instruct answers, Gemma-3-270M base ranks) and tracing
# of candidate spans back to the dataset, on a few prompts (first run dequantizes both models).
if [ "${DEMO_MODELS:-1}" = "1" ]; then
  run shift --base gemma3-270m --tuned smollm2 --prompts "$PROMPTS" --limit "${DEMO_PROMPTS:-4}" \
      --max-new-tokens 48 --reference alpaca --run-id demo-shift
  run query --report shift_categories
  run trace --dataset alpaca --shift-run demo-shift
  run query --report trace_traced_share
fi
run query --report checks
echo "done: database $DB, report $OUT/alpaca_report.html, export $OUT/alpaca_clean.jsonl" >&2
