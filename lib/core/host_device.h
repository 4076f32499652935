// PTQ_HD marks small inline functions that are compiled for the CPU and, by nvcc, also for CUDA devices (the
// weight decoders the CUDA kernels share with their host emulation, the fp16/bf16 conversions). Plain `inline`
// for a host compiler.
#pragma once

#if defined(__CUDACC__)
#define PTQ_HD __host__ __device__ __forceinline__
#define PTQ_UNROLL _Pragma("unroll")  // before a loop of constant trip count whose arrays must stay in registers
#else
#define PTQ_HD inline
#define PTQ_UNROLL
#endif

// a * b rounded once, never fused with a following add: nvcc contracts a * b + c into an FMA by default, the host
// compiler (no FMA in the base ISA) does not; code whose device and host results must agree bit for bit multiplies
// through these.
#if defined(__CUDA_ARCH__)
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
#else
inline float mul_rn(float a, float b) { return a * b; }
inline double mul_rn(double a, double b) { return a * b; }
#endif
