// Hugging Face tokenizer.json (the `tokenizers` library's format), read and run natively: BPE with merge
// ranks under a byte-level (GPT-2, Llama-3, Qwen2/3) or SentencePiece-style (Llama-2, Mistral: Prepend/
// Replace or Metaspace, byte fallback) front end, added tokens, the post-processor's special tokens, decoding.
//
// Pipeline of encode(), as in `tokenizers`: invalid UTF-8 bytes become U+FFFD; added tokens are cut out
// of the raw text first (longest match, leftmost; lstrip/rstrip take the neighbouring whitespace); every
// other section is normalized (NFC via ICU, Prepend, Replace), pre-tokenized (Split by the model's regex via
// PCRE2 with Unicode properties, ByteLevel's GPT-2 byte<->unicode map, Metaspace) and each word is merged
// by BPE (lowest merge rank first, leftmost on ties; byte fallback or unk for characters outside the vocab).
// Components a file uses that are not implemented are refused at load with their name and JSON path.
// Tests compare ids with the `tokenizers` ports published on npm (tests/oracle/tokenizers).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ptq {

class HfTokenizer {
 public:
  // `config_json` is tokenizer_config.json's text ("" when absent): add_bos_token, bos_token, eos_token.
  static HfTokenizer load(const std::string& path, const std::string& config_json = "");
  static HfTokenizer parse(const std::string& json_text, const std::string& config_json, const std::string& where);

  // Encodes `text`; with `add_special` the post-processor's special tokens (e.g. BOS) are added.
  std::vector<int32_t> encode(const std::string& text, bool add_special) const;
  // Inverse of encode() through the file's decoder; special added tokens are skipped.
  std::string decode(const std::vector<int32_t>& ids) const;
  // Token string of an id ("" when out of range), and id of a token string (-1 when absent).
  std::string token(int32_t id) const;
  int32_t id(const std::string& token) const;

  int64_t vocab_size() const;
  int32_t bos_id() const;
  int32_t eos_id() const;
  // Whether encode(text, true) adds anything: the post-processor's template, overridden by add_bos_token.
  bool adds_special() const;
  std::string describe() const;

  struct Impl;

 private:
  std::shared_ptr<const Impl> impl_;
};

}  // namespace ptq
