// A small n-dimensional tensor: dtype, shape, row-major strides, shared storage.
//
// Storage is either owned (heap, 64-byte aligned, zero-filled) or borrowed from
// something that outlives the views (an mmap'd safetensors file): the `owner`
// shared_ptr keeps it alive. Tensors made here are always contiguous; strides are
// kept so views of files and future slicing can say how they are laid out.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/check.h"

namespace obr {

enum class DType : uint8_t { F32, F64, F16, BF16, I8, U8, I32, I64 };

size_t dtype_size(DType dt);
const char* dtype_name(DType dt);  // "F32", "BF16", ... (safetensors spelling)

template <class T>
constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::F32; }
template <> constexpr DType dtype_of<double>() { return DType::F64; }
template <> constexpr DType dtype_of<int8_t>() { return DType::I8; }
template <> constexpr DType dtype_of<uint8_t>() { return DType::U8; }
template <> constexpr DType dtype_of<int32_t>() { return DType::I32; }
template <> constexpr DType dtype_of<int64_t>() { return DType::I64; }

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "[4096, 11008]"

class Tensor {
 public:
  Tensor() = default;

  // Owned, zero-filled, contiguous.
  static Tensor zeros(const Shape& shape, DType dt = DType::F32);
  // Borrowed view of `data`; `owner` keeps the memory alive (may be null for static data).
  static Tensor view(const void* data, const Shape& shape, DType dt, std::shared_ptr<const void> owner);

  bool defined() const { return data_ != nullptr || numel() == 0; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }  // in elements
  int ndim() const { return int(shape_.size()); }
  int64_t dim(int i) const;  // negative i counts from the back
  int64_t numel() const;
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype_); }
  bool is_contiguous() const;

  // Typed access; checks the dtype.
  template <class T> T* data() {
    check_type(dtype_of<T>());
    return static_cast<T*>(mutable_data());
  }
  template <class T> const T* data() const {
    check_type(dtype_of<T>());
    return static_cast<const T*>(data_);
  }
  const void* raw() const { return data_; }
  void* raw_mut() { return mutable_data(); }

  // 2-D element access, row-major, debug-checked.
  template <class T> T& at(int64_t i, int64_t j) {
    OBR_DCHECK(ndim() == 2 && i >= 0 && i < shape_[0] && j >= 0 && j < shape_[1]);
    return data<T>()[i * strides_[0] + j];
  }
  template <class T> const T& at(int64_t i, int64_t j) const {
    OBR_DCHECK(ndim() == 2 && i >= 0 && i < shape_[0] && j >= 0 && j < shape_[1]);
    return data<T>()[i * strides_[0] + j];
  }

  // Deep copy, owned.
  Tensor clone() const;
  // Any float or integer dtype converted to an owned float32 tensor (bf16/f16 exactly).
  Tensor to_f32() const;
  // Owned conversion of a float32 tensor to another float dtype (round to nearest even).
  Tensor to_dtype(DType dt) const;
  // Same storage, new shape with the same element count (contiguous only).
  Tensor reshape(const Shape& shape) const;

 private:
  void check_type(DType want) const;
  void* mutable_data();

  DType dtype_ = DType::F32;
  Shape shape_;
  Shape strides_;
  const void* data_ = nullptr;
  bool writable_ = false;
  std::shared_ptr<const void> owner_;
};

}  // namespace obr
