// RTN: every weight rounded to the nearest point of its group's grid; the baseline of every comparison.
#pragma once

#include "algorithms/algorithm.h"

namespace ptq {

// quantize_weight(request.weight, request.spec); the loss is measured when a Hessian is given.
LinearQuantResult rtn_quantize(const LinearQuantRequest& request);

}  // namespace ptq
