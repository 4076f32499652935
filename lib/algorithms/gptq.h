// GPTQ (Frantar et al. 2022) for one linear layer, ALGORITHMS.md "GPTQ" steps 1-7.
#pragma once

#include <memory>

#include "algorithms/algorithm.h"

namespace ptq {

namespace kernels {
class GptqOps;
}

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
// With request.gptq.device other than Cpu it runs gptq_quantize_on that device's ops (gptq_ops).
LinearQuantResult gptq_quantize(const LinearQuantRequest& request);

// The same algorithm on a kernels::GptqOps device (kernels/gptq_ops.h): steps 1-3 and 7 on the host as above; the
// damped factorisation, the sweep and its lazy updates on the device. What differs from the CPU path, all in rounding:
// U is computed in double by another factorisation (gptq_ops.h), the lazy block width is gptq_device_block's, and the
// fp32 updates are FMAs in another order; the algorithm's result does not depend on the block width (above), so codes
// differ only where a value lies within rounding of a decision boundary. tests/algorithms/test_gptq_device.cpp counts
// them.
LinearQuantResult gptq_quantize_on(kernels::GptqOps& ops, const LinearQuantRequest& request);

// The ops of a device: nullptr for the CPU; for CUDA the first device, or cuda::Error saying why there is none.
std::shared_ptr<kernels::GptqOps> gptq_ops(GptqDevice device);

// GPTQ on a GGUF block type's grid (issue 13): the static grid is ggml's own block quantizer (quantize_<type> with
// quant_weights = diag(H) / 2 = Σx² / tokens, llama.cpp's imatrix) run on W once, before any update: every super-block
// scale and min, every sub-block's 6-bit scale and min. The sweep then chooses each column's codes on that grid
// (ggml_round_to_grid, io/gguf_kquants.h), pushing the rounding error onto the later columns, and the codes are written
// back into the blocks, which decode to exactly the values the sweep used (checked). Natural column order only (GGUF
// has no g_idx); request.spec is ignored but for the checks of the weight. The loss is GPTQ's, as gptq_quantize's.
GgmlQuantResult gptq_ggml_quantize(const LinearQuantRequest& request, GgmlType type);

// Scalar reference written from the math: double precision, its own Cholesky, one column at a time with
// every update applied at once (no lazy blocks). Tests compare gptq_quantize against it.
LinearQuantResult gptq_ref(const LinearQuantRequest& request);

}  // namespace ptq
