// Model configuration from a Hugging Face config.json, and the per-architecture tensor naming table.
//
// Dimension convention used everywhere in ptq: a linear weight is row-major W[out, in] (PyTorch layout),
// activations are [batch, tokens, channels], Y = X Wᵀ + b.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ptq {

enum class Arch { Llama, Mistral, Qwen2, Opt };
enum class NormKind { RMSNorm, LayerNorm };
enum class Activation { SiLU, ReLU, GELU };

// Where an architecture keeps its tensors. Per-layer names are relative to `layer_prefix` (which holds
// one "{}" for the layer index) and omit ".weight"/".bias". Empty string: the architecture has no such tensor.
struct ArchTraits {
  Arch arch;
  const char* model_type;  // config.json "model_type"
  const char* embed;
  const char* pos_embed;     // learned positions (OPT)
  const char* project_in;    // OPT word_embed_proj_dim != hidden_size
  const char* project_out;
  const char* final_norm;
  const char* lm_head;
  const char* layer_prefix;
  const char* attn_norm;
  const char* q_proj;
  const char* k_proj;
  const char* v_proj;
  const char* o_proj;
  const char* mlp_norm;
  const char* gate_proj;  // empty: ungated MLP (OPT fc1/fc2)
  const char* up_proj;
  const char* down_proj;
};

const ArchTraits& arch_traits(Arch arch);
// "llama, mistral, qwen2, opt": for error messages and --help.
std::string supported_model_types();

struct ModelConfig {
  Arch arch = Arch::Llama;
  std::string model_type;
  int64_t hidden = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0, ffn = 0, vocab = 0;
  int64_t max_positions = 0;
  int64_t embed_dim = 0;  // width of the token embedding (OPT word_embed_proj_dim); equals hidden elsewhere
  double norm_eps = 1e-5;
  double rope_theta = 10000.0;
  bool use_rope = true;
  int64_t pos_offset = 0;  // OPT's learned positions start at index 2
  NormKind norm = NormKind::RMSNorm;
  Activation act = Activation::SiLU;
  bool gated_mlp = true;
  bool qkv_bias = false, o_bias = false, mlp_bias = false;
  bool pre_norm = true;    // OPT do_layer_norm_before=false puts the norm after the residual add
  bool final_norm = true;  // OPT post-norm models have no final layer norm
  bool tie_embeddings = false;
  int64_t sliding_window = 0;  // 0: full causal attention
  int64_t bos_id = -1, eos_id = -1;
  std::string torch_dtype;

  const ArchTraits& traits() const { return arch_traits(arch); }
  int64_t n_rep() const { return n_heads / n_kv_heads; }
  // The full name of a per-layer tensor, e.g. layer_tensor(3, "self_attn.q_proj", "weight").
  std::string layer_tensor(int64_t layer, const std::string& module, const char* suffix) const;
  // The full module path, e.g. "model.layers.3.self_attn.q_proj".
  std::string layer_module(int64_t layer, const std::string& module) const;
};

// Reads and validates `dir`/config.json. Unknown model_type or unsupported options (e.g. rope_scaling)
// are rejected with a message naming the key and what is supported.
ModelConfig load_model_config(const std::string& dir);
// The same from JSON text; `where` names the source in error messages.
ModelConfig parse_model_config(const std::string& json_text, const std::string& where);

}  // namespace ptq
