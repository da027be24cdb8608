#include "io/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/check.h"

namespace obr {

static std::string sys_error() { return std::strerror(errno); }

static std::string parent_dir(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

AtomicFile::AtomicFile(const std::string& path) : path_(path) {
  OBR_CHECK(!path.empty(), "cannot write a file with an empty path");
  tmp_ = path + ".tmp." + std::to_string(long(::getpid()));
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  OBR_CHECK(fd_ >= 0, path_, ": cannot create temporary file '", tmp_, "': ", sys_error());
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_.c_str());
}

void AtomicFile::write(const void* data, size_t n) {
  OBR_CHECK(fd_ >= 0, path_, ": write after commit");
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    // Linux writes at most 0x7ffff000 bytes per call; loop for partial writes and EINTR.
    ssize_t w = ::write(fd_, p, n);
    if (w < 0 && errno == EINTR) continue;
    OBR_CHECK(w > 0, path_, ": write failed after ", written_, " bytes (temporary file '", tmp_,
              "'): ", w < 0 ? sys_error() : std::string("no progress"));
    p += w;
    n -= size_t(w);
    written_ += uint64_t(w);
  }
}

void AtomicFile::commit() {
  OBR_CHECK(fd_ >= 0 && !committed_, path_, ": commit called twice");
  OBR_CHECK(::fsync(fd_) == 0, path_, ": fsync of temporary file '", tmp_, "' failed: ", sys_error());
  int fd = fd_;
  fd_ = -1;
  OBR_CHECK(::close(fd) == 0, path_, ": closing temporary file '", tmp_, "' failed: ", sys_error());
  OBR_CHECK(::rename(tmp_.c_str(), path_.c_str()) == 0, path_, ": cannot rename temporary file '", tmp_,
            "' over it: ", sys_error());
  committed_ = true;
  // Make the rename durable. Some file systems refuse fsync on directories: best effort.
  int dfd = ::open(parent_dir(path_).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
}

void write_file_atomic(const std::string& path, const void* data, size_t n) {
  AtomicFile f(path);
  f.write(data, n);
  f.commit();
}

std::string read_file(const std::string& path, size_t max_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  OBR_CHECK(fd >= 0, path, ": cannot open: ", sys_error());
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st;
  OBR_CHECK(::fstat(fd, &st) == 0, path, ": cannot stat: ", sys_error());
  OBR_CHECK(!S_ISDIR(st.st_mode), path, ": is a directory, expected a file");
  OBR_CHECK(st.st_size >= 0 && uint64_t(st.st_size) <= max_bytes, path, ": file is ", uint64_t(st.st_size),
            " bytes, more than the ", max_bytes, " allowed for it");
  std::string out;
  out.resize(size_t(st.st_size));
  size_t got = 0;
  // Read until EOF rather than trusting st_size (pipes and /proc files report 0).
  for (;;) {
    if (got == out.size()) {
      if (out.size() >= max_bytes) {
        char probe;
        ssize_t r = ::read(fd, &probe, 1);
        if (r < 0 && errno == EINTR) continue;
        OBR_CHECK(r <= 0, path, ": file is more than the ", max_bytes, " bytes allowed for it");
        break;
      }
      size_t grow = out.size() < 4096 ? 4096 : out.size();
      out.resize(out.size() + std::min(grow, max_bytes - out.size()));
    }
    ssize_t r = ::read(fd, &out[got], out.size() - got);
    if (r < 0 && errno == EINTR) continue;
    OBR_CHECK(r >= 0, path, ": read failed after ", got, " bytes: ", sys_error());
    if (r == 0) break;
    got += size_t(r);
  }
  out.resize(got);
  return out;
}

}  // namespace obr
