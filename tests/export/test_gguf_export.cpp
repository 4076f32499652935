// lib/export GGUF: bit-exact against llama.cpp's own conversion of stories260K (an independent oracle), the
// way back to HF, re-quantization against the reference rounding, ptq-checkpoint grids mapped or refused, GPTQ /
// compressed-tensors inputs mapped to the same blocks, output safety, and the imatrix export of calibration stats.
#include <catch2/catch.hpp>

#include <filesystem>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "calibration/calibrate.h"
#include "calibration/observers.h"
#include "calibration/stats.h"
#include "core/file.h"
#include "export/compressed_tensors_export.h"
#include "export/gguf_export.h"
#include "export/gptq_export.h"
#include "export/imatrix_export.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "pipeline/quantize.h"
#include "pipeline/recipe.h"
#include "quant/checkpoint.h"
#include "tests/export/act_checkpoints.h"
#include "tests/test_model.h"
#include "tests/test_paths.h"

using namespace ptq;

namespace {

const std::string kStories = "data/models/stories260K";
const std::string kSotu = "data/models/sotu-llama-8m";

// Same tensors in two GGUF files: names in the same order, dims, types, offsets and bytes.
void require_same_tensors(const GgufFile& a, const GgufFile& b) {
  REQUIRE(a.tensors().size() == b.tensors().size());
  for (size_t i = 0; i < a.tensors().size(); ++i) {
    const GgufTensorInfo& x = a.tensors()[i];
    const GgufTensorInfo& y = b.tensors()[i];
    INFO(y.name);
    REQUIRE(x.name == y.name);
    CHECK(x.dims == y.dims);
    CHECK(x.type == y.type);
    CHECK(x.offset == y.offset);
    REQUIRE(x.nbytes == y.nbytes);
    CHECK(std::memcmp(a.tensor_data(x), b.tensor_data(y), x.nbytes) == 0);
  }
}

std::string quantized_stories(const std::string& dir, int bits, int64_t group, bool sym) {
  return test::quantize_rtn(kStories, dir, bits, group, sym);
}

}  // namespace

TEST_CASE("F32 export of stories260K reproduces llama.cpp's own conversion bit for bit", "[export][gguf]") {
  const std::string out = test::make_temp_dir("gguf-f32") + "/s.gguf";
  const GgufExportReport rep = export_gguf(test::repo_path(kStories), out, {});
  CHECK(rep.kept_float.empty());
  const GgufFile ours(out);
  const GgufFile ref(test::repo_path(kStories + "/stories260K.gguf"));
  require_same_tensors(ours, ref);
  // Metadata: every key both files hold is equal, except two justified differences:
  //   general.name          free text (llama.cpp's llama2.c converter wrote "llama", we write the directory name)
  //   llama.context_length  2048 there is the converter's default; the model's config.json (and its README) say 512
  // Keys only the reference has: separator/padding token ids of 0xFFFFFFFF, i.e. "none", which is llama.cpp's
  // default when absent. Keys only we write: llama.rope.freq_base (required by FORMATS.md; 10000 is also
  // llama.cpp's default) and ptq.* provenance.
  const std::set<std::string> differ = {"general.name", "llama.context_length"};
  const std::set<std::string> ref_only = {"tokenizer.ggml.seperator_token_id", "tokenizer.ggml.padding_token_id"};
  for (const GgufKV& kv : ref.kvs()) {
    INFO(kv.key);
    const GgufValue* v = ours.find(kv.key);
    if (ref_only.count(kv.key)) {
      CHECK(v == nullptr);
      CHECK(kv.value.i == 0xFFFFFFFF);
      continue;
    }
    REQUIRE(v != nullptr);
    if (differ.count(kv.key)) continue;
    CHECK(v->type == kv.value.type);
    CHECK(v->elem == kv.value.elem);
    CHECK(v->i == kv.value.i);
    CHECK(v->f == kv.value.f);
    CHECK(v->s == kv.value.s);
    CHECK(v->ints == kv.value.ints);
    CHECK(v->floats == kv.value.floats);
    CHECK(v->strings == kv.value.strings);
  }
  CHECK(ours.get_uint("llama.context_length") == 512);
  for (const GgufKV& kv : ours.kvs())
    if (!ref.has(kv.key)) CHECK((kv.key == "llama.rope.freq_base" || kv.key.rfind("ptq.", 0) == 0));

  // Back to HF: every tensor equals the original safetensors bit for bit (undoes the q/k permutation).
  const std::string back = test::make_temp_dir("gguf-back") + "/hf";
  gguf_to_hf_f32(out, test::repo_path(kStories), back);
  const SafetensorsFile orig(test::repo_path(kStories + "/model.safetensors"));
  const SafetensorsFile round(back + "/model.safetensors");
  REQUIRE(round.tensors().size() == orig.tensors().size());
  for (const TensorInfo& t : orig.tensors()) {
    INFO(t.name);
    const TensorView a = orig.view(t.name), b = round.view(t.name);
    CHECK(a.shape() == b.shape());
    REQUIRE(a.nbytes() == b.nbytes());
    CHECK(std::memcmp(a.data, b.data, a.nbytes()) == 0);
  }
}

