// lib/io safetensors: round trips, sharded archives, and one precise error per malformed-file case.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "core/file.h"
#include "core/half.h"
#include "io/safetensors.h"
#include "tests/test_paths.h"

using namespace ptq;

namespace {

// A raw file: 8-byte little-endian header length, the header text, then `buffer`.
std::string raw_file(const std::string& header, const std::string& buffer, int64_t len_override = -1) {
  uint64_t len = len_override >= 0 ? static_cast<uint64_t>(len_override) : header.size();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((len >> (8 * i)) & 0xff);
  return out + header + buffer;
}

std::string write_raw(const std::string& dir, const std::string& name, const std::string& bytes) {
  const std::string path = dir + "/" + name;
  write_text_file_atomic(path, bytes);
  return path;
}

// Opens `bytes` as a safetensors file and returns the error message (empty if it opened).
std::string open_error(const std::string& bytes) {
  static const std::string dir = test::make_temp_dir("st-bad");
  const std::string path = write_raw(dir, "bad.safetensors", bytes);
  try {
    SafetensorsFile f(path);
  } catch (const std::invalid_argument& e) {
    const std::string msg = e.what();
    CHECK(msg.find(path) != std::string::npos);  // every message names the file
    return msg;
  }
  return "";
}

const std::string kTwoF32 = std::string(8, '\0');  // 2 float zeros

}  // namespace

TEST_CASE("safetensors writer/reader round trip", "[io]") {
  const std::string dir = test::make_temp_dir("st-rt");
  const float a[6] = {1, -2, 3.5f, 0, 1e-30f, 65504};
  const int32_t b[3] = {7, -8, 1 << 30};
  const uint16_t c[2] = {0x3C00, 0xC000};
  SafetensorsWriter w;
  w.add_f32("model.a", {2, 3}, a);
  w.add("model.b", DType::I32, {3}, b, sizeof(b));
  w.add("model.c", DType::F16, {1, 2}, c, sizeof(c));
  w.add("empty", DType::F32, {0, 4}, nullptr, 0);
  w.set_metadata("format", "pt");
  w.write(dir + "/m.safetensors");

  SafetensorsFile f(dir + "/m.safetensors");
  REQUIRE(f.tensors().size() == 4);
  CHECK(f.metadata().at("format") == "pt");
  TensorView va = f.view("model.a");
  CHECK(va.dtype() == DType::F32);
  CHECK(va.shape() == std::vector<int64_t>{2, 3});
  CHECK(std::memcmp(va.data, a, sizeof(a)) == 0);
  CHECK(std::memcmp(f.view("model.b").data, b, sizeof(b)) == 0);
  CHECK(std::memcmp(f.view("model.c").data, c, sizeof(c)) == 0);
  CHECK(f.view("empty").numel() == 0);
  CHECK(f.find("missing") == nullptr);
  CHECK_THROWS_AS(f.view("missing"), std::invalid_argument);
  // The header is padded so the data buffer starts 8-byte aligned.
  CHECK(reinterpret_cast<uintptr_t>(va.data) % 8 == 0);
}

TEST_CASE("safetensors writer refuses inconsistent tensors", "[io]") {
  SafetensorsWriter w;
  const float x[4] = {};
  CHECK_THROWS_AS(w.add("t", DType::F32, {3}, x, sizeof(x)), std::invalid_argument);
  w.add("t", DType::F32, {4}, x, sizeof(x));
  CHECK_THROWS_AS(w.add("t", DType::F32, {4}, x, sizeof(x)), std::invalid_argument);
  CHECK_THROWS_AS(w.add("__metadata__", DType::F32, {4}, x, sizeof(x)), std::invalid_argument);
}

