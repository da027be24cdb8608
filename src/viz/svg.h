// A small SVG writer and chart helper, enough for the figures of `obr explain` (docs/img/):
// histograms, line and scatter charts on linear or log axes, and a cell map for masks.
// No dependency beyond the standard library. Output is deterministic (numbers are written
// with a fixed format), so a figure regenerated from the same numbers is byte-identical.
//
//   Svg svg(640, 400);                                  canvas in pixels (user units)
//   Plot p(svg, {60, 40, 540, 300}, Axis{0, 1}, Axis{1e-3, 10, true}, "title");
//   p.frame("x label", "y label");                      grid, ticks, labels, title
//   p.line(xs, ys, Style{palette(0)}, "series");        data in axis units
//   p.legend();                                          the labelled series, top right
//   svg.save("fig.svg");
//
// Coordinates: SVG's origin is the top left, y grows downwards; Plot maps data to pixels
// (y up), clamping log axes' non-positive values to the axis minimum.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace obr::viz {

// "%.4g"-style number for labels and the shortest fixed form for coordinates.
std::string fmt_label(double v);
std::string fmt_coord(double v);
// Text with &, <, >, " escaped for XML.
std::string xml_escape(const std::string& s);

// Colour i of a colour-blind-safe palette (Okabe-Ito), cycling.
const char* palette(int i);

class Svg {
 public:
  Svg(double width, double height);
  double width() const { return w_; }
  double height() const { return h_; }

  void rect(double x, double y, double w, double h, const std::string& fill, const std::string& stroke = "none",
            double stroke_width = 0, double opacity = 1);
  void line(double x1, double y1, double x2, double y2, const std::string& stroke, double width = 1,
            const std::string& dash = "");
  void polyline(const std::vector<std::pair<double, double>>& pts, const std::string& stroke, double width = 1.5,
                const std::string& dash = "", const std::string& fill = "none", double fill_opacity = 0);
  void circle(double cx, double cy, double r, const std::string& fill, const std::string& stroke = "none",
              double stroke_width = 1);
  // anchor: "start", "middle", "end"; rotate in degrees about (x, y).
  void text(double x, double y, const std::string& s, double size = 12, const std::string& anchor = "start",
            const std::string& fill = "#222", double rotate = 0, bool bold = false);

  std::string str() const;
  void save(const std::string& path) const;  // atomic write

 private:
  double w_, h_;
  std::string body_;
};

struct Box {
  double x, y, w, h;  // pixels
};

struct Axis {
  double lo = 0, hi = 1;
  bool log = false;  // log10 scale (lo > 0)
};

// Ticks for an axis: "nice" steps (1, 2, 5 x 10^k) on linear axes, decades on log axes.
std::vector<double> axis_ticks(const Axis& a, int target = 6);
// [lo, hi] of a set of values widened by `pad` (a fraction) on each side, or decades for log.
Axis fit_axis(const std::vector<double>& values, bool log = false, double pad = 0.05);

struct Style {
  Style(std::string color_ = "#0072B2", double width_ = 1.5, std::string dash_ = "", double fill_opacity_ = 0)
      : color(std::move(color_)), width(width_), dash(std::move(dash_)), fill_opacity(fill_opacity_) {}
  std::string color;
  double width;
  std::string dash;        // e.g. "5,3"
  double fill_opacity;     // polygons under histograms
  bool hollow = false;     // scatter markers: outline only
  double radius = 3.5;     // scatter markers
};

class Plot {
 public:
  Plot(Svg& svg, Box box, Axis x, Axis y, std::string title = "");

  double px(double x) const;
  double py(double y) const;
  const Axis& xaxis() const { return xa_; }
  const Axis& yaxis() const { return ya_; }

  // Grid, ticks with labels, axis labels and title. x_ticks replaces the automatic ones
  // (with their labels) when not empty.
  void frame(const std::string& xlabel, const std::string& ylabel,
             const std::vector<std::pair<double, std::string>>& x_ticks = {});
  void line(const std::vector<double>& xs, const std::vector<double>& ys, const Style& s, const std::string& label = "");
  // A histogram drawn as a step outline over bin edges (edges.size() == counts.size() + 1).
  void histogram(const std::vector<double>& edges, const std::vector<double>& counts, const Style& s,
                 const std::string& label = "");
  void scatter(const std::vector<double>& xs, const std::vector<double>& ys, const Style& s,
               const std::string& label = "");
  void hline(double y, const Style& s, const std::string& label = "");
  // Text at a data position, offset in pixels.
  void annotate(double x, double y, const std::string& s, double dx = 4, double dy = -4, double size = 10);
  // Legend of the labelled series, in a box at the top right (or top left) inside the plot,
  // or just right of the plot when outside.
  void legend(bool left = false, bool outside = false);

 private:
  struct Entry {
    std::string label;
    Style style;
    bool marker;
  };
  Svg& svg_;
  Box b_;
  Axis xa_, ya_;
  std::string title_;
  std::vector<Entry> legend_;
};

// Histogram of values in [lo, hi) with `bins` equal bins; values outside are dropped, and
// exact zeros too when skip_zeros (pruned weights). Returns {edges, counts}.
std::pair<std::vector<double>, std::vector<double>> histogram(const std::vector<float>& v, double lo, double hi,
                                                              int bins, bool skip_zeros = false);

// A rows x cols grid of 0/1 cells (row-major) drawn in `box`: 1 = `on` colour, 0 = `off`.
// Consecutive equal cells of a row are merged into one rectangle.
void cell_map(Svg& svg, Box box, const std::vector<unsigned char>& cells, int rows, int cols, const std::string& on,
              const std::string& off);

}  // namespace obr::viz
