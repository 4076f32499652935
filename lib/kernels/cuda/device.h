// The CUDA device layer of the kernels: whether a device is there, device memory as RAII buffers, streams, and
// CUDA errors as exceptions carrying the CUDA error string. No CUDA type appears here, so every layer (and a build
// without CUDA) includes it: a build with PTQ_WITH_CUDA=OFF links device_none.cpp, whose device_count() is 0 and
// whose buffers and streams throw Error("built without CUDA").
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>

namespace ptq::kernels::cuda {

// A failed CUDA call or a use of CUDA where there is none: the message names the operation and gives the CUDA
// error string (for example "cudaMalloc(1073741824 bytes): out of memory").
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws Error("this ptq was built without CUDA ..."): what every function of a build without CUDA does
// (device_none.cpp defines it; the other *_none.cpp files call it).
[[noreturn]] void throw_built_without_cuda();

// Whether this build compiled the CUDA kernels (PTQ_WITH_CUDA=ON).
bool built_with_cuda();
// Devices the process can use: 0 without a CUDA build, a driver, or a device (never throws).
int device_count();
// Why device_count() is 0 ("built without CUDA (PTQ_WITH_CUDA=OFF)", or the CUDA runtime's message, such as "CUDA
// driver version is insufficient for CUDA runtime version"); empty when a device is there.
std::string unavailable_reason();

struct DeviceInfo {
  std::string name;
  int sm = 0;                   // compute capability, major * 10 + minor (90 for Hopper)
  int multiprocessors = 0;
  int64_t memory_bytes = 0;
  double peak_bandwidth_gbs = 0;  // from the memory clock and bus width the device reports (1e9 bytes / s)
};
DeviceInfo device_info(int device = 0);

// A CUDA stream (owned). Kernels take a `const Stream*`; nullptr is the legacy default stream.
class Stream {
 public:
  Stream();
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  void* handle() const { return handle_; }  // a cudaStream_t
  void synchronize() const;

 private:
  void* handle_ = nullptr;
};

// Device memory of `bytes` bytes (owned, move-only). Copies are synchronous (they wait for the default stream).
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(size_t bytes);
  ~Buffer();
  Buffer(Buffer&& o) noexcept;
  Buffer& operator=(Buffer&& o) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  size_t bytes() const { return bytes_; }
  bool empty() const { return bytes_ == 0; }
  void* data() { return ptr_; }
  const void* data() const { return ptr_; }
  template <class T> T* as() { return static_cast<T*>(ptr_); }
  template <class T> const T* as() const { return static_cast<const T*>(ptr_); }

  // Host -> device and device -> host copies of `bytes` bytes at byte `offset` of the buffer; throw Error when they
  // do not fit.
  void upload(const void* src, size_t bytes, size_t offset = 0);
  void download(void* dst, size_t bytes, size_t offset = 0) const;
  void zero();

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// A buffer holding a copy of `n` host elements.
template <class T>
Buffer to_device(const T* src, size_t n) {
  Buffer b(n * sizeof(T));
  if (n > 0) b.upload(src, n * sizeof(T));
  return b;
}

// Zero-filled device memory of `bytes` bytes (at least 1) held by the returned pointer: the memory the backends
// (backend.h, gptq_ops.h) hand out.
inline std::shared_ptr<void> alloc_zeroed(size_t bytes) {
  auto b = std::make_shared<Buffer>(bytes > 0 ? bytes : 1);
  b->zero();
  return std::shared_ptr<void>(b, b->data());
}

// Copies between host memory and device memory at raw device addresses (inside Buffers), synchronously.
void copy_to_device(void* dst, const void* src, size_t bytes);
void copy_to_host(void* dst, const void* src, size_t bytes);

// Waits for all work on the device; throws Error with the first asynchronous error a kernel raised.
void synchronize();
// Throws Error naming `what` if the last kernel launch failed (a bad configuration, no kernel image for this GPU).
void check_launch(const char* what);

}  // namespace ptq::kernels::cuda
