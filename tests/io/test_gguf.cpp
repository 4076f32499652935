// lib/io GGUF: block quantizers against hand-computed blocks and their error bounds, writer/reader round trip,
// one precise error per malformed-file case, and llama.cpp's own stories260K.gguf parsed. LibTorch-free (runs
// under ASan/UBSan too).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/file.h"
#include "core/half.h"
#include "io/gguf.h"
#include "tests/io/gguf_test_data.h"
#include "tests/test_paths.h"

using namespace ptq;

namespace {

// Builds raw GGUF bytes piece by piece (independent of GgufWriter).
struct Raw {
  std::string b;
  template <typename T>
  Raw& put(T v) {
    b.append(reinterpret_cast<const char*>(&v), sizeof(T));
    return *this;
  }
  Raw& str(const std::string& s) {
    put<uint64_t>(s.size());
    b += s;
    return *this;
  }
  Raw& header(uint64_t tensors, uint64_t kvs, uint32_t version = 3) {
    b += "GGUF";
    return put<uint32_t>(version).put<uint64_t>(tensors).put<uint64_t>(kvs);
  }
  Raw& tensor(const std::string& name, std::vector<uint64_t> dims, uint32_t type, uint64_t offset) {
    str(name).put<uint32_t>(uint32_t(dims.size()));
    for (auto d : dims) put<uint64_t>(d);
    return put<uint32_t>(type).put<uint64_t>(offset);
  }
  Raw& pad(size_t a = 32) {
    while (b.size() % a) b += '\0';
    return *this;
  }
  Raw& zeros(size_t n) {
    b.append(n, '\0');
    return *this;
  }
};

std::string open_error(const std::string& bytes) {
  static const std::string dir = test::make_temp_dir("gguf-bad");
  const std::string path = dir + "/bad.gguf";
  write_text_file_atomic(path, bytes);
  try {
    GgufFile f(path);
  } catch (const std::invalid_argument& e) {
    const std::string msg = e.what();
    CHECK(msg.find(path) != std::string::npos);  // every message names the file
    return msg;
  }
  return "";
}

bool contains(const std::string& s, const std::string& sub) { return s.find(sub) != std::string::npos; }

using test::gaussian_values;

}  // namespace

TEST_CASE("ggml type table", "[gguf]") {
  CHECK(ggml_type_traits(GgmlType::Q4_0).type_size == 18);
  CHECK(ggml_type_traits(GgmlType::Q4_1).type_size == 20);
  CHECK(ggml_type_traits(GgmlType::Q8_0).type_size == 34);
  CHECK(ggml_type_traits_by_id(30)->type == GgmlType::BF16);
  CHECK(ggml_type_traits_by_id(8)->type == GgmlType::Q8_0);
  CHECK(ggml_type_traits_by_id(5) == nullptr);  // Q4_2, removed from ggml
  CHECK(*ggml_type_from_name("q4_1") == GgmlType::Q4_1);
  CHECK(*ggml_type_from_name("q4_k") == GgmlType::Q4_K);
  CHECK_FALSE(ggml_type_from_name("q4_k_m"));  // a llama-quantize mix (export/gguf_export.h), not a ggml type
  CHECK(ggml_nbytes(GgmlType::Q4_0, 64) == 36);
  CHECK_THROWS_WITH(ggml_nbytes(GgmlType::Q8_0, 172), Catch::Contains("not a multiple of its block size 32"));
}

TEST_CASE("Q4_0 / Q4_1 / Q8_0 reference rounding on hand-computed blocks", "[gguf]") {
  float x[32];
  for (int j = 0; j < 32; ++j) x[j] = float(j - 16);  // -16 .. 15
  BlockQ4_0 q4;
  quantize_row_q4_0_ref(x, &q4, 32);
  // max magnitude -16 -> d = -16 / -8 = 2; q = min(15, trunc(x/2 + 8.5)): x=-16 -> 0, x=0 -> 8, x=15 -> 15 (16 clamped)
  CHECK(fp16_to_f32(q4.d) == 2.0f);
  CHECK(q4.qs[0] == (0 | (8 << 4)));
  CHECK((q4.qs[15] >> 4) == 15);
  // x = -15 -> trunc(-7.5 + 8.5) = 1; x = 1 -> trunc(0.5 + 8.5) = 9 (ggml truncates x/d + 8.5: rounds half up)
  CHECK((q4.qs[1] & 0xf) == 1);
  CHECK((q4.qs[1] >> 4) == 9);

  BlockQ4_1 q41;
  quantize_row_q4_1_ref(x, &q41, 32);
  // min -16, max 15: d = 31/15, m = -16; x = 15 -> trunc(31 * 15/31 + 0.5) = 15
  CHECK(fp16_to_f32(q41.m) == -16.0f);
  CHECK(fp16_to_f32(q41.d) == Approx(31.0 / 15).epsilon(1e-3));
  CHECK((q41.qs[0] & 0xf) == 0);
  CHECK((q41.qs[15] >> 4) == 15);

  BlockQ8_0 q8;
  quantize_row_q8_0_ref(x, &q8, 32);
  // d = 16/127; q = round(x * 127/16): -16 -> -127, 1 -> round(7.9375) = 8, 15 -> round(119.06) = 119
  CHECK(q8.qs[0] == -127);
  CHECK(q8.qs[17] == 8);
  CHECK(q8.qs[31] == 119);
  // Half away from zero: x = 8 with absmax 16 -> 63.5 -> 64 (ggml uses roundf)
  CHECK(q8.qs[24] == 64);

  float zero[32] = {};
  quantize_row_q4_0_ref(zero, &q4, 32);
  quantize_row_q8_0_ref(zero, &q8, 32);
  float y[32];
  dequantize_row_q4_0(&q4, y, 32);
  for (float v : y) CHECK(v == 0.0f);
  dequantize_row_q8_0(&q8, y, 32);
  for (float v : y) CHECK(v == 0.0f);
}

