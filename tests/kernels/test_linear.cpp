// The linear kernels (lib/kernels/linear.h) on every instruction set this CPU has, against an independent
// double-precision evaluation of the unpacked definition and against linear_ref.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "core/half.h"
#include "kernels/linear.h"

using namespace ptq::kernels;

namespace {

struct QuantCase {
  int64_t n, k, groups;
  int bits;
  bool sym, act_order;
};

struct QuantData {
  std::vector<uint8_t> q;
  std::vector<float> scales;
  std::vector<int32_t> zeros, g_idx;
};

QuantData make_quant(const QuantCase& c, std::mt19937& rng) {
  QuantData d;
  const int max_code = (1 << c.bits) - 1;
  std::uniform_int_distribution<int> code(0, max_code), zero(0, max_code);
  std::uniform_real_distribution<float> scale(0.01f, 0.2f);
  d.q.resize(c.n * c.k);
  for (auto& v : d.q) v = uint8_t(code(rng));
  d.scales.resize(c.n * c.groups);
  d.zeros.resize(c.n * c.groups);
  for (int64_t i = 0; i < c.n * c.groups; ++i) {
    d.scales[i] = ptq::fp16_to_f32(ptq::f32_to_fp16(scale(rng)));  // checkpoints hold fp16 steps
    d.zeros[i] = c.sym ? 1 << (c.bits - 1) : zero(rng);
  }
  const int64_t g = c.k / c.groups;
  d.g_idx.resize(c.k);
  for (int64_t i = 0; i < c.k; ++i) d.g_idx[i] = int32_t(i / g);
  if (c.act_order) std::shuffle(d.g_idx.begin(), d.g_idx.end(), rng);  // GPTQ act-order: equal-sized groups
  return d;
}

std::vector<float> random_x(int64_t m, int64_t k, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(m * k);
  for (auto& v : x) v = nd(rng);
  return x;
}

// Error budget of an fp32 kernel. The kernels sum k products in 16 lanes (k/16 terms each), then reduce the
// lanes and the groups; quantized rows are evaluated as s·Σx·q − offset·Σx, whose terms are bounded by
// Σ|x|·(s·|q| + |offset|) rather than by Σ|x·w|. Recursive fp32 summation of L terms errs by at most
// L·u·Σ|terms| (u = 2^-24); L = k/16 + 16 + groups + 2 covers lanes, reduction and groups; x4 for the products
// and conversions.
double budget(int64_t k, int64_t groups, double abs_terms) {
  return 4.0 * (double(k) / 16 + 16 + double(groups) + 2) * std::ldexp(1.0, -24) * abs_terms + 1e-30;
}

void check_quant_case(const QuantCase& c, uint32_t seed) {
  std::mt19937 rng(seed);
  const QuantData d = make_quant(c, rng);
  const PackedWeights w = pack_quantized(d.q.data(), c.n, c.k, c.bits, c.groups, d.scales.data(),
                                         c.sym ? nullptr : d.zeros.data(), c.act_order ? d.g_idx.data() : nullptr, "t");
  for (int64_t m : {1, 2, 3, 4, 5, 9}) {
    const std::vector<float> x = random_x(m, c.k, rng);
    std::vector<float> bias(c.n);
    for (int64_t r = 0; r < c.n; ++r) bias[r] = 0.5f * float(r % 3);
    // Independent: the definition w = scale[g] * (q - zero[g]), g = g_idx[column], in double.
    std::vector<double> expect(m * c.n), bound(m * c.n);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t r = 0; r < c.n; ++r) {
        double acc = bias[r], abs_terms = 0;
        for (int64_t col = 0; col < c.k; ++col) {
          const int64_t g = d.g_idx[col];
          const double s = d.scales[r * c.groups + g], z = d.zeros[r * c.groups + g];
          const double xv = x[i * c.k + col], q = d.q[r * c.k + col];
          acc += xv * s * (q - z);
          abs_terms += std::abs(xv) * (s * q + s * z);
        }
        expect[i * c.n + r] = acc;
        bound[i * c.n + r] = budget(c.k, c.groups, abs_terms + std::abs(bias[r]));
      }
    std::vector<Isa> isas = {Isa::Ref};
    for (Isa isa : {Isa::Avx2, Isa::Avx512})
      if (int(isa) <= int(detected_isa())) isas.push_back(isa);
    for (Isa isa : isas) {
      std::vector<float> y(m * c.n, NAN);
      linear_isa(isa, w, x.data(), m, y.data(), bias.data());
      for (int64_t e = 0; e < m * c.n; ++e) {
        INFO("isa " << isa_name(isa) << " bits " << c.bits << " n " << c.n << " k " << c.k << " groups " << c.groups
                    << " sym " << c.sym << " act_order " << c.act_order << " m " << m << " element " << e);
        REQUIRE(std::abs(double(y[e]) - expect[e]) <= bound[e]);
      }
    }
  }
}

}  // namespace

