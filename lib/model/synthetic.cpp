#include "model/synthetic.h"

#include <sys/stat.h>

#include <random>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"
#include "core/half.h"
#include "io/safetensors.h"

namespace ptq {

std::string synthetic_config_json(const SyntheticSpec& s) {
  const ArchTraits& t = arch_traits(s.arch);
  nlohmann::json j;
  j["model_type"] = t.model_type;
  j["hidden_size"] = s.hidden;
  j["num_hidden_layers"] = s.n_layers;
  j["num_attention_heads"] = s.n_heads;
  j["vocab_size"] = s.vocab;
  j["max_position_embeddings"] = s.max_positions;
  j["tie_word_embeddings"] = s.tie_embeddings;
  j["bos_token_id"] = 1;
  j["eos_token_id"] = 2;
  j["torch_dtype"] = s.dtype == DType::F16 ? "float16" : s.dtype == DType::BF16 ? "bfloat16" : "float32";
  if (s.arch == Arch::Opt) {
    j["architectures"] = {"OPTForCausalLM"};
    j["ffn_dim"] = s.ffn;
    j["word_embed_proj_dim"] = s.hidden;
    j["do_layer_norm_before"] = s.opt_pre_norm;
    j["activation_function"] = "relu";
    j["enable_bias"] = true;
    j["layer_norm_elementwise_affine"] = true;
  } else {
    static const char* kArchName[] = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"};
    j["architectures"] = {kArchName[static_cast<int>(s.arch)]};
    j["intermediate_size"] = s.ffn;
    j["num_key_value_heads"] = s.n_kv_heads;
    j["rms_norm_eps"] = 1e-5;
    j["rope_theta"] = 10000.0;
    j["hidden_act"] = "silu";
    if (s.arch == Arch::Llama) j["attention_bias"] = false;
    if (s.arch == Arch::Mistral) {
      if (s.sliding_window > 0) j["sliding_window"] = s.sliding_window;
      else j["sliding_window"] = nullptr;
    }
    if (s.arch == Arch::Qwen2) j["use_sliding_window"] = false;
  }
  return j.dump(2) + "\n";
}

void write_synthetic_model(const SyntheticSpec& s, const std::string& dir) {
  if (s.dtype != DType::F32 && s.dtype != DType::F16 && s.dtype != DType::BF16)
    fail_input("synthetic model: dtype {} is not a float type (F32, F16, BF16)", dtype_name(s.dtype));
  if (s.n_heads <= 0 || s.hidden % s.n_heads != 0 || s.n_kv_heads <= 0 || s.n_heads % s.n_kv_heads != 0)
    fail_input("synthetic model: hidden {} / heads {} / kv heads {} are inconsistent", s.hidden, s.n_heads, s.n_kv_heads);
  const std::string cfg_text = synthetic_config_json(s);
  const ModelConfig cfg = parse_model_config(cfg_text, "synthetic config");
  const ArchTraits& t = cfg.traits();

  std::mt19937_64 rng(s.seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  SafetensorsWriter writer;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, float mean, float stddev) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float> v(n);
    for (auto& x : v) x = mean + stddev * normal(rng);
    if (s.dtype == DType::F32) {
      writer.add_f32(name, shape, v.data());
      return;
    }
    std::vector<uint16_t> h(n);
    for (int64_t i = 0; i < n; ++i) h[i] = s.dtype == DType::F16 ? f32_to_fp16(v[i]) : f32_to_bf16(v[i]);
    writer.add(name, s.dtype, shape, h.data(), h.size() * 2);
  };
  const bool layer_norm = cfg.norm == NormKind::LayerNorm;
  auto add_norm = [&](const std::string& base) {
    add(base + ".weight", {cfg.hidden}, 1.f, 0.1f);
    if (layer_norm) add(base + ".bias", {cfg.hidden}, 0.f, 0.02f);
  };
  add(std::string(t.embed) + ".weight", {cfg.vocab, cfg.hidden}, 0.f, 0.02f);
  if (*t.pos_embed) add(std::string(t.pos_embed) + ".weight", {cfg.max_positions + cfg.pos_offset, cfg.hidden}, 0.f, 0.02f);
  const int64_t q_out = cfg.n_heads * cfg.head_dim, kv_out = cfg.n_kv_heads * cfg.head_dim;
  for (int64_t i = 0; i < cfg.n_layers; ++i) {
    auto name = [&](const char* module, const char* suffix) { return cfg.layer_tensor(i, module, suffix); };
    add_norm(cfg.layer_module(i, t.attn_norm));
    add_norm(cfg.layer_module(i, t.mlp_norm));
    struct L {
      const char* module;
      int64_t out, in;
      bool bias;
    };
    const L linears[] = {{t.q_proj, q_out, cfg.hidden, cfg.qkv_bias},  {t.k_proj, kv_out, cfg.hidden, cfg.qkv_bias},
                         {t.v_proj, kv_out, cfg.hidden, cfg.qkv_bias}, {t.o_proj, cfg.hidden, q_out, cfg.o_bias},
                         {t.gate_proj, cfg.ffn, cfg.hidden, cfg.mlp_bias}, {t.up_proj, cfg.ffn, cfg.hidden, cfg.mlp_bias},
                         {t.down_proj, cfg.hidden, cfg.ffn, cfg.mlp_bias}};
    for (const L& l : linears) {
      if (*l.module == '\0') continue;
      add(name(l.module, "weight"), {l.out, l.in}, 0.f, 0.02f);
      if (l.bias) add(name(l.module, "bias"), {l.out}, 0.f, 0.02f);
    }
  }
  if (cfg.final_norm) add_norm(t.final_norm);
  if (!cfg.tie_embeddings) add(std::string(t.lm_head) + ".weight", {cfg.vocab, cfg.hidden}, 0.f, 0.02f);

  if (!is_directory(dir) && ::mkdir(dir.c_str(), 0755) != 0) fail_io("cannot create directory {}", dir);
  writer.set_metadata("format", "pt");
  writer.set_metadata("producer", "ptq synth");
  writer.write(dir + "/model.safetensors");
  write_text_file_atomic(dir + "/config.json", cfg_text);
}

}  // namespace ptq
