#include "tokenizer/unicode.h"

#include <algorithm>
#include <unordered_map>
#include <vector>

namespace obr::unicode {

using namespace tables;

uint32_t next_cp(std::string_view s, size_t& i) {
  const auto b = [&](size_t k) { return uint8_t(s[k]); };
  const uint8_t c0 = b(i);
  if (c0 < 0x80) {
    ++i;
    return c0;
  }
  // Lead byte -> length and the valid range of the second byte (RFC 3629 table).
  size_t len = 0;
  uint8_t lo = 0x80, hi = 0xBF;
  if (c0 >= 0xC2 && c0 <= 0xDF) len = 2;
  else if (c0 >= 0xE0 && c0 <= 0xEF) len = 3, lo = c0 == 0xE0 ? 0xA0 : 0x80, hi = c0 == 0xED ? 0x9F : 0xBF;
  else if (c0 >= 0xF0 && c0 <= 0xF4) len = 4, lo = c0 == 0xF0 ? 0x90 : 0x80, hi = c0 == 0xF4 ? 0x8F : 0xBF;
  if (len == 0 || i + len > s.size() || b(i + 1) < lo || b(i + 1) > hi) {
    ++i;
    return 0xFFFD;
  }
  uint32_t cp = c0 & (0x7F >> len);
  for (size_t k = 1; k < len; ++k) {
    if ((b(i + k) & 0xC0) != 0x80) {
      ++i;
      return 0xFFFD;
    }
    cp = cp << 6 | (b(i + k) & 0x3F);
  }
  i += len;
  return cp;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | cp >> 6);
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | cp >> 12);
    out += char(0x80 | (cp >> 6 & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | cp >> 18);
    out += char(0x80 | (cp >> 12 & 0x3F));
    out += char(0x80 | (cp >> 6 & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

// ---- character classes ----

namespace {

constexpr uint8_t kLetter = 1, kNumber = 2, kSpace = 4;

// White_Space (PropList.txt): what Oniguruma's \s and Rust's char::is_whitespace match.
constexpr uint32_t kWhiteSpace[] = {0x09,   0x0A,   0x0B,   0x0C,   0x0D,   0x20,   0x85,   0xA0,   0x1680,
                                    0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008,
                                    0x2009, 0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000};

bool in_ranges(const CpRange* r, size_t n, uint32_t cp) {
  const CpRange* it = std::upper_bound(r, r + n, cp, [](uint32_t v, const CpRange& x) { return v < x.lo; });
  return it != r && cp <= (it - 1)->hi;
}

// Class bits for the Basic Multilingual Plane, built once (64 KiB); beyond it, binary search.
const uint8_t* bmp_classes() {
  static const std::vector<uint8_t> t = [] {
    std::vector<uint8_t> v(0x10000, 0);
    for (size_t k = 0; k < kLetterRangesSize; ++k)
      for (uint32_t c = kLetterRanges[k].lo; c <= kLetterRanges[k].hi && c < 0x10000; ++c) v[c] |= kLetter;
    for (size_t k = 0; k < kNumberRangesSize; ++k)
      for (uint32_t c = kNumberRanges[k].lo; c <= kNumberRanges[k].hi && c < 0x10000; ++c) v[c] |= kNumber;
    for (uint32_t c : kWhiteSpace) v[c] |= kSpace;
    return v;
  }();
  return t.data();
}

}  // namespace

bool letter(uint32_t cp) {
  return cp < 0x10000 ? (bmp_classes()[cp] & kLetter) != 0 : in_ranges(kLetterRanges, kLetterRangesSize, cp);
}
bool number(uint32_t cp) {
  return cp < 0x10000 ? (bmp_classes()[cp] & kNumber) != 0 : in_ranges(kNumberRanges, kNumberRangesSize, cp);
}
bool whitespace(uint32_t cp) { return cp < 0x10000 && (bmp_classes()[cp] & kSpace) != 0; }
bool mark(uint32_t cp) { return cp >= 0x300 && in_ranges(kMarkRanges, kMarkRangesSize, cp); }

const char* table_version() {
  static const std::string s = std::string("letters and numbers from ") + kClassSource + "; NFC from Unicode " +
                               kUnicodeVersion;
  return s.c_str();
}

// ---- NFC (UAX #15: decompose, reorder by combining class, recompose) ----

namespace {

// Hangul syllables (UAX #15 section 16): S = SBase + (L * VCount + V) * TCount + T.
constexpr uint32_t SBase = 0xAC00, LBase = 0x1100, VBase = 0x1161, TBase = 0x11A7;
constexpr uint32_t LCount = 19, VCount = 21, TCount = 28, NCount = VCount * TCount, SCount = LCount * NCount;

struct NfcData {
  std::unordered_map<uint32_t, std::pair<uint32_t, uint32_t>> decomp;  // cp -> (a, b); b = 0: singleton
  std::unordered_map<uint64_t, uint32_t> compose;                      // (a << 32 | b) -> cp
};

const NfcData& nfc_data() {
  static const NfcData d = [] {
    NfcData r;
    r.decomp.reserve(kDecompSize);
    for (size_t k = 0; k < kDecompSize; ++k) {
      const DecompEntry& e = kDecomp[k];
      const uint32_t cp = e.cp & ~kComposes;
      r.decomp[cp] = {e.a, e.b};
      if (e.cp & kComposes) r.compose[uint64_t(e.a) << 32 | e.b] = cp;
    }
    return r;
  }();
  return d;
}

uint32_t ccc(uint32_t cp) {
  if (cp < 0x300) return 0;
  const CccRange* r = kCccRanges;
  const CccRange* it =
      std::upper_bound(r, r + kCccRangesSize, cp, [](uint32_t v, const CccRange& x) { return v < x.lo; });
  return it != r && cp <= (it - 1)->hi ? (it - 1)->ccc : 0;
}

void decompose(uint32_t cp, const NfcData& d, std::vector<uint32_t>& out) {
  if (cp >= SBase && cp < SBase + SCount) {
    const uint32_t s = cp - SBase;
    out.push_back(LBase + s / NCount);
    out.push_back(VBase + s % NCount / TCount);
    if (s % TCount) out.push_back(TBase + s % TCount);
    return;
  }
  auto it = d.decomp.find(cp);
  if (it == d.decomp.end()) {
    out.push_back(cp);
    return;
  }
  decompose(it->second.first, d, out);
  if (it->second.second) decompose(it->second.second, d, out);
}

uint32_t compose(uint32_t a, uint32_t b, const NfcData& d) {
  if (a >= LBase && a < LBase + LCount && b >= VBase && b < VBase + VCount)
    return SBase + ((a - LBase) * VCount + (b - VBase)) * TCount;
  if (a >= SBase && a < SBase + SCount && (a - SBase) % TCount == 0 && b > TBase && b < TBase + TCount)
    return a + (b - TBase);
  auto it = d.compose.find(uint64_t(a) << 32 | b);
  return it == d.compose.end() ? 0 : it->second;
}

// NFC of one segment: a code point below U+0300 (or the text start) and the code points
// of U+0300 and above that follow it.
void nfc_segment(std::string_view s, const NfcData& d, std::vector<uint32_t>& cps, std::vector<uint32_t>& out,
                 std::string& r) {
  cps.clear();
  for (size_t i = 0; i < s.size();) decompose(next_cp(s, i), d, cps);
  // Canonical ordering: stable sort of each run of non-starters by combining class.
  for (size_t i = 0; i < cps.size();) {
    if (ccc(cps[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < cps.size() && ccc(cps[j]) != 0) ++j;
    std::stable_sort(cps.begin() + long(i), cps.begin() + long(j),
                     [](uint32_t a, uint32_t b) { return ccc(a) < ccc(b); });
    i = j;
  }
  // Canonical composition: a character joins the last starter unless blocked, i.e. unless
  // a character between them has a combining class of 0 or >= its own.
  out.clear();
  long starter = -1;
  uint32_t last_ccc = 0;
  for (uint32_t c : cps) {
    const uint32_t cc = ccc(c);
    if (starter >= 0) {
      const bool adjacent = size_t(starter) + 1 == out.size();
      if (adjacent || (last_ccc != 0 && last_ccc < cc)) {
        if (uint32_t comp = compose(out[size_t(starter)], c, d)) {
          out[size_t(starter)] = comp;
          continue;
        }
      }
    }
    if (cc == 0) starter = long(out.size());
    out.push_back(c);
    last_ccc = cc;
  }
  for (uint32_t c : out) append_utf8(r, c);
}

}  // namespace

// A code point below U+0300 has combining class 0, is never the second of a composing pair
// and decomposes (if at all) to a starter below U+0300 and marks: nothing reorders or
// composes across it. So text is cut before each one, and only the segments that hold a
// code point of U+0300 or above need the full algorithm.
std::string nfc(std::string_view s) {
  const auto low = [&](size_t i) { return uint8_t(s[i]) < 0x80 || (uint8_t(s[i]) >= 0xC2 && uint8_t(s[i]) < 0xCC); };
  size_t i = 0;
  while (i < s.size() && uint8_t(s[i]) < 0xCC) ++i;  // all below U+0300 (ASCII, C2..CB leads)
  if (i == s.size()) return std::string(s);

  const NfcData& d = nfc_data();
  std::vector<uint32_t> cps, out;
  std::string r;
  r.reserve(s.size() + 16);
  for (i = 0; i < s.size();) {
    const size_t begin = i;
    next_cp(s, i);
    bool plain = low(begin);
    while (i < s.size() && !low(i)) {
      next_cp(s, i);
      plain = false;
    }
    if (plain) r.append(s.data() + begin, i - begin);
    else nfc_segment(s.substr(begin, i - begin), d, cps, out, r);
  }
  return r;
}

// ---- UTF-8 validation ----

namespace {

// Length of the valid sequence at s[i], or 0 with `bad` = how many bytes form the maximal
// invalid subpart (at least 1), as Rust's Utf8Chunks counts them.
size_t utf8_seq(std::string_view s, size_t i, size_t& bad) {
  const auto b = [&](size_t k) { return uint8_t(s[k]); };
  const uint8_t c0 = b(i);
  if (c0 < 0x80) return 1;
  size_t len = 0;
  uint8_t lo = 0x80, hi = 0xBF;
  if (c0 >= 0xC2 && c0 <= 0xDF) len = 2;
  else if (c0 >= 0xE0 && c0 <= 0xEF) len = 3, lo = c0 == 0xE0 ? 0xA0 : 0x80, hi = c0 == 0xED ? 0x9F : 0xBF;
  else if (c0 >= 0xF0 && c0 <= 0xF4) len = 4, lo = c0 == 0xF0 ? 0x90 : 0x80, hi = c0 == 0xF4 ? 0x8F : 0xBF;
  bad = 1;
  if (len == 0) return 0;
  if (i + 1 >= s.size() || b(i + 1) < lo || b(i + 1) > hi) return 0;
  for (size_t k = 2; k < len; ++k) {
    bad = k;
    if (i + k >= s.size() || (b(i + k) & 0xC0) != 0x80) return 0;
  }
  return len;
}

}  // namespace

bool valid_utf8(std::string_view s) {
  for (size_t i = 0, bad = 0; i < s.size();) {
    size_t n = utf8_seq(s, i, bad);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string utf8_lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0, bad = 0; i < s.size();) {
    size_t n = utf8_seq(s, i, bad);
    if (n == 0) {
      out += "\xEF\xBF\xBD";
      i += bad;
    } else {
      out.append(s.data() + i, n);
      i += n;
    }
  }
  return out;
}

}  // namespace obr::unicode
