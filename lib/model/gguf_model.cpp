#include "model/gguf_model.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"
#include "core/temporaries.h"
#include "io/gguf.h"
#include "io/safetensors.h"

namespace ptq {

namespace {

namespace fs = std::filesystem;

// GGUF tensor name (after "blk.N.") -> Hugging Face name (after "model.layers.N.").
struct NameMap {
  const char* gguf;
  const char* hf;
};
const NameMap kLayerNames[] = {
    {"attn_q.weight", "self_attn.q_proj.weight"},       {"attn_k.weight", "self_attn.k_proj.weight"},
    {"attn_v.weight", "self_attn.v_proj.weight"},       {"attn_output.weight", "self_attn.o_proj.weight"},
    {"attn_norm.weight", "input_layernorm.weight"},     {"ffn_gate.weight", "mlp.gate_proj.weight"},
    {"ffn_up.weight", "mlp.up_proj.weight"},            {"ffn_down.weight", "mlp.down_proj.weight"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
};
const NameMap kGlobalNames[] = {
    {"token_embd.weight", "model.embed_tokens.weight"},
    {"output_norm.weight", "model.norm.weight"},
    {"output.weight", "lm_head.weight"},
};

// ---- protobuf writer, just enough for a SentencePiece ModelProto (see lib/model/sentencepiece.cpp) ----
void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7F) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
}
void put_key(std::string& out, uint32_t field, uint32_t wire) { put_varint(out, (uint64_t(field) << 3) | wire); }
void put_bytes(std::string& out, uint32_t field, const std::string& s) {
  put_key(out, field, 2);
  put_varint(out, s.size());
  out += s;
}
void put_uint(std::string& out, uint32_t field, uint64_t v) {
  put_key(out, field, 0);
  put_varint(out, v);
}
void put_float(std::string& out, uint32_t field, float f) {
  put_key(out, field, 5);
  char b[4];
  std::memcpy(b, &f, 4);
  out.append(b, 4);
}

int64_t opt_int(const GgufFile& g, const std::string& key, int64_t fallback) {
  return g.has(key) ? g.get_int(key) : fallback;
}
bool opt_bool(const GgufFile& g, const std::string& key, bool fallback) { return g.has(key) ? g.get_bool(key) : fallback; }

// tokenizer.ggml.* (SentencePiece vocabulary) -> tokenizer.model bytes. llama.cpp's SPM tokenizer adds the
// dummy prefix (tokenizer.ggml.add_space_prefix, default true) and keeps repeated spaces; token types share
// SentencePiece's numbering (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte).
std::string sentencepiece_proto(const GgufFile& g) {
  const auto& tokens = g.get_string_array("tokenizer.ggml.tokens");
  const auto& scores = g.get_float_array("tokenizer.ggml.scores");
  const auto& types = g.get_int_array("tokenizer.ggml.token_type");
  if (scores.size() != tokens.size() || types.size() != tokens.size())
    fail_input("{}: tokenizer.ggml.tokens/scores/token_type have {}/{}/{} entries; expected equal counts", g.path(),
               tokens.size(), scores.size(), types.size());
  std::string model;
  bool has_bytes = false;
  for (size_t i = 0; i < tokens.size(); ++i) {
    std::string piece;
    put_bytes(piece, 1, tokens[i]);
    put_float(piece, 2, static_cast<float>(scores[i]));
    put_uint(piece, 3, static_cast<uint64_t>(types[i]));
    put_bytes(model, 1, piece);
    has_bytes |= types[i] == 6;
  }
  auto id = [&](const char* key, int64_t fallback) {
    const int64_t v = opt_int(g, key, fallback);
    return v < 0 || v >= static_cast<int64_t>(tokens.size()) ? uint64_t(-1) : uint64_t(v);  // -1: none
  };
  std::string trainer;
  put_uint(trainer, 3, 2);  // model_type BPE
  put_uint(trainer, 35, has_bytes ? 1 : 0);
  // SentencePiece emits the unknown piece for characters it has no piece for: it must exist (bos/eos may be none).
  const int64_t unk = opt_int(g, "tokenizer.ggml.unknown_token_id", 0);
  if (unk < 0 || unk >= static_cast<int64_t>(tokens.size()))
    fail_input("{}: tokenizer.ggml.unknown_token_id {} is outside the {} tokens", g.path(), unk, tokens.size());
  put_uint(trainer, 40, static_cast<uint64_t>(unk));
  put_uint(trainer, 41, id("tokenizer.ggml.bos_token_id", 1));
  put_uint(trainer, 42, id("tokenizer.ggml.eos_token_id", 2));
  put_bytes(model, 2, trainer);
  std::string norm;
  put_bytes(norm, 1, "identity");
  put_uint(norm, 3, opt_bool(g, "tokenizer.ggml.add_space_prefix", true) ? 1 : 0);
  put_uint(norm, 4, 0);  // remove_extra_whitespaces
  put_uint(norm, 5, 1);  // escape_whitespaces
  put_bytes(model, 3, norm);
  return model;
}

}  // namespace

