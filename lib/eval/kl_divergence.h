// KL divergence between two next-token distributions given as logits (llama.cpp's --kl-divergence definition).
#pragma once

#include <ATen/core/Tensor.h>

namespace ptq {

// Σ over rows of KL(P_ref || P) = Σ_v p_ref(v) · (log p_ref(v) − log p(v)), natural log, where
// P_ref = softmax(ref_logits) and P = softmax(logits) along the last dimension. Both tensors are [..., vocab] of the
// same shape (any float dtype); every row is one predicted token. The log-softmax and the sums run in fp64, a few
// hundred rows at a time, so memory stays bounded by one chunk. Identical logits give exactly 0. Divide by the row
// count for the mean per token. Throws when the shapes differ or a row is not finite.
double kl_divergence_sum(const at::Tensor& ref_logits, const at::Tensor& logits);

}  // namespace ptq
