// Calibration data: deterministic random windows of token ids from text files, or random tokens.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ptq {

class Tokenizer;

struct CalibrationDataSpec {
  std::vector<std::string> files;  // text files; empty with synthetic=false means the bundled default
  int64_t nsamples = 128;
  int64_t seqlen = 0;              // 0: min(2048, model context)
  uint64_t seed = 0;
  bool synthetic = false;          // random token ids, no text (data-free)
};

struct CalibrationData {
  std::vector<std::vector<int32_t>> windows;  // nsamples windows of seqlen ids
  int64_t seqlen = 0;
  uint64_t seed = 0;
  std::string source;        // "file1, file2" or "synthetic"
  std::string data_sha256;   // sha256 of the files' bytes in order (or of "synthetic:<vocab>")
  int64_t text_tokens = 0;   // tokens the windows were drawn from
};

// The bundled default calibration text (a file name in the data resources, core/resources.h).
constexpr const char* kDefaultCalibrationText = "sotu-train.txt";
// Its path, found from any working directory; throws naming the places searched when it is missing.
std::string default_calibration_file();

// Files are tokenized whole (BOS as the tokenizer config says) and concatenated; each window starts at a
// uniformly random offset (std::mt19937_64 seeded with `seed`), as GPTQ's reference data loader does.
// Throws when the text is shorter than one window.
CalibrationData load_calibration_data(const CalibrationDataSpec& spec, const Tokenizer& tok, int64_t vocab,
                                      int64_t context_length);

}  // namespace ptq
