#include "export/gguf_export.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"
#include "core/half.h"
#include "core/model_dir.h"
#include "calibration/stats.h"
#include "checkpoint/checkpoint.h"
#include "export/gptq_export.h"
#include "export/imatrix_export.h"
#include "export/targets.h"
#include "io/safetensors.h"
#include "model/gguf_model.h"
#include "model/model.h"
#include "model/sentencepiece.h"
#include "quant/checkpoint.h"

namespace ptq {

namespace fs = std::filesystem;
using nlohmann::json;

std::vector<int64_t> gguf_rope_permutation(int64_t heads, int64_t head_dim) {
  std::vector<int64_t> perm(heads * head_dim);
  const int64_t half = head_dim / 2;
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < half; ++i)
      for (int64_t t = 0; t < 2; ++t) perm[h * head_dim + 2 * i + t] = h * head_dim + t * half + i;
  return perm;
}

namespace {

// GGUF names of the seven linear modules, in LinearId order (llama.cpp's LLM_TENSOR_* names for llama).
constexpr const char* kGgufLinearNames[kNumLinear] = {"attn_q",   "attn_k", "attn_v",  "attn_output",
                                                      "ffn_gate", "ffn_up", "ffn_down"};

}  // namespace

std::string gguf_linear_tensor_name(int64_t layer, LinearId id) {
  return fmt::format("blk.{}.{}.weight", layer, kGgufLinearNames[static_cast<int>(id)]);
}

