// Zero-shot task evaluation: adapters against hand-written fixtures, scores against a plain full forward.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include "eval/tasks.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "tests/test_paths.h"

using namespace ptq;
using Catch::Matchers::Contains;

namespace {

// Scores differ from an independent computation by fp32 round-off only: the library runs the context
// through a KV cache and the continuations in padded batches, the reference runs one full causal forward,
// and BLAS may order a row's sums differently for another row count. Measured on these models: at most
// 7e-7 per nat of score, against the reference and between batch sizes 1, 3 and 8. 1e-5 per nat (floored at
// 1 nat) leaves a 15x margin while a wrong token, position or context costs far more than 0.01 nats.
double score_tolerance(double ref) { return 1e-5 * std::max(1.0, std::fabs(ref)); }

struct Reference {
  double logprob = 0;
  bool greedy = true;
  bool truncated = false;
};

// The protocol, recomputed independently of the library: trailing spaces of the context move to the
// continuation, context ids = tok(context), continuation ids = tok(context + continuation) past them, the
// sequence context ++ continuation keeps its last (context length + 1) tokens, and one full forward
// without a cache scores the continuation tokens.
Reference reference_score(Model& model, const Tokenizer& tok, std::string context, std::string continuation) {
  at::NoGradGuard no_grad;
  while (!context.empty() && context.back() == ' ') {
    context.pop_back();
    continuation.insert(0, " ");
  }
  const std::vector<int32_t> ctx = tok.encode(context), whole = tok.encode(context + continuation);
  REQUIRE(whole.size() > ctx.size());
  std::vector<int32_t> seq = ctx;
  seq.insert(seq.end(), whole.begin() + ctx.size(), whole.end());
  const int64_t n_cont = static_cast<int64_t>(whole.size() - ctx.size());
  const int64_t max_len = model.config().max_positions;
  Reference r;
  if (static_cast<int64_t>(seq.size()) > max_len + 1) {
    seq.erase(seq.begin(), seq.end() - (max_len + 1));
    r.truncated = true;
  }
  const int64_t T = static_cast<int64_t>(seq.size()) - 1;
  at::Tensor x = at::empty({1, T}, at::kLong);
  for (int64_t i = 0; i < T; ++i) x[0][i] = seq[i];
  at::Tensor logp = at::log_softmax(model.forward(x), -1)[0];  // [T, vocab]
  for (int64_t j = 0; j < n_cont; ++j) {
    const int64_t pos = T - n_cont + j;  // predicts seq[pos + 1]
    const int32_t target = seq[pos + 1];
    r.logprob += logp[pos][target].item<double>();
    r.greedy = r.greedy && logp[pos].argmax().item<int64_t>() == target;
  }
  return r;
}

int64_t argmax(const std::vector<double>& v) { return std::max_element(v.begin(), v.end()) - v.begin(); }

struct Expected {
  std::vector<std::string> contexts;  // what the adapter must produce, written by hand
  std::vector<std::string> continuations;
  std::vector<int64_t> norm_chars;  // counted by hand
  int64_t label;
};

// Checks the adapter's strings against hand-written ones, then every per-choice score and the predictions
// against the reference forward.
void check_task(Model& model, const Tokenizer& tok, const Task& task, const std::vector<Expected>& expected) {
  REQUIRE(task.items.size() == expected.size());
  const TaskResult res = evaluate_task(model, tok, task, TaskOptions{});
  REQUIRE(res.n == static_cast<int64_t>(expected.size()));
  int64_t correct = 0, correct_norm = 0, greedy = 0;
  double target = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    const Expected& e = expected[i];
    const TaskItem& item = task.items[i];
    const ItemScores& s = res.items[i];
    CAPTURE(i, item.id);
    REQUIRE(item.label == e.label);
    REQUIRE(item.choices() == e.continuations.size());
    std::vector<double> ref(item.choices()), ref_norm(item.choices());
    for (size_t c = 0; c < item.choices(); ++c) {
      const std::string& ctx = e.contexts.size() == 1 ? e.contexts[0] : e.contexts[c];
      CAPTURE(c, ctx, e.continuations[c]);
      CHECK(item.context(c) == ctx);
      CHECK(item.continuations[c] == e.continuations[c]);
      CHECK(norm_length(item.continuations[c]) == e.norm_chars[c]);
      const Reference r = reference_score(model, tok, ctx, e.continuations[c]);
      CHECK(s.logprob[c] == Approx(r.logprob).margin(score_tolerance(r.logprob)));
      CHECK(s.greedy[c] == r.greedy);
      ref[c] = r.logprob;
      ref_norm[c] = r.logprob / double(e.norm_chars[c]);
      if (task.kind == TaskKind::Cloze) {
        greedy += r.greedy;
        target += r.logprob;
      }
    }
    CHECK(s.pred == argmax(ref));
    CHECK(s.pred_norm == argmax(ref_norm));
    correct += argmax(ref) == e.label;
    correct_norm += argmax(ref_norm) == e.label;
  }
  const double n = double(expected.size());
  if (task.kind == TaskKind::Cloze) {
    CHECK(res.acc == greedy / n);
    CHECK(res.target_logprob == Approx(target / n).margin(score_tolerance(target / n)));
  } else {
    CHECK(res.acc == correct / n);
    CHECK(res.acc_norm == correct_norm / n);
  }
}