TEST_CASE("spool writer: tensors of shapes decided late read back exactly, and nothing is left without commit",
          "[io]") {
  const std::string dir = test::make_temp_dir("st-spool");
  const float a[3] = {1.5f, -2, 1e-20f};
  const int64_t idx[4] = {0, 3, 3, 1};
  std::vector<uint16_t> big(70000);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint16_t>(i * 7);
  {
    SafetensorsSpoolWriter w(dir + "/m.safetensors", {{"format", "pt"}});
    w.add("z.big", DType::F16, {70000}, big.data(), big.size() * 2);
    w.add("a", DType::F32, {3}, a, sizeof(a));
    w.add("norm.index", DType::I64, {4}, idx, sizeof(idx));
    w.add("empty", DType::F32, {0}, nullptr, 0);
    CHECK(w.contains("a"));
    CHECK_FALSE(w.contains("b"));
    CHECK_THROWS_WITH(w.add("a", DType::F32, {3}, a, sizeof(a)), Catch::Contains("added twice"));
    CHECK_THROWS_WITH(w.add("b", DType::F32, {2}, a, sizeof(a)), Catch::Contains("needs 8 bytes"));
    w.commit();
    CHECK(w.file_size() > big.size() * 2);
  }
  SafetensorsFile f(dir + "/m.safetensors");
  CHECK(f.tensors().size() == 4);
  CHECK(f.metadata().at("format") == "pt");
  CHECK(std::memcmp(f.view("a").data, a, sizeof(a)) == 0);
  CHECK(std::memcmp(f.view("norm.index").data, idx, sizeof(idx)) == 0);
  CHECK(std::memcmp(f.view("z.big").data, big.data(), big.size() * 2) == 0);
  CHECK(f.view("empty").numel() == 0);
  {
    SafetensorsSpoolWriter w(dir + "/aborted.safetensors", {});
    w.add("a", DType::F32, {3}, a, sizeof(a));
  }  // no commit: neither the file nor the spool remain
  CHECK_FALSE(file_exists(dir + "/aborted.safetensors"));
  CHECK(std::system(("test -z \"$(ls " + dir + " | grep -v '^m.safetensors$')\"").c_str()) == 0);
}

TEST_CASE("a resumable spool continues from its state, dropping what was appended after it", "[io]") {
  const std::string dir = test::make_temp_dir("st-spool-resume");
  const float a[3] = {1, 2, 3}, b[2] = {4, 5}, c[4] = {6, 7, 8, 9};
  const std::string spool = dir + "/kept.spool";
  nlohmann::json state;
  {
    SafetensorsSpoolWriter w(dir + "/out.safetensors", {{"format", "pt"}}, spool, nullptr);
    w.add("a", DType::F32, {3}, a, sizeof(a));
    w.add("b", DType::F32, {2}, b, sizeof(b));
    state = w.state();
    w.add("half", DType::F32, {4}, c, sizeof(c));  // written after the state: a run killed mid-layer
  }  // destroyed uncommitted: the caller's spool stays
  REQUIRE(file_exists(spool));
  CHECK(state.at("bytes").get<uint64_t>() == sizeof(a) + sizeof(b));
  {
    SafetensorsSpoolWriter w(dir + "/out.safetensors", {{"format", "pt"}}, spool, &state);
    CHECK(w.contains("b"));
    CHECK_FALSE(w.contains("half"));
    w.add("c", DType::F32, {4}, c, sizeof(c));
    w.commit();
  }
  // The same tensors, byte for byte, as one uninterrupted writer produces.
  {
    SafetensorsSpoolWriter w(dir + "/ref.safetensors", {{"format", "pt"}});
    w.add("a", DType::F32, {3}, a, sizeof(a));
    w.add("b", DType::F32, {2}, b, sizeof(b));
    w.add("c", DType::F32, {4}, c, sizeof(c));
    w.commit();
  }
  CHECK(read_text_file(dir + "/out.safetensors") == read_text_file(dir + "/ref.safetensors"));

  // A state that does not match its spool is refused, naming the spool.
  nlohmann::json longer = state;
  longer["tensors"][1]["nbytes"] = 4096;
  longer["tensors"][1]["shape"] = {1024};
  longer["bytes"] = sizeof(a) + 4096;
  CHECK_THROWS_WITH(SafetensorsSpoolWriter(dir + "/x.safetensors", {}, spool, &longer),
                    Catch::Contains("kept.spool holds") && Catch::Contains("damaged"));
  nlohmann::json gap = state;
  gap["tensors"][1]["offset"] = 4;
  CHECK_THROWS_WITH(SafetensorsSpoolWriter(dir + "/x.safetensors", {}, spool, &gap), Catch::Contains("not where"));
  const nlohmann::json empty = nlohmann::json::object();
  CHECK_THROWS_WITH(SafetensorsSpoolWriter(dir + "/x.safetensors", {}, spool, &empty),
                    Catch::Contains("malformed spool state"));
}

