// What `ptq inspect` reports about a model directory, gathered without loading any weight.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "model/config.h"

namespace ptq {

struct ModelSummary {
  std::string path;
  ModelConfig config;
  int64_t parameters = 0;
  uint64_t file_bytes = 0;                         // all safetensors files
  std::map<std::string, int64_t> params_by_dtype;  // dtype name -> elements
  std::vector<std::string> files;
  int64_t tensors = 0;
  std::string tokenizer;  // description, or "none: <reason>"
};

ModelSummary summarize_model(const std::string& dir);

}  // namespace ptq