TEST_CASE("quantized linear equals the dequantized definition on every ISA, odd sizes", "[kernels]") {
  uint32_t seed = 1;
  for (int bits = 2; bits <= 8; ++bits)
    for (bool sym : {true, false}) {
      // k not a multiple of the 16/32/64-code blocks; groups of 16 and 48 columns; per-channel; act-order.
      check_quant_case({37, 48, 3, bits, sym, false}, seed++);   // g16
      check_quant_case({5, 96, 2, bits, sym, true}, seed++);     // g48, act-order
      check_quant_case({19, 37, 1, bits, sym, false}, seed++);   // per-channel, k = 37
      check_quant_case({17, 200, 25, bits, sym, false}, seed++); // g8: not a vector multiple, runs on linear_ref
      check_quant_case({33, 384, 3, bits, sym, true}, seed++);   // g128, act-order
    }
}

TEST_CASE("int8-activation linear (Q8_0 dot) equals its reference, and x̂ is x rounded per 32-block", "[kernels]") {
  uint32_t seed = 100;
  for (int bits = 2; bits <= 8; ++bits)
    for (bool sym : {true, false})
      // 64 / 2 groups: one 32-column group per block (contiguous block scales); 224 / 7: the same with 7 blocks (a
      // whole 4 plus 3, or 3 whole pairs plus 1, in the AVX-512 VNNI kernel's steps); 96 and 40 / 1 group: a
      // padded row; 384 / 3 act-order: groups of 4 blocks through g_idx. 640 / 5 and 300 / 1: more blocks than one
      // panel of the AVX-512 VNNI tile GEMM (8), the last panel partial, 35 rows = two whole 16-row tiles and 3.
      for (const QuantCase& c : {QuantCase{37, 64, 2, bits, sym, false}, QuantCase{11, 96, 1, bits, sym, false},
                                 QuantCase{21, 40, 1, bits, sym, false}, QuantCase{9, 384, 3, bits, sym, true},
                                 QuantCase{13, 224, 7, bits, sym, false}, QuantCase{35, 640, 5, bits, sym, false},
                                 QuantCase{35, 300, 1, bits, sym, false}}) {
        std::mt19937 rng(seed++);
        const QuantData d = make_quant(c, rng);
        const PackedWeights w = pack_quantized(d.q.data(), c.n, c.k, bits, c.groups, d.scales.data(),
                                               sym ? nullptr : d.zeros.data(), c.act_order ? d.g_idx.data() : nullptr, "t");
        REQUIRE(q8_supports(w));
        // AVX-512 VNNI: 1..6 run the per-row kernel (6: one group of 6 tokens); 11 and 17 the tile GEMM (8 + 3,
        // 8 + 8 + 1 tokens).
        for (int64_t m : {1, 3, 4, 6, 11, 17}) {
          const std::vector<float> x = random_x(m, c.k, rng);
          std::vector<float> ref(m * c.n), exact(m * c.n);
          linear_q8_ref(w, x.data(), m, ref.data());
          linear_ref(w, x.data(), m, exact.data());
          for (int64_t i = 0; i < m; ++i) {
            // Rounding x to x̂ moves each element by at most half its block's step d = max|x| / 127.
            std::vector<int8_t> q(w.kpad);
            std::vector<float> steps(w.kpad / kQ8Block);
            quantize_q8_blocks(w, x.data() + i * c.k, q.data(), steps.data());
            for (int64_t r = 0; r < c.n; ++r) {
              double bound = 0, abs_terms = 0;
              for (int64_t j = 0; j < c.k; ++j) {
                const int64_t col = c.act_order ? w.perm[j] : j;
                const double wv = std::abs(w.at(r, col));
                bound += 0.5 * steps[j / kQ8Block] * wv;
                abs_terms += std::abs(x[i * c.k + col]) * wv;
              }
              REQUIRE(std::abs(ref[i * c.n + r] - exact[i * c.n + r]) <= bound * (1 + 1e-5) + 1e-6 * abs_terms);
            }
          }
          for (Isa isa : {Isa::Avx2, Isa::Avx512}) {
            if (int(isa) > int(detected_isa())) continue;
            std::vector<float> y(m * c.n, NAN);
            linear_q8_isa(isa, w, x.data(), m, y.data());
            for (int64_t e = 0; e < m * c.n; ++e) {
              const int64_t r = e % c.n, i = e / c.n;
              double abs_terms = 0;
              for (int64_t col = 0; col < c.k; ++col) {
                const int64_t g = d.g_idx[col];
                const double s = d.scales[r * c.groups + g], z = d.zeros[r * c.groups + g];
                abs_terms += (std::abs(x[i * c.k + col]) * 1.01 + 0.01) * (s * d.q[r * c.k + col] + s * z);
              }
              INFO("isa " << isa_name(isa) << " bits " << bits << " k " << c.k << " m " << m << " e " << e);
              // Integer block sums are exact; the float part (one product per block, group and offset sums) errs
              // within the fp32 budget of the float kernel over the same terms (|x̂| <= |x| (1 + 1/254) + d/2).
              REQUIRE(std::abs(double(y[e]) - ref[e]) <= budget(c.k, c.groups, abs_terms));
            }
          }
        }
      }
}

