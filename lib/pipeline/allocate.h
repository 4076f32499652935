// Mixed precision under a size budget (issue 14): every linear module's grid chosen from candidate grids so that the
// quantized modules fit `target_bpw` bits per weight (codes + scales + zeros, as the ptq checkpoint stores them) with
// the least summed sensitivity.
//
// Sensitivity of module m on grid g: the output error RTN on g leaves, 1/2 tr(dW H dW^T) with dW = RTN_g(W) - W and H
// the calibration Hessian of m's input (a `ptq calibrate --hessian` stats file: the FP model's); with a stats file
// without Hessians, its diagonal form sum_j (sum_t x_tj^2 / tokens) sum_i dW_ij^2 (llama.cpp's imatrix weighting).
// The allocator is core/bit_allocation.h's Lagrangian with greedy repair; the choice becomes one exact-match override
// per module in the recipe, so GPTQ and RTN then quantize each module on its own grid. A module no candidate fits
// (its width not a multiple of any candidate's group) is left to the recipe's plan and not counted.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/weight_grid.h"
#include "io/gguf.h"
#include "pipeline/recipe.h"

namespace ptq {

class Model;
class CalibrationStats;

struct AllocationOptions {
  double target_bpw = 0;
  // --target-size: the whole checkpoint's tensor bytes instead (exclusive with target_bpw): the allocated modules'
  // budget is this minus every other tensor as the checkpoint will store it (checkpoint_fixed_bytes).
  double target_bytes = 0;
  std::vector<WeightGrid> candidates;  // empty: bits 2, 3, 4, 5, 6, 8 at the recipe's group size and symmetry
  // With a GGUF recipe (weights.gguf_type), the ggml block types to choose from instead; empty: q2_k, q3_k, q4_k,
  // q5_k, q6_k, q8_0. Costs are ggml_nbytes, errors those of ggml's importance-weighted rounding (the grid GPTQ then
  // keeps).
  std::vector<GgmlType> gguf_candidates;
};

struct ModuleAllocation {
  std::string module;
  int64_t params = 0;
  std::vector<std::string> grids;  // the candidates whose group divides the module's width
  std::vector<double> bytes, error;
  int chosen = 0;
};

struct AllocationReport {
  double target_bpw = 0, achieved_bpw = 0;
  double budget_bytes = 0, bytes = 0;  // of the allocated modules
  // --target-size: the target, and the bytes of everything else (fixed_bytes) and of the whole checkpoint's tensors
  // (size_bytes = fixed_bytes + bytes; the file adds its safetensors header). 0 with --target-bpw.
  double target_bytes = 0, fixed_bytes = 0, size_bytes = 0;
  std::string sensitivity;  // "hessian" or "diagonal"
  bool gguf = false;        // the choices are ggml types (a GGUF recipe), not ptq grids
  std::vector<ModuleAllocation> modules;
  nlohmann::json to_json() const;  // saved in the checkpoint's quantization_config ("allocation")
};

// Adds candidates by name: ggml block types for a GGUF recipe (`gguf`), ptq grid names otherwise; throws naming
// `what` (the flag or recipe key) for a name of the other kind or an unknown one.
void add_candidates(const std::vector<std::string>& names, bool gguf, AllocationOptions& opts, std::string_view what);

// Measures every module's sensitivity on every candidate and allocates. Throws naming the flag when the budget is
// below the cheapest candidates, or the stats lack what the sensitivity needs.
AllocationReport allocate_grids(const Model& model, const Recipe& recipe, const CalibrationStats& stats,
                                const AllocationOptions& opts);
// Bytes the checkpoint of `recipe` stores outside the modules in `allocated`: every other tensor at its stored dtype
// (embeddings, norms, lm_head, biases, modules left FP), and the recipe's own grid for a linear module it quantizes
// but the allocation does not cover (its codes + scales + zeros; a GGUF recipe's mix there is counted at the stored
// dtype, an upper bound).
double checkpoint_fixed_bytes(const Model& model, const Recipe& recipe, const std::vector<std::string>& allocated);
// Adds the allocation to `recipe`: exact-match overrides, one per module (GGUF recipes: Recipe::gguf_modules).
void apply_allocation(const AllocationReport& report, Recipe& recipe);

}  // namespace ptq
