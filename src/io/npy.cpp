#include "io/npy.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include "io/atomic_file.h"

namespace obr {

namespace {

constexpr char kMagic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};
// numpy itself refuses headers over 10,000 bytes unless told otherwise; 1 MiB leaves room
// for any real shape while keeping a hostile length from allocating gigabytes.
constexpr size_t kMaxHeaderBytes = size_t(1) << 20;

struct NpyType {
  const char* descr;  // as written
  DType dtype;
};
// Written spellings first; the extra 1-byte spellings are accepted on read only.
constexpr NpyType kTypes[] = {
    {"<f4", DType::F32}, {"<f8", DType::F64}, {"<f2", DType::F16}, {"|i1", DType::I8},
    {"|u1", DType::U8},  {"<i4", DType::I32}, {"<i8", DType::I64}, {"<i1", DType::I8},
    {"=i1", DType::I8},  {"<u1", DType::U8},  {"=u1", DType::U8},
};

const char* npy_descr(DType dt, const std::string& path) {
  for (const auto& t : kTypes)
    if (t.dtype == dt) return t.descr;
  fail(path, ": dtype ", dtype_name(dt), " has no .npy equivalent (convert it with to_f32() first)");
}

// Printable excerpt of a header for error messages.
std::string excerpt(const std::string& text) {
  const size_t end = text.find_last_not_of(" \n");
  const std::string s = end == std::string::npos ? std::string() : text.substr(0, end + 1);
  std::string out;
  for (size_t i = 0; i < s.size() && i < 160; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '\n')
      out += "\\n";
    else if (c >= 32 && c < 127)
      out += char(c);
    else
      out += '?';
  }
  if (s.size() > 160) out += "...";
  return out;
}

// Reads the dict literal numpy writes: {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
// Accepts either quote style and any whitespace; rejects everything else.
class HeaderParser {
 public:
  HeaderParser(const std::string& text, const std::string& path) : s_(text), path_(path) {}

  void parse(std::string* descr, bool* fortran, Shape* shape) {
    bool seen_descr = false, seen_fortran = false, seen_shape = false;
    expect('{', "'{'");
    while (!eat('}')) {
      std::string key = string_literal("a quoted key");
      expect(':', "':' after key '" + key + "'");
      if (key == "descr") {
        OBR_CHECK(!seen_descr, path_, ": header has the key 'descr' twice: ", excerpt(s_));
        ws();
        OBR_CHECK(pos_ >= s_.size() || s_[pos_] != '[', path_,
                  ": structured (record) dtypes are not supported: ", excerpt(s_));
        *descr = string_literal("a quoted dtype after 'descr'");
        seen_descr = true;
      } else if (key == "fortran_order") {
        OBR_CHECK(!seen_fortran, path_, ": header has the key 'fortran_order' twice: ", excerpt(s_));
        *fortran = boolean();
        seen_fortran = true;
      } else if (key == "shape") {
        OBR_CHECK(!seen_shape, path_, ": header has the key 'shape' twice: ", excerpt(s_));
        *shape = tuple();
        seen_shape = true;
      } else {
        fail(path_, ": header has an unknown key '", excerpt(key),
             "' (expected descr, fortran_order, shape): ", excerpt(s_));
      }
      if (!eat(',')) {
        expect('}', "',' or '}'");
        break;
      }
    }
    ws();
    OBR_CHECK(pos_ == s_.size(), path_, ": unexpected text after the header dict at character ", pos_, ": ",
              excerpt(s_));
    OBR_CHECK(seen_descr && seen_fortran && seen_shape, path_, ": header lacks ",
              !seen_descr     ? "'descr'"
              : !seen_fortran ? "'fortran_order'"
                              : "'shape'",
              ": ", excerpt(s_));
  }

