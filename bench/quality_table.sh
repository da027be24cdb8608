#!/usr/bin/env bash
# The quality table of the README: perplexity of one model under every method, at W4A4KV4,
# dense / 50% unstructured / 2:4, with and without QuaRot rotation, plus compression wall time.
#
#   bench/quality_table.sh [MODEL] [OUTDIR]        e.g. bench/quality_table.sh data/models/small
#
# Environment: OBR (binary, default build/obr), EVAL_WINDOWS (0 = whole eval text),
# NSAMPLES (calibration windows, default 32), THREADS (default 2).
# Writes OUTDIR/quality.csv and OUTDIR/quality.md; each run's log is kept in OUTDIR/logs/.
set -euo pipefail
MODEL=${1:-data/models/tiny}
OUT=${2:-out/quality-$(basename "$MODEL")}
OBR=${OBR:-build/obr}
EVAL_WINDOWS=${EVAL_WINDOWS:-0}
NSAMPLES=${NSAMPLES:-32}
THREADS=${THREADS:-2}
EVAL=data/text/eval.txt
CALIB=data/text/calib.txt
mkdir -p "$OUT/logs"
csv="$OUT/quality.csv"
echo "model,method,sparsity,rotation,perplexity,compress_seconds" > "$csv.tmp"

ppl_of() { sed -n 's/^perplexity \([0-9.]*\) .*/\1/p' "$1" | tail -1; }
secs_of() { sed -n 's/^compressed .* seconds \([0-9.]*\) .*/\1/p' "$1" | tail -1; }

log="$OUT/logs/fp.log"
"$OBR" perplexity "$MODEL" --text "$EVAL" --max-windows "$EVAL_WINDOWS" --threads "$THREADS" > "$log" 2>&1
echo "$(basename "$MODEL"),fp16-dense,0,-,$(ppl_of "$log"),0" >> "$csv.tmp"

run() {  # method sparsity-label rotation-flag extra-args...
  local method=$1 label=$2 rot=$3; shift 3
  local name="$method-$label-$rot"
  local log="$OUT/logs/$name.log"
  local rflag=--rotate; [ "$rot" = "norot" ] && rflag=--no-rotate
  echo "== $name" >&2
  "$OBR" compress "$MODEL" -o "$OUT/models/$name" --method "$method" "$@" $rflag --nsamples "$NSAMPLES" \
    --calib "$CALIB" --eval "$EVAL" --eval-windows "$EVAL_WINDOWS" --threads "$THREADS" --overwrite > "$log" 2>&1
  echo "$(basename "$MODEL"),$method,$label,$rot,$(ppl_of "$log"),$(secs_of "$log")" >> "$csv.tmp"
  rm -rf "$OUT/models/$name"
}

for rot in rot norot; do
  run rtn dense $rot --sparsity 0
  run gptq dense $rot --sparsity 0
  for sp in "50pct|--sparsity 0.5" "2of4|--nm 2:4"; do
    label=${sp%%|*}; args=${sp#*|}
    for method in wanda-gptq sparsegpt-gptq obr-rtn obr-gptq; do
      run $method "$label" $rot $args
    done
  done
done
mv "$csv.tmp" "$csv"

{
  echo "| method | sparsity | rotation | perplexity | compress s |"
  echo "|---|---|---|---|---|"
  tail -n +2 "$csv" | awk -F, '{printf "| %s | %s | %s | %s | %s |\n", $2, $3, $4, $5, $6}'
} > "$OUT/quality.md"
cat "$OUT/quality.md"