TEST_CASE("float linear (F32, F16, BF16 as stored) equals the reference on every ISA", "[kernels]") {
  std::mt19937 rng(7);
  for (WeightKind kind : {WeightKind::F32, WeightKind::F16, WeightKind::BF16})
    for (int64_t k : {16, 37, 100, 257})
      for (int64_t m : {1, 4, 5, 11}) {
        const int64_t n = 23;
        std::vector<float> wf = random_x(n, k, rng);
        std::vector<uint16_t> wh(n * k);
        for (int64_t i = 0; i < n * k; ++i)
          wh[i] = kind == WeightKind::F16 ? ptq::f32_to_fp16(wf[i]) : ptq::f32_to_bf16(wf[i]);
        const void* data = kind == WeightKind::F32 ? static_cast<const void*>(wf.data()) : wh.data();
        const PackedWeights w = view_float_weights(kind, data, n, k);
        const std::vector<float> x = random_x(m, k, rng);
        std::vector<float> ref(m * n);
        linear_ref(w, x.data(), m, ref.data());
        for (Isa isa : {Isa::Avx2, Isa::Avx512}) {
          if (int(isa) > int(detected_isa())) continue;
          std::vector<float> y(m * n, NAN);
          linear_isa(isa, w, x.data(), m, y.data());
          for (int64_t i = 0; i < m; ++i)
            for (int64_t r = 0; r < n; ++r) {
              double abs_terms = 0, exact = 0;
              for (int64_t c = 0; c < k; ++c) {
                const double wv = kind == WeightKind::F32  ? wf[r * k + c]
                                  : kind == WeightKind::F16 ? ptq::fp16_to_f32(wh[r * k + c])
                                                            : ptq::bf16_to_f32(wh[r * k + c]);
                abs_terms += std::abs(x[i * k + c] * wv);
                exact += x[i * k + c] * wv;
              }
              INFO(weight_kind_name(kind) << " isa " << isa_name(isa) << " k " << k << " m " << m);
              // linear_ref sums in double: within fp32 rounding of the exact dot product.
              REQUIRE(std::abs(double(ref[i * n + r]) - exact) <= std::ldexp(1.0, -23) * abs_terms + 1e-30);
              REQUIRE(std::abs(double(y[i * n + r]) - exact) <= budget(k, 1, abs_terms));
            }
        }
      }
}