 private:
  void ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) ++pos_;
  }
  bool eat(char c) {
    ws();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  void expect(char c, const std::string& what) {
    OBR_CHECK(eat(c), path_, ": malformed header: expected ", what, " at character ", pos_, ": ", excerpt(s_));
  }
  std::string string_literal(const std::string& what) {
    ws();
    OBR_CHECK(pos_ < s_.size() && (s_[pos_] == '\'' || s_[pos_] == '"'), path_, ": malformed header: expected ", what,
              " at character ", pos_, ": ", excerpt(s_));
    char quote = s_[pos_++];
    size_t end = s_.find(quote, pos_);
    OBR_CHECK(end != std::string::npos, path_, ": malformed header: unterminated string: ", excerpt(s_));
    std::string v = s_.substr(pos_, end - pos_);
    OBR_CHECK(v.find('\\') == std::string::npos, path_, ": malformed header: escapes are not supported: ", excerpt(s_));
    pos_ = end + 1;
    return v;
  }
  bool boolean() {
    ws();
    if (s_.compare(pos_, 4, "True") == 0) {
      pos_ += 4;
      return true;
    }
    if (s_.compare(pos_, 5, "False") == 0) {
      pos_ += 5;
      return false;
    }
    fail(path_, ": malformed header: expected True or False after 'fortran_order': ", excerpt(s_));
  }
  Shape tuple() {
    expect('(', "a tuple after 'shape'");
    Shape shape;
    while (!eat(')')) {
      ws();
      OBR_CHECK(pos_ < s_.size() && s_[pos_] != '-', path_, ": negative dimension in shape: ", excerpt(s_));
      OBR_CHECK(pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9', path_,
                ": malformed header: expected a dimension at character ", pos_, ": ", excerpt(s_));
      int64_t d = 0;
      while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') {
        int digit = s_[pos_++] - '0';
        OBR_CHECK(d <= (std::numeric_limits<int64_t>::max() - digit) / 10, path_,
                  ": dimension does not fit in 64 bits: ", excerpt(s_));
        d = d * 10 + digit;
      }
      if (pos_ < s_.size() && s_[pos_] == 'L') ++pos_;  // Python 2 longs
      shape.push_back(d);
      OBR_CHECK(shape.size() <= 64, path_, ": shape has more than 64 dimensions: ", excerpt(s_));
      if (!eat(',')) {
        expect(')', "',' or ')' in the shape");
        break;
      }
    }
    return shape;
  }

  const std::string& s_;
  const std::string& path_;
  size_t pos_ = 0;
};

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

void pread_exact(int fd, void* buf, size_t n, uint64_t offset, const std::string& path) {
  char* p = static_cast<char*>(buf);
  while (n > 0) {
    ssize_t r = ::pread(fd, p, n, off_t(offset));
    if (r < 0 && errno == EINTR) continue;
    OBR_CHECK(r >= 0, path, ": read failed at byte ", offset, ": ", std::strerror(errno));
    OBR_CHECK(r > 0, path, ": file shrank while being read (at byte ", offset, ")");
    p += r;
    n -= size_t(r);
    offset += uint64_t(r);
  }
}

uint64_t le(const unsigned char* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = v << 8 | p[i];
  return v;
}

}  // namespace