TEST_CASE("sharded checkpoints resolve tensors through the index", "[io]") {
  const std::string dir = test::make_temp_dir("st-shard");
  const float x[2] = {1, 2}, y[3] = {3, 4, 5};
  SafetensorsWriter s1, s2;
  s1.add_f32("x", {2}, x);
  s2.add_f32("y", {3}, y);
  s1.write(dir + "/model-00001-of-00002.safetensors");
  s2.write(dir + "/model-00002-of-00002.safetensors");
  write_text_file_atomic(dir + "/model.safetensors.index.json",
                         R"({"metadata": {"total_size": 20}, "weight_map": {"x": "model-00001-of-00002.safetensors",
                             "y": "model-00002-of-00002.safetensors"}})");
  TensorArchive archive(dir);
  CHECK(archive.files().size() == 2);
  CHECK(archive.names() == std::vector<std::string>{"x", "y"});
  CHECK(reinterpret_cast<const float*>(archive.view("y").data)[2] == 5.0f);
  CHECK_THROWS_AS(archive.view("z"), std::invalid_argument);

  // An index naming a tensor its shard does not hold is refused.
  write_text_file_atomic(dir + "/model.safetensors.index.json",
                         R"({"weight_map": {"x": "model-00002-of-00002.safetensors"}})");
  try {
    TensorArchive bad(dir);
    FAIL("expected an error");
  } catch (const std::invalid_argument& e) {
    CHECK_THAT(e.what(), Catch::Contains("does not contain it") && Catch::Contains("\"x\""));
  }
}

TEST_CASE("released tensors leave the process's memory and read back unchanged", "[io]") {
  const std::string dir = test::make_temp_dir("st-release");
  // "big" spans many pages and starts mid-page (after "a"); its partial end pages are shared with "a" and
  // "z", which must stay intact.
  std::vector<float> big(2 << 20);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<float>(i % 1000) - 500.f;
  const float a[3] = {1, 2, 3}, z[5] = {-1, -2, -3, -4, -5};
  SafetensorsWriter w;
  w.add_f32("a", {3}, a);
  w.add_f32("big", {static_cast<int64_t>(big.size())}, big.data());
  w.add_f32("z", {5}, z);
  w.write(dir + "/model.safetensors");

  auto resident_bytes = [] {
    long pages = 0, resident = 0;
    std::FILE* f = std::fopen("/proc/self/statm", "r");
    REQUIRE(f != nullptr);
    REQUIRE(std::fscanf(f, "%ld %ld", &pages, &resident) == 2);
    std::fclose(f);
    return static_cast<double>(resident) * static_cast<double>(::sysconf(_SC_PAGESIZE));
  };
  TensorArchive archive(dir);
  const TensorView v = archive.view("big");
  REQUIRE(std::memcmp(v.data, big.data(), v.nbytes()) == 0);  // faults every page in
  const double touched = resident_bytes();
  archive.release("big");
  const double released = resident_bytes();
  INFO("resident " << touched << " -> " << released << " bytes");
  CHECK(touched - released > 0.75 * static_cast<double>(v.nbytes()));
  CHECK(std::memcmp(v.data, big.data(), v.nbytes()) == 0);  // faulted in again from the file
  CHECK(std::memcmp(archive.view("a").data, a, sizeof(a)) == 0);
  CHECK(std::memcmp(archive.view("z").data, z, sizeof(z)) == 0);
  archive.release("a");  // smaller than a page: nothing to drop, no error
  CHECK(std::memcmp(archive.view("a").data, a, sizeof(a)) == 0);
  CHECK_THROWS_WITH(archive.release("missing"), Catch::Contains("missing") && Catch::Contains(dir));

  MappedFile f(dir + "/model.safetensors");
  CHECK_THROWS_WITH(f.release(f.size() - 4, 8), Catch::Contains("model.safetensors") && Catch::Contains("cannot release"));
}

