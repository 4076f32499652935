// lib/export GPTQ: ptq checkpoint -> gptq_v2 / gptq (v1) -> open_model gives the ptq checkpoint's weights and
// logits exactly (same codes, same fp16 scales); refusals (FP input, mixed schemes, unpackable widths, v1 zero 0,
// existing output); inspect reads the export back.
#include <catch2/catch.hpp>

#include <filesystem>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "core/file.h"
#include "export/compressed_tensors_export.h"
#include "export/gptq_export.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "pipeline/quantize.h"
#include "pipeline/recipe.h"
#include "quant/checkpoint.h"
#include "quant/gptq_checkpoint.h"
#include "runtime/inspect.h"
#include "runtime/open_model.h"
#include "tests/test_paths.h"

using namespace ptq;

namespace {

// fp16 source, every width a multiple of 32: the export changes no value (non-quantized tensors stay fp16).
const std::string kSotu = "data/models/sotu-llama-8m";
const std::string kStories = "data/models/stories260K";

std::string quantized(const std::string& model, const std::string& dir, int bits, int64_t group, bool sym) {
  Model m(test::repo_path(model));
  QuantizeOptions o;
  o.recipe = load_recipe(test::repo_path("configs/w4a16-rtn.yaml"));
  o.recipe.weights.bits = bits;
  o.recipe.weights.group_size = group;
  o.recipe.weights.sym = sym;
  o.out_dir = dir;
  quantize_model(m, o);
  return dir;
}

// Every weight the runner reads, and the logits of a fixed sequence, are identical.
void require_same_model(const std::string& a_dir, const std::string& b_dir) {
  auto a = open_model(a_dir);
  auto b = open_model(b_dir);
  CheckpointQuantConfig qc;
  REQUIRE(read_checkpoint_quant_config(a_dir, qc));
  for (const auto& [m, info] : qc.modules) {
    INFO(m);
    REQUIRE(b->weights().contains(m + ".weight"));
    CHECK(at::equal(a->weights().load(m + ".weight"), b->weights().load(m + ".weight")));
  }
  const at::Tensor ids = at::arange(1, 40, at::kLong).unsqueeze(0);
  CHECK(at::equal(a->forward(ids), b->forward(ids)));
}

}  // namespace

TEST_CASE("ptq checkpoint exported as gptq_v2 and gptq (v1) reads back bit-exact", "[gptq_export]") {
  const std::string tmp = test::make_temp_dir("gptq-export");
  const std::string sym = quantized(kSotu, tmp + "/w4g64", 4, 64, true);
  for (GptqFormat f : {GptqFormat::V2, GptqFormat::V1}) {
    INFO(gptq_format_name(f));
    const std::string out = tmp + "/" + gptq_format_name(f);
    GptqExportOptions o;
    o.format = f;
    const GptqExportReport rep = export_gptq(sym, out, o);
    CHECK(rep.kept_float.empty());
    CHECK(rep.modules.size() == 6 * 7);
    const nlohmann::json q = nlohmann::json::parse(read_text_file(out + "/config.json"))["quantization_config"];
    CHECK(q["quant_method"] == "gptq");
    CHECK(q["checkpoint_format"] == gptq_format_name(f));
    CHECK(q["bits"] == 4);
    CHECK(q["group_size"] == 64);
    CHECK(q["sym"] == true);
    CHECK(q["desc_act"] == false);
    for (const char* k : {"damp_percent", "static_groups", "true_sequential"}) CHECK(q.contains(k));
    CHECK(nlohmann::json::parse(read_text_file(out + "/quantize_config.json")) == q);
    CHECK(file_exists(out + "/tokenizer.model"));
    // Symmetric 4-bit zeros are 8: words 0x88888888 (v2) / 0x77777777 (v1), as GPTQ kernels expect.
    const TensorArchive ar(out);
    const TensorView z = ar.view("model.layers.0.self_attn.q_proj.qzeros");
    CHECK(z.dtype() == DType::I32);
    CHECK(*reinterpret_cast<const uint32_t*>(z.data) == (f == GptqFormat::V2 ? 0x88888888u : 0x77777777u));
    CHECK(ar.view("model.layers.0.self_attn.q_proj.qweight").shape() == std::vector<int64_t>{256 / 8, 256});
    CHECK(ar.view("model.layers.0.self_attn.q_proj.scales").dtype() == DType::F16);
    CHECK(ar.view("model.embed_tokens.weight").dtype() == DType::F16);
    CHECK(ar.files()[0]->metadata().count("ptq.provenance") == 1);
    CHECK(nlohmann::json::parse(read_text_file(out + "/config.json"))["ptq_provenance"]["tool"] == "ptq");
    require_same_model(sym, out);

    const ModelSummary s = summarize_model(out);
    CHECK(s.quantized);
    CHECK(s.modules.size() == 6 * 7);
    CHECK(s.modules_by_format.count(std::string(gptq_format_name(f)) + ":w4g64") == 1);
    // 4-bit codes + fp16 scale per 64 + 4-bit zero per 64 + int32 g_idx per input column (per N outputs).
    CHECK(s.quantized_bits_per_weight > 4.3);
    CHECK(s.quantized_bits_per_weight < 4.7);
  }
  // v1 -> v2 conversion of a GPTQ input keeps every value.
  GptqExportOptions o;
  o.format = GptqFormat::V2;
  export_gptq(tmp + "/gptq", tmp + "/v1-to-v2", o);
  require_same_model(sym, tmp + "/v1-to-v2");
}

