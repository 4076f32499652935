// The GPTQ tests' problems: correlated calibration inputs, their Hessian, a weight, and the measures the tests compare.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

#include "algorithms/algorithm.h"
#include "quant/hessian.h"
#include "quant/quantizer.h"

namespace ptq::test {

struct Problem {
  at::Tensor x;  // [tokens, in] calibration inputs
  at::Tensor w;  // [out, in]
  at::Tensor h;  // [in, in] from HessianAccumulator
};

// Correlated inputs, as a transformer's are: 16 latent factors mixed into every channel plus independent
// noise, with per-channel scales spread over e^(+-1) so act-order has an order to find. Fed to the accumulator
// as sequences of 64 tokens.
inline Problem make_problem(int64_t out, int64_t in, int64_t tokens, uint64_t seed, int64_t dead_column = -1) {
  at::manual_seed(seed);
  at::Tensor x = (at::randn({tokens, 16}).mm(at::randn({16, in})) + at::randn({tokens, in})) *
                 at::exp(0.5 * at::randn({1, in}));
  if (dead_column >= 0) x.select(1, dead_column).zero_();
  HessianAccumulator acc(in, "test");
  for (int64_t t = 0; t < tokens; t += 64) acc.add(x.slice(0, t, std::min(t + 64, tokens)));
  return {x, 0.1 * at::randn({out, in}), acc.hessian()};
}

inline LinearQuantRequest request(const Problem& p, WeightQuantSpec spec, GptqOptions opt = {}) {
  return {"layers.0.mlp.up_proj", p.w, p.h, spec, opt};
}

// ||X W^T - X W_hat^T||^2, the quantity GPTQ minimises (up to the damping term).
inline double output_error(const Problem& p, const QuantizedWeight& qw) {
  return (p.x.to(at::kDouble).mm((dequantize(qw) - p.w).t().to(at::kDouble))).square().sum().item<double>();
}

// The configurations the tests compare against gptq_ref on make_problem(32, 288, 1536, 3): with the CPU path's
// B = 128, blocks [0,128) [128,256) [256,288), and groups of 96 and 144 that start inside blocks and run past their
// ends (the pending lazy update in the group grids); every grid kind, act-order, static groups, the clip search.
struct ReferenceCase {
  WeightQuantSpec spec;
  GptqOptions opt;
};
inline std::vector<ReferenceCase> reference_cases() {
  return {
      {{4, kPerChannel, false, false}, {}},
      {{4, 96, true, false}, {}},
      {{4, 32, false, false}, {0.01, true, false, 128}},
      {{3, 96, true, false}, {0.01, true, true, 128}},
      {{4, 96, false, true}, {0.01, false, false, 64}},
      {{4, 144, false, false}, {0.01, true, false, 128}},
      {{8, kPerTensor, true, false}, {}},
      {{2, 32, false, false}, {0.01, false, false, 5}},
  };
}

inline double code_agreement(const QuantizedWeight& a, const QuantizedWeight& b) {
  return a.q.eq(b.q).to(at::kDouble).mean().item<double>();
}

}  // namespace ptq::test
