// Quantization recipes: YAML files in configs/ naming the paper they follow, validated key by key, with
// command-line overrides applied on top.
#pragma once

#include <cstdint>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "algorithms/algorithm.h"
#include "calibration/data.h"
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
  GptqOptions gptq;
  bool true_sequential = true;  // GPTQ: [q,k,v] -> [o] -> [gate,up] -> [down], re-running the layer between
  CalibrationDataSpec calibration;
  std::vector<std::string> ignore;  // regexes of module paths left in floating point
  std::vector<ModuleOverride> overrides;

  // The grid of module `path` after overrides, or nullopt when it is ignored.
  std::optional<WeightQuantSpec> spec_for(const std::string& path) const;
  nlohmann::json to_json() const;
};

// Throws std::invalid_argument naming the file and the key (e.g. "weights.bits") on any invalid entry,
// unknown keys included.
Recipe load_recipe(const std::string& path);
Recipe parse_recipe(const std::string& yaml_text, const std::string& where);

// Name of the weight format (quant/formats.h table) with this grid; throws listing the known formats.
std::string format_name_for(const WeightQuantSpec& spec);

}  // namespace ptq
