// cuBLAS, loaded at run time: the library found with dlopen and its functions with dlsym (no link-time dependency, so
// the binaries run where cuBLAS is absent and the kernels-only build keeps its statically linked CUDA runtime), one
// handle per device and thread, and the one GEMM the linear op asks of it. No CUDA type appears here (device.h's
// rule): a build without CUDA links cublas_none.cpp, which says "built without CUDA".
//
// Library: the first of kCublasCandidates that dlopen loads and that has every function used (cublasCreate_v2,
// cublasDestroy_v2, cublasSetStream_v2, cublasGemmEx, cublasGetStatusString); loaded once per process, never closed.
// Handles: created on first use by each thread for the device current to it, bound to the call's stream before each
// GEMM, destroyed when the thread ends (for the main thread at exit, before the CUDA runtime's own teardown: glibc
// runs a thread's thread_local destructors before the atexit handlers and the shared libraries' destructors).
#pragma once

#include <cstdint>
#include <string>

#include "kernels/packed_weights.h"

namespace ptq::kernels::cuda {

// Names tried in order: the soname (LD_LIBRARY_PATH, the ld.so cache), the development link, the toolkit's default
// location.
inline constexpr const char* kCublasCandidates[] = {"libcublas.so.13", "libcublas.so",
                                                    "/usr/local/cuda/lib64/libcublas.so.13"};

// Why the library could not be loaded (each candidate's dlerror, or the function it lacks); empty once it is loaded
// with every function. Touches no device.
std::string cublas_load_error();
// The candidate that loaded (empty if none).
std::string cublas_library();

// Why the cuBLAS GEMM cannot run on this thread's current device: cublas_load_error(), no current device, or the
// failed cublasCreate (remembered: it is not retried); empty when it can. Creates this thread's handle for the
// device if there is none yet.
std::string cublas_unavailable();

// cublasGemmEx's shape arguments for y [m, n] = x [m, k] · Wᵀ, all three row-major (W's rows ldw apart, x's ldx):
// read column-major, y is C (n x m, ldc = n), W is A stored k x n (lda = ldw) and used transposed, x is B stored k x m
// (ldb = ldx) used as is: C = Aᵀ B. The one place these are decided; the [cuda-host] tests run them through the BLAS
// definition of the call on the CPU against linear_ref.
struct GemmExShape {
  bool trans_a = true, trans_b = false;
  int64_t rows = 0, cols = 0, depth = 0;  // BLAS m, n, k: C is rows x cols, the sum runs over depth
  int64_t lda = 0, ldb = 0, ldc = 0;
};
inline GemmExShape cublas_xwt_shape(int64_t m, int64_t n, int64_t k, int64_t ldw, int64_t ldx) {
  GemmExShape s;
  s.rows = n, s.cols = m, s.depth = k;
  s.lda = ldw, s.ldb = ldx, s.ldc = n;
  return s;
}

// y = x Wᵀ (accumulate: y += x Wᵀ) for 16-bit weights W [n, k] (kind F16 or BF16, row stride ldw elements) and
// activations x [m, k] of the same type (row stride ldx), y [m, n] fp32 (row stride n); device pointers. One
// cublasGemmEx with fp32 accumulation (CUBLAS_COMPUTE_32F): in cuBLAS's column-major terms C (n x m, ldc = n) =
// op(A) op(B) with A = W (CUBLAS_OP_T, lda = ldw), B = x (CUBLAS_OP_N, ldb = ldx), alpha = 1, beta = accumulate.
// Runs on `stream` (a cudaStream_t; nullptr: the default stream) without waiting. Throws Error where
// cublas_unavailable() is not empty or the call fails (naming the shape and cuBLAS's status), std::invalid_argument
// for another kind or a size past cuBLAS's int range.
void cublas_gemm_xwt(WeightKind kind, const void* w, int64_t ldw, const void* x, int64_t ldx, int64_t m, int64_t n,
                     int64_t k, bool accumulate, float* y, void* stream);

}  // namespace ptq::kernels::cuda
