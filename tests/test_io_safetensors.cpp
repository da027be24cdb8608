// safetensors reader/writer and sharded checkpoints: round trips for every dtype, the
// byte layout the Python library expects, misaligned data, and hostile files (every
// truncation, bad headers, bad offsets, broken shard indexes, random corruption), each of
// which must give an obr::Error naming the file (and the tensor, where there is one).
#include <doctest/doctest.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "test_util.h"

using namespace obr;
using namespace obr::testing;
namespace fs = std::filesystem;

namespace {


std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[size_t(i)] = char((n >> (8 * i)) & 0xff);
  return s;
}

// A safetensors file from a header text and a data section.
std::string make_st(const std::string& header, const std::string& data) { return le64(header.size()) + header + data; }

Tensor patterned(const Shape& shape, DType dt, int seed) {
  Tensor t = Tensor::zeros(shape, dt);
  auto* p = static_cast<unsigned char*>(t.raw_mut());
  for (size_t i = 0; i < t.nbytes(); ++i) p[i] = static_cast<unsigned char>(i * 31 + size_t(seed) * 7 + 3);
  return t;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

// One tensor of each dtype, odd sizes so that packing them misaligns naive writers.
std::vector<std::pair<std::string, Tensor>> sample_tensors() {
  return {
      {"model.layers.0.mlp.up_proj.weight", patterned({3, 5}, DType::BF16, 1)},
      {"model.layers.0.self_attn.q_proj.weight", patterned({7}, DType::F32, 2)},
      {"f16", patterned({1, 3}, DType::F16, 3)},
      {"f64", patterned({2, 2}, DType::F64, 4)},
      {"i8", patterned({5}, DType::I8, 5)},
      {"u8", patterned({3}, DType::U8, 6)},
      {"i32", patterned({3}, DType::I32, 7)},
      {"i64", patterned({1}, DType::I64, 8)},
      {"scalar", patterned({}, DType::F32, 9)},
      {"empty", patterned({0, 4}, DType::F32, 10)},
  };
}

}  // namespace

TEST_CASE("io: safetensors round trip for every dtype, with metadata") {
  TempDir dir("obr_test_io_st");
  const std::string path = dir.file("model.safetensors");
  const auto tensors = sample_tensors();
  write_safetensors(path, tensors, {{"obr.method", "obr"}, {"note", "round trip"}});
  CHECK(dir.entries() == 1);

  Tensor kept;
  {
    TensorStore st = TensorStore::open(path);
    CHECK(st.size() == tensors.size());
    auto names = st.names();
    CHECK(std::is_sorted(names.begin(), names.end()));
    size_t bytes = 0;
    for (const auto& nt : tensors) {
      CAPTURE(nt.first);
      REQUIRE(st.has(nt.first));
      Tensor t = st.get(nt.first);
      CHECK(same_bytes(t, nt.second));
      CHECK(st.info(nt.first).dtype == nt.second.dtype());
      CHECK(st.info(nt.first).shape == nt.second.shape());
      CHECK(st.file_of(nt.first) == path);
      // A read-only view, naturally aligned for its element type.
      if (t.numel()) {
        CHECK_THROWS_AS(t.raw_mut(), Error);
        CHECK(reinterpret_cast<uintptr_t>(t.raw()) % dtype_size(t.dtype()) == 0);
      }
      bytes += nt.second.nbytes();
    }
    CHECK(st.total_bytes() == bytes);
    CHECK(st.metadata().at("obr.method") == "obr");
    CHECK(st.metadata().at("note") == "round trip");
    CHECK(st.metadata().at("format") == "pt");
    CHECK(!st.has("lm_head.weight"));
    check_error([&] { st.get("lm_head.weight"); }, {path, "'lm_head.weight'"});
    check_error([&] { st.file_of("nope"); }, {path, "'nope'"});
    kept = st.get("f64");
  }
  // A view keeps its file mapped after the store is gone.
  CHECK(same_bytes(kept, tensors[3].second));
}

