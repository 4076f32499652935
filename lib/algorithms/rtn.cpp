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

GgmlQuantResult rtn_ggml_quantize(const LinearQuantRequest& request, GgmlType type) {
  const at::Tensor w = checked_weight(request.weight, request.spec, request.name).contiguous();
  const int64_t out = w.size(0), in = w.size(1);
  GgmlQuantResult r;
  r.type = type;
  r.blocks = ggml_encode(type, w.data_ptr<float>(), out, in, request.name);
  r.w_hat = at::empty({out, in});
  ggml_decode(type, r.blocks.data(), r.w_hat.data_ptr<float>(), out * in);
  if (request.hessian.defined()) r.loss = hessian_loss(request.weight, r.w_hat, request.hessian);
  return r;
}

}  // namespace ptq
