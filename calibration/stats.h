// Calibration statistics: the statistic names, the observation points of a decoder layer, the stats
// file (versioned safetensors) and the model fingerprint that ties a stats file to its model.
//
// Stats file layout (format "ptq.calibration", version kCalibrationFormatVersion):
//   tensors "<point>.input.<stat>", <point> the module path of the point's first consumer
//   (e.g. "model.layers.3.self_attn.q_proj"), <stat> a StatTraits name; F32 except "tokens" (I64 [1]).
//   Shapes: per-channel [in], per-tensor [1], "hessian" [in, in].
//   __metadata__ (all strings): format, format_version, model_fingerprint, model, model_type, layers,
//   points (JSON: [{"name", "layer", "consumers": ["q", "k", "v"], "in_features"}]), stats (names, comma
//   separated), data_source ("synthetic" for random tokens), data_sha256, nsamples, seqlen, seed, tokens (per point),
//   text_tokens, percentile_method, tool, created (ISO 8601 UTC).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "model/model.h"

namespace ptq {

constexpr const char* kCalibrationFormat = "ptq.calibration";
constexpr int kCalibrationFormatVersion = 1;

// Statistics of a linear module's input X [tokens, in]. The order is the table order of stat_traits().
enum class Stat : uint8_t {
  Tokens,        // tokens observed
  Min,           // per channel min_t X_tj
  Max,           // per channel max_t X_tj
  AbsMax,        // per channel max_t |X_tj| (SmoothQuant, FPTQ LAE, MergeQuant)
  MeanAbs,       // per channel mean_t |X_tj|
  SumSq,         // per channel sum_t X_tj^2 (llama.cpp imatrix; mixed-precision sensitivity)
  MidrangeMean,  // per channel mean over samples of (max_t + min_t) / 2 (OutlierTune)
  TensorAbsMax,  // max |X| (FPTQ layer policy)
  AbsP99,        // percentiles of |X| over all elements (log histogram, relative error <= 2^-8)
  AbsP99_9,
  AbsP99_99,
  Hessian,       // (2/n) sum x x^T over n sequences, fp32 (GPTQ)
};
constexpr int kNumStats = 12;

enum class StatShape : uint8_t { Count, Channel, Scalar, Matrix };  // [1] I64, [in], [1], [in, in]

struct StatTraits {
  Stat stat;
  const char* name;  // tensor suffix; part of the file format: append, never rename
  StatShape shape;
  double quantile;   // percentile stats: the quantile of |x|; others 0
};

const StatTraits& stat_traits(Stat s);
inline const char* stat_name(Stat s) { return stat_traits(s).name; }
std::optional<Stat> stat_from_name(std::string_view name);

class StatSet {
 public:
  StatSet() = default;
  StatSet(std::initializer_list<Stat> stats);
  StatSet& add(Stat s);
  bool has(Stat s) const { return (bits_ >> static_cast<int>(s)) & 1u; }
  std::vector<Stat> list() const;  // table order
  std::string names() const;       // "tokens,min,..."

 private:
  uint32_t bits_ = 0;
};

// Every statistic except the Hessian (in^2 floats per point, opt in with --hessian).
StatSet default_stats();

// One distinct linear input of a decoder layer: q/k/v share one, gate/up (OPT: fc1) one, o and down their own.
struct InputPoint {
  int64_t layer = 0;
  LinearId first = LinearId::Q;    // first consumer; names the point
  std::vector<LinearId> consumers;
  int64_t in_features = 0;
  std::string name;                // module path of `first`, e.g. "model.layers.3.self_attn.q_proj"
};

std::vector<InputPoint> layer_input_points(const ModelConfig& cfg, int64_t layer);
// Short architecture-independent key of a linear module ("q", "k", "v", "o", "gate", "up", "down").
const char* linear_key(LinearId id);
// "<point>.input.<stat>"
std::string stat_tensor_name(const std::string& point, Stat s);

// Statistics of every observation point of a model, with provenance metadata. `source` names the file
// (or "calibration" in memory) in error messages.
class CalibrationStats {
 public:
  std::map<std::string, std::string> metadata;
  std::string source = "calibration";

  void add_point(const InputPoint& p);
  // Stores a statistic of a point added before; the shape must be the one StatTraits prescribes.
  void set(const std::string& point, Stat s, at::Tensor t);

  const std::vector<InputPoint>& points() const { return points_; }
  // The point whose input linear module `id` of `layer` reads (k_proj -> the q_proj point).
  const InputPoint& point(int64_t layer, LinearId id) const;
  bool has(int64_t layer, LinearId id, Stat s) const;
  // Throws naming the source, point and statistic when absent.
  const at::Tensor& get(int64_t layer, LinearId id, Stat s) const;
  const std::map<std::string, at::Tensor>& tensors() const { return tensors_; }

 private:
  const InputPoint* find_point(int64_t layer, LinearId id) const;
  std::vector<InputPoint> points_;
  std::map<std::pair<int64_t, int>, size_t> by_consumer_;  // (layer, linear) -> index into points_
  std::map<std::string, size_t> by_name_;
  std::map<std::string, at::Tensor> tensors_;
};

// Identity of a model directory: sha256 over "ptq-model-fingerprint-v1", sha256(config.json), and for
// every safetensors file (sorted by file name) its name, sha256 of its header (u64 length + JSON: names,
// dtypes, shapes, offsets, metadata) and, per tensor, sha256 of its first and last 4 KiB of data. Cheap
// (no full read of the weights) and it tells fine-tunes of one architecture apart, whose headers are
// identical; weights that differ only away from every tensor's ends would collide.
std::string model_fingerprint(const std::string& model_dir);

// The output rules of core/model_dir.h check_output_path (never the model `model` or inside it; an existing file is
// replaced only with `overwrite` and only when ptq wrote it); throws naming the path.
void check_stats_output(const std::string& path, const std::string& model, bool overwrite);
// Writes the stats file atomically (format, format_version, points and stats metadata are set here).
void save_calibration_stats(const CalibrationStats& stats, const std::string& path, bool overwrite);
// Reads a stats file, refusing other formats, newer format versions, malformed tensors, and stats made for
// another model (fingerprint mismatch; `model_label` names the model in that message).
CalibrationStats load_calibration_stats(const std::string& path, const std::string& fingerprint,
                                        const std::string& model_label);
CalibrationStats load_calibration_stats(const std::string& path, const Model& model);

// What the summary table and --json show for one point; NaN where the needed statistic is absent.
struct PointSummary {
  std::string point;
  int64_t layer = 0, in_features = 0, tokens = 0;
  double absmax = 0;          // max over channels of absmax
  double p99_9 = 0;           // 99.9th percentile of |x|
  double median_absmax = 0;   // median over channels of absmax (lower median)
  double outlier_ratio = 0;   // absmax / median_absmax: how far the worst channel stands out
  int64_t max_channel = -1;   // channel holding absmax
};
std::vector<PointSummary> summarize_stats(const CalibrationStats& stats);

}  // namespace ptq