TEST_CASE("io: safetensors writer produces the layout the Python library requires") {
  TempDir dir("obr_test_io_st");
  const std::string path = dir.file("m.safetensors");
  write_safetensors(path, sample_tensors());
  const std::string bytes = read_file(path);
  REQUIRE(bytes.size() >= 8);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | static_cast<unsigned char>(bytes[size_t(i)]);
  CHECK((8 + n) % 8 == 0);  // header padded so the data section is 8-byte aligned
  const std::string header = bytes.substr(8, n);
  CHECK(header[0] == '{');
  CHECK(header.find_last_not_of(' ') + 1 == header.find_last_of('}') + 1);  // padding is spaces only
  auto h = nlohmann::json::parse(header);
  // Sorted by offset the tensors tile [0, data size) without gaps, element sizes decreasing.
  std::vector<std::tuple<uint64_t, uint64_t, size_t>> spans;
  for (auto it = h.begin(); it != h.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    DType dt = DType::F32;
    for (DType d : {DType::F32, DType::F64, DType::F16, DType::BF16, DType::I8, DType::U8, DType::I32, DType::I64})
      if (it.value()["dtype"] == dtype_name(d)) dt = d;
    spans.emplace_back(it.value()["data_offsets"][0].get<uint64_t>(), it.value()["data_offsets"][1].get<uint64_t>(),
                       dtype_size(dt));
  }
  std::sort(spans.begin(), spans.end());
  uint64_t at = 0;
  size_t prev_size = 8;
  for (const auto& s : spans) {
    CHECK(std::get<0>(s) == at);
    CHECK(std::get<0>(s) % std::get<2>(s) == 0);
    if (std::get<1>(s) > std::get<0>(s)) {
      CHECK(std::get<2>(s) <= prev_size);
      prev_size = std::get<2>(s);
    }
    at = std::get<1>(s);
  }
  CHECK(8 + n + at == bytes.size());
  CHECK(h["__metadata__"]["format"] == "pt");
}

TEST_CASE("io: safetensors misaligned data still reads correctly") {
  TempDir dir("obr_test_io_st");
  const std::string path = dir.file("odd.safetensors");
  // Header length N = 1 (mod 4): the data section starts at an odd file offset, the F32
  // tensor at 8 + N + 1 = 2 (mod 4), the I64 one at 8 + N + 9 = 2 (mod 4).
  std::string header = R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                       R"("b":{"dtype":"F32","shape":[2],"data_offsets":[1,9]},)"
                       R"("c":{"dtype":"I64","shape":[1],"data_offsets":[9,17]}})";
  while (header.size() % 4 != 1) header += ' ';
  float fv[2] = {1.5f, -2.25f};
  int64_t iv = -1234567890123;
  std::string data = "\x07";
  data.append(reinterpret_cast<const char*>(fv), 8);
  data.append(reinterpret_cast<const char*>(&iv), 8);
  write_bytes(path, make_st(header, data));
  TensorStore st = TensorStore::open(path);
  const Tensor a = st.get("a"), b = st.get("b"), c = st.get("c");
  CHECK(reinterpret_cast<uintptr_t>(b.raw()) % 4 == 0);
  CHECK(reinterpret_cast<uintptr_t>(c.raw()) % 8 == 0);
  CHECK(b.data<float>()[0] == 1.5f);
  CHECK(b.data<float>()[1] == -2.25f);
  CHECK(c.data<int64_t>()[0] == iv);
  CHECK(a.data<uint8_t>()[0] == 7);
}

