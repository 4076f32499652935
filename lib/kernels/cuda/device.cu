// CUDA build of device.h (PTQ_WITH_CUDA=ON).
#include "kernels/cuda/device.h"

#include <cuda_runtime.h>

#include <string>
#include <utility>

#include "kernels/cuda/launch.h"

namespace ptq::kernels::cuda {

bool built_with_cuda() { return true; }

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

std::string unavailable_reason() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    // Without any NVIDIA driver the runtime says "CUDA driver version is insufficient for CUDA runtime version".
    return std::string("no usable CUDA driver or device (CUDA runtime: ") + cudaGetErrorString(e) + ")";
  }
  return n == 0 ? "no CUDA device" : "";
}

DeviceInfo device_info(int device) {
  cudaDeviceProp p{};
  check(cudaGetDeviceProperties(&p, device), "cudaGetDeviceProperties(" + std::to_string(device) + ")");
  DeviceInfo d;
  d.name = p.name;
  d.sm = p.major * 10 + p.minor;
  d.multiprocessors = p.multiProcessorCount;
  d.memory_bytes = int64_t(p.totalGlobalMem);
  // CUDA 13 dropped memoryClockRate from cudaDeviceProp: ask the attribute (kHz), double data rate.
  int clock_khz = 0;
  if (cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, device) == cudaSuccess)
    d.peak_bandwidth_gbs = 2.0 * double(clock_khz) * 1e3 * double(p.memoryBusWidth) / 8.0 / 1e9;
  else
    cudaGetLastError();
  return d;
}

Stream::Stream() {
  cudaStream_t s = nullptr;
  check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
  handle_ = s;
}

Stream::~Stream() {
  if (handle_ != nullptr) cudaStreamDestroy(static_cast<cudaStream_t>(handle_));
}

void Stream::synchronize() const {
  check(cudaStreamSynchronize(static_cast<cudaStream_t>(handle_)), "cudaStreamSynchronize");
}

Buffer::Buffer(size_t bytes) : bytes_(bytes) {
  if (bytes > 0) check(cudaMalloc(&ptr_, bytes), "cudaMalloc(" + std::to_string(bytes) + " bytes)");
}

Buffer::~Buffer() {
  if (ptr_ != nullptr) cudaFree(ptr_);
}

Buffer::Buffer(Buffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    if (ptr_ != nullptr) cudaFree(ptr_);
    ptr_ = std::exchange(o.ptr_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

void Buffer::upload(const void* src, size_t bytes, size_t offset) {
  if (offset > bytes_ || bytes > bytes_ - offset)
    throw Error("upload of " + std::to_string(bytes) + " bytes at " + std::to_string(offset) + " into a buffer of " +
                std::to_string(bytes_));
  if (bytes > 0) check(cudaMemcpy(static_cast<char*>(ptr_) + offset, src, bytes, cudaMemcpyHostToDevice), "upload");
}

void Buffer::download(void* dst, size_t bytes, size_t offset) const {
  if (offset > bytes_ || bytes > bytes_ - offset)
    throw Error("download of " + std::to_string(bytes) + " bytes at " + std::to_string(offset) + " from a buffer of " +
                std::to_string(bytes_));
  if (bytes > 0)
    check(cudaMemcpy(dst, static_cast<const char*>(ptr_) + offset, bytes, cudaMemcpyDeviceToHost), "download");
}

void Buffer::zero() {
  if (bytes_ > 0) check(cudaMemset(ptr_, 0, bytes_), "cudaMemset");
}

void copy_to_device(void* dst, const void* src, size_t bytes) {
  if (bytes > 0) check(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "copy to device");
}

void copy_to_host(void* dst, const void* src, size_t bytes) {
  if (bytes > 0) check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "copy to host");
}

void synchronize() { check(cudaDeviceSynchronize(), "cudaDeviceSynchronize"); }

void check_launch(const char* what) { check(cudaGetLastError(), std::string("launch of ") + what); }

}  // namespace ptq::kernels::cuda