TEST_CASE("q/k row permutation from HF rotate-half to ggml interleaved", "[export][gguf]") {
  // One head of 4 rows: HF holds (x0, x1 | y0, y1) halves; ggml wants pairs (x0, y0, x1, y1).
  CHECK(gguf_rope_permutation(1, 4) == std::vector<int64_t>{0, 2, 1, 3});
  CHECK(gguf_rope_permutation(2, 2) == std::vector<int64_t>{0, 1, 2, 3});
  // It is w.reshape(heads, 2, hd/2, K).swapaxes(1, 2).reshape(N, K) of FORMATS.md.
  at::Tensor w = at::arange(3 * 8, at::kFloat).reshape({3 * 8, 1});
  at::Tensor expect = w.reshape({3, 2, 4, 1}).transpose(1, 2).reshape({24, 1});
  const auto perm = gguf_rope_permutation(3, 8);
  for (int64_t r = 0; r < 24; ++r) CHECK(expect[r][0].item<float>() == float(perm[r]));
}

TEST_CASE("gguf-type q8_0/q4_0/q4_1 is llama-quantize --pure: every 2-D weight with the reference rounding",
          "[export][gguf]") {
  const std::string dir = test::make_temp_dir("gguf-q");
  Model hf(test::repo_path(kStories));
  for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1}) {
    const std::string out = dir + "/" + ggml_type_name(t) + ".gguf";
    GgufExportOptions o;
    o.type = t;
    const GgufExportReport rep = export_gguf(test::repo_path(kStories), out, o);
    // down_proj (172 columns) cannot be blocked: F16 as llama.cpp's fallback does, reported per layer.
    CHECK(rep.kept_float.empty());
    CHECK(rep.fallback.size() == 5);
    CHECK(rep.fallback.count("blk.3.ffn_down.weight") == 1);
    const GgufFile g(out);
    CHECK(g.get_uint("general.quantization_version") == 2);
    CHECK(g.tensor("blk.0.ffn_down.weight").type == GgmlType::F16);
    CHECK(g.tensor("token_embd.weight").type == t);
    CHECK(g.tensor("output.weight").type == t);
    CHECK(g.tensor("blk.0.attn_norm.weight").type == GgmlType::F32);
    // attn_v is not permuted: its blocks are exactly the reference quantizer's output on the HF rows.
    const GgufTensorInfo& v = g.tensor("blk.2.attn_v.weight");
    REQUIRE(v.type == t);
    at::Tensor w = hf.weights().load("model.layers.2.self_attn.v_proj.weight").contiguous();
    const auto bytes = ggml_encode(t, w.data_ptr<float>(), w.size(0), w.size(1), "v");
    REQUIRE(bytes.size() == v.nbytes);
    CHECK(std::memcmp(bytes.data(), g.tensor_data(v), v.nbytes) == 0);
  }
}

