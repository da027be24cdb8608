#include "viz/svg.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "core/check.h"
#include "io/atomic_file.h"

namespace obr::viz {

std::string fmt_label(double v) {
  if (v == 0) return "0";
  char buf[32];
  const double a = std::fabs(v);
  if (a >= 1e-3 && a < 1e5)
    std::snprintf(buf, sizeof buf, "%.4g", v);
  else
    std::snprintf(buf, sizeof buf, "%.0e", v);  // 1e-05, 1e+06
  std::string s = buf;
  // 1e-05 -> 1e-5, 1e+06 -> 1e6
  size_t e = s.find('e');
  if (e != std::string::npos) {
    std::string mant = s.substr(0, e), ex = s.substr(e + 1);
    const bool neg = ex[0] == '-';
    ex = ex.substr(1);
    while (ex.size() > 1 && ex[0] == '0') ex.erase(0, 1);
    s = mant + "e" + (neg ? "-" : "") + ex;
  }
  return s;
}

std::string fmt_coord(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  std::string s = buf;
  while (!s.empty() && s.back() == '0') s.pop_back();
  if (!s.empty() && s.back() == '.') s.pop_back();
  if (s == "-0") s = "0";
  return s;
}

std::string xml_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

const char* palette(int i) {
  static const char* k[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"};
  return k[((i % 8) + 8) % 8];
}

Svg::Svg(double width, double height) : w_(width), h_(height) {
  OBR_CHECK(width > 0 && height > 0, "Svg: size must be positive, got ", width, " x ", height);
}

void Svg::rect(double x, double y, double w, double h, const std::string& fill, const std::string& stroke,
               double stroke_width, double opacity) {
  body_ += "<rect x=\"" + fmt_coord(x) + "\" y=\"" + fmt_coord(y) + "\" width=\"" + fmt_coord(w) + "\" height=\"" +
           fmt_coord(h) + "\" fill=\"" + fill + "\"";
  if (stroke != "none") body_ += " stroke=\"" + stroke + "\" stroke-width=\"" + fmt_coord(stroke_width) + "\"";
  if (opacity < 1) body_ += " fill-opacity=\"" + fmt_coord(opacity) + "\"";
  body_ += "/>\n";
}

void Svg::line(double x1, double y1, double x2, double y2, const std::string& stroke, double width,
               const std::string& dash) {
  body_ += "<line x1=\"" + fmt_coord(x1) + "\" y1=\"" + fmt_coord(y1) + "\" x2=\"" + fmt_coord(x2) + "\" y2=\"" +
           fmt_coord(y2) + "\" stroke=\"" + stroke + "\" stroke-width=\"" + fmt_coord(width) + "\"";
  if (!dash.empty()) body_ += " stroke-dasharray=\"" + dash + "\"";
  body_ += "/>\n";
}

void Svg::polyline(const std::vector<std::pair<double, double>>& pts, const std::string& stroke, double width,
                   const std::string& dash, const std::string& fill, double fill_opacity) {
  if (pts.empty()) return;
  body_ += fill == "none" ? "<polyline points=\"" : "<polygon points=\"";
  for (size_t i = 0; i < pts.size(); ++i)
    body_ += (i ? " " : "") + fmt_coord(pts[i].first) + "," + fmt_coord(pts[i].second);
  body_ += "\" fill=\"" + fill + "\"";
  if (fill != "none") body_ += " fill-opacity=\"" + fmt_coord(fill_opacity) + "\"";
  body_ += " stroke=\"" + stroke + "\" stroke-width=\"" + fmt_coord(width) + "\" stroke-linejoin=\"round\"";
  if (!dash.empty()) body_ += " stroke-dasharray=\"" + dash + "\"";
  body_ += "/>\n";
}

void Svg::circle(double cx, double cy, double r, const std::string& fill, const std::string& stroke,
                 double stroke_width) {
  body_ += "<circle cx=\"" + fmt_coord(cx) + "\" cy=\"" + fmt_coord(cy) + "\" r=\"" + fmt_coord(r) + "\" fill=\"" +
           fill + "\"";
  if (stroke != "none") body_ += " stroke=\"" + stroke + "\" stroke-width=\"" + fmt_coord(stroke_width) + "\"";
  body_ += "/>\n";
}

void Svg::text(double x, double y, const std::string& s, double size, const std::string& anchor,
               const std::string& fill, double rotate, bool bold) {
  body_ += "<text x=\"" + fmt_coord(x) + "\" y=\"" + fmt_coord(y) + "\" font-size=\"" + fmt_coord(size) +
           "\" text-anchor=\"" + anchor + "\" fill=\"" + fill + "\"";
  if (bold) body_ += " font-weight=\"bold\"";
  if (rotate != 0)
    body_ += " transform=\"rotate(" + fmt_coord(rotate) + " " + fmt_coord(x) + " " + fmt_coord(y) + ")\"";
  body_ += ">" + xml_escape(s) + "</text>\n";
}

std::string Svg::str() const {
  return "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + fmt_coord(w_) + "\" height=\"" + fmt_coord(h_) +
         "\" viewBox=\"0 0 " + fmt_coord(w_) + " " + fmt_coord(h_) +
         "\" font-family=\"Helvetica, Arial, sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n" +
         body_ + "</svg>\n";
}

void Svg::save(const std::string& path) const {
  const std::string s = str();
  write_file_atomic(path, s.data(), s.size());
}

std::vector<double> axis_ticks(const Axis& a, int target) {
  std::vector<double> t;
  if (a.log) {
    const int e0 = int(std::ceil(std::log10(a.lo) - 1e-9)), e1 = int(std::floor(std::log10(a.hi) + 1e-9));
    const int step = std::max(1, (e1 - e0 + target - 1) / std::max(1, target));
    for (int e = e0; e <= e1; e += step) t.push_back(std::pow(10.0, e));
    return t;
  }
  const double span = a.hi - a.lo;
  if (!(span > 0)) return {a.lo};
  const double raw = span / std::max(1, target), mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  // k * step, printed and read back at 12 digits so that 3 * 0.2 is 0.6, not 0.6000000000000001.
  for (long long k = (long long)std::ceil(a.lo / step - 1e-9); double(k) * step <= a.hi + step * 1e-9; ++k) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.12g", double(k) * step);
    t.push_back(k == 0 ? 0.0 : std::strtod(buf, nullptr));
  }
  return t;
}

Axis fit_axis(const std::vector<double>& values, bool log, double pad) {
  double lo = HUGE_VAL, hi = -HUGE_VAL;
  for (double v : values) {
    if (!std::isfinite(v) || (log && v <= 0)) continue;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  if (!(lo <= hi)) return log ? Axis{1, 10, true} : Axis{0, 1, false};
  if (log) return Axis{std::pow(10.0, std::floor(std::log10(lo))), std::pow(10.0, std::ceil(std::log10(hi) + 1e-12)), true};
  const double span = hi > lo ? hi - lo : std::max(1.0, std::fabs(hi));
  return Axis{lo - pad * span, hi + pad * span, false};
}

Plot::Plot(Svg& svg, Box box, Axis x, Axis y, std::string title)
    : svg_(svg), b_(box), xa_(x), ya_(y), title_(std::move(title)) {
  OBR_CHECK(xa_.hi > xa_.lo && ya_.hi > ya_.lo, "Plot: empty axis range");
  OBR_CHECK((!xa_.log || xa_.lo > 0) && (!ya_.log || ya_.lo > 0), "Plot: log axis needs lo > 0");
}

static double frac(const Axis& a, double v) {
  if (a.log) {
    v = std::max(v, a.lo);
    return (std::log10(v) - std::log10(a.lo)) / (std::log10(a.hi) - std::log10(a.lo));
  }
  return (v - a.lo) / (a.hi - a.lo);
}

double Plot::px(double x) const { return b_.x + frac(xa_, x) * b_.w; }
double Plot::py(double y) const { return b_.y + b_.h - frac(ya_, y) * b_.h; }

void Plot::frame(const std::string& xlabel, const std::string& ylabel,
                 const std::vector<std::pair<double, std::string>>& x_ticks) {
  svg_.rect(b_.x, b_.y, b_.w, b_.h, "#fbfbfb", "#888", 1);
  std::vector<std::pair<double, std::string>> xt = x_ticks;
  if (xt.empty())
    for (double v : axis_ticks(xa_)) xt.push_back({v, fmt_label(v)});
  for (const auto& t : xt) {
    const double x = px(t.first);
    if (x < b_.x - 0.5 || x > b_.x + b_.w + 0.5) continue;
    svg_.line(x, b_.y, x, b_.y + b_.h, "#e4e4e4", 1);
    svg_.line(x, b_.y + b_.h, x, b_.y + b_.h + 4, "#888", 1);
    svg_.text(x, b_.y + b_.h + 16, t.second, 10, "middle", "#444");
  }
  for (double v : axis_ticks(ya_, 5)) {
    const double y = py(v);
    if (y < b_.y - 0.5 || y > b_.y + b_.h + 0.5) continue;
    svg_.line(b_.x, y, b_.x + b_.w, y, "#e4e4e4", 1);
    svg_.line(b_.x - 4, y, b_.x, y, "#888", 1);
    svg_.text(b_.x - 6, y + 3.5, fmt_label(v), 10, "end", "#444");
  }
  if (!xlabel.empty()) svg_.text(b_.x + b_.w / 2, b_.y + b_.h + 34, xlabel, 12, "middle");
  if (!ylabel.empty()) svg_.text(b_.x - 46, b_.y + b_.h / 2, ylabel, 12, "middle", "#222", -90);
  if (!title_.empty()) svg_.text(b_.x + b_.w / 2, b_.y - 10, title_, 13, "middle", "#111", 0, true);
}

void Plot::line(const std::vector<double>& xs, const std::vector<double>& ys, const Style& s,
                const std::string& label) {
  std::vector<std::pair<double, double>> pts;
  for (size_t i = 0; i < std::min(xs.size(), ys.size()); ++i) pts.push_back({px(xs[i]), py(ys[i])});
  svg_.polyline(pts, s.color, s.width, s.dash);
  if (!label.empty()) legend_.push_back({label, s, false});
}

void Plot::histogram(const std::vector<double>& edges, const std::vector<double>& counts, const Style& s,
                     const std::string& label) {
  OBR_CHECK(edges.size() == counts.size() + 1, "Plot::histogram: ", edges.size(), " edges for ", counts.size(),
            " counts");
  const double base = ya_.log ? ya_.lo : std::max(ya_.lo, 0.0);
  std::vector<std::pair<double, double>> pts{{px(edges[0]), py(base)}};
  for (size_t i = 0; i < counts.size(); ++i) {
    const double c = ya_.log && counts[i] <= 0 ? base : counts[i];
    pts.push_back({px(edges[i]), py(c)});
    pts.push_back({px(edges[i + 1]), py(c)});
  }
  pts.push_back({px(edges.back()), py(base)});
  if (s.fill_opacity > 0)
    svg_.polyline(pts, s.color, s.width, s.dash, s.color, s.fill_opacity);
  else
    svg_.polyline(pts, s.color, s.width, s.dash);
  if (!label.empty()) legend_.push_back({label, s, false});
}

void Plot::scatter(const std::vector<double>& xs, const std::vector<double>& ys, const Style& s,
                   const std::string& label) {
  for (size_t i = 0; i < std::min(xs.size(), ys.size()); ++i) {
    if (s.hollow)
      svg_.circle(px(xs[i]), py(ys[i]), s.radius, "white", s.color, 1.5);
    else
      svg_.circle(px(xs[i]), py(ys[i]), s.radius, s.color);
  }
  if (!label.empty()) legend_.push_back({label, s, true});
}

void Plot::hline(double y, const Style& s, const std::string& label) {
  svg_.line(b_.x, py(y), b_.x + b_.w, py(y), s.color, s.width, s.dash);
  if (!label.empty()) legend_.push_back({label, s, false});
}

void Plot::annotate(double x, double y, const std::string& s, double dx, double dy, double size) {
  svg_.text(px(x) + dx, py(y) + dy, s, size, "start", "#333");
}

void Plot::legend(bool left, bool outside) {
  if (legend_.empty()) return;
  size_t longest = 0;
  for (const auto& e : legend_) longest = std::max(longest, e.label.size());
  const double w = 34 + 6.2 * double(longest), h = 8 + 16 * double(legend_.size());
  const double x = outside ? b_.x + b_.w + 10 : left ? b_.x + 8 : b_.x + b_.w - w - 8, y = outside ? b_.y : b_.y + 8;
  svg_.rect(x, y, w, h, "white", "#bbb", 1, 0.9);
  for (size_t i = 0; i < legend_.size(); ++i) {
    const Entry& e = legend_[i];
    const double yy = y + 12 + 16 * double(i);
    if (e.marker) {
      if (e.style.hollow)
        svg_.circle(x + 14, yy, e.style.radius, "white", e.style.color, 1.5);
      else
        svg_.circle(x + 14, yy, e.style.radius, e.style.color);
    } else {
      svg_.line(x + 6, yy, x + 22, yy, e.style.color, std::max(2.0, e.style.width), e.style.dash);
    }
    svg_.text(x + 28, yy + 4, e.label, 11, "start", "#222");
  }
}

std::pair<std::vector<double>, std::vector<double>> histogram(const std::vector<float>& v, double lo, double hi,
                                                              int bins, bool skip_zeros) {
  OBR_CHECK(bins > 0 && hi > lo, "histogram: need bins > 0 and hi > lo, got ", bins, ", [", lo, ", ", hi, ")");
  std::vector<double> edges(size_t(bins) + 1), counts(size_t(bins), 0.0);
  for (int i = 0; i <= bins; ++i) edges[size_t(i)] = lo + (hi - lo) * double(i) / bins;
  for (float x : v) {
    if (skip_zeros && x == 0.0f) continue;
    const double f = (double(x) - lo) / (hi - lo) * bins;
    if (!(f >= 0) || f >= bins) continue;
    counts[size_t(f)] += 1;
  }
  return {edges, counts};
}

void cell_map(Svg& svg, Box box, const std::vector<unsigned char>& cells, int rows, int cols, const std::string& on,
              const std::string& off) {
  OBR_CHECK(rows > 0 && cols > 0 && cells.size() == size_t(rows) * size_t(cols), "cell_map: ", cells.size(),
            " cells for ", rows, " x ", cols);
  svg.rect(box.x, box.y, box.w, box.h, off);
  const double cw = box.w / cols, ch = box.h / rows;
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols;) {
      if (!cells[size_t(r) * cols + c]) {
        ++c;
        continue;
      }
      int e = c;
      while (e < cols && cells[size_t(r) * cols + e]) ++e;
      svg.rect(box.x + c * cw, box.y + r * ch, (e - c) * cw, ch, on);
      c = e;
    }
  }
  svg.rect(box.x, box.y, box.w, box.h, "none", "#666", 1);
}

}  // namespace obr::viz
