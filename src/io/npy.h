// NumPy .npy files: one array, C (row-major) order.
//
// Layout (numpy.lib.format):
//   bytes 0-5   magic "\x93NUMPY"
//   bytes 6-7   version major, minor: 1.0 (2-byte header length), 2.0 or 3.0 (4-byte)
//   next 2 or 4 little-endian header length HLEN
//   HLEN bytes  a Python dict literal, space-padded and ending in '\n' so that the data
//               starts at a multiple of 64:
//               {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
//   data        numel * itemsize bytes, nothing after it
//
// dtypes: '<f4' F32, '<f8' F64, '<f2' F16, '|i1' I8, '|u1' U8, '<i4' I32, '<i8' I64
// (1-byte types are also accepted with '<' or '='). BF16 has no numpy dtype: convert
// with Tensor::to_f32() before writing.
//
// read_npy rejects, with an obr::Error naming the file and what is wrong: a bad magic,
// an unknown version, a header length beyond the file, a header that is not the dict
// above (missing, duplicate or unknown keys), unknown or big-endian ('>f4') dtypes,
// fortran_order True, negative dimensions, a shape whose byte size overflows, data
// shorter than the shape needs (truncated) and bytes after the data (trailing garbage).
// It returns an owned, 64-byte-aligned tensor (the data is read straight into it).
// write_npy writes version 1.0 (2.0 if the header needs it) atomically.
#pragma once

#include <string>

#include "core/tensor.h"

namespace obr {

Tensor read_npy(const std::string& path);
void write_npy(const std::string& path, const Tensor& t);

}  // namespace obr
