#include "tests/test_model.h"

#include <ATen/ATen.h>

namespace ptq::test {

at::Tensor logits_with(Model& m, const std::vector<LayerWeights>& layers, const at::Tensor& ids) {
  const ModelConfig& c = m.config();
  const ForwardContext ctx = make_forward_context(c, 0, ids.size(1));
  at::Tensor h = m.embed(ids, 0);
  for (int64_t i = 0; i < c.n_layers; ++i) h = decoder_layer_forward(c, layers[i], i, h, ctx, nullptr, nullptr);
  return m.head(h);
}

}  // namespace ptq::test
