// .npy reader/writer and the atomic file helpers: round trips for every dtype, numpy's
// header variants, and hostile files (every truncation, bad headers, random corruption),
// each of which must give an obr::Error naming the file.
#include <doctest/doctest.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "io/atomic_file.h"
#include "io/npy.h"
#include "test_util.h"

using namespace obr;
using namespace obr::testing;
namespace fs = std::filesystem;

namespace {


// A .npy file from its parts, with correct lengths: version major.0, header padded to 64.
std::string make_npy(int major, const std::string& dict, const std::string& data) {
  size_t prefix = major == 1 ? 10 : 12;
  size_t total = (prefix + dict.size() + 1 + 63) / 64 * 64;
  size_t hlen = total - prefix;
  std::string s("\x93NUMPY", 6);
  s += char(major);
  s += char(0);
  for (size_t i = 0; i < prefix - 8; ++i) s += char((hlen >> (8 * i)) & 0xff);
  s += dict;
  s.append(total - s.size() - 1, ' ');
  s += '\n';
  return s + data;
}

Tensor patterned(const Shape& shape, DType dt, int seed) {
  Tensor t = Tensor::zeros(shape, dt);
  auto* p = static_cast<unsigned char*>(t.raw_mut());
  for (size_t i = 0; i < t.nbytes(); ++i) p[i] = static_cast<unsigned char>(i * 37 + size_t(seed) * 11 + 5);
  return t;
}

}  // namespace

TEST_CASE("io: npy round trip for every dtype and odd shapes") {
  TempDir dir("obr_test_io_npy");
  const DType dtypes[] = {DType::F32, DType::F64, DType::F16, DType::I8, DType::U8, DType::I32, DType::I64};
  const Shape shapes[] = {{}, {0}, {1}, {3}, {2, 3}, {2, 0, 4}, {3, 1, 5}, {118, 3}};
  int seed = 0;
  for (DType dt : dtypes) {
    for (const Shape& shape : shapes) {
      CAPTURE(dtype_name(dt));
      CAPTURE(shape_str(shape));
      Tensor t = patterned(shape, dt, seed++);
      const std::string path = dir.file("a.npy");
      write_npy(path, t);
      Tensor r = read_npy(path);
      CHECK(r.dtype() == dt);
      CHECK(r.shape() == shape);
      REQUIRE(r.nbytes() == t.nbytes());
      CHECK(std::memcmp(r.raw(), t.raw(), t.nbytes()) == 0);
      // numpy's layout: header padded so the data starts at a multiple of 64.
      CHECK((fs::file_size(path) - t.nbytes()) % 64 == 0);
    }
  }
  CHECK(dir.entries() == 1);  // no temp files left behind
}

