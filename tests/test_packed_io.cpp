// The packed INT4 weights as stored in a model file (model/packed_io.h): every format survives
// a safetensors round trip byte for byte, and a damaged or inconsistent file is an error that
// names the tensor, never a read outside the buffers.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "core/rng.h"
#include "io/safetensors.h"
#include "model/packed_io.h"
#include "test_util.h"

using namespace obr;
using obr::testing::check_error;
using obr::testing::TempDir;
using simd::Int4Format;

namespace {

// Random codes in [-8, 7] with a keep mask of the format's pattern (2:4: two per group of 4 at
// random places; unstructured: ~50% random; dense: all kept).
struct Codes {
  std::vector<int8_t> q;
  std::vector<uint8_t> keep;
  std::vector<float> scale;
};

Codes random_codes(Int4Format f, int64_t n, int64_t k, uint64_t seed) {
  Rng r(seed);
  Codes c;
  c.q.resize(size_t(n * k));
  c.keep.assign(size_t(n * k), 1);
  c.scale.resize(size_t(n));
  for (auto& v : c.q) v = int8_t(int(r.below(16)) - 8);
  for (auto& s : c.scale) s = 0.01f + 0.001f * float(r.below(100));
  if (f == Int4Format::kUnstructured)
    for (auto& m : c.keep) m = uint8_t(r.below(2));
  if (f == Int4Format::kSparse24) {
    for (int64_t i = 0; i < n; ++i)
      for (int64_t g = 0; g < k; g += 4) {
        const int64_t len = std::min<int64_t>(4, k - g);
        for (int64_t j = 0; j < len; ++j) c.keep[size_t(i * k + g + j)] = 0;
        for (int kept = 0; kept < std::min<int64_t>(2, len);) {
          const int64_t j = int64_t(r.below(uint64_t(len)));
          if (!c.keep[size_t(i * k + g + j)]) c.keep[size_t(i * k + g + j)] = 1, ++kept;
        }
      }
  }
  return c;
}

simd::PackedWeights packed(Int4Format f, int64_t n, int64_t k, uint64_t seed) {
  Codes c = random_codes(f, n, k, seed);
  return simd::pack_int4(f, c.q.data(), c.scale.data(), n, k, c.keep.data());
}

// Writes w under "w" (plus any replaced tensor) and reads it back.
simd::PackedWeights roundtrip(const TempDir& dir, const simd::PackedWeights& w,
                              const std::vector<std::pair<std::string, Tensor>>& replace = {}) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  append_packed_tensors("w", w, tensors);
  for (const auto& [name, t] : replace) {
    bool found = false;
    for (auto& e : tensors)
      if (e.first == name) e.second = t, found = true;
    if (!found) tensors.push_back({name, t});
  }
  const std::string path = dir.file("w.safetensors");
  write_safetensors(path, tensors);
  return read_packed_tensors(TensorStore::open(path), path, "w", w.format, w.n_out, w.k_in);
}

Tensor copy_of(const Tensor& t) { return t.clone(); }

}  // namespace

TEST_CASE("packed io: every format round-trips through safetensors byte for byte (odd shapes)") {
  TempDir dir("obr_packed_io");
  for (Int4Format f : {Int4Format::kDense, Int4Format::kSparse24, Int4Format::kUnstructured}) {
    for (auto [n, k] : {std::pair<int64_t, int64_t>{1, 1}, {3, 5}, {17, 33}, {16, 64}, {40, 118}, {33, 152}}) {
      CAPTURE(simd::format_name(f));
      CAPTURE(n);
      CAPTURE(k);
      const simd::PackedWeights w = packed(f, n, k, uint64_t(n * 1000 + k));
      const simd::PackedWeights r = roundtrip(dir, w);
      REQUIRE(r.data.size() == w.data.size());
      CHECK(std::memcmp(r.data.data(), w.data.data(), w.data.size()) == 0);
      CHECK(r.scale == w.scale);
      CHECK(r.row_sum == w.row_sum);
      CHECK(r.masks == w.masks);
      CHECK(r.block_offset == w.block_offset);
      CHECK(r.bytes() == w.bytes());
      std::vector<int8_t> qa(size_t(n * k)), qb(size_t(n * k));
      simd::unpack_int4(w, qa.data());
      simd::unpack_int4(r, qb.data());
      CHECK(qa == qb);
    }
  }
}