TEST_CASE("gguf type names: ggml types are pure, llama-quantize's K mixes keep their ftype names", "[export][gguf]") {
  GgufExportOptions o;
  parse_gguf_type("q4_k", o);
  CHECK((o.type == GgmlType::Q4_K && !o.mix));
  for (auto [name, mix] : {std::pair{"q4_k_m", GgufMix::Q4_K_M}, {"q3_k_s", GgufMix::Q3_K_S},
                           {"q2_k_mix", GgufMix::Q2_K}, {"q6_k_mix", GgufMix::Q6_K}}) {
    GgufExportOptions m;
    parse_gguf_type(name, m);
    CHECK((m.mix == mix && !m.type));
  }
  // llama-quantize's own names of its two colliding mixes are ours for the pure types; upper case is not accepted.
  CHECK_THROWS_WITH(parse_gguf_type("Q4_K_M", o), Catch::Contains("q4_k_m") && Catch::Contains("q6_k_mix"));
  CHECK(gguf_type_names().find("q5_1, q2_k, q3_k, q4_k, q5_k, q6_k, q2_k_mix, q3_k_s") != std::string::npos);
}

TEST_CASE("a K-quant mix decides per tensor as llama-quantize, with llama.cpp's fallbacks for narrow rows",
          "[export][gguf]") {
  const std::string dir = test::make_temp_dir("gguf-mix");
  // sotu-llama-8m (6 layers; rows of 256 and 768): q4_k_m raises attn_v and ffn_down to q6_k in llama.cpp's
  // use_more_bits layers (i < 6/8 = 0, i >= 7*6/8 = 5, or (i - 0) % 3 == 2: layers 2 and 5) and output to q6_k.
  GgufExportOptions o;
  o.mix = GgufMix::Q4_K_M;
  const GgufExportReport rep = export_gguf(test::repo_path(kSotu), dir + "/sotu.gguf", o);
  CHECK(rep.fallback.empty());
  const GgufFile g(dir + "/sotu.gguf");
  CHECK(g.get_uint("general.file_type") == 15);  // LLAMA_FTYPE_MOSTLY_Q4_K_M
  CHECK(g.tensor("output.weight").type == GgmlType::Q6_K);
  CHECK(g.tensor("token_embd.weight").type == GgmlType::Q4_K);
  for (int64_t i = 0; i < 6; ++i) {
    INFO("layer " << i);
    const GgmlType more = (i == 2 || i == 5) ? GgmlType::Q6_K : GgmlType::Q4_K;
    CHECK(g.tensor(fmt::format("blk.{}.attn_v.weight", i)).type == more);
    CHECK(g.tensor(fmt::format("blk.{}.ffn_down.weight", i)).type == more);
    CHECK(g.tensor(fmt::format("blk.{}.attn_q.weight", i)).type == GgmlType::Q4_K);
    CHECK(g.tensor(fmt::format("blk.{}.attn_norm.weight", i)).type == GgmlType::F32);
  }
  // stories260K (rows of 64, and 172 for ffn_down): q4_k -> q5_0, q6_k -> q8_0, no 32-block fits 172 -> f16; output
  // of a mix with rows not a multiple of 256 -> q8_0. Each fallback is reported.
  o.mix = GgufMix::Q2_K;
  const GgufExportReport st = export_gguf(test::repo_path(kStories), dir + "/stories.gguf", o);
  const GgufFile s(dir + "/stories.gguf");
  CHECK(s.tensor("output.weight").type == GgmlType::Q8_0);
  CHECK(s.tensor("token_embd.weight").type == GgmlType::Q4_0);   // q2_k's fallback
  CHECK(s.tensor("blk.0.attn_q.weight").type == GgmlType::Q4_0);
  CHECK(s.tensor("blk.0.attn_v.weight").type == GgmlType::Q4_0);  // q3_k (heads/kv heads = 2 < 4), falling back
  CHECK(s.tensor("blk.0.ffn_down.weight").type == GgmlType::F16);
  CHECK(st.fallback.count("blk.0.attn_q.weight") == 1);
  CHECK(st.fallback.at("blk.0.ffn_down.weight").find("f16") != std::string::npos);
  CHECK(st.fallback.count("output.weight") == 0);  // the mix's own rule, not a fallback
}

