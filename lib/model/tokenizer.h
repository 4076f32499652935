// Tokenizers: the interface every model's tokenizer implements, and loading one from a model directory.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ptq {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Encodes `text`; a BOS token is prepended when `add_bos` (see add_bos_default()).
  virtual std::vector<int32_t> encode(const std::string& text, bool add_bos) const = 0;
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;
  virtual int32_t eos_id() const = 0;
  // What the model's tokenizer_config.json asks for ("add_bos_token"); used by eval and generate.
  virtual bool add_bos_default() const = 0;
  // A short description for reports, e.g. "sentencepiece(bpe, 512 pieces)".
  virtual std::string describe() const = 0;

  std::vector<int32_t> encode(const std::string& text) const { return encode(text, add_bos_default()); }
};

// Loads the tokenizer of a Hugging Face model directory, honouring tokenizer_config.json: tokenizer.json
// (lib/model/tokenizer_json.h) or tokenizer.model (SentencePiece); when both exist, tokenizer.json only if it
// encodes a fixed sample exactly as tokenizer.model does. A GGUF file gives its embedded vocabulary
// (lib/model/gguf_model.h). Throws std::invalid_argument naming the directory when there is none it can read.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& dir);

}  // namespace ptq
