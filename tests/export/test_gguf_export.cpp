// lib/export GGUF: bit-exact against llama.cpp's own conversion of stories260K (an independent oracle), the
// way back to HF, re-quantization against the reference rounding, and ptq-checkpoint grids mapped or refused.
#include <catch2/catch.hpp>

#include <cstring>
#include <set>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "export/gguf_export.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "pipeline/quantize.h"
#include "pipeline/recipe.h"
#include "quant/checkpoint.h"
#include "tests/test_paths.h"

using namespace ptq;

namespace {

const std::string kStories = "data/models/stories260K";

std::string quantized_stories(const std::string& dir, int bits, int64_t group, bool sym) {
  Model stories(test::repo_path(kStories));
  QuantizeOptions o;
  o.recipe = load_recipe(test::repo_path("configs/w4a16-rtn.yaml"));
  o.recipe.weights.bits = bits;
  o.recipe.weights.group_size = group;
  o.recipe.weights.sym = sym;
  o.out_dir = dir;
  quantize_model(stories, o);
  return dir;
}

}  // namespace

TEST_CASE("F32 export of stories260K reproduces llama.cpp's own conversion bit for bit", "[export][gguf]") {
  const std::string out = test::make_temp_dir("gguf-f32") + "/s.gguf";
  const GgufExportReport rep = export_gguf(test::repo_path(kStories), out, {});
  CHECK(rep.kept_float.empty());
  const GgufFile ours(out);
  const GgufFile ref(test::repo_path(kStories + "/stories260K.gguf"));
  // Tensors: same names in the same order, dims, types, offsets and bytes.
  REQUIRE(ours.tensors().size() == ref.tensors().size());
  for (size_t i = 0; i < ref.tensors().size(); ++i) {
    const GgufTensorInfo& a = ours.tensors()[i];
    const GgufTensorInfo& b = ref.tensors()[i];
    INFO(b.name);
    REQUIRE(a.name == b.name);
    CHECK(a.dims == b.dims);
    CHECK(a.type == b.type);
    CHECK(a.offset == b.offset);
    REQUIRE(a.nbytes == b.nbytes);
    CHECK(std::memcmp(ours.tensor_data(a), ref.tensor_data(b), a.nbytes) == 0);
  }
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

TEST_CASE("gguf-type q8_0/q4_0/q4_1 quantizes FP linear modules with the reference rounding", "[export][gguf]") {
  const std::string dir = test::make_temp_dir("gguf-q");
  Model hf(test::repo_path(kStories));
  for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1}) {
    const std::string out = dir + "/" + ggml_type_name(t) + ".gguf";
    GgufExportOptions o;
    o.type = t;
    const GgufExportReport rep = export_gguf(test::repo_path(kStories), out, o);
    // down_proj (172 columns) cannot be blocked: kept F32 and reported, per layer.
    CHECK(rep.kept_float.size() == 5);
    CHECK(rep.kept_float.count("blk.3.ffn_down.weight") == 1);
    const GgufFile g(out);
    CHECK(g.get_uint("general.quantization_version") == 2);
    CHECK(g.tensor("blk.0.ffn_down.weight").type == GgmlType::F32);
    CHECK(g.tensor("token_embd.weight").type == GgmlType::F32);
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
    CHECK(msg.find("model.layers.0.self_attn.q_proj (4-bit sym group -1)") != std::string::npos);
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