namespace {

// One tensor of the output: its GGUF name, its HF source, and (for the seven linear modules) the module path.
struct Slot {
  std::string gguf, hf, module;
  int64_t rope_heads = 0;  // q/k: heads whose rows are permuted
  bool norm = false;
  bool linear = false;
  int64_t layer = -1;      // decoder layer of blk.* tensors
};

std::vector<Slot> llama_slots(const ModelConfig& cfg) {
  const ArchTraits& t = cfg.traits();
  std::vector<Slot> s;
  s.push_back({"token_embd.weight", std::string(t.embed) + ".weight", "", 0, false, false});
  s.push_back({"output_norm.weight", std::string(t.final_norm) + ".weight", "", 0, true, false});
  if (!cfg.tie_embeddings) s.push_back({"output.weight", std::string(t.lm_head) + ".weight", "", 0, false, false});
  for (int64_t i = 0; i < cfg.n_layers; ++i) {
    auto lin = [&](LinearId id, const char* mod, int64_t heads) {
      s.push_back({gguf_linear_tensor_name(i, id), cfg.layer_tensor(i, mod, "weight"), cfg.layer_module(i, mod),
                   heads, false, true, i});
    };
    auto norm = [&](const char* gguf, const char* mod) {
      s.push_back({fmt::format("blk.{}.{}.weight", i, gguf), cfg.layer_tensor(i, mod, "weight"), "", 0, true, false, i});
    };
    lin(LinearId::Q, t.q_proj, cfg.n_heads);
    lin(LinearId::K, t.k_proj, cfg.n_kv_heads);
    lin(LinearId::V, t.v_proj, 0);
    lin(LinearId::O, t.o_proj, 0);
    norm("attn_norm", t.attn_norm);
    lin(LinearId::Gate, t.gate_proj, 0);
    lin(LinearId::Down, t.down_proj, 0);
    lin(LinearId::Up, t.up_proj, 0);
    norm("ffn_norm", t.mlp_norm);
  }
  return s;
}

const std::vector<GgufMixTraits> kMixes = {
    {GgufMix::Q2_K, "q2_k_mix", "Q2_K", 10, GgmlType::Q2_K,
     "q2_k; q3_k for ffn_down, attn_output and attn_v (q4_k for attn_v when heads/kv heads >= 4)"},
    {GgufMix::Q3_K_S, "q3_k_s", "Q3_K_S", 11, GgmlType::Q3_K, "q3_k"},
    {GgufMix::Q3_K_M, "q3_k_m", "Q3_K_M", 12, GgmlType::Q3_K,
     "q3_k; attn_v q5_k in layers 0-1 else q4_k, attn_output q4_k, ffn_down q5_k in the first 1/16 of layers else q4_k"},
    {GgufMix::Q3_K_L, "q3_k_l", "Q3_K_L", 13, GgmlType::Q3_K, "q3_k; q5_k for attn_v, attn_output and ffn_down"},
    {GgufMix::Q4_K_S, "q4_k_s", "Q4_K_S", 14, GgmlType::Q4_K,
     "q4_k; q5_k for attn_v in layers 0-3 and ffn_down in the first 1/8 of layers"},
    {GgufMix::Q4_K_M, "q4_k_m", "Q4_K_M", 15, GgmlType::Q4_K,
     "q4_k; q6_k for attn_v and ffn_down in llama.cpp's use_more_bits layers (first and last 1/8, every third)"},
    {GgufMix::Q5_K_S, "q5_k_s", "Q5_K_S", 16, GgmlType::Q5_K, "q5_k"},
    {GgufMix::Q5_K_M, "q5_k_m", "Q5_K_M", 17, GgmlType::Q5_K, "q5_k; q6_k for attn_v and ffn_down in use_more_bits layers"},
    {GgufMix::Q6_K, "q6_k_mix", "Q6_K", 18, GgmlType::Q6_K, "q6_k (for a llama the same file as pure q6_k)"},
};

const GgufMixTraits& mix_traits(GgufMix m) { return kMixes[static_cast<size_t>(m)]; }

// llama.cpp's tensor_get_category, on the tensors a llama GGUF has.
enum class Category { Output, TokenEmbd, AttnV, AttnK, AttnQ, AttnOutput, FfnUp, FfnGate, FfnDown, Other };
Category category_of(const std::string& name) {
  if (name == "output.weight") return Category::Output;
  if (name == "token_embd.weight") return Category::TokenEmbd;
  for (auto [part, c] : {std::pair{"attn_v.weight", Category::AttnV}, {"attn_k.weight", Category::AttnK},
                         {"attn_q.weight", Category::AttnQ}, {"attn_output.weight", Category::AttnOutput},
                         {"ffn_up", Category::FfnUp}, {"ffn_gate", Category::FfnGate}, {"ffn_down", Category::FfnDown}})
    if (name.find(part) != std::string::npos) return c;
  return Category::Other;
}

// The layout facts llama_tensor_get_type_impl reads.
struct MixModel {
  int64_t n_layers = 0;
  int64_t n_gqa = 1;      // heads / kv heads
  bool tied = false;      // no output.weight: token_embd takes output's rule
  bool is_70b = false;    // llama.cpp's LLM_TYPE_70B: a llama of 80 layers with grouped kv heads
};

// llama_tensor_get_type_impl (src/llama-quant.cpp) for a llama-architecture model with the K-quant ftypes, no expert
// and no Falcon: the type `mix` gives tensor `name` of layer `layer` (rows of `ncols`). llama.cpp counts attn_v and
// ffn_down tensors in file order (i_attention_wv, i_ffn_down); in a llama GGUF that count is the layer index.
GgmlType mix_tensor_type(GgufMix mix, const std::string& name, int64_t layer, int64_t ncols, const MixModel& m) {
  GgmlType t = mix_traits(mix).base;
  const int64_t i = layer, n = m.n_layers;
  auto use_more_bits = [](int64_t i_layer, int64_t n_layers) {
    return i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2;
  };
  const Category c = category_of(name);
  if (c == Category::Output || (m.tied && c == Category::TokenEmbd)) {
    if (ncols % ggml_type_traits(t).block_size != 0) return GgmlType::Q8_0;
    return t != GgmlType::Q8_0 ? GgmlType::Q6_K : t;
  }
  switch (c) {
    case Category::AttnV:
      if (mix == GgufMix::Q2_K) t = m.n_gqa >= 4 ? GgmlType::Q4_K : GgmlType::Q3_K;
      else if (mix == GgufMix::Q3_K_M) t = i < 2 ? GgmlType::Q5_K : GgmlType::Q4_K;
      else if (mix == GgufMix::Q3_K_L) t = GgmlType::Q5_K;
      else if ((mix == GgufMix::Q4_K_M || mix == GgufMix::Q5_K_M) && use_more_bits(i, n)) t = GgmlType::Q6_K;
      else if (mix == GgufMix::Q4_K_S && i < 4) t = GgmlType::Q5_K;
      if (m.is_70b && (t == GgmlType::Q3_K || t == GgmlType::Q4_K)) t = GgmlType::Q5_K;
      return t;
    case Category::FfnDown:
      if (mix == GgufMix::Q2_K) t = GgmlType::Q3_K;
      else if (mix == GgufMix::Q3_K_M) t = i < n / 16 ? GgmlType::Q5_K : GgmlType::Q4_K;
      else if (mix == GgufMix::Q3_K_L) t = GgmlType::Q5_K;
      else if (mix == GgufMix::Q4_K_M) t = use_more_bits(i, n) ? GgmlType::Q6_K : t;
      else if (mix == GgufMix::Q5_K_M && use_more_bits(i, n)) t = GgmlType::Q6_K;
      else if (mix == GgufMix::Q4_K_S && i < n / 8) t = GgmlType::Q5_K;
      return t;
    case Category::AttnOutput:
      if (mix == GgufMix::Q2_K) t = GgmlType::Q3_K;
      else if (mix == GgufMix::Q3_K_M) t = GgmlType::Q4_K;
      else if (mix == GgufMix::Q3_K_L) t = GgmlType::Q5_K;
      return t;
    default: return t;
  }
}

// llama.cpp's tensor_type_fallback: the type a row of `ncols` can hold instead of `t`; `why` says what happened.
GgmlType fallback_type(GgmlType t, int64_t ncols, std::string& why) {
  const int64_t block = ggml_type_traits(t).block_size;
  if (ncols % block == 0) return t;
  GgmlType r = t;
  switch (t) {
    case GgmlType::Q2_K: case GgmlType::Q3_K: r = GgmlType::Q4_0; break;
    case GgmlType::Q4_K: r = GgmlType::Q5_0; break;
    case GgmlType::Q5_K: r = GgmlType::Q5_1; break;
    case GgmlType::Q6_K: r = GgmlType::Q8_0; break;
    default: break;  // a 32-block type has no smaller block: f16 below
  }
  if (ncols % ggml_type_traits(r).block_size != 0) r = GgmlType::F16;
  why = fmt::format("rows of {} are not a multiple of {}'s block {}: {} (llama.cpp's fallback)", ncols,
                    ggml_type_name(t), block, ggml_type_name(r));
  return r;
}

void check_llama(const ModelConfig& cfg, const std::string& dir) {
  if (cfg.arch != Arch::Llama && cfg.arch != Arch::Mistral)
    fail_input("{}: GGUF export supports llama and mistral (llama architecture) models, this one is \"{}\"", dir,
               cfg.model_type);
  if (cfg.qkv_bias || cfg.o_bias || cfg.mlp_bias)
    fail_input("{}: GGUF llama export has no bias tensors, but this model has linear biases", dir);
  if (cfg.head_dim * cfg.n_heads != cfg.hidden)
    fail_input("{}: head_dim {} x heads {} != hidden {}: not expressible in GGUF llama metadata", dir, cfg.head_dim,
               cfg.n_heads, cfg.hidden);
}

at::Tensor permute_rows(const at::Tensor& t, const std::vector<int64_t>& perm) {
  at::Tensor idx = at::from_blob(const_cast<int64_t*>(perm.data()), {int64_t(perm.size())}, at::kLong).clone();
  return t.index_select(0, idx).contiguous();
}

std::vector<uint8_t> encode_tensor(GgmlType type, const at::Tensor& w32, const std::string& what,
                                   const float* quant_weights) {
  at::Tensor w = w32.contiguous();
  const int64_t cols = w.dim() == 1 ? w.size(0) : w.size(-1);
  const int64_t rows = w.numel() / std::max<int64_t>(cols, 1);
  return ggml_encode(type, w.data_ptr<float>(), rows, cols, what, quant_weights);
}

// A stored 2-D float tensor (F32/F16/BF16 view of the mapped file) encoded as `type` on all threads, 64 rows at a time
// per thread, with no fp32 copy of the tensor; output row r is stored row perm[r] when perm is given (q/k RoPE rows).
// Rows are independent blocks, so the bytes equal encode_tensor's of the whole (permuted) tensor.
std::vector<uint8_t> encode_rows(GgmlType type, const TensorView& v, const std::vector<int64_t>& perm,
                                 const std::string& what, const float* quant_weights) {
  constexpr int64_t kRows = 64;
  const int64_t rows = v.shape()[0], cols = v.shape()[1];
  if (cols % ggml_type_traits(type).block_size != 0)  // named before any thread starts
    fail_input("{}: rows of {} values cannot be stored as {} (blocks of {})", what, cols, ggml_type_name(type),
               ggml_type_traits(type).block_size);
  const size_t row_bytes = ggml_nbytes(type, cols);
  std::vector<uint8_t> out(row_bytes * static_cast<size_t>(rows));
  at::parallel_for(0, rows, kRows, [&](int64_t begin, int64_t end) {
    std::vector<float> x(static_cast<size_t>(kRows * cols));
    for (int64_t r0 = begin; r0 < end; r0 += kRows) {
      const int64_t r1 = std::min(end, r0 + kRows);
      for (int64_t r = r0; r < r1; ++r) view_row_f32(v, perm.empty() ? r : perm[r], &x[(r - r0) * cols]);
      const std::vector<uint8_t> bytes =
          ggml_encode(type, x.data(), r1 - r0, cols, fmt::format("{} (rows {}..{})", what, r0, r1 - 1), quant_weights);
      std::memcpy(out.data() + r0 * row_bytes, bytes.data(), bytes.size());
    }
  });
  return out;
}

std::vector<float> decode_all(GgmlType type, const std::vector<uint8_t>& bytes, int64_t n) {
  std::vector<float> out(n);
  ggml_decode(type, bytes.data(), out.data(), n);
  return out;
}

enum class Mapping { None, Q4_0, Q4_1, Q8_0 };

bool natural_g32(const QuantizedWeight& qw) {
  const int64_t K = qw.q.size(1);
  if (qw.spec.group_size != 32 || K % 32 != 0) return false;
  if (!qw.g_idx.defined()) return true;
  at::Tensor expect = at::arange(K, at::kInt).div(32, "floor").to(at::kInt);
  return qw.g_idx.to(at::kInt).equal(expect);
}

Mapping mapping_of(const ModuleQuantInfo& info) {
  if (info.spec.group_size != 32 || info.act_order || info.in_features % 32 != 0) return Mapping::None;
  if (info.spec.bits == 4) return info.spec.sym ? Mapping::Q4_0 : Mapping::Q4_1;
  if (info.spec.bits == 8 && info.spec.sym) return Mapping::Q8_0;
  return Mapping::None;
}

GgmlType mapped_type(Mapping m) {
  return m == Mapping::Q4_0 ? GgmlType::Q4_0 : m == Mapping::Q4_1 ? GgmlType::Q4_1 : GgmlType::Q8_0;
}

// Blocks straight from a ptq module's codes (rows already in output order). Writes the max |error| the fp16
// storage of d/m adds relative to ptq's dequantized value.
std::vector<uint8_t> map_blocks(Mapping m, const QuantizedWeight& qw, const std::string& module, double& max_err) {
  const int64_t N = qw.q.size(0), K = qw.q.size(1), nb = K / 32;
  if (!natural_g32(qw)) fail_input("module \"{}\": columns are not in natural group-32 order", module);
  at::Tensor q = qw.q.to(at::kInt).contiguous(), z = qw.zeros.to(at::kInt).contiguous();
  at::Tensor s = qw.scales.to(at::kFloat).contiguous();
  const int32_t* qp = q.data_ptr<int32_t>();
  const int32_t* zp = z.data_ptr<int32_t>();
  const float* sp = s.data_ptr<float>();
  const size_t bs = ggml_type_traits(mapped_type(m)).type_size;
  std::vector<uint8_t> out(N * nb * bs);
  max_err = 0;
  for (int64_t r = 0; r < N; ++r)
    for (int64_t b = 0; b < nb; ++b) {
      const int32_t* qb = qp + r * K + b * 32;
      const float scale = sp[r * nb + b];
      const int32_t zero = zp[r * nb + b];
      const uint16_t d = f32_to_fp16(scale);
      float ref[32], got[32];
      for (int j = 0; j < 32; ++j) ref[j] = scale * float(qb[j] - zero);
      uint8_t* o = out.data() + (r * nb + b) * bs;
      if (m == Mapping::Q4_0 || m == Mapping::Q4_1) {
        if (m == Mapping::Q4_0 && zero != 8)
          fail_input("module \"{}\": row {} group {} has zero {}, Q4_0 needs 8", module, r, b, zero);
        BlockQ4_1 blk1{};
        BlockQ4_0 blk0{};
        uint8_t* qs = m == Mapping::Q4_0 ? blk0.qs : blk1.qs;
        for (int j = 0; j < 16; ++j) qs[j] = uint8_t(qb[j] | (qb[j + 16] << 4));
        if (m == Mapping::Q4_0) {
          blk0.d = d;
          std::memcpy(o, &blk0, bs);
          dequantize_row_q4_0(&blk0, got, 32);
        } else {
          blk1.d = d;
          blk1.m = f32_to_fp16(-float(zero) * scale);
          std::memcpy(o, &blk1, bs);
          dequantize_row_q4_1(&blk1, got, 32);
        }
      } else {
        if (zero != 128) fail_input("module \"{}\": row {} group {} has zero {}, Q8_0 needs 128", module, r, b, zero);
        BlockQ8_0 blk{};
        blk.d = d;
        for (int j = 0; j < 32; ++j) blk.qs[j] = int8_t(qb[j] - 128);
        std::memcpy(o, &blk, bs);
        dequantize_row_q8_0(&blk, got, 32);
      }
      for (int j = 0; j < 32; ++j) max_err = std::max(max_err, double(std::fabs(got[j] - ref[j])));
    }
  return out;
}

int64_t pieces_or_fail(const SentencePieceModel& sp, const ModelConfig& cfg, const std::string& path) {
  const int64_t n = static_cast<int64_t>(sp.pieces().size());
  if (n != cfg.vocab)
    fail_input("{}: {} pieces but config.json vocab_size is {}; GGUF needs one token per embedding row", path, n,
               cfg.vocab);
  return n;
}

}  // namespace