bool is_gguf_file(const std::string& path) {
  if (!file_exists(path) || is_directory(path)) return false;
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  in.read(magic, 4);
  return in.gcount() == 4 && std::memcmp(magic, "GGUF", 4) == 0;
}

std::string resolve_model_path(const std::string& path) {
  if (is_gguf_file(path)) return gguf_model_dir(path);
  if (file_exists(path))  // not a directory, and not GGUF: say so rather than "no config.json"
    fail_input("{} is a file but not a GGUF file (no \"GGUF\" magic); a MODEL is a Hugging Face model directory or a "
               "llama.cpp .gguf file", path);
  return path;
}

void gguf_to_hf_dir(const std::string& gguf_path, const std::string& out_dir) {
  GgufFile g(gguf_path);
  const std::string arch = g.get_string("general.architecture");
  if (arch != "llama") fail_input("{}: architecture \"{}\" is not supported as input (llama only)", gguf_path, arch);
  for (const auto& kv : g.kvs())
    if (kv.key.rfind("llama.rope.scaling", 0) == 0)
      fail_input("{}: {} is set; rope scaling is not supported", gguf_path, kv.key);
  const int64_t hidden = static_cast<int64_t>(g.get_uint("llama.embedding_length"));
  const int64_t heads = static_cast<int64_t>(g.get_uint("llama.attention.head_count"));
  const int64_t kv_heads = g.has("llama.attention.head_count_kv") ? static_cast<int64_t>(g.get_uint("llama.attention.head_count_kv")) : heads;
  // Each block has its tensors in the file: a count the file cannot hold is refused before names are built for it.
  const uint64_t block_count = g.get_uint("llama.block_count");
  if (block_count == 0) fail_input("{}: llama.block_count is 0 (a model needs at least one block)", gguf_path);
  if (block_count > g.tensors().size() / std::size(kLayerNames))
    fail_input("{}: llama.block_count {} does not fit the file: each block has {} tensors and the file holds {}",
               gguf_path, block_count, std::size(kLayerNames), g.tensors().size());
  const int64_t layers = static_cast<int64_t>(block_count);
  if (heads <= 0 || hidden % heads != 0)
    fail_input("{}: embedding_length {} is not a multiple of head_count {}", gguf_path, hidden, heads);
  const int64_t head_dim = hidden / heads;
  if (g.has("llama.rope.dimension_count") && static_cast<int64_t>(g.get_uint("llama.rope.dimension_count")) != head_dim)
    fail_input("{}: llama.rope.dimension_count {} != head_dim {}: partial RoPE is not supported", gguf_path,
               g.get_uint("llama.rope.dimension_count"), head_dim);
  const GgufTensorInfo& embd = g.tensor("token_embd.weight");
  if (embd.dims.size() != 2) fail_input("{}: token_embd.weight has {} dims; expected 2", gguf_path, embd.dims.size());
  const int64_t vocab = embd.dims[1];
  const bool tied = g.find_tensor("output.weight") == nullptr;

  if (fs::exists(out_dir)) fail_input("{}: output directory exists", out_dir);
  fs::create_directories(out_dir);

  // GGUF stores the epsilon as f32; its shortest decimal form ("1e-05") is what HF configs carry.
  const float eps = static_cast<float>(g.get_float("llama.attention.layer_norm_rms_epsilon"));
  nlohmann::json cfg = {{"architectures", {"LlamaForCausalLM"}},
                        {"model_type", "llama"},
                        {"hidden_size", hidden},
                        {"intermediate_size", g.get_uint("llama.feed_forward_length")},
                        {"num_hidden_layers", layers},
                        {"num_attention_heads", heads},
                        {"num_key_value_heads", kv_heads},
                        {"vocab_size", vocab},
                        {"max_position_embeddings", opt_int(g, "llama.context_length", 2048)},
                        {"rms_norm_eps", std::stod(fmt::format("{}", eps))},
                        {"rope_theta", g.has("llama.rope.freq_base") ? static_cast<double>(static_cast<float>(g.get_float("llama.rope.freq_base"))) : 10000.0},
                        {"hidden_act", "silu"},
                        {"tie_word_embeddings", tied},
                        {"bos_token_id", opt_int(g, "tokenizer.ggml.bos_token_id", 1)},
                        {"eos_token_id", opt_int(g, "tokenizer.ggml.eos_token_id", 2)},
                        {"torch_dtype", "float32"},
                        {"attention_bias", false},
                        {"ptq_source", fs::absolute(gguf_path).string()}};
  write_text_file_atomic(out_dir + "/config.json", cfg.dump(2));

  // Tensors: name mapping table, shapes [out, in] = GGUF dims reversed.
  std::vector<std::pair<std::string, std::string>> names;  // gguf -> hf
  for (const auto& m : kGlobalNames)
    if (g.find_tensor(m.gguf)) names.emplace_back(m.gguf, m.hf);
  for (int64_t l = 0; l < layers; ++l)
    for (const auto& m : kLayerNames)
      names.emplace_back(fmt::format("blk.{}.{}", l, m.gguf), fmt::format("model.layers.{}.{}", l, m.hf));
  std::vector<SafetensorsStreamWriter::Entry> entries;
  for (const auto& [gname, hname] : names) {
    const GgufTensorInfo& t = g.tensor(gname);
    std::vector<int64_t> shape(t.dims.rbegin(), t.dims.rend());
    entries.push_back({hname, DType::F32, shape});
  }
  if (g.tensors().size() != names.size() + (g.find_tensor("rope_freqs.weight") ? 1 : 0))
    fail_input("{}: {} tensors, of which {} are llama tensors ptq maps; the rest would be ignored", gguf_path,
               g.tensors().size(), names.size());
  SafetensorsStreamWriter writer(out_dir + "/model.safetensors", entries, {{"format", "pt"}});
  for (const auto& [gname, hname] : names) {
    std::vector<float> w = g.tensor_f32(gname);
    if (is_qk_tensor(gname)) {
      const GgufTensorInfo& t = g.tensor(gname);
      const int64_t cols = t.dims[0], rows = t.dims[1], nh = gname.find(".attn_q.") != std::string::npos ? heads : kv_heads;
      if (rows != nh * head_dim) fail_input("{}: {} has {} rows; expected {} heads x {}", gguf_path, gname, rows, nh, head_dim);
      std::vector<float> hf(w.size());
      for (int64_t r = 0; r < rows; ++r)
        std::memcpy(&hf[r * cols], &w[gguf_qk_row(r, head_dim) * cols], cols * sizeof(float));
      w.swap(hf);
    }
    writer.write(hname, w.data(), w.size() * sizeof(float));
  }
  writer.commit();

  const std::string tok_model = g.has("tokenizer.ggml.model") ? g.get_string("tokenizer.ggml.model") : "";
  if (tok_model != "llama")
    fail_input("{}: embedded tokenizer \"{}\" is not supported (SentencePiece \"llama\" only)", gguf_path, tok_model);
  write_text_file_atomic(out_dir + "/tokenizer.model", sentencepiece_proto(g));
  const auto& tokens = g.get_string_array("tokenizer.ggml.tokens");
  auto tok = [&](const char* key, int64_t fallback) {
    const int64_t v = opt_int(g, key, fallback);
    return v >= 0 && v < static_cast<int64_t>(tokens.size()) ? nlohmann::json(tokens[v]) : nlohmann::json(nullptr);
  };
  nlohmann::json tcfg = {{"tokenizer_class", "LlamaTokenizer"},
                         {"add_bos_token", opt_bool(g, "tokenizer.ggml.add_bos_token", true)},
                         {"add_eos_token", opt_bool(g, "tokenizer.ggml.add_eos_token", false)},
                         {"bos_token", tok("tokenizer.ggml.bos_token_id", 1)},
                         {"eos_token", tok("tokenizer.ggml.eos_token_id", 2)},
                         {"unk_token", tok("tokenizer.ggml.unknown_token_id", 0)}};
  write_text_file_atomic(out_dir + "/tokenizer_config.json", tcfg.dump(2));
}

