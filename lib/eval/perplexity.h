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
  // With a KL reference: mean KL(P_ref || P_model) per predicted token (nats, eval/kl_divergence.h), and the
  // reference's own perplexity / mean NLL over the same windows.
  bool has_reference = false;
  double mean_kl = 0;
  double reference_ppl = 0;
  double reference_nll = 0;
};

int64_t default_seqlen(const Model& model);

// `ids` is the tokenized text (BOS as the tokenizer config says). Throws when the text is shorter than
// one window. `kl_reference` (e.g. the FP model), when given, runs on each window batch in lockstep with `model`
// (one batch of both models' logits in memory at a time); it must have the same vocabulary and read the same ids.
PerplexityResult evaluate_perplexity(Model& model, const std::vector<int32_t>& ids, const PerplexityOptions& opts,
                                     const std::string& progress_label = "ppl", Model* kl_reference = nullptr);

}  // namespace ptq
