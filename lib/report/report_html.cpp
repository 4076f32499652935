// render_report_html: ReportData as one self-contained page (layout: report/report.h).
#include "report/report.h"

#include <algorithm>
#include <cmath>
#include <map>

#include <fmt/format.h>

#include "report/svg.h"

namespace ptq {

namespace {

using report::html_escape;

// The page forbids itself every fetch (Content-Security-Policy): a reference to anything outside the file is a
// console error, which the browser test catches, rather than a silent network request.
constexpr const char* kHead = R"(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="ptq.output" content="ptq report">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
)";

constexpr const char* kStyle = R"(<style>
body { font: 14px/1.45 system-ui, sans-serif; color: #1b1b1b; max-width: 1000px; margin: 0 auto; padding: 0 16px 40px; }
h1 { font-size: 22px; margin: 20px 0 2px; } h2 { font-size: 18px; margin: 28px 0 6px; border-bottom: 1px solid #ddd; }
h3 { font-size: 15px; margin: 18px 0 4px; } nav a { margin-right: 12px; } .sub { color: #555; margin: 0; }
table { border-collapse: collapse; } td, th { padding: 2px 10px 2px 0; text-align: left; vertical-align: top; }
th { font-weight: 600; } .num { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #555; background: #f6f6f6; padding: 6px 10px; border-left: 3px solid #bbb; }
code { background: #f2f2f2; padding: 0 3px; } svg { display: block; max-width: 100%; height: auto; }
svg text { font: 11px system-ui, sans-serif; fill: #333; } svg .axis { fill: #666; }
svg .tick, svg .grid { stroke: #ccc; stroke-width: 1; }
table.bits td, table.bits th { width: 52px; text-align: center; border: 1px solid #fff; padding: 2px; }
table.bits td.fp { background: #e0e0e0; color: #555; } figure { margin: 8px 0 14px; } figcaption { color: #555; }
</style>
)";

// Every section present and no error or blocked resource while loading -> data-report="ok" on <html> (what the
// browser test reads from the rendered DOM). The listeners are registered in <head>, before any content; the verdict
// waits for the load event and one more turn, since blocked-resource reports arrive asynchronously.
constexpr const char* kErrorListener = R"(<script>
window.ptqErrors = [];
window.addEventListener('error', function (e) { window.ptqErrors.push('error: ' + e.message); });
document.addEventListener('securitypolicyviolation', function (e) { window.ptqErrors.push('blocked: ' + e.blockedURI); });
</script>
)";

std::string check_script() {
  std::string ids;
  for (const char* id : kReportSections) ids += fmt::format("{}'{}'", ids.empty() ? "" : ", ", id);
  return fmt::format(R"(<script>
window.addEventListener('load', function () {{ setTimeout(function () {{
  var missing = [{}].filter(function (id) {{ return !document.getElementById(id); }});
  var problems = window.ptqErrors.concat(missing.map(function (id) {{ return 'missing section ' + id; }}));
  document.documentElement.setAttribute('data-report', problems.length ? problems.join('; ') : 'ok');
}}, 0); }});
</script>
)",
                     ids);
}

std::string num(double v, const char* f = "{:.4g}") { return std::isnan(v) ? "-" : fmt::format(fmt::runtime(f), v); }

std::string section_provenance(const ReportData& d) {
  std::string o = "<section id=\"provenance\">\n<h2>Provenance</h2>\n<table>\n";
  for (const auto& [k, v] : d.provenance) o += fmt::format("<tr><th>{}</th><td>{}</td></tr>\n", html_escape(k), html_escape(v));
  return o + "</table>\n</section>\n";
}

// "model.layers.3.self_attn.q_proj" -> "3.self_attn.q_proj": bar labels without the shared prefix.
std::string short_module(const ModuleFigure& m) {
  const std::string needle = "layers.";
  const size_t at = m.module.find(needle);
  return at == std::string::npos ? m.module : m.module.substr(at + needle.size());
}

// One heatmap figure on a shared log10 colour scale, with its largest cell named in the caption.
std::string heatmap_figure(const ChannelHeatmap& h, const std::string& title, double lo, double hi) {
  report::HeatmapSpec spec;
  spec.label = title;
  double top = -1;
  size_t top_r = 0, top_c = 0;
  for (size_t r = 0; r < h.absmax.size(); ++r) {
    std::vector<double> row;
    for (size_t c = 0; c < h.absmax[r].size(); ++c) {
      const double v = h.absmax[r][c];
      // Zeros (padding channels) take the bottom of the scale; NaN stays NaN (grey).
      row.push_back(std::isnan(v) ? v : v > 0 ? std::log10(v) : lo);
      if (v > top) top = v, top_r = r, top_c = c;
    }
    spec.values.push_back(std::move(row));
  }
  spec.lo = lo;
  spec.hi = hi;
  spec.column_step = h.bin;
  spec.column_units = h.channels;
  spec.column_name = h.bin > 1 ? fmt::format("input channel (bins of {}, each its max)", h.bin) : "input channel";
  spec.legend_lo = num(std::pow(10.0, lo), "{:.3g}");
  spec.legend_hi = num(std::pow(10.0, hi), "{:.3g}");
  spec.legend_title = "max |x| over the calibration tokens (log colour scale)";
  std::string caption = html_escape(title);
  if (top >= 0) {
    std::vector<double> row;
    for (double v : h.absmax[top_r])
      if (!std::isnan(v)) row.push_back(v);
    std::nth_element(row.begin(), row.begin() + row.size() / 2, row.end());
    const double median = row[row.size() / 2];
    const std::string where = h.bin > 1 ? fmt::format("channels {}..{}", top_c * h.bin, top_c * h.bin + h.bin - 1)
                                        : fmt::format("channel {}", top_c);
    caption += fmt::format(": largest {} in {} of layer {}", num(top), where, top_r);
    if (median > 0) caption += fmt::format(" ({:.1f}x that layer's median)", top / median);
  }
  return "<figure>\n" + report::svg_heatmap(spec) + "<figcaption>" + caption + "</figcaption>\n</figure>\n";
}

// log10 range of the positive finite values of some heatmaps (one colour scale for "before" and "after").
std::pair<double, double> log_range(std::initializer_list<const ChannelHeatmap*> maps) {
  double lo = INFINITY, hi = -INFINITY;
  for (const ChannelHeatmap* h : maps)
    if (h)
      for (const auto& row : h->absmax)
        for (double v : row)
          if (v > 0 && std::isfinite(v)) lo = std::min(lo, std::log10(v)), hi = std::max(hi, std::log10(v));
  if (!(hi >= lo)) return {0, 1};
  return {lo, hi > lo ? hi : lo + 1};
}

std::string section_activations(const ReportData& d) {
  std::string o = "<section id=\"activation-ranges\">\n<h2>Activation ranges</h2>\n";
  if (d.activations.empty())
    return o + "<p class=\"note\">" + html_escape(d.activations_note) + "</p>\n</section>\n";
  o += "<p>Per decoder layer (row) and input channel (column): the largest |x| over the calibration tokens of the FP "
       "model (" + html_escape(d.stats) + "). Outlier channels show as bright columns. Where the checkpoint folded a "
       "migration into the norm weights, the second map shows the same input as the quantized model's consumers see "
       "it, on the same colour scale.</p>\n";
  for (const auto& a : d.activations) {
    o += fmt::format("<h3>{} input ({})</h3>\n", html_escape(a.point), html_escape(a.consumers));
    const auto [lo, hi] = log_range({&a.before, a.after ? &*a.after : nullptr});
    o += heatmap_figure(a.before, (a.after ? "before migration: " : "FP model: ") + a.point + " input", lo, hi);
    if (a.after) o += heatmap_figure(*a.after, "after migration: " + a.point + " input", lo, hi);
    o += "<p class=\"note\">" + html_escape(a.note) + "</p>\n";
  }
  return o + "</section>\n";
}

std::string section_weight_error(const ReportData& d) {
  std::string o = "<section id=\"weight-error\">\n<h2>Weight error per module</h2>\n";
  std::vector<const ModuleFigure*> q;
  for (const auto& m : d.modules)
    if (m.bits > 0) q.push_back(&m);
  report::BarChartSpec nmse;
  nmse.label = "weight NMSE per module";
  nmse.log_scale = true;
  nmse.axis_title = "NMSE = |W - Q(W)|^2 / |W|^2 (log scale)";
  nmse.series.push_back({"weight NMSE", "#3b528b", {}});
  for (const ModuleFigure* m : q) {
    nmse.rows.push_back(short_module(*m));
    nmse.series[0].values.push_back(m->nmse);
  }
  o += "<h3>Weight NMSE</h3>\n<figure>\n" + report::svg_bar_chart(nmse) + "</figure>\n";

  int with_output = 0, better = 0;
  std::vector<double> ratios;
  for (const ModuleFigure* m : q)
    if (!std::isnan(m->output_error)) {
      ++with_output;
      if (!std::isnan(m->rtn_output_error) && m->rtn_output_error > 0) {
        ratios.push_back(m->output_error / m->rtn_output_error);
        better += m->output_error < m->rtn_output_error;
      }
    }
  o += "<h3>Output error on the calibration inputs</h3>\n";
  if (with_output == 0)
    return o + "<p class=\"note\">The checkpoint records no output error: it needs the calibration Hessian, which "
               "GPTQ recipes use (e.g. <code>--recipe configs/w4a16-gptq.yaml</code>).</p>\n</section>\n";
  report::BarChartSpec out;
  out.label = "output error per module, this method vs RTN";
  out.log_scale = true;
  out.axis_title = "tr(dW H dW^T) / 2 = |X dW^T|^2 / n on the calibration inputs (log scale)";
  const std::string method = q.front()->method.empty() ? "this method" : q.front()->method;
  out.series.push_back({method, "#21908d", {}});
  out.series.push_back({"RTN, same grid", "#fde725", {}});
  for (const ModuleFigure* m : q) {
    out.rows.push_back(short_module(*m));
    out.series[0].values.push_back(m->output_error);
    out.series[1].values.push_back(m->rtn_output_error);
  }
  if (!ratios.empty()) {
    std::nth_element(ratios.begin(), ratios.begin() + ratios.size() / 2, ratios.end());
    o += fmt::format("<p>{} is below RTN on {} of {} modules; median ratio {:.3f}.</p>\n", html_escape(method), better,
                     ratios.size(), ratios[ratios.size() / 2]);
  }
  return o + "<figure>\n" + report::svg_bar_chart(out) + "</figure>\n</section>\n";
}

// Discrete colours by code bits (2..8): red for the fewest bits to green for the most.
std::string bits_colour(int bits) {
  static constexpr const char* kColours[] = {"#d73027", "#fc8d59", "#fee08b", "#d9ef8b", "#91cf60", "#66bd63", "#1a9850"};
  return kColours[std::clamp(bits, 2, 8) - 2];
}

std::string section_bits(const ReportData& d) {
  std::string o = "<section id=\"bits-map\">\n<h2>Bits per module</h2>\n<table class=\"bits\">\n<tr><th>layer</th>";
  for (const auto& k : d.module_kinds) o += "<th>" + html_escape(k) + "</th>";
  o += "</tr>\n";
  std::map<std::pair<int64_t, std::string>, const ModuleFigure*> grid;
  int fp = 0;
  for (const auto& m : d.modules) {
    grid[{m.layer, m.kind}] = &m;
    fp += m.bits == 0;
  }
  for (int64_t i = 0; i < d.layers; ++i) {
    o += fmt::format("<tr><th>{}</th>", i);
    for (const auto& k : d.module_kinds) {
      auto it = grid.find({i, k});
      if (it == grid.end()) {
        o += "<td></td>";
      } else if (it->second->bits == 0) {
        o += "<td class=\"fp\" title=\"" + html_escape(it->second->module + ": floating point (" + it->second->fp_reason + ")") +
             "\">FP</td>";
      } else {
        const ModuleFigure& m = *it->second;
        o += fmt::format("<td style=\"background:{}\" title=\"{}\">{}</td>", bits_colour(m.bits),
                         html_escape(fmt::format("{}: {}, {}, {:.3f} bits per weight stored", m.module, m.format,
                                                 m.method, m.bits_per_weight)),
                         m.bits);
      }
    }
    o += "</tr>\n";
  }
  o += "</table>\n<p>Cells: weight code bits (colour: ";
  for (int b = 2; b <= 8; ++b) o += fmt::format("<span style=\"background:{};padding:0 4px\">{}</span> ", bits_colour(b), b);
  o += "), <span style=\"background:#e0e0e0;padding:0 4px\">FP</span> kept floating point. Hover for the format.</p>\n";
  if (fp > 0) {
    o += fmt::format("<details><summary>{} modules kept floating point</summary><ul>\n", fp);
    for (const auto& m : d.modules)
      if (m.bits == 0) o += "<li>" + html_escape(m.module + ": " + m.fp_reason) + "</li>\n";
    o += "</ul></details>\n";
  }
  return o + "</section>\n";
}

std::string section_quality(const ReportData& d) {
  const QualityFigure& q = d.quality;
  std::string o = "<section id=\"quality\">\n<h2>Quality against FP</h2>\n";
  if (!q.rows.empty()) {
    const bool ppl = !q.data.empty();
    const QualityRow* fp = q.rows.front().label == "FP" ? &q.rows.front() : nullptr;
    o += "<table>\n<tr><th>model</th>";
    if (ppl) o += "<th class=\"num\">perplexity</th><th class=\"num\">vs FP</th>";
    for (const auto& t : q.tasks) o += "<th class=\"num\">" + html_escape(t) + " acc</th>";
    o += "</tr>\n";
    for (const auto& r : q.rows) {
      o += "<tr><td>" + html_escape(r.label + " (" + r.path + ")") + "</td>";
      if (ppl) {
        o += "<td class=\"num\">" + num(r.ppl, "{:.4f}") + "</td><td class=\"num\">";
        o += fp && &r != fp && fp->ppl > 0 ? fmt::format("{:+.2f}%", 100 * (r.ppl / fp->ppl - 1)) : "";
        o += "</td>";
      }
      for (const auto& t : r.tasks) o += "<td class=\"num\">" + num(t.acc, "{:.4f}") + " ± " + num(t.acc_stderr, "{:.4f}") + "</td>";
      o += "</tr>\n";
    }
    o += "</table>\n";
    if (ppl)
      o += "<p>" + html_escape(fmt::format("Perplexity on {} (sha256 {:.12}...): {} windows of {} tokens, {} tokens "
                                           "scored; the packed runner with fp32 activations, as `ptq eval ppl`.",
                                           q.data, q.data_sha256, q.windows, q.seqlen, q.predicted)) +
           "</p>\n";
  }
  if (!q.note.empty()) o += "<p class=\"note\">" + html_escape(q.note) + "</p>\n";
  return o + "</section>\n";
}

}  // namespace

std::string render_report_html(const ReportData& d) {
  std::string o = kHead;
  o += "<title>ptq report: " + html_escape(d.model) + "</title>\n";
  o += kStyle;
  o += kErrorListener;
  o += "</head>\n<body>\n<h1>ptq report</h1>\n<p class=\"sub\">" + html_escape(d.model) + "</p>\n<nav>";
  for (const char* id : kReportSections) o += fmt::format("<a href=\"#{0}\">{0}</a>", id);
  o += "</nav>\n";
  o += section_provenance(d);
  o += section_activations(d);
  o += section_weight_error(d);
  o += section_bits(d);
  o += section_quality(d);
  o += check_script();
  return o + "</body>\n</html>\n";
}

}  // namespace ptq