struct Stories {
  Model model{test::repo_path("data/models/stories260K")};
  std::unique_ptr<Tokenizer> tok = load_tokenizer(test::repo_path("data/models/stories260K"));
};

std::string fixture(const std::string& name) { return test::repo_path("tests/fixtures/tasks/" + name); }

}  // namespace

TEST_CASE("a two-choice item scores as the forward pass's log-probabilities", "[tasks]") {
  Stories m;
  // Single-token choices: each score is one entry of log_softmax over the logits after the context.
  const std::string context = "Once upon a time, there was a";
  const std::vector<int32_t> ctx = m.tok->encode(context);
  const std::vector<int32_t> little = m.tok->encode(context + " little"), big = m.tok->encode(context + " big");
  REQUIRE(std::equal(ctx.begin(), ctx.end(), little.begin()));
  REQUIRE(std::equal(ctx.begin(), ctx.end(), big.begin()));
  REQUIRE(little.size() == ctx.size() + 1);  // " little" and " big" are pieces of this vocabulary
  REQUIRE(big.size() == ctx.size() + 1);
  at::Tensor x = at::empty({1, int64_t(ctx.size())}, at::kLong);
  for (size_t i = 0; i < ctx.size(); ++i) x[0][i] = ctx[i];
  at::Tensor last = at::log_softmax(m.model.forward(x)[0][-1], -1);
  const double lp_little = last[little.back()].item<double>(), lp_big = last[big.back()].item<double>();

  const Task task = parse_task(
      R"({"id": "hand", "context": "Once upon a time, there was a", "choices": [" little", " big"], "label": 0})",
      "hand.jsonl");
  const TaskResult r = evaluate_task(m.model, *m.tok, task, TaskOptions{});
  CHECK(r.items[0].tokens == std::vector<int64_t>{1, 1});
  REQUIRE(r.items[0].logprob[0] == Approx(lp_little).margin(score_tolerance(lp_little)));
  REQUIRE(r.items[0].logprob[1] == Approx(lp_big).margin(score_tolerance(lp_big)));
  CHECK(r.acc == (lp_little > lp_big ? 1.0 : 0.0));
  CHECK(r.acc_stderr == 0.0);
  // acc_norm divides by 6 and 3 characters.
  CHECK(r.acc_norm == (lp_little / 6 > lp_big / 3 ? 1.0 : 0.0));
  CHECK(r.items[0].greedy[0] == (last.argmax().item<int64_t>() == little.back()));
}

TEST_CASE("the request split moves trailing whitespace and splits on the whole text's tokens", "[tasks]") {
  Stories m;
  const EncodedRequest a = encode_request(*m.tok, "Lily went to the ", "park.");
  const EncodedRequest b = encode_request(*m.tok, "Lily went to the", " park.");
  CHECK(a.context == b.context);
  CHECK(a.continuation == b.continuation);
  CHECK(a.context == m.tok->encode("Lily went to the"));
  const std::vector<int32_t> whole = m.tok->encode("Lily went to the park.");
  CHECK(a.continuation == std::vector<int32_t>(whole.begin() + a.context.size(), whole.end()));
  CHECK(a.context.front() == m.tok->bos_id());  // the config asks for BOS
}

