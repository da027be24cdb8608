// Checkpoint and resume of `obr compress` (src/compress/checkpoint.h): a run stopped after any
// layer and resumed gives the same bits as one uninterrupted run, in the library (an exception
// from the per-layer callback stands for the kill) and through the CLI with a real SIGKILL.
// Also: fingerprint mismatches and a leftover checkpoint are clear errors, and the memory estimate.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include <nlohmann/json.hpp>

#include "compress/checkpoint.h"
#include "compress/compressed_model.h"
#include "compress/memory_estimate.h"
#include "compress/pipeline.h"
#include "core/log.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "model/synthetic.h"
#include "test_model_dir.h"

using namespace obr;
using obr::testing::write_model_dir;
namespace fs = std::filesystem;

namespace {

ModelConfig robust_config(int layers) {
  ModelConfig c;
  c.model_type = "llama";
  c.hidden_size = 64;
  c.intermediate_size = 160;  // 40 * 4: a non-power-of-two Hadamard
  c.num_hidden_layers = layers;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.head_dim = 32;
  c.vocab_size = 101;
  c.max_position_embeddings = 64;
  c.rms_norm_eps = 1e-5;
  return c;
}

std::vector<std::vector<int32_t>> robust_calib(int n, int T, uint64_t seed) {
  Rng r(seed);
  std::vector<int32_t> ids(1000);
  for (auto& t : ids) t = int32_t(r.below(101));
  return calibration_windows(ids, n, T, seed);
}

// A fresh temporary directory, removed at scope exit.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    path = fs::temp_directory_path() / ("obr_robust_" + tag + "_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    if (std::getenv("OBR_KEEP_TMP")) return;
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

void require_same_reports(const CompressReport& a, const CompressReport& b) {
  REQUIRE(a.linears.size() == b.linears.size());
  for (size_t i = 0; i < a.linears.size(); ++i) {
    const LinearRecord &x = a.linears[i], &y = b.linears[i];
    INFO("record ", i, ": layer ", x.layer, " ", proj_name(x.proj));
    CHECK(x.layer == y.layer);
    CHECK(x.proj == y.proj);
    CHECK(same_bits(x.codes, y.codes));
    CHECK(same_bits(x.scales, y.scales));
    CHECK(same_bits(x.mask, y.mask));
    CHECK(std::memcmp(&x.loss, &y.loss, sizeof x.loss) == 0);
  }
}

void require_same_weights(const LlamaModel& a, const LlamaModel& b) {
  REQUIRE(a.layers.size() == b.layers.size());
  for (size_t l = 0; l < a.layers.size(); ++l)
    for (int j = 0; j < kNumProj; ++j) {
      INFO("layer ", l, " ", proj_name(Proj(j)));
      auto* da = dynamic_cast<const DenseLinear*>(a.layers[l].proj[size_t(j)].get());
      auto* db = dynamic_cast<const DenseLinear*>(b.layers[l].proj[size_t(j)].get());
      REQUIRE((da && db));
      CHECK(same_bits(da->weight(), db->weight()));
    }
}

struct Stop {};  // thrown from on_layer: the "kill"

// OBR-GPTQ with 50% sparsity, without the weight clip search (the slow part at these sizes).
CompressOptions robust_options() {
  CompressOptions opt;
  opt.solve.wq.clip_search = false;
  return opt;
}

// Silences progress lines and runs on one thread for the scope (results do not depend on
// the thread count; one thread keeps these tests fast on a loaded machine).
struct QuietOneThread {
  bool was_quiet = log_quiet();
  int was_threads = num_threads();
  QuietOneThread() {
    set_log_quiet(true);
    set_num_threads(1);
  }
  ~QuietOneThread() {
    set_log_quiet(was_quiet);
    set_num_threads(was_threads);
  }
};

CheckpointFingerprint fingerprint_of(const ModelConfig& cfg, const std::vector<std::vector<int32_t>>& calib,
                                     const CompressOptions& opt) {
  return CheckpointFingerprint::of(cfg.to_json(), calib, opt);
}

}  // namespace

