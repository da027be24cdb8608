#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>

#include "io/atomic_file.h"
#include "io/json_util.h"

namespace obr {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the Python library's limit (100 MB)
constexpr uint64_t kMaxIndexBytes = 100'000'000;
constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr const char* kSingleName = "model.safetensors";

struct DTypeName {
  const char* name;
  DType dtype;
};
constexpr DTypeName kDTypes[] = {
    {"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16}, {"F64", DType::F64},
    {"I8", DType::I8},   {"U8", DType::U8},   {"I32", DType::I32},   {"I64", DType::I64},
};

bool parse_dtype(const std::string& s, DType* dt) {
  for (const auto& d : kDTypes)
    if (s == d.name) {
      *dt = d.dtype;
      return true;
    }
  return false;
}

// A non-negative JSON integer, at most 2^62 (dimensions and offsets).
bool as_count(const json& v, uint64_t* out) {
  if (!v.is_number_unsigned()) return false;
  uint64_t x = v.get<uint64_t>();
  if (x > (uint64_t(1) << 62)) return false;
  *out = x;
  return true;
}

bool is_dir(const std::string& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}

bool exists(const std::string& p) {
  std::error_code ec;
  return fs::exists(p, ec);
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string join(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

}  // namespace

struct TensorStore::Mapping {
  void* addr = nullptr;
  size_t size = 0;
  Mapping() = default;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (addr) ::munmap(addr, size);
  }
};

void TensorStore::add_file(const std::string& file) {
  // ---- map the file ----
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  OBR_CHECK(fd >= 0, file, ": cannot open: ", std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    fail(file, ": cannot stat: ", std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(file, ": not a regular file");
  }
  const uint64_t file_size = uint64_t(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    fail(file, ": truncated safetensors file: ", file_size, " bytes, too short for the 8-byte header length");
  }
  auto map = std::make_shared<Mapping>();
  void* addr = ::mmap(nullptr, size_t(file_size), PROT_READ, MAP_PRIVATE, fd, 0);
  int map_errno = errno;
  ::close(fd);
  OBR_CHECK(addr != MAP_FAILED, file, ": mmap of ", file_size, " bytes failed: ", std::strerror(map_errno));
  map->addr = addr;
  map->size = size_t(file_size);
  const unsigned char* base = static_cast<const unsigned char*>(addr);

  // ---- header ----
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | base[i];
  OBR_CHECK(n <= kMaxHeaderBytes, file, ": header length ", n, " is over the 100 MB limit (file is ", file_size,
            " bytes; not a safetensors file?)");
  OBR_CHECK(n <= file_size - 8, file, ": header length ", n, " extends beyond the file (", file_size,
            " bytes): truncated?");
  const std::string header(reinterpret_cast<const char*>(base + 8), size_t(n));
  json h = parse_json(header, file + ": header");
  OBR_CHECK(h.is_object(), file, ": header is ", json_brief(h), ", expected a JSON object");
  const unsigned char* data = base + 8 + n;
  const uint64_t data_size = file_size - 8 - n;

  // ---- entries ----
  struct Pending {
    std::string name;
    Info info;
    uint64_t begin, end;
  };
  std::vector<Pending> pending;
  std::map<std::string, std::string> meta;
  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (v.is_null()) continue;
      OBR_CHECK(v.is_object(), file, ": __metadata__ is ", json_brief(v), ", expected an object of strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        OBR_CHECK(m.value().is_string(), file, ": __metadata__ '", m.key(), "' is ", json_brief(m.value()),
                  ", expected a string");
        meta[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = file + ": tensor '" + name + "'";
    OBR_CHECK(v.is_object(), where, ": entry is ", json_brief(v),
              ", expected an object with dtype, shape, data_offsets");
    auto dt_it = v.find("dtype"), shape_it = v.find("shape"), off_it = v.find("data_offsets");
    OBR_CHECK(dt_it != v.end(), where, ": entry has no \"dtype\"");
    OBR_CHECK(shape_it != v.end(), where, ": entry has no \"shape\"");
    OBR_CHECK(off_it != v.end(), where, ": entry has no \"data_offsets\"");

    Pending p;
    p.name = name;
    p.info.file = file;
    OBR_CHECK(dt_it->is_string(), where, ": dtype is ", json_brief(*dt_it), ", expected a string");
    const std::string& dts = dt_it->get_ref<const std::string&>();
    OBR_CHECK(parse_dtype(dts, &p.info.dtype), where, ": unsupported dtype ", json_brief(*dt_it),
              " (obr reads F32, F16, BF16, F64, I8, U8, I32, I64)");

    OBR_CHECK(shape_it->is_array(), where, ": shape is ", json_brief(*shape_it), ", expected an array of integers");
    uint64_t numel = 1;
    for (const json& d : *shape_it) {
      uint64_t x = 0;
      OBR_CHECK(as_count(d, &x), where, ": shape ", json_brief(*shape_it), " has the entry ", json_brief(d),
                ", expected a non-negative integer");
      OBR_CHECK(x == 0 || numel <= (uint64_t(1) << 62) / x, where, ": shape ", json_brief(*shape_it),
                " is too large (element count overflows)");
      numel *= x;
      p.info.shape.push_back(int64_t(x));
    }
    const uint64_t esize = dtype_size(p.info.dtype);
    OBR_CHECK(numel <= (uint64_t(1) << 62) / esize, where, ": shape ", shape_str(p.info.shape),
              " is too large (byte size overflows)");
    p.info.nbytes = numel * esize;

    OBR_CHECK(
        off_it->is_array() && off_it->size() == 2 && as_count((*off_it)[0], &p.begin) && as_count((*off_it)[1], &p.end),
        where, ": data_offsets is ", json_brief(*off_it), ", expected [begin, end] (non-negative integers)");
    OBR_CHECK(p.begin <= p.end, where, ": data_offsets [", p.begin, ", ", p.end, "] has begin > end");
    OBR_CHECK(p.end <= data_size, where, ": data offsets [", p.begin, ", ", p.end,
              ") extend beyond the file's data section (", data_size, " bytes)");
    OBR_CHECK(p.end - p.begin == p.info.nbytes, where, ": data offsets [", p.begin, ", ", p.end, ") hold ",
              p.end - p.begin, " bytes, but shape ", shape_str(p.info.shape), " of ", dts, " needs ", p.info.nbytes);
    pending.push_back(std::move(p));
  }

  // ---- overlaps: sort by begin; each non-empty tensor must start at or after the previous end ----
  std::vector<const Pending*> order;
  for (const auto& p : pending)
    if (p.end > p.begin) order.push_back(&p);
  std::sort(order.begin(), order.end(), [](const Pending* a, const Pending* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->name < b->name;
  });
  for (size_t i = 1; i < order.size(); ++i) {
    const Pending& a = *order[i - 1];
    const Pending& b = *order[i];
    OBR_CHECK(b.begin >= a.end, file, ": tensors '", a.name, "' [", a.begin, ", ", a.end, ") and '", b.name, "' [",
              b.begin, ", ", b.end, ") overlap");
  }

  // ---- commit to the store ----
  for (const auto& p : pending) {
    auto prev = entries_.find(p.name);
    OBR_CHECK(prev == entries_.end(), "tensor '", p.name, "' is in both ", prev->second.info.file, " and ", file);
  }
  std::shared_ptr<const void> owner = map;
  for (auto& p : pending) entries_[p.name] = Entry{std::move(p.info), data + p.begin, owner};
  for (const auto& m : meta) metadata_.insert(m);  // first file wins
  files_.push_back(file);
}

TensorStore TensorStore::open(const std::string& path) {
  TensorStore s;
  s.path_ = path;
  std::string index, single;
  if (is_dir(path)) {
    if (exists(join(path, kIndexName))) {
      index = join(path, kIndexName);
    } else if (exists(join(path, kSingleName))) {
      single = join(path, kSingleName);
    } else {
      std::vector<std::string> found;
      std::error_code ec;
      for (fs::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec))
        if (ends_with(it->path().filename().string(), ".safetensors")) found.push_back(it->path().filename().string());
      std::sort(found.begin(), found.end());
      std::string list;
      for (size_t i = 0; i < found.size() && i < 8; ++i) list += (i ? ", " : "") + found[i];
      if (found.size() > 8) list += ", ...";
      fail(path, ": no ", kSingleName, " or ", kIndexName, " in this directory",
           found.empty() ? std::string(" (and no .safetensors files)") : " (it has: " + list + "; open one directly)");
    }
  } else if (ends_with(path, ".index.json")) {
    index = path;
  } else {
    single = path;
  }

  if (!single.empty()) {
    s.add_file(single);
    return s;
  }

  // ---- sharded ----
  const json idx = parse_json(read_file(index, kMaxIndexBytes), index);
  OBR_CHECK(idx.is_object(), index, ": expected a JSON object, got ", json_brief(idx));
  auto wm = idx.find("weight_map");
  OBR_CHECK(wm != idx.end() && wm->is_object(), index, ": no \"weight_map\" object");
  const std::string dir = fs::path(index).parent_path().string();
  std::map<std::string, std::string> shard_of;  // tensor -> shard path
  std::set<std::string> shards;
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    OBR_CHECK(it->is_string(), index, ": weight_map entry for tensor '", it.key(), "' is ", json_brief(*it),
              ", expected a file name");
    const std::string& rel = it->get_ref<const std::string&>();
    OBR_CHECK(!rel.empty() && rel[0] != '/', index, ": tensor '", it.key(), "' maps to '", rel,
              "', expected a file name relative to the index's directory");
    for (const auto& part : fs::path(rel))
      OBR_CHECK(part != "..", index, ": tensor '", it.key(), "' maps to '", rel, "', which leaves the directory");
    const std::string shard = join(dir, rel);
    shard_of[it.key()] = shard;
    if (shards.insert(shard).second) {
      std::error_code ec;
      OBR_CHECK(fs::is_regular_file(shard, ec), index, ": shard '", rel, "' (for tensor '", it.key(),
                "') is missing: ", shard, " does not exist or is not a file");
    }
  }
  OBR_CHECK(!shards.empty(), index, ": weight_map is empty");
  for (const auto& f : shards) s.add_file(f);
  for (const auto& t : shard_of) {
    auto e = s.entries_.find(t.first);
    OBR_CHECK(e != s.entries_.end() && e->second.info.file == t.second, index, ": weight_map puts tensor '", t.first,
              "' in ", t.second, ", but that file does not have it",
              e != s.entries_.end() ? " (it is in " + e->second.info.file + ")" : std::string());
  }
  return s;
}

const TensorStore::Entry& TensorStore::entry(const std::string& name) const {
  auto it = entries_.find(name);
  OBR_CHECK(it != entries_.end(), path_, ": no tensor named '", name, "' (", entries_.size(), " tensors in ",
            files_.size() == 1 ? files_[0] : std::to_string(files_.size()) + " files", ")");
  return it->second;
}

bool TensorStore::has(const std::string& name) const { return entries_.count(name) != 0; }

const TensorStore::Info& TensorStore::info(const std::string& name) const { return entry(name).info; }

Tensor TensorStore::get(const std::string& name) const {
  const Entry& e = entry(name);
  const size_t esize = dtype_size(e.info.dtype);
  if (reinterpret_cast<uintptr_t>(e.data) % esize == 0)
    return Tensor::view(e.data, e.info.shape, e.info.dtype, e.owner);
  // Misaligned for its element type (see the header comment): an owned, aligned copy.
  Tensor t = Tensor::zeros(e.info.shape, e.info.dtype);
  if (e.info.nbytes) std::memcpy(t.raw_mut(), e.data, size_t(e.info.nbytes));
  return t;
}

std::vector<std::string> TensorStore::names() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& e : entries_) out.push_back(e.first);
  return out;
}