TEST_CASE("io: safetensors rejects hostile headers with messages naming file and tensor") {
  TempDir dir("obr_test_io_st");
  const std::string path = dir.file("model.safetensors");
  const std::string t = "model.layers.0.mlp.up_proj.weight";
  auto entry = [&](const std::string& body) { return "{\"" + t + "\":" + body + "}"; };
  struct Case {
    std::string header;
    size_t data;
    std::vector<std::string> words;
  };
  const Case cases[] = {
      {"not json at all", 0, {"header", "not valid JSON"}},
      {"{\"a\": ", 0, {"not valid JSON"}},
      {"[1, 2, 3]", 0, {"expected a JSON object"}},
      {"\"text\"", 0, {"expected a JSON object"}},
      {entry("[1]"), 0, {t, "expected an object"}},
      {entry(R"({"shape":[2],"data_offsets":[0,8]})"), 8, {t, "no \"dtype\""}},
      {entry(R"({"dtype":"F32","data_offsets":[0,8]})"), 8, {t, "no \"shape\""}},
      {entry(R"({"dtype":"F32","shape":[2]})"), 8, {t, "no \"data_offsets\""}},
      {entry(R"({"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]})"), 2, {t, "unsupported dtype \"F8_E4M3\""}},
      {entry(R"({"dtype":"f32","shape":[2],"data_offsets":[0,8]})"), 8, {t, "unsupported dtype"}},
      {entry(R"({"dtype":4,"shape":[2],"data_offsets":[0,8]})"), 8, {t, "dtype is 4"}},
      {entry(R"({"dtype":"F32","shape":[-2],"data_offsets":[0,8]})"), 8, {t, "non-negative integer"}},
      {entry(R"({"dtype":"F32","shape":[2.5],"data_offsets":[0,8]})"), 8, {t, "non-negative integer"}},
      {entry(R"({"dtype":"F32","shape":"2","data_offsets":[0,8]})"), 8, {t, "expected an array"}},
      {entry(R"({"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,8]})"), 8, {t, "non-negative"}},
      {entry(R"({"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]})"), 8, {t, "too large"}},
      {entry(R"({"dtype":"F32","shape":[2],"data_offsets":[8,0]})"), 8, {t, "begin > end"}},
      {entry(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8,16]})"), 16, {t, "expected [begin, end]"}},
      {entry(R"({"dtype":"F32","shape":[2],"data_offsets":[0]})"), 8, {t, "expected [begin, end]"}},
      {entry(R"({"dtype":"F32","shape":[2],"data_offsets":{"a":1}})"), 8, {t, "expected [begin, end]"}},
      {entry(R"({"dtype":"F32","shape":[3],"data_offsets":[12,24]})"),
       20,
       {t, "data offsets [12, 24) extend beyond the file's data section (20 bytes)"}},
      {entry(R"({"dtype":"F32","shape":[3],"data_offsets":[0,8]})"), 8, {t, "hold 8 bytes", "needs 12"}},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"I32","shape":[2],"data_offsets":[4,12]}})",
       12,
       {"'a' [0, 8)", "'b' [4, 12)", "overlap"}},
      {R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}})",
       4,
       {"overlap"}},
      {R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})",
       4,
       {"'a' twice"}},
      {R"({"__metadata__":{"format":1}})", 0, {"__metadata__ 'format'", "expected a string"}},
      {R"({"__metadata__":[1]})", 0, {"__metadata__", "expected an object"}},
  };
  for (const Case& c : cases) {
    CAPTURE(c.header);
    write_bytes(path, make_st(c.header, std::string(c.data, '\0')));
    std::vector<std::string> words = c.words;
    words.push_back(path);
    check_error([&] { TensorStore::open(path); }, words);
  }
  // Header length: beyond the file, and over the 100 MB limit.
  write_bytes(path, le64(1000) + "{}");
  check_error([&] { TensorStore::open(path); }, {path, "header length 1000 extends beyond the file (10 bytes)"});
  write_bytes(path, le64(uint64_t(1) << 40) + "{}");
  check_error([&] { TensorStore::open(path); }, {path, "100 MB"});
  write_bytes(path, le64(~uint64_t(0)) + "{}");
  check_error([&] { TensorStore::open(path); }, {path, "header length"});
  write_bytes(path, "abc");
  check_error([&] { TensorStore::open(path); }, {path, "3 bytes"});
  // A deeply nested header is an error, not a stack overflow.
  write_bytes(path, make_st(std::string(100000, '[') + std::string(100000, ']'), ""));
  check_error([&] { TensorStore::open(path); }, {path, "nested deeper than 128 levels"});
  // Valid edge cases: empty header object, zero-size tensors anywhere, gaps between tensors.
  write_bytes(path, make_st("{}", ""));
  CHECK(TensorStore::open(path).size() == 0);
  write_bytes(path, make_st(R"({"z":{"dtype":"F32","shape":[0],"data_offsets":[2,2]},)"
                            R"("a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                            R"("g":{"dtype":"U8","shape":[1],"data_offsets":[6,7]}}   )",
                            std::string(7, '\1')));
  TensorStore ok = TensorStore::open(path);
  CHECK(ok.size() == 3);
  CHECK(ok.get("z").numel() == 0);
  CHECK(ok.total_bytes() == 5);
}

