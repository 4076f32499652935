// checkpoint/checkpoint.h: one Checkpoint says the kind of every input ptq reads (float, ptq, gptq, gptq_v2,
// compressed-tensors, gguf), and every quantized kind loads the same codes, scales and zeros for a module as the
// ptq checkpoint it was exported from (the exports are lossless for this grid: export tests check that separately).
#include <catch2/catch.hpp>

#include <filesystem>
#include <map>
#include <regex>
#include <tuple>

#include <ATen/ATen.h>

#include "checkpoint/checkpoint.h"
#include "export/compressed_tensors_export.h"
#include "export/gguf_export.h"
#include "export/gptq_export.h"
#include "model/model.h"
#include "pipeline/quantize.h"
#include "pipeline/recipe.h"
#include "runtime/inspect.h"
#include "tests/test_model.h"
#include "tests/test_paths.h"

using namespace ptq;

TEST_CASE("Checkpoint: every kind is recognised and quantized kinds load the same module", "[checkpoint_kinds]") {
  const std::string tmp = test::make_temp_dir("ck-kinds");
  const std::string fp = test::repo_path("data/models/sotu-llama-8m");
  const std::string ptq_dir = test::quantize_rtn("data/models/sotu-llama-8m", tmp + "/ptq", 4, 32, true);
  GptqExportOptions v1, v2;
  v1.format = GptqFormat::V1;
  v2.format = GptqFormat::V2;
  export_gptq(ptq_dir, tmp + "/gptq", v1);
  export_gptq(ptq_dir, tmp + "/gptq_v2", v2);
  export_compressed_tensors(ptq_dir, tmp + "/ct", PackedExportOptions{});
  export_gguf(fp, tmp + "/f16.gguf", GgufExportOptions{GgmlType::F16});

  CHECK(Checkpoint(fp).kind() == CheckpointKind::Float);
  CHECK_FALSE(Checkpoint(fp).quantized());
  const Checkpoint gguf(tmp + "/f16.gguf");
  CHECK(gguf.kind() == CheckpointKind::Gguf);
  CHECK_FALSE(gguf.quantized());
  CHECK(gguf.dir() != gguf.path());  // the decoded cache

  const std::string module = "model.layers.2.mlp.down_proj";
  const Checkpoint ref(ptq_dir);
  REQUIRE(ref.kind() == CheckpointKind::Ptq);
  const QuantizedWeight want = ref.load_weight(module);
  const std::pair<const char*, CheckpointKind> kinds[] = {{"/gptq", CheckpointKind::Gptq},
                                                          {"/gptq_v2", CheckpointKind::GptqV2},
                                                          {"/ct", CheckpointKind::CompressedTensors}};
  for (const auto& [dir, kind] : kinds) {
    INFO(dir);
    const Checkpoint ck(tmp + dir);
    CHECK(ck.kind() == kind);
    CHECK(ck.quantized());
    CHECK(ck.imported());
    CHECK(ck.quant_config().modules.size() == ref.quant_config().modules.size());
    const QuantizedWeight got = ck.load_weight(module);
    CHECK(got.q.equal(want.q));
    CHECK(got.scales.equal(want.scales));
    CHECK(got.zeros.equal(want.zeros));
    CHECK(got.g_idx.equal(want.g_idx));
    CHECK(summarize_model(tmp + dir).kind == ck.kind_name());
  }
  CHECK_THROWS_WITH(ref.load_weight("model.embed_tokens"),
                    Catch::Contains("model.embed_tokens") && Catch::Contains("not a quantized module"));
  CHECK_THROWS_WITH(Checkpoint(tmp + "/none"), Catch::Contains(tmp + "/none"));
}

TEST_CASE("inspect describes a GGUF file as stored: its ggml types, size and bits per weight", "[checkpoint_kinds]") {
  const std::string tmp = test::make_temp_dir("ck-gguf");
  const std::string fp = test::repo_path("data/models/sotu-llama-8m");
  const GgufExportReport rep = export_gguf(fp, tmp + "/q8.gguf", GgufExportOptions{GgmlType::Q8_0});
  const ModelSummary s = summarize_model(tmp + "/q8.gguf");
  CHECK(s.kind == "gguf");
  CHECK(s.file_bytes == std::filesystem::file_size(tmp + "/q8.gguf"));
  CHECK(s.files == std::vector<std::string>{tmp + "/q8.gguf"});
  int64_t tensors = 0, params = 0;
  std::map<std::string, int64_t> by_type;
  for (const auto& t : rep.tensors) {
    int64_t n = 1;
    for (int64_t d : t.dims) n *= d;
    by_type[ggml_type_name(t.type)] += n;
    params += n;
    ++tensors;
  }
  CHECK(s.tensors == tensors);
  CHECK(s.parameters == params);
  CHECK(s.params_by_dtype == by_type);  // what the exporter says it wrote, not the decoded F32 cache
  CHECK(s.params_by_dtype.count("q8_0") == 1);
  // Q8_0 is 34 bytes per 32 weights = 8.5 bits; the F32 norms push the average only slightly above it.
  CHECK(s.model_bits_per_weight > 8.5);
  CHECK(s.model_bits_per_weight < 8.6);
}

TEST_CASE("per-module grids export to GPTQ as GPTQModel dynamic rules and read back to the same codes",
          "[checkpoint_kinds]") {
  // A recipe's overrides (as --target-bpw writes them): down_proj 8-bit g32, v_proj 3-bit g64, the rest 4-bit g32.
  const std::string tmp = test::make_temp_dir("ck-dynamic");
  Model model(test::repo_path("data/models/sotu-llama-8m"));
  QuantizeOptions o;
  o.recipe = load_recipe(test::repo_path("configs/w4a16-rtn.yaml"));
  o.recipe.weights.group_size = 32;
  for (auto [match, bits, group] : {std::tuple{"mlp\\.down_proj", 8, int64_t{32}}, {"self_attn\\.v_proj", 3, int64_t{64}}}) {
    ModuleOverride ov;
    ov.match = match;
    ov.re = std::regex(ov.match);
    ov.bits = bits;
    ov.group_size = group;
    o.recipe.overrides.push_back(ov);
  }
  o.out_dir = tmp + "/mixed";
  quantize_model(model, o);
  GptqExportOptions v1;
  v1.format = GptqFormat::V1;
  export_gptq(tmp + "/mixed", tmp + "/gptq", v1);

  const Checkpoint ref(tmp + "/mixed"), gptq(tmp + "/gptq");
  const nlohmann::json& q = gptq.quant_config().raw;
  CHECK(q.at("bits") == 4);
  CHECK(q.at("group_size") == 32);
  CHECK(q.at("dynamic").size() == 12);  // 6 down_proj + 6 v_proj
  CHECK(q.at("dynamic").at("+:^model\\.layers\\.0\\.mlp\\.down_proj$") == nlohmann::json({{"bits", 8}, {"group_size", 32}}));
  for (const auto& [module, info] : ref.quant_config().modules) {
    CAPTURE(module);
    CHECK(gptq.quant_config().modules.at(module).spec.bits == info.spec.bits);
    const QuantizedWeight want = ref.load_weight(module), got = gptq.load_weight(module);
    CHECK(got.q.equal(want.q));
    CHECK(got.scales.equal(want.scales));
    CHECK(got.zeros.equal(want.zeros));
  }
}
