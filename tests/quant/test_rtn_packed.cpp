// quant/rtn_packed: the fused RTN pass against the LibTorch path it replaces (quantize_weight, whose tensor code is
// itself tested bit for bit against the scalar reference) packed with formats.h's pack_bits: same words, same fp16
// scales, same zeros, for every code width, sym and asym, per-channel and odd groups, and F32/F16/BF16 input; its
// distortion figures against distortion(); and the quantize driver's RTN output read back equal to quantize_weight.
#include <catch2/catch.hpp>

#include <cstring>
#include <limits>
#include <vector>

#include <ATen/ATen.h>

#include "core/weight_grid.h"
#include "model/model.h"
#include "pipeline/quantize.h"
#include "pipeline/recipe.h"
#include "quant/checkpoint.h"
#include "quant/formats.h"
#include "quant/rtn_packed.h"
#include "tests/test_paths.h"

using namespace ptq;

namespace {

// A TensorView over a tensor's bytes (the tensor must outlive the view).
struct HeldView {
  TensorInfo info;
  at::Tensor t;
  TensorView view() const { return {&info, static_cast<const uint8_t*>(t.data_ptr())}; }
};

HeldView hold(const at::Tensor& src, DType dtype) {
  HeldView h;
  const at::ScalarType st = dtype == DType::F32 ? at::kFloat : dtype == DType::F16 ? at::kHalf : at::kBFloat16;
  h.t = src.to(st).contiguous();
  h.info.name = "w";
  h.info.dtype = dtype;
  h.info.shape = src.sizes().vec();
  h.info.end = static_cast<uint64_t>(h.t.numel() * h.t.element_size());
  return h;
}

std::vector<int32_t> ints(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kInt).contiguous();
  return {c.data_ptr<int32_t>(), c.data_ptr<int32_t>() + c.numel()};
}

// Codes [R, L] padded with zero codes to a multiple of 32 and packed (the checkpoint's row streams).
std::vector<int32_t> packed_rows(const at::Tensor& codes, int bits) {
  const int64_t L = codes.size(1), padded = (L + 31) / 32 * 32;
  return ints(pack_bits(at::constant_pad_nd(codes.to(at::kInt), {0, padded - L}, 0), bits, "ref"));
}

}  // namespace

TEST_CASE("packed RTN equals quantize_weight + pack_bits for every width, grid and input dtype", "[quant][rtn]") {
  at::manual_seed(7);
  // 37 rows (odd, not a multiple of a thread's share), 96 columns (padding for per-channel 3/5/6/7-bit rows;
  // groups 3, 32 and 96 divide it); outliers so groups differ widely; exact zeros for the zero-fraction figure.
  at::Tensor w = at::randn({37, 96}) * 0.05;
  w.index_put_({5, 7}, 3.0);
  w.index_put_({11, at::indexing::Slice(32, 64)}, 0.0);
  w.index_put_({20, 3}, -1e-6);
  int cases = 0;
  for (DType dtype : {DType::F32, DType::F16, DType::BF16}) {
    const HeldView h = hold(w, dtype);
    const at::Tensor x = h.t.to(at::kFloat);  // what the pass sees
    for (int bits = kGridMinBits; bits <= kGridMaxBits; ++bits)
      for (bool sym : {true, false})
        for (int64_t group : {kPerChannel, int64_t{3}, int64_t{32}, int64_t{96}}) {
          const WeightQuantSpec spec{bits, group, sym, false};
          INFO(dtype_name(dtype) << " " << grid_of(spec).name());
          REQUIRE(rtn_pack_supports(h.view(), spec));
          const RtnPacked got = rtn_pack(h.view(), spec, "w");
          const QuantizedWeight want = quantize_weight(x, spec, "w");
          CHECK(got.tensors.out == 37);
          CHECK(got.tensors.in == 96);
          CHECK(got.tensors.qweight == packed_rows(want.q, bits));
          const at::Tensor half = want.scales.to(at::kHalf).contiguous();
          CHECK(std::memcmp(got.tensors.scales.data(), half.data_ptr(), got.tensors.scales.size() * 2) == 0);
          if (sym)
            CHECK(got.tensors.qzeros.empty());
          else
            CHECK(got.tensors.qzeros == packed_rows(want.zeros, bits));
          // Same figures as distortion() on the dequantized weight; the sums differ only in order (37 x 96 terms
          // in double: relative error far below 1e-12), counts and the maximum exactly.
          const Distortion d = distortion(x, dequantize(want));
          CHECK(got.error.nmse == Approx(d.nmse).epsilon(1e-12));
          CHECK(got.error.max_abs_error == d.max_abs_error);
          CHECK(got.error.sign_flips == d.sign_flips);
          CHECK(got.error.zero_fraction == d.zero_fraction);
          ++cases;
        }
  }
  CHECK(cases == 3 * 7 * 2 * 4);
}

