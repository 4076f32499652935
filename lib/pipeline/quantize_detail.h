// Pieces shared by the two quantize drivers (pipeline-internal): the weight-only driver in quantize.cpp and the
// activation-aware one in quantize_activation.cpp (rewrites layers, quantizes activations).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include "algorithms/algorithm.h"
#include "pipeline/quantize.h"
#include "quant/checkpoint.h"

namespace ptq {

struct CalibrationData;
class CalibrationStats;

constexpr LinearId kAllLinear[] = {LinearId::Q, LinearId::K, LinearId::V, LinearId::O,
                                   LinearId::Gate, LinearId::Up, LinearId::Down};

struct PlannedModule {
  std::string path;
  WeightQuantSpec spec;
  std::string format;
  std::optional<GgmlType> ggml = std::nullopt;  // recipe weights.gguf_type: this module's GGUF block type
};
using LayerModulePlan = std::vector<std::map<LinearId, PlannedModule>>;

// Every linear module of every layer gets the recipe's grid unless ignored or impossible (recorded in
// report.unquantized); `packed` receives the checkpoint plan. Throws when nothing is left to quantize.
LayerModulePlan plan_modules(const Model& model, const Recipe& recipe, const WeightAlgorithm& algo,
                             QuantizeReport& report, std::map<std::string, ModuleQuantInfo>& packed);
// Distortion report of one quantized module (added to report's totals) and its checkpoint metrics; `loss` and
// `warning` are the algorithm's. With a Hessian, the output error of w_hat and of RTN on the same grid.
ModuleReport record_module(const PlannedModule& p, int64_t layer, const std::string& method, const at::Tensor& weight,
                           std::optional<double> loss, const std::string& warning, const at::Tensor& w_hat,
                           const at::Tensor& hessian, QuantizeReport& report, nlohmann::json& metrics);
nlohmann::json provenance_json(const Model& model, const Recipe& recipe, const std::string& stats_path,
                               const CalibrationStats* stats, const CalibrationData* calib);
void finish_report(QuantizeReport& report, const CheckpointWriter& writer, double t0);

// The activation-aware driver (recipe.activation_path()).
QuantizeReport quantize_model_activation(Model& model, const QuantizeOptions& opts);

}  // namespace ptq
