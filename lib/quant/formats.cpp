#include "quant/formats.h"

#include <ATen/ATen.h>

#include "core/error.h"
#include "io/safetensors.h"

namespace ptq {

namespace {

constexpr int kWordBits = 32;
constexpr int64_t kWordMask = 0xffffffff;
static_assert(sizeof(int32_t) * 8 == kWordBits, "qweight/qzeros words are int32");

// The stream layout holds any width 2..8 (ptq checkpoints store 6-bit W6A6 weights); GPTQ files only 2, 3,
// 4 and 8, which pack_gptq/unpack_gptq check on top.
void check_pack_bits(int bits, std::string_view name) { bit_width_traits(bits, name); }

void check_gptq_bits(int bits, std::string_view name) {
  if (!bit_width_traits(bits, name).gptq)
    fail_input("{}: GPTQ packing defines 2, 3, 4 and 8 bits, found {} bits", name, bits);
}

// Codes as contiguous int64 [R, L], checked to fit the stream layout.
at::Tensor checked_codes(const at::Tensor& codes, int bits, std::string_view name) {
  check_pack_bits(bits, name);
  if (codes.dim() != 2)
    fail_input("{}: expected codes [rows, count], found shape {}", name, shape_str(codes.sizes().vec()));
  if (codes.size(1) * bits % kWordBits != 0)
    fail_input("{}: {} codes of {} bits do not fill whole 32-bit words; expected a multiple of {} codes", name,
               codes.size(1), bits, bit_width_traits(bits).stream_period_codes);
  at::Tensor c = codes.to(at::kLong).contiguous();
  if (c.numel() > 0 && (c.min().item<int64_t>() < 0 || c.max().item<int64_t>() > max_code(bits)))
    fail_input("{}: codes range over [{}, {}], which does not fit {} bits", name, c.min().item<int64_t>(),
               c.max().item<int64_t>(), bits);
  return c;
}

// The stream repeats every `codes` codes = `words` words (lcm(bits, 32) bits): 8 codes in 1 word for 4 bits,
// 32 codes in 3 words for 3 bits. Word index and shift of each code of one period.
struct Period {
  int64_t codes, words;
  at::Tensor word, shift;  // [codes] int64
};
Period period(int bits) {
  Period p;
  const BitWidthTraits& t = bit_width_traits(bits);
  p.codes = t.stream_period_codes;
  p.words = t.stream_period_words;
  const at::Tensor pos = at::arange(p.codes, at::kLong) * bits;
  p.word = at::div(pos, kWordBits, "floor");
  p.shift = at::remainder(pos, kWordBits);
  return p;
}

// The period of packed words [R, W], checked to hold whole periods.
Period checked_period(const at::Tensor& words, int bits) {
  check_pack_bits(bits, "packed words");
  Period p = period(bits);
  if (words.dim() != 2 || words.size(1) % p.words != 0)
    fail_input("packed words: shape {} does not hold whole {}-bit periods; expected [rows, a multiple of {}]",
               shape_str(words.sizes().vec()), bits, p.words);
  return p;
}

// int64 values in [0, 2^32) -> int32 with the same bits.
at::Tensor to_int32_bits(const at::Tensor& w) {
  constexpr int64_t kSignBit = int64_t{1} << 31, kWrap = int64_t{1} << 32;
  return at::where(w >= kSignBit, w - kWrap, w).to(at::kInt);
}

}  // namespace

const char* gptq_format_name(GptqFormat f) { return f == GptqFormat::V1 ? "gptq" : "gptq_v2"; }

at::Tensor pack_bits(const at::Tensor& codes, int bits, std::string_view name) {
  const at::Tensor c = checked_codes(codes, bits, name);
  const int64_t rows = c.size(0), count = c.size(1);
  const Period p = period(bits);
  // Each code shifted into a 64-bit window: the low half lands in its word, the high half (nonzero only for a
  // straddling code) in the next word of the same period.
  const at::Tensor shifted = at::bitwise_left_shift(c.view({rows, count / p.codes, p.codes}), p.shift);
  const at::Tensor lo = at::bitwise_and(shifted, kWordMask), hi = at::bitwise_right_shift(shifted, kWordBits);
  at::Tensor out = at::empty({rows, count / p.codes, p.words}, at::kLong);
  for (int64_t w = 0; w < p.words; ++w)  // bits are disjoint, so summing is OR-ing
    out.select(2, w).copy_((lo * (p.word == w)).sum(2) + (hi * (p.word + 1 == w)).sum(2));
  return to_int32_bits(out.view({rows, -1}));
}

at::Tensor unpack_bits(const at::Tensor& words, int bits) {
  const Period p = checked_period(words, bits);
  const int64_t rows = words.size(0), n_words = words.size(1);
  const at::Tensor w =
      at::bitwise_and(words.to(at::kLong).contiguous(), kWordMask).view({rows, n_words / p.words, p.words});
  const at::Tensor lo = w.index_select(2, p.word), hi = w.index_select(2, (p.word + 1).clamp_max(p.words - 1));
  // hi is masked before shifting so the 64-bit shift cannot overflow; for a code that does not straddle,
  // its bits land at or above `bits` and are masked away.
  const at::Tensor v = at::bitwise_or(at::bitwise_right_shift(lo, p.shift),
                                      at::bitwise_left_shift(at::bitwise_and(hi, max_code(bits)), kWordBits - p.shift));
  return at::bitwise_and(v, max_code(bits)).to(at::kInt).view({rows, -1});
}

at::Tensor pack_bits_ref(const at::Tensor& codes, int bits, std::string_view name) {
  const at::Tensor c = checked_codes(codes, bits, name);
  const int64_t rows = c.size(0), count = c.size(1), n_words = packed_words(count, bits);
  at::Tensor out = at::zeros({rows, n_words}, at::kInt);
  const int64_t* pc = c.data_ptr<int64_t>();
  auto* po = reinterpret_cast<uint32_t*>(out.data_ptr<int32_t>());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < count; ++j) {
      const BitPosition p = code_position(j, bits);
      const uint64_t v = static_cast<uint64_t>(pc[r * count + j]) << p.shift;
      po[r * n_words + p.word] |= static_cast<uint32_t>(v);
      if (p.shift + bits > kWordBits) po[r * n_words + p.word + 1] |= static_cast<uint32_t>(v >> kWordBits);
    }
  return out;
}

