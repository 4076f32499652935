#include "algorithms/rtn.h"

#include <ATen/ATen.h>

#include "quant/metrics.h"

namespace ptq {

LinearQuantResult rtn_quantize(const LinearQuantRequest& request) {
  LinearQuantResult r;
  r.weight = quantize_weight(request.weight, request.spec, request.name);
  if (request.hessian.defined()) r.loss = hessian_loss(request.weight, dequantize(r.weight), request.hessian);
  return r;
}

}  // namespace ptq