TEST_CASE("io: safetensors every truncation of a valid file is an error naming the file") {
  TempDir dir("obr_test_io_st");
  const std::string good = dir.file("good.safetensors"), cut = dir.file("cut.safetensors");
  write_safetensors(good, {{"w", patterned({3, 4}, DType::BF16, 1)}, {"b", patterned({5}, DType::I8, 2)}});
  const std::string bytes = read_file(good);
  for (size_t n = 0; n < bytes.size(); ++n) {
    CAPTURE(n);
    write_bytes(cut, bytes.substr(0, n));
    std::string msg = error_of([&] { TensorStore::open(cut); });
    CHECK_MESSAGE(msg.find(cut) != std::string::npos, msg);
  }
}

TEST_CASE("io: safetensors random corruption gives a store or an obr::Error, never a crash") {
  TempDir dir("obr_test_io_st");
  const std::string good = dir.file("good.safetensors"), bad = dir.file("bad.safetensors");
  write_safetensors(good, sample_tensors());
  const std::string bytes = read_file(good);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | static_cast<unsigned char>(bytes[size_t(i)]);
  Rng rng(99);
  int opened = 0, errors = 0;
  const char interesting[] = "0123456789[]{},:\"-. eEFIU";
  for (int trial = 0; trial < 3000; ++trial) {
    std::string s = bytes;
    const int flips = 1 + int(rng.below(3));
    for (int k = 0; k < flips; ++k) {
      size_t at = size_t(rng.below(8 + n));
      s[at] = rng.below(2) ? interesting[rng.below(sizeof interesting - 1)] : char(rng.below(256));
    }
    write_bytes(bad, s);
    try {
      TensorStore st = TensorStore::open(bad);
      ++opened;
      for (const auto& name : st.names()) {
        Tensor t = st.get(name);
        CHECK(t.to_f32().numel() == t.numel());  // reads every byte of the tensor
      }
    } catch (const Error& e) {
      ++errors;
      CHECK(std::string(e.what()).find(bad) != std::string::npos);
    }
  }
  CHECK(errors > 0);
  CHECK(opened > 0);
}

