// Perplexity protocol: the bundled models reproduce the reference figures in their READMEs
// (independent PyTorch implementation of the HF forward; data/models/*/README.md).
#include <catch2/catch.hpp>

#include <cmath>

#include "core/file.h"
#include "eval/perplexity.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "tests/test_paths.h"

using namespace ptq;

namespace {

struct Reference {
  const char* text;
  int64_t seqlen, max_windows;
  int64_t tokens, windows;
  double ppl;
  double unit;  // one unit of the last digit printed in the README
};

void check_reference(const std::string& model_dir, const Reference& r) {
  Model model(test::repo_path(model_dir));
  auto tok = load_tokenizer(test::repo_path(model_dir));
  const auto ids = tok->encode(read_text_file(test::repo_path(r.text)));
  PerplexityOptions opts;
  opts.seqlen = r.seqlen;
  opts.max_windows = r.max_windows;
  PerplexityResult got = evaluate_perplexity(model, ids, opts);
  INFO(model_dir << " on " << r.text << ": ppl " << got.ppl << " (reference " << r.ppl << ")");
  CHECK(got.tokens == r.tokens);
  CHECK(got.windows == r.windows);
  // The README prints the reference rounded to `unit`; one unit covers that rounding plus fp32
  // summation-order noise (observed |diff| < unit/2). The acceptance bound (0.5 %) is far looser.
  CHECK(std::abs(got.ppl - r.ppl) <= r.unit);
  CHECK(std::abs(got.ppl - r.ppl) / r.ppl < 0.005);
}

}  // namespace

TEST_CASE("stories260K reproduces its reference perplexities", "[ppl]") {
  const std::string m = "data/models/stories260K";
  check_reference(m, {"data/tinystories-valid.txt", 512, 20, 317564, 20, 4.0022, 1e-4});
  check_reference(m, {"data/tinystories-valid.txt", 256, 40, 317564, 40, 4.1069, 1e-4});
  check_reference(m, {"data/moby-dick.txt", 512, 50, 697655, 50, 57.555, 1e-3});
}

TEST_CASE("stories260K reproduces its reference perplexity on all 620 windows", "[ppl][slow]") {
  check_reference("data/models/stories260K", {"data/tinystories-valid.txt", 512, 0, 317564, 620, 4.9793, 1e-4});
}

TEST_CASE("sotu-llama-8m reproduces its reference perplexities", "[ppl][slow]") {
  const std::string m = "data/models/sotu-llama-8m";
  check_reference(m, {"data/sotu-test.txt", 256, 0, 147084, 574, 181.83, 1e-2});
  check_reference(m, {"data/moby-dick.txt", 256, 200, 398680, 200, 1164.8, 1e-1});
}

TEST_CASE("perplexity does not depend on the batch size", "[ppl]") {
  Model model(test::repo_path("data/models/stories260K"));
  auto ids = load_tokenizer(test::repo_path("data/models/stories260K"))
                 ->encode(read_text_file(test::repo_path("data/tinystories-valid.txt")));
  PerplexityOptions a, b;
  a.seqlen = b.seqlen = 128;
  a.max_windows = b.max_windows = 6;
  a.batch = 1;
  b.batch = 4;
  // Same windows, same math; only BLAS blocking over a different row count may differ: 1e-6 relative.
  CHECK(evaluate_perplexity(model, ids, a).ppl == Approx(evaluate_perplexity(model, ids, b).ppl).epsilon(1e-6));
}

TEST_CASE("perplexity refuses impossible settings", "[ppl]") {
  Model model(test::repo_path("data/models/stories260K"));
  std::vector<int32_t> ids(100, 5);
  PerplexityOptions o;
  o.seqlen = 1024;
  CHECK_THROWS_WITH(evaluate_perplexity(model, ids, o), Catch::Contains("exceeds the model's context length 512"));
  o.seqlen = 200;
  CHECK_THROWS_WITH(evaluate_perplexity(model, ids, o), Catch::Contains("fewer than one window"));
}