TEST_CASE("io: npy header is byte-identical to numpy's") {
  TempDir dir("obr_test_io_npy");
  const std::string path = dir.file("x.npy");
  write_npy(path, Tensor::zeros({2, 3}, DType::F32));
  std::string bytes = read_file(path);
  CHECK(bytes == make_npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", std::string(24, '\0')));
  write_npy(path, Tensor::zeros({5}, DType::I8));
  CHECK(read_file(path) ==
        make_npy(1, "{'descr': '|i1', 'fortran_order': False, 'shape': (5,), }", std::string(5, '\0')));
  write_npy(path, Tensor::zeros({}, DType::F64));
  CHECK(read_file(path) ==
        make_npy(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (), }", std::string(8, '\0')));
}

TEST_CASE("io: npy reads version 2.0 and 3.0 headers and other spellings") {
  TempDir dir("obr_test_io_npy");
  const std::string path = dir.file("v.npy");
  const std::string data4 = std::string("\x01\x00\x00\x00\x02\x00\x00\x00", 8);
  for (int major : {1, 2, 3}) {
    write_bytes(path, make_npy(major, "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }", data4));
    Tensor t = read_npy(path);
    CHECK(t.shape() == Shape{2});
    CHECK(t.data<int32_t>()[1] == 2);
  }
  // Double quotes, no trailing comma, another key order, Python 2 long suffix, '<i1'.
  write_bytes(path, make_npy(1, "{\"shape\": (2L, 1L), \"fortran_order\": False, \"descr\": \"<i1\"}", "\x05\xfb"));
  Tensor t = read_npy(path);
  CHECK(t.shape() == Shape{2, 1});
  CHECK(t.data<int8_t>()[1] == -5);
  // A header not padded to 64 bytes (old writers) is fine.
  std::string dict = "{'descr': '|u1', 'fortran_order': False, 'shape': (1,), }\n";
  std::string s = std::string("\x93NUMPY\x01\x00", 8) + char(dict.size()) + char(0) + dict + "\x07";
  write_bytes(path, s);
  CHECK(read_npy(path).data<uint8_t>()[0] == 7);
}

TEST_CASE("io: npy rejects hostile headers with messages naming the file") {
  TempDir dir("obr_test_io_npy");
  const std::string path = dir.file("bad.npy");
  struct Case {
    std::string dict, data, word;
  };
  const std::string d24(24, '\0');
  const Case cases[] = {
      {"{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", d24, "fortran_order"},
      {"{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", d24, "big-endian"},
      {"{'descr': '<c8', 'fortran_order': False, 'shape': (3,), }", d24, "unsupported dtype '<c8'"},
      {"{'descr': 'float32', 'fortran_order': False, 'shape': (6,), }", d24, "unsupported dtype"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", std::string(20, '\0'), "truncated data"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", std::string(28, '\0'), "trailing data"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 3), }", d24, "negative dimension"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4), }", d24, "too large"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", d24, "64 bits"},
      {"{'descr': '<f4', 'fortran_order': False, }", d24, "lacks 'shape'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (6,), 'extra': 1, }", d24, "unknown key 'extra'"},
      {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (6,), }", d24, "'descr' twice"},
      {"{'descr': '<f4', 'fortran_order': 0, 'shape': (6,), }", d24, "True or False"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': [6], }", d24, "malformed header"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (6,), } x", d24, "unexpected text"},
      {"{'descr': '<f4, 'fortran_order': False, 'shape': (6,), }", d24, "malformed header"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (6,) ", d24, "malformed header"},
      {"{'descr': [('x', '<f4'), ('y', '<i4')], 'fortran_order': False, 'shape': (3,), }", d24, "structured"},
      {"[1, 2, 3]", d24, "malformed header"},
      {"", d24, "malformed header"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.dict);
    write_bytes(path, make_npy(1, c.dict, c.data));
    check_error([&] { read_npy(path); }, {path, c.word});
  }
  const std::string good = make_npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }", d24);
  std::string s = good;
  s[1] = 'X';
  write_bytes(path, s);
  check_error([&] { read_npy(path); }, {path, "bad magic"});
  s = good;
  s[6] = 4;
  write_bytes(path, s);
  check_error([&] { read_npy(path); }, {path, "unsupported .npy version 4.0"});
  s = good;
  s[8] = '\xff';
  s[9] = '\x7f';
  write_bytes(path, s);
  check_error([&] { read_npy(path); }, {path, "header length 32767 extends beyond the file"});
  s = make_npy(2, "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }", d24);
  s[11] = '\x7f';
  write_bytes(path, s);
  check_error([&] { read_npy(path); }, {path, "over the"});
  check_error([&] { read_npy(dir.file("missing.npy")); }, {dir.file("missing.npy"), "No such file"});
  check_error([&] { read_npy(dir.path.string()); }, {dir.path.string(), "not a regular file"});
  check_error([&] { write_npy(path, Tensor::zeros({2}, DType::BF16)); }, {path, "BF16"});
}

TEST_CASE("io: npy every truncation of a valid file is an error naming the file") {
  TempDir dir("obr_test_io_npy");
  const std::string good = dir.file("good.npy"), cut = dir.file("cut.npy");
  write_npy(good, patterned({3, 5}, DType::F32, 1));
  const std::string bytes = read_file(good);
  for (size_t n = 0; n < bytes.size(); ++n) {
    CAPTURE(n);
    write_bytes(cut, bytes.substr(0, n));
    std::string msg = error_of([&] { read_npy(cut); });
    CHECK_MESSAGE(msg.find(cut) != std::string::npos, msg);
  }
}

TEST_CASE("io: npy random corruption gives a tensor or an obr::Error, never a crash") {
  TempDir dir("obr_test_io_npy");
  const std::string good = dir.file("good.npy"), bad = dir.file("bad.npy");
  write_npy(good, patterned({4, 3}, DType::I32, 2));
  const std::string bytes = read_file(good);
  Rng rng(1234);
  int errors = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    std::string s = bytes;
    const int flips = 1 + int(rng.below(3));
    for (int k = 0; k < flips; ++k) s[rng.below(64)] = char(rng.below(256));  // the 64-byte header
    write_bytes(bad, s);
    try {
      Tensor t = read_npy(bad);
      CHECK(t.nbytes() + 10 <= s.size());
    } catch (const Error& e) {
      ++errors;
      CHECK(std::string(e.what()).find(bad) != std::string::npos);
    }
  }
  CHECK(errors > 0);
}

TEST_CASE("io: write_file_atomic replaces the file and leaves no temp file") {
  TempDir dir("obr_test_io_npy");
  const std::string path = dir.file("out.bin");
  write_file_atomic(path, "old", 3);
  CHECK(read_file(path) == "old");
  write_file_atomic(path, "newer", 5);
  CHECK(read_file(path) == "newer");
  write_file_atomic(path, nullptr, 0);
  CHECK(read_file(path).empty());
  CHECK(dir.entries() == 1);
}

TEST_CASE("io: AtomicFile abandoned before commit leaves the old file untouched") {
  TempDir dir("obr_test_io_npy");
  const std::string path = dir.file("model.bin");
  write_file_atomic(path, "original", 8);
  std::string temp;
  try {
    AtomicFile f(path);
    temp = f.temp_path();
    f.write("partial output", 14);
    CHECK(fs::exists(temp));
    throw Error("writer failed half way");
  } catch (const Error&) {
  }
  CHECK(!temp.empty());
  CHECK(!fs::exists(temp));
  CHECK(read_file(path) == "original");
  CHECK(dir.entries() == 1);

  AtomicFile f(path);
  f.write("one ", 4);
  f.write("two", 3);
  CHECK(f.bytes_written() == 7);
  f.commit();
  CHECK(read_file(path) == "one two");
  check_error([&] { f.commit(); }, {path, "twice"});
  CHECK(dir.entries() == 1);
}

TEST_CASE("io: atomic write and read_file errors name the path and the reason") {
  TempDir dir("obr_test_io_npy");
  const std::string nodir = dir.file("no/such/dir/out.bin");
  check_error([&] { write_file_atomic(nodir, "x", 1); }, {nodir, "No such file or directory"});
  check_error([&] { read_file(dir.file("absent.txt")); }, {dir.file("absent.txt"), "cannot open", "No such file"});
  check_error([&] { read_file(dir.path.string()); }, {dir.path.string(), "is a directory"});
  const std::string big = dir.file("big.txt");
  write_file_atomic(big, "0123456789", 10);
  check_error([&] { read_file(big, 9); }, {big, "10 bytes", "9"});
  CHECK(read_file(big, 10) == "0123456789");
  write_file_atomic(big, "", 0);
  CHECK(read_file(big).empty());
}
