#include "report/svg.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace ptq::report {

namespace {

constexpr double kCharWidth = 6.6;  // px per character of the 11px labels: sizes the label column

double clamp01(double t) { return std::min(1.0, std::max(0.0, t)); }

// Short numbers for axes and legends: 3 significant digits, no trailing noise.
std::string num(double v) { return fmt::format("{:.3g}", v); }

}  // namespace

std::string html_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string viridis(double t) {
  if (std::isnan(t)) return "#d9d9d9";
  // matplotlib's viridis at 0, 1/8, ..., 1; linear in between.
  static constexpr unsigned char kStops[9][3] = {{68, 1, 84},    {71, 44, 122},  {59, 81, 139},
                                                 {44, 113, 142}, {33, 144, 141}, {39, 173, 129},
                                                 {92, 200, 99},  {170, 220, 50}, {253, 231, 37}};
  const double x = clamp01(t) * 8;
  const int i = std::min(7, static_cast<int>(x));
  const double f = x - i;
  int rgb[3];
  for (int c = 0; c < 3; ++c) rgb[c] = static_cast<int>(std::lround(kStops[i][c] + f * (kStops[i + 1][c] - kStops[i][c])));
  return fmt::format("#{:02x}{:02x}{:02x}", rgb[0], rgb[1], rgb[2]);
}

std::string svg_heatmap(const HeatmapSpec& s) {
  const int64_t rows = static_cast<int64_t>(s.values.size());
  const int64_t cols = rows ? static_cast<int64_t>(s.values[0].size()) : 0;
  const int64_t units = s.column_units > 0 ? s.column_units : cols * s.column_step;
  constexpr int left = 44, top = 6, plot_w = 880;
  // Rows stay readable for a few layers and the figure stays on one screen for 80.
  const int row_h = static_cast<int>(std::clamp<int64_t>(rows ? 300 / rows : 0, 5, 24));
  const int plot_h = static_cast<int>(rows) * row_h;
  const int axis_y = top + plot_h, legend_y = axis_y + 36;
  const int width = left + plot_w + 16, height = legend_y + 30;
  const double span = s.hi > s.lo ? s.hi - s.lo : 1;

  std::string o = fmt::format(
      "<svg class=\"heatmap\" data-rows=\"{}\" data-cols=\"{}\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" "
      "role=\"img\" aria-label=\"{}\">\n",
      rows, cols, width, height, width, height, html_escape(s.label));
  o += fmt::format(
      "<svg x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" preserveAspectRatio=\"none\" "
      "shape-rendering=\"crispEdges\">\n",
      left, top, plot_w, plot_h, cols, rows);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const double v = s.values[r][c];
      o += fmt::format("<rect class=\"c\" x=\"{}\" y=\"{}\" width=\"1\" height=\"1\" fill=\"{}\"/>", c, r,
                       viridis(std::isnan(v) ? v : (v - s.lo) / span));
    }
    o += '\n';
  }
  o += "</svg>\n";
  // Row labels (every k-th when rows are thin), column ticks at quarters of the axis.
  const int64_t every = std::max<int64_t>(1, (12 + row_h - 1) / row_h);
  for (int64_t r = 0; r < rows; r += every)
    o += fmt::format("<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\" dominant-baseline=\"middle\">{}</text>",
                     left - 4, top + (r + 0.5) * row_h, r);
  o += fmt::format("<text x=\"2\" y=\"{}\" class=\"axis\">{}</text>\n", axis_y + 15, html_escape(s.row_name));
  for (int q = 0; q <= 4; ++q) {
    const int64_t unit = q == 4 ? std::max<int64_t>(0, units - 1) : units * q / 4;
    const double x = left + plot_w * (units ? double(unit) / double(units) : 0);
    o += fmt::format("<line x1=\"{0:.1f}\" x2=\"{0:.1f}\" y1=\"{1}\" y2=\"{2}\" class=\"tick\"/>", x, axis_y, axis_y + 4);
    o += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{}</text>", x, axis_y + 15, unit);
  }
  o += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" class=\"axis\">{}</text>\n", left + plot_w / 2,
                   axis_y + 29, html_escape(s.column_name));
  // Colour bar: 32 steps from lo to hi.
  constexpr int steps = 32, step_w = 6;
  o += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>", left + 60, legend_y + 10,
                   html_escape(s.legend_lo));
  for (int i = 0; i < steps; ++i)
    o += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"12\" fill=\"{}\"/>", left + 64 + i * step_w,
                     legend_y, step_w, viridis((i + 0.5) / steps));
  o += fmt::format("<text x=\"{}\" y=\"{}\">{}</text>", left + 68 + steps * step_w, legend_y + 10,
                   html_escape(s.legend_hi));
  o += fmt::format("<text x=\"{}\" y=\"{}\" class=\"axis\">{}</text>\n", left + 140 + steps * step_w, legend_y + 10,
                   html_escape(s.legend_title));
  o += "</svg>\n";
  return o;
}

