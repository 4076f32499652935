// Mixed precision's sensitivities (pipeline/allocate.h): the layer unit, the gptq metric against rtn, the saved table
// round trip and its refusals, on the bundled sotu-llama-8m with Hessians of 8 windows x 64 tokens.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <set>

#include <ATen/ATen.h>

#include "calibration/stats.h"
#include "core/bit_allocation.h"
#include "core/file.h"
#include "pipeline/allocate.h"
#include "pipeline/recipe.h"
#include "tests/test_model.h"
#include "tests/test_paths.h"

using namespace ptq;

namespace {

const std::string kModel = "data/models/sotu-llama-8m";

Recipe rtn_recipe() { return load_recipe(test::repo_path("configs/w4a16-rtn.yaml")); }

// The message allocate_grids refuses `o` with ("" when it is accepted).
std::string refusal(const Model& model, const CalibrationStats& stats, const AllocationOptions& o) {
  try {
    allocate_grids(model, rtn_recipe(), stats, o);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("allocation per layer: one grid per decoder layer, costs and errors the sums of its modules", "[allocate]") {
  Model model(test::repo_path(kModel));
  const CalibrationStats stats = test::hessian_stats(model);
  AllocationOptions o;
  o.target_bpw = 4.0;
  const AllocationReport per_module = allocate_grids(model, rtn_recipe(), stats, o);
  o.unit = "layer";
  const AllocationReport per_layer = allocate_grids(model, rtn_recipe(), stats, o);
  CHECK(per_layer.unit == "layer");
  REQUIRE(per_layer.units.size() == 6);
  REQUIRE(per_layer.modules.size() == per_module.modules.size());
  std::set<std::string> grids;
  for (size_t u = 0; u < per_layer.units.size(); ++u) {
    const SensitivityUnit& unit = per_layer.units[u];
    CAPTURE(unit.name);
    REQUIRE(unit.grids.size() == 6);  // 256 and 768 columns: every g128 candidate fits every module
    REQUIRE(unit.modules.size() == 7);
    for (size_t k = 0; k < unit.grids.size(); ++k) {
      // Independent side: the per-module allocation measured every module alone on the same grids.
      double bytes = 0, error = 0;
      int found = 0;
      for (const ModuleAllocation& m : per_module.modules) {
        if (m.module.rfind(unit.name + ".", 0) != 0) continue;
        ++found;
        REQUIRE(m.grids[k] == unit.grids[k]);
        bytes += m.bytes[k];
        error += m.error[k];
      }
      REQUIRE(found == 7);
      CHECK(unit.bytes[k] == bytes);
      // The same per-module values summed in another order: 1e-12 relative.
      CHECK(unit.error[k] == Approx(error).epsilon(1e-12));
    }
    grids.insert(unit.grids[per_layer.unit_chosen[u]]);
  }
  for (const ModuleAllocation& m : per_layer.modules) {  // every module carries its layer's grid
    const size_t u = std::stoul(m.unit.substr(std::string("model.layers.").size()));
    CHECK(m.grids[m.chosen] == per_layer.units[u].grids[per_layer.unit_chosen[u]]);
  }
  CHECK(per_layer.achieved_bpw <= 4.0);
  CHECK(per_layer.bytes <= per_layer.budget_bytes);
  // Six units of six choices: the exact optimum is computable; the Lagrangian + repair result may be worse by at most
  // one unit's step, never better (that would mean a wrong DP or an over-budget answer).
  std::vector<AllocUnit> units;
  for (const auto& u : per_layer.units) {
    AllocUnit a{u.name, {}};
    for (size_t k = 0; k < u.grids.size(); ++k) a.choices.push_back({u.bytes[k], u.error[k]});
    units.push_back(a);
  }
  const Allocation exact = allocate_exact(units, static_cast<int64_t>(per_layer.budget_bytes));
  double chosen = 0;
  for (size_t u = 0; u < units.size(); ++u) chosen += units[u].choices[per_layer.unit_chosen[u]].error;
  CHECK(exact.error <= chosen * (1 + 1e-12));  // the same terms summed: 1e-12 relative
  CHECK(per_layer.to_json().at("units").size() == 6);
  CHECK(per_layer.to_json().at("modules").size() == 42);
}

TEST_CASE("gptq sensitivity never exceeds rtn's on the same module and grid beyond GPTQ's damping", "[allocate]") {
  Model model(test::repo_path(kModel));
  const CalibrationStats stats = test::hessian_stats(model);
  const Recipe recipe = rtn_recipe();
  AllocationOptions o;
  o.target_bpw = 4.0;
  const AllocationReport rtn = allocate_grids(model, recipe, stats, o);
  o.metric = "gptq";
  const AllocationReport gptq = allocate_grids(model, recipe, stats, o);
  CHECK(gptq.metric == "gptq");
  REQUIRE(gptq.modules.size() == rtn.modules.size());
  int below = 0, total = 0;
  for (size_t i = 0; i < rtn.modules.size(); ++i) {
    const ModuleAllocation& r = rtn.modules[i];
    const ModuleAllocation& g = gptq.modules[i];
    REQUIRE(g.module == r.module);
    const at::Tensor w = model.weights().load(r.module + ".weight").to(at::kFloat);
    const int64_t layer = std::stol(r.module.substr(13));  // "model.layers.<i>...."
    const int id = gptq.units[i].modules[0].linear;
    const at::Tensor h = stats.get(layer, static_cast<LinearId>(id), Stat::Hessian);
    const double lambda = recipe.gptq.percdamp * h.diagonal().mean().item<double>();
    for (size_t k = 0; k < r.grids.size(); ++k) {
      CAPTURE(r.module, r.grids[k], g.error[k], r.error[k]);
      // GPTQ minimises 1/2 tr(dW (H + λI) dW^T), λ = damp x mean diag(H); its result has a lower damped loss than
      // RTN's (the property its column updates aim for), so its undamped loss is at most RTN's plus RTN's damping
      // term 1/2 λ ‖dW_rtn‖². That term is the tolerance; no other slack.
      const at::Tensor dw = rtn_candidate_weight(w, r.grids[k], recipe, r.module, at::Tensor()) - w;
      const double damping = 0.5 * lambda * dw.to(at::kDouble).square().sum().item<double>();
      CHECK(g.error[k] <= r.error[k] + damping);
      below += g.error[k] < r.error[k];
      ++total;
    }
  }
  CHECK(below > total * 9 / 10);  // and on nearly every module/grid it is strictly lower
}

TEST_CASE("saved sensitivities round-trip, give the same allocation, and are refused for another run", "[allocate]") {
  const std::string dir = test::make_temp_dir("alloc-sens");
  Model model(test::repo_path(kModel));
  const CalibrationStats stats = test::hessian_stats(model);
  AllocationOptions o;
  o.target_bpw = 3.5;
  o.save_sensitivity = dir + "/s.json";
  const AllocationReport measured = allocate_grids(model, rtn_recipe(), stats, o);
  REQUIRE(file_exists(dir + "/s.json"));
  CHECK(read_text_file(dir + "/s.json").back() == '\n');  // whole (written to a temporary, renamed)

  // Reused: no stats needed (an empty stats object would make measuring fail), the same choices and numbers.
  AllocationOptions r;
  r.target_bpw = 3.5;
  r.load_sensitivity = dir + "/s.json";
  const AllocationReport reused = allocate_grids(model, rtn_recipe(), CalibrationStats(), r);
  REQUIRE(reused.modules.size() == measured.modules.size());
  for (size_t i = 0; i < measured.modules.size(); ++i) {
    CHECK(reused.modules[i].module == measured.modules[i].module);
    CHECK(reused.modules[i].chosen == measured.modules[i].chosen);
    CHECK(reused.modules[i].error == measured.modules[i].error);  // bit for bit: JSON doubles round-trip
  }
  CHECK(reused.to_json() == measured.to_json());

  // Refusals name what differs.
  const nlohmann::json saved = nlohmann::json::parse(read_text_file(dir + "/s.json"));
  auto refused_with = [&](const nlohmann::json& j, AllocationOptions opts) {
    write_text_file_atomic(dir + "/bad.json", j.dump());
    opts.load_sensitivity = dir + "/bad.json";
    return refusal(model, stats, opts);
  };
  r.metric = "gptq";
  CHECK_THAT(refused_with(saved, r), Catch::Contains("holds rtn sensitivities") && Catch::Contains("gptq"));
  r.metric.clear();
  r.unit = "layer";
  CHECK_THAT(refused_with(saved, r), Catch::Contains("allocates per module"));
  r.unit.clear();
  AllocationOptions fewer = r;
  add_candidates({"w2g128", "w3g128", "w4g128"}, false, fewer, "--candidates");
  CHECK_THAT(refused_with(saved, fewer), Catch::Contains("candidate w5g128"));
  nlohmann::json j = saved;
  j["units"][3]["modules"][0]["params"] = 12345;
  CHECK_THAT(refused_with(j, r), Catch::Contains(j["units"][3]["name"].get<std::string>()) && Catch::Contains("12345"));
  j = saved;
  j["units"][5]["bytes"][2] = 1.0;
  CHECK_THAT(refused_with(j, r), Catch::Contains(j["units"][5]["name"].get<std::string>()) &&
                                     Catch::Contains("candidate w4g128"));
  j = saved;
  j["units"][0]["error"][0] = -1.0;
  CHECK_THAT(refused_with(j, r), Catch::Contains("error -1"));
  j = saved;
  j["config_sha256"] = "0123456789abcdef";
  CHECK_THAT(refused_with(j, r), Catch::Contains("another model"));
  j = saved;
  j["version"] = 99;
  CHECK_THAT(refused_with(j, r), Catch::Contains("version 99"));
  // Another model entirely: stories260K's config differs.
  Model other(test::repo_path("data/models/stories260K"));
  AllocationOptions on_other = r;
  on_other.load_sensitivity = dir + "/s.json";
  Recipe g32 = rtn_recipe();
  g32.weights.group_size = 32;
  CHECK_THROWS_WITH(allocate_grids(other, g32, CalibrationStats(), on_other), Catch::Contains("another model"));
  // The same config.json with other weights (one value of the last tensor changed: the file's last byte).
  const std::string copy = dir + "/retrained";
  std::filesystem::copy(test::repo_path(kModel), copy);
  {
    std::fstream f(copy + "/model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(-1, std::ios::end);
    const char last = static_cast<char>(f.get());
    f.seekp(-1, std::ios::end);
    f.put(static_cast<char>(last ^ 0x01));
  }
  Model retrained(copy);
  CHECK_THROWS_WITH(allocate_grids(retrained, rtn_recipe(), CalibrationStats(), on_other),
                    Catch::Contains("other weights"));
}

TEST_CASE("recipe allocation.sensitivity and allocation.unit are read and checked", "[allocate][recipe]") {
  const Recipe r = parse_recipe("name: x\nweights: {method: rtn}\nallocation: {target_bpw: 3.5, sensitivity: gptq, "
                                "unit: layer}\n", "x.yaml");
  CHECK(r.allocation_sensitivity == "gptq");
  CHECK(r.allocation_unit == "layer");
  AllocationOptions o;
  CHECK(merged_allocation_options(o, r).metric == "gptq");
  o.metric = "kl";  // the flag wins
  CHECK(merged_allocation_options(o, r).metric == "kl");
  CHECK_THROWS_WITH(parse_recipe("name: x\nallocation: {sensitivity: mse}\n", "x.yaml"),
                    Catch::Contains("allocation.sensitivity") && Catch::Contains("rtn, gptq, kl"));
}
