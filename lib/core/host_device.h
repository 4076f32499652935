// PTQ_HD marks small inline functions that are compiled for the CPU and, by nvcc, also for CUDA devices (the
// weight decoders the CUDA kernels share with their host emulation, the fp16/bf16 conversions). Plain `inline`
// for a host compiler.
#pragma once

#if defined(__CUDACC__)
#define PTQ_HD __host__ __device__ __forceinline__
#else
#define PTQ_HD inline
#endif