TEST_CASE("robust: checkpointed runs stopped after any layer resume to the bits of an uninterrupted run") {
  QuietOneThread quiet;
  const ModelConfig cfg = robust_config(3);
  const auto calib = robust_calib(3, 32, 7);
  const CompressOptions opt = robust_options();
  LlamaModel ref = random_llama(cfg, 21);
  rotate_model(ref, opt.rotation);
  const CompressReport want = compress_model(ref, calib, opt);

  TempDir tmp("lib");
  const std::string dir = (tmp.path / "out.partial").string();
  const auto fp = fingerprint_of(cfg, calib, opt);

  {  // (a) uninterrupted, with a checkpoint
    Checkpoint ck = Checkpoint::open(dir, fp, opt, false);
    LlamaModel m = random_llama(cfg, 21);
    rotate_model(m, opt.rotation);
    const CompressReport got = compress_model(m, calib, opt, {}, &ck);
    require_same_reports(want, got);
    require_same_weights(ref, m);
    const auto j = nlohmann::json::parse(read_file(dir + "/checkpoint.json"));
    CHECK(j.at("layers_done").get<int>() == 3);
    CHECK(j.at("inputs").get<std::string>().empty());  // nothing reads the last layer's outputs
    ck.remove();
    CHECK(!fs::exists(dir));
  }

  {  // (b) stopped after layer 0, then after layer 1, resumed twice
    for (int stop_after : {0, 1}) {
      Checkpoint ck = Checkpoint::open(dir, fp, opt, /*resume=*/stop_after > 0);
      CHECK(ck.layers_done() == stop_after);
      LlamaModel m = random_llama(cfg, 21);
      rotate_model(m, opt.rotation);
      auto stop = [&](int l, double) {
        if (l == stop_after) throw Stop{};
      };
      CHECK_THROWS_AS(compress_model(m, calib, opt, stop, &ck), Stop);
      // Only the finished layers' files and the next layer's inputs are there.
      std::vector<std::string> names;
      for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
      std::sort(names.begin(), names.end());
      std::vector<std::string> expect = {"checkpoint.json"};
      expect.push_back("inputs_layer_00" + std::to_string(stop_after + 1) + ".safetensors");
      for (int l = 0; l <= stop_after; ++l) expect.push_back("layer_00" + std::to_string(l) + ".safetensors");
      std::sort(expect.begin(), expect.end());
      CHECK(names == expect);
    }
    // A temporary left by a write that was killed half-way is cleaned up on open.
    { write_file_atomic(dir + "/junk.txt", "x", 1); }
    std::string stale = dir + "/layer_002.safetensors.tmp.99999";
    write_file_atomic(stale, "partial", 7);
    Checkpoint ck = Checkpoint::open(dir, fp, opt, true);
    CHECK(ck.layers_done() == 2);
    CHECK(!fs::exists(stale));
    CHECK(fs::exists(dir + "/junk.txt"));  // not ours: left alone
    LlamaModel m = random_llama(cfg, 21);
    rotate_model(m, opt.rotation);
    int calls = 0;
    const CompressReport got = compress_model(m, calib, opt, [&](int l, double) { CHECK(l == 2); ++calls; }, &ck);
    CHECK(calls == 1);
    require_same_reports(want, got);
    require_same_weights(ref, m);
  }
}