namespace {

std::string cache_root() {
  if (const char* c = std::getenv("PTQ_CACHE_DIR"); c && *c) return c;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::string(x) + "/ptq";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/ptq";
  return (fs::temp_directory_path() / "ptq-cache").string();
}

// sha256 of the file's content. Hashing a multi-GB file takes seconds, so the digest is remembered per file identity:
// device, inode, size, and modification and status-change times in nanoseconds. An edit in place changes ctime even
// when it keeps the size and restores mtime (utimensat sets ctime to now), so it is hashed again.
std::string gguf_content_sha256(const std::string& gguf_path, const std::string& root) {
  struct stat st {};
  if (stat(gguf_path.c_str(), &st) != 0) fail_io("{}: cannot stat: {}", gguf_path, std::strerror(errno));
  const std::string identity = fmt::format("{}:{}:{}:{}.{:09}:{}.{:09}", st.st_dev, st.st_ino, st.st_size,
                                           st.st_mtim.tv_sec, st.st_mtim.tv_nsec, st.st_ctim.tv_sec, st.st_ctim.tv_nsec);
  const std::string abs = fs::absolute(gguf_path).lexically_normal().string();
  const std::string index = root + "/gguf-index-" + sha256_hex(abs.data(), abs.size()).substr(0, 16) + ".json";
  if (file_exists(index)) {
    try {
      const nlohmann::json j = nlohmann::json::parse(read_text_file(index));
      if (j.value("identity", "") == identity && j.value("sha256", "").size() == 64) return j["sha256"];
    } catch (const std::exception&) {  // a damaged index entry is rebuilt
    }
  }
  const std::string sha = sha256_file(gguf_path);
  fs::create_directories(root);
  write_text_file_atomic(index, nlohmann::json{{"path", abs}, {"identity", identity}, {"sha256", sha}}.dump() + "\n");
  return sha;
}

}  // namespace

