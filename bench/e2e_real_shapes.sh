#!/usr/bin/env bash
# End-to-end speed and memory at real model shapes: Llama-3.2-1B and Llama-2-7B, with random
# weights of the published shapes (`obr synth`; speed and memory only, never quality).
#
#   bench/e2e_real_shapes.sh            (from the repository root, after building obr and bench_kernels)
#
# 1. `obr synth --shape S -o out/synth/S` (bf16), unless it is there.
# 2. `obr compress out/synth/S -o out/synth/S-{dense,24,u50} --fast --no-clip-search` with no
#    sparsity, --nm 2:4 and --sparsity 0.5: the calibration-free streaming path, one layer in
#    memory at a time (the clip search only moves scales, not speed, so it is skipped here).
# 3. The machine's read bandwidth, measured now (bench_kernels' streaming-read probe).
# 4. `obr generate` on each model: a prompt of PROMPT_TOKENS tokens of data/text/eval.txt, then
#    NEW_TOKENS greedy tokens, REPS runs interleaved over the models, threads pinned. The FP32
#    engine runs only where its f32 weights fit in memory (1B: 5 GB; 7B: 27 GB does not).
# 5. A table (and $OUT/e2e-real-shapes.csv): prompt and decode tokens/s (medians), peak resident
#    memory, and next to decode the byte-bound ceiling = read bandwidth / bytes read per token
#    (the linears' weights as stored, the f32 lm_head, the KV cache at the prompt's length).
#
# Environment: BUILD (default build), OUT (default bench/results), SHAPES ("llama-3.2-1b
# llama-2-7b"), PROMPT_TOKENS (512), NEW_TOKENS (32), REPS (2), THREADS (OMP_NUM_THREADS or 2),
# SKIP_MISSING (1: measure only the compressed models already there instead of making them; a 7B
# takes ~15 minutes per format on 2 cores), SUMMARY_ONLY (1: no runs, only the table from the runs
# CSV already in $OUT, with the read bandwidth measured now).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
OBR=${OBR:-$BUILD/obr}
OUT=${OUT:-bench/results}
SHAPES=${SHAPES:-llama-3.2-1b llama-2-7b}
PROMPT_TOKENS=${PROMPT_TOKENS:-512}
NEW_TOKENS=${NEW_TOKENS:-32}
REPS=${REPS:-2}
THREADS=${THREADS:-${OMP_NUM_THREADS:-2}}
[ -x "$OBR" ] || { echo "e2e_real_shapes.sh: $OBR not found; build first" >&2; exit 1; }
[ -x "$BUILD/bench_kernels" ] || { echo "e2e_real_shapes.sh: $BUILD/bench_kernels not found (cmake -DOBR_ONEDNN=ON)" >&2; exit 1; }
[ -f data/text/eval.txt ] || data/fetch_text.sh
mkdir -p "$OUT" out/synth
export OMP_PLACES=cores OMP_PROC_BIND=close OMP_NUM_THREADS=$THREADS
if grep -qw avx512f /proc/cpuinfo; then export OPENBLAS_CORETYPE=${BENCH_OPENBLAS_CORETYPE:-SkylakeX}; fi

num() { grep -o "\"$2\": *[0-9]*" "$1" | head -1 | grep -o '[0-9]*$'; }  # an integer field of a JSON file