TEST_CASE("robust: a leftover checkpoint or a fingerprint mismatch is a clear error") {
  QuietOneThread quiet;
  const ModelConfig cfg = robust_config(2);
  const auto calib = robust_calib(2, 32, 8);
  const CompressOptions opt = robust_options();
  TempDir tmp("fp");
  const std::string dir = (tmp.path / "out.partial").string();
  {
    Checkpoint ck = Checkpoint::open(dir, fingerprint_of(cfg, calib, opt), opt, false);
    LlamaModel m = random_llama(cfg, 3);
    rotate_model(m, opt.rotation);
    CHECK_THROWS_AS(compress_model(m, calib, opt, [](int, double) { throw Stop{}; }, &ck), Stop);
  }
  // Without resume: says what to do.
  CHECK_THROWS_WITH_AS(Checkpoint::open(dir, fingerprint_of(cfg, calib, opt), opt, false),
                       doctest::Contains("pass --resume to continue it, or remove the directory"), Error);
  // Other options: names each one that changed.
  CompressOptions other = opt;
  other.solve.method = Method::GPTQ;
  other.nsamples = 16;
  CHECK_THROWS_WITH_AS(Checkpoint::open(dir, fingerprint_of(cfg, calib, other), other, true),
                       doctest::Contains("options differ: method \"obr-gptq\" -> \"gptq\", nsamples 32 -> 16"), Error);
  // Another config.json / other calibration tokens.
  ModelConfig cfg2 = cfg;
  cfg2.rms_norm_eps = 1e-6;
  CHECK_THROWS_WITH_AS(Checkpoint::open(dir, fingerprint_of(cfg2, calib, opt), opt, true),
                       doctest::Contains("config.json differs"), Error);
  CHECK_THROWS_WITH_AS(Checkpoint::open(dir, fingerprint_of(cfg, robust_calib(2, 32, 9), opt), opt, true),
                       doctest::Contains("the calibration token ids differ"), Error);
  // --resume without a checkpoint starts at layer 0; the directory appears with the first layer.
  const std::string absent = (tmp.path / "absent.partial").string();
  CHECK(Checkpoint::open(absent, fingerprint_of(cfg, calib, opt), opt, true).layers_done() == 0);
  CHECK(!fs::exists(absent));
  // The matching fingerprint resumes.
  CHECK(Checkpoint::open(dir, fingerprint_of(cfg, calib, opt), opt, true).layers_done() == 1);
  // A corrupt checkpoint.json is an error naming the file.
  write_file_atomic(dir + "/checkpoint.json", "{\"format\": 1", 12);
  CHECK_THROWS_WITH_AS(Checkpoint::open(dir, fingerprint_of(cfg, calib, opt), opt, true),
                       doctest::Contains("checkpoint.json"), Error);
}

TEST_CASE("robust: memory estimate of obr compress") {
  // Llama-2-7B, 128 x 2048 calibration (the reference's), OBR 50%, 16 threads.
  ModelConfig c = robust_config(32);
  c.hidden_size = 4096;
  c.intermediate_size = 11008;
  c.num_attention_heads = c.num_key_value_heads = 32;
  c.head_dim = 128;
  c.vocab_size = 32000;
  CompressOptions opt;
  opt.nsamples = 128;
  opt.seqlen = 2048;
  const MemoryEstimate e = estimate_compress_memory(c, opt, 16);
  CHECK(e.weights == 6738415616ull * 4);
  CHECK(e.activations == 128ull * 2048 * 4096 * 8 + 32ull * 2048 * 4096 * 8);
  CHECK(e.records == 32ull * (4 * 4096ull * 4096 + 3 * 4096ull * 11008) * 2);
  CHECK(e.hessian == 11008ull * 11008 * 24);                 // down_proj's input
  CHECK(e.solve == 16ull * 5504 * 5504 * 8 + 4096ull * 11008 * 14);
  CHECK(e.total() == e.weights + e.activations + e.records + e.hessian + e.solve);
  // Halving the samples saves half of the activations' first term.
  opt.nsamples = 64;
  CHECK(estimate_compress_memory(c, opt, 16).activations == e.activations - 64ull * 2048 * 4096 * 8);
  CHECK(e.describe().find("weights 25.10 GiB") != std::string::npos);

  CHECK(parse_mem_available("MemTotal:       24000000 kB\nMemFree:  1 kB\nMemAvailable:   22000000 kB\n") ==
        22000000ull * 1024);
  CHECK(parse_mem_available("MemTotal: 5 kB\n") == 0);
  CHECK(available_memory_bytes() > 0);
}

// ---------------------------------------------------------------- through the CLI, with SIGKILL

namespace {

// The obr binary next to this test binary, or "" if it was not built.
std::string obr_binary() {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return "";
  const fs::path obr = self.parent_path() / "obr";
  return fs::exists(obr) ? obr.string() : "";
}

// Starts `obr args...` with stdout and stderr appended to `log`.
pid_t spawn(const std::string& obr, const std::vector<std::string>& args, const std::string& log) {
  std::vector<std::string> all = {obr};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : all) argv.push_back(s.data());
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    ::execv(obr.c_str(), argv.data());
    ::_exit(127);
  }
  return pid;
}

