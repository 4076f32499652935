// GGUF export (llama.cpp): an FP, ptq-quantized, or imported GPTQ (v1/v2) / compressed-tensors Llama checkpoint to
// one GGUF v3 file, and the way back to a dequantized Hugging Face directory (so ptq's runner can evaluate exactly
// what llama.cpp loads).
//
// Mapping (llama.cpp's convert_hf_to_gguf.py for LlamaForCausalLM):
//   model.embed_tokens.weight                -> token_embd.weight
//   model.norm.weight                        -> output_norm.weight
//   lm_head.weight                           -> output.weight (absent with tied embeddings)
//   model.layers.{i}.self_attn.{q,k,v,o}_proj -> blk.{i}.attn_{q,k,v,output}.weight
//   model.layers.{i}.input_layernorm / post_attention_layernorm -> blk.{i}.attn_norm / ffn_norm
//   model.layers.{i}.mlp.{gate,down,up}_proj -> blk.{i}.ffn_{gate,down,up}.weight
// in that order (the order llama.cpp's converter writes). W[N, K] is written with GGUF dims {K, N}. q_proj and
// k_proj rows are permuted from HF's rotate-half RoPE layout to ggml's interleaved one:
//   row h*hd + 2i + t  <-  row h*hd + t*hd/2 + i     (h < heads (k: kv heads), i < hd/2, t in {0, 1})
// Norm vectors are always F32 (ggml requires it).
//
// Types (--gguf-type); the block types and mixes give the file `llama-quantize` writes from ptq's F32 GGUF, tensor for
// tensor and byte for byte (scripts/check_gguf_kquants.sh compares every one, with and without the imatrix):
//   f32 (default), f16, bf16: every tensor but the norms.
//   A ggml block type, "pure" (= llama-quantize --pure TYPE): q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k
//     for every 2-D weight: the seven linear modules of each layer, token_embd and output.
//   A K-quant mix (= llama-quantize MODEL OUT FTYPE, llama_tensor_get_type of llama.cpp's src/llama-quant.cpp): the
//     ftype's base type with more bits where llama.cpp puts them (GgufMix below: attn_v / ffn_down / attn_output by
//     layer, output -> q6_k). Named by llama.cpp's ftype in lower case, q3_k_s .. q5_k_m; the two ftypes whose names
//     are also ggml type names are q2_k_mix (llama.cpp's "Q2_K": q2_k with q3_k ffn_down / attn_output / attn_v) and
//     q6_k_mix (llama.cpp's "Q6_K", the same file as pure q6_k for a llama), so that q2_k / q6_k always mean the pure
//     type.
//   A row width that is not a multiple of the type's block falls back as in llama.cpp (tensor_type_fallback):
//   q2_k/q3_k -> q4_0, q4_k -> q5_0, q5_k -> q5_1, q6_k -> q8_0, and f16 when not a multiple of 32 either (listed in
//   the report's `fallback`); a mix's output (and a tied token_embd) is q8_0 when its rows are not a multiple of 256.
//   Rounding: ggml's reference rounding (quantize_row_*_ref) or, with `stats` (a `ptq calibrate` stats file of this
//   model), its importance-weighted rounding with quant_weights = Σx² / tokens per input column, exactly what
//   llama-quantize --imatrix does with `ptq export STATS --format imatrix`'s file (token_embd/output have no entry
//   and use the reference rounding, as in llama.cpp). io/gguf_kquants.h has the quantizers.
// A module of a quantized checkpoint (ptq's own, or GPTQ / compressed-tensors read through quant/gptq_checkpoint.h, whose
// codes, fp16 scales and zeros are the same numbers) is mapped without re-quantizing when its grid is a ggml type:
//   4-bit symmetric, group 32, natural column order -> Q4_0  (d = scale; lossless when the scale is fp16)
//   4-bit asymmetric, group 32, natural order       -> Q4_1  (d = scale, m = -zero * scale rounded to fp16)
//   8-bit symmetric, group 32, natural order        -> Q8_0  (qs = q - 128, d = scale)
// Any other grid (g128, per-channel, act-order, 2/3-bit, 8-bit asymmetric) is refused with the list of modules
// unless allow_requant, which re-quantizes the dequantized weight to Q4_0 (sym) / Q4_1 (asym) / Q8_0 (8-bit)
// and reports the error that added. Rows whose width is not a multiple of 32 stay F32 (dequantized values,
// exact) and are reported. --gguf-type applies to the tensors that are not mapped (FP ones).
//
// GGUF's llama runs weights only and the architecture's own tensors: an activation-quantized checkpoint, or one with
// norm biases, norm index tensors / split channels, extra linear biases or an online rotation, is refused with the
// list before anything is written (refuse_nonstandard, gptq_export.h), suggesting compressed-tensors int-quantized
// where that carries the activation schemes.
//
// The output file is written atomically; an existing one is replaced only with `force`, and never the input.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "io/gguf.h"
#include "io/gguf_mix.h"
#include "model/gguf_model.h"
#include "model/model.h"

