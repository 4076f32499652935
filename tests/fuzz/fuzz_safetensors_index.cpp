// libFuzzer target: model.safetensors.index.json of a sharded checkpoint (TensorArchive, lib/io/safetensors.h).
// The input is the index; the directory holds two fixed valid shards (shard-a: "a", "b"; shard-b: "c").
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "core/file.h"
#include "io/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

const std::string& model_dir() {
  static const std::string dir = [] {
    const std::string d = ptq::fuzz::scratch_dir() + "/sharded";
    std::filesystem::create_directories(d);
    const std::vector<float> v = {1, 2, 3, 4, 5, 6};
    ptq::SafetensorsWriter a;
    a.add_f32("a", {2, 2}, v.data());
    a.add_f32("b", {2}, v.data() + 4);
    a.write(d + "/shard-a.safetensors");
    ptq::SafetensorsWriter b;
    b.add_f32("c", {3}, v.data());
    b.write(d + "/shard-b.safetensors");
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& dir = model_dir();
  ptq::write_text_file_atomic(dir + "/model.safetensors.index.json", ptq::fuzz::as_string(data, size));
  ptq::fuzz::expect_clean_refusal([&] {
    ptq::TensorArchive archive(dir);
    uint64_t sum = archive.total_file_bytes();
    for (const auto& name : archive.names()) {
      const ptq::TensorView v = archive.view(name);
      if (v.nbytes() > 0) sum += v.data[0] + v.data[v.nbytes() - 1];
    }
    volatile uint64_t sink = sum;
    (void)sink;
  });
  return 0;
}