TEST_CASE("packed io: a damaged packed weight is an error naming the tensor") {
  TempDir dir("obr_packed_io_bad");
  const simd::PackedWeights d = packed(Int4Format::kDense, 20, 24, 1);
  const simd::PackedWeights s = packed(Int4Format::kSparse24, 20, 40, 2);
  const simd::PackedWeights u = packed(Int4Format::kUnstructured, 20, 24, 3);
  auto u8 = [](size_t n) { return Tensor::zeros({int64_t(n)}, DType::U8); };

  // Code data of the wrong size (truncated, or one byte too many).
  check_error([&] { roundtrip(dir, d, {{"w.int4", u8(d.data.size() - 1)}}); }, {"'w'", "code data", "needs"});
  check_error([&] { roundtrip(dir, s, {{"w.int4", u8(s.data.size() + 1)}}); }, {"'w'", "2:4", "needs"});
  check_error([&] { roundtrip(dir, u, {{"w.int4", u8(u.data.size() - 64)}}); }, {"'w'", "tail"});
  // Missing or mistyped side tensors.
  {
    std::vector<std::pair<std::string, Tensor>> t;
    append_packed_tensors("w", d, t);
    t.erase(t.begin() + 2);  // row_sum
    write_safetensors(dir.file("m.safetensors"), t);
    check_error([&] { read_packed_tensors(TensorStore::open(dir.file("m.safetensors")), "m", "w", d.format, 20, 24); },
                {"missing tensor 'w.row_sum'"});
  }
  check_error([&] { roundtrip(dir, d, {{"w.scales", Tensor::zeros({20}, DType::F64)}}); }, {"'w.scales'", "F64", "F32"});
  check_error([&] { roundtrip(dir, d, {{"w.scales", Tensor::zeros({19})}}); }, {"19 scales for 20 rows"});
  // A scale that is not finite (NaN weights).
  {
    Tensor sc = Tensor::zeros({20});
    sc.data<float>()[7] = std::numeric_limits<float>::quiet_NaN();
    check_error([&] { roundtrip(dir, d, {{"w.scales", sc}}); }, {"scale of row 7"});
  }
  // A row sum that no codes can make.
  {
    Tensor rs = Tensor::zeros({32}, DType::I32);
    rs.data<int32_t>()[3] = 1000;
    check_error([&] { roundtrip(dir, d, {{"w.row_sum", rs}}); }, {"row sum 1000 of row 3"});
  }
  // Unstructured: offsets that disagree with the masks, a mask bit in the padding, an offset
  // table of the wrong length, and the whole thing read with the wrong logical shape.
  {
    std::vector<std::pair<std::string, Tensor>> t;
    append_packed_tensors("w", u, t);
    Tensor off;
    Tensor masks;
    for (auto& e : t) {
      if (e.first == "w.block_offset") off = copy_of(e.second);
      if (e.first == "w.masks") masks = copy_of(e.second);
    }
    off.data<int64_t>()[1] += 1;
    check_error([&] { roundtrip(dir, u, {{"w.block_offset", off}}); }, {"block 1 starts at byte"});
    // Row 20..31 are padding (n_out 20): set a bit of row 21 in block 1, chunk 0, half A.
    const int64_t nchunks = u.k_pad / 8;
    masks.data<int64_t>()[(1 * nchunks + 0) * 2] |= int64_t(1) << (4 * 5);
    check_error([&] { roundtrip(dir, u, {{"w.masks", masks}}); }, {"padding position [21, 0]"});
    check_error([&] { roundtrip(dir, u, {{"w.block_offset", Tensor::zeros({2}, DType::I64)}}); },
                {"block offset table"});
  }
  {
    std::vector<std::pair<std::string, Tensor>> t;
    append_packed_tensors("w", s, t);
    write_safetensors(dir.file("s.safetensors"), t);
    check_error([&] { read_packed_tensors(TensorStore::open(dir.file("s.safetensors")), "s", "w", s.format, 20, 72); },
                {"'w'", "needs"});
  }
  CHECK_THROWS_AS(parse_int4_format("4:8"), Error);
  CHECK(parse_int4_format("2:4") == Int4Format::kSparse24);
}
