#include "io/text.h"

#include "core/check.h"
#include "io/atomic_file.h"

namespace obr {

size_t find_invalid_utf8(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    size_t len;
    uint32_t cp;
    if (c < 0x80) { ++i; continue; }
    if ((c & 0xe0) == 0xc0) { len = 2; cp = c & 0x1f; }
    else if ((c & 0xf0) == 0xe0) { len = 3; cp = c & 0x0f; }
    else if ((c & 0xf8) == 0xf0) { len = 4; cp = c & 0x07; }
    else return i;
    if (i + len > n) return i;
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xc0) != 0x80) return i;
      cp = (cp << 6) | (p[i + k] & 0x3f);
    }
    // overlong forms, surrogates, beyond U+10FFFF
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
      return i;
    i += len;
  }
  return std::string::npos;
}

std::string read_text_file(const std::string& path, size_t min_bytes) {
  std::string s = read_file(path);
  OBR_CHECK(!s.empty(), path, ": the text file is empty");
  OBR_CHECK(s.size() >= min_bytes, path, ": the text has ", s.size(), " bytes, at least ", min_bytes, " are needed");
  size_t bad = find_invalid_utf8(s);
  OBR_CHECK(bad == std::string::npos, path, ": not valid UTF-8 (first bad byte at offset ", bad, ")");
  return s;
}

}  // namespace obr