std::string svg_bar_chart(const BarChartSpec& s) {
  const int64_t rows = static_cast<int64_t>(s.rows.size());
  const int nser = static_cast<int>(s.series.size());
  size_t longest = 0;
  for (const auto& r : s.rows) longest = std::max(longest, r.size());
  const int left = static_cast<int>(std::clamp(longest * kCharWidth + 10, 60.0, 300.0));
  constexpr int top = 22, plot_w = 600, bar_h = 8;
  const int row_h = nser * bar_h + 4;
  const int plot_h = static_cast<int>(rows) * row_h;
  const int width = left + plot_w + 24, height = top + plot_h + 34;

  double vmin = INFINITY, vmax = -INFINITY;
  for (const auto& ser : s.series)
    for (double v : ser.values)
      if (std::isfinite(v) && (!s.log_scale || v > 0)) vmin = std::min(vmin, v), vmax = std::max(vmax, v);
  // The axis: on a log scale, ticks at 1-2-5 steps around the data (decades only when that makes more than ten), so
  // values within one decade still spread over the plot; 0..max with five ticks otherwise. lo, hi: the axis ends
  // (log10 on a log scale).
  double lo = 0, hi = 1;
  std::vector<std::pair<double, std::string>> ticks;
  if (s.log_scale) {
    if (!(vmax >= vmin)) vmin = 0.1, vmax = 1;
    std::vector<double> steps;
    for (const std::vector<int>& mantissas : {std::vector<int>{1, 2, 5}, std::vector<int>{1}}) {
      steps.clear();
      for (int e = static_cast<int>(std::floor(std::log10(vmin))) - 1; e <= static_cast<int>(std::ceil(std::log10(vmax))) + 1; ++e)
        for (int m : mantissas) steps.push_back(m * std::pow(10.0, e));
      const auto first = std::upper_bound(steps.begin(), steps.end(), vmin) - 1;  // largest step <= vmin
      const auto last = std::lower_bound(steps.begin(), steps.end(), vmax);      // smallest step >= vmax
      steps.assign(first, std::max(last, first + 1) + 1);
      if (steps.size() <= 10) break;
    }
    lo = std::log10(steps.front());
    hi = std::log10(steps.back());
    for (double v : steps) ticks.push_back({v, fmt::format("{:g}", v)});
  } else {
    hi = vmax > 0 ? vmax * 1.05 : 1;
    for (int q = 0; q <= 4; ++q) ticks.push_back({hi * q / 4, num(hi * q / 4)});
  }
  auto xpos = [&](double v) {
    const double t = s.log_scale ? (std::log10(v) - lo) / (hi - lo) : v / (hi - lo);
    return left + plot_w * clamp01(t);
  };

  std::string o = fmt::format(
      "<svg class=\"bars\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" role=\"img\" aria-label=\"{}\">\n", width,
      height, width, height, html_escape(s.label));
  for (int k = 0; k < nser; ++k)  // legend
    o += fmt::format("<rect x=\"{}\" y=\"4\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"13\">{}</text>",
                     left + k * 160, s.series[k].colour, left + k * 160 + 14, html_escape(s.series[k].name));
  o += '\n';
  for (const auto& [v, text] : ticks) {
    const double x = xpos(v);
    o += fmt::format("<line x1=\"{0:.1f}\" x2=\"{0:.1f}\" y1=\"{1}\" y2=\"{2}\" class=\"grid\"/>", x, top, top + plot_h + 4);
    o += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{}</text>", x, top + plot_h + 16, text);
  }
  o += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" class=\"axis\">{}</text>\n", left + plot_w / 2,
                   top + plot_h + 30, html_escape(s.axis_title));
  for (int64_t r = 0; r < rows; ++r) {
    const int y = top + static_cast<int>(r) * row_h;
    o += fmt::format("<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\" dominant-baseline=\"middle\">{}</text>", left - 4,
                     y + row_h / 2.0, html_escape(s.rows[r]));
    for (int k = 0; k < nser; ++k) {
      const double v = r < static_cast<int64_t>(s.series[k].values.size()) ? s.series[k].values[r] : NAN;
      if (!std::isfinite(v) || (s.log_scale && v <= 0)) continue;
      const double x0 = s.log_scale ? left : xpos(0), x1 = xpos(v);
      o += fmt::format(
          "<rect x=\"{:.1f}\" y=\"{}\" width=\"{:.1f}\" height=\"{}\" fill=\"{}\"><title>{} {}: {:.4g}</title></rect>",
          x0, y + 2 + k * bar_h, std::max(0.5, x1 - x0), bar_h - 1, s.series[k].colour, html_escape(s.rows[r]),
          html_escape(s.series[k].name), v);
    }
    o += '\n';
  }
  o += "</svg>\n";
  return o;
}

}  // namespace ptq::report
