// device.h in a build without CUDA (PTQ_WITH_CUDA=OFF): no device, and any use of device memory says why.
#include "kernels/cuda/device.h"

namespace ptq::kernels::cuda {

void throw_built_without_cuda() {
  throw Error("this ptq was built without CUDA (configure with -DPTQ_WITH_CUDA=ON)");
}

bool built_with_cuda() { return false; }
int device_count() { return 0; }
std::string unavailable_reason() { return "built without CUDA (PTQ_WITH_CUDA=OFF)"; }
DeviceInfo device_info(int) { throw_built_without_cuda(); }

Stream::Stream() { throw_built_without_cuda(); }
Stream::~Stream() = default;
void Stream::synchronize() const { throw_built_without_cuda(); }

Buffer::Buffer(size_t bytes) : bytes_(bytes) {
  if (bytes > 0) throw_built_without_cuda();
}
Buffer::~Buffer() = default;
Buffer::Buffer(Buffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr; o.bytes_ = 0; }
Buffer& Buffer::operator=(Buffer&& o) noexcept {
  ptr_ = o.ptr_;
  bytes_ = o.bytes_;
  o.ptr_ = nullptr;
  o.bytes_ = 0;
  return *this;
}
void Buffer::upload(const void*, size_t, size_t) { throw_built_without_cuda(); }
void Buffer::download(void*, size_t, size_t) const { throw_built_without_cuda(); }
void Buffer::zero() {}

void copy_to_device(void*, const void*, size_t) { throw_built_without_cuda(); }
void copy_to_host(void*, const void*, size_t) { throw_built_without_cuda(); }
void synchronize() { throw_built_without_cuda(); }
void check_launch(const char*) { throw_built_without_cuda(); }

}  // namespace ptq::kernels::cuda