GgufExportReport export_gguf(const std::string& model_dir, const std::string& out_path, const GgufExportOptions& opts) {
  if (is_directory(out_path)) fail_input("output {} is a directory; GGUF export writes one file", out_path);
  check_output_path(out_path, model_dir, opts.force);
  const Checkpoint ck(model_dir);
  // What a standard llama cannot hold is refused before the model is opened.
  if (ck.kind() != CheckpointKind::Gguf) refuse_nonstandard(model_dir, "GGUF", ck.archive(), ck.quant_config());
  std::unique_ptr<Model> model = ck.open_model();
  const ModelConfig& cfg = model->config();
  check_llama(cfg, model_dir);
  // Quantized modules: a ptq checkpoint's, or an imported GPTQ / compressed-tensors checkpoint's (the readers
  // open_model uses), so a GPTQ grid that is a ggml type maps onto it exactly as a ptq one does.
  const CheckpointQuantConfig& qc = ck.quant_config();
  const bool is_imported = ck.imported(), quantized = ck.quantized();
  const std::function<QuantizedWeight(const std::string&)> load_codes = [&](const std::string& module) {
    return ck.load_weight(module);
  };

  // --gguf-type: a float type or a pure block type for every FP tensor but the norms, or a mix deciding per tensor.
  if (opts.type && opts.mix) fail_input("GGUF export: a ggml type and a K-quant mix were both given; choose one");
  const GgmlType requested = opts.type.value_or(GgmlType::F32);
  MixModel mix_model;
  mix_model.n_layers = cfg.n_layers;
  mix_model.n_gqa = cfg.n_kv_heads > 0 ? cfg.n_heads / cfg.n_kv_heads : 1;
  mix_model.tied = cfg.tie_embeddings;
  mix_model.is_70b = cfg.n_layers == 80 && cfg.n_heads != cfg.n_kv_heads;
  // Importances per GGUF weight name (Σx² / tokens, what llama-quantize --imatrix computes from the imatrix export).
  std::map<std::string, std::vector<float>> importance;
  if (!opts.stats.empty()) {
    if (!opts.mix && ggml_type_traits(requested).block_size == 1)
      fail_input("--stats {}: an importance matrix weights the rounding of block types; {} has none (pass a block "
                 "type or a K-quant mix as --gguf-type)", opts.stats, ggml_type_name(requested));
    const CalibrationStats stats = load_calibration_stats(opts.stats, *model);  // refuses another model's stats
    for (const auto& [name, e] : imatrix_entries(stats, opts.stats)) importance[name] = e.quant_weights();
  }

  // Plan every tensor before writing anything: refusals happen here.
  GgufExportReport rep;
  rep.output = out_path;
  struct Plan {
    Slot slot;
    GgmlType type;
    Mapping map = Mapping::None;
    bool requant = false;
    std::vector<int64_t> dims = {};
    const std::vector<float>* importance = nullptr;  // quant_weights of the weighted rounding
  };
  std::vector<Plan> plans;
  std::map<std::string, std::vector<std::string>> refused;  // grid -> modules
  bool g32_fixes_all = true;  // quantizing with --group-size 32 would make every refused module map losslessly
  for (const Slot& s : llama_slots(cfg)) {
    if (!model->weights().contains(s.hf)) fail_input("{}: tensor \"{}\" is missing", model_dir, s.hf);
    Plan p{s, requested};
    int64_t N = 0, K = 0;
    if (s.norm) {
      p.type = GgmlType::F32;
      N = 1;
      K = cfg.hidden;
      p.dims = {K};
    } else {
      const auto it = quantized ? qc.modules.find(s.module) : qc.modules.end();
      if (it != qc.modules.end()) {
        N = it->second.out_features;
        K = it->second.in_features;
      } else {
        const TensorView v = model->archive().view(s.hf);
        if (v.shape().size() != 2) fail_input("{}: tensor \"{}\" is {}, expected 2-D", model_dir, s.hf, shape_str(v.shape()));
        N = v.shape()[0];
        K = v.shape()[1];
      }
      p.dims = {K, N};
      if (it != qc.modules.end()) {
        const ModuleQuantInfo& info = it->second;
        p.map = mapping_of(info);
        if (p.map != Mapping::None) {
          p.type = mapped_type(p.map);
        } else if (K % 32 != 0) {
          p.type = GgmlType::F32;
          rep.kept_float[s.gguf] = fmt::format("{} ({} bits g{}): rows of {} are not a multiple of 32; stored as "
                                               "F32 dequantized values (exact)", s.module, info.spec.bits,
                                               info.spec.group_size, K);
        } else {
          if (!opts.allow_requant) {
            const std::string grid = fmt::format("{}-bit {} {}{}", info.spec.bits, info.spec.sym ? "sym" : "asym",
                                                 info.spec.group_size > 0 ? fmt::format("group {}", info.spec.group_size)
                                                                          : std::string("per-channel"),
                                                 info.act_order ? " act-order" : "");
            refused[grid].push_back(s.module);
            g32_fixes_all = g32_fixes_all && gguf_type_at_group_32(info).has_value();
            continue;
          }
          p.requant = true;
          p.type = info.spec.bits <= 4 ? (info.spec.sym ? GgmlType::Q4_0 : GgmlType::Q4_1) : GgmlType::Q8_0;
        }
      } else {
        p.type = opts.mix ? mix_tensor_type(*opts.mix, s.gguf, s.layer, K, mix_model) : requested;
        std::string why;
        p.type = fallback_type(p.type, K, why);
        if (!why.empty()) rep.fallback[s.gguf] = why;
        const auto imp = importance.find(s.gguf);
        if (imp != importance.end() && ggml_type_traits(p.type).block_size > 1) {
          if (static_cast<int64_t>(imp->second.size()) != K)
            fail_input("--stats {}: {} has {} importances, tensor \"{}\" has rows of {}", opts.stats, s.gguf,
                       imp->second.size(), s.hf, K);
          p.importance = &imp->second;
        }
      }
    }
    plans.push_back(std::move(p));
  }
  if (!refused.empty()) {
    // One line: each grid with a count and the first modules, then the fix.
    std::string list;
    size_t n = 0;
    for (const auto& [grid, mods] : refused) {
      list += fmt::format("{}{} ({}): {}", list.empty() ? "" : "; ", grid, mods.size(), join_module_list(mods, 3));
      n += mods.size();
    }
    fail_input("{}: {} module(s) have grids with no ggml equivalent (ggml holds 4-bit sym/asym and 8-bit sym, group "
               "32, natural column order): {}. Fix: {}or pass --allow-requant to re-quantize them to Q4_0/Q4_1/Q8_0 "
               "(the added error is reported)", model_dir, n, list,
               g32_fixes_all ? "quantize with --group-size 32 (and without --act-order) for a lossless export, " : "");
  }

  GgufWriter w;
  w.set("general.architecture", GgufValue::string("llama"));
  w.set(kOutputMarker, GgufValue::string(std::string("ptq ") + PTQ_VERSION));  // --force may replace it (model_dir.h)
  w.set("general.name", GgufValue::string(fs::path(model_dir).filename().string().empty()
                                             ? fs::path(model_dir).parent_path().filename().string()
                                             : fs::path(model_dir).filename().string()));
  bool any_block = false;
  for (const auto& p : plans) any_block |= ggml_type_traits(p.type).block_size > 1;
  if (any_block) w.set("general.quantization_version", GgufValue::u32(2));
  if (opts.mix) w.set("general.file_type", GgufValue::u32(mix_traits(*opts.mix).llama_ftype));
  w.set("llama.context_length", GgufValue::u32(static_cast<uint32_t>(cfg.max_positions)));
  w.set("llama.embedding_length", GgufValue::u32(static_cast<uint32_t>(cfg.hidden)));
  w.set("llama.block_count", GgufValue::u32(static_cast<uint32_t>(cfg.n_layers)));
  w.set("llama.feed_forward_length", GgufValue::u32(static_cast<uint32_t>(cfg.ffn)));
  w.set("llama.attention.head_count", GgufValue::u32(static_cast<uint32_t>(cfg.n_heads)));
  w.set("llama.attention.head_count_kv", GgufValue::u32(static_cast<uint32_t>(cfg.n_kv_heads)));
  w.set("llama.rope.dimension_count", GgufValue::u32(static_cast<uint32_t>(cfg.head_dim)));
  w.set("llama.rope.freq_base", GgufValue::f32(static_cast<float>(cfg.rope_theta)));
  w.set("llama.attention.layer_norm_rms_epsilon", GgufValue::f32(static_cast<float>(cfg.norm_eps)));

  // Tokenizer: SentencePiece pieces/scores/types (GGUF token types use SentencePiece's numbering).
  const std::string spm_path = model_dir + "/tokenizer.model";
  if (!file_exists(spm_path))
    fail_input("{}: no tokenizer.model; GGUF export embeds a SentencePiece tokenizer (tokenizer.json is not supported "
               "yet)", model_dir);
  const SentencePieceModel sp = SentencePieceModel::load(spm_path);
  pieces_or_fail(sp, cfg, spm_path);
  std::vector<std::string> tokens;
  std::vector<double> scores;
  std::vector<int64_t> types;
  for (const auto& piece : sp.pieces()) {
    tokens.push_back(piece.text);
    scores.push_back(piece.score);
    types.push_back(static_cast<int64_t>(piece.type));
  }
  w.set("tokenizer.ggml.model", GgufValue::string("llama"));
  w.set("tokenizer.ggml.tokens", GgufValue::string_array(std::move(tokens)));
  w.set("tokenizer.ggml.scores", GgufValue::f32_array(std::move(scores)));
  w.set("tokenizer.ggml.token_type", GgufValue::i32_array(std::move(types)));
  w.set("tokenizer.ggml.unknown_token_id", GgufValue::u32(static_cast<uint32_t>(sp.unk_id())));
  w.set("tokenizer.ggml.bos_token_id",
        GgufValue::u32(static_cast<uint32_t>(cfg.bos_id >= 0 ? cfg.bos_id : sp.bos_id())));
  w.set("tokenizer.ggml.eos_token_id",
        GgufValue::u32(static_cast<uint32_t>(cfg.eos_id >= 0 ? cfg.eos_id : sp.eos_id())));
  if (sp.pad_id() >= 0) w.set("tokenizer.ggml.padding_token_id", GgufValue::u32(static_cast<uint32_t>(sp.pad_id())));

  // Provenance (llama.cpp ignores unknown keys).
  w.set("ptq.version", GgufValue::string(PTQ_VERSION));
  w.set("ptq.source", GgufValue::string(model_dir));
  if (is_imported) w.set("ptq.source_format", GgufValue::string(ck.kind_name()));
  if (quantized) w.set("ptq.quantization_config", GgufValue::string(qc.raw.dump()));
  if (opts.mix) w.set("ptq.gguf_mix", GgufValue::string(mix_traits(*opts.mix).name));
  if (!importance.empty()) w.set("ptq.imatrix_stats", GgufValue::string(opts.stats));
  rep.imatrix = !importance.empty();

  const Model* m = model.get();
  for (const Plan& p : plans) {
    GgufExportTensor info{p.slot.gguf, p.slot.hf, p.type, p.dims, ""};
    const bool is_q = quantized && qc.modules.count(p.slot.module);
    info.how = p.map != Mapping::None ? fmt::format("mapped from {}{}", is_imported ? "" : "ptq ",
                                                    qc.modules.at(p.slot.module).format)
               : p.requant           ? "re-quantized"
               : is_q                ? "dequantized"
               : ggml_type_traits(p.type).block_size > 1 ? "quantized"
                                                          : "converted";
    rep.tensors.push_back(info);
    int64_t numel = 1;
    for (int64_t d : p.dims) numel *= d;
    rep.parameters += numel;
    rep.bits_per_weight += 8.0 * double(ggml_nbytes(p.type, numel));
    const std::vector<int64_t> perm =
        p.slot.rope_heads > 0 ? gguf_rope_permutation(p.slot.rope_heads, cfg.head_dim) : std::vector<int64_t>();
    GgufExportReport* r = &rep;
    // Producers run inside w.write() below, while everything captured by reference is alive.
    w.add_tensor(p.slot.gguf, p.dims, p.type, [m, p, perm, r, &load_codes]() -> std::vector<uint8_t> {
      if (p.map != Mapping::None) {
        QuantizedWeight qw = load_codes(p.slot.module);
        if (!perm.empty()) {
          qw.q = permute_rows(qw.q, perm);
          qw.scales = permute_rows(qw.scales, perm);
          qw.zeros = permute_rows(qw.zeros, perm);
        }
        double err = 0;
        auto bytes = map_blocks(p.map, qw, p.slot.module, err);
        r->mapped_max_abs_error[p.slot.module] = err;
        return bytes;
      }
      if (!p.requant && m->archive().contains(p.slot.hf)) {
        const TensorView v = m->archive().view(p.slot.hf);
        if (is_float_matrix(v) && ggml_type_traits(p.type).block_size > 1)
          return encode_rows(p.type, v, perm, p.slot.hf, p.importance ? p.importance->data() : nullptr);
      }
      at::Tensor t = m->weights().load(p.slot.hf).to(at::kFloat).contiguous();
      if (!perm.empty()) t = permute_rows(t, perm);
      auto bytes = encode_tensor(p.type, t, p.slot.hf, p.importance ? p.importance->data() : nullptr);
      if (p.requant) {
        const std::vector<float> back = decode_all(p.type, bytes, t.numel());
        const float* ref = t.data_ptr<float>();
        double num = 0, den = 0;
        for (int64_t i = 0; i < t.numel(); ++i) {
          num += double(back[i] - ref[i]) * double(back[i] - ref[i]);
          den += double(ref[i]) * double(ref[i]);
        }
        r->requant_nmse[p.slot.module] = den > 0 ? num / den : 0;
      }
      return bytes;
    });
  }
  w.write(out_path);
  struct stat st {};
  if (::stat(out_path.c_str(), &st) == 0) rep.bytes = static_cast<uint64_t>(st.st_size);
  rep.bits_per_weight = rep.parameters > 0 ? rep.bits_per_weight / double(rep.parameters) : 0;
  return rep;
}

