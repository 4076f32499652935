// The layer-streaming quantize driver: plan every linear module from the recipe, calibrate and quantize one
// decoder layer at a time (GPTQ sequentially on the outputs of the already quantized layers), and stream
// the packed checkpoint to disk.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "pipeline/allocate.h"
#include "pipeline/recipe.h"
#include "quant/metrics.h"

namespace ptq {

class Model;

struct QuantizeOptions {
  Recipe recipe;
  std::string out_dir;
  bool force = false;        // replace an existing output directory (and give up an interrupted run's state)
  bool resume = false;       // continue the interrupted run writing out_dir from its last finished layer
  int64_t batch = 8;         // calibration windows per layer forward
  // A stats file from `ptq calibrate --hessian`: GPTQ then uses the FP model's Hessians instead of
  // streaming calibration data (faster, not sequential). Refused when made for another model.
  std::string stats_path;
  // --target-bpw: mixed precision, every module's grid allocated from measured sensitivities (pipeline/allocate.h;
  // needs stats_path). target_bpw 0: the recipe's grids.
  AllocationOptions allocation;
  // now_seconds() when the command began, so work its caller did first (the kl sensitivities, measured above this
  // layer) counts in QuantizeReport::seconds; 0: from quantize_model's own start.
  double started = 0;
};

struct ModuleReport {
  std::string module;   // full path, e.g. model.layers.3.mlp.down_proj
  int64_t layer = 0;
  std::string format, method;
  int64_t params = 0;
  Distortion weight_error;          // of the dequantized weight against the FP weight
  std::optional<double> loss;       // the algorithm's objective (GPTQ: damped-Hessian loss)
  // With a Hessian: ½ tr(ΔW H ΔWᵀ) = ‖X ΔWᵀ‖² / n on the calibration inputs, for this result and for RTN
  // of the same weight with the same grid (how much the algorithm gained over rounding).
  std::optional<double> output_error, rtn_output_error;
  std::string warning;
};

struct QuantizeReport {
  std::vector<ModuleReport> modules;
  std::map<std::string, std::string> unquantized;  // module -> reason it stayed floating point
  int64_t quantized_params = 0;
  double quantized_bits = 0;    // storage bits of the quantized modules (codes + scales + zeros)
  double avg_bits_per_weight = 0;  // quantized_bits / quantized_params
  uint64_t output_bytes = 0;
  std::string calibration;      // what calibration data was used ("none" for RTN)
  double seconds = 0;
  double peak_rss_mb = 0;
  std::optional<AllocationReport> allocation;  // with --target-bpw
};

// Quantizes `model` with `opts.recipe` into opts.out_dir (atomic: the directory appears complete or not at
// all). Throws std::invalid_argument for an unusable recipe, model or output path.
QuantizeReport quantize_model(Model& model, const QuantizeOptions& opts);

}  // namespace ptq