void TensorStore::drop_pages(const std::string& name) const {
  const Entry& e = entry(name);
  const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (uintptr_t(e.data) + page - 1) / page * page;  // whole pages only
  const uintptr_t end = (uintptr_t(e.data) + e.info.nbytes) / page * page;
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);  // advice: errors change nothing
}

std::string TensorStore::file_of(const std::string& name) const { return entry(name).info.file; }

std::vector<std::string> TensorStore::files() const {
  std::vector<std::string> f = files_;
  std::sort(f.begin(), f.end());
  return f;
}

size_t TensorStore::total_bytes() const {
  size_t sum = 0;
  for (const auto& e : entries_) sum += size_t(e.second.info.nbytes);
  return sum;
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  // Data order: decreasing element size, then name. With the header padded to 8 bytes and
  // no gaps, every tensor then starts at a multiple of its element size.
  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    size_t sa = dtype_size(tensors[a].second.dtype()), sb = dtype_size(tensors[b].second.dtype());
    return sa != sb ? sa > sb : tensors[a].first < tensors[b].first;
  });

  json h = json::object();
  json meta = json::object();
  for (const auto& m : metadata) meta[m.first] = m.second;
  if (!meta.contains("format")) meta["format"] = "pt";
  h["__metadata__"] = meta;
  uint64_t offset = 0;
  for (size_t i : order) {
    const std::string& name = tensors[i].first;
    const Tensor& t = tensors[i].second;
    OBR_CHECK(name != "__metadata__", path, ": '__metadata__' cannot be a tensor name");
    OBR_CHECK(!h.contains(name), path, ": tensor '", name, "' is given twice");
    OBR_CHECK(t.defined(), path, ": tensor '", name, "' is undefined");
    OBR_CHECK(t.is_contiguous(), path, ": tensor '", name, "' is not contiguous");
    h[name] = {{"dtype", dtype_name(t.dtype())}, {"shape", t.shape()}, {"data_offsets", {offset, offset + t.nbytes()}}};
    offset += t.nbytes();
  }
  std::string text;
  try {
    text = h.dump();
  } catch (const json::exception& e) {
    fail(path, ": cannot encode the header (tensor names and metadata must be UTF-8): ", e.what());
  }
  text.append((8 - (8 + text.size()) % 8) % 8, ' ');

  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>((uint64_t(text.size()) >> (8 * i)) & 0xff);
  AtomicFile f(path);
  f.write(len, 8);
  f.write(text.data(), text.size());
  for (size_t i : order)
    if (tensors[i].second.nbytes()) f.write(tensors[i].second.raw(), tensors[i].second.nbytes());
  f.commit();
}

}  // namespace obr