TEST_CASE("io: sharded safetensors directory with an index") {
  TempDir dir("obr_test_io_st");
  const std::string s1 = "model-00001-of-00002.safetensors", s2 = "model-00002-of-00002.safetensors";
  Tensor a = patterned({4, 3}, DType::BF16, 1), b = patterned({3}, DType::F32, 2), c = patterned({2, 2}, DType::I8, 3);
  write_safetensors(dir.file(s1), {{"a", a}, {"b", b}}, {{"shard", "1"}});
  write_safetensors(dir.file(s2), {{"c", c}}, {{"shard", "2"}, {"only2", "x"}});
  auto write_index = [&](const nlohmann::json& weight_map) {
    nlohmann::json idx = {{"metadata", {{"total_size", 40}}}, {"weight_map", weight_map}};
    std::string text = idx.dump(2);
    write_file_atomic(dir.file("model.safetensors.index.json"), text.data(), text.size());
  };
  write_index({{"a", s1}, {"b", s1}, {"c", s2}});

  for (const std::string& open_path : {dir.path.string(), dir.file("model.safetensors.index.json")}) {
    CAPTURE(open_path);
    TensorStore st = TensorStore::open(open_path);
    CHECK(st.names() == std::vector<std::string>{"a", "b", "c"});
    CHECK(st.file_of("a") == dir.file(s1));
    CHECK(st.file_of("c") == dir.file(s2));
    CHECK(st.files().size() == 2);
    CHECK(same_bytes(st.get("a"), a));
    CHECK(same_bytes(st.get("b"), b));
    CHECK(same_bytes(st.get("c"), c));
    CHECK(st.total_bytes() == a.nbytes() + b.nbytes() + c.nbytes());
    CHECK(st.metadata().at("shard") == "1");  // first shard wins
    CHECK(st.metadata().at("only2") == "x");
  }

  const std::string index = dir.file("model.safetensors.index.json");
  write_index({{"a", s1}, {"b", s1}, {"c", "model-00003-of-00003.safetensors"}});
  check_error([&] { TensorStore::open(dir.path.string()); },
              {index, "shard 'model-00003-of-00003.safetensors'", "tensor 'c'", "missing"});
  write_index({{"a", s1}, {"b", s2}, {"c", s2}});
  check_error([&] { TensorStore::open(dir.path.string()); }, {index, "'b'", s2, "does not have it", s1});
  write_index({{"a", s1}, {"b", s1}, {"c", "../" + s2}});
  check_error([&] { TensorStore::open(dir.path.string()); }, {index, "leaves the directory"});
  write_index({{"a", s1}, {"b", s1}, {"c", 7}});
  check_error([&] { TensorStore::open(dir.path.string()); }, {index, "'c'", "expected a file name"});
  write_index(nlohmann::json::object());
  check_error([&] { TensorStore::open(dir.path.string()); }, {index, "empty"});
  write_file_atomic(index, "{\"weight_map\": ", 15);
  check_error([&] { TensorStore::open(dir.path.string()); }, {index, "not valid JSON"});
  write_file_atomic(index, "{\"metadata\": {}}", 16);
  check_error([&] { TensorStore::open(dir.path.string()); }, {index, "weight_map"});

  // The same tensor in two shards.
  write_safetensors(dir.file(s2), {{"c", c}, {"a", a}});
  write_index({{"a", s1}, {"b", s1}, {"c", s2}});
  check_error([&] { TensorStore::open(dir.path.string()); }, {"tensor 'a' is in both", s1, s2});

  // Without the index: model.safetensors, then a clear error.
  fs::remove(index);
  check_error([&] { TensorStore::open(dir.path.string()); },
              {dir.path.string(), "no model.safetensors or model.safetensors.index.json", s1});
  write_safetensors(dir.file("model.safetensors"), {{"x", b}});
  CHECK(TensorStore::open(dir.path.string()).names() == std::vector<std::string>{"x"});
  TempDir empty;
  check_error([&] { TensorStore::open(empty.path.string()); }, {empty.path.string(), "no .safetensors files"});
  check_error([&] { TensorStore::open(dir.file("absent.safetensors")); }, {"absent.safetensors", "No such file"});
}

TEST_CASE("io: write_safetensors rejects bad input and writes atomically") {
  TempDir dir("obr_test_io_st");
  const std::string path = dir.file("w.safetensors");
  Tensor x = patterned({2}, DType::F32, 1);
  check_error([&] { write_safetensors(path, {{"x", x}, {"x", x}}); }, {path, "'x' is given twice"});
  check_error([&] { write_safetensors(path, {{"__metadata__", x}}); }, {path, "__metadata__"});
  check_error([&] { write_safetensors(path, {{std::string("bad\xff", 4), x}}); }, {path, "UTF-8"});
  CHECK(dir.entries() == 0);  // failed writes leave nothing behind
  write_safetensors(path, {}, {{"format", "mlx"}});
  TensorStore st = TensorStore::open(path);
  CHECK(st.size() == 0);
  CHECK(st.metadata().at("format") == "mlx");
}
