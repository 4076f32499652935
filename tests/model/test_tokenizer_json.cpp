// tokenizer.json: hand-computed cases for each pipeline piece, and the oracle comparison against the npm
// ports of `tokenizers` (fixtures made by tests/oracle/tokenizers/run.sh; the case is a no-op without them).
#include <catch2/catch.hpp>

#include <cstdlib>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/file.h"
#include "model/tokenizer.h"
#include "model/tokenizer_json.h"
#include "tests/test_paths.h"

using namespace ptq;
using nlohmann::json;

namespace {

// A byte-level BPE over "a", "b", "c", " " (Ġ) with merges in rank order.
json byte_level_model() {
  json vocab = {{"a", 0}, {"b", 1}, {"c", 2}, {"\xC4\xA0", 3}, {"ab", 4}, {"bc", 5}, {"abc", 6}, {"\xC4\xA0" "a", 7},
                {"1", 8}, {"2", 9}, {"12", 10}};
  return {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"b c", "a b", "a bc", "\xC4\xA0 a", "1 2"}}}},
          {"normalizer", nullptr},
          {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
          {"post_processor", {{"type", "ByteLevel"}}},
          {"decoder", {{"type", "ByteLevel"}}},
          {"added_tokens", json::array({{{"id", 11}, {"content", "<|end|>"}, {"special", true}}})}};
}

