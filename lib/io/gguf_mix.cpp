#include "io/gguf_mix.h"

#include <fmt/format.h>

#include "core/error.h"

namespace ptq {

namespace {

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

}  // namespace

// llama_tensor_get_type_impl for a llama-architecture model with the K-quant ftypes, no expert and no Falcon.
GgmlType gguf_mix_tensor_type(GgufMix mix, const std::string& name, int64_t layer, int64_t ncols,
                              const GgufMixModel& m) {
  GgmlType t = gguf_mix_traits(mix).base;
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

GgmlType gguf_fallback_type(GgmlType t, int64_t ncols, std::string& why) {
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

GgmlType gguf_target_tensor_type(const GgufTarget& target, const std::string& name, int64_t layer, int64_t ncols,
                                 const GgufMixModel& m, std::string& fallback_why) {
  const GgmlType t = target.mix ? gguf_mix_tensor_type(*target.mix, name, layer, ncols, m) : target.type.value();
  return gguf_fallback_type(t, ncols, fallback_why);
}

const std::vector<GgufMixTraits>& gguf_mixes() { return kMixes; }
const GgufMixTraits& gguf_mix_traits(GgufMix m) { return kMixes[static_cast<size_t>(m)]; }

std::string gguf_type_names() {
  std::string s = ggml_writable_type_names();
  for (const auto& m : kMixes) s += fmt::format(", {}", m.name);
  return s;
}

std::string GgufTarget::name() const { return mix ? gguf_mix_traits(*mix).name : ggml_type_name(type.value()); }

GgufTarget parse_gguf_target(const std::string& name, std::string_view what) {
  GgufTarget t;
  if ((t.type = ggml_type_from_name(name))) return t;
  for (const auto& m : kMixes)
    if (name == m.name) {
      t.mix = m.mix;
      return t;
    }
  fail_input("{} {} is not one of {}", what, name, gguf_type_names());
}

}  // namespace ptq
