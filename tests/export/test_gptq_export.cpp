// lib/export GPTQ: ptq checkpoint -> gptq_v2 / gptq (v1) -> open_model gives the ptq checkpoint's weights and
// logits exactly (same codes, same fp16 scales); refusals (FP input, mixed schemes, unpackable widths, v1 zero 0,
// existing output); inspect reads the export back; an independent decoder written from FORMATS.md (no shared code
// with the writers or readers) gets the quantizer's own values back, bit for bit.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <tuple>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/file.h"
#include "core/half.h"
#include "eval/perplexity.h"
#include "export/compressed_tensors_export.h"
#include "export/gptq_export.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "pipeline/quantize.h"
#include "pipeline/recipe.h"
#include "quant/checkpoint.h"
#include "quant/gptq_checkpoint.h"
#include "runtime/inspect.h"
#include "runtime/open_model.h"
#include "tests/export/act_checkpoints.h"
#include "tests/test_model.h"
#include "tests/test_paths.h"

using namespace ptq;

namespace {

// fp16 source, every width a multiple of 32: the export changes no value (non-quantized tensors stay fp16).
const std::string kSotu = "data/models/sotu-llama-8m";
const std::string kStories = "data/models/stories260K";

std::string quantized(const std::string& model, const std::string& dir, int bits, int64_t group, bool sym) {
  return test::quantize_rtn(model, dir, bits, group, sym);
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

TEST_CASE("gptq_v2 export of an asymmetric act-free grid is exact, and the existing output needs force",
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

  // A checkpoint mixing two schemes: the global bits/group_size plus a GPTQModel "dynamic" rule for the other module,
  // which ptq's reader applies, so the export reads back to the same model.
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
  const GptqExportReport mixed = export_gptq(tmp + "/mixed", tmp + "/mixed-v2", {});
  CHECK(mixed.quantization_config.at("bits") == 4);
  CHECK(mixed.quantization_config.at("dynamic").size() == 1);
  require_same_model(tmp + "/mixed", tmp + "/mixed-v2");

  // The same two schemes as compressed-tensors: one config group per scheme, each targeting its module by exact name,
  // neither of them in "ignore"; the importer reads it back to the same model.
  const PackedExportReport ct = export_compressed_tensors(tmp + "/mixed", tmp + "/mixed-ct", {});
  CHECK(ct.modules.size() == 2);
  const nlohmann::json cq = nlohmann::json::parse(read_text_file(tmp + "/mixed-ct/config.json"))["quantization_config"];
  REQUIRE(cq["config_groups"].size() == 2);
  std::map<int, nlohmann::json> by_bits;
  for (const auto& [name, g] : cq["config_groups"].items()) by_bits[g["weights"]["num_bits"].get<int>()] = g;
  REQUIRE(by_bits.size() == 2);
  CHECK(by_bits[4]["targets"] == nlohmann::json::array({mod}));
  CHECK(by_bits[8]["targets"] == nlohmann::json::array({mod2}));
  CHECK(by_bits[8]["weights"]["symmetric"] == false);
  CHECK(by_bits[8]["weights"]["group_size"] == 32);
  const auto ignore = cq["ignore"].get<std::vector<std::string>>();
  CHECK(std::find(ignore.begin(), ignore.end(), mod) == ignore.end());
  CHECK(std::find(ignore.begin(), ignore.end(), mod2) == ignore.end());
  require_same_model(tmp + "/mixed", tmp + "/mixed-ct");
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

namespace {

// ---- An independent minimal decoder, written from docs/FORMATS.md alone ------------------------------
// It shares no code with the writers (quant/formats.h pack_bits/pack_gptq, the exporters) nor with ptq's import
// readers (quant/gptq_checkpoint.h): raw little-endian words from the safetensors bytes, shifts and masks.
struct RawTensor {
  std::vector<int64_t> shape;
  std::vector<uint32_t> words;  // I32 tensors
  std::vector<float> floats;    // F16 / F32 tensors
  std::vector<int8_t> bytes;    // I8 tensors
};

RawTensor raw(const TensorArchive& ar, const std::string& name) {
  const TensorView v = ar.view(name);
  RawTensor r;
  r.shape = v.shape();
  const size_t n = v.nbytes() / dtype_size(v.dtype());
  if (v.dtype() == DType::I32) {
    r.words.resize(n);
    std::memcpy(r.words.data(), v.data, n * 4);
  } else if (v.dtype() == DType::I8) {
    r.bytes.resize(n);
    std::memcpy(r.bytes.data(), v.data, n);
  } else if (v.dtype() == DType::F16) {
    std::vector<uint16_t> h(n);
    std::memcpy(h.data(), v.data, n * 2);
    for (uint16_t x : h) r.floats.push_back(fp16_to_f32(x));
  } else {
    REQUIRE(v.dtype() == DType::F32);
    r.floats.resize(n);
    std::memcpy(r.floats.data(), v.data, n * 4);
  }
  return r;
}

// GPTQ: w[i, n] = scales[g_idx[i], n] * (q[i, n] - zero[g_idx[i], n]); qweight [K/pf, N] packs input rows
// LSB first (bits b*k of word r: row r*pf + k), qzeros [G, N/pf] packs output columns; v1 stores zero - 1.
// Returns W[N, K] row-major.
std::vector<float> decode_gptq(const std::string& dir, const std::string& m, int b, bool v1) {
  const TensorArchive ar(dir);
  const RawTensor qw = raw(ar, m + ".qweight"), qz = raw(ar, m + ".qzeros"), sc = raw(ar, m + ".scales"),
                  gi = raw(ar, m + ".g_idx");
  const int pf = 32 / b;
  const uint32_t mask = (1u << b) - 1;
  const int64_t K = qw.shape[0] * pf, N = qw.shape[1];
  REQUIRE(int64_t(gi.words.size()) == K);
  REQUIRE(sc.shape[1] == N);
  std::vector<float> w(N * K);
  for (int64_t i = 0; i < K; ++i) {
    const int64_t g = int32_t(gi.words[i]);
    for (int64_t n = 0; n < N; ++n) {
      const int q = int((qw.words[(i / pf) * N + n] >> (b * (i % pf))) & mask);
      const int stored = int((qz.words[g * (N / pf) + n / pf] >> (b * (n % pf))) & mask);
      const int zero = v1 ? stored + 1 : stored;
      w[n * K + i] = sc.floats[g * N + n] * float(q - zero);
    }
  }
  return w;
}

// compressed-tensors pack-quantized: weight_packed [N, K*b/32], element j of row n at bit j*b, stored as the
// signed q + 2^(b-1); weight_scale [N, G]; weight_zero_point [N*b/32, G] (asymmetric only) packed along N, stored
// the same way; group of column j: weight_g_idx[j], else j / (K / G). w = scale * (q_signed - zero_signed).
std::vector<float> decode_compressed_tensors(const std::string& dir, const std::string& m, int b) {
  const TensorArchive ar(dir);
  const RawTensor wp = raw(ar, m + ".weight_packed"), sc = raw(ar, m + ".weight_scale");
  const int64_t N = wp.shape[0], K = wp.shape[1] * 32 / b, G = sc.shape[1];
  const int64_t* shape = reinterpret_cast<const int64_t*>(ar.view(m + ".weight_shape").data);
  REQUIRE(shape[0] == N);
  REQUIRE(shape[1] == K);
  const bool asym = ar.contains(m + ".weight_zero_point");
  const RawTensor zp = asym ? raw(ar, m + ".weight_zero_point") : RawTensor{};
  const RawTensor gi = ar.contains(m + ".weight_g_idx") ? raw(ar, m + ".weight_g_idx") : RawTensor{};
  const uint32_t mask = (1u << b) - 1;
  const int offset = 1 << (b - 1);
  auto field = [&](const std::vector<uint32_t>& words, int64_t row_words, int64_t row, int64_t j) {
    const int64_t bit = j * b;
    return int((words[row * row_words + bit / 32] >> (bit % 32)) & mask);
  };
  std::vector<float> w(N * K);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < K; ++j) {
      const int64_t g = gi.words.empty() ? j / (K / G) : int32_t(gi.words[j]);
      const int q = field(wp.words, wp.shape[1], n, j) - offset;
      // weight_zero_point[r, g] packs zeros of output rows along r: row n is element n of column g's stream.
      const int zero = asym ? int((zp.words[((n * b) / 32) * G + g] >> ((n * b) % 32)) & mask) - offset : 0;
      w[n * K + j] = sc.floats[n * G + g] * float(q - zero);
    }
  return w;
}

}  // namespace

TEST_CASE("an independent decoder written from FORMATS.md reads GPTQ v1/v2 and compressed-tensors exports back to "
          "the quantizer's own values, bit for bit", "[gptq_export][compressed_tensors]") {
  const std::string tmp = test::make_temp_dir("gptq-export-decode");
  Model sotu(test::repo_path(kSotu));
  for (auto [bits, group, sym] : {std::tuple{4, int64_t{64}, true}, std::tuple{4, int64_t{32}, false},
                                  std::tuple{2, int64_t{64}, false}, std::tuple{8, int64_t{128}, true}}) {
    const std::string tag = fmt::format("w{}g{}{}", bits, group, sym ? "" : "asym");
    INFO(tag);
    const std::string ck = quantized(kSotu, tmp + "/" + tag, bits, group, sym);
    GptqExportOptions v1;
    v1.format = GptqFormat::V1;
    const bool v1_ok = sym;  // an asymmetric RTN grid has zeros of 0 somewhere, which v1 refuses
    if (v1_ok) export_gptq(ck, ck + "-v1", v1);
    export_gptq(ck, ck + "-v2", {});
    export_compressed_tensors(ck, ck + "-ct", {});
    CheckpointQuantConfig qc;
    REQUIRE(read_checkpoint_quant_config(ck, qc));
    REQUIRE(qc.modules.size() == 6 * 7);
    for (const auto& [m, info] : qc.modules) {
      INFO(m);
      // The quantizer's own output: RTN of the FP weight (what the rtn recipe ran), dequantized.
      const at::Tensor ref =
          dequantize(quantize_weight(sotu.weights().load(m + ".weight"), info.spec, m)).contiguous();
      const float* r = ref.data_ptr<float>();
      const size_t n = size_t(ref.numel());
      auto same = [&](const std::vector<float>& got) {
        return got.size() == n && std::memcmp(got.data(), r, n * sizeof(float)) == 0;
      };
      if (v1_ok) CHECK(same(decode_gptq(ck + "-v1", m, bits, true)));
      CHECK(same(decode_gptq(ck + "-v2", m, bits, false)));
      CHECK(same(decode_compressed_tensors(ck + "-ct", m, bits)));
    }
  }
}

namespace {

// compressed-tensors int-quantized (FORMATS.md: W8A8 "int-quantized"; compressed-tensors' naive layout): weight
// [N, K] int8 signed codes, weight_scale [N, G], weight_zero_point [N, G] int8 (asymmetric only), weight_g_idx [K]
// (act-order only); w = scale * (weight - zero_point). Static activations: input_scale [1], input_zero_point [1] int8
// (asymmetric only).
struct IntQuantized {
  int64_t N = 0, K = 0, G = 0;
  RawTensor weight, scale, zero, input_scale, input_zero;
  std::vector<float> w;  // W[N, K] dequantized
};

IntQuantized decode_int_quantized(const std::string& dir, const std::string& m) {
  const TensorArchive ar(dir);
  IntQuantized d;
  REQUIRE(ar.view(m + ".weight").dtype() == DType::I8);
  d.weight = raw(ar, m + ".weight");
  d.scale = raw(ar, m + ".weight_scale");
  d.N = d.weight.shape[0];
  d.K = d.weight.shape[1];
  d.G = d.scale.shape[1];
  REQUIRE(d.scale.shape[0] == d.N);
  if (ar.contains(m + ".weight_zero_point")) d.zero = raw(ar, m + ".weight_zero_point");
  const RawTensor gi = ar.contains(m + ".weight_g_idx") ? raw(ar, m + ".weight_g_idx") : RawTensor{};
  if (ar.contains(m + ".input_scale")) d.input_scale = raw(ar, m + ".input_scale");
  if (ar.contains(m + ".input_zero_point")) d.input_zero = raw(ar, m + ".input_zero_point");
  d.w.resize(d.N * d.K);
  for (int64_t n = 0; n < d.N; ++n)
    for (int64_t k = 0; k < d.K; ++k) {
      const int64_t g = gi.words.empty() ? k / (d.K / d.G) : int32_t(gi.words[k]);
      const int zp = d.zero.bytes.empty() ? 0 : d.zero.bytes[n * d.G + g];
      d.w[n * d.K + k] = d.scale.floats[n * d.G + g] * float(int(d.weight.bytes[n * d.K + k]) - zp);
    }
  return d;
}

bool same_bits(const void* a, const void* b, size_t n) { return std::memcmp(a, b, n) == 0; }

}  // namespace

TEST_CASE("W8A8 checkpoints export as compressed-tensors int-quantized, and an independent decoder gets the "
          "checkpoint's int8 codes, scales and input scales back bit for bit", "[gptq_export][int_quantized]") {
  struct Case {
    const char* tag;
    const char* recipe;
    std::function<void(Recipe&)> edit;
    const char* strategy;  // input_activations
    bool sym;              // input_activations
    int64_t group = -1;    // weights
    bool wsym = true;      // weights
  };
  const std::vector<Case> cases = {
      {"w8a8-smoothquant", "w8a8-smoothquant", {}, "tensor", true},
      {"w8a8-rtn-static", "w8a8-rtn-static", {}, "tensor", true},
      {"w8a8-rtn-dynamic", "w4a4-rtn-dynamic",  // ptq quantize --recipe w4a4-rtn-dynamic --bits 8 --act-bits 8
       [](Recipe& r) {
         r.weights.bits = 8;
         r.activations.bits = 8;
       },
       "token", true},
      {"w8a8-rtn-static-asym", "w8a8-rtn-static", [](Recipe& r) { r.activations.sym = false; }, "tensor", false},
      // grouped weights (format w8g128): the format holds them, vLLM's int8 kernels do not (a note says so)
      {"w8g128-a8-rtn-dynamic", "w4a4-rtn-dynamic",
       [](Recipe& r) {
         r.weights = {8, 128, true, false};
         r.activations.bits = 8;
       },
       "token", true, 128, true},
  };
  const std::string tmp = test::make_temp_dir("ct-int-quantized");
  for (const Case& c : cases) {
    INFO(c.tag);
    const std::string ck = test::act_checkpoint(c.tag, c.recipe, c.edit);
    const std::string out = tmp + "/" + c.tag;
    const PackedExportReport rep = export_compressed_tensors(ck, out, {});
    CHECK(rep.modules.size() == 6 * 7);
    // Symmetric per-channel weights, q/k/v and gate/up sharing their input scale: nothing vLLM runs otherwise
    // (the only other note says F32 folded norms were rounded to the default F16).
    bool vllm_note = false;
    for (const std::string& n : rep.notes) {
      vllm_note = vllm_note || n.find("vLLM's int8 W8A8 kernels take symmetric per-channel weights") == 0;
      CHECK_THAT(n, Catch::Contains("rounded to F16") || Catch::Contains("vLLM's int8 W8A8 kernels"));
    }
    CHECK(vllm_note == (c.group > 0 || !c.wsym));
    const nlohmann::json q = nlohmann::json::parse(read_text_file(out + "/config.json"))["quantization_config"];
    CHECK(q["quant_method"] == "compressed-tensors");
    CHECK(q["format"] == "int-quantized");
    CHECK(q["quantization_status"] == "compressed");
    CHECK(q["ignore"] == nlohmann::json::array({"lm_head"}));
    REQUIRE(q["config_groups"].size() == 1);
    const nlohmann::json& g = q["config_groups"]["group_0"];
    CHECK(g["targets"] == nlohmann::json::array({"Linear"}));
    CHECK(g["format"] == "int-quantized");
    CHECK(g["weights"]["num_bits"] == 8);
    CHECK(g["weights"]["type"] == "int");
    CHECK(g["weights"]["strategy"] == (c.group > 0 ? "group" : "channel"));
    CHECK(g["weights"]["symmetric"] == c.wsym);
    CHECK(g["weights"]["group_size"] == (c.group > 0 ? nlohmann::json(c.group) : nlohmann::json()));
    const nlohmann::json& a = g["input_activations"];
    CHECK(a["num_bits"] == 8);
    CHECK(a["type"] == "int");
    CHECK(a["strategy"] == c.strategy);
    CHECK(a["dynamic"] == (std::string(c.strategy) == "token"));
    CHECK(a["symmetric"] == c.sym);
    CHECK_FALSE(file_exists(out + "/quantize_config.json"));

    const TensorArchive out_ar(out), ck_ar(ck);
    for (const auto& name : out_ar.names()) {
      INFO(name);
      CHECK_FALSE(name.find(".qweight") != std::string::npos);  // nothing of ptq's layout is left behind
      CHECK_FALSE(name.find(".scales") != std::string::npos);
    }
    CheckpointQuantConfig qc;
    REQUIRE(read_checkpoint_quant_config(ck, qc));
    for (const auto& [m, info] : qc.modules) {
      INFO(m);
      REQUIRE(info.act);
      const IntQuantized d = decode_int_quantized(out, m);
      const QuantizedWeight qw = load_quantized_weight(ck_ar, m, info);
      REQUIRE(d.N == info.out_features);
      REQUIRE(d.K == info.in_features);
      REQUIRE(d.G == (c.group > 0 ? d.K / c.group : 1));
      // int8 code = ptq's unsigned code - 128; the fp16 scales kept bit for bit; the same dequantized weights.
      const at::Tensor codes = (qw.q.to(at::kInt) - 128).to(at::kChar).contiguous();
      CHECK(same_bits(codes.data_ptr(), d.weight.bytes.data(), d.weight.bytes.size()));
      const at::Tensor scales = qw.scales.to(at::kFloat).contiguous();
      REQUIRE(size_t(scales.numel()) == d.scale.floats.size());
      CHECK(same_bits(scales.data_ptr(), d.scale.floats.data(), d.scale.floats.size() * 4));
      if (c.wsym) {
        CHECK(d.zero.bytes.empty());
      } else {
        const at::Tensor zeros = (qw.zeros.to(at::kInt) - 128).to(at::kChar).contiguous();
        REQUIRE(size_t(zeros.numel()) == d.zero.bytes.size());
        CHECK(same_bits(zeros.data_ptr(), d.zero.bytes.data(), d.zero.bytes.size()));
      }
      const at::Tensor ref = dequantize(qw).to(at::kFloat).contiguous();
      CHECK(same_bits(ref.data_ptr(), d.w.data(), d.w.size() * 4));
      if (std::string(c.strategy) == "token") {
        CHECK(d.input_scale.floats.empty());
        CHECK(d.input_zero.bytes.empty());
        continue;
      }
      const ActQuantParams p = load_act_params(ck_ar, m, info);
      REQUIRE(d.input_scale.floats.size() == 1);
      CHECK(out_ar.view(m + ".input_scale").dtype() == DType::F32);
      const float s = p.scale.item<float>();
      CHECK(same_bits(&s, d.input_scale.floats.data(), 4));
      if (c.sym) {
        CHECK(d.input_zero.bytes.empty());
      } else {
        REQUIRE(d.input_zero.bytes.size() == 1);
        CHECK(int(d.input_zero.bytes[0]) + 128 == int(p.zero.item<float>()));
      }
    }
  }
}

TEST_CASE("exports refuse what a standard Llama cannot represent, with the reasons and the modules / tensors named",
          "[gptq_export][int_quantized]") {
  const std::string tmp = test::make_temp_dir("export-refuse-act");
  auto refused = [&](const std::string& ck, const std::string& tag) {
    INFO(tag);
    std::string ct, gptq;
    try {
      export_compressed_tensors(ck, tmp + "/" + tag + "-ct", {});
    } catch (const std::invalid_argument& e) {
      ct = e.what();
    }
    try {
      export_gptq(ck, tmp + "/" + tag + "-gptq", {});
    } catch (const std::invalid_argument& e) {
      gptq = e.what();
    }
    CHECK_FALSE(ct.empty());
    CHECK_FALSE(gptq.empty());
    CHECK_FALSE(std::filesystem::exists(tmp + "/" + tag + "-ct"));  // no partial output
    CHECK_FALSE(std::filesystem::exists(tmp + "/" + tag + "-gptq"));
    return std::pair{ct, gptq};
  };

  SECTION("OutlierTune: RMSNorm biases and linear biases llama has none of") {
    const std::string ck = test::act_checkpoint("w8a8-outliertune", "w8a8-outliertune");
    const auto [ct, gptq] = refused(ck, "outliertune");
    for (const std::string& e : {ct, gptq}) {
      CHECK_THAT(e, Catch::Contains("RMSNorm biases") && Catch::Contains("model.layers.0.input_layernorm.bias") &&
                        Catch::Contains("linear biases") && Catch::Contains("model.layers.0.self_attn.q_proj.bias"));
    }
    CHECK_THAT(gptq, Catch::Contains("activation quantization") && Catch::Contains("stores weights only"));
    CHECK_THAT(ct, !Catch::Contains("activation quantization"));  // its a8 schemes are int-quantized ones
  }
  SECTION("MergeQuant: norm channel-index tensors, widened modules, 4-bit activations") {
    const std::string ck = test::act_checkpoint(
        "w4a4-mergequant-step", "w4a4-mergequant", [](Recipe& r) { r.migration.split_on = "step"; },
        test::outlierized_sotu());
    REQUIRE(TensorArchive(ck).contains("model.layers.0.input_layernorm.index"));
    const auto [ct, gptq] = refused(ck, "mergequant");
    for (const std::string& e : {ct, gptq})
      CHECK_THAT(e, Catch::Contains("norm channel-index tensors") &&
                        Catch::Contains("model.layers.0.input_layernorm.index") &&
                        Catch::Contains("modules of another shape") && Catch::Contains("activation quantization"));
    CHECK_THAT(ct, Catch::Contains("8-bit activations, not 4-bit") && Catch::Contains("4-bit weights"));
    CHECK_THAT(gptq, !Catch::Contains("ptq export --format compressed-tensors"));
  }
  SECTION("an online Hadamard rotation before down_proj") {
    const std::string ck = test::act_checkpoint("w8a8-rtn-static-hadamard", "w8a8-rtn-static",
                                                [](Recipe& r) { r.rotation.enabled = true; });
    const auto [ct, gptq] = refused(ck, "hadamard");
    for (const std::string& e : {ct, gptq}) CHECK_THAT(e, Catch::Contains("online Hadamard rotation"));
  }
  SECTION("W8A8 into a weight-only format: refused, pointing at compressed-tensors int-quantized") {
    const std::string ck = test::act_checkpoint("w8a8-smoothquant", "w8a8-smoothquant");
    for (GptqFormat f : {GptqFormat::V1, GptqFormat::V2}) {
      GptqExportOptions o;
      o.format = f;
      CHECK_THROWS_WITH(export_gptq(ck, tmp + "/sq-gptq", o),
                        Catch::Contains("activation quantization (a8 per_tensor sym") &&
                            Catch::Contains("model.layers.0.mlp.down_proj") &&
                            Catch::Contains("ptq export --format compressed-tensors"));
    }
    CHECK_FALSE(std::filesystem::exists(tmp + "/sq-gptq"));
  }
  SECTION("activation schemes int-quantized has no form for; weight-only modules beside W8A8 ones") {
    // Written by hand: one module per scheme, so each reason is seen on its own.
    Model sotu(test::repo_path(kSotu));
    const std::string q = "model.layers.0.self_attn.q_proj", o = "model.layers.0.self_attn.o_proj",
                      up = "model.layers.0.mlp.up_proj", down = "model.layers.1.mlp.down_proj";
    ModuleQuantInfo w8;
    w8.format = "w8";
    w8.spec = {8, kPerChannel, true, false};
    w8.method = "rtn";
    ModuleQuantInfo w4 = w8;
    w4.format = "w4";
    w4.spec.bits = 4;
    auto write = [&](const std::string& dir, const std::map<std::string, ModuleQuantInfo>& mods,
                     const std::map<std::string, ActQuantSpec>& acts) {
      CheckpointWriter w(sotu, dir, mods, false);
      for (const auto& [m, info] : mods) {
        w.write_module(m, quantize_weight(sotu.weights().load(m + ".weight"), info.spec, m));
        const auto a = acts.find(m);
        if (a == acts.end()) continue;
        const int64_t n = a->second.granularity == ActGranularity::PerChannel ? 256 : 1;
        const ActQuantParams p{at::full({n}, 0.05f), at::zeros({n})};
        w.write_activation(m, a->second, a->second.is_static() ? &p : nullptr);
      }
      w.copy_unquantized();
      w.commit(nlohmann::json::object());
      return dir;
    };
    const std::string bad = write(tmp + "/bad", {{q, w8}, {o, w4}, {up, w8}, {down, w8}},
                                  {{q, {8, ActGranularity::PerChannel, true, 1.0}},
                                   {o, {8, ActGranularity::PerToken, true, 1.0}},
                                   {up, {6, ActGranularity::PerTensor, true, 1.0}},
                                   {down, {8, ActGranularity::PerToken, true, 0.9}}});
    CHECK_THROWS_WITH(export_compressed_tensors(bad, tmp + "/bad-ct", {}),
                      Catch::Contains("per-channel static input scales") && Catch::Contains(q) &&
                          Catch::Contains("4-bit weights") && Catch::Contains(o) &&
                          Catch::Contains("not 6-bit") && Catch::Contains(up) &&
                          Catch::Contains("clipped to 0.9") && Catch::Contains(down));
    CHECK_FALSE(std::filesystem::exists(tmp + "/bad-ct"));
    const std::string mixed = write(tmp + "/mixed", {{q, w8}, {o, w8}}, {{q, {8, ActGranularity::PerToken, true, 1.0}}});
    CHECK_THROWS_WITH(export_compressed_tensors(mixed, tmp + "/mixed-ct", {}),
                      Catch::Contains("carry an activation scheme") && Catch::Contains(o));
    CHECK_FALSE(std::filesystem::exists(tmp + "/mixed-ct"));
  }
}

TEST_CASE("int-quantized exports import back: the same codes, activation kernels, logits and perplexity",
          "[gptq_export][int_quantized]") {
  const std::string tmp = test::make_temp_dir("ct-int-roundtrip");
  std::vector<int32_t> ids = load_tokenizer(test::repo_path(kSotu))
                                 ->encode(read_text_file(test::repo_path("data/sotu-test.txt")));
  PerplexityOptions po;
  po.seqlen = 128;
  po.max_windows = 6;
  const at::Tensor seq = at::arange(1, 60, at::kLong).unsqueeze(0);
  const std::vector<std::pair<std::string, std::string>> cases = {{"w8a8-smoothquant", "w8a8-smoothquant"},
                                                                   {"w8a8-rtn-static-asym", "w8a8-rtn-static"},
                                                                   {"w8a8-rtn-dynamic", "w4a4-rtn-dynamic"},
                                                                   {"w8g128-a8-rtn-dynamic", "w4a4-rtn-dynamic"}};
  const std::map<std::string, std::function<void(Recipe&)>> edits = {
      {"w8a8-rtn-static-asym", [](Recipe& r) { r.activations.sym = false; }},
      {"w8a8-rtn-dynamic",
       [](Recipe& r) {
         r.weights.bits = 8;
         r.activations.bits = 8;
       }},
      {"w8g128-a8-rtn-dynamic", [](Recipe& r) {
         r.weights = {8, 128, true, false};
         r.activations.bits = 8;
       }}};
  for (const auto& [tag, recipe] : cases) {
    INFO(tag);
    const auto e = edits.find(tag);
    const std::string ck = test::act_checkpoint(tag, recipe, e == edits.end() ? std::function<void(Recipe&)>{} : e->second);
    PackedExportOptions f32;
    f32.float_dtype = DType::F32;  // the folded norms are F32: kept bit for bit
    const std::string out = tmp + "/" + tag;
    const PackedExportReport rep = export_compressed_tensors(ck, out, f32);
    for (const std::string& n : rep.notes) CHECK_THAT(n, !Catch::Contains("rounded"));

    ImportedCheckpoint ic;
    REQUIRE(read_imported_config(out, ic));
    CHECK(ic.format_name() == "compressed-tensors");
    CheckpointQuantConfig src, back;
    REQUIRE(read_checkpoint_quant_config(ck, src));
    back = imported_module_config(TensorArchive(out), ic);
    REQUIRE(back.modules.size() == src.modules.size());
    for (const auto& [m, info] : src.modules) {
      INFO(m);
      const ModuleQuantInfo& b = back.modules.at(m);
      CHECK(b.spec.bits == info.spec.bits);
      CHECK(b.spec.group_size == info.spec.group_size);
      CHECK(b.spec.sym == info.spec.sym);
      REQUIRE(b.act);
      CHECK(b.act->describe() == info.act->describe());
      const ActQuantParams p = load_act_params(TensorArchive(ck), m, info);
      const ActQuantParams q = load_imported_act_params(TensorArchive(out), m, b);
      CHECK(p.scale.defined() == q.scale.defined());
      if (p.scale.defined()) {
        CHECK(at::equal(p.scale, q.scale));
        CHECK(at::equal(p.zero, q.zero));
      }
    }
    // A model of the export without its activation kernels would run W8A16: refused, not approximated.
    CHECK_THROWS_WITH(make_imported_weight_source(TensorArchive(out), ic), Catch::Contains("open_imported_model"));
    auto a = open_model(ck);
    auto b = open_imported_model(out, ic);
    REQUIRE(b->layer(0)[LinearId::Q].kernel != nullptr);
    CHECK(at::equal(a->forward(seq), b->forward(seq)));
    const double ppl_a = evaluate_perplexity(*a, ids, po, "").ppl, ppl_b = evaluate_perplexity(*b, ids, po, "").ppl;
    CHECK(ppl_a == ppl_b);
    // and on to compressed-tensors again: every tensor the same bytes
    export_compressed_tensors(out, out + "-again", f32);
    const TensorArchive x(out), y(out + "-again");
    REQUIRE(x.names().size() == y.names().size());
    for (const auto& name : x.names()) {
      INFO(name);
      REQUIRE(y.contains(name));
      const TensorView u = x.view(name), v = y.view(name);
      CHECK(u.dtype() == v.dtype());
      CHECK(u.shape() == v.shape());
      CHECK((u.nbytes() == v.nbytes() && std::memcmp(u.data, v.data, u.nbytes()) == 0));
    }
  }
}

TEST_CASE("int-quantized holds asymmetric grouped 8-bit weights (weight_zero_point int8), noted as not for vLLM",
          "[gptq_export][int_quantized]") {
  const std::string tmp = test::make_temp_dir("ct-int-asym");
  Model sotu(test::repo_path(kSotu));
  const std::string m = "model.layers.3.mlp.down_proj";  // [256, 768]
  ModuleQuantInfo info;
  info.format = "w8g32asym";
  info.spec = {8, 32, false, false};
  info.method = "rtn";
  const ActQuantSpec act{8, ActGranularity::PerTensor, false, 1.0};
  {
    CheckpointWriter w(sotu, tmp + "/ck", {{m, info}}, false);
    w.write_module(m, quantize_weight(sotu.weights().load(m + ".weight"), info.spec, m));
    const ActQuantParams p{at::full({1}, 0.0375f), at::full({1}, 131.0f)};
    w.write_activation(m, act, &p);
    w.copy_unquantized();
    w.commit(nlohmann::json::object());
  }
  const PackedExportReport rep = export_compressed_tensors(tmp + "/ck", tmp + "/ct", {});
  REQUIRE(rep.notes.size() == 1);
  CHECK_THAT(rep.notes[0], Catch::Contains("vLLM's int8 W8A8 kernels") && Catch::Contains(m));
  const nlohmann::json& g = rep.quantization_config["config_groups"]["group_0"];
  CHECK(g["weights"]["symmetric"] == false);
  CHECK(g["weights"]["group_size"] == 32);
  CHECK(g["input_activations"]["symmetric"] == false);
  CHECK(rep.quantization_config["ignore"].size() == 6 * 7 - 1 + 1);  // the FP decoder modules and lm_head
  const IntQuantized d = decode_int_quantized(tmp + "/ct", m);
  CheckpointQuantConfig qc;
  REQUIRE(read_checkpoint_quant_config(tmp + "/ck", qc));
  const QuantizedWeight qw = load_quantized_weight(TensorArchive(tmp + "/ck"), m, qc.modules.at(m));
  REQUIRE(d.G == 768 / 32);
  const at::Tensor zeros = (qw.zeros.to(at::kInt) - 128).to(at::kChar).contiguous();
  REQUIRE(size_t(zeros.numel()) == d.zero.bytes.size());
  CHECK(same_bits(zeros.data_ptr(), d.zero.bytes.data(), d.zero.bytes.size()));
  const at::Tensor ref = dequantize(qw).to(at::kFloat).contiguous();
  CHECK(same_bits(ref.data_ptr(), d.w.data(), d.w.size() * 4));
  REQUIRE(d.input_zero.bytes.size() == 1);
  CHECK(int(d.input_zero.bytes[0]) == 131 - 128);
  CHECK(d.input_scale.floats == std::vector<float>{0.0375f});
}
