// libFuzzer target: fuzzed text through fixed tokenizers: the bundled SentencePiece models (stories260K,
// sotu-llama-8m) and two tokenizer.json files (tests/fuzz/tokenizers: byte-level BPE with Llama-3's split
// regex; Llama-2 style NFC + Prepend/Replace with byte fallback). Besides "no crash": every id lies inside the
// vocabulary, and the byte-level tokenizer round-trips valid UTF-8 exactly (decode(encode(x)) == x), as
// byte-level BPE must when the text holds no special token.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/file.h"
#include "model/sentencepiece.h"
#include "model/tokenizer_json.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

struct Tokenizers {
  std::vector<ptq::SentencePieceModel> spm;
  ptq::HfTokenizer byte_level, spm_style;
};

const Tokenizers& tokenizers() {
  static const Tokenizers t = [] {
    const std::string src = PTQ_SOURCE_DIR;
    Tokenizers x{{ptq::SentencePieceModel::load(src + "/data/models/stories260K/tokenizer.model"),
                  ptq::SentencePieceModel::load(src + "/data/models/sotu-llama-8m/tokenizer.model")},
                 ptq::HfTokenizer::load(src + "/tests/fuzz/tokenizers/byte_level.json"),
                 ptq::HfTokenizer::load(src + "/tests/fuzz/tokenizers/sentencepiece_style.json")};
    return x;
  }();
  return t;
}

bool valid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
    for (size_t k = 1; k < n; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d >> 6) != 0x2) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    static const uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n;
  }
  return true;
}

[[noreturn]] void finding(const char* what, const std::string& text) {
  std::fprintf(stderr, "FINDING: %s (text of %zu bytes)\n", what, text.size());
  std::abort();
}

void check_ids(const std::vector<int32_t>& ids, int64_t vocab, const char* who, const std::string& text) {
  for (int32_t id : ids)
    if (id < 0 || id >= vocab) finding(who, text);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Tokenizers& t = tokenizers();
  const std::string text = ptq::fuzz::as_string(data, size);
  // Encoding text is not supposed to fail at all: no exception is swallowed here.
  for (const auto& m : t.spm) {
    const auto ids = m.encode(text);
    check_ids(ids, static_cast<int64_t>(m.pieces().size()), "SentencePiece id outside the vocabulary", text);
    (void)m.decode(ids);
  }
  const auto bl = t.byte_level.encode(text, true);
  check_ids(bl, t.byte_level.vocab_size(), "byte-level id outside the vocabulary", text);
  if (valid_utf8(text) && text.find("<|endoftext|>") == std::string::npos && t.byte_level.decode(bl) != text)
    finding("byte-level BPE does not round-trip valid UTF-8", text);
  const auto sp = t.spm_style.encode(text, true);
  check_ids(sp, t.spm_style.vocab_size(), "tokenizer.json (SentencePiece style) id outside the vocabulary", text);
  (void)t.spm_style.decode(sp);
  return 0;
}