TEST_CASE("export with stats: llama-quantize --imatrix's importance-weighted rounding from the calibration statistics",
          "[export][gguf][imatrix]") {
  const std::string dir = test::make_temp_dir("gguf-imatrix");
  Model model(test::repo_path(kSotu));
  CalibrationDataSpec spec;
  spec.files = {test::repo_path("data/sotu-train.txt")};
  spec.nsamples = 2;
  spec.seqlen = 64;
  const std::string stats_path = dir + "/stats.safetensors";
  save_calibration_stats(calibrate(model, load_model_calibration_data(model, spec), {}), stats_path, false);

  GgufExportOptions o;
  o.type = GgmlType::Q4_K;
  export_gguf(test::repo_path(kSotu), dir + "/plain.gguf", o);
  o.stats = stats_path;
  const GgufExportReport rep = export_gguf(test::repo_path(kSotu), dir + "/imatrix.gguf", o);
  CHECK(rep.imatrix);
  const GgufFile plain(dir + "/plain.gguf"), weighted(dir + "/imatrix.gguf");
  auto same = [&](const std::string& name) {
    const GgufTensorInfo& a = plain.tensor(name);
    const GgufTensorInfo& b = weighted.tensor(name);
    return a.nbytes == b.nbytes && std::memcmp(plain.tensor_data(a), weighted.tensor_data(b), a.nbytes) == 0;
  };
  // The linear modules have imatrix entries; token_embd and output have none and keep the reference rounding.
  CHECK_FALSE(same("blk.0.attn_q.weight"));
  CHECK_FALSE(same("blk.3.ffn_down.weight"));
  CHECK(same("token_embd.weight"));
  CHECK(same("output.weight"));
  // The bytes are ggml_encode's with quant_weights = Σx² / tokens (ImatrixEntry::quant_weights, as llama-quantize).
  const CalibrationStats stats = load_calibration_stats(stats_path, model);
  const auto entries = imatrix_entries(stats, stats_path);
  const std::vector<float> qw = entries.at("blk.1.ffn_up.weight").quant_weights();
  at::Tensor w = model.weights().load("model.layers.1.mlp.up_proj.weight").to(at::kFloat).contiguous();
  const auto bytes = ggml_encode(GgmlType::Q4_K, w.data_ptr<float>(), w.size(0), w.size(1), "up", qw.data());
  const GgufTensorInfo& t = weighted.tensor("blk.1.ffn_up.weight");
  REQUIRE(bytes.size() == t.nbytes);
  CHECK(std::memcmp(bytes.data(), weighted.tensor_data(t), t.nbytes) == 0);
  // Refusals: a float type has nothing to weight; another model's statistics.
  o.type = GgmlType::F16;
  CHECK_THROWS_WITH(export_gguf(test::repo_path(kSotu), dir + "/f16.gguf", o), Catch::Contains("f16 has none"));
  o.type = GgmlType::Q4_K;
  CHECK_THROWS(export_gguf(test::repo_path(kStories), dir + "/other.gguf", o));
}

