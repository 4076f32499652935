#include "model/inspect.h"

#include "io/safetensors.h"
#include "model/tokenizer.h"

namespace ptq {

ModelSummary summarize_model(const std::string& dir) {
  ModelSummary s;
  s.path = dir;
  s.config = load_model_config(dir);
  TensorArchive archive(dir);
  s.file_bytes = archive.total_file_bytes();
  for (const auto& f : archive.files()) {
    s.files.push_back(f->path());
    for (const auto& t : f->tensors()) {
      s.parameters += t.numel();
      s.params_by_dtype[dtype_name(t.dtype)] += t.numel();
      ++s.tensors;
    }
  }
  try {
    s.tokenizer = load_tokenizer(dir)->describe();
  } catch (const std::exception& e) {
    s.tokenizer = std::string("none: ") + e.what();
  }
  return s;
}

}  // namespace ptq
