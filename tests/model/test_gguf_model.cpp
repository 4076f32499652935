// GGUF input: the bundled stories260K came from stories260K.gguf; converting the GGUF must reproduce the
// Hugging Face directory's logits and tokenizer exactly.
#include <catch2/catch.hpp>

#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "core/file.h"
#include "io/gguf.h"
#include "model/gguf_model.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "tests/test_paths.h"

using namespace ptq;

TEST_CASE("GGUF input: stories260K.gguf gives the HF directory's logits and token ids", "[gguf_model]") {
  const std::string gguf = test::repo_path("data/models/stories260K/stories260K.gguf");
  const std::string hf = test::repo_path("data/models/stories260K");
  REQUIRE(is_gguf_file(gguf));
  CHECK_FALSE(is_gguf_file(hf + "/config.json"));
  const std::string out = test::make_temp_dir("gguf_in") + "/model";
  gguf_to_hf_dir(gguf, out);

  auto tok_hf = load_tokenizer(hf);
  auto tok_gguf = load_tokenizer(out);
  std::istringstream in(read_text_file(test::repo_path("data/tinystories-valid.txt")));
  std::string line;
  size_t lines = 0, differ = 0;
  while (lines < 500 && std::getline(in, line)) {
    ++lines;
    if (tok_hf->encode(line) != tok_gguf->encode(line)) ++differ;
  }
  for (const char* s : {"  two  spaces", "emoji 🙂 and é", ""})
    if (tok_hf->encode(s) != tok_gguf->encode(s)) ++differ;
  CHECK(differ == 0);

  // The GGUF holds F32 tensors and the HF directory was made from it: after undoing the q/k row permutation
  // the weights are the same numbers, so the logits must be bit-identical (no tolerance).
  Model a(hf), b(out);
  const std::vector<int32_t> ids = tok_hf->encode("Once upon a time, there was a little girl named Lily. She liked");
  at::Tensor t = at::tensor(std::vector<int64_t>(ids.begin(), ids.end()), at::kLong).unsqueeze(0);
  at::Tensor la = a.forward(t), lb = b.forward(t);
  CHECK(la.sizes() == lb.sizes());
  CHECK(at::equal(la, lb));
}

TEST_CASE("GGUF input: a non-GGUF file and an existing output are refused", "[gguf_model]") {
  const std::string dir = test::make_temp_dir("gguf_bad");
  write_text_file_atomic(dir + "/x.gguf", "GGUF but truncated");
  CHECK_THROWS_AS(gguf_to_hf_dir(dir + "/x.gguf", dir + "/out"), std::invalid_argument);
  CHECK_THROWS_WITH(gguf_to_hf_dir(test::repo_path("data/models/stories260K/stories260K.gguf"), dir),
                    Catch::Contains("exists"));
}

// Found by tests/fuzz (gguf_model): llama.block_count = 2^31 built 2^31 x 9 tensor names before any was looked up
// (a hang, then the memory limit).
TEST_CASE("GGUF input: a block count the file cannot hold is refused before anything is built", "[gguf_model]") {
  const std::string dir = test::make_temp_dir("gguf_blocks");
  GgufWriter w;
  w.set("general.architecture", GgufValue::string("llama"));
  w.set("llama.embedding_length", GgufValue::u32(8));
  w.set("llama.attention.head_count", GgufValue::u32(2));
  w.set("llama.block_count", GgufValue::u32(0x80000000u));
  w.add_tensor("token_embd.weight", {8, 4}, GgmlType::F32, [] { return std::vector<uint8_t>(8 * 4 * 4); });
  w.write(dir + "/m.gguf");
  CHECK_THROWS_WITH(gguf_to_hf_dir(dir + "/m.gguf", dir + "/out"),
                    Catch::Contains("m.gguf: llama.block_count 2147483648 does not fit the file") &&
                        Catch::Contains("the file holds 1"));
  CHECK_FALSE(file_exists(dir + "/out"));
}

// A SentencePiece model must have its unknown piece (tests/fuzz, sentencepiece: unk_id -1 made encode() emit id -1);
// a GGUF naming an unknown_token_id outside its vocabulary is refused at conversion, naming the key.
TEST_CASE("GGUF input: an unknown_token_id outside the vocabulary is refused by key", "[gguf_model]") {
  const std::string dir = test::make_temp_dir("gguf_unk");
  auto write = [&](uint32_t unk) {  // a 1-layer llama of width 8 with a 4-token vocabulary
    GgufWriter w;
    for (const auto& [key, v] : std::vector<std::pair<std::string, uint32_t>>{
             {"llama.embedding_length", 8}, {"llama.attention.head_count", 2}, {"llama.block_count", 1},
             {"llama.feed_forward_length", 8}, {"tokenizer.ggml.unknown_token_id", unk}})
      w.set(key, GgufValue::u32(v));
    w.set("general.architecture", GgufValue::string("llama"));
    w.set("llama.attention.layer_norm_rms_epsilon", GgufValue::f32(1e-5f));
    w.set("tokenizer.ggml.model", GgufValue::string("llama"));
    w.set("tokenizer.ggml.tokens", GgufValue::string_array({"<unk>", "<s>", "</s>", "\xE2\x96\x81" "a"}));
    w.set("tokenizer.ggml.scores", GgufValue::f32_array({0, 0, 0, -1}));
    w.set("tokenizer.ggml.token_type", GgufValue::i32_array({2, 3, 3, 1}));
    auto zeros = [](int64_t n) { return [n] { return std::vector<uint8_t>(static_cast<size_t>(n) * 4); }; };
    w.add_tensor("token_embd.weight", {8, 4}, GgmlType::F32, zeros(32));
    w.add_tensor("output_norm.weight", {8}, GgmlType::F32, zeros(8));
    for (const char* t : {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"})
      w.add_tensor(std::string("blk.0.") + t + ".weight", {8, 8}, GgmlType::F32, zeros(64));
    for (const char* t : {"attn_norm", "ffn_norm"})
      w.add_tensor(std::string("blk.0.") + t + ".weight", {8}, GgmlType::F32, zeros(8));
    const std::string path = dir + "/unk" + std::to_string(unk) + ".gguf";
    w.write(path);
    return path;
  };
  CHECK_NOTHROW(gguf_to_hf_dir(write(0), dir + "/ok"));
  CHECK(load_tokenizer(dir + "/ok")->encode("a", false) == std::vector<int32_t>{3});
  CHECK_THROWS_WITH(gguf_to_hf_dir(write(7), dir + "/out"),
                    Catch::Contains("unk7.gguf: tokenizer.ggml.unknown_token_id 7 is outside the 4 tokens"));
}