TEST_CASE("malformed safetensors files are rejected with a precise error", "[io]") {
  const std::string ok_entry = R"("t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]})";
  SECTION("well-formed baseline opens") { CHECK(open_error(raw_file("{" + ok_entry + "}", kTwoF32)).empty()); }
  SECTION("file shorter than the length prefix") {
    CHECK_THAT(open_error("abc"), Catch::Contains("too short"));
  }
  SECTION("header length past the end of the file") {
    CHECK_THAT(open_error(raw_file("{}", "", 1000)), Catch::Contains("runs past the end of the file"));
  }
  SECTION("invalid JSON") { CHECK_THAT(open_error(raw_file("{\"t\": [", "")), Catch::Contains("not valid JSON")); }
  SECTION("invalid UTF-8 in the header") {
    CHECK_THAT(open_error(raw_file("{\"t\xff\": {}}", "")), Catch::Contains("not valid JSON/UTF-8"));
  }
  SECTION("header that is not an object") {
    CHECK_THAT(open_error(raw_file("[1, 2]", "")), Catch::Contains("must be a JSON object"));
  }
  SECTION("offsets outside the buffer") {
    const std::string h = R"({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 16]}})";
    CHECK_THAT(open_error(raw_file(h, kTwoF32)), Catch::Contains("outside the 8-byte data buffer") && Catch::Contains("\"t\""));
  }
  SECTION("begin after end") {
    const std::string h = R"({"t": {"dtype": "F32", "shape": [0], "data_offsets": [8, 0]}})";
    CHECK_THAT(open_error(raw_file(h, kTwoF32)), Catch::Contains("begin > end"));
  }
  SECTION("overlapping tensors") {
    const std::string h = R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                             "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})";
    CHECK_THAT(open_error(raw_file(h, kTwoF32)), Catch::Contains("overlaps"));
  }
  SECTION("gap between tensors") {
    const std::string h = R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                             "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})";
    CHECK_THAT(open_error(raw_file(h, kTwoF32 + std::string(4, '\0'))), Catch::Contains("gap of 4 unreferenced bytes"));
  }
  SECTION("trailing bytes after the last tensor") {
    CHECK_THAT(open_error(raw_file("{" + ok_entry + "}", kTwoF32 + "xx")), Catch::Contains("2 trailing bytes"));
  }
  SECTION("shape x dtype does not match the byte range") {
    const std::string h = R"({"t": {"dtype": "F16", "shape": [2], "data_offsets": [0, 8]}})";
    CHECK_THAT(open_error(raw_file(h, kTwoF32)), Catch::Contains("needs 4 bytes, data_offsets give 8"));
  }
  SECTION("unknown dtype") {
    const std::string h = R"({"t": {"dtype": "F12", "shape": [2], "data_offsets": [0, 8]}})";
    CHECK_THAT(open_error(raw_file(h, kTwoF32)), Catch::Contains("unknown dtype \"F12\"") && Catch::Contains("BF16"));
  }
  SECTION("duplicate tensor names") {
    CHECK_THAT(open_error(raw_file("{" + ok_entry + ", " + ok_entry + "}", kTwoF32)),
               Catch::Contains("duplicate tensor name \"t\""));
  }
  SECTION("negative shape entry") {
    const std::string h = R"({"t": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})";
    CHECK_THAT(open_error(raw_file(h, kTwoF32)), Catch::Contains("non-negative integers"));
  }
  SECTION("metadata values must be strings") {
    const std::string h = "{" + ok_entry + R"(, "__metadata__": {"n": 3}})";
    CHECK_THAT(open_error(raw_file(h, kTwoF32)), Catch::Contains("__metadata__[\"n\"] must be a string"));
  }
  // Found by tests/fuzz (safetensors): nlohmann reports a number too large for a double as out_of_range, not as
  // a parse_error, and it escaped the reader.
  SECTION("a number that overflows a double") {
    const std::string h = R"({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8], "x": 1e999}})";
    CHECK_THAT(open_error(raw_file(h, kTwoF32)), Catch::Contains("not valid JSON") && Catch::Contains("overflow"));
  }
}