TEST_CASE("ptq checkpoints: g32 grids map onto ggml blocks losslessly, other grids are refused or re-quantized",
          "[export][gguf]") {
  const std::string dir = test::make_temp_dir("gguf-map");
  // (8-bit g32 -> Q8_0 is mapped by the same code but untested here: the weight-format table has no w8g32.)
  for (auto [bits, sym, type] : {std::tuple{4, true, GgmlType::Q4_0}, std::tuple{4, false, GgmlType::Q4_1}}) {
    INFO(bits << (sym ? " sym" : " asym"));
    const std::string ckpt = quantized_stories(dir + fmt::format("/w{}{}", bits, sym ? "s" : "a"), bits, 32, sym);
    const std::string out = ckpt + ".gguf";
    const GgufExportReport rep = export_gguf(ckpt, out, {});
    CHECK(rep.kept_float.empty());  // down_proj stayed FP in the checkpoint itself: exported as F32
    const GgufFile g(out);
    CHECK(g.tensor("blk.1.attn_k.weight").type == type);
    CHECK(g.tensor("blk.1.ffn_down.weight").type == GgmlType::F32);
    // Decoded GGUF weights vs the checkpoint's own dequantized weights (through the ptq reader, not the writer):
    // exact for Q4_0/Q8_0 (the scales are fp16 already); Q4_1 stores m = -zero*scale in fp16, whose rounding
    // (relative 2^-11 of |m| <= 15*scale) is the only error.
    CheckpointQuantConfig qc;
    REQUIRE(read_checkpoint_quant_config(ckpt, qc));
    const TensorArchive archive(ckpt);
    for (const char* mod : {"model.layers.1.self_attn.v_proj", "model.layers.1.self_attn.k_proj"}) {
      at::Tensor ref = dequantize(load_quantized_weight(archive, mod, qc.modules.at(mod)));
      const bool is_k = std::string(mod).find("k_proj") != std::string::npos;
      const std::string gname = is_k ? "blk.1.attn_k.weight" : "blk.1.attn_v.weight";
      const std::vector<float> got = g.tensor_f32(gname);
      const int64_t K = ref.size(1);
      const auto perm = is_k ? gguf_rope_permutation(4, 8) : std::vector<int64_t>();
      double max_err = 0, max_scale = ref.abs().max().item<double>();
      for (int64_t r = 0; r < ref.size(0); ++r)
        for (int64_t c = 0; c < K; ++c) {
          const int64_t src = perm.empty() ? r : perm[r];
          max_err = std::max(max_err, std::fabs(double(got[r * K + c]) - ref[src][c].item<double>()));
        }
      if (type == GgmlType::Q4_1) CHECK(max_err <= max_scale * std::ldexp(1.0, -10));
      else CHECK(max_err == 0);
    }
  }
  // Per-channel 4-bit has no ggml equivalent: refused with the list, unless --allow-requant.
  const std::string pc = quantized_stories(dir + "/pc", 4, kPerChannel, true);
  try {
    export_gguf(pc, pc + ".gguf", {});
    FAIL("expected a refusal");
  } catch (const std::invalid_argument& e) {
    const std::string msg = e.what();
    CHECK(msg.find("4-bit sym per-channel (") != std::string::npos);  // grouped by grid, with a count
    CHECK(msg.find("model.layers.0.self_attn.q_proj") != std::string::npos);
    CHECK(msg.find("--allow-requant") != std::string::npos);
  }
  GgufExportOptions o;
  o.allow_requant = true;
  const GgufExportReport rep = export_gguf(pc, pc + ".gguf", o);
  CHECK(rep.requant_nmse.size() == 30);  // 5 layers x (q, k, v, o, gate, up); down_proj (172 columns) is F32
  for (const auto& [m, nmse] : rep.requant_nmse) {
    INFO(m);
    CHECK(nmse > 0);
    CHECK(nmse < 0.05);  // a 4-bit g32 grid over a 4-bit per-channel one: small but non-zero
  }
  CHECK(rep.kept_float.size() == 5);
}

TEST_CASE("GPTQ and compressed-tensors checkpoints export to the same GGUF blocks as the ptq checkpoint they hold",
          "[export][gguf][gptq_export]") {
  const std::string dir = test::make_temp_dir("gguf-from-gptq");
  // sotu-llama-8m: every width a multiple of 32, so every module packs into GPTQ and maps onto ggml blocks.
  for (const bool sym : {true, false}) {
    INFO((sym ? "sym" : "asym"));
    Model sotu(test::repo_path(kSotu));
    QuantizeOptions o;
    o.recipe = load_recipe(test::repo_path("configs/w4a16-rtn.yaml"));
    o.recipe.weights.bits = 4;
    o.recipe.weights.group_size = 32;
    o.recipe.weights.sym = sym;
    o.out_dir = dir + (sym ? "/w4g32" : "/w4g32asym");
    quantize_model(sotu, o);
    const std::string direct = o.out_dir + ".gguf";
    export_gguf(o.out_dir, direct, {});
    CHECK(GgufFile(direct).tensor("blk.0.attn_q.weight").type == (sym ? GgmlType::Q4_0 : GgmlType::Q4_1));

    std::vector<std::pair<std::string, PackedExportReport>> imports;
    GptqExportOptions v2;
    imports.emplace_back("gptq_v2", export_gptq(o.out_dir, o.out_dir + "-gptq_v2", v2));
    if (sym) {  // v1 stores zero - 1; symmetric zeros of 8 read back exactly
      GptqExportOptions v1;
      v1.format = GptqFormat::V1;
      imports.emplace_back("gptq", export_gptq(o.out_dir, o.out_dir + "-gptq", v1));
    }
    imports.emplace_back("compressed-tensors",
                         export_compressed_tensors(o.out_dir, o.out_dir + "-compressed-tensors", {}));
    for (const auto& [name, rep] : imports) {
      INFO(name);
      const std::string via = rep.output + ".gguf";
      const GgufExportReport g = export_gguf(rep.output, via, {});
      CHECK(g.kept_float.empty());
      CHECK(g.requant_nmse.empty());
      CHECK(g.mapped_max_abs_error.size() == 6 * 7);
      int mapped = 0;
      for (const auto& t : g.tensors) mapped += t.how.rfind("mapped from " + name + ":w4g32", 0) == 0;
      CHECK(mapped == 6 * 7);
      CHECK(GgufFile(via).get_string("ptq.source_format") == name);
      require_same_tensors(GgufFile(direct), GgufFile(via));  // metadata differs: provenance
    }
  }
}