at::Tensor unpack_bits_ref(const at::Tensor& words, int bits) {
  checked_period(words, bits);
  const at::Tensor w = words.to(at::kInt).contiguous();
  const int64_t rows = w.size(0), n_words = w.size(1), count = n_words * kWordBits / bits;
  at::Tensor out = at::empty({rows, count}, at::kInt);
  const auto* pw = reinterpret_cast<const uint32_t*>(w.data_ptr<int32_t>());
  int32_t* po = out.data_ptr<int32_t>();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < count; ++j) {
      const BitPosition p = code_position(j, bits);
      uint64_t v = pw[r * n_words + p.word];
      if (p.shift + bits > kWordBits) v |= static_cast<uint64_t>(pw[r * n_words + p.word + 1]) << kWordBits;
      po[r * count + j] = static_cast<int32_t>((v >> p.shift) & static_cast<uint64_t>(max_code(bits)));
    }
  return out;
}

GptqTensors pack_gptq(const QuantizedWeight& qw, GptqFormat format, std::string_view name) {
  const int bits = qw.spec.bits;
  check_gptq_bits(bits, name);
  at::Tensor zeros = qw.zeros.t();  // [G, N]
  if (format == GptqFormat::V1) {
    const at::Tensor zero0 = at::nonzero(zeros == 0);
    if (zero0.size(0) > 0)
      fail_input("{}: a zero point of 0 (group {}, output channel {}) cannot be stored in a \"gptq\" (v1) checkpoint, "
                 "which stores zero - 1 and would write -1 over the neighbouring codes; write \"gptq_v2\" or use a "
                 "symmetric grid", name, zero0[0][0].item<int64_t>(), zero0[0][1].item<int64_t>());
    zeros = zeros - 1;
  }
  GptqTensors t;
  t.qweight = pack_bits(qw.q, bits, fmt::format("{}.qweight", name)).t().contiguous();
  t.qzeros = pack_bits(zeros, bits, fmt::format("{}.qzeros", name));
  t.scales = qw.scales.t().to(at::kHalf).contiguous();
  t.g_idx = qw.g_idx.to(at::kInt).contiguous();
  return t;
}

QuantizedWeight unpack_gptq(const GptqTensors& t, int bits, GptqFormat format, std::string_view name) {
  check_gptq_bits(bits, name);
  if (t.qweight.dim() != 2 || t.qzeros.dim() != 2 || t.scales.dim() != 2 || t.g_idx.dim() != 1)
    fail_input("{}: expected qweight, qzeros, scales 2-D and g_idx 1-D, found shapes {}, {}, {}, {}", name,
               shape_str(t.qweight.sizes().vec()), shape_str(t.qzeros.sizes().vec()), shape_str(t.scales.sizes().vec()),
               shape_str(t.g_idx.sizes().vec()));
  const int64_t k = t.qweight.size(0) * kWordBits / bits, n = t.qweight.size(1), groups = t.scales.size(0);
  if (t.scales.size(1) != n || t.qzeros.size(0) != groups || t.qzeros.size(1) != packed_words(n, bits) ||
      t.g_idx.size(0) != k || groups == 0 || k % groups != 0)
    fail_input("{}: inconsistent GPTQ shapes for {} bits: qweight {}, qzeros {}, scales {}, g_idx {}; expected "
               "[K*b/32, N], [G, N*b/32], [G, N], [K] with G dividing K",
               name, bits, shape_str(t.qweight.sizes().vec()), shape_str(t.qzeros.sizes().vec()),
               shape_str(t.scales.sizes().vec()), shape_str(t.g_idx.sizes().vec()));
  if (k > 0 && (t.g_idx.min().item<int64_t>() < 0 || t.g_idx.max().item<int64_t>() >= groups))
    fail_input("{}: g_idx ranges over [{}, {}]; expected groups in [0, {})", name, t.g_idx.min().item<int64_t>(),
               t.g_idx.max().item<int64_t>(), groups);
  QuantizedWeight qw;
  qw.q = unpack_bits(t.qweight.t(), bits).to(at::kByte);
  at::Tensor zeros = unpack_bits(t.qzeros, bits);
  if (format == GptqFormat::V1) zeros = zeros + 1;
  qw.zeros = zeros.t().contiguous();
  qw.scales = t.scales.to(at::kFloat).t().contiguous();
  qw.g_idx = t.g_idx.to(at::kInt).contiguous();
  qw.spec.bits = bits;
  qw.spec.group_size = groups == 1 ? kPerChannel : k / groups;
  qw.spec.sym = (qw.zeros == (1 << (bits - 1))).all().item<bool>();
  return qw;
}

}  // namespace ptq