int wait_exit(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Random lowercase words: plenty of tokens for a few short windows.
void write_calibration_text(const fs::path& file, int words, uint64_t seed) {
  Rng r(seed);
  std::string s;
  for (int w = 0; w < words; ++w) {
    const int len = 2 + int(r.below(7));
    for (int i = 0; i < len; ++i) s += char('a' + r.below(26));
    s += w % 12 == 11 ? ".\n" : " ";
  }
  write_file_atomic(file.string(), s.data(), s.size());
}

int layers_done(const fs::path& partial) {
  try {
    return nlohmann::json::parse(read_file((partial / "checkpoint.json").string())).at("layers_done").get<int>();
  } catch (...) {
    return -1;  // not there yet
  }
}

}  // namespace

TEST_CASE("robust: obr compress killed with SIGKILL resumes to a byte-identical model.safetensors") {
  const std::string obr = obr_binary();
  if (obr.empty()) {
    MESSAGE("skipped: no obr binary next to the test binary (build the `obr` target)");
    return;
  }
  TempDir tmp("cli");
  // About 50 ms a layer, so that the run is still going when the first checkpoint is seen.
  ModelConfig cfg = robust_config(6);
  cfg.hidden_size = 128;
  cfg.intermediate_size = 320;
  cfg.num_attention_heads = 4;
  cfg.num_key_value_heads = 2;
  cfg.vocab_size = 4096;  // the tiny tokenizer's
  cfg.max_position_embeddings = 512;
  write_model_dir(tmp.path / "model", cfg, 33);
  write_calibration_text(tmp.path / "calib.txt", 3000, 5);
  const std::string log = (tmp.path / "log.txt").string();
  auto args = [&](const std::string& out) {
    return std::vector<std::string>{"compress", (tmp.path / "model").string(), "-o", out, "--calib",
                                    (tmp.path / "calib.txt").string(), "--nsamples", "8", "--seqlen", "128",
                                    "--method", "gptq", "--no-clip-search", "--threads", "1"};
  };
  INFO("obr log: ", log);

  const std::string ref = (tmp.path / "ref").string();
  REQUIRE(wait_exit(spawn(obr, args(ref), log)) == 0);
  REQUIRE(fs::exists(ref + "/model.safetensors"));
  CHECK(!fs::exists(ref + ".partial"));

  const std::string out = (tmp.path / "out").string();
  const fs::path partial = out + ".partial";
  const pid_t pid = spawn(obr, args(out), log);
  int status = 0, seen = -1;
  bool output_appeared = false;
  const auto t0 = std::chrono::steady_clock::now();
  for (;;) {
    seen = layers_done(partial);
    output_appeared |= fs::exists(out);
    if (seen >= 1) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      break;
    }
    if (::waitpid(pid, &status, WNOHANG) == pid) break;  // finished (or failed) before we could kill it
    REQUIRE(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(120));
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  REQUIRE_MESSAGE(WIFSIGNALED(status), "obr finished before a checkpoint could be seen; see ", log);
  CHECK(WTERMSIG(status) == SIGKILL);
  CHECK(!output_appeared);
  CHECK(!fs::exists(out));  // nothing under the final name until the run completes
  CHECK(layers_done(partial) < cfg.num_hidden_layers);
  MESSAGE("killed after ", layers_done(partial), " of ", cfg.num_hidden_layers, " layers were checkpointed");

  // Without --resume the leftover checkpoint is refused, and kept.
  const std::string refuse_log = (tmp.path / "refuse.txt").string();
  CHECK(wait_exit(spawn(obr, args(out), refuse_log)) != 0);
  CHECK(read_file(refuse_log).find("pass --resume") != std::string::npos);
  CHECK(fs::exists(partial / "checkpoint.json"));

  // --resume finishes the run: the same bytes as the uninterrupted one, and no checkpoint left.
  auto resume = args(out);
  resume.push_back("--resume");
  REQUIRE(wait_exit(spawn(obr, resume, log)) == 0);
  CHECK(!fs::exists(partial));
  CHECK(read_file(out + "/model.safetensors") == read_file(ref + "/model.safetensors"));
}
