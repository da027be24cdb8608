// Always-on checks with messages that name the values.
//
//   OBR_CHECK(rows == cols, "H must be square, got ", rows, " x ", cols);
//
// A failed check throws obr::Error; the CLI prints its message and exits non-zero.
// Use OBR_DCHECK inside hot loops: it compiles away in release builds.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace obr {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
template <class... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

// Throws obr::Error with the concatenation of the arguments.
template <class... Args>
[[noreturn]] void fail(const Args&... args) {
  throw Error(detail::concat(args...));
}

}  // namespace obr

#define OBR_CHECK(cond, ...)                                      \
  do {                                                            \
    if (!(cond)) ::obr::fail(__VA_ARGS__);                        \
  } while (0)

#ifdef NDEBUG
#define OBR_DCHECK(cond, ...) \
  do {                        \
  } while (0)
#else
#define OBR_DCHECK(cond, ...)                                                          \
  do {                                                                                 \
    if (!(cond)) ::obr::fail(__FILE__, ":", __LINE__, ": check failed: " #cond ": ",   \
                             ##__VA_ARGS__);                                           \
  } while (0)
#endif
