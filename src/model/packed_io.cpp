#include "model/packed_io.h"

#include <cstring>

#include "core/check.h"

namespace obr {

simd::Int4Format parse_int4_format(const std::string& name) {
  for (auto f : {simd::Int4Format::kDense, simd::Int4Format::kSparse24, simd::Int4Format::kUnstructured})
    if (name == simd::format_name(f)) return f;
  fail("unknown INT4 format '", name, "' (valid: dense, 2:4, unstructured)");
}

void append_packed_tensors(const std::string& base, const simd::PackedWeights& w,
                           std::vector<std::pair<std::string, Tensor>>& out) {
  Shape data_shape{int64_t(w.data.size())};
  if (w.format != simd::Int4Format::kUnstructured) data_shape = {w.n_blocks(), int64_t(w.data.size()) / w.n_blocks()};
  out.push_back({base + ".int4", Tensor::view(w.data.data(), data_shape, DType::U8, nullptr)});
  out.push_back({base + ".scales", Tensor::view(w.scale.data(), {w.n_out}, DType::F32, nullptr)});
  out.push_back({base + ".row_sum", Tensor::view(w.row_sum.data(), {w.n_pad}, DType::I32, nullptr)});
  if (w.format == simd::Int4Format::kUnstructured) {
    out.push_back({base + ".masks", Tensor::view(w.masks.data(), {w.n_blocks(), w.k_pad / 8, 2}, DType::I64, nullptr)});
    out.push_back(
        {base + ".block_offset", Tensor::view(w.block_offset.data(), {w.n_blocks() + 1}, DType::I64, nullptr)});
  }
}

simd::PackedWeights read_packed_tensors(const TensorStore& st, const std::string& file, const std::string& base,
                                        simd::Int4Format format, int64_t n_out, int64_t k_in) {
  simd::PackedWeights w;
  w.format = format;
  w.n_out = n_out;
  w.k_in = k_in;
  simd::padded_shape(format, n_out, k_in, &w.n_pad, &w.k_pad);
  auto get = [&](const std::string& suffix, DType dt) {
    const std::string name = base + suffix;
    OBR_CHECK(st.has(name), file, ": missing tensor '", name, "' (a packed ", simd::format_name(format),
              " weight needs it)");
    Tensor t = st.get(name);
    OBR_CHECK(t.dtype() == dt, file, ": tensor '", name, "' is ", dtype_name(t.dtype()), ", expected ",
              dtype_name(dt));
    return t;
  };
  const Tensor data = get(".int4", DType::U8);
  w.data.grow(data.nbytes());  // no zero fill: every byte is copied next
  if (data.nbytes()) std::memcpy(w.data.data(), data.raw(), data.nbytes());
  const Tensor scales = get(".scales", DType::F32);
  w.scale.assign(scales.data<float>(), scales.data<float>() + scales.numel());
  const Tensor row_sum = get(".row_sum", DType::I32);
  w.row_sum.assign(row_sum.data<int32_t>(), row_sum.data<int32_t>() + row_sum.numel());
  if (format == simd::Int4Format::kUnstructured) {
    const Tensor masks = get(".masks", DType::I64);
    w.masks.resize(size_t(masks.numel()));
    if (masks.nbytes()) std::memcpy(w.masks.data(), masks.raw(), masks.nbytes());
    const Tensor offsets = get(".block_offset", DType::I64);
    w.block_offset.assign(offsets.data<int64_t>(), offsets.data<int64_t>() + offsets.numel());
  }
  simd::validate_packed(w, file + ": tensor '" + base + "'");
  // Everything was copied: the file's pages need not stay resident (a 7B model's packed
  // weights would otherwise count twice in the resident memory).
  for (const char* suffix : {".int4", ".scales", ".row_sum", ".masks", ".block_offset"})
    if (st.has(base + suffix)) st.drop_pages(base + suffix);
  return w;
}

}  // namespace obr
