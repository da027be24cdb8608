#!/usr/bin/env bash
# End-to-end speed and memory of the `small` model (data/models/small): FP32 dense vs the
# packed OBR W4A4KV4 model with 2:4 and with unstructured 50% sparsity, on the integer engine.
#
#   bench/e2e_small.sh            (from the repository root, after building obr)
#
# 1. Compresses the model twice with OBR-GPTQ (8 calibration windows of 512 tokens), unless the
#    output directories already exist (FORCE=1 redoes them):
#      obr compress data/models/small -o out/bench-small-obr-24  --method obr-gptq --nm 2:4 ...
#      obr compress data/models/small -o out/bench-small-obr-u50 --method obr-gptq --sparsity 0.5 ...
# 2. Runs `obr generate` (greedy) on the same prompt, REPS times per model, interleaved
#    (FP32, 2:4, unstructured, FP32, ...), one process per run, threads pinned. Each run prints
#    prompt tokens/s (one forward pass over the whole prompt), decode tokens/s (one token per
#    step, sampling and detokenization included) and the process's peak resident memory.
# 3. Writes every run to $OUT/e2e-small-runs.csv and the medians (and best) per model, with the
#    ratios to FP32, to $OUT/e2e-small.csv, and prints the table.
#
# Environment: BUILD (build dir holding obr, default build), OUT (default bench/results), REPS (5),
# NEW_TOKENS (128), PROMPT_CHARS (1000: ~250 prompt tokens), THREADS (OMP_NUM_THREADS or 2), NSAMPLES (8),
# FORCE.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${BUILD:-build}
OBR=${OBR:-$BUILD/obr}
OUT=${OUT:-bench/results}
REPS=${REPS:-5}
NEW_TOKENS=${NEW_TOKENS:-128}
PROMPT_CHARS=${PROMPT_CHARS:-1000}
THREADS=${THREADS:-${OMP_NUM_THREADS:-2}}
NSAMPLES=${NSAMPLES:-8}
MODEL=data/models/small
M24=out/bench-small-obr-24
MU50=out/bench-small-obr-u50

[ -x "$OBR" ] || { echo "e2e_small.sh: $OBR not found; build first (make build, or BUILD=dir)" >&2; exit 1; }
[ -f data/text/calib.txt ] || data/fetch_text.sh
mkdir -p "$OUT" out
export OMP_PLACES=cores OMP_PROC_BIND=close
# The FP32 baseline runs OpenBLAS at its best: Debian's OpenBLAS takes an AVX-512 Zen for Haswell
# (half the SGEMM speed), and some environments export OPENBLAS_CORETYPE=Haswell, so on AVX-512
# CPUs SkylakeX is forced (BENCH_OPENBLAS_CORETYPE=... to choose another).
if grep -qw avx512f /proc/cpuinfo; then export OPENBLAS_CORETYPE=${BENCH_OPENBLAS_CORETYPE:-SkylakeX}; fi

compress() {  # compress OUTDIR SPARSITY-ARGS...
  local dir=$1; shift
  if [ -f "$dir/obr.json" ] && [ -z "${FORCE:-}" ]; then
    echo "e2e_small.sh: reusing $dir (FORCE=1 to recompress)" >&2
    return
  fi
  "$OBR" compress "$MODEL" -o "$dir" --method obr-gptq "$@" --calib data/text/calib.txt \
    --nsamples "$NSAMPLES" --overwrite >&2
}
compress "$M24" --nm 2:4
compress "$MU50" --sparsity 0.5

# The prompt: whole words of the held-out text, about PROMPT_CHARS characters.
PROMPT=$(tr '\n' ' ' < data/text/eval.txt | tr -s ' ' | awk -v n="$PROMPT_CHARS" '{
  s = ""; for (i = 1; i <= NF && length(s) + length($i) < n; i++) s = s (i > 1 ? " " : "") $i; print s }')

RUNS="$OUT/e2e-small-runs.csv"
echo "run,model,engine,prompt_tokens,prompt_tok_s,decode_tokens,decode_tok_s,peak_rss_mb" > "$RUNS"
echo "e2e_small.sh: uptime:$(uptime | sed 's/.*load average/ load average/'); threads $THREADS ($OMP_PLACES/$OMP_PROC_BIND), OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}, $REPS reps x 3 models, $NEW_TOKENS new tokens" >&2
for r in $(seq 1 "$REPS"); do
  for spec in "fp32-dense|$MODEL|" "obr-2:4|$M24|int4" "obr-unstr50|$MU50|int4"; do
    IFS='|' read -r name dir engine <<< "$spec"
    args=()
    [ -n "$engine" ] && args=(--engine "$engine")
    line=$("$OBR" generate "$dir" "${args[@]}" --prompt "$PROMPT" -n "$NEW_TOKENS" --threads "$THREADS" 2>&1 >/dev/null |
           grep '^prompt .* tok/s' | tail -1)
    [ -n "$line" ] || { echo "e2e_small.sh: no speed line from obr generate $dir" >&2; exit 1; }
    # "prompt 251 tokens 1234.5 tok/s | decode 128 tokens 456.7 tok/s | peak_rss_mb 89.1 | ..."
    echo "$line" | awk -v r="$r" -v m="$name" -v e="${engine:-fp32}" '{
      printf "%d,%s,%s,%d,%.2f,%d,%.2f,%.1f\n", r, m, e, $2, $4, $8, $10, $14 }' >> "$RUNS"
    echo "  run $r $name: $line" | cut -c1-160 >&2
  done
done

# Medians (and best) per model, ratios of medians to FP32.
SUMMARY="$OUT/e2e-small.csv"
awk -F, 'NR > 1 { key[$2] = 1; p[$2, ++np[$2]] = $5; d[$2, ++nd[$2]] = $7; m[$2, ++nm[$2]] = $8; pt[$2] = $4; dt[$2] = $6 }
function med(arr, name, n,    i, j, t, v) {
  for (i = 1; i <= n; i++) v[i] = arr[name, i]
  for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
  return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
}
function best(arr, name, n,    i, b) { b = arr[name, 1]; for (i = 2; i <= n; i++) if (arr[name, i] > b) b = arr[name, i]; return b }
END {
  order[1] = "fp32-dense"; order[2] = "obr-2:4"; order[3] = "obr-unstr50"
  print "model,prompt_tokens,prompt_tok_s_median,prompt_tok_s_best,prompt_vs_fp32,decode_tokens,decode_tok_s_median,decode_tok_s_best,decode_vs_fp32,peak_rss_mb_median,reps"
  pf = med(p, order[1], np[order[1]]); df = med(d, order[1], nd[order[1]])
  for (k = 1; k <= 3; k++) {
    n = order[k]; if (!(n in key)) continue
    mp = med(p, n, np[n]); md = med(d, n, nd[n])
    printf "%s,%d,%.1f,%.1f,%.2f,%d,%.1f,%.1f,%.2f,%.1f,%d\n", n, pt[n], mp, best(p, n, np[n]), mp / pf, dt[n], md,
      best(d, n, nd[n]), md / df, med(m, n, nm[n]), np[n]
  }
}' "$RUNS" > "$SUMMARY"
column -s, -t < "$SUMMARY"
awk -F, '$1 == "obr-2:4" { printf "target: packed 2:4 decode >= 5x FP32 tokens/s: %.2fx (%s)\n", $9, ($9 >= 5 ? "met" : "MISSED") }' "$SUMMARY"
