// Mixed precision under a size budget (issue 14): every linear module's grid chosen from candidate grids so that the
// quantized modules fit `target_bpw` bits per weight (codes + scales + zeros, as the ptq checkpoint stores them), or
// the checkpoint fits `target_bytes`, with the least summed sensitivity.
//
// Units: a linear module, or (unit "layer") every allocated linear module of one decoder layer, which then all take
// the same grid (the candidates are those fitting every module of the layer; cost and error summed over them).
// Sensitivity of a unit on grid g (metric):
//  - rtn: the output error RTN on g leaves, 1/2 tr(dW H dW^T) with dW = RTN_g(W) - W and H the calibration Hessian of
//    m's input (a `ptq calibrate --hessian` stats file: the FP model's); with a stats file without Hessians, its
//    diagonal form sum_j (sum_t x_tj^2 / tokens) sum_i dW_ij^2 (llama.cpp's imatrix weighting);
//  - gptq: the same 1/2 tr(dW H dW^T) of what GPTQ (algorithms/gptq.h, the recipe's GPTQ settings) leaves on g;
//  - kl: the mean KL divergence of the model's next-token distribution from the FP one on a few calibration windows
//    when that unit alone is RTN-quantized on g (measured by eval/kl_sensitivity.h, above this layer, and handed in
//    as a SensitivityTable);
//  - rtn-kl: rtn's errors, each unit's scaled by one factor so that on its probe grid (kl_probe_grid: the candidate
//    of median size) it equals the unit's kl there. Both are second order in dW, so their ratio is a unit's weight
//    of its own output error in the model's loss; rtn's errors give the shape across grids. One KL measurement per
//    unit instead of one per unit and candidate. (rtn alone weighs every unit's output error alike: a unit with
//    small inputs, such as layer 0's o_proj, looks cheap to round coarsely however much the loss depends on it.)
// Sensitivities are a SensitivityTable, saved (--save-sensitivity) and reused (--sensitivity) as JSON; a reused table
// is checked against the model (config.json and tensor data sha256), the candidates and the metric, unit by unit.
// The allocator is core/bit_allocation.h's Lagrangian with greedy repair; the choice becomes one exact-match override
// per module in the recipe, so GPTQ and RTN then quantize each module on its own grid. A module no candidate fits
// (its width not a multiple of any candidate's group) is left to the recipe's plan and not counted.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include "core/weight_grid.h"
#include "io/gguf.h"
#include "pipeline/recipe.h"

namespace ptq {

class Model;
class CalibrationStats;

struct SensitivityModule {
  std::string module;
  int64_t layer = 0;
  int linear = 0;  // its LinearId (model/model.h)
  int64_t params = 0;
  std::vector<double> bytes;  // per grid of its unit
  std::vector<double> error;  // per grid; empty for kl (measured per unit)
};

struct SensitivityUnit {
  std::string name;  // the module path, or "model.layers.<i>"
  int64_t layer = 0;
  std::vector<SensitivityModule> modules;
  std::vector<std::string> grids;   // candidates fitting every module of the unit
  std::vector<double> bytes, error;  // per grid, over the unit's modules
  // rtn-kl: the grid (index into grids) the unit's KL was measured on, and that KL; -1 otherwise.
  int probe_grid = -1;
  double probe_kl = 0;
  int64_t params() const;
};

// The candidate a unit's KL is measured on for rtn-kl: the one of median bytes (the lower median; of the default 2, 3,
// 4, 5, 6 and 8 bits, 4 bits).
int kl_probe_grid(const SensitivityUnit& u);

// Every unit's bytes and errors on every candidate: what the allocator reads, and what --save-sensitivity writes.
struct SensitivityTable {
  std::string metric;      // rtn, gptq, kl, rtn-kl
  // rtn/gptq: "hessian" or "diagonal"; kl: "<windows> windows x <seqlen> tokens"; rtn-kl: both, "hessian, KL on
  // <windows> windows x <seqlen> tokens"
  std::string flavor;
  std::string unit;        // module, layer
  bool gguf = false;       // the grids are ggml block types
  std::string config_sha256;  // of the model's config.json
  // sha256 of the concatenated per-tensor sha256s of the model's tensor data (names sorted): set when the table is
  // saved or reused (hashing a 7B model's 13 GB takes ~10 s), empty otherwise.
  std::string weights_sha256;
  std::vector<std::string> candidates;
  std::vector<SensitivityUnit> units;
  nlohmann::json to_json() const;
};
SensitivityTable sensitivity_table_from_json(const nlohmann::json& j, const std::string& where);
void save_sensitivity_table(const SensitivityTable& t, const std::string& path);  // temp file + rename
SensitivityTable load_sensitivity_table(const std::string& path);

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
  // empty: the recipe's allocation.sensitivity, else rtn (`ptq quantize`, which can run the model, defaults to rtn-kl)
  std::string metric;
  std::string unit;    // empty: the recipe's allocation.unit, else module
  std::string save_sensitivity;  // --save-sensitivity FILE.json
  std::string load_sensitivity;  // --sensitivity FILE.json: reuse instead of measuring
  // Measured by the caller (eval/kl_sensitivity.h): the kl metric's errors, or rtn-kl's probes (errors empty); checked
  // like a loaded file.
  std::optional<SensitivityTable> given;
};

