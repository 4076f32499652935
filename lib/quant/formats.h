// GPTQ int32 packing of b-bit codes (grids by name: core/weight_grid.h).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/core/Tensor.h>

#include "quant/quantizer.h"

namespace ptq {

// ---- GPTQ packing (FORMATS.md "GPTQ safetensors") --------------------------------------------------------
// Layout: a packed vector of `count` b-bit codes is a little-endian bit stream over int32 words: code j
// occupies stream bits [j*b, j*b + b), LSB first, and word w holds stream bits [32w, 32w + 32). For b in
// {2, 4, 8} no code straddles a word (pf = 32 / b codes per word, code k of word w at bits k*b); for b = 3,
// 32 codes fill 3 words and codes 10 and 21 straddle (bits 30..32 and 63..65), exactly GPTQ's 3-bit layout.
//   qweight [K*b/32, N]  column n is the stream of q[n, 0..K)    (packed along the input dim)
//   qzeros  [G, N*b/32]  row g is the stream of zeros[0..N, g]   (packed along the output dim)
//   scales  [G, N] fp16; g_idx [K] int32
// "gptq" (v1) stores zero - 1 in qzeros, "gptq_v2" stores zero. A v1 zero of 0 would wrap to -1 (all ones),
// so packing refuses it rather than writing bits that dequantize wrongly.
struct BitPosition {
  int64_t word;
  int shift;
};
constexpr BitPosition code_position(int64_t j, int bits) { return {j * bits / 32, static_cast<int>(j * bits % 32)}; }
constexpr int64_t packed_words(int64_t count, int bits) { return count * bits / 32; }
static_assert(code_position(7, 4).word == 0 && code_position(7, 4).shift == 28, "4-bit: 8 codes per word");
static_assert(code_position(10, 3).shift == 30 && code_position(11, 3).word == 1 && code_position(11, 3).shift == 1,
              "3-bit: code 10 straddles words 0 and 1");
static_assert(code_position(21, 3).shift == 31 && code_position(22, 3).word == 2 && code_position(22, 3).shift == 2,
              "3-bit: code 21 straddles words 1 and 2");
static_assert(packed_words(32, 3) == 3 && packed_words(32, 2) == 2 && packed_words(4, 8) == 1, "words per stream");

enum class GptqFormat : uint8_t { V1, V2 };  // checkpoint_format "gptq" / "gptq_v2"
const char* gptq_format_name(GptqFormat f);

// Codes [R, L] (uint8 or int32, each < 2^bits) -> words [R, L*bits/32] int32, each row one stream.
// Throws naming `name` unless bits is 2..8 (GPTQ files: 2, 3, 4 or 8, checked by pack_gptq/unpack_gptq),
// L*bits is a multiple of 32 and every code fits.
at::Tensor pack_bits(const at::Tensor& codes, int bits, std::string_view name);
// Words [R, W] int32 -> codes [R, W*32/bits] int32.
at::Tensor unpack_bits(const at::Tensor& words, int bits);
// Scalar twins (plain loops over uint32 words).
at::Tensor pack_bits_ref(const at::Tensor& codes, int bits, std::string_view name);
at::Tensor unpack_bits_ref(const at::Tensor& words, int bits);

struct GptqTensors {
  at::Tensor qweight;  // [K*b/32, N] int32
  at::Tensor qzeros;   // [G, N*b/32] int32
  at::Tensor scales;   // [G, N] fp16
  at::Tensor g_idx;    // [K] int32
};
GptqTensors pack_gptq(const QuantizedWeight& qw, GptqFormat format, std::string_view name);
// Inverse of pack_gptq (scales come back from fp16). spec.group_size is K / G (kPerChannel for G = 1),
// spec.sym is true when every zero is 2^(bits-1). v1 zeros are stored + 1, as GPTQ kernels read them.
QuantizedWeight unpack_gptq(const GptqTensors& t, int bits, GptqFormat format, std::string_view name);

}  // namespace ptq