TEST_CASE("GGUF export refuses an existing output unless forced, and never overwrites its input",
          "[export][gguf]") {
  const std::string dir = test::make_temp_dir("gguf-force");
  const std::string out = dir + "/s.gguf";
  write_text_file_atomic(out, "not a gguf yet");
  CHECK_THROWS_WITH(export_gguf(test::repo_path(kStories), out, {}),
                    Catch::Contains(out) && Catch::Contains("already exists") && Catch::Contains("--force"));
  CHECK(read_text_file(out) == "not a gguf yet");
  GgufExportOptions force;
  force.force = true;
  // --force replaces only what ptq wrote (core/model_dir.h): a foreign file stays.
  CHECK_THROWS_WITH(export_gguf(test::repo_path(kStories), out, force), Catch::Contains("was not written by ptq"));
  CHECK(read_text_file(out) == "not a gguf yet");
  std::filesystem::remove(out);
  export_gguf(test::repo_path(kStories), out, {});
  export_gguf(test::repo_path(kStories), out, force);  // ptq's own output: replaced
  CHECK(GgufFile(out).tensors().size() == 48);
  // A GGUF file as MODEL: writing onto it is refused even with force.
  CHECK_THROWS_WITH(export_gguf(out, out, force), Catch::Contains("is the input"));
  CHECK_THROWS_WITH(export_gguf(test::repo_path(kStories), dir, force), Catch::Contains("is a directory"));
}