TEST_CASE("block quantizers stay inside their error bounds, and encode/decode agree with the row functions", "[gguf]") {
  // Rows of 96 values (3 blocks) plus a width that is not a multiple of 32, which every block type refuses.
  const int64_t rows = 7, cols = 96;
  const std::vector<float> x = gaussian_values(rows * cols, 7, 0.05f);
  for (GgmlType t : {GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::F16, GgmlType::BF16, GgmlType::F32}) {
    const auto bytes = ggml_encode(t, x.data(), rows, cols, "w");
    REQUIRE(bytes.size() == ggml_nbytes(t, rows * cols));
    std::vector<float> y(x.size());
    ggml_decode(t, bytes.data(), y.data(), rows * cols);
    for (int64_t b = 0; b < rows * cols / 32; ++b) {
      float amax = 0, mn = 1e30f, mx = -1e30f;
      for (int j = 0; j < 32; ++j) {
        amax = std::max(amax, std::fabs(x[b * 32 + j]));
        mn = std::min(mn, x[b * 32 + j]);
        mx = std::max(mx, x[b * 32 + j]);
      }
      // Bound = half a step + the step's fp16 rounding (relative 2^-11) times the largest code magnitude, plus
      // for Q4_1 the fp16 rounding of m (relative 2^-11 of |min|). Q4_0 gets a full step: its grid is -8..7
      // steps from the extreme, so values near the opposite extreme clamp to code 15 (one step short).
      double bound = 0;
      const double u = std::ldexp(1.0, -11);
      switch (t) {
        case GgmlType::Q4_0: bound = amax / 8 + 8 * (amax / 8) * u + 1e-7; break;
        case GgmlType::Q4_1: bound = (mx - mn) / 15 / 2 + 15 * ((mx - mn) / 15) * u + std::fabs(mn) * u + 1e-7; break;
        case GgmlType::Q8_0: bound = amax / 127 / 2 + 127 * (amax / 127) * u + 1e-7; break;
        case GgmlType::F16: bound = amax * u; break;
        case GgmlType::BF16: bound = amax * std::ldexp(1.0, -8); break;
        default: bound = 0;
      }
      for (int j = 0; j < 32; ++j) REQUIRE(std::fabs(y[b * 32 + j] - x[b * 32 + j]) <= bound);
    }
  }
  CHECK_THROWS_WITH(ggml_encode(GgmlType::Q4_0, x.data(), 1, 72, "blk.0.ffn_down"),
                    Catch::Contains("blk.0.ffn_down") && Catch::Contains("72"));
  // Float types take any width.
  CHECK(ggml_encode(GgmlType::F16, x.data(), 1, 37, "w").size() == 74);
  std::vector<float> bad = x;
  bad[40] = std::nanf("");
  CHECK_THROWS_WITH(ggml_encode(GgmlType::Q8_0, bad.data(), rows, cols, "blk.3.attn_q"),
                    Catch::Contains("blk.3.attn_q") && Catch::Contains("element 40"));
}