// SentencePiece-style (Llama-2 tokenizer.json): Prepend + Replace normalizer, byte fallback, <s> template.
json spm_style_model() {
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    vocab[name] = 3 + b;
  }
  int id = 259;
  for (const char* t : {"\xE2\x96\x81", "h", "i", "\xE2\x96\x81h", "\xE2\x96\x81hi"}) vocab[t] = id++;
  return {
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"\xE2\x96\x81 h", "\xE2\x96\x81h i"}},
                 {"unk_token", "<unk>"}, {"byte_fallback", true}, {"fuse_unk", true}}},
      {"normalizer", {{"type", "Sequence"}, {"normalizers", {{{"type", "Prepend"}, {"prepend", "\xE2\x96\x81"}},
                                                             {{"type", "Replace"}, {"pattern", {{"String", " "}}},
                                                              {"content", "\xE2\x96\x81"}}}}}},
      {"pre_tokenizer", nullptr},
      {"post_processor", {{"type", "TemplateProcessing"},
                          {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                      {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
                          {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
      {"decoder", {{"type", "Sequence"}, {"decoders", {{{"type", "Replace"}, {"pattern", {{"String", "\xE2\x96\x81"}}},
                                                        {"content", " "}},
                                                       {{"type", "ByteFallback"}}, {{"type", "Fuse"}},
                                                       {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
      {"added_tokens", json::array({{{"id", 0}, {"content", "<unk>"}, {"special", true}},
                                    {{"id", 1}, {"content", "<s>"}, {"special", true}},
                                    {{"id", 2}, {"content", "</s>"}, {"special", true}}})}};
}

using Ids = std::vector<int32_t>;

}  // namespace

TEST_CASE("tokenizer.json byte-level BPE: merge ranks, regex split, added tokens, decode", "[tokenizer_json]") {
  HfTokenizer t = HfTokenizer::parse(byte_level_model().dump(), "", "test.json");
  // "abc": ranks b+c (0) before a+b (1), then a+bc (2) -> abc.
  CHECK(t.encode("abc", true) == Ids{6});
  // GPT-2 split: "abc" and " ab"; in "Ġab" a+b (rank 1) wins over Ġ+a (rank 3), and Ġ+ab is no merge.
  CHECK(t.encode("abc ab", false) == Ids{6, 3, 4});
  CHECK(t.encode(" a", false) == Ids{7});
  // \p{N}+ keeps digits together; 1+2 merges.
  CHECK(t.encode("12", false) == Ids{10});
  // Added tokens are cut out before splitting.
  CHECK(t.encode("ab<|end|>c", false) == Ids{4, 11, 2});
  CHECK(t.adds_special() == false);
  CHECK(t.decode({6, 3, 4}) == "abc ab");
  CHECK(t.decode({4, 11, 2}) == "abc");  // special tokens are skipped
}

TEST_CASE("tokenizer.json SentencePiece style: Prepend/Replace, byte fallback, BOS template, decode", "[tokenizer_json]") {
  HfTokenizer t = HfTokenizer::parse(spm_style_model().dump(), "", "test.json");
  CHECK(t.bos_id() == 1);
  CHECK(t.adds_special());
  // "hi" -> "▁hi" -> ▁+h (rank 0) -> ▁h+i (rank 1).
  CHECK(t.encode("hi", true) == Ids{1, 263});
  // "é" is not in the vocab: its two UTF-8 bytes C3 A9 by fallback.
  CHECK(t.encode("hi é", false) == Ids{263, 259, 3 + 0xC3, 3 + 0xA9});
  CHECK(t.decode({1, 263, 259, 3 + 0xC3, 3 + 0xA9}) == "hi é");
  // An added token in the middle: the normalizer prepends "▁" to each section.
  CHECK(t.encode("hi</s>hi", false) == Ids{263, 2, 263});
  // tokenizer_config.json of a Llama tokenizer can switch the BOS off.
  HfTokenizer no_bos = HfTokenizer::parse(spm_style_model().dump(),
                                          R"({"tokenizer_class": "LlamaTokenizer", "add_bos_token": false})", "t.json");
  CHECK(no_bos.encode("hi", true) == Ids{263});
}

TEST_CASE("tokenizer.json: invalid UTF-8 input becomes U+FFFD, unsupported components are refused by name",
          "[tokenizer_json]") {
  HfTokenizer t = HfTokenizer::parse(spm_style_model().dump(), "", "test.json");
  CHECK(t.encode("h\xFF", false) == t.encode("h\xEF\xBF\xBD", false));
  json bad = byte_level_model();
  bad["pre_tokenizer"] = {{"type", "BertPreTokenizer"}};
  CHECK_THROWS_WITH(HfTokenizer::parse(bad.dump(), "", "x.json"),
                    Catch::Contains("x.json") && Catch::Contains("BertPreTokenizer"));
  bad = byte_level_model();
  bad["model"]["merges"].push_back("a zz");
  CHECK_THROWS_WITH(HfTokenizer::parse(bad.dump(), "", "x.json"), Catch::Contains("merges[5]"));
  CHECK_THROWS_AS(HfTokenizer::parse("{not json", "", "x.json"), std::invalid_argument);
}

// Found by tests/fuzz (tokenizer_json): an id sized the token table (2^31 entries: out of memory), and ids past
// int32 were truncated by nlohmann into other ids.
TEST_CASE("tokenizer.json: ids outside 0..2^24-1 are refused before a table is sized by them (fuzz finding)",
          "[tokenizer_json]") {
  auto error = [](const json& j) {
    try {
      HfTokenizer::parse(j.dump(), "", "x.json");
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  json bad = byte_level_model();
  bad["model"]["vocab"]["zz"] = 2147483647;
  CHECK_THAT(error(bad), Catch::Contains("x.json: model.vocab[\"zz\"]: id 2147483647 is outside 0..16777215"));
  bad["model"]["vocab"]["zz"] = 6000000000;
  CHECK_THAT(error(bad), Catch::Contains("id 6000000000 is outside"));
  bad["model"]["vocab"]["zz"] = -1;
  CHECK_THAT(error(bad), Catch::Contains("id -1 is outside"));
  bad["model"]["vocab"]["zz"] = "7";
  CHECK_THAT(error(bad), Catch::Contains("model.vocab[\"zz\"]: expected an integer id, found \"7\""));
  bad = byte_level_model();
  bad["added_tokens"][0]["id"] = 2147483000;
  CHECK_THAT(error(bad), Catch::Contains("added_tokens[0].id: id 2147483000 is outside"));
  CHECK(error(byte_level_model()).empty());
}

TEST_CASE("tokenizer selection: tokenizer.json alone, and beside a tokenizer.model it disagrees with",
          "[tokenizer_json]") {
  const std::string dir = test::make_temp_dir("tokjson");
  write_text_file_atomic(dir + "/tokenizer.json", byte_level_model().dump());
  auto tok = load_tokenizer(dir);
  CHECK(tok->describe().find("tokenizer.json") != std::string::npos);
  CHECK(tok->encode("abc") == Ids{6});
  // stories260K's tokenizer.model next to an unrelated tokenizer.json: the SentencePiece model stays in charge.
  write_text_file_atomic(dir + "/tokenizer.model", read_text_file(test::repo_path("data/models/stories260K/tokenizer.model")));
  CHECK(load_tokenizer(dir)->describe().find("sentencepiece") != std::string::npos);
}

// Fixtures from tests/oracle/tokenizers/run.sh: $PTQ_TOKENIZER_ORACLE/<name>/{tokenizer.json,
// tokenizer_config.json, expected.jsonl}, one {"text": ..., "ids": [...]} per line (ids with special tokens
// as the reference adds them, and "decoded": the reference's decode of those ids).
TEST_CASE("tokenizer.json ids equal the npm reference implementations", "[tokenizer_json][oracle]") {
  const char* root = std::getenv("PTQ_TOKENIZER_ORACLE");
  if (!root || !*root) {
    WARN("PTQ_TOKENIZER_ORACLE not set: oracle comparison skipped (tests/oracle/tokenizers/run.sh sets it)");
    return;
  }
  for (const char* name : {"gpt2", "llama2", "qwen3"}) {
    const std::string dir = std::string(root) + "/" + name;
    INFO("tokenizer " << name);
    auto tok = load_tokenizer(dir);
    std::istringstream in(read_text_file(dir + "/expected.jsonl"));
    std::string line;
    size_t cases = 0, ids_compared = 0, mismatches = 0, decode_mismatches = 0;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      const json j = json::parse(line);
      const std::string text = j["text"].get<std::string>();
      const Ids expected = j["ids"].get<Ids>();
      const Ids got = tok->encode(text, true);
      ++cases;
      ids_compared += expected.size();
      if (got != expected && ++mismatches <= 5) {
        json g = got;
        UNSCOPED_INFO(name << " case " << cases << " differs: " << json(text).dump() << "\n  expected "
                           << json(expected).dump() << "\n  got      " << g.dump());
      }
      if (j.contains("decoded") && tok->decode(expected) != j["decoded"].get<std::string>() && ++decode_mismatches <= 3)
        UNSCOPED_INFO(name << " decode differs on case " << cases << ": " << json(tok->decode(expected)).dump()
                           << " vs " << j["decoded"].dump());
    }
    WARN("oracle " << name << ": " << cases << " texts, " << ids_compared << " ids compared, " << mismatches
                   << " texts differ, " << decode_mismatches << " decodes differ");
    CHECK((mismatches == 0 && decode_mismatches == 0));  // first, so the messages above attach to it
    CHECK(cases > 0);
  }
}
