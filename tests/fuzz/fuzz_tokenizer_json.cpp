// libFuzzer target: a Hugging Face tokenizer.json (lib/model/tokenizer_json.h), then the parsed tokenizer
// encoding and decoding fixed texts (added-token boundaries, whitespace runs, digits, multi-byte and invalid
// UTF-8) and decoding every id. The tokenizer_config.json text is empty: the tokenizer.json alone decides. An
// accepted tokenizer must only ever produce ids inside its vocabulary.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "model/tokenizer_json.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ptq::fuzz::expect_clean_refusal([&] {
    const auto t = ptq::HfTokenizer::parse(ptq::fuzz::as_string(data, size), "", "fuzz/tokenizer.json");
    size_t n = t.describe().size() + static_cast<size_t>(t.bos_id() + t.eos_id()) + t.adds_special();
    for (const char* text : {"Hello world, it's 2024!", "  two  spaces\tand\nlines ", "<s>hi</s><|endoftext|>x",
                             "\xC3\xA9t\xC3\xA9 \xE2\x96\x81 \xF0\x9F\x98\x80 \xE4\xB8\xAD\xE6\x96\x87",
                             "e\xCC\x81", "\xFF\xC3", ""}) {
      const std::vector<int32_t> ids = t.encode(text, true);
      for (int32_t id : ids)
        if (id < 0 || id >= t.vocab_size()) {
          std::fprintf(stderr, "FINDING: encode(\"%s\") gave id %d outside the vocabulary of %lld\n", text, id,
                       static_cast<long long>(t.vocab_size()));
          std::abort();
        }
      n += t.decode(ids).size();
      for (int32_t id : ids) n += t.token(id).size();
    }
    std::vector<int32_t> all;
    for (int64_t i = 0; i < t.vocab_size() && i < 4096; ++i) all.push_back(static_cast<int32_t>(i));
    n += t.decode(all).size() + static_cast<size_t>(t.id("a") + t.id("<s>"));
    volatile size_t sink = n;
    (void)sink;
  });
  return 0;
}
