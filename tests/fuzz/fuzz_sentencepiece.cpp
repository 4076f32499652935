// libFuzzer target: a SentencePiece tokenizer.model (lib/model/sentencepiece.h), then the parsed model encoding
// and decoding fixed texts (ASCII, whitespace runs, multi-byte UTF-8, invalid UTF-8) and decoding every id. An
// accepted model must only ever produce ids of its own pieces.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "model/sentencepiece.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ptq::fuzz::expect_clean_refusal([&] {
    const auto m = ptq::SentencePieceModel::parse(ptq::fuzz::as_string(data, size), "fuzz/tokenizer.model");
    size_t n = 0;
    for (const char* text : {"Once upon a time", "  two  spaces\tand\nlines ", "\xC3\xA9t\xC3\xA9 \xE2\x96\x81 \xF0\x9F\x98\x80",
                             "\xFF\xC3", ""}) {
      const std::vector<int32_t> ids = m.encode(text);
      for (int32_t id : ids)
        if (id < 0 || id >= static_cast<int32_t>(m.pieces().size())) {
          std::fprintf(stderr, "FINDING: encode(\"%s\") gave id %d outside the %zu pieces\n", text, id, m.pieces().size());
          std::abort();
        }
      n += m.decode(ids).size();
    }
    std::vector<int32_t> all;
    for (int32_t i = 0; i < static_cast<int32_t>(m.pieces().size()) && i < 4096; ++i) all.push_back(i);
    n += m.decode(all).size();
    volatile size_t sink = n;
    (void)sink;
  });
  return 0;
}