TEST_CASE("GGUF writer/reader round trip", "[gguf]") {
  const std::string dir = test::make_temp_dir("gguf-rt");
  const std::string path = dir + "/t.gguf";
  GgufWriter w;
  w.set("general.architecture", GgufValue::string("llama"));
  w.set("a.u32", GgufValue::u32(4000000000u));
  w.set("a.i32", GgufValue::i32(-5));
  w.set("a.u64", GgufValue::u64(1ull << 40));
  w.set("a.f32", GgufValue::f32(1e-5f));
  w.set("a.bool", GgufValue::boolean(true));
  w.set("a.strs", GgufValue::string_array({"<unk>", "\xE2\x96\x81the", ""}));
  w.set("a.floats", GgufValue::f32_array({0.5, -1.25}));
  w.set("a.ints", GgufValue::i32_array({1, -2, 3}));
  std::vector<float> a(15);
  for (int i = 0; i < 15; ++i) a[i] = float(i) - 7.5f;
  const std::vector<float> q = gaussian_values(64 * 2, 3);
  w.add_tensor("t.f32", {5, 3}, GgmlType::F32, [&] { return ggml_encode(GgmlType::F32, a.data(), 3, 5, "t.f32"); });
  w.add_tensor("t.q8", {64, 2}, GgmlType::Q8_0, [&] { return ggml_encode(GgmlType::Q8_0, q.data(), 2, 64, "t.q8"); });
  CHECK_THROWS_WITH(w.add_tensor("t.f32", {1}, GgmlType::F32, nullptr), Catch::Contains("added twice"));
  CHECK_THROWS_WITH(w.add_tensor("t.bad", {48, 2}, GgmlType::Q4_0, nullptr), Catch::Contains("blocks of 32"));
  w.write(path);

  GgufFile f(path);
  CHECK(f.version() == 3);
  CHECK(f.kvs().size() == 9);
  CHECK(f.kvs()[0].key == "general.architecture");
  CHECK(f.get_string("general.architecture") == "llama");
  CHECK(f.get_uint("a.u32") == 4000000000u);
  CHECK(f.get_int("a.i32") == -5);
  CHECK(f.get_uint("a.u64") == (1ull << 40));
  CHECK(f.get_float("a.f32") == Approx(1e-5).epsilon(1e-6));
  CHECK(f.get_bool("a.bool"));
  CHECK(f.get_string_array("a.strs") == std::vector<std::string>{"<unk>", "\xE2\x96\x81the", ""});
  CHECK(f.get_float_array("a.floats") == std::vector<double>{0.5, -1.25});
  CHECK(f.get_int_array("a.ints") == std::vector<int64_t>{1, -2, 3});
  CHECK_THROWS_WITH(f.get_string("a.u32"), Catch::Contains("\"a.u32\" is u32, expected string"));
  CHECK_THROWS_WITH(f.get_uint("a.i32"), Catch::Contains("non-negative"));
  CHECK_THROWS_WITH(f.get_uint("nope"), Catch::Contains("\"nope\" is missing"));
  REQUIRE(f.tensors().size() == 2);
  const GgufTensorInfo& t = f.tensor("t.f32");
  CHECK(t.dims == std::vector<int64_t>{5, 3});
  CHECK(t.offset == 0);
  CHECK(f.tensor("t.q8").offset == 64);  // 60 bytes rounded up to the alignment 32
  CHECK(f.data_offset() % 32 == 0);
  CHECK(f.file_size() % 32 == 0);
  CHECK(f.tensor_f32("t.f32") == a);
  const std::vector<float> qb = f.tensor_f32("t.q8");
  for (size_t i = 0; i < q.size(); ++i) CHECK(std::fabs(qb[i] - q[i]) < 0.05);
  CHECK_THROWS_WITH(f.tensor("nope"), Catch::Contains("no tensor \"nope\""));
}

