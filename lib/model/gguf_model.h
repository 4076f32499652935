// GGUF input: a llama-architecture GGUF file (llama.cpp's format) turned into the Hugging Face layout ptq runs.
//
// What is converted: config.json from the llama.* metadata; every tensor decoded to fp32 (F32, F16, BF16,
// Q8_0, Q4_0, Q4_1 through lib/io/gguf.h) under its Hugging Face name, with the q/k rows permuted back
// (llama.cpp's converter interleaves the two RoPE halves of each head: HF row h*d + t*d/2 + j is GGUF row
// h*d + 2j + t); the embedded SentencePiece vocabulary (tokenizer.ggml.model = "llama") as a tokenizer.model
// plus tokenizer_config.json. Refused with a message: other architectures, partial RoPE, rope scaling, and
// GGUF BPE vocabularies (tokenizer.ggml.model = "gpt2").
#pragma once

#include <string>

#include "io/gguf_mix.h"
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

// GGUF name of linear module `id` of decoder layer `layer`, e.g. "blk.3.attn_q.weight" (llama.cpp's LLM_TENSOR_*
// names for llama; the GGUF and imatrix exports and the quantize driver's GGUF grids name tensors with it).
std::string gguf_linear_tensor_name(int64_t layer, LinearId id);
// The layout facts of `cfg` that llama-quantize's mixes read (io/gguf_mix.h).
GgufMixModel gguf_mix_model(const ModelConfig& cfg);

}  // namespace ptq
