// Zero-filled host memory of `bytes` bytes (at least 1), freed with the last copy of the pointer: memory.h's OnHost hands
// it out; cuda::alloc_zeroed is the device's.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <memory>
#include <new>

namespace ptq::kernels {

inline std::shared_ptr<void> host_alloc_zeroed(size_t bytes) {
  void* p = std::calloc(bytes > 0 ? bytes : 1, 1);
  if (p == nullptr) throw std::bad_alloc();
  return std::shared_ptr<void>(p, std::free);
}

}  // namespace ptq::kernels
