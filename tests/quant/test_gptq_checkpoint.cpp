// lib/quant GPTQ checkpoint reader on files packed by hand: a plain bit-by-bit loop written from FORMATS.md
// ("GPTQ safetensors"), sharing no code with pack_bits/pack_gptq, for 2/3/4/8 bits, v1 and v2, act-order g_idx.
#include <catch2/catch.hpp>

#include <cstring>
#include <algorithm>
#include <random>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "core/file.h"
#include "io/safetensors.h"
#include "quant/gptq_checkpoint.h"
#include "tests/test_paths.h"

using namespace ptq;

namespace {

// Bit stream of `codes`: code j at bits [j*b, j*b + b) LSB first, word w = bits [32w, 32w + 32).
std::vector<uint32_t> stream(const std::vector<int>& codes, int b) {
  std::vector<uint32_t> w(codes.size() * b / 32, 0);
  for (size_t j = 0; j < codes.size(); ++j)
    for (int t = 0; t < b; ++t) {
      const size_t bit = j * b + t;
      w[bit / 32] |= uint32_t((codes[j] >> t) & 1) << (bit % 32);
    }
  return w;
}

uint16_t to_half_bits(float x) {
  const at::Tensor h = at::full({1}, x, at::kFloat).to(at::kHalf);
  uint16_t u;
  std::memcpy(&u, h.data_ptr(), 2);
  return u;
}
float half_value(float x) { return at::full({1}, x, at::kFloat).to(at::kHalf).to(at::kFloat).item<float>(); }

struct Case {
  int bits;
  bool v1, act_order;
};

}  // namespace

TEST_CASE("hand-packed GPTQ modules dequantize exactly through the GPTQ weight source", "[gptq_checkpoint]") {
  const int64_t K = 96, N = 64, gs = 32, G = K / gs;  // K*b and N*b multiples of 32 for b in {2, 3, 4, 8}
  for (const Case c : {Case{4, false, false}, Case{4, true, false}, Case{3, false, true}, Case{3, true, false},
                       Case{2, true, true}, Case{8, false, false}}) {
    INFO("bits " << c.bits << (c.v1 ? " v1" : " v2") << (c.act_order ? " act-order" : ""));
    std::mt19937 rng(c.bits * 7 + c.v1);
    const int maxq = (1 << c.bits) - 1;
    std::uniform_int_distribution<int> code(0, maxq), zero(c.v1 ? 1 : 0, maxq);
    std::normal_distribution<float> scale(0.02f, 0.005f);
    std::vector<int> q(N * K), z(G * N), g_idx(K);
    std::vector<float> s(G * N);
    for (auto& v : q) v = code(rng);
    for (auto& v : z) v = zero(rng);
    for (auto& v : s) v = half_value(std::abs(scale(rng)) + 1e-3f);
    for (int64_t i = 0; i < K; ++i) g_idx[i] = int(i / gs);
    if (c.act_order) std::shuffle(g_idx.begin(), g_idx.end(), rng);
    // qweight [K*b/32, N]: column n is the stream of q[n, 0..K).
    std::vector<uint32_t> qweight(K * c.bits / 32 * N);
    for (int64_t n = 0; n < N; ++n) {
      const std::vector<int> col(q.begin() + n * K, q.begin() + (n + 1) * K);
      const std::vector<uint32_t> w = stream(col, c.bits);
      for (size_t r = 0; r < w.size(); ++r) qweight[r * N + n] = w[r];
    }
    // qzeros [G, N*b/32]: row g is the stream of zeros[g, 0..N) (v1: zero - 1).
    std::vector<uint32_t> qzeros;
    for (int64_t g = 0; g < G; ++g) {
      std::vector<int> row(z.begin() + g * N, z.begin() + (g + 1) * N);
      if (c.v1)
        for (auto& v : row) v -= 1;
      const std::vector<uint32_t> w = stream(row, c.bits);
      qzeros.insert(qzeros.end(), w.begin(), w.end());
    }
    std::vector<uint16_t> scales(G * N);
    for (size_t i = 0; i < s.size(); ++i) scales[i] = to_half_bits(s[i]);

    const std::string dir = test::make_temp_dir("gptq-hand");
    SafetensorsWriter w;
    w.add("m.qweight", DType::I32, {K * c.bits / 32, N}, qweight.data(), qweight.size() * 4);
    w.add("m.qzeros", DType::I32, {G, N * c.bits / 32}, qzeros.data(), qzeros.size() * 4);
    w.add("m.scales", DType::F16, {G, N}, scales.data(), scales.size() * 2);
    w.add("m.g_idx", DType::I32, {K}, g_idx.data(), g_idx.size() * 4);
    const float other[2] = {1.5f, -2.0f};
    w.add_f32("norm.weight", {2}, other);
    w.write(dir + "/model.safetensors");
    const nlohmann::json qc = {{"quant_method", "gptq"}, {"bits", c.bits}, {"group_size", gs}, {"sym", false},
                               {"desc_act", c.act_order}, {"checkpoint_format", c.v1 ? "gptq" : "gptq_v2"}};
    write_text_file_atomic(dir + "/config.json", nlohmann::json{{"quantization_config", qc}}.dump());

    GptqCheckpointConfig cfg;
    REQUIRE(read_gptq_config(dir, cfg));
    CHECK(cfg.format == (c.v1 ? GptqFormat::V1 : GptqFormat::V2));
    const TensorArchive ar(dir);
    const CheckpointQuantConfig mods = gptq_module_config(ar, cfg);
    REQUIRE(mods.modules.count("m") == 1);
    CHECK(mods.modules.at("m").in_features == K);
    CHECK(mods.modules.at("m").out_features == N);
    auto src = make_gptq_weight_source(ar, cfg);
    REQUIRE(src->contains("m.weight"));
    const at::Tensor got = src->load("m.weight");
    REQUIRE(got.sizes().vec() == std::vector<int64_t>{N, K});
    int64_t bad = 0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < K; ++i) {
        const int64_t g = g_idx[i];
        // fp32 product of an fp16 scale and a small integer: the same single rounding on both sides.
        const float want = s[g * N + n] * float(q[n * K + i] - z[g * N + n]);
        bad += got[n][i].item<float>() != want;
      }
    CHECK(bad == 0);
    CHECK(at::equal(src->load("norm.weight"), at::tensor({1.5f, -2.0f})));
  }
}

