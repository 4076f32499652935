// Native SentencePiece BPE against the real implementation: Debian's spm_encode, run as a separate
// process on the bundled texts and on hand-picked hard cases.
#include <catch2/catch.hpp>

#include <cstdio>
#include <sstream>
#include <utility>
#include <vector>

#include "core/file.h"
#include "model/sentencepiece.h"
#include "model/tokenizer.h"
#include "tests/test_paths.h"

using namespace ptq;

namespace {

std::vector<std::string> split_lines(const std::string& text, size_t max_lines) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  std::string line;
  while (lines.size() < max_lines && std::getline(in, line)) lines.push_back(line);
  return lines;
}

// ids per input line, from `spm_encode --output_format=id` (package `sentencepiece`, installed by setup.sh).
std::vector<std::vector<int32_t>> spm_encode_lines(const std::string& model, const std::vector<std::string>& lines) {
  const std::string dir = test::make_temp_dir("spm");
  std::string joined;
  for (const auto& l : lines) joined += l + "\n";
  write_text_file_atomic(dir + "/in.txt", joined);
  const std::string cmd = "spm_encode --model=" + model + " --output_format=id < " + dir + "/in.txt";
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  REQUIRE(pclose(p) == 0);  // spm_encode missing or failed: run scripts/setup.sh
  std::vector<std::vector<int32_t>> ids;
  for (const auto& line : split_lines(out, lines.size() + 1)) {
    std::vector<int32_t> v;
    std::istringstream in(line);
    int32_t id;
    while (in >> id) v.push_back(id);
    ids.push_back(v);
  }
  return ids;
}

void check_against_spm(const std::string& model_dir, const std::vector<std::string>& lines) {
  const std::string model = test::repo_path(model_dir + "/tokenizer.model");
  SentencePieceModel sp = SentencePieceModel::load(model);
  auto expected = spm_encode_lines(model, lines);
  REQUIRE(expected.size() == lines.size());
  size_t mismatches = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (sp.encode(lines[i]) != expected[i]) {
      if (++mismatches <= 5) UNSCOPED_INFO("line " << i << " differs: \"" << lines[i] << "\"");
    }
    // Identity normalization without whitespace removal is lossless, except that a literal "▁" decodes
    // to a space (as in SentencePiece itself).
    const bool has_space_symbol = lines[i].find("\xE2\x96\x81") != std::string::npos;
    if (!has_space_symbol && sp.decode(sp.encode(lines[i])) != lines[i]) {
      if (++mismatches <= 5) UNSCOPED_INFO("line " << i << " does not round-trip: \"" << lines[i] << "\"");
    }
  }
  CHECK(mismatches == 0);
}

const std::vector<std::string> kHardCases = {
    "", " ", "   leading spaces", "trailing spaces   ", "tabs\tand  double  spaces", "digits 1234567890 3.14159",
    "Émile Zola écrivit « J'accuse » en 1898.", "Ünïcödé ß ø å", "日本語のテキスト", "emoji 🙂👍🏽 and ☃",
    "mixed: a1b2c3 -- (parens) [brackets] {braces}", "URL https://example.com/a?b=c&d=e",
    "\xE2\x96\x81 literal lower-one-eighth block", "Москва и Санкт-Петербург", "शब्द", "x",
};

}  // namespace

TEST_CASE("SentencePiece BPE equals spm_encode: stories260K on TinyStories and hard cases", "[tokenizer]") {
  auto lines = split_lines(read_text_file(test::repo_path("data/tinystories-valid.txt")), 3000);
  lines.insert(lines.end(), kHardCases.begin(), kHardCases.end());
  check_against_spm("data/models/stories260K", lines);
}

TEST_CASE("SentencePiece BPE equals spm_encode: sotu-llama-8m on SOTU, Moby Dick and hard cases", "[tokenizer]") {
  auto lines = split_lines(read_text_file(test::repo_path("data/sotu-test.txt")), 3000);
  auto moby = split_lines(read_text_file(test::repo_path("data/moby-dick.txt")), 2000);
  lines.insert(lines.end(), moby.begin(), moby.end());
  lines.insert(lines.end(), kHardCases.begin(), kHardCases.end());
  check_against_spm("data/models/sotu-llama-8m", lines);
}