TEST_CASE("gptq_v2 export of an asymmetric act-free grid is exact; the existing output needs force",
          "[gptq_export]") {
  const std::string tmp = test::make_temp_dir("gptq-export-asym");
  const std::string asym = quantized(kSotu, tmp + "/w4g32asym", 4, 32, false);
  GptqExportOptions o;
  const GptqExportReport rep = export_gptq(asym, tmp + "/v2", o);
  CHECK(rep.quantization_config["sym"] == false);
  require_same_model(asym, tmp + "/v2");
  CHECK_THROWS_WITH(export_gptq(asym, tmp + "/v2", o), Catch::Contains("already exists"));
  o.force = true;
  CHECK_NOTHROW(export_gptq(asym, tmp + "/v2", o));
}

TEST_CASE("gptq export refuses FP models, unpackable widths (or keeps them float), and v1 zeros of 0",
          "[gptq_export]") {
  const std::string tmp = test::make_temp_dir("gptq-export-refuse");
  CHECK_THROWS_WITH(export_gptq(test::repo_path(kSotu), tmp + "/fp", {}),
                    Catch::Contains("not a quantized checkpoint") && Catch::Contains("ptq quantize"));
  CHECK_FALSE(std::filesystem::exists(tmp + "/fp"));

  // stories260K: intermediate 172, so gate/up ([172, 64]) have N*4 = 688, not a multiple of 32.
  const std::string st = quantized(kStories, tmp + "/stories", 4, 32, true);
  CHECK_THROWS_WITH(export_gptq(st, tmp + "/st", {}), Catch::Contains("mlp.gate_proj [172, 64]") &&
                                                          Catch::Contains("--keep-unpackable-float"));
  CHECK_FALSE(std::filesystem::exists(tmp + "/st"));
  GptqExportOptions keep;
  keep.keep_unpackable_float = true;
  keep.float_dtype = DType::F32;  // stories is fp32: F32 keeps every value, dequantized fallbacks included
  const GptqExportReport rep = export_gptq(st, tmp + "/st", keep);
  CHECK(rep.kept_float.size() == 5 * 2);
  const nlohmann::json q = nlohmann::json::parse(read_text_file(tmp + "/st/config.json"))["quantization_config"];
  CHECK(q["dynamic"].contains("-:^model\\.layers\\.0\\.mlp\\.up_proj$"));
  require_same_model(st, tmp + "/st");

  // v1 cannot store an asymmetric zero of 0: a checkpoint with one written by hand.
  Model sotu(test::repo_path(kSotu));
  const std::string mod = "model.layers.0.self_attn.q_proj";
  ModuleQuantInfo info;
  info.format = "w4g32asym";
  info.spec = {4, 32, false, false};
  info.method = "rtn";
  {
    CheckpointWriter w(sotu, tmp + "/zero0", {{mod, info}}, false);
    QuantizedWeight qw = quantize_weight(sotu.weights().load(mod + ".weight"), info.spec, mod);
    qw.zeros[3][1] = 0;
    w.write_module(mod, qw);
    w.copy_unquantized();
    w.commit(nlohmann::json::object());
  }
  GptqExportOptions v1;
  v1.format = GptqFormat::V1;
  CHECK_THROWS_WITH(export_gptq(tmp + "/zero0", tmp + "/zero0-v1", v1),
                    Catch::Contains(mod) && Catch::Contains("zero point of 0") && Catch::Contains("gptq_v2") &&
                        Catch::Contains("--sym"));
  CHECK_FALSE(std::filesystem::exists(tmp + "/zero0-v1"));
  CHECK_NOTHROW(export_gptq(tmp + "/zero0", tmp + "/zero0-v2", {}));
  require_same_model(tmp + "/zero0", tmp + "/zero0-v2");

  // GPTQ has one global bits/group_size: a checkpoint mixing two is refused with both schemes named.
  const std::string mod2 = "model.layers.0.self_attn.k_proj";
  ModuleQuantInfo info8 = info;
  info8.format = "w8g32asym";
  info8.spec.bits = 8;
  {
    CheckpointWriter w(sotu, tmp + "/mixed", {{mod, info}, {mod2, info8}}, false);
    w.write_module(mod, quantize_weight(sotu.weights().load(mod + ".weight"), info.spec, mod));
    w.write_module(mod2, quantize_weight(sotu.weights().load(mod2 + ".weight"), info8.spec, mod2));
    w.copy_unquantized();
    w.commit(nlohmann::json::object());
  }
  CHECK_THROWS_WITH(export_gptq(tmp + "/mixed", tmp + "/mixed-v2", {}),
                    Catch::Contains("4 bits, group_size 32: " + mod) &&
                        Catch::Contains("8 bits, group_size 32: " + mod2));
}

