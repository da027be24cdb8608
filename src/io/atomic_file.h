// Whole-file reads and crash-safe whole-file writes.
//
// Writes never leave a half-written file under the final name. The bytes go to a
// temporary file in the same directory (`path + ".tmp.<pid>"`, so the final rename stays
// on one file system), which is fsync'ed and then renamed over `path` (atomic on POSIX);
// the directory is fsync'ed afterwards so the rename itself survives a power cut.
// If the writer throws before commit(), the destructor removes the temporary file and
// whatever was at `path` before is left untouched.
//
// Errors are obr::Error naming the path and the system's reason (strerror), e.g.
//   "out/model.safetensors: cannot create temporary file 'out/model.safetensors.tmp.4242':
//    No such file or directory"
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace obr {

// Writes n bytes to `path` atomically (temp file + fsync + rename).
void write_file_atomic(const std::string& path, const void* data, size_t n);

// Streaming form of write_file_atomic for outputs too large to assemble in memory:
//   AtomicFile f(path); f.write(header, n1); f.write(data, n2); f.commit();
class AtomicFile {
 public:
  explicit AtomicFile(const std::string& path);
  ~AtomicFile();  // removes the temporary file unless commit() succeeded
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t n);
  // fsync, close, rename over the final path, fsync the directory. Call once.
  void commit();

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return tmp_; }
  uint64_t bytes_written() const { return written_; }

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
  uint64_t written_ = 0;
};

// Reads a whole regular file. Errors name the path: missing, a directory, unreadable,
// or larger than max_bytes (a guard for files that should be small, like config.json).
std::string read_file(const std::string& path, size_t max_bytes = SIZE_MAX);

}  // namespace obr