TEST_CASE("affine grids (GGUF's blocks: any step sign, stored mins) run on every kernel", "[kernels]") {
  // pack_quantized_affine: w = s * q - o with steps of either sign and zero (Q6_K / Q3_K sub-block steps are signed,
  // a K-quant sub-block may have step 0) and float offsets (stored mins), or symmetric (no offsets).
  std::mt19937 rng(21);
  for (int bits : {2, 3, 4, 5, 6, 8})
    for (int64_t group : {16, 32})
      for (bool with_offsets : {false, true}) {
        const int64_t n = 21, k = 4 * group + (group == 32 ? 0 : 16), groups = k / group;
        std::uniform_int_distribution<int> code(0, (1 << bits) - 1);
        std::uniform_real_distribution<float> step(-0.2f, 0.2f), offset(-1.0f, 1.0f);
        std::vector<uint8_t> q(n * k);
        for (auto& v : q) v = uint8_t(code(rng));
        std::vector<float> sc(n * groups), of(n * groups);
        for (int64_t i = 0; i < n * groups; ++i) {
          sc[i] = i % 7 == 3 ? 0.0f : step(rng);
          of[i] = offset(rng);
        }
        const PackedWeights w =
            pack_quantized_affine(q.data(), n, k, bits, groups, sc.data(), with_offsets ? of.data() : nullptr, "t");
        const float zero_sym = float(1 << (bits - 1));
        // The stored weight is exactly the definition (one fp32 product and one difference, as the packing's at()).
        for (int64_t r = 0; r < n; ++r)
          for (int64_t c = 0; c < k; ++c) {
            const int64_t g = r * groups + c / group;
            const float o = with_offsets ? of[g] : sc[g] * zero_sym;
            REQUIRE(w.at(r, c) == sc[g] * float(q[r * k + c]) - o);
          }
        for (int64_t m : {1, 5, 11}) {
          const std::vector<float> x = random_x(m, k, rng);
          std::vector<float> ref(m * n);
          linear_ref(w, x.data(), m, ref.data());
          std::vector<double> bound(m * n);
          for (int64_t i = 0; i < m; ++i)
            for (int64_t r = 0; r < n; ++r) {
              double abs_terms = 0;
              for (int64_t c = 0; c < k; ++c) {
                const int64_t g = r * groups + c / group;
                const double o = with_offsets ? of[g] : sc[g] * zero_sym;
                abs_terms += (std::abs(x[i * k + c]) * 1.01 + 0.01) * (std::abs(sc[g]) * q[r * k + c] + std::abs(o));
              }
              bound[i * n + r] = budget(k, groups, abs_terms);
            }
          for (Isa isa : {Isa::Avx2, Isa::Avx512}) {
            if (int(isa) > int(detected_isa())) continue;
            std::vector<float> y(m * n, NAN);
            linear_isa(isa, w, x.data(), m, y.data());
            for (int64_t e = 0; e < m * n; ++e) {
              INFO("linear isa " << isa_name(isa) << " bits " << bits << " group " << group << " m " << m << " e " << e);
              REQUIRE(std::abs(y[e] - ref[e]) <= bound[e]);
            }
            if (!q8_supports(w)) continue;  // groups of 16 columns: linear_q8 takes 32-column blocks only
            std::vector<float> yq(m * n, NAN), refq(m * n);
            linear_q8_ref(w, x.data(), m, refq.data());
            linear_q8_isa(isa, w, x.data(), m, yq.data());
            for (int64_t e = 0; e < m * n; ++e) {
              INFO("q8 isa " << isa_name(isa) << " bits " << bits << " group " << group << " m " << m << " e " << e);
              REQUIRE(std::abs(yq[e] - refq[e]) <= bound[e]);
            }
          }
        }
      }
  const std::vector<uint8_t> q = {0, 1, 2, 3};
  const std::vector<float> s = {1.0f, INFINITY};
  CHECK_THROWS_WITH(pack_quantized_affine(q.data(), 1, 4, 4, 2, s.data(), nullptr, "m"), Catch::Contains("not finite"));
}