TEST_CASE("a sharded index with a number that overflows a double is refused by name (fuzz finding)", "[io]") {
  const std::string dir = test::make_temp_dir("st-index-overflow");
  const float x[2] = {1, 2};
  SafetensorsWriter w;
  w.add_f32("x", {2}, x);
  w.write(dir + "/shard.safetensors");
  write_text_file_atomic(dir + "/model.safetensors.index.json", R"({"metadata": {"total_size": 66e6666},
                                                                     "weight_map": {"x": "shard.safetensors"}})");
  CHECK_THROWS_WITH(TensorArchive(dir), Catch::Contains("model.safetensors.index.json: not valid JSON") &&
                                            Catch::Contains("overflow"));
}

TEST_CASE("view_row_f32 converts every fp16 and a bf16 row exactly (F16C path = scalar conversion)", "[safetensors]") {
  // One row holding all 65536 fp16 bit patterns but the NaNs (whose payload F16C may quiet): subnormals, +-0, +-inf.
  std::vector<uint16_t> halves;
  for (uint32_t h = 0; h < 65536; ++h)
    if (((h >> 10) & 0x1f) != 0x1f || (h & 0x3ff) == 0) halves.push_back(static_cast<uint16_t>(h));
  ptq::TensorInfo info;
  info.name = "w";
  info.dtype = ptq::DType::F16;
  info.shape = {1, static_cast<int64_t>(halves.size())};
  info.end = halves.size() * 2;
  const ptq::TensorView v{&info, reinterpret_cast<const uint8_t*>(halves.data())};
  REQUIRE(ptq::is_float_matrix(v));
  std::vector<float> row(halves.size());
  ptq::view_row_f32(v, 0, row.data());
  size_t bad = 0;
  for (size_t i = 0; i < halves.size(); ++i) {
    const float want = ptq::fp16_to_f32(halves[i]);
    bad += std::memcmp(&row[i], &want, 4) != 0;
  }
  CHECK(bad == 0);
  // bf16: the high half of the float's bits.
  const std::vector<uint16_t> b = {0x3f80, 0xc000, 0x0001, 0x7f80};
  info.dtype = ptq::DType::BF16;
  info.shape = {2, 2};
  info.end = 8;
  const ptq::TensorView bv{&info, reinterpret_cast<const uint8_t*>(b.data())};
  float r1[2];
  ptq::view_row_f32(bv, 1, r1);
  CHECK(r1[0] == ptq::bf16_to_f32(0x0001));
  CHECK(std::isinf(r1[1]));
  info.dtype = ptq::DType::I32;
  CHECK_THROWS_WITH(ptq::view_row_f32(bv, 0, r1), Catch::Contains("\"w\"") && Catch::Contains("I32"));
}