TEST_CASE("GPTQ config detection: absent, other methods, v1 default, bad format", "[gptq_checkpoint]") {
  const std::string dir = test::make_temp_dir("gptq-cfg");
  GptqCheckpointConfig cfg;
  write_text_file_atomic(dir + "/config.json", R"({"model_type": "llama"})");
  CHECK_FALSE(read_gptq_config(dir, cfg));
  write_text_file_atomic(dir + "/config.json", R"({"quantization_config": {"quant_method": "awq"}})");
  CHECK_FALSE(read_gptq_config(dir, cfg));
  write_text_file_atomic(dir + "/config.json", R"({"quantization_config": {"quant_method": "gptq", "bits": 4,
                                                   "group_size": 128}})");
  REQUIRE(read_gptq_config(dir, cfg));
  CHECK(cfg.format == GptqFormat::V1);  // AutoGPTQ wrote no checkpoint_format: v1
  write_text_file_atomic(dir + "/config.json", R"({"quantization_config": {"quant_method": "gptq", "bits": 4,
                                                   "checkpoint_format": "marlin"}})");
  CHECK_THROWS_WITH(read_gptq_config(dir, cfg), Catch::Contains("marlin"));
  write_text_file_atomic(dir + "/config.json", R"({"quantization_config": {"quant_method": "gptq", "bits": 5}})");
  CHECK_THROWS_WITH(read_gptq_config(dir, cfg), Catch::Contains("bits 5"));
}

