// lib/quant/formats: GPTQ int32 packing (hand-packed words, fast vs scalar twin) of every code width.
#include <catch2/catch.hpp>

#include <cstdint>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "quant/formats.h"

using namespace ptq;

namespace {

// The int32 word with the given bit pattern.
int32_t word(uint32_t bits) { return static_cast<int32_t>(bits); }

std::vector<int32_t> ints(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kInt).contiguous();
  return std::vector<int32_t>(c.data_ptr<int32_t>(), c.data_ptr<int32_t>() + c.numel());
}

}  // namespace

TEST_CASE("GPTQ qweight: codes 1..8 along the input dim pack to 0x87654321", "[quant]") {
  // W [N = 8, K = 8] with q[n, k] = k + 1: one int32 word per output column, input row k at bits 4k.
  QuantizedWeight qw;
  qw.spec = {4, kPerChannel, false, false};
  qw.q = at::arange(1, 9, at::kInt).to(at::kByte).repeat({8, 1});
  qw.zeros = at::ones({8, 1}, at::kInt);
  qw.scales = at::ones({8, 1});
  qw.g_idx = at::zeros({8}, at::kInt);
  const GptqTensors t = pack_gptq(qw, GptqFormat::V2, "m");
  CHECK(t.qweight.sizes() == at::IntArrayRef{1, 8});
  CHECK(ints(t.qweight) == std::vector<int32_t>(8, word(0x87654321)));
  CHECK(ints(pack_bits_ref(qw.q, 4, "q")) == std::vector<int32_t>(8, word(0x87654321)));
  CHECK(ints(t.qzeros) == std::vector<int32_t>{word(0x11111111)});
}

TEST_CASE("GPTQ qzeros: symmetric 4-bit zero 8 is 0x88888888 (v2) and 0x77777777 (v1)", "[quant]") {
  at::manual_seed(3);
  const QuantizedWeight qw = quantize_weight(at::randn({16, 64}), {4, 32, true, false});
  const GptqTensors v2 = pack_gptq(qw, GptqFormat::V2, "m");
  const GptqTensors v1 = pack_gptq(qw, GptqFormat::V1, "m");
  CHECK(v2.qzeros.sizes() == at::IntArrayRef{2, 2});  // [G, N/8]
  CHECK(ints(v2.qzeros) == std::vector<int32_t>(4, word(0x88888888)));
  CHECK(ints(v1.qzeros) == std::vector<int32_t>(4, word(0x77777777)));
  CHECK(v2.qweight.sizes() == at::IntArrayRef{8, 16});  // [K/8, N]
  CHECK(v2.scales.dtype() == at::kHalf);
  CHECK(v2.scales.sizes() == at::IntArrayRef{2, 16});
}

TEST_CASE("3-bit packing straddles words as GPTQ does, computed by hand", "[quant]") {
  // 32 codes -> 3 words. Code 0 = 1 at bit 0; code 10 = 0b101 at bits 30..32 (01 in word 0 bits 30-31, 1 in
  // word 1 bit 0); code 21 = 0b110 at bits 63..65 (0 in word 1 bit 31, 11 in word 2 bits 0-1); code 31 = 0b111
  // at bits 93..95 (word 2 bits 29-31).
  at::Tensor codes = at::zeros({1, 32}, at::kInt);
  codes[0][0] = 1;
  codes[0][10] = 5;
  codes[0][21] = 6;
  codes[0][31] = 7;
  const std::vector<int32_t> expected = {word(0x40000001), word(0x00000001), word(0xE0000003)};
  CHECK(ints(pack_bits(codes, 3, "q")) == expected);
  CHECK(ints(pack_bits_ref(codes, 3, "q")) == expected);
  CHECK(unpack_bits(pack_bits(codes, 3, "q"), 3).equal(codes));
  CHECK(unpack_bits_ref(pack_bits(codes, 3, "q"), 3).equal(codes));
}

