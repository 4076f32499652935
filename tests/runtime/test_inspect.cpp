// inspect's view of a stored mixed-precision allocation (runtime/inspect.h): read back from quantization_config and
// drawn as a per-layer map, checked against hand-written expectations.
#include <catch2/catch.hpp>

#include "runtime/inspect.h"

using namespace ptq;

TEST_CASE("the allocation map: one row per layer, modules in layer order, others listed", "[inspect]") {
  const nlohmann::json qc = nlohmann::json::parse(R"({"allocation": {
      "target_bpw": 3.5, "achieved_bpw": 3.49, "metric": "gptq", "sensitivity": "hessian", "unit": "module",
      "modules": {"model.layers.10.mlp.down_proj": {"grid": "w4g128"}, "model.layers.2.self_attn.q_proj": {"grid": "w2g128"},
                  "model.layers.2.mlp.down_proj": {"grid": "w8g128"}, "model.layers.10.self_attn.q_proj": {"grid": "w3g128"},
                  "lm_head": {"grid": "w8g128"}}}})");
  const auto a = read_allocation_summary(qc);
  REQUIRE(a.has_value());
  CHECK(a->metric == "gptq");
  CHECK(a->unit == "module");
  CHECK(a->target_bpw == 3.5);
  CHECK(a->grid_counts() == "w2g128 x1, w3g128 x1, w4g128 x1, w8g128 x2");
  // Layers in numeric order (2 before 10), q_proj before down_proj, lm_head outside the table.
  CHECK(render_allocation_map(*a) ==
        "layer  q_proj  down_proj\n"
        "-----  ------  ---------\n"
        "    2  w2g128  w8g128\n"  // Table right-aligns numbers
        "   10  w3g128  w4g128\n"
        "lm_head: w8g128\n");
  CHECK(a->to_json().at("modules").at("lm_head") == "w8g128");
  CHECK_FALSE(a->to_json().contains("target_bytes"));
}

TEST_CASE("allocations written before metrics and units were choices read as rtn per module", "[inspect]") {
  const auto a = read_allocation_summary(nlohmann::json::parse(
      R"({"allocation": {"target_bpw": 4, "achieved_bpw": 3.9, "sensitivity": "diagonal",
          "modules": {"model.layers.0.mlp.up_proj": {"grid": "w4g64", "params": 10}}}})"));
  REQUIRE(a.has_value());
  CHECK(a->metric == "rtn");
  CHECK(a->unit == "module");
  CHECK_FALSE(read_allocation_summary(nlohmann::json::parse(R"({"weights": {}})")).has_value());
  CHECK_THROWS_WITH(read_allocation_summary(nlohmann::json::parse(R"({"allocation": {"modules": {}}})")),
                    Catch::Contains("allocation is malformed"));
}