TEST_CASE("imatrix export: the calibration sum of squares as llama.cpp's importance matrix GGUF",
          "[export][gguf][imatrix]") {
  const std::string dir = test::make_temp_dir("imatrix");
  Model model(test::repo_path(kStories));
  const ModelConfig& cfg = model.config();
  CalibrationDataSpec spec;
  spec.files = {test::repo_path("data/tinystories-valid.txt")};
  spec.nsamples = 3;
  spec.seqlen = 48;
  const CalibrationData data = load_model_calibration_data(model, spec);
  const std::string stats_path = dir + "/stats.safetensors";
  save_calibration_stats(calibrate(model, data, {}), stats_path, false);

  const std::string out = dir + "/imatrix.gguf";
  const ImatrixExportReport rep = export_imatrix(stats_path, out, false);
  CHECK(rep.entries == 7 * cfg.n_layers);
  const GgufFile g(out);
  // The keys llama.cpp's loader requires (common/imatrix-loader.cpp: datasets, chunk_count, chunk_size).
  CHECK(g.get_string("general.type") == "imatrix");
  CHECK_FALSE(g.has("general.architecture"));
  CHECK(g.get_string_array("imatrix.datasets") == std::vector<std::string>{spec.files[0]});
  CHECK(g.get_uint("imatrix.chunk_count") == 3);
  CHECK(g.get_uint("imatrix.chunk_size") == 48);
  CHECK(g.find("imatrix.chunk_count")->type == GgufValueType::U32);

  // Entries: one per linear weight of the model's own GGUF export, with its input width, each an F32 in_sum2 {K}
  // and an F32 counts {1}: one dimension each, as llama-imatrix's files hold them (ggml_n_dims drops trailing 1s).
  const std::string model_gguf = dir + "/model.gguf";
  export_gguf(test::repo_path(kStories), model_gguf, {});
  const GgufFile mg(model_gguf);
  REQUIRE(g.tensors().size() == size_t(2 * rep.entries));
  std::vector<std::string> entries;  // llama.cpp's order: entries sorted by name, each in_sum2 then counts
  for (size_t i = 0; i < g.tensors().size(); i += 2) {
    const std::string& n = g.tensors()[i].name;
    REQUIRE(n.size() > 8);
    CHECK(n.substr(n.size() - 8) == ".in_sum2");
    entries.push_back(n.substr(0, n.size() - 8));
    CHECK(g.tensors()[i + 1].name == entries.back() + ".counts");
  }
  CHECK(std::is_sorted(entries.begin(), entries.end()));
  for (const GgufTensorInfo& t : mg.tensors()) {
    if (t.name.rfind("blk.", 0) != 0 || t.name.find("norm") != std::string::npos) continue;
    INFO(t.name);
    const GgufTensorInfo& s2 = g.tensor(t.name + ".in_sum2");
    const GgufTensorInfo& c = g.tensor(t.name + ".counts");
    CHECK(s2.type == GgmlType::F32);
    CHECK(s2.dims == std::vector<int64_t>{t.dims[0]});
    CHECK(c.type == GgmlType::F32);
    CHECK(c.dims == std::vector<int64_t>{1});
    CHECK(g.tensor_f32(t.name + ".counts")[0] == 3.0f * 48.0f);
  }

  // And every entry carries the stats file's values unchanged.
  const CalibrationStats stats = load_calibration_stats(stats_path, model);
  for (const InputPoint& p : stats.points())
    for (LinearId id : p.consumers) {
      const std::string name = gguf_linear_tensor_name(p.layer, id);
      INFO(name);
      const std::vector<float> got = g.tensor_f32(name + ".in_sum2");
      const at::Tensor ref = stats.get(p.layer, id, Stat::SumSq).contiguous();
      REQUIRE(int64_t(got.size()) == ref.numel());
      CHECK(std::memcmp(got.data(), ref.data_ptr<float>(), got.size() * sizeof(float)) == 0);
    }

  // Output safety, and a stats file without the sum of squares.
  CHECK_THROWS_WITH(export_imatrix(stats_path, out, false), Catch::Contains("already exists"));
  CHECK_NOTHROW(export_imatrix(stats_path, out, true));
  CalibrateOptions few;
  few.stats = StatSet{Stat::Tokens, Stat::AbsMax};
  save_calibration_stats(calibrate(model, data, few), dir + "/absmax.safetensors", false);
  CHECK_THROWS_WITH(export_imatrix(dir + "/absmax.safetensors", dir + "/none.gguf", false),
                    Catch::Contains("imatrix_sum_sq") && Catch::Contains("ptq calibrate") &&
                        Catch::Contains("model.layers.0.self_attn.q_proj"));
  CHECK_FALSE(file_exists(dir + "/none.gguf"));
}

