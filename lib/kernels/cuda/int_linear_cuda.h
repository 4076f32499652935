// The integer linear op (int_linear.h) on a CUDA device: int8 activation codes x int8 weights, exact int32 sums per
// weight group (dp4a), the same double epilogue in the same order, so y equals int_linear_ref bit for bit.
//
// Device layout: weights w [n, k] int8 row-major, steps s [n, groups] fp32; codes c [m, k] int8; activation steps a
// [m] (per token) or [1]. Groups are whole dwords (k / groups a multiple of 4). Kernels (int_linear.cu):
//   gemv  m <= 4: one warp per output row; for each group the lanes take its dwords in turn (group_partial), the warp
//         sums them with shuffles (exact), lane 0 runs the epilogue
//   mma   m > 4, groups of whole 32-column steps: tensor cores (mma.sync m16n8k32 s8); a warp 32 rows x 32 tokens
//         (2 x 4 mma tiles), fragments read as dwords from the row-major bytes, each group's int32 sums folded into
//         double sums at its end (layout and helpers in int_linear_common.h)
//   gemm  m > 4, other groups: 64 x 64 output tiles over 8-dword slices in shared memory; each thread keeps 4 x 4
//         int32 group sums (dp4a) and folds them into its double sums at every group boundary
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/cuda/device.h"
#include "kernels/int_linear.h"

namespace ptq::kernels::cuda {

constexpr int64_t kIntLinearCudaMaxWidth = 131071;  // floor((2^31 - 1) / 128²): any int8 codes and weights

struct DeviceIntWeights {
  int64_t n = 0, k = 0, groups = 1;
  Buffer w, s;
};

// Whether the device kernels take these weights: every w in [-128, 127], groups of a multiple of 4 columns and at most
// kIntLinearCudaMaxWidth (scans the weights).
bool int_linear_supports(const IntWeights& w);
// Copies w to the device as bytes; throws std::invalid_argument (naming what does not fit) where unsupported.
DeviceIntWeights upload(const IntWeights& w);

// y [m, n] from device codes c [m, k] (int8) and steps a; bias [n] or null (device pointers). Runs on `stream`.
void int_linear(const DeviceIntWeights& w, const int8_t* c, const float* a, int64_t m, bool per_token, float* y,
                const float* bias = nullptr, const Stream* stream = nullptr);
// Codes c [m, k] (int8) and steps a [m] of x [m, x_cols] (device pointers; perm [k] int32 or null): act_codes_ref's,
// bit for bit, where act_codes_ref accepts x. Where it throws (a NaN input, or a non-finite step: an Inf in a
// per-token row), the kernel cannot: it writes 0 codes there and sets *nonfinite = 1 (a device int, or null: not
// reported), which the caller reads back when it next synchronizes (the backend's take_nonfinite_act_input). One
// block per token; per token the block reduces the row's range first. Runs on `stream`.
void act_codes(const ActCodes& p, const float* x, int64_t m, int64_t x_cols, int64_t k, const int32_t* perm,
               int8_t* c, float* a, int* nonfinite = nullptr, const Stream* stream = nullptr);

// Weights whose groups are not whole dwords, each group padded with zero columns to whole dwords (what upload takes),
// and the group-order column map of the codes that go with them: padded column j reads input column perm[j] (the
// caller's perm, or the natural order), a padding column reads its group's first column, whose code then meets a zero
// weight: the int32 group sums, hence y, are the unpadded module's exactly. Groups already whole dwords: a copy.
struct DwordPadded {
  std::vector<int16_t> w;     // [n, k'] with k' = groups · round_up(k / groups, 4)
  std::vector<int32_t> perm;  // [k']
  IntWeights view;            // over w (steps: the caller's)
};
DwordPadded pad_groups_to_dwords(const IntWeights& w, const int32_t* perm);
// Whether upload takes these weights once padded: int_linear_supports but for the dword rule (no device needed).
bool int_linear_supports_padded(const IntWeights& w);

// The same from host int16 codes (each in [-128, 127], else std::invalid_argument) and host y: tests, benchmarks.
void int_linear_host(const DeviceIntWeights& w, const IntActivations& x, float* y, const float* bias = nullptr);

}  // namespace ptq::kernels::cuda
