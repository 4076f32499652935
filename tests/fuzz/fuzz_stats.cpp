// libFuzzer target: a calibration stats file (calibration/stats.h load_calibration_stats), then the summary
// `ptq calibrate` prints from it. The fingerprint check is passed with the file's own model_fingerprint, so the
// fuzzer reaches everything behind it (the fingerprint comparison itself is a string compare).
#include <cstddef>
#include <cstdint>
#include <string>

#include "calibration/stats.h"
#include "io/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ptq::fuzz::MemFile file(data, size);
  ptq::fuzz::expect_clean_refusal([&] {
    std::string fingerprint;
    {
      ptq::SafetensorsFile f(file.path());
      const auto it = f.metadata().find("model_fingerprint");
      if (it != f.metadata().end()) fingerprint = it->second;
    }
    const ptq::CalibrationStats stats = ptq::load_calibration_stats(file.path(), fingerprint, "fuzz-model");
    double sum = 0;
    for (const auto& s : ptq::summarize_stats(stats)) sum += s.absmax + s.p99_9 + s.outlier_ratio + s.max_channel;
    volatile double sink = sum;
    (void)sink;
  });
  return 0;
}
