#include "eval/perplexity.h"

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>

#include "core/error.h"
#include "core/progress.h"
#include "eval/kl_divergence.h"
#include "model/model.h"

namespace ptq {

int64_t default_seqlen(const Model& model) { return std::min<int64_t>(2048, model.config().max_positions); }

PerplexityResult evaluate_perplexity(Model& model, const std::vector<int32_t>& ids, const PerplexityOptions& opts,
                                     const std::string& progress_label, Model* kl_reference) {
  PerplexityResult r;
  r.seqlen = opts.seqlen > 0 ? opts.seqlen : default_seqlen(model);
  if (r.seqlen < 2) fail_input("--seqlen must be at least 2, got {}", r.seqlen);
  if (r.seqlen > model.config().max_positions)
    fail_input("--seqlen {} exceeds the model's context length {}", r.seqlen, model.config().max_positions);
  r.tokens = static_cast<int64_t>(ids.size());
  r.windows = r.tokens / r.seqlen;
  if (opts.max_windows > 0) r.windows = std::min(r.windows, opts.max_windows);
  if (r.windows == 0)
    fail_input("the text has {} tokens, fewer than one window of --seqlen {}", r.tokens, r.seqlen);
  const int64_t batch = std::max<int64_t>(1, opts.batch);
  if (kl_reference && kl_reference->config().vocab != model.config().vocab)
    fail_input("KL reference {} has a vocabulary of {} tokens but {} has {}; KL divergence needs the same vocabulary "
               "and tokenizer", kl_reference->path(), kl_reference->config().vocab, model.path(), model.config().vocab);
  if (kl_reference && r.seqlen > kl_reference->config().max_positions)
    fail_input("--seqlen {} exceeds the KL reference {}'s context length {}", r.seqlen, kl_reference->path(),
               kl_reference->config().max_positions);

  const double t0 = now_seconds();
  Progress progress(progress_label, r.windows * r.seqlen, "tok");
  double total_nll = 0, total_ref_nll = 0, total_kl = 0;
  at::NoGradGuard no_grad;
  for (int64_t w0 = 0; w0 < r.windows; w0 += batch) {
    const int64_t nb = std::min(batch, r.windows - w0);
    at::Tensor x = at::empty({nb, r.seqlen}, at::kLong);
    auto* px = x.data_ptr<int64_t>();
    std::copy(ids.begin() + w0 * r.seqlen, ids.begin() + (w0 + nb) * r.seqlen, px);
    at::Tensor logits = model.forward(x);  // [nb, seqlen, vocab]
    at::Tensor logp = at::log_softmax(logits.narrow(1, 0, r.seqlen - 1), -1);
    at::Tensor target = x.narrow(1, 1, r.seqlen - 1).unsqueeze(-1);
    // Sum in double: hundreds of thousands of terms.
    // A NaN or +Inf anywhere in a scored row spreads through its log-softmax into this sum, so checking the sum finds
    // it without another pass over the logits. Without it, a damaged weight or an overflow gives "ppl nan", exit 0.
    auto batch_nll = [&](const Model& m, const at::Tensor& lp) {
      const double nll = -lp.gather(-1, target).to(at::kDouble).sum().item<double>();
      if (!std::isfinite(nll))
        fail_input("{}: the logits of window {} (tokens {}..{}) are not finite (NaN or Inf): a weight, scale or "
                   "activation overflowed; `ptq inspect` the model", m.path(), w0 + 1, w0 * r.seqlen,
                   (w0 + nb) * r.seqlen - 1);
      return nll;
    };
    total_nll += batch_nll(model, logp);
    if (kl_reference) {
      const at::Tensor ref_logits = kl_reference->forward(x).narrow(1, 0, r.seqlen - 1);
      if (ref_logits.size(-1) != logits.size(-1))
        fail_input("KL reference {} produces {} logits per token but {} produces {}; KL divergence needs the same "
                   "vocabulary", kl_reference->path(), ref_logits.size(-1), model.path(), logits.size(-1));
      total_ref_nll += batch_nll(*kl_reference, at::log_softmax(ref_logits, -1));
      total_kl += kl_divergence_sum(ref_logits, logits.narrow(1, 0, r.seqlen - 1));
    }
    progress.update((w0 + nb) * r.seqlen);
  }
  progress.finish();
  r.predicted = r.windows * (r.seqlen - 1);
  r.nll = total_nll / static_cast<double>(r.predicted);
  r.ppl = std::exp(r.nll);
  if (kl_reference) {
    r.has_reference = true;
    r.mean_kl = total_kl / static_cast<double>(r.predicted);
    r.reference_nll = total_ref_nll / static_cast<double>(r.predicted);
    r.reference_ppl = std::exp(r.reference_nll);
  }
  r.seconds = now_seconds() - t0;
  return r;
}

}  // namespace ptq
