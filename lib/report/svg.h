// The drawing pieces of the report page: HTML escaping, a colour map, one heatmap and one bar chart as inline SVG.
// Pure string builders (no LibTorch); no xmlns or other URL is written, so a page made of them references nothing
// outside itself (inline <svg> in HTML needs no namespace declaration).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ptq::report {

// & < > " ' replaced by entities: safe in element content and in quoted attribute values.
std::string html_escape(std::string_view s);

// "#rrggbb" of t in [0, 1] on viridis (perceptually uniform, still ordered in grey print); NaN: light grey.
std::string viridis(double t);

// Rows × columns of cells coloured by value on [lo, hi] (values outside are clamped; NaN cells are grey).
// Written as <svg class="heatmap" data-rows data-cols> with exactly rows × cols <rect class="c">, one unit square
// each inside a nested viewBox, so the cell grid stretches to the plot without per-cell pixel arithmetic.
struct HeatmapSpec {
  std::string label;  // accessible name (aria-label)
  std::vector<std::vector<double>> values;  // [row][column], all rows of one length
  double lo = 0, hi = 1;
  std::string row_name = "layer";           // axis titles
  std::string column_name = "input channel";
  int64_t column_step = 1;                  // axis units per column (channels per bin)
  int64_t column_units = 0;                 // axis length in units (channels); 0: columns * column_step
  std::string legend_lo, legend_hi, legend_title;  // colour bar ends and its caption
};
std::string svg_heatmap(const HeatmapSpec& spec);

// Horizontal bars, one row per label, one bar per series in each row (grouped); NaN values (and values <= 0 on a
// log scale) draw no bar. Every bar has a <title> with its exact value.
struct BarSeries {
  std::string name, colour;
  std::vector<double> values;  // one per row
};
struct BarChartSpec {
  std::string label;  // accessible name
  std::vector<std::string> rows;
  std::vector<BarSeries> series;
  bool log_scale = false;
  std::string axis_title;
};
std::string svg_bar_chart(const BarChartSpec& spec);

}  // namespace ptq::report
