// libFuzzer target: config.json (lib/model/config.h parse_model_config), then the per-layer names a loader
// derives from it.
#include <cstddef>
#include <cstdint>

#include "model/config.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ptq::fuzz::expect_clean_refusal([&] {
    const ptq::ModelConfig c = ptq::parse_model_config(ptq::fuzz::as_string(data, size), "fuzz/config.json");
    // The model divides by these: an accepted config must make them meaningful.
    const size_t n = c.layer_tensor(0, c.traits().q_proj, "weight").size() +
                     c.layer_module(0, c.traits().down_proj).size() + static_cast<size_t>(c.n_rep());
    volatile size_t sink = n;
    (void)sink;
  });
  return 0;
}