Tensor read_npy(const std::string& path) {
  Fd f;
  f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  OBR_CHECK(f.fd >= 0, path, ": cannot open: ", std::strerror(errno));
  struct stat st;
  OBR_CHECK(::fstat(f.fd, &st) == 0, path, ": cannot stat: ", std::strerror(errno));
  OBR_CHECK(S_ISREG(st.st_mode), path, ": not a regular file");
  const uint64_t size = uint64_t(st.st_size);

  unsigned char pre[12] = {};
  pread_exact(f.fd, pre, size_t(std::min<uint64_t>(size, 12)), 0, path);
  OBR_CHECK(size >= 6 && std::memcmp(pre, kMagic, 6) == 0, path, ": not a .npy file (bad magic; ", size, " bytes)");
  OBR_CHECK(size >= 10, path, ": truncated .npy file: ", size, " bytes, too short for the version and header length");
  const int major = pre[6], minor = pre[7];
  OBR_CHECK((major == 1 || major == 2 || major == 3) && minor == 0, path, ": unsupported .npy version ", major, ".",
            minor, " (reads 1.0, 2.0, 3.0)");
  const int len_bytes = major == 1 ? 2 : 4;
  const uint64_t prefix = 8 + uint64_t(len_bytes);
  OBR_CHECK(size >= prefix, path, ": truncated .npy file: ", size, " bytes, too short for the header length");
  const uint64_t hlen = le(pre + 8, len_bytes);
  OBR_CHECK(hlen <= kMaxHeaderBytes, path, ": header length ", hlen, " is over the ", kMaxHeaderBytes, "-byte limit");
  OBR_CHECK(prefix + hlen <= size, path, ": header length ", hlen, " extends beyond the file (", size, " bytes)");

  std::string header(size_t(hlen), '\0');
  pread_exact(f.fd, &header[0], header.size(), prefix, path);
  std::string descr;
  bool fortran = false;
  Shape shape;
  HeaderParser(header, path).parse(&descr, &fortran, &shape);

  DType dt = DType::F32;
  bool known = false;
  for (const auto& t : kTypes)
    if (descr == t.descr) {
      dt = t.dtype;
      known = true;
    }
  if (!known) {
    OBR_CHECK(descr.empty() || descr[0] != '>', path, ": big-endian dtype '", excerpt(descr),
              "' is not supported (save with a little-endian dtype, e.g. arr.astype('<f4'))");
    fail(path, ": unsupported dtype '", excerpt(descr), "' (reads <f4, <f8, <f2, |i1, |u1, <i4, <i8)");
  }
  OBR_CHECK(!fortran, path,
            ": fortran_order True (column-major) arrays are not supported; save "
            "np.ascontiguousarray(arr)");

  // Byte size with overflow checks: the shape comes from the file.
  uint64_t nbytes = dtype_size(dt);
  for (int64_t d : shape) {
    OBR_CHECK(d == 0 || nbytes <= (uint64_t(1) << 62) / uint64_t(d), path, ": shape ", shape_str(shape),
              " is too large (byte size overflows)");
    nbytes *= uint64_t(d);
  }
  const uint64_t avail = size - prefix - hlen;
  OBR_CHECK(avail >= nbytes, path, ": truncated data: shape ", shape_str(shape), " of ", descr, " needs ", nbytes,
            " bytes, the file has ", avail, " after the header");
  OBR_CHECK(avail == nbytes, path, ": ", avail - nbytes, " bytes of trailing data after the ", shape_str(shape), " ",
            descr, " array");

  Tensor t = Tensor::zeros(shape, dt);
  if (nbytes) pread_exact(f.fd, t.raw_mut(), size_t(nbytes), prefix + hlen, path);
  return t;
}

void write_npy(const std::string& path, const Tensor& t) {
  OBR_CHECK(t.defined(), path, ": cannot write an undefined tensor");
  OBR_CHECK(t.is_contiguous(), path, ": cannot write a non-contiguous tensor ", shape_str(t.shape()));
  std::string dict = std::string("{'descr': '") + npy_descr(t.dtype(), path) + "', 'fortran_order': False, 'shape': (";
  for (size_t i = 0; i < t.shape().size(); ++i) dict += (i ? ", " : "") + std::to_string(t.shape()[i]);
  dict += t.shape().size() == 1 ? ",), }" : "), }";

  // Pad with spaces so that prefix + header (ending in '\n') is a multiple of 64.
  // Version 1.0 has a 2-byte header length; longer headers (more than ~6000 dims) need 2.0.
  int major = 1;
  size_t prefix = 10;
  size_t total = (prefix + dict.size() + 1 + 63) / 64 * 64;
  if (total - prefix > 65535) {
    major = 2;
    prefix = 12;
    total = (prefix + dict.size() + 1 + 63) / 64 * 64;
  }
  std::string head(kMagic, 6);
  head += char(major);
  head += char(0);
  const size_t hlen = total - prefix;
  for (size_t i = 0; i < prefix - 8; ++i) head += char((hlen >> (8 * i)) & 0xff);
  head += dict;
  head.append(total - head.size() - 1, ' ');
  head += '\n';

  AtomicFile f(path);
  f.write(head.data(), head.size());
  if (t.nbytes()) f.write(t.raw(), t.nbytes());
  f.commit();
}

}  // namespace obr
