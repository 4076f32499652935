#include "algorithms/algorithm.h"

#include <mutex>

#include "algorithms/gptq.h"
#include "algorithms/rtn.h"
#include "core/error.h"

namespace ptq {

namespace {
std::vector<WeightAlgorithm>& registry() {
  static std::vector<WeightAlgorithm> algorithms;
  return algorithms;
}
}  // namespace

void register_builtin_algorithms() {
  static std::once_flag once;
  std::call_once(once, [] {
    registry().push_back({"rtn", "round to nearest with the chosen grid; no calibration data", false, rtn_quantize});
    registry().push_back({"gptq", "GPTQ (Frantar et al. 2022): compensates each rounding error on the columns not "
                                  "yet quantized, using the layer's calibration Hessian",
                          true, gptq_quantize});
  });
}

const std::vector<WeightAlgorithm>& weight_algorithms() {
  register_builtin_algorithms();
  return registry();
}

const WeightAlgorithm& weight_algorithm(std::string_view name) {
  for (const auto& a : weight_algorithms())
    if (name == a.name) return a;
  fail_input("unknown weight algorithm \"{}\"; expected one of: {}", name, weight_algorithm_names());
}

std::string weight_algorithm_names() {
  std::string s;
  for (const auto& a : weight_algorithms()) s += (s.empty() ? "" : ", ") + std::string(a.name);
  return s;
}

}  // namespace ptq