TEST_CASE("packing from a bit stream equals packing the codes, every width, natural and act-order", "[kernels]") {
  // pack_quantized_stream (the ptq checkpoint's qweight: code j at stream bits [j * bits, j * bits + bits), LSB first)
  // against pack_quantized of the same codes: the same block bytes. k = 100: a partial last block.
  std::mt19937 rng(5);
  for (int bits = 2; bits <= 8; ++bits)
    for (bool act_order : {false, true}) {
      const int64_t n = 7, k = act_order ? 96 : 100, groups = act_order ? 3 : 1;
      std::vector<uint8_t> q(n * k);
      for (auto& v : q) v = uint8_t(rng() % (1u << bits));
      const int64_t row_bytes = (k * bits + 7) / 8 + 1;  // one spare byte: rows need not be tight
      std::vector<uint8_t> stream(n * row_bytes, 0);
      for (int64_t r = 0; r < n; ++r)
        for (int64_t j = 0; j < k; ++j)
          for (int t = 0; t < bits; ++t)
            if ((q[r * k + j] >> t) & 1) stream[r * row_bytes + (j * bits + t) / 8] |= uint8_t(1u << ((j * bits + t) % 8));
      std::vector<float> s(n * groups, 0.5f);
      std::vector<int32_t> g_idx(k);
      for (int64_t j = 0; j < k; ++j) g_idx[j] = int32_t((j * 7) % groups);  // every group k / groups columns
      const int32_t* gi = act_order ? g_idx.data() : nullptr;
      const PackedWeights a = pack_quantized(q.data(), n, k, bits, groups, s.data(), nullptr, gi, "q");
      const PackedWeights b = pack_quantized_stream(stream.data(), row_bytes, n, k, bits, groups, s.data(), nullptr, gi, "s");
      INFO("bits " << bits << " act_order " << act_order);
      REQUIRE(a.codes == b.codes);
      REQUIRE(a.perm == b.perm);
    }
}

TEST_CASE("packing refuses codes, groups and scales that do not fit", "[kernels]") {
  const std::vector<uint8_t> q = {0, 1, 2, 16};  // 16 does not fit 4 bits
  const std::vector<float> s = {1.0f, 1.0f};
  CHECK_THROWS_WITH(pack_quantized(q.data(), 1, 4, 4, 2, s.data(), nullptr, nullptr, "m"),
                    Catch::Contains("code 16") && Catch::Contains("\"m\""));
  const std::vector<uint8_t> ok = {0, 1, 2, 3};
  const std::vector<int32_t> uneven = {0, 0, 0, 1};
  CHECK_THROWS_WITH(pack_quantized(ok.data(), 1, 4, 4, 2, s.data(), nullptr, uneven.data(), "m"),
                    Catch::Contains("group 0 holds 3 columns"));
  const std::vector<float> bad_scale = {1.0f, NAN};
  CHECK_THROWS_WITH(pack_quantized(ok.data(), 1, 4, 4, 2, bad_scale.data(), nullptr, nullptr, "m"),
                    Catch::Contains("not finite"));
  CHECK_THROWS_AS(pack_quantized(ok.data(), 1, 4, 9, 1, s.data(), nullptr, nullptr, "m"), std::invalid_argument);
}

TEST_CASE("the block layout puts code i of a block at byte i % 16, bits c * (i / 16)", "[kernels]") {
  // 4-bit: 32 codes per block; code 17 -> byte 1, high nibble.
  std::vector<uint8_t> q(32, 0);
  q[17] = 0xA;
  q[1] = 0x3;
  const std::vector<float> s = {1.0f};
  const PackedWeights w = pack_quantized(q.data(), 1, 32, 4, 1, s.data(), nullptr, nullptr, "m");
  REQUIRE(w.codes.size() == 16);
  CHECK(w.codes[1] == 0xA3);
  CHECK(packed_code(w, 0, 17) == 0xA);
  // 3-bit codes in a 4-bit container; 2-bit: 64 codes per block, code 40 -> byte 8, bits 4..5.
  CHECK(container_bits(3) == 4);
  std::vector<uint8_t> q2(64, 0);
  q2[40] = 2;
  const PackedWeights w2 = pack_quantized(q2.data(), 1, 64, 2, 1, s.data(), nullptr, nullptr, "m");
  REQUIRE(w2.codes.size() == 16);
  CHECK(w2.codes[8] == (2 << 4));
}
