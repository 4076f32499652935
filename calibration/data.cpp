#include "calibration/data.h"

#include <algorithm>
#include <random>

#include "core/error.h"
#include "core/file.h"
#include "core/resources.h"
#include "model/tokenizer.h"

namespace ptq {

std::string default_calibration_file() {
  const std::string found = find_resource("data", kDefaultCalibrationText);
  if (found.empty())
    fail_input("the default calibration text {} was not found (searched $PTQ_HOME/data, <binary>/../share/ptq/data "
               "and the source tree); give --data FILE or --synthetic", kDefaultCalibrationText);
  return found;
}

CalibrationData load_calibration_data(const CalibrationDataSpec& spec, const Tokenizer& tok, int64_t vocab,
                                      int64_t context_length) {
  CalibrationData d;
  d.seqlen = spec.seqlen > 0 ? spec.seqlen : std::min<int64_t>(2048, context_length);
  d.seed = spec.seed;
  if (spec.nsamples < 1) fail_input("--nsamples must be at least 1, got {}", spec.nsamples);
  if (d.seqlen < 2) fail_input("calibration --seqlen must be at least 2, got {}", d.seqlen);
  if (d.seqlen > context_length)
    fail_input("calibration --seqlen {} exceeds the model's context length {}", d.seqlen, context_length);
  std::mt19937_64 rng(spec.seed);
  if (spec.synthetic) {
    std::uniform_int_distribution<int32_t> tokdist(0, static_cast<int32_t>(vocab - 1));
    for (int64_t s = 0; s < spec.nsamples; ++s) {
      std::vector<int32_t> w(d.seqlen);
      for (auto& t : w) t = tokdist(rng);
      d.windows.push_back(std::move(w));
    }
    d.source = "synthetic";
    const std::string tag = "synthetic:" + std::to_string(vocab);
    d.data_sha256 = sha256_hex(tag.data(), tag.size());
    return d;
  }
  std::vector<std::string> files = spec.files;
  if (files.empty()) files.push_back(default_calibration_file());
  std::vector<int32_t> ids;
  std::string hashes;
  for (const auto& f : files) {
    const std::string text = read_user_text(f, "calibration data");
    hashes += sha256_hex(text.data(), text.size());
    std::vector<int32_t> part = tok.encode(text);
    ids.insert(ids.end(), part.begin(), part.end());
    d.source += (d.source.empty() ? "" : ", ") + f;
  }
  d.data_sha256 = files.size() == 1 ? hashes : sha256_hex(hashes.data(), hashes.size());
  d.text_tokens = static_cast<int64_t>(ids.size());
  if (d.text_tokens < d.seqlen)
    fail_input("calibration text {} has {} tokens, fewer than one window of {}", d.source, d.text_tokens, d.seqlen);
  std::uniform_int_distribution<int64_t> start(0, d.text_tokens - d.seqlen);
  for (int64_t s = 0; s < spec.nsamples; ++s) {
    const int64_t i = start(rng);
    d.windows.emplace_back(ids.begin() + i, ids.begin() + i + d.seqlen);
  }
  return d;
}

}  // namespace ptq
