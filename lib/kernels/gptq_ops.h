// The operations of GPTQ's solve that run on a device (algorithms/gptq.cpp's gptq_quantize_on drives them; the math
// is ALGORITHMS.md "GPTQ" steps 4-6). Two implementations: CUDA (cuda/gptq.cu) and its host emulation, the same
// per-thread code (cuda/gptq_common.h) run one thread after another on the CPU, which is how the driver and the
// kernels' arithmetic are tested where no GPU is present.
//
// Pointers passed to the ops are the implementation's memory (alloc). Matrices are row-major.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "kernels/memory.h"

namespace ptq::kernels {

// One GPTQ sweep over W^T, the view gptq_sweep_block works on. Row r of the sweep is output channel r; column i is
// input column i in sweep order (after act-order's permutation).
constexpr int64_t kGptqDeviceBlock = 128;  // the sweep's widest block of columns

struct GptqSweep {
  float* wt = nullptr;               // [in, out] W^T, the current (error-updated) weights
  const float* u = nullptr;          // [in, in] U, upper: Uᵀ U = (H + λI)⁻¹
  float* err = nullptr;              // [block, out] the block's errors (w - q) / U_ii, for the lazy update
  uint8_t* codes = nullptr;          // [in, out]
  float* scale = nullptr;            // [groups, out] grids: given (static groups, per-tensor) or written at
  float* inv_scale = nullptr;        //   each group's first column (grids_at_starts)
  float* zero = nullptr;
  const int32_t* column_group = nullptr;  // [in] the group of column i
  double* loss = nullptr;            // [out] Σ over the row's columns of (w - q)² / U_ii² / 2, accumulated
  int64_t in = 0, out = 0;
  int64_t width = 0;                 // columns per group (in: per channel)
  int bits = 4;
  bool sym = true, mse = false;
  bool grids_at_starts = true;       // compute column i's grid when i % width == 0, from the current weights
};

// Memory (alloc, to_device, to_host, synchronize): memory.h.
class GptqOps : public Memory {
 public:
  virtual const char* name() const = 0;  // "cuda", "cuda-host-emulation"

  // C [m, n] = beta · C + alpha · Aᵀ B, A [k, m] and B [k, n]; leading dimensions (row strides) lda, ldb, ldc; fp32
  // with each dot product accumulated in k order by FMA. GPTQ's lazy batch update and the Hessian's xᵀx.
  virtual void gemm_at_b(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b,
                         int64_t ldb, float beta, float* c, int64_t ldc) = 0;

  // U [n, n] fp32, upper, with Uᵀ U = (H + damp · I)⁻¹, from H [n, n] fp32 (symmetric). Computed in double as the
  // inverse of the lower Cholesky factor of H reversed (J H J = L Lᵀ, J the reversal, gives U = J L⁻¹ J): one
  // factorisation and one triangular inverse. work: 2 n² doubles. False when H + damp · I is not positive definite.
  virtual bool inverse_cholesky_upper(const float* h, int64_t n, double damp, double* work, float* u) = 0;

  // Columns [i1, i2) of the sweep, every row: each column quantized on its group's grid (computed first where a group
  // starts), its error pushed onto the block's later columns, err[i - i1] written for the lazy update of the columns
  // past i2 (gemm_at_b). A group that starts in the block must end in it or start at i1 (gptq_device_block).
  virtual void sweep_block(const GptqSweep& s, int64_t i1, int64_t i2) = 0;
};

// A sweep's buffers in `ops`' memory, zero-filled, for W^T [in, out] with `groups` grids per row (err for blocks of
// up to kGptqDeviceBlock columns); `view` points into them. The caller fills wt, the given grids and column_group, and
// sets view.u and the grid parameters (width, bits, sym, mse, grids_at_starts).
struct GptqSweepBuffers {
  std::shared_ptr<void> wt, err, codes, scale, inv_scale, zero, column_group, loss;
  GptqSweep view;
};
GptqSweepBuffers alloc_gptq_sweep(GptqOps& ops, int64_t in, int64_t out, int64_t groups);

// The lazy-batch width the device sweep uses for groups of `width` columns: at most kGptqDeviceBlock, and either a
// multiple of width (every group inside one block) or a divisor of it (every group starts a block).
int64_t gptq_device_block(int64_t width, int64_t in);

// The whole sweep: blocks of gptq_device_block(width or, where no grid is computed during the sweep, in) columns,
// each followed by the lazy update of every later column, wt[i2:] -= U[i1:i2, i2:]ᵀ err (gemm_at_b).
void gptq_sweep(GptqOps& ops, const GptqSweep& s);

// The first CUDA device; throws cuda::Error saying why where there is none (or the build has no CUDA).
std::unique_ptr<GptqOps> cuda_gptq_ops();
// cuda/gptq_common.h's per-thread code run on the CPU in the kernels' launch order (slow: tests and small shapes).
std::unique_ptr<GptqOps> cuda_gptq_host_emulation();

}  // namespace ptq::kernels
