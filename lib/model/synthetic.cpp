#include "model/synthetic.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"
#include "core/half.h"
#include "core/progress.h"
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

namespace {

// splitmix64's output function: a bijective 64-bit mix with full avalanche, so consecutive counters give
// independent-looking words.
inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Approximately N(0, 1) from one 64-bit word: four 16-bit uniforms u = (k + 0.5) / 2^16 on (0, 1) summed
// (Irwin-Hall: mean 2, variance 1/3), centred and scaled to unit variance. Exact in float.
inline float approx_normal(uint64_t h) {
  const uint32_t sum = uint32_t(h & 0xffff) + uint32_t((h >> 16) & 0xffff) + uint32_t((h >> 32) & 0xffff) +
                       uint32_t(h >> 48);
  return (float(sum + 2) * (1.f / 65536.f) - 2.f) * 1.7320508f;
}

struct SyntheticTensor {
  std::string name;
  std::vector<int64_t> shape;
  float mean, stddev;
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

// Element i of tensor `index` depends only on (seed, index, i): the result is the same for any thread
// count and chunking.
template <typename T, typename Convert>
void fill_tensor(const SyntheticTensor& t, uint64_t seed, size_t index, T* out, Convert convert) {
  const uint64_t key = mix64(mix64(seed) + index);
  at::parallel_for(0, t.numel(), 1 << 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      out[i] = convert(t.mean + t.stddev * approx_normal(mix64(key + uint64_t(i + 1) * 0x9e3779b97f4a7c15ULL)));
  });
}

}  // namespace

void write_synthetic_model(const SyntheticSpec& s, const std::string& dir) {
  if (s.dtype != DType::F32 && s.dtype != DType::F16 && s.dtype != DType::BF16)
    fail_input("synthetic model: dtype {} is not a float type (F32, F16, BF16)", dtype_name(s.dtype));
  if (s.n_heads <= 0 || s.hidden % s.n_heads != 0 || s.n_kv_heads <= 0 || s.n_heads % s.n_kv_heads != 0)
    fail_input("synthetic model: hidden {} / heads {} / kv heads {} are inconsistent", s.hidden, s.n_heads, s.n_kv_heads);
  const std::string cfg_text = synthetic_config_json(s);
  const ModelConfig cfg = parse_model_config(cfg_text, "synthetic config");
  const ArchTraits& t = cfg.traits();

  // Every tensor is declared first (the writer lays out the file from the list), then generated and
  // written one at a time.
  std::vector<SyntheticTensor> tensors;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, float mean, float stddev) {
    tensors.push_back({name, std::move(shape), mean, stddev});
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

  // Shards: consecutive tensors, each shard at most shard_bytes of data unless one tensor alone is larger.
  const size_t esize = dtype_size(s.dtype);
  std::vector<std::vector<size_t>> shards(1);
  uint64_t shard_fill = 0, total_bytes = 0;
  for (size_t k = 0; k < tensors.size(); ++k) {
    const uint64_t nbytes = static_cast<uint64_t>(tensors[k].numel()) * esize;
    if (s.shard_bytes > 0 && !shards.back().empty() && shard_fill + nbytes > s.shard_bytes) {
      shards.emplace_back();
      shard_fill = 0;
    }
    shards.back().push_back(k);
    shard_fill += nbytes;
    total_bytes += nbytes;
  }

  if (!is_directory(dir) && ::mkdir(dir.c_str(), 0755) != 0)
    fail_io("cannot create directory {}: {}", dir, std::strerror(errno));
  const std::string index_path = dir + "/model.safetensors.index.json";
  // A stale index would take precedence over the new model.safetensors when the directory is read.
  if (shards.size() == 1 && file_exists(index_path) && std::remove(index_path.c_str()) != 0)
    fail_io("cannot remove the stale {}: {}", index_path, std::strerror(errno));
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"producer", "ptq synth"}};
  std::vector<float> f32;
  std::vector<uint16_t> f16;  // F16 or BF16 bits
  nlohmann::json weight_map = nlohmann::json::object();
  Progress progress("synth", static_cast<int64_t>(tensors.size()), "tensors");
  size_t done = 0;
  for (size_t sh = 0; sh < shards.size(); ++sh) {
    const std::string file = shards.size() == 1 ? std::string("model.safetensors")
                                                : fmt::format("model-{:05d}-of-{:05d}.safetensors", sh + 1, shards.size());
    std::vector<SafetensorsStreamWriter::Entry> entries;
    for (size_t k : shards[sh]) entries.push_back({tensors[k].name, s.dtype, tensors[k].shape});
    SafetensorsStreamWriter writer(dir + "/" + file, entries, metadata);
    for (size_t k : shards[sh]) {
      const SyntheticTensor& st = tensors[k];
      progress.update(static_cast<int64_t>(done++), st.name);
      const size_t n = static_cast<size_t>(st.numel());
      if (s.dtype == DType::F32) {
        f32.resize(n);
        fill_tensor(st, s.seed, k, f32.data(), [](float v) { return v; });
        writer.write(st.name, f32.data(), n * 4);
      } else {
        f16.resize(n);
        if (s.dtype == DType::F16) fill_tensor(st, s.seed, k, f16.data(), [](float v) { return f32_to_fp16(v); });
        else fill_tensor(st, s.seed, k, f16.data(), [](float v) { return f32_to_bf16(v); });
        writer.write(st.name, f16.data(), n * 2);
      }
      weight_map[st.name] = file;
    }
    writer.commit();
  }
  progress.finish();
  if (shards.size() > 1)
    write_text_file_atomic(index_path, nlohmann::json{{"metadata", {{"total_size", total_bytes}}},
                                                      {"weight_map", weight_map}}.dump(2) + "\n");
  write_text_file_atomic(dir + "/config.json", cfg_text);
}

}  // namespace ptq