struct ModuleAllocation {
  std::string module;
  int64_t params = 0;
  std::vector<std::string> grids;  // the candidates of its unit
  std::vector<double> bytes, error;  // error empty where measured per unit only (kl on a layer)
  int chosen = 0;
  std::string unit;  // the unit it was allocated with (itself for unit "module")
};

struct AllocationReport {
  double target_bpw = 0, achieved_bpw = 0;
  double budget_bytes = 0, bytes = 0;  // of the allocated modules
  // --target-size: the target, and the bytes of everything else (fixed_bytes) and of the whole checkpoint's tensors
  // (size_bytes = fixed_bytes + bytes; the file adds its safetensors header). 0 with --target-bpw.
  double target_bytes = 0, fixed_bytes = 0, size_bytes = 0;
  std::string sensitivity;  // rtn/gptq: "hessian" or "diagonal" (the metric's flavour); kl: its windows
  std::string metric = "rtn", unit = "module";
  bool gguf = false;        // the choices are ggml types (a GGUF recipe), not ptq grids
  std::vector<ModuleAllocation> modules;
  std::vector<SensitivityUnit> units;  // with unit "layer" (for "module" they are the modules)
  std::vector<int> unit_chosen;
  nlohmann::json to_json() const;  // saved in the checkpoint's quantization_config ("allocation")
};

// Adds candidates by name: ggml block types for a GGUF recipe (`gguf`), ptq grid names otherwise; throws naming
// `what` (the flag or recipe key) for a name of the other kind or an unknown one.
void add_candidates(const std::vector<std::string>& names, bool gguf, AllocationOptions& opts, std::string_view what);

// The options a run uses: the flags', completed from the recipe's allocation section (target_bpw and candidates when
// no budget flag is given); metric and unit the flags', else the recipe's, else rtn / module, checked against the
// names (throws naming the flag).
AllocationOptions merged_allocation_options(const AllocationOptions& opts, const Recipe& recipe);

// The units, their modules and every candidate's bytes, from the tensor shapes alone (errors left empty). `opts`:
// merged_allocation_options's (metric and unit resolved).
SensitivityTable plan_sensitivity_table(const Model& model, const Recipe& recipe, const AllocationOptions& opts);
// `w` [out, in] fp32 rounded to the nearest point of candidate `grid` (a ptq grid, or a ggml type of a GGUF recipe,
// rounded with `importance` [in] when defined), dequantized: what the rtn and kl metrics measure.
at::Tensor rtn_candidate_weight(const at::Tensor& w, const std::string& grid, const Recipe& recipe,
                                const std::string& module, const at::Tensor& importance);

// With `flags` completed by merged_allocation_options: measures every unit's sensitivity on every candidate (or
// reuses --sensitivity / given, refused when it does not match the model, candidates and metric), saves it with
// --save-sensitivity, and allocates. Throws naming the flag when the budget is below the cheapest candidates, or the
// stats lack what the sensitivity needs.
AllocationReport allocate_grids(const Model& model, const Recipe& recipe, const CalibrationStats& stats,
                                const AllocationOptions& flags);
// Bytes the checkpoint of `recipe` stores outside the modules in `allocated`: every other tensor at its stored dtype
// (embeddings, norms, lm_head, biases, modules left FP), and the recipe's own grid for a linear module it quantizes
// but the allocation does not cover (its codes + scales + zeros; a GGUF recipe's mix there is counted at the stored
// dtype, an upper bound).
double checkpoint_fixed_bytes(const Model& model, const Recipe& recipe, const std::vector<std::string>& allocated);
// Adds the allocation to `recipe`: exact-match overrides, one per module (GGUF recipes: Recipe::gguf_modules).
void apply_allocation(const AllocationReport& report, Recipe& recipe);

}  // namespace ptq