TEST_CASE("imatrix export of hand-made activations: in_sum2 is their sum of squares, counts their tokens",
          "[export][gguf][imatrix]") {
  const std::string dir = test::make_temp_dir("imatrix-hand");
  const Model model(test::repo_path(kStories));
  const ModelConfig& cfg = model.config();
  // Two layers of inputs x[s, t, c] = (c + 1) * sin(0.37 * (s * 29 + t) + c) / 8 + (c % 3 == 0 ? 2.5 : 0),
  // 2 samples x 24 tokens, observed as calibration observes them (one ObserverSet per layer).
  CalibrationStats stats;
  stats.metadata = {{"model_fingerprint", "hand-made"}, {"model", "hand-made"}, {"model_type", "llama"},
                    {"data_source", "a.txt, b.txt"}, {"nsamples", "2"}, {"seqlen", "24"}, {"seed", "0"}};
  auto activation = [](int64_t channels) {
    at::Tensor x = at::empty({2, 24, channels}, at::kFloat);
    auto a = x.accessor<float, 3>();
    for (int64_t s = 0; s < 2; ++s)
      for (int64_t t = 0; t < 24; ++t)
        for (int64_t c = 0; c < channels; ++c)
          a[s][t][c] = float((c + 1) * std::sin(0.37 * double(s * 29 + t) + double(c)) / 8 + (c % 3 == 0 ? 2.5 : 0));
    return x;
  };
  for (int64_t l = 0; l < 2; ++l) {
    ObserverSet obs(cfg, l, StatSet{Stat::SumSq});
    for (const InputPoint& p : layer_input_points(cfg, l)) obs.observe(p.first, activation(p.in_features));
    obs.collect(stats);
  }
  save_calibration_stats(stats, dir + "/hand.safetensors", false);
  const ImatrixExportReport rep = export_imatrix(dir + "/hand.safetensors", dir + "/hand.gguf", false);
  CHECK(rep.entries == 2 * 7);
  CHECK(rep.datasets == std::vector<std::string>{"a.txt", "b.txt"});
  const GgufFile g(dir + "/hand.gguf");
  CHECK(g.get_uint("imatrix.chunk_count") == 2);
  CHECK(g.get_uint("imatrix.chunk_size") == 24);
  CHECK(g.get_string_array("imatrix.datasets") == rep.datasets);
  CHECK(g.tensors().size() == 2 * 2 * 7);
  for (int64_t l = 0; l < 2; ++l)
    for (int k = 0; k < kNumLinear; ++k) {
      const LinearId id = static_cast<LinearId>(k);
      const std::string name = gguf_linear_tensor_name(l, id);
      INFO(name);
      CHECK(name.rfind(fmt::format("blk.{}.", l), 0) == 0);
      const int64_t K = (id == LinearId::Down) ? cfg.ffn : cfg.hidden;
      const at::Tensor x = activation(K);
      const auto a = x.accessor<float, 3>();
      const std::vector<float> got = g.tensor_f32(name + ".in_sum2");
      REQUIRE(int64_t(got.size()) == K);
      for (int64_t c = 0; c < K; ++c) {
        double want = 0;  // in double, token by token, rounded once to the file's fp32
        for (int64_t s = 0; s < 2; ++s)
          for (int64_t t = 0; t < 24; ++t) want += double(a[s][t][c]) * double(a[s][t][c]);
        CHECK(got[c] == float(want));
      }
      CHECK(g.tensor_f32(name + ".counts") == std::vector<float>{48.0f});
    }
}

TEST_CASE("GGUF export refuses activation-quantized checkpoints and rewritten tensors a llama cannot hold",
          "[export][gguf][gguf_export]") {
  const std::string tmp = test::make_temp_dir("gguf-export-refuse-act");
  // W8A8 SmoothQuant: only the activation schemes are in the way, and compressed-tensors int-quantized carries them.
  const std::string sq = test::act_checkpoint("w8a8-smoothquant", "w8a8-smoothquant");
  GgufExportOptions requant;
  requant.allow_requant = true;  // no option lets activation schemes through
  CHECK_THROWS_WITH(export_gguf(sq, tmp + "/sq.gguf", requant),
                    Catch::Contains("GGUF export cannot represent") &&
                        Catch::Contains("activation quantization (a8 per_tensor sym") &&
                        Catch::Contains("model.layers.0.self_attn.q_proj") &&
                        Catch::Contains("ptq export --format compressed-tensors"));
  CHECK_FALSE(file_exists(tmp + "/sq.gguf"));
  // OutlierTune: its RMSNorm and linear biases have no GGUF llama tensor either.
  const std::string ot = test::act_checkpoint("w8a8-outliertune", "w8a8-outliertune");
  CHECK_THROWS_WITH(export_gguf(ot, tmp + "/ot.gguf", {}),
                    Catch::Contains("RMSNorm biases") && Catch::Contains("model.layers.0.post_attention_layernorm.bias") &&
                        Catch::Contains("linear biases") && Catch::Contains("activation quantization"));
  CHECK_FALSE(file_exists(tmp + "/ot.gguf"));
}
