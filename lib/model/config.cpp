#include "model/config.h"

#include <cmath>

#include <array>
#include <utility>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"

namespace ptq {

using nlohmann::json;

namespace {

// One row per architecture family; index = static_cast<int>(Arch).
constexpr std::array<ArchTraits, 4> kArchTraits = {{
    {Arch::Llama, "llama", "model.embed_tokens", "", "", "", "model.norm", "lm_head", "model.layers.{}.",
     "input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
     "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"},
    {Arch::Mistral, "mistral", "model.embed_tokens", "", "", "", "model.norm", "lm_head", "model.layers.{}.",
     "input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
     "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"},
    {Arch::Qwen2, "qwen2", "model.embed_tokens", "", "", "", "model.norm", "lm_head", "model.layers.{}.",
     "input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
     "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"},
    {Arch::Opt, "opt", "model.decoder.embed_tokens", "model.decoder.embed_positions", "model.decoder.project_in",
     "model.decoder.project_out", "model.decoder.final_layer_norm", "lm_head", "model.decoder.layers.{}.",
     "self_attn_layer_norm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
     "final_layer_norm", "", "fc1", "fc2"},
}};

template <typename T>
T get_or(const json& j, const char* key, T fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  return it->get<T>();
}

}  // namespace

const ArchTraits& arch_traits(Arch arch) { return kArchTraits[static_cast<size_t>(arch)]; }

std::string supported_model_types() {
  std::string s;
  for (const auto& t : kArchTraits) s += (s.empty() ? "" : ", ") + std::string(t.model_type);
  return s;
}

std::string ModelConfig::layer_module(int64_t layer, const std::string& module) const {
  return fmt::format(fmt::runtime(traits().layer_prefix), layer) + module;
}

std::string ModelConfig::layer_tensor(int64_t layer, const std::string& module, const char* suffix) const {
  return layer_module(layer, module) + "." + suffix;
}

ModelConfig parse_model_config(const std::string& json_text, const std::string& where) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    fail_input("{}: not valid JSON ({})", where, e.what());
  }
  if (!j.is_object()) fail_input("{}: expected a JSON object", where);
  if (j.contains("model_type") && !j["model_type"].is_string() && !j["model_type"].is_null())
    fail_input("{}: \"model_type\" must be a string, found {}", where, j["model_type"].dump());
  const std::string model_type = get_or<std::string>(j, "model_type", "");
  const ArchTraits* traits = nullptr;
  for (const auto& t : kArchTraits)
    if (model_type == t.model_type) traits = &t;
  if (traits == nullptr)
    fail_input("{}: model_type \"{}\" is not supported (supported: {})", where, model_type, supported_model_types());

  ModelConfig c;
  c.arch = traits->arch;
  c.model_type = model_type;
  auto require = [&](const char* key) -> int64_t {
    auto it = j.find(key);
    if (it == j.end() || !it->is_number_integer() || it->get<int64_t>() <= 0)
      fail_input("{}: \"{}\" must be a positive integer", where, key);
    return it->get<int64_t>();
  };
  try {
    c.hidden = require("hidden_size");
    c.n_layers = require("num_hidden_layers");
    c.n_heads = require("num_attention_heads");
    c.vocab = require("vocab_size");
    c.max_positions = require("max_position_embeddings");
    c.n_kv_heads = get_or<int64_t>(j, "num_key_value_heads", c.n_heads);
    c.head_dim = get_or<int64_t>(j, "head_dim", c.hidden / c.n_heads);
    c.embed_dim = c.hidden;
    c.torch_dtype = get_or<std::string>(j, "torch_dtype", "");
    c.bos_id = get_or<int64_t>(j, "bos_token_id", -1);
    c.eos_id = j.contains("eos_token_id") && j["eos_token_id"].is_array() ? j["eos_token_id"][0].get<int64_t>()
                                                                           : get_or<int64_t>(j, "eos_token_id", -1);
    if (c.arch == Arch::Opt) {
      c.ffn = require("ffn_dim");
      c.use_rope = false;
      c.pos_offset = 2;
      c.norm = NormKind::LayerNorm;
      c.gated_mlp = false;
      const bool bias = get_or<bool>(j, "enable_bias", true);
      c.qkv_bias = c.o_bias = c.mlp_bias = bias;
      c.pre_norm = get_or<bool>(j, "do_layer_norm_before", true);
      c.final_norm = c.pre_norm && !get_or<bool>(j, "_remove_final_layer_norm", false);
      c.tie_embeddings = get_or<bool>(j, "tie_word_embeddings", true);
      c.embed_dim = get_or<int64_t>(j, "word_embed_proj_dim", c.hidden);
      if (!get_or<bool>(j, "layer_norm_elementwise_affine", true))
        fail_input("{}: layer_norm_elementwise_affine=false is not supported", where);
      const std::string act = get_or<std::string>(j, "activation_function", "relu");
      if (act == "relu") c.act = Activation::ReLU;
      else if (act == "gelu") c.act = Activation::GELU;
      else fail_input("{}: activation_function \"{}\" is not supported (relu, gelu)", where, act);
    } else {
      c.ffn = require("intermediate_size");
      c.norm_eps = get_or<double>(j, "rms_norm_eps", 1e-6);
      c.rope_theta = get_or<double>(j, "rope_theta", 10000.0);
      c.tie_embeddings = get_or<bool>(j, "tie_word_embeddings", false);
      const std::string act = get_or<std::string>(j, "hidden_act", "silu");
      if (act != "silu") fail_input("{}: hidden_act \"{}\" is not supported for {} (silu)", where, act, model_type);
      if (j.contains("rope_scaling") && !j["rope_scaling"].is_null())
        fail_input("{}: rope_scaling {} is not supported yet (plain RoPE only)", where, j["rope_scaling"].dump());
      if (c.arch == Arch::Qwen2) {
        c.qkv_bias = true;
        if (get_or<bool>(j, "use_sliding_window", false)) c.sliding_window = get_or<int64_t>(j, "sliding_window", 0);
      } else {
        c.qkv_bias = c.o_bias = get_or<bool>(j, "attention_bias", false);
        c.mlp_bias = get_or<bool>(j, "mlp_bias", false);
        if (c.arch == Arch::Mistral) c.sliding_window = get_or<int64_t>(j, "sliding_window", 0);
      }
    }
  } catch (const json::type_error& e) {
    fail_input("{}: a key has the wrong type ({})", where, e.what());
  }
  // Divisors and widths of the model (head_dim defaults to hidden_size / num_attention_heads).
  for (const auto& [key, v] : {std::pair<const char*, int64_t>{"num_key_value_heads", c.n_kv_heads},
                               {"head_dim", c.head_dim}, {"word_embed_proj_dim", c.embed_dim}})
    if (v <= 0) fail_input("{}: \"{}\" must be a positive integer, got {}", where, key, v);
  if (c.n_heads % c.n_kv_heads != 0)
    fail_input("{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", where, c.n_heads,
               c.n_kv_heads);
  if (c.use_rope && c.head_dim % 2 != 0) fail_input("{}: head_dim {} must be even for RoPE", where, c.head_dim);
  // Values outside their domain give NaN or meaningless logits later, with exit 0: refuse them here.
  if (!std::isfinite(c.norm_eps) || c.norm_eps < 0)
    fail_input("{}: the norm epsilon must be a finite number >= 0, got {}", where, c.norm_eps);
  if (c.use_rope && !(std::isfinite(c.rope_theta) && c.rope_theta > 0))
    fail_input("{}: rope_theta must be a finite number > 0, got {}", where, c.rope_theta);
  if (c.sliding_window < 0) fail_input("{}: sliding_window must be >= 0, got {}", where, c.sliding_window);
  return c;
}

ModelConfig load_model_config(const std::string& dir) {
  const std::string path = dir + "/config.json";
  if (!file_exists(path)) fail_input("{}: no config.json (expected a Hugging Face model directory)", dir);
  return parse_model_config(read_text_file(path), path);
}

}  // namespace ptq
