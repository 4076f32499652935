#include "runtime/generate.h"

#include <algorithm>
#include <random>

#include <ATen/ATen.h>

#include "core/error.h"
#include "core/progress.h"
#include "model/model.h"

namespace ptq {

namespace {

int32_t pick_token(const at::Tensor& logits, double temperature, std::mt19937_64& rng) {
  if (temperature <= 0) return static_cast<int32_t>(logits.argmax().item<int64_t>());
  at::Tensor p = at::softmax(logits.to(at::kDouble) / temperature, -1).contiguous();
  const double* pp = p.data_ptr<double>();
  std::uniform_real_distribution<double> u(0.0, 1.0);
  double r = u(rng), acc = 0;
  const int64_t n = p.numel();
  for (int64_t i = 0; i < n; ++i) {
    acc += pp[i];
    if (r < acc) return static_cast<int32_t>(i);
  }
  return static_cast<int32_t>(n - 1);
}

at::Tensor ids_tensor(const std::vector<int32_t>& ids) {
  at::Tensor t = at::empty({1, static_cast<int64_t>(ids.size())}, at::kLong);
  std::copy(ids.begin(), ids.end(), t.data_ptr<int64_t>());
  return t;
}

}  // namespace

GenerateResult generate(Model& model, const std::vector<int32_t>& prompt, const GenerateOptions& opts,
                        const std::function<void(int32_t)>& on_token) {
  if (prompt.empty()) fail_input("generate: the prompt encodes to no tokens");
  const int64_t ctx = model.config().max_positions;
  if (static_cast<int64_t>(prompt.size()) >= ctx)
    fail_input("generate: prompt of {} tokens fills the model's context of {}", prompt.size(), ctx);
  at::NoGradGuard no_grad;
  std::mt19937_64 rng(opts.seed);
  const int64_t capacity = std::min<int64_t>(ctx, static_cast<int64_t>(prompt.size()) + opts.max_new_tokens);
  KVCache cache = model.new_cache(1, capacity);
  GenerateResult r;
  double t0 = now_seconds();
  at::Tensor logits = model.forward_last(ids_tensor(prompt), &cache);
  r.prefill_seconds = now_seconds() - t0;
  t0 = now_seconds();
  while (static_cast<int64_t>(r.tokens.size()) < opts.max_new_tokens) {
    int32_t next = pick_token(logits[0][logits.size(1) - 1], opts.temperature, rng);
    r.tokens.push_back(next);
    if (on_token) on_token(next);
    if (opts.stop_at_eos && next == model.config().eos_id) break;
    // The last token needs no forward (bench divides the decode time by the forwards it ran: tokens - 1).
    if (static_cast<int64_t>(r.tokens.size()) >= opts.max_new_tokens || cache.length >= cache.capacity) break;
    logits = model.forward(ids_tensor({next}), &cache);
  }
  r.decode_seconds = now_seconds() - t0;
  return r;
}

BenchResult bench_model(Model& model, const BenchOptions& opts) {
  const int64_t ctx = model.config().max_positions;
  if (opts.prompt_tokens < 1 || opts.gen_tokens < 1) fail_input("bench: --prompt and --gen must be at least 1");
  if (opts.prompt_tokens + opts.gen_tokens > ctx)
    fail_input("bench: --prompt {} + --gen {} exceed the model's context length {}", opts.prompt_tokens,
               opts.gen_tokens, ctx);
  std::mt19937_64 rng(opts.seed);
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(model.config().vocab - 1));
  std::vector<int32_t> prompt(opts.prompt_tokens);
  for (auto& t : prompt) t = tok(rng);
  GenerateOptions g;
  g.max_new_tokens = opts.gen_tokens;
  g.stop_at_eos = false;
  BenchResult r;
  r.prompt_tokens = opts.prompt_tokens;
  r.gen_tokens = opts.gen_tokens;
  Progress progress("bench", std::max<int64_t>(1, opts.repeats));
  for (int64_t i = 0; i < std::max<int64_t>(1, opts.repeats); ++i) {
    GenerateResult gr = generate(model, prompt, g);
    r.prefill_tok_s = std::max(r.prefill_tok_s, opts.prompt_tokens / gr.prefill_seconds);
    // The first generated token comes from the prefill logits; the others each cost one decode step.
    const double steps = static_cast<double>(gr.tokens.size() - 1);
    if (steps > 0) r.decode_tok_s = std::max(r.decode_tok_s, steps / gr.decode_seconds);
    progress.update(i + 1);
  }
  r.peak_rss_mb = peak_rss_mb();
  r.weight_bytes = model.packed_weight_bytes();
  r.kv_cache_bytes = model.new_cache(1, opts.prompt_tokens + opts.gen_tokens).bytes();  // what generate() held
  return r;
}

}  // namespace ptq
