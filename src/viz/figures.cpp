// The figures of `obr explain --plots DIR` (docs/walkthrough.md shows them):
//   rotation_channels.svg  per-channel max |x| of the layer's input, before / after rotation
//   rotation_hist.svg      distribution of activations and of weights, before / after rotation
//   mask.svg               the mask on the top-left corner of W (dark = kept)
//   weights_obr.svg        distribution of the weights: dense, after pruning, after OBR's
//                          compensations
//   codes_obr.svg          how the 16 W4 levels are used by the kept weights after OBR-GPTQ
//   layer_losses.svg       relative layer loss of each method on every linear (--all-layers)
//   quality.svg            perplexity vs bits per weight from bench/results/quality-*.csv
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "core/check.h"
#include "viz/explain.h"
#include "viz/svg.h"

namespace obr {

namespace {

using viz::Axis;
using viz::Box;
using viz::Plot;
using viz::Style;
using viz::Svg;

std::vector<double> to_d(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }

std::vector<double> iota_d(size_t n) {
  std::vector<double> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = double(i);
  return x;
}

double abs_quantile(const std::vector<float>& v, double q) {
  if (v.empty()) return 1;
  std::vector<float> a;
  a.reserve(v.size());
  for (float x : v) a.push_back(std::fabs(x));
  const size_t k = std::min(a.size() - 1, size_t(q * double(a.size())));
  std::nth_element(a.begin(), a.begin() + long(k), a.end());
  return std::max(1e-12, double(a[k]));
}

double max_count(const std::vector<double>& c) { return c.empty() ? 1 : *std::max_element(c.begin(), c.end()); }

std::string title_of(const ExplainResult& r) {
  const auto& in = r.json["input"];
  if (in.contains("model"))
    return "layer " + std::to_string(in["layer"].get<int>()) + " " + in["linear"].get<std::string>();
  return "W " + in["shape"].dump();
}

void rotation_channels(const ExplainResult& r, const std::string& path) {
  const ExplainData& D = r.data;
  const bool after = !D.chan_max_after.empty();
  Svg svg(760, after ? 520 : 290);
  std::vector<double> all = to_d(D.chan_max_before);
  if (after) all.insert(all.end(), D.chan_max_after.begin(), D.chan_max_after.end());
  const Axis y{0, *std::max_element(all.begin(), all.end()) * 1.05};
  const Axis x{0, double(D.chan_max_before.size())};
  const std::string t = title_of(r);
  {
    Plot p(svg, Box{70, 40, 660, 190}, x, y, t + ": input channels before rotation");
    p.frame("", "max |x| over tokens");
    p.line(iota_d(D.chan_max_before.size()), to_d(D.chan_max_before), Style{viz::palette(1), 1.2}, "max |x|");
    p.line(iota_d(D.chan_rms_before.size()), to_d(D.chan_rms_before), Style{viz::palette(6), 1.2, "4,3"}, "RMS");
    p.legend();
  }
  if (after) {
    Plot p(svg, Box{70, 290, 660, 190}, x, y, "after rotation (same y scale)");
    p.frame("input channel", "max |x| over tokens");
    p.line(iota_d(D.chan_max_after.size()), to_d(D.chan_max_after), Style{viz::palette(0), 1.2}, "max |x|");
    p.line(iota_d(D.chan_rms_after.size()), to_d(D.chan_rms_after), Style{viz::palette(6), 1.2, "4,3"}, "RMS");
    p.legend();
  }
  svg.save(path);
}

void hist_panel(Svg& svg, Box box, const std::vector<float>& before, const std::vector<float>& after,
                const std::string& title, const std::string& xlabel) {
  const double lim = std::max(abs_quantile(before, 1.0), after.empty() ? 0.0 : abs_quantile(after, 1.0)) * 1.02;
  auto hb = viz::histogram(before, -lim, lim, 81);
  std::vector<double> counts = hb.second;
  std::pair<std::vector<double>, std::vector<double>> ha;
  if (!after.empty()) {
    ha = viz::histogram(after, -lim, lim, 81);
    counts.insert(counts.end(), ha.second.begin(), ha.second.end());
  }
  const Axis y{0.5, std::pow(10.0, std::ceil(std::log10(max_count(counts) * 1.5))), true};
  Plot p(svg, box, Axis{-lim, lim}, y, title);
  p.frame(xlabel, "count (log)");
  p.histogram(hb.first, hb.second, Style{viz::palette(1), 1.4}, "before");
  if (!after.empty()) p.histogram(ha.first, ha.second, Style{viz::palette(0), 1.4}, "after");
  p.legend();
}

void rotation_hist(const ExplainResult& r, const std::string& path) {
  const ExplainData& D = r.data;
  Svg svg(820, 330);
  hist_panel(svg, Box{70, 40, 320, 230}, D.x_before, D.x_after, title_of(r) + ": activations", "x");
  hist_panel(svg, Box{470, 40, 320, 230}, D.w_before, D.w_after, "weights W", "W_ij");
  svg.save(path);
}

void mask_figure(const ExplainResult& r, const std::string& path) {
  const ExplainData& D = r.data;
  const int rows = int(std::min<int64_t>(24, D.C_out)), cols = int(std::min<int64_t>(96, D.C_in));
  std::vector<unsigned char> cells(size_t(rows) * size_t(cols));
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j) cells[size_t(i) * size_t(cols) + size_t(j)] = D.mask.data<uint8_t>()[i * D.C_in + j];
  const double cell = 7.5;
  Svg svg(70 + cols * cell + 30, 60 + rows * cell + 50);
  const std::string mask = r.json["options"]["mask"].get<std::string>();
  svg.text(70 + cols * cell / 2, 26, title_of(r) + ": Wanda mask (" + mask + "), rows 0-" + std::to_string(rows - 1) +
                                        ", columns 0-" + std::to_string(cols - 1),
           13, "middle", "#111", 0, true);
  viz::cell_map(svg, Box{70, 40, cols * cell, rows * cell}, cells, rows, cols, "#0072B2", "#f2f2f2");
  for (int j = 0; j < cols; j += 16) svg.text(70 + (j + 0.5) * cell, 40 + rows * cell + 14, std::to_string(j), 10, "middle");
  for (int i = 0; i < rows; i += 4) svg.text(64, 40 + (i + 0.8) * cell, std::to_string(i), 10, "end");
  svg.text(70 + cols * cell / 2, 40 + rows * cell + 32, "input column j (blue = kept, grey = pruned)", 12, "middle");
  svg.text(24, 40 + rows * cell / 2, "output row", 12, "middle", "#222", -90);
  svg.save(path);
}

void weights_figure(const ExplainResult& r, const std::string& path) {
  const ExplainData& D = r.data;
  const std::vector<float> w = std::vector<float>(D.W.data<float>(), D.W.data<float>() + D.W.numel());
  auto vals = [](const Tensor& t) { return std::vector<float>(t.data<float>(), t.data<float>() + t.numel()); };
  const std::vector<float> wbar = vals(D.W_bar), w2 = vals(D.W_2);
  const double lim = abs_quantile(w, 0.999) * 1.6;
  const int bins = 121;
  auto h0 = viz::histogram(w, -lim, lim, bins);
  auto h1 = viz::histogram(wbar, -lim, lim, bins, true);
  auto h2 = viz::histogram(w2, -lim, lim, bins, true);
  const double top = std::max({max_count(h0.second), max_count(h1.second), max_count(h2.second)}) * 1.1;
  Svg svg(820, 330);
  {
    Plot p(svg, Box{70, 40, 320, 230}, Axis{-lim, lim}, Axis{0, top}, title_of(r) + ": pruning");
    p.frame("W_ij", "count");
    p.histogram(h0.first, h0.second, Style{viz::palette(6), 1.2}, "dense W");
    p.histogram(h1.first, h1.second, Style{viz::palette(1), 1.4}, "kept by the mask");
    p.legend();
  }
  {
    const double top2 = std::max({max_count(h1.second), max_count(h2.second)}) * 1.1;
    Plot p(svg, Box{470, 40, 320, 230}, Axis{-lim, lim}, Axis{0, top2}, "OBR compensation (nonzeros)");
    p.frame("W_ij", "count");
    p.histogram(h1.first, h1.second, Style{viz::palette(1), 1.4}, "W * mask");
    p.histogram(h2.first, h2.second, Style{viz::palette(2), 1.4}, "after both compensations");
    p.legend();
  }
  svg.save(path);
}

void final_weights_figure(const ExplainResult& r, const std::string& path) {
  // The final W_hat: every row has its own scale, so the values form 16 levels per row; the
  // histogram of codes shows how the 4-bit levels are used by the kept weights.
  const auto& st = r.json["stages"][6];
  std::vector<double> xs, ys;
  int code = st["lowest_code"].get<int>();
  for (const auto& c : st["kept_code_histogram"]) {
    xs.push_back(code++);
    ys.push_back(c.get<double>());
  }
  Svg svg(520, 320);
  Plot p(svg, Box{80, 40, 400, 220}, Axis{xs.front() - 0.8, xs.back() + 0.8}, Axis{0, max_count(ys) * 1.1},
         title_of(r) + ": W4 codes of the kept weights (OBR-GPTQ)");
  std::vector<std::pair<double, std::string>> ticks;
  for (double x : xs) ticks.push_back({x, std::to_string(int(x))});
  p.frame("code (W_hat = code * scale of the row)", "count", ticks);
  for (size_t i = 0; i < xs.size(); ++i) {
    std::vector<double> bx{xs[i] - 0.35, xs[i] + 0.35}, by{ys[i]};
    p.histogram(bx, by, Style{viz::palette(2), 1, "", 0.6});
  }
  svg.save(path);
}

void layer_losses_figure(const ExplainResult& r, const std::string& path) {
  const auto& L = r.data.layer_losses;
  std::vector<std::string> methods, linears;
  std::map<std::string, std::vector<double>> by_method;
  for (const auto& e : L) {
    if (std::find(methods.begin(), methods.end(), e.method) == methods.end()) methods.push_back(e.method);
    by_method[e.method].push_back(e.relative);
  }
  std::vector<double> all;
  for (const auto& e : L) all.push_back(e.relative);
  const size_t n = by_method[methods[0]].size();
  Svg svg(860, 380);
  Plot p(svg, Box{80, 40, 600, 280}, Axis{-0.5, double(n) - 0.5}, viz::fit_axis(all, true),
         "relative layer loss of every linear (" + r.json["options"]["mask"].get<std::string>() + " + W4)");
  std::vector<std::pair<double, std::string>> ticks;
  int last_layer = -1;
  for (size_t i = 0, k = 0; k < L.size(); ++k) {
    if (L[k].method != methods[0]) continue;
    if (L[k].layer != last_layer) {
      ticks.push_back({double(i), "L" + std::to_string(L[k].layer) + " q"});
      last_layer = L[k].layer;
    }
    ++i;
  }
  p.frame("linear (layer, then q k v o gate up down)", "loss / loss of zero layer (log)", ticks);
  for (size_t m = 0; m < methods.size(); ++m) {
    Style s{viz::palette(int(m)), 1.6};
    if (methods[m] == "rtn" || methods[m] == "gptq") s.dash = "4,3";
    p.line(iota_d(by_method[methods[m]].size()), by_method[methods[m]], s);
    Style mk = s;
    mk.radius = 2.5;
    p.scatter(iota_d(by_method[methods[m]].size()), by_method[methods[m]], mk, methods[m]);
  }
  p.legend(false, true);
  svg.text(696, 160, "dashed: dense W4", 11);
  svg.text(696, 176, "(quantization only)", 11);
  svg.save(path);
}

// ---- the results table --------------------------------------------------------------------

struct Row {
  std::string model, method, sparsity, rotation;
  double ppl;
};

std::vector<Row> read_csv(const std::string& file) {
  std::ifstream in(file);
  std::vector<Row> rows;
  if (!in) return rows;
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::vector<std::string> c;
    std::stringstream ss(line);
    std::string cell;
    while (std::getline(ss, cell, ',')) c.push_back(cell);
    if (c.size() < 5) continue;
    try {
      rows.push_back({c[0], c[1], c[2], c[3], std::stod(c[4])});
    } catch (...) {
    }
  }
  return rows;
}

}  // namespace

