// lib/io K-quants (Q2_K..Q6_K) and Q5_0/Q5_1: block sizes, error bounds on random rows, hand-checkable blocks, the
// importance-weighted rounding, refusals. Byte identity with llama.cpp is checked by scripts/check_gguf_kquants.sh
// against llama-quantize itself. LibTorch-free (runs under ASan/UBSan too).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/half.h"
#include "io/gguf.h"
#include "io/gguf_kquants.h"
#include "tests/io/gguf_test_data.h"

using namespace ptq;

namespace {

constexpr GgmlType kKQuants[] = {GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K};
constexpr GgmlType kWeighted[] = {GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K,
                                  GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1};

using test::gaussian_values;

std::vector<float> roundtrip(GgmlType t, const std::vector<float>& x, int64_t rows, const float* qw = nullptr) {
  const int64_t cols = static_cast<int64_t>(x.size()) / rows;
  const auto bytes = ggml_encode(t, x.data(), rows, cols, "w", qw);
  std::vector<float> y(x.size());
  ggml_decode(t, bytes.data(), y.data(), static_cast<int64_t>(x.size()));
  return y;
}

// Σ w (x - x̂)² / Σ w x² over rows of `cols` (w = 1 without weights).
double nmse(const std::vector<float>& x, const std::vector<float>& y, const std::vector<float>* w = nullptr) {
  double e = 0, s = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double wi = w ? (*w)[i % w->size()] : 1.0;
    e += wi * double(y[i] - x[i]) * double(y[i] - x[i]);
    s += wi * double(x[i]) * double(x[i]);
  }
  return e / s;
}

}  // namespace

TEST_CASE("K-quant type table: ggml ids, names, 256-weight super-blocks and ggml-common.h's block sizes", "[gguf]") {
  struct Row {
    GgmlType t;
    uint32_t id;
    const char* name;
    int64_t block;
    size_t bytes;
  };
  for (const Row& r : {Row{GgmlType::Q2_K, 10, "q2_k", 256, 84}, Row{GgmlType::Q3_K, 11, "q3_k", 256, 110},
                       Row{GgmlType::Q4_K, 12, "q4_k", 256, 144}, Row{GgmlType::Q5_K, 13, "q5_k", 256, 176},
                       Row{GgmlType::Q6_K, 14, "q6_k", 256, 210}, Row{GgmlType::Q5_0, 6, "q5_0", 32, 22},
                       Row{GgmlType::Q5_1, 7, "q5_1", 32, 24}}) {
    INFO(r.name);
    const GgmlTypeTraits* tr = ggml_type_traits_by_id(r.id);
    REQUIRE(tr != nullptr);
    CHECK(tr->type == r.t);
    CHECK(std::string(tr->name) == r.name);
    CHECK(tr->block_size == r.block);
    CHECK(tr->type_size == r.bytes);
    CHECK(*ggml_type_from_name(r.name) == r.t);
  }
  // bits per weight: 2.625, 3.4375, 4.5, 5.5, 6.5625
  CHECK(ggml_nbytes(GgmlType::Q2_K, 4096) * 8.0 / 4096 == 2.625);
  CHECK(ggml_nbytes(GgmlType::Q6_K, 4096) * 8.0 / 4096 == 6.5625);
}

TEST_CASE("K-quants stay inside their error bounds on Gaussian rows", "[gguf]") {
  // A uniform quantizer of step Δ has mean squared error Δ²/12. Per sub-block of n N(0, 1) values the grid spans
  // about the sample range (asymmetric types: E[max - min] ≈ 3.5 for n = 16, 4.1 for n = 32) or twice the largest
  // magnitude (symmetric: E[max |x|] ≈ 2.0 for n = 16) over its levels; the bound allows 1.5x that estimate for the
  // scale searches, which trade a larger step for fewer clamped values, and the 6/8-bit sub-block scales.
  struct Bound {
    GgmlType t;
    double span, levels;
  };
  const int64_t rows = 16, cols = 1024;
  const std::vector<float> x = gaussian_values(rows * cols, 11);
  for (const Bound& b : {Bound{GgmlType::Q2_K, 3.5, 3}, Bound{GgmlType::Q3_K, 4.0, 8}, Bound{GgmlType::Q4_K, 4.1, 15},
                         Bound{GgmlType::Q5_K, 4.1, 31}, Bound{GgmlType::Q6_K, 4.0, 64}}) {
    INFO(ggml_type_name(b.t));
    const double step = b.span / b.levels;
    const double err = nmse(x, roundtrip(b.t, x, rows));
    CHECK(err > 0);
    CHECK(err < 1.5 * step * step / 12);
  }
}

