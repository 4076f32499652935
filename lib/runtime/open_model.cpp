#include "runtime/open_model.h"

#include "checkpoint/checkpoint.h"
#include "core/error.h"
#include "kernels/backend.h"
#include "kernels/cuda/device.h"
#include "runtime/decoder_runner.h"

namespace ptq {

std::unique_ptr<Model> open_model(const std::string& path) { return Checkpoint(path).open_model(); }

std::unique_ptr<Model> open_model_to_quantize(const std::string& path) {
  const Checkpoint ck(path);
  if (ck.quantized())
    fail_input("{} is already quantized (a {} checkpoint); give the floating-point model it came from (its "
               "provenance: `ptq inspect {}`)", path, ck.kind_name(), path);
  return ck.open_model();
}

std::unique_ptr<Model> open_model_for_run(const std::string& path, const RunOptions& opts) {
  std::unique_ptr<Model> model = open_model(path);
  model->set_packed_runner(!opts.reference);
  model->set_int8_activations(!opts.reference && opts.int8_activations);
  model->set_kv_cache_type(opts.kv_cache.value_or(opts.reference ? KvCacheType::F32 : KvCacheType::F16));
  if (opts.device == RunDevice::Cuda) {
    if (opts.reference) fail_input("--reference-runner runs on the CPU only; leave out --device cuda");
    std::unique_ptr<kernels::Backend> backend;
    try {
      backend = kernels::cuda_backend();
    } catch (const kernels::cuda::Error& e) {
      fail_input("--device cuda: {}", e.what());
    }
    model->set_forward_runner(std::make_shared<DecoderRunner>(*model, std::move(backend)));
  }
  return model;
}

}  // namespace ptq
