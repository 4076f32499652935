// Quantization recipes: YAML files in configs/ naming the paper they follow, validated key by key, with
// command-line overrides applied on top.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "algorithms/algorithm.h"
#include "algorithms/migration.h"
#include "calibration/data.h"
#include "io/gguf_mix.h"
#include "quant/act_quant.h"
#include "quant/quantizer.h"

namespace ptq {

// A per-module change of the weight grid, for modules whose path matches `match` (std::regex_search).
struct ModuleOverride {
  std::string match;
  std::regex re;
  std::optional<int> bits;
  std::optional<int64_t> group_size;
  std::optional<bool> sym;
};

struct Recipe {
  std::string path, name, paper, description;
  std::string method = "rtn";  // weight algorithm (algorithms/algorithm.h registry)
  WeightQuantSpec weights{4, 128, true, false};
  // weights.gguf_type: quantize straight onto GGUF's block grids (a ggml block type for every module, or a
  // llama-quantize mix choosing per module, io/gguf_mix.h) instead of `weights`' grid; rtn or gptq only.
  std::optional<GgufTarget> gguf;
  // "allocation:" (mixed precision, pipeline/allocate.h): a bits/weight budget and the candidate grids (ptq grid names,
  // or ggml block types for a GGUF recipe); target_bpw 0: none. --target-bpw / --candidates override them.
  double target_bpw = 0;
  std::vector<std::string> candidates;
  // allocation.sensitivity (rtn, gptq, kl) and allocation.unit (module, layer); empty: rtn, module
  // (pipeline/allocate.h; --sensitivity-metric / --allocation-unit override them).
  std::string allocation_sensitivity, allocation_unit;
  // Per-module GGUF types that replace the mix's choice (set by --target-bpw's allocation, pipeline/allocate.h).
  std::map<std::string, GgmlType> gguf_modules;
  GptqOptions gptq;
  bool true_sequential = true;  // GPTQ: [q,k,v] -> [o] -> [gate,up] -> [down], re-running the layer between
  CalibrationDataSpec calibration;
  std::vector<std::string> ignore;  // regexes of module paths left in floating point
  std::vector<ModuleOverride> overrides;
  // Activation quantization ("activations:"): the scheme every quantized module's input gets, unless the
  // migration method decides otherwise per input point.
  bool act_enabled = false;
  ActQuantSpec activations;
  MigrationSettings migration;  // "migration:" (method none: no rewrite)
  struct Rotation {
    bool enabled = false;       // QuaRot-style randomized Hadamard of the residual stream, fused offline
    uint64_t seed = 0;
    bool online_down = true;    // plus an online Hadamard before down_proj
  } rotation;
  // Whether layers are rewritten or activations quantized (the activation-aware quantize path).
  bool activation_path() const { return act_enabled || migration.method != "none" || rotation.enabled; }

  // The grid of module `path` after overrides, or nullopt when it is ignored.
  std::optional<WeightQuantSpec> spec_for(const std::string& path) const;
  nlohmann::json to_json() const;
};

// The names allocation.sensitivity and allocation.unit accept.
const std::vector<std::string>& sensitivity_metric_names();  // rtn, gptq, kl, rtn-kl
const std::vector<std::string>& allocation_unit_names();     // module, layer

// The recipe `ptq quantize` uses when none is given.
constexpr const char* kDefaultRecipe = "w4a16-gptq";

// The recipes bundled with ptq (configs/*.yaml, found from any directory: core/resources.h), by name; a name in
// two resource directories is taken from the first.
struct BundledRecipe {
  std::string name, path;
};
std::vector<BundledRecipe> bundled_recipes();

// A --recipe argument: an existing file is taken as it is; otherwise a bundled recipe's name, also spelled
// "NAME.yaml" or "configs/NAME.yaml" (so a command copied from the README works outside the repository).
// Throws listing the bundled names when it is neither.
std::string resolve_recipe(const std::string& name_or_path);

// Throws std::invalid_argument naming the file and the key (e.g. "weights.bits") on any invalid entry,
// unknown keys included. `name_or_path` goes through resolve_recipe.
Recipe load_recipe(const std::string& name_or_path);
Recipe parse_recipe(const std::string& yaml_text, const std::string& where);

}  // namespace ptq
