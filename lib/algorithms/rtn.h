// RTN: every weight rounded to the nearest point of its group's grid; the baseline of every comparison.
#pragma once

#include "algorithms/algorithm.h"

namespace ptq {

// quantize_weight(request.weight, request.spec); the loss is measured when a Hessian is given.
LinearQuantResult rtn_quantize(const LinearQuantRequest& request);

// llama-quantize's rounding onto GGUF block type `type` (ggml's reference quantizer, the bytes ptq export --gguf-type
// writes); the loss is measured when a Hessian is given.
GgmlQuantResult rtn_ggml_quantize(const LinearQuantRequest& request, GgmlType type);

}  // namespace ptq
