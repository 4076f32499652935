// Which ggml type llama-quantize gives each tensor of a llama: its K-quant mixes (llama_ftype LLAMA_FTYPE_MOSTLY_*,
// llama_tensor_get_type of llama.cpp's src/llama-quant.cpp) and its fallback for rows that are not a multiple of a
// type's block. One table, asked by the GGUF exporter (export/gguf_export.h) and by the quantize driver when a recipe
// quantizes straight onto GGUF's grids (weights.gguf_type). LibTorch-free (ptq_base).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "io/gguf.h"

namespace ptq {

// llama-quantize's K-quant mixes (llama_ftype LLAMA_FTYPE_MOSTLY_*), in llama.cpp's order.
enum class GgufMix { Q2_K, Q3_K_S, Q3_K_M, Q3_K_L, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K };

struct GgufMixTraits {
  GgufMix mix;
  const char* name;        // --gguf-type
  const char* llama_name;  // llama-quantize's type argument
  uint32_t llama_ftype;    // general.file_type
  GgmlType base;           // the type of every tensor the mix does not raise
  const char* rule;        // what it raises, for --help
};
const std::vector<GgufMixTraits>& gguf_mixes();
const GgufMixTraits& gguf_mix_traits(GgufMix m);
// Every --gguf-type value: the ggml types, then the mixes.
std::string gguf_type_names();


// A --gguf-type / weights.gguf_type value: one ggml type for every quantizable tensor ("pure"), or a mix.
struct GgufTarget {
  std::optional<GgmlType> type;
  std::optional<GgufMix> mix;
  std::string name() const;  // as parsed: "q4_k_m", "q4_0"
};
// Throws (fail_input) naming `what` and listing gguf_type_names() when `name` is neither.
GgufTarget parse_gguf_target(const std::string& name, std::string_view what);

// The layout facts llama_tensor_get_type_impl reads.
struct GgufMixModel {
  int64_t n_layers = 0;
  int64_t n_gqa = 1;    // heads / kv heads
  bool tied = false;    // no output.weight: token_embd takes output's rule
  bool is_70b = false;  // llama.cpp's LLM_TYPE_70B: a llama of 80 layers with grouped kv heads
};

// The type `mix` gives GGUF tensor `name` (e.g. "blk.3.ffn_down.weight") of decoder layer `layer`, rows of `ncols`,
// before the fallback below. llama.cpp counts attn_v and ffn_down tensors in file order (i_attention_wv,
// i_ffn_down); in a llama GGUF that count is the layer index.
GgmlType gguf_mix_tensor_type(GgufMix mix, const std::string& name, int64_t layer, int64_t ncols, const GgufMixModel& m);
// llama.cpp's tensor_type_fallback: the type a row of `ncols` can hold instead of `t`; `why` says what happened
// (left empty when t fits).
GgmlType gguf_fallback_type(GgmlType t, int64_t ncols, std::string& why);
// What `target` stores GGUF tensor `name` as: the pure type or the mix's choice, then the fallback.
GgmlType gguf_target_tensor_type(const GgufTarget& target, const std::string& name, int64_t layer, int64_t ncols,
                                 const GgufMixModel& m, std::string& fallback_why);

}  // namespace ptq