TEST_CASE("pack/unpack round trip, fast equals scalar twin", "[quant]") {
  at::manual_seed(11);
  for (int bits : {2, 3, 4, 5, 6, 7, 8})
    for (int64_t count : {32, 64, 96, 160}) {
      INFO("bits " << bits << " count " << count);
      const at::Tensor codes = at::randint(0, 1 << bits, {5, count}, at::kInt);
      const at::Tensor fast = pack_bits(codes, bits, "q");
      CHECK(fast.sizes() == at::IntArrayRef{5, count * bits / 32});
      CHECK(fast.equal(pack_bits_ref(codes, bits, "q")));
      CHECK(unpack_bits(fast, bits).equal(codes));
      CHECK(unpack_bits_ref(fast, bits).equal(codes));
    }
  // Every bit pattern unpacks identically in both paths (including words with the sign bit set).
  const at::Tensor words = at::randint(INT32_MIN, INT32_MAX, {4, 6}, at::kLong).to(at::kInt);
  for (int bits : {2, 3, 4, 6, 8}) CHECK(unpack_bits(words, bits).equal(unpack_bits_ref(words, bits)));
}

TEST_CASE("pack_gptq / unpack_gptq round trip: codes, zeros and g_idx exact, scales to fp16", "[quant]") {
  at::manual_seed(5);
  const at::Tensor w = at::randn({64, 256});
  for (int bits : {2, 3, 4, 8})
    for (bool sym : {true, false})
      for (auto format : {GptqFormat::V1, GptqFormat::V2}) {
        INFO("bits " << bits << " sym " << sym << " format " << gptq_format_name(format));
        QuantizedWeight qw = quantize_weight(w, {bits, 64, sym, false});
        // v1 cannot hold a zero of 0; keep this case representable (the refusal has its own test).
        if (format == GptqFormat::V1) qw.zeros.clamp_min_(1);
        const QuantizedWeight back = unpack_gptq(pack_gptq(qw, format, "m"), bits, format, "m");
        CHECK(back.q.equal(qw.q));
        CHECK(back.zeros.equal(qw.zeros));
        CHECK(back.g_idx.equal(qw.g_idx));
        CHECK(back.spec.group_size == 64);
        CHECK(back.spec.sym == sym);
        // fp16 keeps 11 significant bits: relative rounding error <= 2^-11.
        CHECK(((back.scales - qw.scales).abs() <= qw.scales * (1.0 / 2048)).all().item<bool>());
      }
}

TEST_CASE("GPTQ v1 refuses an asymmetric zero of 0", "[quant]") {
  // All-positive rows: the range extends to 0 at the bottom, so zero = round(-0 / scale) = 0.
  const at::Tensor w = at::rand({8, 32}) + 0.5;
  const QuantizedWeight qw = quantize_weight(w, {4, 32, false, false});
  REQUIRE(qw.zeros.eq(0).all().item<bool>());
  CHECK_THROWS_WITH(pack_gptq(qw, GptqFormat::V1, "layers.1.mlp.up_proj"),
                    Catch::Contains("layers.1.mlp.up_proj") && Catch::Contains("zero point of 0") &&
                        Catch::Contains("gptq_v2"));
  const GptqTensors v2 = pack_gptq(qw, GptqFormat::V2, "m");
  CHECK(ints(v2.qzeros) == std::vector<int32_t>(1, 0));
}

TEST_CASE("GPTQ packing rejects widths and sizes it cannot lay out", "[quant]") {
  CHECK_THROWS_WITH(pack_bits(at::zeros({1, 32}, at::kInt), 9, "m.qweight"),
                    Catch::Contains("m.qweight") && Catch::Contains("2 to 8"));
  // The stream layout holds 6 bits (ptq checkpoints); GPTQ files do not.
  CHECK_THROWS_WITH(pack_gptq(quantize_weight(at::randn({4, 32}), {6, kPerChannel, true, false}), GptqFormat::V2, "m6"),
                    Catch::Contains("m6") && Catch::Contains("2, 3, 4 and 8"));
  CHECK_THROWS_WITH(pack_bits(at::zeros({1, 12}, at::kInt), 4, "m.qweight"), Catch::Contains("multiple of 8"));
  CHECK_THROWS_WITH(pack_bits(at::zeros({1, 48}, at::kInt), 3, "m.qweight"), Catch::Contains("multiple of 32"));
  CHECK_THROWS_WITH(pack_bits(at::full({1, 8}, 16, at::kInt), 4, "m.qweight"), Catch::Contains("does not fit 4 bits"));
  GptqTensors bad;
  bad.qweight = at::zeros({4, 8}, at::kInt);
  bad.qzeros = at::zeros({1, 1}, at::kInt);
  bad.scales = at::ones({1, 16}, at::kHalf);
  bad.g_idx = at::zeros({32}, at::kInt);
  CHECK_THROWS_WITH(unpack_gptq(bad, 4, GptqFormat::V2, "m"), Catch::Contains("inconsistent GPTQ shapes"));
}
