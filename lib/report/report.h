// `ptq report`: the figures that describe one quantized checkpoint (provenance, activation ranges before and
// after migration, per-module weight error, the bits map, quality against FP), gathered into ReportData by
// build_report_data(), written as one self-contained HTML page by render_report_html() (inline CSS and SVG, no
// network) and as JSON by ReportData::to_json() (the same numbers the page draws).
//
// HTML layout (what tests and scripts may rely on): one <section id="..."> per figure group, in this order:
//   provenance, activation-ranges, weight-error, bits-map, quality.
// Every heatmap is an <svg class="heatmap" data-rows="R" data-cols="C"> holding exactly R×C
// <rect class="c"> cells (row = decoder layer, column = input channel, or a bin of adjacent channels when a point
// is wider than kMaxHeatmapColumns). The page's one inline script sets data-report="ok" on <html> when every
// section is present and nothing (a script error, a blocked resource) went wrong while it loaded; otherwise
// data-report names what failed.
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "eval/perplexity.h"
#include "eval/tasks.h"

namespace ptq {

// Heatmaps wider than this many channels show bins of ceil(channels / kMaxHeatmapColumns) adjacent channels, each
// drawn with the largest value of its bin (an outlier channel stays visible); a 7B model's 11008-channel down_proj
// input would otherwise be 350k SVG cells.
constexpr int64_t kMaxHeatmapColumns = 512;

constexpr const char* kReportSections[] = {"provenance", "activation-ranges", "weight-error", "bits-map", "quality"};

// Per-channel max|x| of one input point in every decoder layer.
struct ChannelHeatmap {
  int64_t channels = 0;  // input channels of the point
  int64_t bin = 1;       // channels per column: columns = ceil(channels / bin)
  std::vector<std::vector<double>> absmax;  // [layer][column]; NaN where unknown
};

// One input point of the decoder layers (migration.h ActPoint): its ranges as calibrated on the FP model and, where
// the checkpoint lets them be recovered exactly, as the quantized model's consumers see them after migration.
struct ActivationFigure {
  std::string point;      // "attn", "o", "mlp", "down"
  std::string consumers;  // "q_proj, k_proj, v_proj"
  ChannelHeatmap before;
  std::optional<ChannelHeatmap> after;
  std::string note;  // how `after` was obtained, or why there is none
};

// One linear module of the decoder layers, quantized or kept floating point.
struct ModuleFigure {
  std::string module;  // full path, e.g. model.layers.3.self_attn.q_proj
  int64_t layer = 0;
  std::string kind;    // linear_key: "q", "k", "v", "o", "gate", "up", "down"
  int bits = 0;        // weight code bits; 0: floating point
  std::string format, method;
  double bits_per_weight = 0;  // stored bits per weight (codes, scales, zeros)
  std::string fp_reason;       // why it stayed floating point (bits == 0)
  // Distortion recorded when it was quantized (quant/metrics.h); NaN where the checkpoint has none (output errors
  // need a Hessian: GPTQ, or RTN fed one).
  double nmse = NAN, snr_db = NAN, output_error = NAN, rtn_output_error = NAN;
  std::string activation;           // activation scheme, empty: FP inputs
  std::vector<std::string> folded;  // transforms folded into the module
};

struct TaskScore {
  double acc = NAN, acc_stderr = NAN;
  double acc_norm = NAN;  // multiple choice only
};

// One evaluated model of the quality table.
struct QualityRow {
  std::string label;  // "FP" or "quantized"
  std::string path;
  double ppl = NAN;              // NaN: not measured
  std::vector<TaskScore> tasks;  // in QualityFigure::tasks order
};

struct QualityFigure {
  std::string data, data_sha256;  // perplexity text ("" when none)
  int64_t seqlen = 0, windows = 0, predicted = 0;
  std::vector<std::string> tasks;  // task names
  std::vector<QualityRow> rows;    // FP first when measured
  std::string note;                // which flags add what is missing
};

struct ReportData {
  std::string model;  // the quantized checkpoint, as given
  std::vector<std::pair<std::string, std::string>> provenance;  // (label, value), in display order
  int64_t layers = 0;
  std::vector<std::string> module_kinds;  // bits-map columns: the kinds present, in forward order
  std::vector<ModuleFigure> modules;      // by layer, then kind
  std::string stats;                      // calibration stats file, "" when none
  std::vector<ActivationFigure> activations;
  std::string activations_note;  // shown instead when there are no activation figures
  QualityFigure quality;

  nlohmann::json to_json() const;
};

struct ReportOptions {
  std::string quantized;  // ptq (or imported GPTQ / compressed-tensors) checkpoint
  // The FP model: the reference of the migration recovery and of the quality table, and the model the stats file
  // must have been made for. Empty: the checkpoint's provenance source_model when that directory exists.
  std::string fp;
  std::string stats;  // `ptq calibrate` stats of the FP model ("" none)
  std::string data;   // text for perplexity ("" none)
  PerplexityOptions ppl;
  std::vector<std::string> tasks;  // JSONL task files
  int64_t task_limit = 0;          // first N items of each task (0: all)
  TaskOptions task_opts;
};

// Full-resolution rows of per-channel values (rows may differ in length: a split widens one layer's input) as the
// drawn grid: rows padded with NaN to the widest, bins of adjacent channels (kMaxHeatmapColumns) keeping their max.
ChannelHeatmap make_channel_heatmap(const std::vector<std::vector<double>>& rows);

// Reads the checkpoint (and the FP model, stats, evaluations the options ask for). Throws std::invalid_argument
// for a model that is not quantized, a stats file made for another model, or one that needs an FP model to check.
ReportData build_report_data(const ReportOptions& opts);

// The self-contained HTML page (layout above). Pure: the same data gives the same bytes. Every string from the
// data is escaped.
std::string render_report_html(const ReportData& data);

}  // namespace ptq
