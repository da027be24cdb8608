#!/usr/bin/env bash
# PNG charts of the benchmark ratios, from the CSV files in bench/results (or $OUT):
#   kernels*.csv   -> kernels*-vs-fp32.png  speed of each method over OpenBLAS FP32 (log scale),
#                                            decode (T = 1) and prefill groups side by side
#   e2e-small*.csv -> e2e-small*.png        prompt and decode tokens/s of the small model over FP32
#   layer-*.csv   -> layer-share.png      online Hadamards / act quant / KV quant, % of the layer
# Needs gnuplot (Debian: gnuplot-nox). When it is missing and we are root, it is installed with
# apt-get; otherwise the script says so and makes no charts (the CSV files are the results).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results}

if ! command -v gnuplot > /dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
    echo "plot.sh: installing gnuplot-nox for the charts" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q gnuplot-nox > /dev/null || true
  fi
fi
if ! command -v gnuplot > /dev/null; then
  echo "plot.sh: gnuplot is MISSING: no PNG charts made (apt-get install gnuplot-nox); the CSV files in $OUT are complete" >&2
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# ---- kernels: one row per (phase, shape), one column per method, value = vs_fp32
for kcsv in "$OUT"/kernels*.csv; do
  [ -f "$kcsv" ] || continue
  kpng=${kcsv%.csv}-vs-fp32.png
  awk -F, 'NR > 1 && $3 !~ /probe/ {
      g = $1 " " $2; sub(/ \(seed\)/, "", g); sub(/prefill T=65536/, "seed T=65536", g)
      m = $3; sub(/ sgemv| sgemm/, "", m)
      if (!(g in seen)) { seen[g] = 1; if (g ~ /^decode/) dec[++nd] = g; else pre[++np] = g }
      v[g, m] = $10; if (!(m in mseen)) { mseen[m] = 1; morder[++nm] = m } }
    END {
      for (i = 1; i <= nd; i++) order[++ng] = dec[i]
      for (i = 1; i <= np; i++) order[++ng] = pre[i]
      printf "group"; for (j = 1; j <= nm; j++) printf "\t\"%s\"", morder[j]; printf "\n"
      for (i = 1; i <= ng; i++) { printf "\"%s\"", order[i]; for (j = 1; j <= nm; j++) printf "\t%s", v[order[i], morder[j]]; printf "\n" }
    }' "$kcsv" > "$tmp/kernels.dat"
  ncol=$(head -1 "$tmp/kernels.dat" | awk -F'\t' '{ print NF }')
  info=$(awk -F, 'NR == 2 { printf "%s threads, SIMD target %s", $4, $5 }' "$kcsv")
  gnuplot <<EOF
set terminal pngcairo size 1400,600 font "sans,10" noenhanced
set output "$kpng"
set title "Speed over OpenBLAS FP32 (ratio of median times, same run; $info)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set logscale y 2
set yrange [0.5:*]
set ylabel "x OpenBLAS FP32 (log scale)"
set grid ytics
set key top left
set xtics rotate by -20 scale 0
set datafile separator "\t"
plot for [c=2:$ncol] "$tmp/kernels.dat" using c:xtic(1) title columnheader(c)
EOF
  echo "plot.sh: wrote $kpng" >&2
done

# ---- end to end (e2e-small.csv, e2e-small-1t.csv, ...; not the per-run files)
for ecsv in "$OUT"/e2e-small*.csv; do
  [ -f "$ecsv" ] || continue
  case "$ecsv" in *runs*) continue ;; esac
  epng=${ecsv%.csv}.png
  awk -F, 'NR > 1 { printf "\"%s\"\t%s\t%s\n", $1, $5, $9 }' "$ecsv" > "$tmp/e2e.dat"
  gnuplot <<EOF
set terminal pngcairo size 800,500 font "sans,10" noenhanced
set output "$epng"
set title "small model end to end: tokens/s over the FP32 engine (medians; $(basename "$ecsv"))"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set ylabel "x FP32"
set yrange [0:*]
set grid ytics
set key top left
set datafile separator "\t"
plot "$tmp/e2e.dat" using 2:xtic(1) title "prompt", "" using 3 title "decode"
EOF
  echo "plot.sh: wrote $epng" >&2
done

# ---- online transforms as a share of a decoder layer (decode)
set -- "$OUT"/layer-*.csv
if [ -f "$1" ]; then
  for f in "$@"; do
    awk -F, 'NR > 1 && $6 == "Hadamards + act quant" { printf "\"%s %s %s thr\"\t%s\n", $1, $5, $3, $10 }' "$f"
  done > "$tmp/layer.dat"
  gnuplot <<EOF
set terminal pngcairo size 800,500 font "sans,10" noenhanced
set output "$OUT/layer-share.png"
set title "Online Hadamards + activation quantization, % of a decoder layer (decode, T = 1)"
set rmargin 10
set style data histograms
set style fill solid 0.85 border -1
set ylabel "% of the layer's time"
set yrange [0:*]
set grid ytics
set xtics rotate by -20 scale 0
set arrow from graph 0, first 10 to graph 1, first 10 nohead dt 2 lc rgb "red"
set label "target < 10%" at graph 0.02, first 10.5 tc rgb "red"
set datafile separator "\t"
plot "$tmp/layer.dat" using 2:xtic(1) notitle
EOF
  echo "plot.sh: wrote $OUT/layer-share.png" >&2
fi
