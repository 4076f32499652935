// libFuzzer target: a GGUF file (lib/io/gguf.h): the validating reader, every typed metadata getter on every
// key, and every tensor ptq can decode, decoded to floats.
#include <cstddef>
#include <cstdint>

#include "io/gguf.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ptq::fuzz::MemFile file(data, size);
  ptq::fuzz::expect_clean_refusal([&] {
    ptq::GgufFile g(file.path());
    double sum = static_cast<double>(g.data_offset() + g.alignment() + g.version());
    for (const auto& kv : g.kvs()) {
      // Each getter either returns or refuses with a message; which one depends on the stored type.
      const std::string& k = kv.key;
      ptq::fuzz::expect_clean_refusal([&] { sum += static_cast<double>(g.get_uint(k)); });
      ptq::fuzz::expect_clean_refusal([&] { sum += static_cast<double>(g.get_int(k)); });
      ptq::fuzz::expect_clean_refusal([&] { sum += g.get_float(k); });
      ptq::fuzz::expect_clean_refusal([&] { sum += g.get_bool(k); });
      ptq::fuzz::expect_clean_refusal([&] { sum += static_cast<double>(g.get_string(k).size()); });
      ptq::fuzz::expect_clean_refusal([&] { sum += static_cast<double>(g.get_string_array(k).size()); });
      ptq::fuzz::expect_clean_refusal([&] { sum += static_cast<double>(g.get_float_array(k).size()); });
      ptq::fuzz::expect_clean_refusal([&] { sum += static_cast<double>(g.get_int_array(k).size()); });
      sum += ptq::gguf_value_type_name(kv.value.type)[0];
    }
    for (const auto& t : g.tensors()) {
      sum += static_cast<double>(t.numel());
      ptq::fuzz::expect_clean_refusal([&] {
        for (float x : g.tensor_f32(t.name)) sum += x;
      });
    }
    volatile double sink = sum;
    (void)sink;
  });
  return 0;
}
