// Activation migration methods (ALGORITHMS.md): function-preserving rewrites of one decoder layer, computed
// from calibration statistics of the layer's linear inputs, that make the inputs easier to quantize, plus the
// activation scheme each input then gets. One table of methods; each is a function of the same shape:
//   none         the recipe's scheme everywhere, no rewrite (the naive RTN baselines)
//   smoothquant  s_j = max|X_j|^α / max|W_j|^(1-α) folded at the chosen points (Xiao et al. 2022)
//   fptq         per-point policy on v = max|X|: v < v0 static per-tensor; v0..v1 log equalization
//                s_j = max|X_j| / log2(2 + max|X_j|) then static per-tensor; v > v1 per-token dynamic
//   outliertune  symmetrization z_j = mean (max+min)/2 folded into biases, then per-channel steps
//                Δ_j = absmax_j / qmax (statistics clipped to stat_clip × the tensor range) folded into the
//                weights (pre-execution of dequantization); o/down per-token dynamic
//   mergequant   per-channel static steps Δ_j = absmax_j / qmax folded (QSM) at every point (o through v_proj,
//                down through up_proj), with dimensional reconstruction: channels with Δ_j > τ·median(Δ)
//                split into ceil(Δ_j / (τ·median Δ)) copies first
// Folded per-channel steps leave the input in integer units: its consumers quantize it with a per-tensor
// static scale c (1, or the clip ratio an adaptive clipping search picks), which a runtime folds into the
// producer's epilogue. All folds go through lib/transforms/fold.h.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/core/Tensor.h>

#include "model/config.h"
#include "model/model.h"
#include "quant/act_quant.h"

namespace ptq {

// The four linear inputs of a decoder layer.
enum class ActPoint : uint8_t { Attn, O, Mlp, Down };  // q/k/v, o, gate/up (fc1), down (fc2)
constexpr int kNumActPoints = 4;
const char* act_point_name(ActPoint p);               // "attn", "o", "mlp", "down"
ActPoint act_point_of(LinearId id);
std::vector<LinearId> act_point_consumers(const ModelConfig& cfg, ActPoint p);  // present modules only
// Whether `id` is the first present consumer of its input point: a LinearInputHook that observes each input once
// (the forward hands the same tensor to every consumer) acts there and skips the others.
bool is_first_consumer(const ModelConfig& cfg, LinearId id);

// Per-channel statistics of one input over the calibration tokens.
struct PointStats {
  at::Tensor min, max, absmax;  // [in] fp32
  at::Tensor midrange_mean;     // [in]: mean over windows of (max_t + min_t) / 2
  at::Tensor sample;            // [n, in] fp32: evenly strided calibration tokens, for searches
  int64_t tokens = 0;
  bool defined() const { return absmax.defined(); }
};
using LayerStats = std::array<PointStats, kNumActPoints>;

// What a point's consumers do with their input after the method.
struct PointPlan {
  ActQuantSpec spec;
  bool unit_steps = false;          // per-channel steps folded: per-tensor static scale = clip (1 by default)
  std::vector<std::string> folded;  // e.g. "smoothquant s (alpha 0.5)", shown by inspect
};
using LayerPlan = std::array<PointPlan, kNumActPoints>;

struct MigrationSettings {
  std::string method = "none";
  double alpha = 0.5;                                // smoothquant
  std::vector<std::string> points = {"attn", "mlp"};  // smoothquant fold points (attn, o, mlp, down)
  double v0 = 15, v1 = 150;                          // fptq policy thresholds
  double stat_clip = 0.8;                            // outliertune: statistics clipped to this × tensor range
  bool symmetrize = true;                            // outliertune
  double tau = 4.0;                                  // mergequant split threshold (× median step)
  int64_t max_split = 16;                            // mergequant: most copies of one channel
  std::string split_on = "step";                     // mergequant split criterion: "step" (Δ_j) or "weight"
                                                     // (max_i |W_ij|·Δ_j, the folded column)
  int64_t pad_to = 0;        // mergequant: pad a widened input to a multiple of this (kernel tile; 0: none); the
                             // quantize driver also pads to the weight group size
  std::vector<double> clip_grid;                     // adaptive clipping candidates (empty: none)
  std::vector<std::string> dynamic_points;           // points forced to per-token dynamic
};

struct MigrationMethod {
  const char* name;  // recipe spelling: append, never rename
  const char* help;
  // Rewrites w (folds) from `stats` (of w's inputs before the call) and fills `plan`, which arrives holding
  // the recipe's scheme at every point.
  void (*apply)(const ModelConfig& cfg, LayerWeights& w, const LayerStats& stats, const MigrationSettings& s,
                LayerPlan& plan);
  // True when the rewrite only changes the architecture's own tensors (folds into norms and weights), so a runtime
  // running the standard forward (llama.cpp, vLLM) can run its result; false when it adds tensors a standard model
  // lacks (norm biases, channel-index tensors: the exporters refuse those, gptq_export.h).
  bool keeps_architecture;
};

const std::vector<MigrationMethod>& migration_methods();
const MigrationMethod& migration_method(std::string_view name);  // throws listing the names
std::string migration_method_names();
std::optional<ActPoint> act_point_from_name(const std::string& name);

}  // namespace ptq
