// Register fragment layouts of the tensor-core instructions the kernels use (PTX ISA, "Matrix fragments for mma.m16n8k32"
// with .s8 and "for mma.m16n8k16" with .f16), as PTQ_HD functions: the kernels index with them, and the host emulation
// in tests/kernels/test_cuda_linear.cpp rebuilds each matrix from the 32 lanes' fragments with them. lane = 4 · group
// + quad (group = lane / 4, quad = lane % 4). A is row-major (16 rows), B is "col" (8 columns, each column's k values
// consecutive), C is 16 x 8.
//
//   m16n8k32 s8   A reg r (4 bytes): A[group + 8 (r % 2)][4 quad + 16 (r / 2) + byte]
//                 B reg r (4 bytes): B[4 quad + 16 r + byte][group]
//   m16n8k16 f16  A reg r (2 halves): A[group + 8 (r % 2)][2 quad + 8 (r / 2) + half]   (the low 16 bits: half 0)
//                 B reg r (2 halves): B[2 quad + 8 r + half][group]
//   both          C reg r: C[group + 8 (r / 2)][2 quad + r % 2]
#pragma once

#include "core/host_device.h"

namespace ptq::kernels::cuda {

PTQ_HD int mma_a_row(int lane, int reg) { return lane / 4 + 8 * (reg % 2); }
PTQ_HD int mma_a_col(int lane, int reg) { return 4 * (lane % 4) + 16 * (reg / 2); }    // s8: first of 4 bytes
PTQ_HD int mma_b_row(int lane, int reg) { return 4 * (lane % 4) + 16 * reg; }          // s8: first of 4 bytes
PTQ_HD int hmma_a_col(int lane, int reg) { return 2 * (lane % 4) + 8 * (reg / 2); }    // f16: first of 2 halves
PTQ_HD int hmma_b_row(int lane, int reg) { return 2 * (lane % 4) + 8 * reg; }          // f16: first of 2 halves
PTQ_HD int mma_b_col(int lane) { return lane / 4; }
PTQ_HD int mma_c_row(int lane, int reg) { return lane / 4 + 8 * (reg / 2); }
PTQ_HD int mma_c_col(int lane, int reg) { return 2 * (lane % 4) + reg % 2; }

// The tensor-core GEMMs' tiles: a warp computes 32 rows x 32 tokens (2 x 4 mma tiles), a block 2 x 2 warps.
constexpr int kMmaWarpRows = 32, kMmaWarpTokens = 32, kMmaBlockRows = 64, kMmaBlockTokens = 64, kMmaThreads = 128;

}  // namespace ptq::kernels::cuda
