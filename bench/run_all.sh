#!/usr/bin/env bash
# All speed benchmarks in one go (`make bench` runs this): kernels, the online transforms'
# share of a decoder layer, the small model end to end, then the charts. See bench/README.md.
#
#   bench/run_all.sh                 results in out/bench/ (OUT=bench/results to refresh the committed ones)
#
# Environment: BUILD (default build; needs bench_kernels, bench_layer and obr, i.e. a build with
# -DOBR_ONEDNN=ON), OUT, and whatever e2e_small.sh reads (REPS, NEW_TOKENS, ...).
# Threads: all cores (OMP_NUM_THREADS to change), pinned one per core.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
OUT=${OUT:-out/bench}
mkdir -p "$OUT"
for b in bench_kernels bench_layer obr; do
  [ -x "$BUILD/$b" ] || { echo "run_all.sh: $BUILD/$b missing (cmake -DOBR_ONEDNN=ON, then build)" >&2; exit 1; }
done
export OMP_PLACES=cores OMP_PROC_BIND=close
# The FP32 baseline runs OpenBLAS at its best: Debian's OpenBLAS takes an AVX-512 Zen for Haswell
# (half the SGEMM speed), and some environments export OPENBLAS_CORETYPE=Haswell, so on AVX-512
# CPUs SkylakeX is forced (BENCH_OPENBLAS_CORETYPE=... to choose another).
if grep -qw avx512f /proc/cpuinfo; then export OPENBLAS_CORETYPE=${BENCH_OPENBLAS_CORETYPE:-SkylakeX}; fi

{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores"
  echo "load before: $(uptime | sed 's/.*load average: //')"
} | tee "$OUT/machine.txt"

"$BUILD/bench_kernels" --csv "$OUT/kernels.csv" | tee "$OUT/kernels.txt"
"$BUILD/bench_layer" --model llama7b --csv "$OUT/layer-llama7b.csv" | tee "$OUT/layer-llama7b.txt"
"$BUILD/bench_layer" --model small --csv "$OUT/layer-small.csv" | tee "$OUT/layer-small.txt"
BUILD="$BUILD" OUT="$OUT" bench/e2e_small.sh | tee "$OUT/e2e-small.txt"
echo "load after: $(uptime | sed 's/.*load average: //')" | tee -a "$OUT/machine.txt"
OUT="$OUT" bench/plot.sh