void gguf_to_hf_f32(const std::string& gguf_path, const std::string& config_dir, const std::string& out_dir) {
  const GgufFile g(gguf_path);
  const ModelConfig cfg = load_model_config(config_dir);
  check_llama(cfg, config_dir);
  ModelDirWriter dir(out_dir, {gguf_path, config_dir}, /*force=*/false);
  {
    SafetensorsWriter sw;
    for (const Slot& s : llama_slots(cfg)) {
      const GgufTensorInfo& t = g.tensor(s.gguf);
      std::vector<float> v = g.tensor_f32(s.gguf);
      std::vector<int64_t> shape(t.dims.rbegin(), t.dims.rend());
      if (s.rope_heads > 0) {
        const auto perm = gguf_rope_permutation(s.rope_heads, cfg.head_dim);
        const int64_t K = t.dims[0];
        std::vector<float> back(v.size());
        for (size_t nr = 0; nr < perm.size(); ++nr)
          std::memcpy(&back[perm[nr] * K], &v[nr * K], K * sizeof(float));
        v.swap(back);
      }
      sw.add_f32(s.hf, shape, v.data());
    }
    sw.set_metadata("format", "pt");
    sw.set_metadata("ptq.source_gguf", gguf_path);
    sw.write(dir.file("model.safetensors"));
  }
  json c = json::parse(read_text_file(config_dir + "/config.json"));
  c.erase("quantization_config");
  c["torch_dtype"] = "float32";
  write_text_file_atomic(dir.file("config.json"), c.dump(2));
  dir.copy_tokenizer_files(config_dir);
  dir.commit();
}

const std::vector<GgufMixTraits>& gguf_mixes() { return kMixes; }

std::string gguf_type_names() {
  std::string s = ggml_writable_type_names();
  for (const auto& m : kMixes) s += fmt::format(", {}", m.name);
  return s;
}

void parse_gguf_type(const std::string& name, GgufExportOptions& opts) {
  if (auto t = ggml_type_from_name(name)) {
    opts.type = t;
    return;
  }
  for (const auto& m : kMixes)
    if (name == m.name) {
      opts.mix = m.mix;
      return;
    }
  fail_input("--gguf-type {} is not one of {}", name, gguf_type_names());
}

std::optional<GgmlType> gguf_lossless_type(const ModuleQuantInfo& info) {
  const Mapping m = mapping_of(info);
  if (m == Mapping::None) return std::nullopt;
  return mapped_type(m);
}

}  // namespace ptq