TEST_CASE("packed RTN refuses what the checkpoint cannot hold, naming the element", "[quant][rtn]") {
  at::Tensor w = at::randn({4, 32});
  w.index_put_({2, 9}, std::numeric_limits<float>::quiet_NaN());
  const HeldView nan = hold(w, DType::F32);
  CHECK_THROWS_WITH(rtn_pack(nan.view(), {4, 32, true, false}, "m.q_proj"),
                    Catch::Contains("m.q_proj: element [2, 9] is nan"));
  at::Tensor big = at::ones({2, 32});
  big.index_put_({1, 0}, 1e9);
  const HeldView huge = hold(big, DType::F32);
  CHECK_THROWS_WITH(rtn_pack(huge.view(), {4, 32, true, false}, "m.k_proj"),
                    Catch::Contains("m.k_proj") && Catch::Contains("does not fit fp16"));
  // Not taken: MSE search, per-tensor grids, groups that do not divide the width, integer weights.
  const HeldView ok = hold(at::ones({2, 32}), DType::F32);
  CHECK_FALSE(rtn_pack_supports(ok.view(), {4, 32, true, true}));
  CHECK_FALSE(rtn_pack_supports(ok.view(), {4, kPerTensor, true, false}));
  CHECK_FALSE(rtn_pack_supports(ok.view(), {4, 24, true, false}));
  CHECK_THROWS_WITH(rtn_pack(ok.view(), {4, 24, true, false}, "m.v_proj"), Catch::Contains("m.v_proj"));
}

TEST_CASE("quantize with RTN stores exactly quantize_weight's codes, scales and zeros", "[quant][rtn][pipeline]") {
  const std::string dir = test::make_temp_dir("rtn-packed");
  Model model(test::repo_path("data/models/sotu-llama-8m"));
  QuantizeOptions o;
  o.recipe = load_recipe(test::repo_path("configs/w4a16-rtn.yaml"));
  o.recipe.weights = spec_of(weight_grid("w3g64asym", "test"));
  o.recipe.overrides.push_back({"down_proj", std::regex("down_proj"), 8, int64_t{32}, true});
  o.out_dir = dir + "/out";
  const QuantizeReport rep = quantize_model(model, o);
  REQUIRE(rep.modules.size() == 42);
  CheckpointQuantConfig qc;
  REQUIRE(read_checkpoint_quant_config(o.out_dir, qc));
  TensorArchive archive(o.out_dir);
  for (const auto& m : rep.modules) {
    INFO(m.module);
    const ModuleQuantInfo& info = qc.modules.at(m.module);
    const TensorView stored = model.archive().view(m.module + ".weight");
    REQUIRE(stored.dtype() == DType::F16);
    const at::Tensor w = at::from_blob(const_cast<uint8_t*>(stored.data), stored.shape(), at::kHalf).to(at::kFloat);
    const QuantizedWeight want = quantize_weight(w, info.spec, m.module);
    const QuantizedWeight got = load_quantized_weight(archive, m.module, info);
    CHECK(got.q.equal(want.q));
    CHECK(got.scales.equal(want.scales));
    CHECK(got.zeros.equal(want.zeros));
    CHECK(info.format == (m.module.find("down_proj") != std::string::npos ? "w8g32" : "w3g64asym"));
  }
}