bool write_quality_chart(const std::vector<std::string>& csv_files, const std::string& path) {
  std::vector<std::pair<std::string, std::vector<Row>>> panels;
  for (const auto& f : csv_files) {
    std::vector<Row> rows = read_csv(f);
    if (!rows.empty()) panels.push_back({std::filesystem::path(f).filename().string(), rows});
  }
  if (panels.empty()) return false;
  const std::vector<std::string> methods = {"rtn", "gptq", "wanda-gptq", "sparsegpt-gptq", "obr-rtn", "obr-gptq"};
  // Bits per weight of the packed INT4 formats (simd/packed_format.h): dense 4; 50% unstructured
  // 0.125 + 0.5 * 0.5 bytes = 3 bits; 2:4 0.375 bytes = 3 bits (per-row scales not counted).
  const std::vector<std::pair<std::string, std::string>> groups = {
      {"dense", "W4 dense: 4 bit/w (4x)"}, {"50pct", "W4 + 50%: 3 bit/w (5.3x)"}, {"2of4", "W4 + 2:4: 3 bit/w (5.3x)"}};
  const double pw = 380, ph = 300;
  Svg svg(80 + panels.size() * (pw + 70) + 80, ph + 90);
  for (size_t k = 0; k < panels.size(); ++k) {
    const auto& rows = panels[k].second;
    double fp = 0;
    std::vector<double> ys;
    for (const auto& r : rows) {
      if (r.method.rfind("fp", 0) == 0) fp = r.ppl;
      ys.push_back(r.ppl);
    }
    Axis y = viz::fit_axis(ys, false, 0.08);
    Plot p(svg, Box{80 + k * (pw + 70), 40, pw, ph}, Axis{-0.5, 2.5}, y,
           "model " + rows[0].model + " (" + panels[k].first + ")");
    std::vector<std::pair<double, std::string>> ticks;
    for (size_t g = 0; g < groups.size(); ++g) ticks.push_back({double(g), groups[g].second});
    p.frame("", k == 0 ? "perplexity (lower is better)" : "", ticks);
    if (fp > 0) p.hline(fp, Style{"#555", 1, "5,4"}, k == 0 ? "FP (bf16 weights)" : "");
    for (size_t m = 0; m < methods.size(); ++m) {
      for (const char* rot : {"rot", "norot"}) {
        std::vector<double> xs, yv;
        for (size_t g = 0; g < groups.size(); ++g)
          for (const auto& r : rows)
            if (r.method == methods[m] && r.sparsity == groups[g].first && r.rotation == rot) {
              xs.push_back(double(g) - 0.3 + 0.12 * double(m));
              yv.push_back(r.ppl);
            }
        Style s{viz::palette(int(m))};
        s.hollow = std::string(rot) == "norot";
        p.scatter(xs, yv, s, (k == 0 && std::string(rot) == "rot") ? methods[m] : "");
      }
    }
    if (k == 0) p.legend(true);
  }
  const double lx = 80 + panels.size() * (pw + 70) - 50;
  svg.circle(lx + 6, 60, 4, "#444");
  svg.text(lx + 16, 64, "QuaRot rotation", 11);
  svg.circle(lx + 6, 80, 4, "white", "#444", 1.5);
  svg.text(lx + 16, 84, "no rotation", 11);
  svg.text(lx, 110, "compression vs", 11);
  svg.text(lx, 124, "16-bit weights", 11);
  svg.save(path);
  return true;
}

std::vector<std::string> write_explain_plots(const ExplainResult& r, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  OBR_CHECK(!ec && std::filesystem::is_directory(dir), "cannot create plot directory ", dir, ": ", ec.message());
  std::vector<std::string> out;
  auto file = [&](const char* name) {
    out.push_back((std::filesystem::path(dir) / name).string());
    return out.back();
  };
  const size_t stages = r.json.contains("stages") ? r.json["stages"].size() : 0;
  if (stages >= 1) {
    rotation_channels(r, file("rotation_channels.svg"));
    rotation_hist(r, file("rotation_hist.svg"));
  }
  if (stages >= 3) mask_figure(r, file("mask.svg"));
  if (stages >= 7) {
    weights_figure(r, file("weights_obr.svg"));
    final_weights_figure(r, file("codes_obr.svg"));
  }
  if (!r.data.layer_losses.empty()) layer_losses_figure(r, file("layer_losses.svg"));
  return out;
}

}  // namespace obr
