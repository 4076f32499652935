// Where the kernels layer's op sets keep their data: host memory or a CUDA device's. Backend (backend.h) and GptqOps
// (gptq_ops.h) both take their buffers through this interface; OnHost and OnCuda implement it once for every op set
// (class CudaBackend final : public OnCuda<Backend> { ... the ops ... }).
#pragma once

#include <cstddef>
#include <cstring>
#include <memory>

#include "kernels/cuda/device.h"
#include "kernels/host_memory.h"

namespace ptq::kernels {

class Memory {
 public:
  virtual ~Memory() = default;
  // Zero-filled memory of `bytes` bytes, freed with the last copy of the pointer.
  virtual std::shared_ptr<void> alloc(size_t bytes) = 0;
  virtual void to_device(void* dst, const void* src, size_t bytes) = 0;
  virtual void to_host(void* dst, const void* src, size_t bytes) = 0;
  // Waits for the work queued so far (and reports its errors).
  virtual void synchronize() = 0;
};

// Host memory: the CPU reference backend, the GPTQ ops' host emulation.
template <class Ops>
class OnHost : public Ops {
 public:
  std::shared_ptr<void> alloc(size_t bytes) override { return host_alloc_zeroed(bytes); }
  void to_device(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void to_host(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void synchronize() override {}
};

// The first CUDA device's memory (cuda/device.h; a build without CUDA throws where it is used).
template <class Ops>
class OnCuda : public Ops {
 public:
  std::shared_ptr<void> alloc(size_t bytes) override { return cuda::alloc_zeroed(bytes); }
  void to_device(void* dst, const void* src, size_t bytes) override { cuda::copy_to_device(dst, src, bytes); }
  void to_host(void* dst, const void* src, size_t bytes) override { cuda::copy_to_host(dst, src, bytes); }
  void synchronize() override { cuda::synchronize(); }
};

}  // namespace ptq::kernels
