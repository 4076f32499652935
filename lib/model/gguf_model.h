// GGUF input: a llama-architecture GGUF file (llama.cpp's format) turned into the Hugging Face layout ptq runs.
// The packed runner takes its 2-D weights from the file itself (open_gguf_model); the converted directory serves
// the config, the tokenizer, the small tensors and the fp32 weights the reference runner and the other commands read.
//
// What is converted: config.json from the llama.* metadata; every tensor decoded to fp32 (float and block types
// through lib/io/gguf.h) under its Hugging Face name, with the q/k rows permuted back
// (llama.cpp's converter interleaves the two RoPE halves of each head: HF row h*d + t*d/2 + j is GGUF row
// h*d + 2j + t); the embedded SentencePiece vocabulary (tokenizer.ggml.model = "llama") as a tokenizer.model
// plus tokenizer_config.json. Refused with a message: other architectures, partial RoPE, rope scaling, and
// GGUF BPE vocabularies (tokenizer.ggml.model = "gpt2").
#pragma once

#include <memory>
#include <string>

#include "io/gguf.h"
#include "io/gguf_mix.h"
#include "kernels/packed_weights.h"
#include "model/model.h"

namespace ptq {

// True for an existing regular file whose first four bytes are "GGUF".
bool is_gguf_file(const std::string& path);

// What a MODEL argument names: gguf_model_dir(path) for a GGUF file, else `path` unchanged.
std::string resolve_model_path(const std::string& path);

// Writes `out_dir` (created; must not exist) as an fp32 Hugging Face directory equivalent to `gguf_path`.
void gguf_to_hf_dir(const std::string& gguf_path, const std::string& out_dir);

// The converted directory of `gguf_path`, made once and then reused: $PTQ_CACHE_DIR, else
// $XDG_CACHE_HOME/ptq, else ~/.cache/ptq, in gguf-<sha256 of the file's content>/ (the digest is remembered per
// device, inode, size, mtime and ctime in nanoseconds, so an edit in place is noticed). Says so on stderr when it
// converts.
std::string gguf_model_dir(const std::string& gguf_path);

// A Model over GGUF file `gguf_path` whose converted directory is `dir` (gguf_model_dir) (model/gguf_weights.cpp): config, tokenizer and the
// fp32 tensors (reference runner, inspect, quantize) from the directory; for the packed runner every 2-D weight
// (linear modules, token_embd, output) comes from the file's own blocks (pack_gguf_tensor), so a quantized GGUF
// runs resident at about its file size and never touches the directory's fp32 copies of those tensors.
std::unique_ptr<Model> open_gguf_model(const std::string& gguf_path, const std::string& dir);

// GGUF tensor `t` of `gguf` as the CPU kernels read it: F32 / F16 / BF16 viewed in the mapped file (kept alive by
// the returned weights), every block type on its affine grid (io/gguf_kquants.h ggml_row_grid: the dequantizer's a
// and b per sub-block become the kernels' steps and offsets, groups of one sub-block) with the same dequantized
// values; qk_head_dim > 0: rows put back in Hugging Face order (llama.cpp interleaves each q/k head's RoPE halves).
// Null for a tensor that is not 2-D.
std::shared_ptr<const kernels::PackedWeights> pack_gguf_tensor(const std::shared_ptr<const GgufFile>& gguf,
                                                               const GgufTensorInfo& t, int64_t qk_head_dim);

// llama.cpp's converter interleaves the two RoPE halves of each q/k head: Hugging Face row h*d + t*d/2 + j is GGUF
// row h*d + 2j + t (d = head_dim). gguf_qk_row gives the GGUF row of a Hugging Face one.
int64_t gguf_qk_row(int64_t hf_row, int64_t head_dim);
bool is_qk_tensor(const std::string& gguf_name);  // blk.N.attn_q.* or blk.N.attn_k.*
// The GGUF name of Hugging Face tensor `hf` ("model.layers.3.mlp.up_proj.weight" -> "blk.3.ffn_up.weight"), or "".
std::string gguf_name_of(const std::string& hf);

// GGUF name of linear module `id` of decoder layer `layer`, e.g. "blk.3.attn_q.weight" (llama.cpp's LLM_TENSOR_*
// names for llama; the GGUF and imatrix exports and the quantize driver's GGUF grids name tensors with it).
std::string gguf_linear_tensor_name(int64_t layer, LinearId id);
// The layout facts of `cfg` that llama-quantize's mixes read (io/gguf_mix.h).
GgufMixModel gguf_mix_model(const ModelConfig& cfg);

}  // namespace ptq
