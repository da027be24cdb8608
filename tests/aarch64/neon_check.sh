#!/usr/bin/env bash
# The SIMD kernel tests on aarch64 (NEON), cross-compiled and run under qemu-user: every kernel
# must give the scalar reference's bits there too. Two builds: with the dot-product extension
# (vdotq_s32) and plain ARMv8-A (the widen-and-multiply path). Correctness only, never timing.
#
#   tests/aarch64/neon_check.sh            (from the repository root; installs the two Debian
#                                           packages it needs when run as root and they are missing)
# Environment: NEON_TESTS (doctest filter, default 'kernel*,kv4*': the INT4 matmul and activation
# quantization kernels, the packed formats, and the KV4 cache kernels).
set -euo pipefail
cd "$(dirname "$0")/../.."
TESTS=${NEON_TESTS:-kernel*,kv4*}
need=()
command -v aarch64-linux-gnu-g++ >/dev/null || need+=(g++-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "neon_check: missing ${need[*]} (apt-get install ${need[*]})" >&2
    exit 1
  fi
fi
[ -d /usr/include/hwy ] || { echo "neon_check: Highway headers missing (apt-get install libhwy-dev)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Only Highway's headers: the rest of /usr/include is x86's.
mkdir -p "$work/include" && cp -r /usr/include/hwy "$work/include/"
# The kernels, their tests, and the little of src/ those tests use (the KV quantizer they are
# compared with, the tensor type; no BLAS).
srcs=(simd/*.cc src/compress/quantizer.cpp src/core/tensor.cpp src/core/log.cpp tests/test_kernels.cpp
      tests/test_kv4_kernels.cpp tests/main.cpp tests/aarch64/hwy_stub.cc)
status=0
for march in armv8.2-a+dotprod armv8-a; do
  echo "== aarch64 -march=$march: building" >&2
  aarch64-linux-gnu-g++ -std=c++17 -O2 -fopenmp -march=$march -DOBR_WITH_HWY=1 -I"$work/include" -I. -Isrc \
    "${srcs[@]}" -static -o "$work/tests-$march"
  echo "== aarch64 -march=$march: running under qemu" >&2
  if ! OMP_NUM_THREADS=2 qemu-aarch64 -cpu max "$work/tests-$march" -tc="$TESTS"; then status=1; fi
done
exit $status
