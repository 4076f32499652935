// Perplexity with the GPTQ/SmoothQuant protocol: one tokenization, non-overlapping windows, every
// next-token prediction inside each window scored, ppl = exp(Σ NLL / Σ predicted tokens).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ptq {

class Model;

struct PerplexityOptions {
  int64_t seqlen = 0;       // 0: min(2048, model context)
  int64_t max_windows = 0;  // 0: all windows
  int64_t batch = 8;        // windows per forward call; does not change the result beyond fp32 round-off
};

struct PerplexityResult {
  double ppl = 0;
  double nll = 0;  // mean negative log-likelihood per predicted token (nats)
  int64_t tokens = 0;     // tokens in the whole tokenized text
  int64_t predicted = 0;  // predictions scored = windows * (seqlen - 1)
  int64_t windows = 0;
  int64_t seqlen = 0;
  double seconds = 0;
};

int64_t default_seqlen(const Model& model);

// `ids` is the tokenized text (BOS as the tokenizer config says). Throws when the text is shorter than
// one window.
PerplexityResult evaluate_perplexity(Model& model, const std::vector<int32_t>& ids, const PerplexityOptions& opts,
                                     const std::string& progress_label = "ppl");

}  // namespace ptq
