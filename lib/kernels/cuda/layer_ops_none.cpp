// layer_ops_cuda.h in a build without CUDA: every op throws device.h's Error.
#include "kernels/cuda/layer_ops_cuda.h"

namespace ptq::kernels::cuda {

void rms_norm(const float*, int64_t, int64_t, const float*, float, float*, const float*, const NormSplit&,
              const Stream*) {
  throw_built_without_cuda();
}
void layer_norm(const float*, int64_t, int64_t, const float*, const float*, float, float*, const Stream*) {
  throw_built_without_cuda();
}
void rope(float*, int64_t, int64_t, int64_t, const int64_t*, double, const Stream*) { throw_built_without_cuda(); }
void swiglu(const float*, const float*, int64_t, float*, const Stream*) { throw_built_without_cuda(); }
void add(float*, const float*, int64_t, const Stream*) { throw_built_without_cuda(); }
void kv_append(const AttentionDims&, const float*, const float*, int64_t, int64_t, uint16_t*, uint16_t*,
               const Stream*) {
  throw_built_without_cuda();
}
void attention(const AttentionDims&, const float*, int64_t, int64_t, const uint16_t*, const uint16_t*, float*,
               const Stream*) {
  throw_built_without_cuda();
}

DeviceHadamard upload_hadamard(const HadamardFactors&) { throw_built_without_cuda(); }
void hadamard_rotate(const DeviceHadamard&, float*, int64_t, const Stream*) { throw_built_without_cuda(); }

}  // namespace ptq::kernels::cuda
