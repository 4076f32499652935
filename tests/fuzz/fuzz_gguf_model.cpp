// libFuzzer target: a GGUF file turned into a Hugging Face directory (lib/model/gguf_model.h: config.json,
// fp32 model.safetensors, tokenizer.model from the embedded vocabulary), then the converted directory read
// back as ptq reads a model: config.json, the tensors, the SentencePiece model encoding a fixed text.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

#include "io/safetensors.h"
#include "model/config.h"
#include "model/gguf_model.h"
#include "model/sentencepiece.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ptq::fuzz::MemFile file(data, size);
  const std::string out = ptq::fuzz::scratch_dir() + "/hf";
  std::filesystem::remove_all(out);
  ptq::fuzz::expect_clean_refusal([&] {
    ptq::gguf_to_hf_dir(file.path(), out);
    const ptq::ModelConfig cfg = ptq::load_model_config(out);
    ptq::TensorArchive weights(out);
    const auto spm = ptq::SentencePieceModel::load(out + "/tokenizer.model");
    const auto ids = spm.encode("Once upon a time, \xC3\xA9t\xC3\xA9 \xF0\x9F\x98\x80 1234!");
    volatile size_t sink = spm.decode(ids).size() + weights.names().size() + static_cast<size_t>(cfg.n_layers);
    (void)sink;
  });
  std::filesystem::remove_all(out);
  return 0;
}
