#include "kernels/packed_weights.h"

#include <algorithm>
#include <cstring>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>

#include <fmt/format.h>

#include "core/half.h"

namespace ptq::kernels {

namespace {

[[noreturn]] void bad(const char* name, const std::string& what) {
  throw std::invalid_argument(fmt::format("module \"{}\": {}", name, what));
}

int64_t element_bytes(WeightKind k) { return k == WeightKind::F32 ? 4 : 2; }

}  // namespace

const char* weight_kind_name(WeightKind k) {
  switch (k) {
    case WeightKind::F32: return "F32";
    case WeightKind::F16: return "F16";
    case WeightKind::BF16: return "BF16";
    case WeightKind::Quant: return "quant";
  }
  return "?";
}

int64_t PackedWeights::bytes() const {
  if (kind != WeightKind::Quant) return n * k * element_bytes(kind);
  return int64_t(codes.size()) + int64_t(scales.size() + offsets.size()) * 4 + int64_t(perm.size()) * 4;
}

int packed_code(const PackedWeights& w, int64_t r, int64_t j) {
  const int64_t per_block = block_codes(w.container);
  const int64_t block = j / per_block, i = j % per_block;
  const uint8_t byte = w.codes[r * w.row_bytes() + block * kBlockBytes + i % kBlockBytes];
  return (byte >> (w.container * (i / kBlockBytes))) & ((1 << w.container) - 1);
}

namespace {

// Element i of float data (mapped tensors need not be aligned to their element size).
float float_element(WeightKind kind, const void* data, int64_t i) {
  const auto* bytes = static_cast<const uint8_t*>(data);
  if (kind == WeightKind::F32) {
    float f;
    std::memcpy(&f, bytes + 4 * i, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, bytes + 2 * i, 2);
  return kind == WeightKind::F16 ? fp16_to_f32(h) : bf16_to_f32(h);
}

}  // namespace

void dequantize_row(const PackedWeights& w, int64_t r, float* out) {
  if (r < 0 || r >= w.n) throw std::invalid_argument(fmt::format("row {} outside [0, {})", r, w.n));
  if (w.kind != WeightKind::Quant) {
    for (int64_t c = 0; c < w.k; ++c) out[c] = float_element(w.kind, w.data, r * w.k + c);
    return;
  }
  const float zero_sym = float(1 << (w.bits - 1));
  for (int64_t j = 0; j < w.k; ++j) {
    const int64_t g = j / w.group;
    const float s = w.scales[r * w.groups + g];
    const float o = w.offsets.empty() ? s * zero_sym : w.offsets[r * w.groups + g];
    out[w.perm.empty() ? j : w.perm[j]] = s * float(packed_code(w, r, j)) - o;
  }
}

float PackedWeights::at(int64_t r, int64_t c) const {
  if (kind != WeightKind::Quant) return float_element(kind, data, r * k + c);
  // Input column c sits at kernel column j with perm[j] = c.
  int64_t j = c;
  if (!perm.empty()) j = std::find(perm.begin(), perm.end(), int32_t(c)) - perm.begin();
  const int64_t g = j / group;
  const float s = scales[r * groups + g];
  const float o = offsets.empty() ? s * float(1 << (bits - 1)) : offsets[r * groups + g];
  return s * float(packed_code(*this, r, j)) - o;
}

PackedWeights view_float_weights(WeightKind kind, const void* data, int64_t n, int64_t k,
                                 std::shared_ptr<const void> owner) {
  if (kind == WeightKind::Quant) throw std::invalid_argument("view_float_weights: kind must be F32, F16 or BF16");
  if (n <= 0 || k <= 0 || data == nullptr)
    throw std::invalid_argument(fmt::format("view_float_weights: empty weight [{}, {}]", n, k));
  PackedWeights w;
  w.kind = kind;
  w.n = n;
  w.k = k;
  w.data = data;
  w.owner = std::move(owner);
  return w;
}

namespace {

// Layout and kernel column order, codes zeroed; steps and offsets are set by the caller.
PackedWeights pack_shape(int64_t n, int64_t k, int bits, int64_t groups, const int32_t* g_idx, const char* name) {
  if (bits < 2 || bits > 8) bad(name, fmt::format("{} bits; the kernels take 2 to 8", bits));
  if (n <= 0 || k <= 0) bad(name, fmt::format("empty weight [{}, {}]", n, k));
  if (groups <= 0 || k % groups != 0) bad(name, fmt::format("{} groups do not divide {} input columns", groups, k));
  PackedWeights w;
  w.kind = WeightKind::Quant;
  w.n = n;
  w.k = k;
  w.bits = bits;
  w.container = container_bits(bits);
  w.groups = groups;
  w.group = k / groups;
  const int64_t pad_to = std::max<int64_t>(block_codes(w.container), kRowAlign);
  w.kpad = (k + pad_to - 1) / pad_to * pad_to;

  // Kernel order: columns sorted by group (stable), so act-order groups become contiguous runs.
  if (g_idx != nullptr) {
    std::vector<int64_t> count(groups, 0);
    for (int64_t c = 0; c < k; ++c) {
      if (g_idx[c] < 0 || g_idx[c] >= groups) bad(name, fmt::format("g_idx[{}] = {} outside [0, {})", c, g_idx[c], groups));
      ++count[g_idx[c]];
    }
    for (int64_t g = 0; g < groups; ++g)
      if (count[g] != w.group)
        bad(name, fmt::format("group {} holds {} columns, expected {} (k / groups)", g, count[g], w.group));
    std::vector<int32_t> perm(k);
    std::iota(perm.begin(), perm.end(), 0);
    std::stable_sort(perm.begin(), perm.end(), [&](int32_t a, int32_t b) { return g_idx[a] < g_idx[b]; });
    bool identity = true;
    for (int64_t c = 0; c < k && identity; ++c) identity = perm[c] == c;
    if (!identity) w.perm = std::move(perm);
  }
  w.codes.assign(n * w.row_bytes(), 0);
  return w;
}

// pack_shape + steps from integer zeros (symmetric when every zero is 2^(bits-1)); codes filled by the caller.
PackedWeights pack_layout(int64_t n, int64_t k, int bits, int64_t groups, const float* scales, const int32_t* zeros,
                          const int32_t* g_idx, const char* name) {
  PackedWeights w = pack_shape(n, k, bits, groups, g_idx, name);
  const int max_code = (1 << bits) - 1;
  const int32_t zero_sym = 1 << (bits - 1);
  bool sym = true;
  if (zeros != nullptr)
    for (int64_t i = 0; i < n * groups && sym; ++i) sym = zeros[i] == zero_sym;
  w.scales.resize(n * groups);
  if (!sym) w.offsets.resize(n * groups);
  for (int64_t i = 0; i < n * groups; ++i) {
    const float s = scales[i];
    if (!(s > 0) || !std::isfinite(s))
      bad(name, fmt::format("scale [{}, {}] = {} is not finite and > 0", i / groups, i % groups, s));
    w.scales[i] = s;
    if (!sym) {
      if (zeros[i] < 0 || zeros[i] > max_code + 1)
        bad(name, fmt::format("zero [{}, {}] = {} outside [0, {}]", i / groups, i % groups, zeros[i], max_code + 1));
      w.offsets[i] = s * float(zeros[i]);
    }
  }
  return w;
}

// Fills w.codes from code(r, c) (input column c), rows in parallel. Returns the first (row * k + column) whose
// code does not fit, or -1.
template <class CodeOf>
int64_t fill_codes(PackedWeights& w, const CodeOf& code) {
  const int64_t per_block = block_codes(w.container), rb = w.row_bytes();
  const int max_code = (1 << w.bits) - 1;
  int64_t bad_at = -1;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < w.n; ++r) {
    uint8_t* row = w.codes.data() + r * rb;
    for (int64_t j = 0; j < w.k; ++j) {
      const int64_t col = w.perm.empty() ? j : w.perm[j];
      const int c = code(r, col);
      if (c > max_code) {
#pragma omp critical
        if (bad_at < 0 || r * w.k + col < bad_at) bad_at = r * w.k + col;
        continue;
      }
      const int64_t block = j / per_block, i = j % per_block;
      row[block * kBlockBytes + i % kBlockBytes] |= uint8_t(c << (w.container * (i / kBlockBytes)));
    }
  }
  return bad_at;
}

}  // namespace

PackedWeights pack_quantized(const uint8_t* q, int64_t n, int64_t k, int bits, int64_t groups, const float* scales,
                             const int32_t* zeros, const int32_t* g_idx, const char* name) {
  PackedWeights w = pack_layout(n, k, bits, groups, scales, zeros, g_idx, name);
  const int64_t bad_at = fill_codes(w, [&](int64_t r, int64_t c) { return int(q[r * k + c]); });
  if (bad_at >= 0)
    bad(name, fmt::format("code {} at [{}, {}] does not fit {} bits", q[bad_at], bad_at / k, bad_at % k, bits));
  return w;
}

PackedWeights pack_quantized_affine(const uint8_t* q, int64_t n, int64_t k, int bits, int64_t groups,
                                    const float* scales, const float* offsets, const char* name) {
  PackedWeights w = pack_shape(n, k, bits, groups, nullptr, name);
  w.scales.assign(scales, scales + n * groups);
  if (offsets != nullptr) w.offsets.assign(offsets, offsets + n * groups);
  for (int64_t i = 0; i < n * groups; ++i)
    if (!std::isfinite(w.scales[i]) || (offsets != nullptr && !std::isfinite(w.offsets[i])))
      bad(name, fmt::format("step or offset [{}, {}] is not finite", i / groups, i % groups));
  const int64_t bad_at = fill_codes(w, [&](int64_t r, int64_t c) { return int(q[r * k + c]); });
  if (bad_at >= 0)
    bad(name, fmt::format("code {} at [{}, {}] does not fit {} bits", q[bad_at], bad_at / k, bad_at % k, bits));
  return w;
}

PackedWeights pack_quantized_stream(const uint8_t* stream, int64_t stream_row_bytes, int64_t n, int64_t k, int bits,
                                    int64_t groups, const float* scales, const int32_t* zeros, const int32_t* g_idx,
                                    const char* name) {
  if (stream_row_bytes * 8 < k * bits)
    bad(name, fmt::format("a row of {} bytes cannot hold {} codes of {} bits", stream_row_bytes, k, bits));
  PackedWeights w = pack_layout(n, k, bits, groups, scales, zeros, g_idx, name);
  if (w.perm.empty() && (bits == 4 || bits == 8)) {
    // The common grids in natural order, a block at a time (the generic path below extracts and ORs code by code:
    // a quarter of a 1B model's load time). 8 bits: the stream is the row. 4 bits: stream byte j holds codes 2j (low
    // nibble) and 2j + 1; block byte p takes code p low and code p + 16 high.
    const int64_t rb = w.row_bytes();
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < n; ++r) {
      const uint8_t* src = stream + r * stream_row_bytes;
      uint8_t* dst = w.codes.data() + r * rb;
      if (bits == 8) {
        std::memcpy(dst, src, size_t(k));
        continue;
      }
      auto code = [&](int64_t j) { return j < k ? (src[j >> 1] >> (4 * (j & 1))) & 0xF : 0; };
      for (int64_t j0 = 0; j0 < k; j0 += 32)
        for (int p = 0; p < 16; ++p) dst[j0 / 2 + p] = uint8_t(code(j0 + p) | (code(j0 + p + 16) << 4));
    }
    return w;
  }
  const int mask = (1 << bits) - 1;
  // A code of <= 8 bits spans at most two bytes; the second is read only when the code reaches into it.
  fill_codes(w, [&](int64_t r, int64_t c) {
    const uint8_t* row = stream + r * stream_row_bytes;
    const int64_t bit = c * bits, byte = bit / 8;
    const int shift = int(bit % 8);
    unsigned v = row[byte];
    if (shift + bits > 8) v |= unsigned(row[byte + 1]) << 8;
    return int((v >> shift) & unsigned(mask));
  });
  return w;
}

}  // namespace ptq::kernels
