// Helpers shared by the file-format tests: a self-cleaning temp directory, raw byte writes,
// and checks that a call throws obr::Error whose message names what is wrong.
#pragma once

#include <doctest/doctest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/check.h"

namespace obr::testing {

// A fresh directory under the system temp dir, removed with everything in it.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& tag = "obr_test") {
    static std::atomic<int> counter{0};
    path = std::filesystem::temp_directory_path() /
           (tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
  size_t entries() const {
    return size_t(std::distance(std::filesystem::directory_iterator(path), std::filesystem::directory_iterator()));
  }
};

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}

// The obr::Error message of f(), or a marker when none is thrown.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no obr::Error thrown)";
}

// CHECKs that `f` throws obr::Error and that the message has each of `words`.
template <class F>
void check_error(F&& f, const std::vector<std::string>& words) {
  std::string msg = error_of(f);
  for (const auto& w : words) CHECK_MESSAGE(msg.find(w) != std::string::npos, "'", w, "' not in: ", msg);
}

}  // namespace obr::testing