std::string gguf_model_dir(const std::string& gguf_path) {
  const std::string root = cache_root();
  const std::string dir = root + "/gguf-" + gguf_content_sha256(gguf_path, root).substr(0, 32);
  if (file_exists(dir + "/tokenizer_config.json")) return dir;  // written last: the conversion completed
  // Convert next to the final place, then rename, so a crash never leaves a half directory behind; an interrupted
  // conversion's temporary is removed by the signal handler or, after SIGKILL, by the next conversion.
  std::fprintf(stderr, "note: converting %s to an F32 Hugging Face directory, once: %s\n", gguf_path.c_str(), dir.c_str());
  fs::create_directories(root);
  ScopedTemporary tmp(dir, ScopedTemporary::Kind::Directory);  // removed on failure, on SIGINT, or by a later run
  fs::remove_all(tmp.path());
  gguf_to_hf_dir(gguf_path, tmp.path());
  std::error_code ec;
  fs::rename(tmp.path(), dir, ec);
  if (ec) {  // another process may have finished the same conversion first: then its directory serves
    if (!file_exists(dir + "/tokenizer_config.json")) fail_io("{}: cannot create ({})", dir, ec.message());
  } else {
    tmp.release();
  }
  return dir;
}

int64_t gguf_qk_row(int64_t hf_row, int64_t head_dim) {
  const int64_t h = hf_row / head_dim, r = hf_row % head_dim, half = head_dim / 2;
  return h * head_dim + 2 * (r % half) + r / half;
}

bool is_qk_tensor(const std::string& gguf_name) {
  return gguf_name.find(".attn_q.") != std::string::npos || gguf_name.find(".attn_k.") != std::string::npos;
}

std::string gguf_name_of(const std::string& hf) {
  for (const auto& m : kGlobalNames)
    if (hf == m.hf) return m.gguf;
  const std::string pfx = "model.layers.";
  if (hf.compare(0, pfx.size(), pfx) != 0) return "";
  const size_t dot = hf.find('.', pfx.size());
  if (dot == std::string::npos) return "";
  const std::string layer = hf.substr(pfx.size(), dot - pfx.size()), rest = hf.substr(dot + 1);
  for (const auto& m : kLayerNames)
    if (rest == m.hf) return "blk." + layer + "." + m.gguf;
  return "";
}

namespace {

// GGUF names of the seven linear modules, in LinearId order.
constexpr const char* kGgufLinearNames[kNumLinear] = {"attn_q",   "attn_k", "attn_v",  "attn_output",
                                                      "ffn_gate", "ffn_up", "ffn_down"};

}  // namespace

std::string gguf_linear_tensor_name(int64_t layer, LinearId id) {
  return fmt::format("blk.{}.{}.weight", layer, kGgufLinearNames[static_cast<int>(id)]);
}

GgufMixModel gguf_mix_model(const ModelConfig& cfg) {
  GgufMixModel m;
  m.n_layers = cfg.n_layers;
  m.n_gqa = cfg.n_kv_heads > 0 ? cfg.n_heads / cfg.n_kv_heads : 1;
  m.tied = cfg.tie_embeddings;
  m.is_70b = cfg.n_layers == 80 && cfg.n_heads != cfg.n_kv_heads;
  return m;
}

}  // namespace ptq