TEST_CASE("acc_norm divides by characters and can disagree with acc", "[tasks]") {
  CHECK(norm_length(" girl") == 4);
  CHECK(norm_length("girl") == 4);
  CHECK(norm_length(" \xE2\x80\x9CHi\xE2\x80\x9D") == 4);  // “Hi”: code points, not bytes
  CHECK(norm_length("  a") == 2);                          // only one leading space is the delimiter

  Stories m;
  // A short continuation with a higher total log-likelihood, and a long, predictable one whose
  // log-likelihood per character is higher: acc picks the first, acc_norm the second.
  const std::string context = "Once upon a time, there was a little girl named Lily. She loved to";
  const std::string short_choice = " play", long_choice = " play outside in the park with her friends.";
  const Task task = parse_task(R"({"id": "norm", "context": "Once upon a time, there was a little girl named Lily. )"
                               R"(She loved to", "choices": [" play", " play outside in the park with her friends."], )"
                               R"("label": 1})",
                               "norm.jsonl");
  const TaskResult r = evaluate_task(m.model, *m.tok, task, TaskOptions{});
  const double lp_short = reference_score(m.model, *m.tok, context, short_choice).logprob;
  const double lp_long = reference_score(m.model, *m.tok, context, long_choice).logprob;
  REQUIRE(lp_short > lp_long);
  REQUIRE(lp_short / 4 < lp_long / 42);  // 4 and 42 characters, counted by hand
  CHECK(r.items[0].pred == 0);
  CHECK(r.items[0].pred_norm == 1);
  CHECK(r.acc == 0.0);
  CHECK(r.acc_norm == 1.0);
}

TEST_CASE("adapters map each public schema to the harness's requests", "[tasks]") {
  Stories m;
  SECTION("generic") {
    const Task t = load_task(fixture("generic.jsonl"));
    CHECK(t.format == TaskFormat::Generic);
    CHECK(t.name == "generic");
    CHECK(t.items[1].line == 3);  // the blank line 2 is skipped
    check_task(m.model, *m.tok, t,
               {{{"Once upon a time, there was a little"}, {" girl", " sky"}, {4, 3}, 0},
                {{"Lily went to the "}, {"park.", "moon."}, {5, 5}, 0}});
  }
  SECTION("cloze") {
    const Task t = load_task(fixture("cloze.jsonl"));
    CHECK(t.format == TaskFormat::Cloze);
    CHECK(t.kind == TaskKind::Cloze);
    check_task(m.model, *m.tok, t,
               {{{"One day, Lily went to the"}, {" park"}, {4}, 0},
                {{"Tom saw a big dog. The dog was very"}, {" friendly"}, {8}, 0}});
  }
  SECTION("piqa") {
    const Task t = load_task(fixture("piqa.jsonl"));
    CHECK(t.format == TaskFormat::Piqa);
    check_task(m.model, *m.tok, t,
               {{{"Question: How do you make a ball bounce?\nAnswer:"},
                 {" Drop it on the floor.", " Put it in the bed."},
                 {21, 18},
                 0},
                {{"Question: Lily wants to stay dry in the rain.\nAnswer:"},
                 {" She takes off her coat.", " She takes an umbrella."},
                 {23, 22},
                 1}});
  }
  SECTION("arc") {
    const Task t = load_task(fixture("arc.jsonl"));
    CHECK(t.format == TaskFormat::Arc);
    CHECK(t.items[0].id == "arc-1");
    check_task(m.model, *m.tok, t,
               {{{"Question: What does a cat say?\nAnswer:"}, {" Woof", " Meow", " Moo"}, {4, 4, 3}, 1},
                {{"Question: Where do fish live?\nAnswer:"},
                 {" In the water", " In a tree", " In the sky", " In a car"},
                 {12, 9, 10, 8},
                 0}});
  }
  SECTION("hellaswag") {
    const Task t = load_task(fixture("hellaswag.jsonl"));
    CHECK(t.format == TaskFormat::Hellaswag);
    CHECK(t.items[0].id == "7");
    check_task(m.model, *m.tok, t,
               {{{"Playing with a ball: A little girl runs in the park. She kicks the red ball"},
                 {" and it rolls far away.", " and the ball flies into the sky.", " and she eats her lunch."},
                 {22, 32, 23},
                 0},
                {{"Making a cake: How to make a cake. Get a big bowl."},
                 {" Put the eggs in the bowl.", " Put the bowl on your head."},
                 {25, 26},
                 0}});
  }
  SECTION("winogrande") {
    const Task t = load_task(fixture("winogrande.jsonl"));
    CHECK(t.format == TaskFormat::Winogrande);
    check_task(m.model, *m.tok, t,
               {{{"Lily gave the ball to Tom because Lily", "Lily gave the ball to Tom because Tom"},
                 {" wanted to play with it.", " wanted to play with it."},
                 {23, 23},
                 1},
                {{"The cat was scared of the dog, so the cat", "The cat was scared of the dog, so the dog"},
                 {" ran up the tree.", " ran up the tree."},
                 {16, 16},
                 0}});
  }
  SECTION("lambada") {
    const Task t = load_task(fixture("lambada.jsonl"));
    CHECK(t.format == TaskFormat::Lambada);
    CHECK(t.kind == TaskKind::Cloze);
    check_task(m.model, *m.tok, t,
               {{{"Tom had a red ball. He liked to play with his"}, {" ball"}, {4}, 0},
                {{"Once upon a time, there was a little girl named"}, {" Lily"}, {4}, 0}});
  }
}

