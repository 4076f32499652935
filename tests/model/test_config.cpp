// lib/model config.json parsing: the bundled models, each family's keys, and refusals.
#include <catch2/catch.hpp>

#include <stdexcept>

#include "model/config.h"
#include "model/synthetic.h"
#include "tests/test_paths.h"

using namespace ptq;

namespace {
// The message parse_model_config refuses `text` with ("" when it is accepted).
std::string config_error(const std::string& text) {
  try {
    parse_model_config(text, "cfg.json");
  } catch (const std::invalid_argument& e) {
    return std::string(e.what());
  }
  return std::string();
}
}  // namespace

TEST_CASE("config of the bundled models", "[model]") {
  ModelConfig c = load_model_config(test::repo_path("data/models/sotu-llama-8m"));
  CHECK(c.arch == Arch::Llama);
  CHECK(c.hidden == 256);
  CHECK(c.n_layers == 6);
  CHECK(c.n_heads == 8);
  CHECK(c.n_kv_heads == 4);
  CHECK(c.head_dim == 32);
  CHECK(c.n_rep() == 2);
  CHECK(c.ffn == 768);
  CHECK(c.vocab == 8000);
  CHECK(c.max_positions == 256);
  CHECK(c.norm_eps == 1e-5);
  CHECK_FALSE(c.tie_embeddings);
  CHECK(c.layer_tensor(3, "self_attn.q_proj", "weight") == "model.layers.3.self_attn.q_proj.weight");
}

TEST_CASE("config: family-specific keys", "[model]") {
  SyntheticSpec s;
  s.arch = Arch::Qwen2;
  ModelConfig q = parse_model_config(synthetic_config_json(s), "qwen2");
  CHECK(q.qkv_bias);
  CHECK_FALSE(q.o_bias);
  s.arch = Arch::Opt;
  s.opt_pre_norm = false;
  ModelConfig o = parse_model_config(synthetic_config_json(s), "opt");
  CHECK(o.norm == NormKind::LayerNorm);
  CHECK(o.pos_offset == 2);
  CHECK_FALSE(o.use_rope);
  CHECK_FALSE(o.gated_mlp);
  CHECK_FALSE(o.pre_norm);
  CHECK_FALSE(o.final_norm);  // post-norm OPT (350m) has no final layer norm
  CHECK(o.layer_tensor(0, "fc1", "bias") == "model.decoder.layers.0.fc1.bias");
  const std::string mistral = R"({"model_type": "mistral", "hidden_size": 64, "num_hidden_layers": 1,
    "num_attention_heads": 4, "num_key_value_heads": 1, "vocab_size": 10, "max_position_embeddings": 64,
    "intermediate_size": 128, "sliding_window": 16})";
  CHECK(parse_model_config(mistral, "m").sliding_window == 16);
}

TEST_CASE("config: unsupported input is refused with the reason", "[model]") {
  const std::string base = R"("hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
    "vocab_size": 10, "max_position_embeddings": 64, "intermediate_size": 128)";
  CHECK_THAT(config_error(R"({"model_type": "gpt_neox", )" + base + "}"),
             Catch::Contains("\"gpt_neox\" is not supported") && Catch::Contains("llama, mistral, qwen2, opt"));
  CHECK_THAT(config_error(R"({"model_type": "llama", "rope_scaling": {"type": "llama3"}, )" + base + "}"),
             Catch::Contains("rope_scaling"));
  CHECK_THAT(config_error(R"({"model_type": "llama", "num_key_value_heads": 3, )" + base + "}"),
             Catch::Contains("not a multiple of num_key_value_heads 3"));
  CHECK_THAT(config_error(R"({"model_type": "llama", "hidden_size": -4})"), Catch::Contains("\"hidden_size\" must be a positive integer"));
  CHECK_THAT(config_error("{not json"), Catch::Contains("cfg.json: not valid JSON"));
}

// Found by tests/fuzz (config): each of these escaped as a nlohmann exception or a division by zero.
TEST_CASE("config: fuzz findings are refused with the key", "[model]") {
  const std::string base = R"("num_hidden_layers": 1, "vocab_size": 10, "max_position_embeddings": 64,
    "intermediate_size": 128)";
  const std::string llama = R"({"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, )" + base;
  CHECK_THAT(config_error(R"({"model_type": 172})"), Catch::Contains("cfg.json: \"model_type\" must be a string, found 172"));
  CHECK_THAT(config_error(R"({"model_type": "llama", "hidden_size": 88E8043})"),
             Catch::Contains("cfg.json: not valid JSON") && Catch::Contains("overflow"));
  CHECK_THAT(config_error(llama + R"(, "num_key_value_heads": 0})"),
             Catch::Contains("\"num_key_value_heads\" must be a positive integer, got 0"));
  CHECK_THAT(config_error(llama + R"(, "head_dim": -2})"), Catch::Contains("\"head_dim\" must be a positive integer, got -2"));
  // head_dim defaults to hidden_size / num_attention_heads, which is 0 here.
  CHECK_THAT(config_error(R"({"model_type": "llama", "hidden_size": 2, "num_attention_heads": 4, )" + base + "}"),
             Catch::Contains("\"head_dim\" must be a positive integer, got 0"));
}
