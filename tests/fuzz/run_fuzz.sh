#!/usr/bin/env bash
# Builds the libFuzzer harnesses (clang++, ASan + UBSan, coverage-instrumented obr_lib) in
# build-fuzz/ and runs each for SECONDS (default 60), one after another.
#
#   tests/fuzz/run_fuzz.sh [SECONDS] [TARGET...]     TARGET: npy safetensors config
#                                                    tokenizer_json tokenizer_encode (default: all)
# Environment: OBR_FUZZ_BUILD (build dir, default build-fuzz), JOBS (build jobs, default 2),
#              FUZZ_FLAGS (extra libFuzzer flags, e.g. "-jobs=4 -workers=4").
#
# The seeds are tests/fuzz/corpus/<target>/ (read only); new inputs go to
# $OBR_FUZZ_BUILD/corpus/<target>/ and crashes to $OBR_FUZZ_BUILD/artifacts/<target>/. Exits
# non-zero if any target found something. See tests/fuzz/README.md.
set -uo pipefail
cd "$(dirname "$0")/../.."

secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(npy safetensors config tokenizer_json tokenizer_encode)
build=${OBR_FUZZ_BUILD:-build-fuzz}

cmake -S . -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DOBR_FUZZ=ON -DOBR_SANITIZE=ON -DOBR_ONEDNN=OFF -DOBR_OPENMP=OFF -DOBR_SIMD=OFF >/dev/null || exit 1
cmake --build "$build" -j"${JOBS:-2}" --target $(printf 'fuzz_%s ' "${targets[@]}") || exit 1

max_len() {
  case $1 in
    tokenizer_json) echo 8192 ;;
    tokenizer_encode) echo 1024 ;;
    *) echo 4096 ;;
  esac
}

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
for t in "${targets[@]}"; do
  work="$build/corpus/$t" art="$build/artifacts/$t"
  mkdir -p "$work" "$art"
  # libFuzzer takes one dictionary: the JSON formats get JSON syntax + their keywords.
  dict=()
  case $t in
    npy) dict=(-dict=tests/fuzz/dict/npy.dict) ;;
    safetensors | config | tokenizer_json)
      cat tests/fuzz/dict/json.dict "tests/fuzz/dict/$t.dict" >"$build/$t.dict"
      dict=(-dict="$build/$t.dict") ;;
  esac
  echo "== fuzz_$t: ${secs} s =="
  # shellcheck disable=SC2086
  if ! "$build/fuzz_$t" "$work" "tests/fuzz/corpus/$t" "${dict[@]}" -max_total_time="$secs" -max_len="$(max_len "$t")" \
      -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$art/" -print_final_stats=1 ${FUZZ_FLAGS:-} 2>"$build/$t.log"; then
    status=1
    echo "fuzz_$t FOUND A PROBLEM: see $build/$t.log and $art/"
  fi
  grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb)|^#[0-9]+ *DONE" "$build/$t.log" || tail -5 "$build/$t.log"
done
exit $status