TEST_CASE("GGUF reader refuses malformed files with a precise message", "[gguf]") {
  // A valid minimal file: one F32 tensor of 8 values.
  auto valid = [](uint32_t type = 0, uint64_t offset = 0, uint64_t dim0 = 8, size_t data = 32) {
    Raw r;
    r.header(1, 1).str("general.architecture").put<uint32_t>(8).str("llama").tensor("w", {dim0}, type, offset).pad();
    return r.zeros(data).b;
  };
  CHECK(open_error(valid()).empty());
  CHECK(contains(open_error("GGUX" + valid().substr(4)), "not a GGUF file"));
  {
    std::string b = valid();
    b[4] = 0, b[7] = 3;  // version 3 written big-endian
    CHECK(contains(open_error(b), "big-endian"));
  }
  {
    Raw r;
    r.header(0, 0, 4);
    CHECK(contains(open_error(r.b), "version 4 is not supported"));
  }
  CHECK(contains(open_error(valid().substr(0, 60)), "truncated GGUF"));
  {
    Raw r;
    r.header(0, 1).str("k").put<uint32_t>(8).put<uint64_t>(1000).b += "abc";
    const std::string e = open_error(r.b);
    CHECK(contains(e, "KV \"k\""));
    CHECK(contains(e, "needs 1000 bytes"));
  }
  {
    Raw r;
    r.header(0, 1).str("k").put<uint32_t>(13);
    CHECK(contains(open_error(r.b), "unknown value type 13"));
  }
  {
    Raw r;
    r.header(0, 2).str("k").put<uint32_t>(4).put<uint32_t>(1).str("k").put<uint32_t>(4).put<uint32_t>(2);
    CHECK(contains(open_error(r.b), "duplicate key \"k\""));
  }
  {
    Raw r;
    r.header(0, 1).str("k").put<uint32_t>(9).put<uint32_t>(4).put<uint64_t>(uint64_t(1) << 60);
    CHECK(contains(open_error(r.b), "truncated GGUF"));
  }
  {
    Raw r;
    r.header(0, 1).str("b").put<uint32_t>(7).put<uint8_t>(2);
    CHECK(contains(open_error(r.b), "bool holding 2"));
  }
  {
    Raw r;
    r.header(uint64_t(1) << 40, 0);
    CHECK(contains(open_error(r.b), "more than a"));
  }
  CHECK(contains(open_error(valid(9)), "ggml type 9"));  // Q8_1: ggml's dot-product intermediate, never in a file
  CHECK(contains(open_error(valid(0, 4)), "not a multiple of the alignment"));
  CHECK(contains(open_error(valid(0, 0, 8, 16)), "runs past the end"));
  CHECK(contains(open_error(valid(8, 0, 40, 64)), "not a multiple of q8_0's block size 32"));
  {
    Raw r;
    r.header(1, 0).tensor("w", {0}, 0, 0).pad();
    CHECK(contains(open_error(r.b), "dimension 0 is 0"));
  }
  {
    Raw r;
    r.header(1, 0).tensor("w", {1, 1, 1, 1, 1}, 0, 0).pad();
    CHECK(contains(open_error(r.b), "5 dimensions"));
  }
  {
    Raw ok;
    ok.header(2, 0).tensor("a", {16}, 0, 0).tensor("b", {16}, 0, 64).pad().zeros(128);
    CHECK(open_error(ok.b).empty());
    Raw clash;  // a covers data bytes [32, 128), b starts at 64
    clash.header(2, 0).tensor("a", {24}, 0, 32).tensor("b", {8}, 0, 64).pad().zeros(128);
    CHECK(contains(open_error(clash.b), "overlap"));
    Raw dup;
    dup.header(2, 0).tensor("a", {8}, 0, 0).tensor("a", {8}, 0, 32).pad().zeros(64);
    CHECK(contains(open_error(dup.b), "duplicate tensor \"a\""));
  }
  {
    Raw r;
    r.header(0, 1).str("general.alignment").put<uint32_t>(4).put<uint32_t>(24);
    CHECK(contains(open_error(r.b), "power of two"));
  }
}

// Found by tests/fuzz (gguf): the element-count check multiplied in uint64, so two dims of 2^35 wrapped (2^70) past
// it and the signed element count overflowed (UBSan).
TEST_CASE("GGUF reader: dims whose product wraps 64 bits are refused (fuzz finding)", "[gguf]") {
  const uint64_t d = uint64_t(1) << 35;
  Raw r;
  r.header(1, 0).tensor("w", {d, d}, 0, 0).pad();
  CHECK(contains(open_error(r.b), "tensor \"w\" dimension 1 is 34359738368 (must be positive; total elements at most 2^50)"));
  Raw edge;  // 2^25 x 2^25 = 2^50 exactly is within the limit (then refused only for its extent)
  edge.header(1, 0).tensor("w", {uint64_t(1) << 25, uint64_t(1) << 25}, 0, 0).pad();
  CHECK(contains(open_error(edge.b), "runs past the end"));
}

TEST_CASE("llama.cpp's stories260K.gguf parses with the expected metadata and tensors", "[gguf]") {
  GgufFile f(test::repo_path("data/models/stories260K/stories260K.gguf"));
  CHECK(f.version() == 3);
  CHECK(f.kvs().size() == 19);
  CHECK(f.tensors().size() == 48);
  CHECK(f.get_string("general.architecture") == "llama");
  CHECK(f.get_uint("llama.block_count") == 5);
  CHECK(f.get_uint("llama.attention.head_count_kv") == 4);
  CHECK(f.get_float("llama.attention.layer_norm_rms_epsilon") == Approx(1e-5));
  const auto& tokens = f.get_string_array("tokenizer.ggml.tokens");
  REQUIRE(tokens.size() == 512);
  CHECK(tokens[0] == "<unk>");
  CHECK(f.get_int_array("tokenizer.ggml.token_type")[1] == 3);  // control
  CHECK(f.get_float_array("tokenizer.ggml.scores").size() == 512);
  const GgufTensorInfo& down = f.tensor("blk.0.ffn_down.weight");
  CHECK(down.dims == std::vector<int64_t>{172, 64});
  CHECK(down.type == GgmlType::F32);
  CHECK(f.tensor("token_embd.weight").dims == std::vector<int64_t>{64, 512});
  CHECK(f.data_offset() + f.tensors().back().offset + f.tensors().back().nbytes == f.file_size());
}
