// GGUF input: the bundled stories260K came from stories260K.gguf; converting the GGUF must reproduce the
// Hugging Face directory's logits and tokenizer exactly.
#include <catch2/catch.hpp>

#include <sstream>

#include <ATen/ATen.h>

#include "core/file.h"
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
