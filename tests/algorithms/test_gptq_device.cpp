// GPTQ on a device (algorithms/gptq.h's gptq_quantize_on, ptq quantize --device cuda), run on the CUDA ops' host
// emulation (kernels/gptq_ops.h: the kernels' per-thread code on the CPU; tests/kernels/test_cuda_gptq.cpp tests the
// CUDA ops against it bit for bit on a device). Against the double-precision reference gptq_ref and the CPU path, with
// the bounds of test_gptq.cpp's "agrees with the unblocked double-precision reference"; the Hessian accumulated by
// the device ops against the CPU accumulator; damping, dead columns and the refusals.
#include <catch2/catch.hpp>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "algorithms/algorithm.h"
#include "algorithms/gptq.h"
#include "kernels/cuda/device.h"
#include "kernels/gptq_ops.h"
#include "quant/hessian.h"
#include "tests/algorithms/gptq_problem.h"

using namespace ptq;
using namespace ptq::test;

namespace {

LinearQuantResult on_emulation(const LinearQuantRequest& rq) {
  return gptq_quantize_on(*kernels::cuda_gptq_host_emulation(), rq);
}

}  // namespace

TEST_CASE("GPTQ on a device (host emulation) agrees with the double-precision reference and the CPU path",
          "[gptq][gptq-device]") {
  // On the device's blocks (gptq_device_block): groups of 96 lie inside blocks of 96, groups of 144 each start one
  // of its blocks of 72, groups of 32 fill blocks of 128, a per-channel grid is computed at column 0 over all 288.
  const Problem p = make_problem(32, 288, 1536, 3);
  for (const auto& c : reference_cases()) {
    const LinearQuantResult dev = on_emulation(request(p, c.spec, c.opt));
    const LinearQuantResult ref = gptq_ref(request(p, c.spec, c.opt));
    const LinearQuantResult cpu = gptq_quantize(request(p, c.spec, c.opt));
    const double agree_ref = code_agreement(dev.weight, ref.weight), agree_cpu = code_agreement(dev.weight, cpu.weight);
    const double err_dev = output_error(p, dev.weight), err_ref = output_error(p, ref.weight);
    INFO("bits " << c.spec.bits << " group " << c.spec.group_size << " act_order " << c.opt.act_order << " static "
                 << c.opt.static_groups << " mse " << c.spec.mse << ": codes agree " << agree_ref << " (reference), "
                 << agree_cpu << " (CPU path); loss " << *dev.loss << " vs " << *ref.loss << ", output error "
                 << err_dev << " vs " << err_ref);
    CHECK(dev.weight.g_idx.equal(ref.weight.g_idx));
    CHECK(dev.weight.q.sizes() == ref.weight.q.sizes());
    CHECK(dev.weight.scales.sizes() == ref.weight.scales.sizes());
    // The device path's U is computed in double (rounded once to fp32), its sweep in fp32 as the CPU path's: the
    // bounds of the CPU path against the reference (test_gptq.cpp) hold for the same reasons. Measured on this seed:
    // every code agrees with both, losses to 3e-5 relative.
    CHECK(agree_ref >= 0.99);
    CHECK(agree_cpu >= 0.99);
    CHECK(*dev.loss == Approx(*ref.loss).epsilon(0.02));
    CHECK(err_dev == Approx(err_ref).epsilon(0.02));
    const at::Tensor scale_close = (dev.weight.scales - ref.weight.scales).abs() <= 1e-3 * ref.weight.scales;
    CHECK(scale_close.to(at::kDouble).mean().item<double>() >= 0.99);
  }
}