TEST_CASE("an explicit --format that does not fit names the line and the missing field", "[tasks]") {
  REQUIRE_THROWS_AS(load_task(fixture("piqa.jsonl"), TaskFormat::Arc), std::invalid_argument);
  REQUIRE_THROWS_WITH(load_task(fixture("piqa.jsonl"), TaskFormat::Arc),
                      Contains("piqa.jsonl:1") && Contains("\"question\" missing"));
  REQUIRE_THROWS_WITH(parse_task_format("mmlu"), Contains("unknown task format \"mmlu\"") && Contains("hellaswag"));
  REQUIRE_THROWS_WITH(parse_task(R"({"foo": 1})", "odd.jsonl"), Contains("odd.jsonl:1") && Contains("--format"));
}

TEST_CASE("a malformed JSONL line is an error naming the file and line", "[tasks]") {
  const std::string dir = test::make_temp_dir("tasks");
  const std::string path = dir + "/broken.jsonl";
  {
    std::ofstream f(path);
    f << R"({"id": "a", "context": "x", "choices": [" a", " b"], "label": 0})" << "\n"
      << R"({"id": "b", "context": "x", "choices": [" a", " b"], "label": 0)" << "\n";  // missing '}'
  }
  REQUIRE_THROWS_AS(load_task(path), std::invalid_argument);
  REQUIRE_THROWS_WITH(load_task(path), Contains(path + ":2: not valid JSON"));
  // --limit stops before the broken line.
  CHECK(load_task(path, TaskFormat::Auto, 1).items.size() == 1);
  std::remove(path.c_str());
  std::remove(dir.c_str());

  REQUIRE_THROWS_WITH(parse_task("[1, 2]\n", "arr.jsonl"), Contains("arr.jsonl:1: expected a JSON object"));
  REQUIRE_THROWS_WITH(parse_task("\n\n", "empty.jsonl"), Contains("empty.jsonl: no items"));
  REQUIRE_THROWS_WITH(parse_task(R"({"context": "x", "choices": [" a", 3], "label": 0})", "t.jsonl"),
                      Contains("t.jsonl:1") && Contains("\"choices\" must be a non-empty array of strings"));
  REQUIRE_THROWS_WITH(parse_task(R"({"context": "x", "choices": [" a", " "], "label": 0})", "t.jsonl"),
                      Contains("t.jsonl:1: choice 1") && Contains("is empty"));
}

TEST_CASE("a label out of range is an error", "[tasks]") {
  REQUIRE_THROWS_AS(parse_task(R"({"context": "x", "choices": [" a", " b"], "label": 2})", "g.jsonl"),
                    std::invalid_argument);
  REQUIRE_THROWS_WITH(parse_task("\n" R"({"context": "x", "choices": [" a", " b"], "label": 2})", "g.jsonl"),
                      Contains("g.jsonl:2: label 2 out of range for 2 choices"));
  REQUIRE_THROWS_WITH(parse_task(R"({"context": "x", "choices": [" a", " b"], "label": -1})", "g.jsonl"),
                      Contains("label -1 out of range"));
  REQUIRE_THROWS_WITH(parse_task(R"({"goal": "g", "sol1": "a", "sol2": "b", "label": 5})", "p.jsonl"),
                      Contains("p.jsonl:1: label 5 out of range for 2 choices"));
  REQUIRE_THROWS_WITH(
      parse_task(R"({"question": "q", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "E"})",
                 "a.jsonl"),
      Contains("a.jsonl:1: answerKey \"E\" is not one of the choice labels [A, B]"));
  REQUIRE_THROWS_WITH(parse_task(R"({"sentence": "a _ b", "option1": "x", "option2": "y", "answer": "3"})", "w.jsonl"),
                      Contains("w.jsonl:1: answer 3 out of range"));
  REQUIRE_THROWS_WITH(parse_task(R"({"context": "x", "choices": [" a", " b"], "label": "one"})", "g.jsonl"),
                      Contains("g.jsonl:1: field \"label\"") && Contains("expected an integer"));
}

