// Text generation with the KV cache, and the prefill/decode throughput benchmark.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

namespace ptq {

class Model;

struct GenerateOptions {
  int64_t max_new_tokens = 64;
  double temperature = 0;  // 0: greedy (argmax)
  uint64_t seed = 0;
  bool stop_at_eos = true;
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids, prompt excluded
  double prefill_seconds = 0, decode_seconds = 0;
};

// Generates from `prompt` (non-empty). Stops at max_new_tokens, at EOS, or at the model's context length.
// `on_token` (optional) sees each id as it is produced.
GenerateResult generate(Model& model, const std::vector<int32_t>& prompt, const GenerateOptions& opts,
                        const std::function<void(int32_t)>& on_token = {});

struct BenchOptions {
  int64_t prompt_tokens = 128;
  int64_t gen_tokens = 128;
  int64_t repeats = 3;  // best of n, to damp noise from a shared machine
  uint64_t seed = 0;
};

struct BenchResult {
  int64_t prompt_tokens = 0, gen_tokens = 0;
  double prefill_tok_s = 0, decode_tok_s = 0;
  double peak_rss_mb = 0;
  int64_t weight_bytes = 0;    // weights a decode step reads (Model::packed_weight_bytes)
  int64_t kv_cache_bytes = 0;  // KV cache of prompt + generated tokens
};

// Prefill of random prompt tokens, then greedy decoding of gen_tokens one at a time with the KV cache.
BenchResult bench_model(Model& model, const BenchOptions& opts);

}  // namespace ptq
