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

}  // namespace ptq::kernels
