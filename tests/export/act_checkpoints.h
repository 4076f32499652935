// Activation-quantized checkpoints of sotu-llama-8m the export tests share (header only): each made once per test
// run from a recipe of configs/, calibrated on 8 windows of 128 tokens to keep the tests quick.
#pragma once

#include <functional>
#include <map>
#include <string>

#include "model/model.h"
#include "pipeline/quantize.h"
#include "pipeline/recipe.h"
#include "tests/test_paths.h"
#include "transforms/outlierize.h"

namespace ptq::test {

// sotu-llama-8m with K = 4 outlier channels of scale 50 per layer (ptq outlierize), made once.
inline const std::string& outlierized_sotu() {
  static const std::string dir = [] {
    const std::string d = make_temp_dir("export-outlier") + "/model";
    OutlierizeOptions o;
    o.channels = 4;
    o.scale = 50;
    outlierize_model(repo_path("data/models/sotu-llama-8m"), d, o);
    return d;
  }();
  return dir;
}

// configs/<recipe>.yaml on `model` (default sotu-llama-8m), changed by `edit`; cached under `tag`, which must name
// one (recipe, edit, model) combination.
inline std::string act_checkpoint(const std::string& tag, const std::string& recipe,
                                  const std::function<void(Recipe&)>& edit = {}, const std::string& model = "") {
  static std::map<std::string, std::string> made;
  const auto it = made.find(tag);
  if (it != made.end()) return it->second;
  Model m(model.empty() ? repo_path("data/models/sotu-llama-8m") : model);
  QuantizeOptions o;
  o.recipe = load_recipe(repo_path("configs/" + recipe + ".yaml"));
  o.recipe.calibration.nsamples = 8;
  o.recipe.calibration.seqlen = 128;
  if (edit) edit(o.recipe);
  o.out_dir = make_temp_dir("export-act-" + tag) + "/q";
  quantize_model(m, o);
  return made[tag] = o.out_dir;
}

}  // namespace ptq::test