TEST_CASE("hand-packed compressed-tensors pack-quantized modules dequantize exactly",
          "[gptq_checkpoint][compressed_tensors]") {
  const int64_t K = 64, N = 48, gs = 16, G = K / gs;  // N*b a multiple of 32 for b in {2, 4, 8} (zero points)
  for (const int bits : {4, 8, 2}) {
    for (const bool sym : {true, false}) {
      INFO(bits << " bits " << (sym ? "sym" : "asym"));
      std::mt19937 rng(bits + sym);
      const int half = 1 << (bits - 1);
      std::uniform_int_distribution<int> sval(-half, half - 1);  // signed values as llm-compressor holds them
      std::vector<int> q(N * K), z(N * G, 0);
      std::vector<float> s(N * G);
      for (auto& v : q) v = sval(rng);
      if (!sym)
        for (auto& v : z) v = sval(rng);
      for (auto& v : s) v = half_value(0.01f + 0.001f * float(rng() % 50));
      // weight_packed [N, K*b/32]: row n is the stream of q + 2^(b-1).
      std::vector<uint32_t> packed;
      for (int64_t n = 0; n < N; ++n) {
        std::vector<int> row(q.begin() + n * K, q.begin() + (n + 1) * K);
        for (auto& v : row) v += half;
        const auto w = stream(row, bits);
        packed.insert(packed.end(), w.begin(), w.end());
      }
      // weight_zero_point [N*b/32, G]: column g is the stream of zero[0..N, g] + 2^(b-1), packed along N.
      std::vector<uint32_t> zp(N * bits / 32 * G);
      for (int64_t g = 0; g < G; ++g) {
        std::vector<int> col(N);
        for (int64_t n = 0; n < N; ++n) col[n] = z[n * G + g] + half;
        const auto w = stream(col, bits);
        for (size_t r = 0; r < w.size(); ++r) zp[r * G + g] = w[r];
      }
      std::vector<uint16_t> scales(N * G);
      for (size_t i = 0; i < s.size(); ++i) scales[i] = to_half_bits(s[i]);
      const int64_t shape[2] = {N, K};
      const std::string dir = test::make_temp_dir("ct-hand");
      SafetensorsWriter w;
      w.add("m.weight_packed", DType::I32, {N, K * bits / 32}, packed.data(), packed.size() * 4);
      w.add("m.weight_scale", DType::F16, {N, G}, scales.data(), scales.size() * 2);
      w.add("m.weight_shape", DType::I64, {2}, shape, sizeof shape);
      if (!sym) w.add("m.weight_zero_point", DType::I32, {N * bits / 32, G}, zp.data(), zp.size() * 4);
      w.write(dir + "/model.safetensors");
      write_text_file_atomic(dir + "/config.json",
                             R"({"quantization_config": {"quant_method": "compressed-tensors",
                                 "format": "pack-quantized", "quantization_status": "compressed"}})");
      ImportedCheckpoint ck;
      REQUIRE(read_imported_config(dir, ck));
      CHECK(ck.kind == ImportedCheckpoint::Kind::CompressedTensors);
      const TensorArchive ar(dir);
      const CheckpointQuantConfig mods = imported_module_config(ar, ck);
      REQUIRE(mods.modules.count("m") == 1);
      CHECK(mods.modules.at("m").spec.bits == bits);
      CHECK(mods.modules.at("m").spec.sym == sym);
      const at::Tensor got = make_imported_weight_source(ar, ck)->load("m.weight");
      int64_t bad = 0;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t i = 0; i < K; ++i) {
          const float want = s[n * G + i / gs] * float(q[n * K + i] - z[n * G + i / gs]);  // one rounding, as above
          bad += got[n][i].item<float>() != want;
        }
      CHECK(bad == 0);
    }
  }
  const std::string dir = test::make_temp_dir("ct-cfg");
  write_text_file_atomic(dir + "/config.json", R"({"quantization_config": {"quant_method": "compressed-tensors",
                                                   "format": "float-quantized"}})");
  ImportedCheckpoint ck;  // fp8 (int-quantized is read since the W8A8 export: tests/export/test_gptq_export.cpp)
  CHECK_THROWS_WITH(read_imported_config(dir, ck), Catch::Contains("float-quantized"));
}