TEST_CASE("K-quants on hand-checkable blocks: all zero, constant, one outlier", "[gguf]") {
  for (GgmlType t : kKQuants) {
    INFO(ggml_type_name(t));
    // All zero: every code and scale is 0 (ggml's GROUP_MAX_EPS / max == min branches), decoded exactly.
    const std::vector<float> zero(2 * kQK_K, 0.0f);
    const auto zb = ggml_encode(t, zero.data(), 1, 2 * kQK_K, "zero");
    for (uint8_t byte : zb) CHECK(byte == 0);
    for (float v : roundtrip(t, zero, 1)) CHECK(v == 0.0f);

    // Constant 0.37: the sub-block with the largest scale takes the top scale code exactly, so the only error is the
    // fp16 rounding of the super-block scale d (relative 2^-11) and float products: within 2^-10.
    const std::vector<float> c(kQK_K, 0.37f);
    for (float v : roundtrip(t, c, 1)) CHECK(std::fabs(v - 0.37f) <= 0.37f * std::ldexp(1.0f, -10));

    // One outlier (0.5) among N(0, 0.01) values: its sub-block's scale is set by it, so it comes back within 0.5%;
    // the other sub-blocks keep scales of their own (the point of super-blocks), so their error stays at the level
    // of their own values (4 sigma), far below the outlier sub-block's step 0.5 / levels.
    std::vector<float> o = gaussian_values(kQK_K, 5, 0.01f);
    o[77] = 0.5f;
    const std::vector<float> y = roundtrip(t, o, 1);
    CHECK(std::fabs(y[77] - 0.5f) < 0.0025f);
    for (int i = 0; i < kQK_K; ++i)
      if (i / 16 != 77 / 16) CHECK(std::fabs(y[i] - o[i]) < 0.04f);
  }
}

TEST_CASE("the importance-weighted rounding differs from the reference one and lowers the weighted error", "[gguf]") {
  // Importances spanning orders of magnitude (log-normal, as Σx² of real activations): ggml's weighted search spends
  // precision on the columns that matter, so Σ w (x - x̂)² falls below the unweighted rounding's on the same rows.
  const int64_t rows = 32, cols = 512;
  const std::vector<float> x = gaussian_values(rows * cols, 21);
  std::mt19937 rng(22);
  std::lognormal_distribution<float> ln(0, 2);
  std::vector<float> w(cols);
  for (auto& v : w) v = ln(rng);
  for (GgmlType t : kWeighted) {
    INFO(ggml_type_name(t));
    const auto plain = ggml_encode(t, x.data(), rows, cols, "w");
    const auto weighted = ggml_encode(t, x.data(), rows, cols, "w", w.data());
    CHECK(plain != weighted);
    CHECK(nmse(x, roundtrip(t, x, rows, w.data()), &w) < nmse(x, roundtrip(t, x, rows), &w));
  }
  // Q8_0 and the float types have no weighted rounding in ggml: the importances are ignored.
  CHECK(ggml_encode(GgmlType::Q8_0, x.data(), rows, cols, "w", w.data()) == ggml_encode(GgmlType::Q8_0, x.data(), rows, cols, "w"));
  // Uniform importances are not the reference rounding either (ggml's quantize_<type> switches algorithm on whether
  // quant_weights is null), but they weight no column over another: the plain error stays within the same bound.
  const std::vector<float> ones(cols, 1.0f);
  CHECK(nmse(x, roundtrip(GgmlType::Q4_K, x, rows, ones.data())) < 0.01);
}

TEST_CASE("K-quant rows of a bad width, NaN and bad importances are refused naming the tensor", "[gguf]") {
  const std::vector<float> x(2 * 320, 0.5f);
  // 320 = 10 blocks of 32 but not a multiple of 256: the K-quants refuse, the 32-blocks accept.
  CHECK_THROWS_WITH(ggml_encode(GgmlType::Q4_K, x.data(), 2, 320, "blk.0.ffn_down.weight"),
                    Catch::Contains("blk.0.ffn_down.weight") && Catch::Contains("rows of 320") &&
                        Catch::Contains("q4_k (blocks of 256)"));
  CHECK_NOTHROW(ggml_encode(GgmlType::Q5_0, x.data(), 2, 320, "w"));
  CHECK_THROWS_WITH(ggml_nbytes(GgmlType::Q6_K, 320), Catch::Contains("not a multiple of its block size 256"));
  std::vector<float> bad(256, 1.0f);
  bad[3] = std::nanf("");
  CHECK_THROWS_WITH(ggml_encode(GgmlType::Q2_K, bad.data(), 1, 256, "blk.1.attn_v.weight"),
                    Catch::Contains("blk.1.attn_v.weight") && Catch::Contains("element 3"));
  const std::vector<float> ok(256, 1.0f);
  std::vector<float> qw(256, 1.0f);
  qw[9] = -1.0f;
  CHECK_THROWS_WITH(ggml_encode(GgmlType::Q3_K, ok.data(), 1, 256, "blk.2.attn_q.weight", qw.data()),
                    Catch::Contains("blk.2.attn_q.weight") && Catch::Contains("column 9"));
}

TEST_CASE("K-quant blocks decode from any byte alignment, as inside a GGUF map", "[gguf]") {
  const std::vector<float> x = gaussian_values(2 * kQK_K, 31);
  for (GgmlType t : kKQuants) {
    INFO(ggml_type_name(t));
    const auto bytes = ggml_encode(t, x.data(), 1, 2 * kQK_K, "w");
    std::vector<uint8_t> shifted(bytes.size() + 1);
    std::memcpy(shifted.data() + 1, bytes.data(), bytes.size());
    std::vector<float> a(x.size()), b(x.size());
    ggml_decode(t, bytes.data(), a.data(), 2 * kQK_K);
    ggml_decode(t, shifted.data() + 1, b.data(), 2 * kQK_K);
    CHECK(a == b);
  }
}

