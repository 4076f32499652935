// What the int8-activation kernels (cpu/linear_q8_<isa>.cpp) share, defined in linear_q8.cpp (plain scalar code,
// compiled without ISA flags).
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/linear.h"

namespace ptq::kernels {

// out[b] = the group of 32-column block b (w.kpad / 32 blocks; one group per row: all 0).
void q8_block_groups(const PackedWeights& w, std::vector<int32_t>& out);
// xsum[g] = Σ over group g's blocks of d[b] · Σ q (the rounded activations' group sums, for the offset term).
void q8_group_sums(const PackedWeights& w, const int8_t* q, const float* d, std::vector<float>& xsum);

// Row r's offset term is mul · Σ_g off[g] · Σx̂_g: off = the row's offsets (asymmetric grids, mul 1) or its steps
// (symmetric: offset = 2^(b-1) · scale, mul 2^(b-1)). Inline and ISA-free: the kernels call it per row.
struct Q8RowOffsets {
  const float* off;
  float mul;
};
inline Q8RowOffsets q8_row_offsets(const PackedWeights& w, int64_t r) {
  if (w.offsets.empty()) return {w.scales.data() + r * w.groups, float(1 << (w.bits - 1))};
  return {w.offsets.data() + r * w.groups, 1.0f};
}

}  // namespace ptq::kernels