namespace ptq {

struct GgufExportOptions {
  std::optional<GgmlType> type;  // unset (and no mix): F32 for FP tensors, quantized modules mapped
  std::optional<GgufMix> mix;    // exclusive with type
  std::string stats;             // calibration stats of the model: importance-weighted rounding (see above)
  bool allow_requant = false;
  bool force = false;  // replace an existing output file
};
// Sets opts.type or opts.mix from a --gguf-type value; throws std::invalid_argument listing gguf_type_names().
void parse_gguf_type(const std::string& name, GgufExportOptions& opts);

struct GgufExportTensor {
  std::string gguf_name, source_name;
  GgmlType type = GgmlType::F32;
  std::vector<int64_t> dims;  // ggml order
  std::string how;            // "copied", "converted", "quantized", "mapped from ptq w4g32", "re-quantized", ...
};

struct GgufExportReport {
  std::string output;
  uint64_t bytes = 0;
  std::vector<GgufExportTensor> tensors;
  std::map<std::string, std::string> kept_float;  // tensor -> why it is not of the requested/mapped type
  std::map<std::string, std::string> fallback;    // tensor -> llama.cpp's fallback type and why (row width)
  bool imatrix = false;                           // importance-weighted rounding from opts.stats
  std::map<std::string, double> requant_nmse;     // module -> ||W_gguf - W_ptq||² / ||W_ptq||² added
  std::map<std::string, double> mapped_max_abs_error;  // module -> max |W_gguf - W_ptq| of a mapped module
  double bits_per_weight = 0;  // tensor data bits over all parameters
  int64_t parameters = 0;
};

struct ModuleQuantInfo;
// The ggml type a quantized module maps to without re-quantizing (4-bit sym -> Q4_0, 4-bit asym -> Q4_1, 8-bit sym
// -> Q8_0; group 32, natural column order, K a multiple of 32); nullopt when its grid has no ggml equivalent.
std::optional<GgmlType> gguf_lossless_type(const ModuleQuantInfo& info);

// Exports `model_dir` (an HF Llama directory, a ptq checkpoint, or a GPTQ / compressed-tensors checkpoint) to
// `out_path` atomically. Throws std::invalid_argument listing the modules whose grids have no ggml equivalent
// (unless allow_requant), for an architecture other than llama/mistral, for what a standard llama cannot represent
// (above), or for an existing output without force.
GgufExportReport export_gguf(const std::string& model_dir, const std::string& out_path, const GgufExportOptions& opts);

// Writes `out_dir` (created atomically; must not exist) as an FP32 Hugging Face directory holding exactly the weights
// llama.cpp reads from `gguf_path` (every tensor decoded, q/k rows permuted back), with config.json and the
// tokenizer files copied from `config_dir`. Used to compare llama.cpp against ptq's runner on identical weights.
void gguf_to_hf_f32(const std::string& gguf_path, const std::string& config_dir, const std::string& out_dir);


// Row permutation of q/k (see above): perm[new_row] = old_row for `heads` heads of `head_dim` rows.
std::vector<int64_t> gguf_rope_permutation(int64_t heads, int64_t head_dim);

}  // namespace ptq