TEST_CASE("results do not depend on the batch size", "[tasks]") {
  Stories m;
  // 4 choices per item: batch 3 splits every item's continuations into two forward calls.
  const Task task = load_task(test::repo_path("data/tasks/tinystories-continuation.jsonl"), TaskFormat::Auto, 25);
  const TaskResult b1 = evaluate_task(m.model, *m.tok, task, TaskOptions{1});
  const TaskResult b3 = evaluate_task(m.model, *m.tok, task, TaskOptions{3});
  const TaskResult b8 = evaluate_task(m.model, *m.tok, task, TaskOptions{8});
  for (const TaskResult* r : {&b3, &b8}) {
    CHECK(r->acc == b1.acc);
    CHECK(r->acc_norm == b1.acc_norm);
    for (size_t i = 0; i < b1.items.size(); ++i) {
      CHECK(r->items[i].pred == b1.items[i].pred);
      CHECK(r->items[i].pred_norm == b1.items[i].pred_norm);
      CHECK(r->items[i].greedy == b1.items[i].greedy);
      for (size_t c = 0; c < b1.items[i].logprob.size(); ++c) {
        const double ref = b1.items[i].logprob[c];
        CHECK(r->items[i].logprob[c] == Approx(ref).margin(score_tolerance(ref)));
      }
    }
  }
}

TEST_CASE("a long context is left-truncated to the context length, the continuation kept whole", "[tasks]") {
  Stories m;
  std::string context;
  for (int i = 0; i < 80; ++i) context += "Lily and Tom played with the red ball in the park. ";
  context += "Then Lily said";
  const Task task = parse_task(R"({"context": ")" + context +
                                   R"(", "choices": [" goodbye to Tom.", " that she was hungry."], "label": 0})",
                               "long.jsonl");
  REQUIRE(m.tok->encode(context).size() > 600);  // well past the 512-token context
  const TaskResult r = evaluate_task(m.model, *m.tok, task, TaskOptions{});
  CHECK(r.truncated == 1);
  CHECK(r.items[0].truncated);
  for (size_t c = 0; c < 2; ++c) {
    const Reference ref = reference_score(m.model, *m.tok, context, task.items[0].continuations[c]);
    REQUIRE(ref.truncated);
    CHECK(r.items[0].logprob[c] == Approx(ref.logprob).margin(score_tolerance(ref.logprob)));
  }

  std::string huge;
  for (int i = 0; i < 300; ++i) huge += " ball";
  const Task too_long =
      parse_task(R"({"context": "Lily", "choices": [")" + huge + R"(", " cat"], "label": 0})", "huge.jsonl");
  REQUIRE_THROWS_WITH(evaluate_task(m.model, *m.tok, too_long, TaskOptions{}),
                      Contains("huge.jsonl:1: choice 0 is") && Contains("more than the model's context length 512"));
}

TEST_CASE("accuracy standard error is sqrt(p(1-p)/n)", "[tasks]") {
  CHECK(accuracy_stderr(0.25, 12) == Approx(std::sqrt(0.25 * 0.75 / 12)));
  CHECK(accuracy_stderr(0.0, 10) == 0.0);
  CHECK(accuracy_stderr(1.0, 10) == 0.0);
}

// Acceptance: data/models/sotu-llama-8m/README.md gives n=131 acc 0.2214 acc_norm 0.1832 from an independent
// implementation; as counts that is 29 and 24 of 131, which must match exactly.
TEST_CASE("sotu-llama-8m reproduces the reference sotu-continuation accuracy", "[tasks][acceptance]") {
  const std::string dir = test::repo_path("data/models/sotu-llama-8m");
  Model model(dir);
  auto tok = load_tokenizer(dir);
  const Task task = load_task(test::repo_path("data/tasks/sotu-continuation.jsonl"));
  const TaskResult r = evaluate_task(model, *tok, task, TaskOptions{});
  REQUIRE(r.n == 131);
  CHECK(std::lround(r.acc * r.n) == 29);
  CHECK(std::lround(r.acc_norm * r.n) == 24);
  CHECK(r.acc_stderr == Approx(std::sqrt(29.0 / 131 * (102.0 / 131) / 131)));
  CHECK(r.acc_norm_stderr == Approx(std::sqrt(24.0 / 131 * (107.0 / 131) / 131)));
}
