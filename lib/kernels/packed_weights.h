// Weights of one linear module W[n, k] (row-major, Y = X Wᵀ) in the layout the CPU kernels read.
//
// Float kinds (F32, F16, BF16): row-major [n, k] elements as stored, row stride k. `data` may point into a
// memory-mapped checkpoint (the model stays resident at its stored size, nothing is copied).
//
// Quant: b-bit integer codes q (2 <= b <= 8) with per-(row, group) steps, dequantized w = scale * q - offset
// (offset = scale * zero; symmetric grids have zero = 2^(b-1) and store no offsets).
//   Columns are in kernel order: kernel column j holds input column perm[j] (GPTQ act-order: columns sorted by
//   group once at load, so each group is a contiguous run of `group` kernel columns); no perm = natural order.
//   Codes live in a container of c bits, c = 2 (b = 2), 4 (b = 3, 4) or 8 (b = 5..8): 3-bit codes take 4-bit
//   room and 5..7-bit codes a byte (what the kernels unpack cheaply).
//   A row is kpad = k rounded up to a whole number of 16-byte blocks and of 32 codes (the int8-activation
//   kernels' block), zero codes after k. Block layout (16 bytes):
//   code i of the block sits in byte (i % 16) at bits [c * (i / 16), c * (i / 16) + c), so one 16-byte load
//   unpacks to 8 / c vectors of 16 consecutive codes by shift-and-mask (c = 4: low nibbles are codes 0..15,
//   high nibbles 16..31; c = 8: plain bytes).
//   codes   [n][kpad * c / 8] uint8
//   scales  [n][groups] fp32 (the checkpoint's fp16 steps, exact; GGUF's block and sub-block steps, which may be <= 0)
//   offsets [n][groups] fp32 scale * zero, or GGUF's stored mins (asymmetric grids only)
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

namespace ptq::kernels {

enum class WeightKind : uint8_t { F32, F16, BF16, Quant };
const char* weight_kind_name(WeightKind k);

constexpr int kBlockBytes = 16;
constexpr int64_t kRowAlign = 32;
// Multiply-adds below which a kernel call stays on the calling thread (about 20 us of work; a parallel region costs
// a few us to start and join).
constexpr int64_t kParallelMinMacs = int64_t(1) << 18;  // codes; rows are padded to a multiple of this and of block_codes()
// Container bits for b-bit codes.
constexpr int container_bits(int bits) { return bits <= 2 ? 2 : bits <= 4 ? 4 : 8; }
// Codes per 16-byte block.
constexpr int64_t block_codes(int container) { return kBlockBytes * (8 / container); }
static_assert(container_bits(3) == 4 && container_bits(5) == 8 && container_bits(2) == 2, "code containers");
static_assert(block_codes(4) == 32 && block_codes(2) == 64 && block_codes(8) == 16, "codes per 16-byte block");

struct PackedWeights {
  WeightKind kind = WeightKind::F32;
  int64_t n = 0, k = 0;

  // Float kinds: [n, k] elements, kept alive by `owner` (or by whoever mapped them).
  const void* data = nullptr;
  std::shared_ptr<const void> owner;

  // Quant.
  int bits = 0, container = 0;
  int64_t kpad = 0, group = 0, groups = 0;
  std::vector<uint8_t> codes;
  std::vector<float> scales, offsets;
  std::vector<int32_t> perm;

  int64_t row_bytes() const { return kpad * container / 8; }
  // Bytes the weights occupy (what a forward reads).
  int64_t bytes() const;
  // Dequantized (or converted) W[r, c] in input-column order, for the references and tests.
  float at(int64_t r, int64_t c) const;
};

// Views [n, k] float data of `kind` (F32, F16 or BF16) without copying.
PackedWeights view_float_weights(WeightKind kind, const void* data, int64_t n, int64_t k,
                                 std::shared_ptr<const void> owner = nullptr);

// Packs codes q [n][k] (each < 2^bits) with `groups` groups per row: scales [n][groups] (> 0, finite), zeros
// [n][groups] (nullptr: symmetric, 2^(bits-1)), g_idx [k] the group of each input column (nullptr: column / (k /
// groups)). Every group must hold k / groups columns. Throws std::invalid_argument naming `name` otherwise.
PackedWeights pack_quantized(const uint8_t* q, int64_t n, int64_t k, int bits, int64_t groups, const float* scales,
                             const int32_t* zeros, const int32_t* g_idx, const char* name);

// Codes q [n][k] (natural column order, each < 2^bits) on an affine grid per group of k / groups columns: w = scale *
// q - offset with any finite steps, zero and negative ones included (GGUF's K-quant sub-block steps), and offsets
// [n][groups] (nullptr: symmetric, offset = 2^(bits-1) * scale). GGUF's block types load through it
// (lib/model/gguf_model.h). Throws std::invalid_argument naming `name` on a code that does not fit or a step or
// offset that is not finite.
PackedWeights pack_quantized_affine(const uint8_t* q, int64_t n, int64_t k, int bits, int64_t groups,
                                    const float* scales, const float* offsets, const char* name);

// The same from per-row bit streams (the ptq checkpoint's qweight, lib/quant/checkpoint.h): row r starts at byte
// r * stream_row_bytes of `stream`, code j occupies stream bits [j * bits, j * bits + bits), LSB first over
// little-endian bytes. No [n, k] intermediate is made; rows are packed on the OpenMP threads.
PackedWeights pack_quantized_stream(const uint8_t* stream, int64_t stream_row_bytes, int64_t n, int64_t k, int bits,
                                    int64_t groups, const float* scales, const int32_t* zeros, const int32_t* g_idx,
                                    const char* name);

// Row r of W in input-column order, dequantized or converted to fp32 (out: k floats). Embedding lookups and
// dequantize_packed use it.
void dequantize_row(const PackedWeights& w, int64_t r, float* out);

// Code of kernel column j of row r (unpacks the block layout; the references use it).
int packed_code(const PackedWeights& w, int64_t r, int64_t j);

}  // namespace ptq::kernels
