// Sensitivity metric "kl" of mixed precision (pipeline/allocate.h): how much the model's next-token distribution moves
// when one unit alone is quantized on one candidate grid.
#pragma once

#include <cstdint>
#include <vector>

namespace ptq {

class Model;
struct Recipe;
struct SensitivityTable;

// Calibration windows `ptq quantize --sensitivity-metric kl` measures on (at most; fewer with --nsamples).
constexpr int64_t kKlSensitivityWindows = 8;

// Fills the errors of `table` (from plan_sensitivity_table, metric kl): for every unit and candidate, the mean
// KL(P_fp || P) per predicted token (eval/kl_divergence.h) on `windows` (token ids, equal lengths) when that unit's
// modules alone are RTN-rounded onto the candidate (rtn_candidate_weight) and every other module stays FP. With
// metric rtn-kl, only each unit's probe (kl_probe_grid; SensitivityUnit::probe_grid, probe_kl; errors left empty). The hidden
// states entering the unit's layer are computed once per layer and only the layers from there on are re-run, `batch`
// windows at a time. Memory: the FP layers (cached by the model while it runs, released at the end) plus two
// hidden-state tensors of all windows.
void measure_kl_sensitivities(Model& model, const Recipe& recipe, const std::vector<std::vector<int32_t>>& windows,
                              SensitivityTable& table, int64_t batch = 8);

}  // namespace ptq
