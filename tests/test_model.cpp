#include "tests/test_model.h"

#include <ATen/ATen.h>

#include "calibration/calibrate.h"
#include "pipeline/quantize.h"
#include "pipeline/recipe.h"
#include "tests/test_paths.h"

namespace ptq::test {

at::Tensor logits_with(Model& m, const std::vector<LayerWeights>& layers, const at::Tensor& ids) {
  const ModelConfig& c = m.config();
  const ForwardContext ctx = make_forward_context(c, 0, ids.size(1));
  at::Tensor h = m.embed(ids, 0);
  for (int64_t i = 0; i < c.n_layers; ++i) h = decoder_layer_forward(c, layers[i], i, h, ctx, nullptr, nullptr);
  return m.head(h);
}

std::string quantize_rtn(const std::string& model, const std::string& dir, int bits, int64_t group, bool sym) {
  Model m(repo_path(model));
  QuantizeOptions o;
  o.recipe = load_recipe(repo_path("configs/w4a16-rtn.yaml"));
  o.recipe.weights.bits = bits;
  o.recipe.weights.group_size = group;
  o.recipe.weights.sym = sym;
  o.out_dir = dir;
  quantize_model(m, o);
  return dir;
}

CalibrationStats hessian_stats(Model& model, int64_t nsamples, int64_t seqlen) {
  CalibrationDataSpec spec;
  spec.files = {repo_path("data/sotu-test.txt")};
  spec.nsamples = nsamples;
  spec.seqlen = seqlen;
  CalibrateOptions copts;
  copts.stats = default_stats().add(Stat::Hessian);
  return calibrate(model, load_model_calibration_data(model, spec), copts);
}

}  // namespace ptq::test
