// lib/core: sha256 against published vectors, fp16/bf16 conversions, atomic writes and model directories, tables.
#include <catch2/catch.hpp>

#include <cmath>
#include <dirent.h>
#include <filesystem>
#include <stdexcept>
#include <regex>

#include "core/file.h"
#include "core/half.h"
#include "core/model_dir.h"
#include "core/table.h"
#include "tests/test_paths.h"

using namespace ptq;

TEST_CASE("sha256 matches the FIPS 180-2 test vectors", "[core]") {
  CHECK(sha256_hex("", 0) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(sha256_hex("abc", 3) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  CHECK(sha256_hex(two_blocks.data(), two_blocks.size()) ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  const std::string million(1000000, 'a');
  CHECK(sha256_hex(million.data(), million.size()) ==
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_CASE("fp16 conversion: known encodings and round half to even", "[core]") {
  CHECK(f32_to_fp16(1.0f) == 0x3C00);
  CHECK(f32_to_fp16(-2.0f) == 0xC000);
  CHECK(f32_to_fp16(65504.0f) == 0x7BFF);           // largest finite
  CHECK(f32_to_fp16(65520.0f) == 0x7C00);           // halfway to 65536 rounds to inf
  CHECK(f32_to_fp16(std::ldexp(1.0f, -24)) == 0x0001);  // smallest subnormal
  CHECK(f32_to_fp16(std::ldexp(1.0f, -26)) == 0x0000);  // below half of it: zero
  CHECK(f32_to_fp16(1.0f + std::ldexp(1.0f, -11)) == 0x3C00);      // tie -> even mantissa
  CHECK(f32_to_fp16(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3C02);  // tie -> even mantissa (up)
  CHECK(f32_to_fp16(1.0f / 3.0f) == 0x3555);
  CHECK(std::isnan(fp16_to_f32(f32_to_fp16(NAN))));
  CHECK(fp16_to_f32(0x3555) == Approx(0.333251953125).epsilon(0));
}

TEST_CASE("fp16: every finite half survives half -> float -> half", "[core]") {
  int mismatches = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    if ((h & 0x7C00) == 0x7C00) continue;  // inf/NaN
    if (f32_to_fp16(fp16_to_f32(static_cast<uint16_t>(h))) != h) ++mismatches;
  }
  CHECK(mismatches == 0);
}

TEST_CASE("bf16 conversion rounds to nearest even", "[core]") {
  CHECK(f32_to_bf16(1.0f) == 0x3F80);
  CHECK(bf16_to_f32(0x3F80) == 1.0f);
  // 1 + 2^-8 lies exactly between bf16 neighbours 1 and 1 + 2^-7: ties to even (1.0).
  CHECK(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)) == 0x3F80);
  CHECK(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)) == 0x3F82);
}

namespace {
int count_entries(const std::string& dir) {
  int n = 0;
  DIR* d = opendir(dir.c_str());
  while (dirent* e = readdir(d))
    if (std::string(e->d_name) != "." && std::string(e->d_name) != "..") ++n;
  closedir(d);
  return n;
}
}  // namespace

TEST_CASE("write_file_atomic leaves the old file intact when the writer fails", "[core]") {
  const std::string dir = test::make_temp_dir("atomic");
  const std::string path = dir + "/out.txt";
  write_text_file_atomic(path, "first");
  CHECK(read_text_file(path) == "first");
  CHECK_THROWS_AS(write_file_atomic(path,
                                    [](std::FILE* f) {
                                      std::fputs("partial", f);
                                      throw std::runtime_error("writer failed");
                                    }),
                  std::runtime_error);
  CHECK(read_text_file(path) == "first");
  CHECK(count_entries(dir) == 1);  // no temporary left behind
  write_text_file_atomic(path, "second");
  CHECK(read_text_file(path) == "second");
}

TEST_CASE("MappedFile reports missing files by name", "[core]") {
  try {
    MappedFile f("/nonexistent/file.bin");
    FAIL("expected an error");
  } catch (const std::runtime_error& e) {
    CHECK(std::string(e.what()).find("/nonexistent/file.bin") != std::string::npos);
  }
}

TEST_CASE("Table aligns columns and right-aligns numbers", "[core]") {
  Table t({"name", "value"});
  t.add_row({"a", "1.5"});
  t.add_row({"longer", "10"});
  CHECK(t.render() == "name    value\n------  -----\na         1.5\nlonger     10\n");
}

TEST_CASE("parse_byte_size reads bytes, decimal and binary units, and refuses the rest", "[core]") {
  CHECK(parse_byte_size("12345678", "--x") == 12345678);
  CHECK(parse_byte_size("2.5GB", "--x") == 2500000000);
  CHECK(parse_byte_size("900MiB", "--x") == 900LL * 1024 * 1024);
  CHECK(parse_byte_size("1.5 kib", "--x") == 1536);
  CHECK(parse_byte_size("64kB", "--x") == 64000);
  CHECK(parse_byte_size("2TiB", "--x") == 2LL << 40);
  CHECK(parse_byte_size("100b", "--x") == 100);
  CHECK(parse_byte_size("1.7", "--x") == 1);  // whole bytes, rounded down
  CHECK(human_bytes(static_cast<double>(parse_byte_size("13.2MB", "--x"))) == "13.2 MB");  // the inverse
  for (const char* bad : {"", "GB", "0", "-5MB", "0.4", "12 parsecs", "nan", "inf", "5 G"})
    CHECK_THROWS_WITH(parse_byte_size(bad, "--target-size"), Catch::Contains("--target-size"));
}

TEST_CASE("ModelDirWriter: whole or nothing, no silent replacement, never the input", "[core]") {
  namespace fs = std::filesystem;
  const std::string dir = test::make_temp_dir("model-dir");
  const std::string src = dir + "/src";
  fs::create_directories(src);
  write_text_file_atomic(src + "/tokenizer.model", std::string("\0spm\xff", 5));
  write_text_file_atomic(src + "/tokenizer_config.json", "{}");
  write_text_file_atomic(src + "/model.safetensors", "weights are not tokenizer files");

  const std::string out = dir + "/out";
  {  // An error on the way (no commit): neither OUT nor the temporary directory remains.
    ModelDirWriter w(out, src, false);
    CHECK(fs::is_directory(w.tmp()));
    CHECK(w.tmp().rfind(out + ".tmp-", 0) == 0);
    write_text_file_atomic(w.file("config.json"), "{}");
  }
  CHECK_FALSE(fs::exists(out));
  for (const auto& e : fs::directory_iterator(dir)) CHECK(e.path().filename().string().rfind("out", 0) != 0);

  {
    ModelDirWriter w(out + "/", src, false);  // a trailing slash names the same directory
    CHECK(w.out() == out);
    write_text_file_atomic(w.file("config.json"), "{\"v\": 1}");
    w.copy_tokenizer_files(src);
    CHECK_FALSE(fs::exists(out));  // nothing visible before commit
    w.commit();
  }
  CHECK(read_text_file(out + "/config.json") == "{\"v\": 1}");
  CHECK(read_text_file(out + "/tokenizer.model") == std::string("\0spm\xff", 5));
  CHECK(fs::exists(out + "/tokenizer_config.json"));
  CHECK_FALSE(fs::exists(out + "/model.safetensors"));
  CHECK_FALSE(fs::exists(out + "/tokenizer.json"));

  CHECK_THROWS_WITH(ModelDirWriter(out, src, false),
                    Catch::Contains("output " + out + " already exists") && Catch::Contains("--force"));
  {
    ModelDirWriter w(out, src, true);
    write_text_file_atomic(w.file("config.json"), "{\"v\": 2}");
    w.commit();
  }
  CHECK(read_text_file(out + "/config.json") == "{\"v\": 2}");
  CHECK_FALSE(fs::exists(out + "/tokenizer.model"));  // replaced whole, not merged
  CHECK_THROWS_WITH(ModelDirWriter(src, src, true), Catch::Contains("is the input"));
  CHECK_THROWS_WITH(check_output_path(src + "/", src, true), Catch::Contains("is the input"));
  CHECK_NOTHROW(check_output_path(dir + "/new", src, false));
  // Resolved paths: an output containing the input, or inside it, is refused too (any force).
  CHECK_THROWS_WITH(check_output_path(dir, src, true), Catch::Contains("contains the input"));
  CHECK_THROWS_WITH(check_output_path(dir + "/src/../", src, true), Catch::Contains("contains the input"));
  CHECK_THROWS_WITH(check_output_path(src + "/model.safetensors", src, true), Catch::Contains("lies inside the input"));
  CHECK_THROWS_WITH(check_output_path(src + "/sub/new", src, false), Catch::Contains("lies inside the input"));
  // --force replaces only what ptq wrote: OUT carries the marker commit() wrote; a foreign directory does not.
  CHECK(is_ptq_output(out));
  fs::create_directories(dir + "/foreign");
  CHECK_THROWS_WITH(check_output_path(dir + "/foreign", src, true), Catch::Contains("was not written by ptq"));
  CHECK_FALSE(is_ptq_output(src));
  // OUT appearing while the directory is written is not replaced without force.
  ModelDirWriter late(dir + "/late", src, false);
  fs::create_directories(dir + "/late");
  CHECK_THROWS_WITH(late.commit(), Catch::Contains("appeared"));
}

TEST_CASE("regex_escape: the pattern matches its text literally and nothing it would match unescaped", "[core]") {
  CHECK(regex_escape("model.layers.0.mlp") == R"(model\.layers\.0\.mlp)");  // hand-written
  const std::string every = R"(a.^$|()[]{}*+?\z)";
  CHECK(regex_escape(every) == R"(a\.\^\$\|\(\)\[\]\{\}\*\+\?\\z)");
  const std::regex re("^" + regex_escape(every) + "$");
  CHECK(std::regex_match(every, re));
  CHECK_FALSE(std::regex_match(std::string("model_layers_0"), std::regex("^" + regex_escape("model.layers.0") + "$")));
}
