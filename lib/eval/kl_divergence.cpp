#include "eval/kl_divergence.h"

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>

#include "core/error.h"

namespace ptq {

double kl_divergence_sum(const at::Tensor& ref_logits, const at::Tensor& logits) {
  if (ref_logits.sizes() != logits.sizes())
    fail_input("KL divergence: the reference logits have shape [{}] but the model's have [{}]; the two models must "
               "share the vocabulary", fmt::join(ref_logits.sizes(), ", "), fmt::join(logits.sizes(), ", "));
  const int64_t vocab = logits.size(-1);
  const at::Tensor ref2 = ref_logits.reshape({-1, vocab});
  const at::Tensor q2 = logits.reshape({-1, vocab});
  const int64_t rows = q2.size(0);
  // fp64 chunks of ~16 MB per tensor: an fp32 log-softmax loses ~1e-7 of each log-probability, which is the size of
  // the KL of a well-quantized model on a confident token.
  const int64_t chunk = std::max<int64_t>(1, (int64_t{2} << 20) / std::max<int64_t>(1, vocab));
  at::NoGradGuard no_grad;
  double total = 0;
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t n = std::min(chunk, rows - r0);
    const at::Tensor lp_ref = at::log_softmax(ref2.narrow(0, r0, n).to(at::kDouble), -1);
    const at::Tensor lp = at::log_softmax(q2.narrow(0, r0, n).to(at::kDouble), -1);
    // exp(lp_ref) underflows to 0 where p_ref < 1e-308; those terms are 0 in the limit p log p as well.
    total += (lp_ref.exp() * (lp_ref - lp)).sum().item<double>();
  }
  if (!std::isfinite(total))
    fail_input("KL divergence: the sum over {} rows is not finite (NaN or Inf in the logits)", rows);
  return total;
}

}  // namespace ptq