TEST_CASE("compressed-tensors pack-quantized export reads back bit-exact, sym and asym",
          "[gptq_export][compressed_tensors]") {
  const std::string tmp = test::make_temp_dir("ct-export");
  for (const bool sym : {true, false}) {
    INFO((sym ? "sym" : "asym"));
    const std::string ck = quantized(kSotu, tmp + (sym ? "/w4g64" : "/w4g32asym"), 4, sym ? 64 : 32, sym);
    const std::string out = tmp + (sym ? "/ct-sym" : "/ct-asym");
    const PackedExportReport rep = export_compressed_tensors(ck, out, {});
    CHECK(rep.modules.size() == 6 * 7);
    const nlohmann::json q = nlohmann::json::parse(read_text_file(out + "/config.json"))["quantization_config"];
    CHECK(q["quant_method"] == "compressed-tensors");
    CHECK(q["format"] == "pack-quantized");
    CHECK(q["quantization_status"] == "compressed");
    REQUIRE(q["config_groups"].size() == 1);
    const nlohmann::json& w = q["config_groups"]["group_0"]["weights"];
    CHECK(q["config_groups"]["group_0"]["targets"] == nlohmann::json::array({"Linear"}));
    CHECK(w["num_bits"] == 4);
    CHECK(w["symmetric"] == sym);
    CHECK(w["strategy"] == "group");
    CHECK(w["group_size"] == (sym ? 64 : 32));
    CHECK(q["ignore"] == nlohmann::json::array({"lm_head"}));
    const TensorArchive ar(out);
    const std::string m = "model.layers.1.mlp.down_proj";  // [256, 768]
    CHECK(ar.view(m + ".weight_packed").shape() == std::vector<int64_t>{256, 768 / 8});
    CHECK(ar.view(m + ".weight_scale").shape() == std::vector<int64_t>{256, 768 / (sym ? 64 : 32)});
    CHECK(reinterpret_cast<const int64_t*>(ar.view(m + ".weight_shape").data)[1] == 768);
    CHECK(ar.contains(m + ".weight_zero_point") == !sym);
    if (!sym) CHECK(ar.view(m + ".weight_zero_point").shape() == std::vector<int64_t>{256 / 8, 768 / 32});
    require_same_model(ck, out);
    const ModelSummary s = summarize_model(out);
    CHECK(s.modules_by_format.count(sym ? "compressed-tensors:w4g64" : "compressed-tensors:w4g32asym") == 1);
    // and on to GPTQ from the imported compressed-tensors checkpoint
    export_gptq(out, out + "-gptq", {});
    require_same_model(ck, out + "-gptq");
  }
}

TEST_CASE("act-ordered modules keep their g_idx: desc_act in GPTQ, actorder group in compressed-tensors",
          "[gptq_export][compressed_tensors]") {
  const std::string tmp = test::make_temp_dir("gptq-export-actorder");
  Model sotu(test::repo_path(kSotu));
  const std::string mod = "model.layers.2.mlp.up_proj";  // [768, 256]
  ModuleQuantInfo info;
  info.format = "w4g32asym";
  info.spec = {4, 32, false, false};
  info.method = "gptq";
  info.act_order = true;
  {
    CheckpointWriter w(sotu, tmp + "/ck", {{mod, info}}, false);
    QuantizedWeight qw = quantize_weight(sotu.weights().load(mod + ".weight"), info.spec, mod);
    // Any column -> group map is a valid grid for dequantization; a permuted one stands for act-order.
    qw.g_idx = qw.g_idx.index_select(0, at::randperm(256, at::TensorOptions().dtype(at::kLong))).contiguous();
    w.write_module(mod, qw);
    w.copy_unquantized();
    w.commit(nlohmann::json::object());
  }
  const PackedExportReport g = export_gptq(tmp + "/ck", tmp + "/gptq", {});
  CHECK(g.quantization_config["desc_act"] == true);
  require_same_model(tmp + "/ck", tmp + "/gptq");
  const PackedExportReport c = export_compressed_tensors(tmp + "/ck", tmp + "/ct", {});
  CHECK(c.quantization_config["config_groups"]["group_0"]["weights"]["actorder"] == "group");
  CHECK(TensorArchive(tmp + "/ct").contains(mod + ".weight_g_idx"));
  // "Linear" targets every linear module: the 41 left floating point (and lm_head) are ignored.
  CHECK(c.quantization_config["ignore"].size() == 6 * 7 - 1 + 1);
  CHECK(c.quantization_config["ignore"][0] == "lm_head");
  require_same_model(tmp + "/ck", tmp + "/ct");
}