TEST_CASE("tokenizer honours add_bos_token and special ids", "[tokenizer]") {
  auto tok = load_tokenizer(test::repo_path("data/models/stories260K"));
  CHECK(tok->add_bos_default());
  CHECK(tok->bos_id() == 1);
  CHECK(tok->eos_id() == 2);
  CHECK(tok->vocab_size() == 512);
  auto with = tok->encode("Once upon a time");
  auto without = tok->encode("Once upon a time", false);
  REQUIRE(with.size() == without.size() + 1);
  CHECK(with[0] == 1);
  CHECK(std::vector<int32_t>(with.begin() + 1, with.end()) == without);
  CHECK(tok->decode(with) == "Once upon a time");
}

TEST_CASE("tokenizer: a directory without tokenizer.model is refused by name", "[tokenizer]") {
  const std::string dir = test::make_temp_dir("notok");
  CHECK_THROWS_WITH(load_tokenizer(dir), Catch::Contains(dir) && Catch::Contains("tokenizer.model"));
  write_text_file_atomic(dir + "/tokenizer.model", "not a protobuf at all");
  CHECK_THROWS_AS(load_tokenizer(dir), std::invalid_argument);
}

namespace {

// A SentencePiece ModelProto by hand: pieces (text, type) and a BPE TrainerSpec.
std::string spm_proto(const std::vector<std::pair<std::string, int>>& pieces) {
  auto varint = [](std::string& out, uint64_t v) {
    for (; v >= 0x80; v >>= 7) out += static_cast<char>((v & 0x7F) | 0x80);
    out += static_cast<char>(v);
  };
  auto bytes = [&](std::string& out, int field, const std::string& s) {
    varint(out, uint64_t(field) << 3 | 2);
    varint(out, s.size());
    out += s;
  };
  std::string model;
  for (const auto& [text, type] : pieces) {
    std::string p;
    bytes(p, 1, text);
    varint(p, 3 << 3 | 0);
    varint(p, static_cast<uint64_t>(type));
    bytes(model, 1, p);
  }
  std::string trainer;
  varint(trainer, 3 << 3 | 0);
  varint(trainer, 2);  // model_type BPE
  bytes(model, 2, trainer);
  return model;
}

}  // namespace

// Found by tests/fuzz (sentencepiece): "<0x-C>" passed sscanf("<0x%02X>") as 0xFFFFFFF4 and was written far
// outside the 256-entry byte table.
TEST_CASE("SentencePiece: a byte piece that is not <0xXX> is refused (fuzz finding)", "[tokenizer]") {
  const std::vector<std::pair<std::string, int>> base = {{"<unk>", 2}, {"<s>", 3}, {"</s>", 3}, {"a", 1}};
  auto with_byte = [&](const std::string& piece) {
    auto p = base;
    p.emplace_back(piece, 6);
    return spm_proto(p);
  };
  CHECK(SentencePieceModel::parse(with_byte("<0x4A>"), "ok.model").pieces().size() == 5);
  CHECK(SentencePieceModel::parse(with_byte("<0x4a>"), "ok.model").pieces().size() == 5);
  for (const char* bad : {"<0x-C>", "<0x+1>", "<0x 5>", "<0xG0>", "<1x00>", "<0x00]"})
    CHECK_THROWS_WITH(SentencePieceModel::parse(with_byte(bad), "t.model"),
                      Catch::Contains("t.model: byte piece") && Catch::Contains("is not of the form <0xXX>"));
}

// Found by tests/fuzz (sentencepiece): unk_id -1 (a varint of 2^64 - 1) was accepted, and encode() then emitted id
// -1 for every character without a piece.
TEST_CASE("SentencePiece: an unk_id outside the pieces is refused (fuzz finding)", "[tokenizer]") {
  std::string model = spm_proto({{"<unk>", 2}, {"<s>", 3}, {"</s>", 3}, {"a", 1}});
  std::string trainer;  // a second TrainerSpec: unk_id (field 40) = 2^64 - 1
  trainer += "\xC0\x02";
  trainer += std::string(9, '\xFF') + "\x01";
  model += '\x12';
  model += static_cast<char>(trainer.size());
  model += trainer;
  CHECK_THROWS_WITH(SentencePieceModel::parse(model, "t.model"), Catch::Contains("t.model: unk_id -1 outside the 4 pieces"));
}
