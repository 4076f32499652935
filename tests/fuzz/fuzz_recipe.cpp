// libFuzzer target: a recipe YAML (lib/pipeline/recipe.h parse_recipe), then what quantize does with it: the
// grid of a few module paths (ignore/override regexes), the format name, the JSON provenance it stores.
#include <cstddef>
#include <cstdint>

#include "pipeline/recipe.h"
#include "quant/quantizer.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ptq::fuzz::expect_clean_refusal([&] {
    const ptq::Recipe r = ptq::parse_recipe(ptq::fuzz::as_string(data, size), "fuzz/recipe.yaml");
    size_t n = r.to_json().dump().size() + r.activation_path();
    for (const char* path : {"model.layers.0.self_attn.q_proj", "model.layers.11.mlp.down_proj", "lm_head"}) {
      if (const auto spec = r.spec_for(path)) {
        n += static_cast<size_t>(spec->bits);
        n += ptq::grid_of(*spec).name().size();
      }
    }
    volatile size_t sink = n;
    (void)sink;
  });
  return 0;
}
