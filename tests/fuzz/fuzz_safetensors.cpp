// libFuzzer target: a safetensors file (lib/io/safetensors.h), opened as SafetensorsFile and as a one-file
// TensorArchive, then every tensor's bytes read through view() as a consumer would.
#include <cstddef>
#include <cstdint>

#include "io/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ptq::fuzz::MemFile file(data, size);
  ptq::fuzz::expect_clean_refusal([&] {
    ptq::SafetensorsFile f(file.path());
    uint64_t sum = 0;
    for (const auto& t : f.tensors()) {
      const ptq::TensorView v = f.view(t.name);
      // The declared extent must lie inside the map: touch its first and last byte.
      if (v.nbytes() > 0) sum += v.data[0] + v.data[v.nbytes() - 1];
      sum += static_cast<uint64_t>(v.numel()) + ptq::shape_str(v.shape()).size();
    }
    for (const auto& [k, val] : f.metadata()) sum += k.size() + val.size();
    ptq::TensorArchive archive(file.path());
    for (const auto& name : archive.names()) sum += archive.view(name).nbytes();
    volatile uint64_t sink = sum;
    (void)sink;
  });
  return 0;
}