TEST_CASE("GPTQ on a device raises the damping when the factorisation fails, and refuses a broken Hessian",
          "[gptq][gptq-device]") {
  const at::Tensor h = at::tensor({1.0f, 1.001f, 1.001f, 1.0f}).reshape({2, 2});  // eigenvalues 2.001, -0.001
  const Problem p{at::Tensor(), at::randn({8, 2}), h};
  const LinearQuantResult r = on_emulation(request(p, {4, kPerChannel, false, false}, {0.0, false, false, 128}));
  CHECK_THAT(r.warning, Catch::Contains("up_proj") && Catch::Contains("percdamp 0;") &&
                            Catch::Contains("used percdamp 0.01"));
  CHECK(at::isfinite(dequantize(r.weight)).all().item<bool>());
  const at::Tensor bad = at::tensor({1.0f, 50.0f, 50.0f, 1.0f}).reshape({2, 2});  // eigenvalue -49
  const Problem q{at::Tensor(), at::randn({4, 2}), bad};
  CHECK_THROWS_WITH(on_emulation(request(q, {4, kPerChannel, false, false})),
                    Catch::Contains("up_proj") && Catch::Contains("not positive definite"));
}

TEST_CASE("GPTQ on a device zeroes a dead input column", "[gptq][gptq-device]") {
  const int64_t dead = 37;
  const Problem p = make_problem(16, 96, 512, 7, dead);
  for (bool act_order : {false, true}) {
    const LinearQuantResult r = on_emulation(request(p, {4, 32, false, false}, {0.01, act_order, false, 128}));
    CHECK(dequantize(r.weight).select(1, dead).eq(0).all().item<bool>());
  }
}

TEST_CASE("HessianAccumulator on device ops equals the CPU accumulator", "[gptq][gptq-device]") {
  at::manual_seed(5);
  const int64_t in = 70;
  HessianAccumulator cpu(in, "q_proj"), dev(in, "q_proj", kernels::cuda_gptq_host_emulation());
  double bound = 0;  // Σ over the batches of |2/n xᵀx| element bounds, for the tolerance
  at::Tensor abs_sum = at::zeros({in, in}, at::kDouble);
  for (int64_t tokens : {33, 64, 5}) {
    const at::Tensor x = at::randn({2, tokens, in});
    cpu.add(x);
    dev.add(x);
    const at::Tensor xd = x.reshape({-1, in}).to(at::kDouble).abs();
    abs_sum = abs_sum * (double(cpu.samples() - 2) / double(cpu.samples())) + xd.t().mm(xd) * (2.0 / cpu.samples());
    bound = std::max(bound, double(2 * tokens));
  }
  REQUIRE(dev.samples() == cpu.samples());
  // Both sum the same products in fp32, in different orders and scalings: each side within ~(terms + 4) u of the
  // exact value, relative to the sum of |terms| (terms ≤ 2 · 64 per batch; the decays add a rounding each).
  const at::Tensor diff = (dev.hessian().to(at::kDouble) - cpu.hessian().to(at::kDouble)).abs();
  CHECK((diff <= abs_sum * 2 * (bound + 8) * std::ldexp(1.0, -24)).all().item<bool>());
  CHECK_FALSE(dev.hessian().equal(at::zeros({in, in})));
  CHECK_THROWS_WITH(dev.add(at::randn({4, in + 1})), Catch::Contains("q_proj"));
}

TEST_CASE("GPTQ with device cuda: GGUF grids refused, and without a device it says why", "[gptq][gptq-device]") {
  const Problem p = make_problem(8, 64, 256, 9);
  GptqOptions opt;
  opt.device = GptqDevice::Cuda;
  CHECK_THROWS_WITH(gptq_ggml_quantize(request(p, {4, 32, true, false}, opt), GgmlType::Q4_0),
                    Catch::Contains("up_proj") && Catch::Contains("CPU only"));
  if (kernels::cuda::device_count() > 0) {
    SUCCEED("a CUDA device is present");
    return;
  }
  CHECK_THROWS_WITH(gptq_quantize(request(p, {4, 32, true, false}, opt)),
                    Catch::Contains(kernels::cuda::unavailable_reason()));
  CHECK(gptq_ops(GptqDevice::Cpu) == nullptr);
}