for s in $SHAPES; do
  [ -f "out/synth/$s/config.json" ] || "$OBR" synth --shape "$s" -o "out/synth/$s" >&2
  for v in "dense|" "24|--nm 2:4" "u50|--sparsity 0.5"; do
    n=${v%%|*}; a=${v#*|}
    [ -f "out/synth/$s-$n/obr.json" ] && continue
    [ -n "${SKIP_MISSING:-}" ] && { echo "e2e_real_shapes.sh: skipping $s-$n (not compressed; SKIP_MISSING set)" >&2; continue; }
    # shellcheck disable=SC2086
    "$OBR" compress "out/synth/$s" -o "out/synth/$s-$n" --fast $a --no-clip-search --overwrite >&2
  done
done

# The read probe over a 1 GB working set (what a decode step streams; smaller sets sit in the L3).
BW=$("$BUILD/bench_kernels" --phase decode --shape 4096x4096 --reps 3 --ws-gb 1 --no-seed --threads "$THREADS" 2>/dev/null |
     sed -n 's/^read bandwidth .*median \([0-9.]*\) GB\/s.*/\1/p' | head -1)
[ -n "$BW" ] || { echo "e2e_real_shapes.sh: no read bandwidth from bench_kernels" >&2; exit 1; }
avail_kb=$(awk '/MemAvailable/ { print $2 }' /proc/meminfo)
echo "e2e_real_shapes.sh: read bandwidth ${BW} GB/s ($THREADS threads, pinned); load:$(uptime | sed 's/.*load average://')" >&2

RUNS="$OUT/e2e-real-shapes-runs.csv"
[ -n "${SUMMARY_ONLY:-}" ] && REPS=0 || echo "run,shape,model,engine,prompt_tokens,prompt_tok_s,decode_tokens,decode_tok_s,peak_rss_mb,bytes_per_token" > "$RUNS"
for r in $(seq 1 "$REPS"); do  # (none with SUMMARY_ONLY)
  for s in $SHAPES; do
    cfg="out/synth/$s/config.json"
    H=$(num "$cfg" hidden_size); V=$(num "$cfg" vocab_size); L=$(num "$cfg" num_hidden_layers)
    I=$(num "$cfg" intermediate_size); NH=$(num "$cfg" num_attention_heads); NKV=$(num "$cfg" num_key_value_heads)
    HD=$(( H / NH )); KVD=$(( NKV * HD )); CTX=$(( PROMPT_TOKENS + NEW_TOKENS / 2 ))
    LIN=$(( L * (2 * H * NH * HD + 2 * H * KVD + 3 * H * I) ))  # linear weights
    specs=()
    fp32_bytes=$(( (LIN + V * H) * 4 ))
    if [ $(( fp32_bytes / 1024 + V * H * 4 / 1024 )) -lt $(( avail_kb * 8 / 10 )) ]; then
      specs+=("fp32-dense|out/synth/$s|")
    elif [ "$r" = 1 ]; then
      echo "  $s: FP32 engine skipped: its f32 weights ($(( fp32_bytes / 1000000000 )) GB + embeddings) do not fit in MemAvailable" >&2
    fi
    for n in dense 24 u50; do [ -f "out/synth/$s-$n/obr.json" ] && specs+=("int4-$n|out/synth/$s-$n|int4"); done
    for spec in "${specs[@]}"; do
      IFS='|' read -r name dir engine <<< "$spec"
      args=(); [ -n "$engine" ] && args=(--engine "$engine")
      if [ -z "$engine" ]; then
        bytes=$(( fp32_bytes + L * 2 * CTX * KVD * 4 ))
      else  # packed linears + f32 lm_head + the 4-bit KV cache (0.5 byte + 8 bytes per 64 values)
        bytes=$(( $(num "$dir/obr.json" linear_bytes) + V * H * 4 + L * 2 * CTX * KVD * 9 / 16 ))
      fi
      line=$("$OBR" generate "$dir" "${args[@]}" --prompt-file data/text/eval.txt --prompt-tokens "$PROMPT_TOKENS" \
             -n "$NEW_TOKENS" --threads "$THREADS" 2>&1 >/dev/null | grep '^prompt .* tok/s' | tail -1)
      [ -n "$line" ] || { echo "e2e_real_shapes.sh: no speed line from obr generate $dir" >&2; exit 1; }
      echo "$line" | awk -v r="$r" -v s="$s" -v m="$name" -v e="${engine:-fp32}" -v b="$bytes" '{
        printf "%d,%s,%s,%s,%d,%.3f,%d,%.3f,%.1f,%.0f\n", r, s, m, e, $2, $4, $8, $10, $14, b }' >> "$RUNS"
      echo "  run $r $s $name: $line" | cut -c1-150 >&2
    done
  done
done

SUMMARY="$OUT/e2e-real-shapes.csv"
awk -F, -v bw="$BW" 'NR > 1 { k = $2 "," $3; if (!(k in seen)) { seen[k] = 1; order[++n] = k }
    p[k, ++np[k]] = $6; d[k, ++nd[k]] = $8; m[k, ++nm[k]] = $9; by[k] = $10; pt[k] = $5 }
function med(arr, key, cnt,    i, j, t, v) {
  for (i = 1; i <= cnt; i++) v[i] = arr[key, i]
  for (i = 1; i <= cnt; i++) for (j = i + 1; j <= cnt; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
  return cnt % 2 ? v[(cnt + 1) / 2] : (v[cnt / 2] + v[cnt / 2 + 1]) / 2 }
END {
  print "shape,model,prompt_tokens,prompt_tok_s,decode_tok_s,decode_ceiling_tok_s,pct_of_ceiling,gb_per_token,peak_rss_mb,reps"
  for (i = 1; i <= n; i++) { k = order[i]; split(k, a, ",")
    md = med(d, k, nd[k]); ceil = bw * 1e9 / by[k]
    printf "%s,%s,%d,%.2f,%.3f,%.3f,%.0f,%.3f,%.0f,%d\n", a[1], a[2], pt[k], med(p, k, np[k]), md, ceil, 100 * md / ceil,
      by[k] / 1e9, med(m, k, nm[k]), nd[k] } }' "$RUNS" > "$SUMMARY"
column -s, -t < "$SUMMARY"
