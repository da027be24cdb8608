#include "core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <sstream>

#include "core/half.h"

namespace obr {

size_t dtype_size(DType dt) {
  switch (dt) {
    case DType::F32: return 4;
    case DType::F64: return 8;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::I8: return 1;
    case DType::U8: return 1;
    case DType::I32: return 4;
    case DType::I64: return 8;
  }
  fail("unknown dtype ", int(dt));
}

const char* dtype_name(DType dt) {
  switch (dt) {
    case DType::F32: return "F32";
    case DType::F64: return "F64";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
  }
  return "?";
}

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << ']';
  return os.str();
}

static Shape contiguous_strides(const Shape& shape) {
  Shape st(shape.size());
  int64_t acc = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    st[i] = acc;
    acc *= shape[i];
  }
  return st;
}

static int64_t checked_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    OBR_CHECK(d >= 0, "negative dimension in shape ", shape_str(shape));
    OBR_CHECK(d == 0 || n <= (int64_t(1) << 62) / d, "shape ", shape_str(shape), " is too large");
    n *= d;
  }
  return n;
}

Tensor Tensor::zeros(const Shape& shape, DType dt) {
  Tensor t;
  t.dtype_ = dt;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  size_t bytes = size_t(checked_numel(shape)) * dtype_size(dt);
  size_t alloc = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, alloc ? alloc : 64);
  OBR_CHECK(p != nullptr, "out of memory allocating ", bytes, " bytes for tensor ", shape_str(shape));
  std::memset(p, 0, alloc ? alloc : 64);
  t.owner_ = std::shared_ptr<const void>(p, [](const void* q) { std::free(const_cast<void*>(q)); });
  t.data_ = p;
  t.writable_ = true;
  return t;
}

Tensor Tensor::view(const void* data, const Shape& shape, DType dt, std::shared_ptr<const void> owner) {
  Tensor t;
  t.dtype_ = dt;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  checked_numel(shape);
  t.data_ = data;
  t.writable_ = false;
  t.owner_ = std::move(owner);
  return t;
}

int64_t Tensor::dim(int i) const {
  int n = ndim();
  int k = i < 0 ? i + n : i;
  OBR_CHECK(k >= 0 && k < n, "dimension ", i, " out of range for shape ", shape_str(shape_));
  return shape_[size_t(k)];
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape_) n *= d;
  return n;
}

bool Tensor::is_contiguous() const { return strides_ == contiguous_strides(shape_); }

void Tensor::check_type(DType want) const {
  OBR_CHECK(dtype_ == want, "tensor ", shape_str(shape_), " has dtype ", dtype_name(dtype_), ", expected ",
            dtype_name(want));
}

void* Tensor::mutable_data() {
  OBR_CHECK(writable_ || data_ == nullptr, "tensor ", shape_str(shape_),
            " is a read-only view (of a mapped file); clone() it before writing");
  return const_cast<void*>(data_);
}

Tensor Tensor::clone() const {
  Tensor t = zeros(shape_, dtype_);
  if (nbytes()) std::memcpy(t.raw_mut(), data_, nbytes());
  return t;
}

Tensor Tensor::to_f32() const {
  Tensor t = zeros(shape_, DType::F32);
  float* out = t.data<float>();
  const int64_t n = numel();
  switch (dtype_) {
    case DType::F32: if (n) std::memcpy(out, data_, size_t(n) * 4); break;
    case DType::F64: { auto p = static_cast<const double*>(data_); for (int64_t i = 0; i < n; ++i) out[i] = float(p[i]); break; }
    case DType::BF16: { auto p = static_cast<const uint16_t*>(data_); for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(p[i]); break; }
    case DType::F16: { auto p = static_cast<const uint16_t*>(data_); for (int64_t i = 0; i < n; ++i) out[i] = f16_to_f32(p[i]); break; }
    case DType::I8: { auto p = static_cast<const int8_t*>(data_); for (int64_t i = 0; i < n; ++i) out[i] = float(p[i]); break; }
    case DType::U8: { auto p = static_cast<const uint8_t*>(data_); for (int64_t i = 0; i < n; ++i) out[i] = float(p[i]); break; }
    case DType::I32: { auto p = static_cast<const int32_t*>(data_); for (int64_t i = 0; i < n; ++i) out[i] = float(p[i]); break; }
    case DType::I64: { auto p = static_cast<const int64_t*>(data_); for (int64_t i = 0; i < n; ++i) out[i] = float(p[i]); break; }
  }
  return t;
}

Tensor Tensor::to_dtype(DType dt) const {
  if (dt == DType::F32) return to_f32();
  Tensor src = dtype_ == DType::F32 ? *this : to_f32();
  const float* in = src.data<float>();
  Tensor t = zeros(shape_, dt);
  const int64_t n = numel();
  switch (dt) {
    case DType::BF16: { auto o = static_cast<uint16_t*>(t.raw_mut()); for (int64_t i = 0; i < n; ++i) o[i] = f32_to_bf16(in[i]); break; }
    case DType::F16: { auto o = static_cast<uint16_t*>(t.raw_mut()); for (int64_t i = 0; i < n; ++i) o[i] = f32_to_f16(in[i]); break; }
    case DType::F64: { auto o = static_cast<double*>(t.raw_mut()); for (int64_t i = 0; i < n; ++i) o[i] = in[i]; break; }
    default: fail("to_dtype: conversion from F32 to ", dtype_name(dt), " is not supported");
  }
  return t;
}

Tensor Tensor::reshape(const Shape& shape) const {
  OBR_CHECK(is_contiguous(), "reshape of a non-contiguous tensor");
  OBR_CHECK(checked_numel(shape) == numel(), "cannot reshape ", shape_str(shape_), " to ", shape_str(shape));
  Tensor t = *this;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  return t;
}

}  // namespace obr
