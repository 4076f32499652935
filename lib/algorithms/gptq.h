// GPTQ (Frantar et al. 2022) for one linear layer, ALGORITHMS.md "GPTQ" steps 1-7.
#pragma once

#include "algorithms/algorithm.h"

namespace ptq {

// Quantizes columns in turn, pushing each column's rounding error onto the columns not yet quantized through
// the inverse Hessian. request.hessian is H = (2/n) sum x x^T of the layer's inputs (HessianAccumulator).
// Differences from IST-DASLab gptq.py, all deliberate:
//  - a group's grid is computed at its first column on the fully error-updated weights, including the
//    updates still pending in the lazy batch (gptq.py reads W without them when a group starts inside a
//    block), so the result does not depend on block_size;
//  - when Cholesky fails, percdamp is raised tenfold (up to 3 times) and `warning` says so;
//  - per-channel grids are computed after dead columns are zeroed (gptq.py computes them before);
//  - grids follow ALGORITHMS.md: symmetric scale = absmax / (2^(b-1) - 1) (gptq.py: 2 absmax / (2^b - 1)),
//    and an all-zero group gets scale 1 (gptq.py widens it to [-1, 1]).
LinearQuantResult gptq_quantize(const LinearQuantRequest& request);

// Scalar reference written from the math: double precision, its own Cholesky, one column at a time with
// every update applied at once (no lazy blocks). Tests compare gptq_quantize against it.
LinearQuantResult gptq_ref(const LinearQuantRequest& request);

}  // namespace ptq