// ---- a row of blocks as a grid (GPTQ on GGUF's grids) -------------------------------------------------------------

namespace {

constexpr GgmlType kGridTypes[] = {GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0,
                                   GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K};

// a and b repeated per element (the form ggml_round_to_grid takes).
void element_grid(GgmlType t, const uint8_t* row, int64_t n, std::vector<float>& a, std::vector<float>& b) {
  const int sub = ggml_grid_traits(t)->sub;
  std::vector<float> as(n / sub), bs(n / sub);
  ggml_row_grid(t, row, n, as.data(), bs.data());
  a.resize(n);
  b.resize(n);
  for (int64_t i = 0; i < n; ++i) {
    a[i] = as[i / sub];
    b[i] = bs[i / sub];
  }
}

}  // namespace

TEST_CASE("a row of blocks as a grid: random codes set into ggml blocks decode to a * c + b and round back", "[gguf]") {
  // The independent side is ggml's own dequantizer (dequantize_row_*): the grid (a, b) read from the blocks and the
  // code layout must reproduce its values bit for bit, for every code position of every type.
  const int64_t n = 512;  // two super-blocks
  const std::vector<float> x = gaussian_values(n, 11);
  std::mt19937 rng(5);
  for (GgmlType t : kGridTypes) {
    CAPTURE(ggml_type_name(t));
    const GgmlGridTraits& g = *ggml_grid_traits(t);
    std::vector<uint8_t> row = ggml_encode(t, x.data(), 1, n, "row");
    std::vector<int8_t> codes(n), back(n);
    std::uniform_int_distribution<int> code(g.lo, g.hi);
    for (auto& c : codes) c = static_cast<int8_t>(code(rng));
    codes[0] = static_cast<int8_t>(g.lo);
    codes[n - 1] = static_cast<int8_t>(g.hi);
    ggml_row_set_codes(t, row.data(), n, codes.data());
    ggml_row_codes(t, row.data(), n, back.data());
    REQUIRE(back == codes);
    std::vector<float> decoded(n), a, b, xhat(n);
    ggml_decode(t, row.data(), decoded.data(), n);
    element_grid(t, row.data(), n, a, b);
    ggml_round_to_grid(g, decoded.data(), a.data(), b.data(), n, back.data(), xhat.data());
    for (int64_t i = 0; i < n; ++i) {
      CAPTURE(i);
      REQUIRE(a[i] != 0);  // Gaussian rows: no sub-block has a zero scale
      REQUIRE(back[i] == codes[i]);
      REQUIRE(std::memcmp(&xhat[i], &decoded[i], sizeof(float)) == 0);
    }
  }
}

TEST_CASE("a row of blocks as a grid: rounding the source row onto ggml's own grid gives ggml's K-quant codes", "[gguf]") {
  // quantize_row_q{2,3,4,5,6}_K_ref finish by rounding x onto the grid they stored (nearest_int((x + dm) / d) or
  // nearest_int(x / d), clamped): ggml_round_to_grid with the grid read back must give the same codes wherever the
  // sub-block scale is not 0 (ggml leaves earlier codes there; every code decodes to b).
  const int64_t n = 1024;
  const std::vector<float> x = gaussian_values(n, 3);
  for (GgmlType t : kKQuants) {
    CAPTURE(ggml_type_name(t));
    const std::vector<uint8_t> row = ggml_encode(t, x.data(), 1, n, "row");
    std::vector<int8_t> ggml_codes(n), ours(n);
    std::vector<float> a, b, xhat(n), decoded(n);
    ggml_row_codes(t, row.data(), n, ggml_codes.data());
    element_grid(t, row.data(), n, a, b);
    ggml_round_to_grid(*ggml_grid_traits(t), x.data(), a.data(), b.data(), n, ours.data(), xhat.data());
    ggml_decode(t, row.data(), decoded.data(), n);
    int64_t compared = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (a[i] == 0) continue;
      CAPTURE(i);
      REQUIRE(ours[i] == ggml_codes[i]);
      REQUIRE(xhat[i] == decoded[i]);
      ++compared;
    }
    REQUIRE(compared > n / 2);
  }
}

TEST_CASE("a row of blocks as a grid: codes outside a type's range are refused", "[gguf]") {
  const std::vector<float> x = gaussian_values(256, 1);
  std::vector<uint8_t> row = ggml_encode(GgmlType::Q4_K, x.data(), 1, 256, "row");
  std::vector<int8_t> codes(256, 3);
  codes[7] = 16;
  REQUIRE_THROWS_WITH(ggml_row_set_codes(GgmlType::Q4_K, row.data(), 256, codes.data()),
                      Catch::Contains("code 16 of element 7 is outside [0, 15]"));
  REQUIRE(ggml_grid_traits(GgmlType::F16) == nullptr);
}
