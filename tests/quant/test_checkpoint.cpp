// The ptq checkpoint: every grid packs and reads back exactly (odd widths included), act-order keeps
// its g_idx, and the runner's weights are exactly the dequantized stored values.
#include <catch2/catch.hpp>

#include <ATen/ATen.h>

#include "algorithms/gptq.h"
#include "core/file.h"
#include "model/synthetic.h"
#include "quant/checkpoint.h"
#include "quant/formats.h"
#include "quant/hessian.h"
#include "runtime/open_model.h"
#include "tests/test_paths.h"

using namespace ptq;

namespace {

// A one-layer synthetic Llama: hidden 40 (q/k/v/o/gate/up read 40 columns: not a multiple of 32, so packed
// rows of per-channel formats carry padding), ffn 384 (down_proj reads 384 = 3 x 128: every group size).
std::string odd_model(const std::string& tag) {
  SyntheticSpec s;
  s.hidden = 40;
  s.n_heads = 4;
  s.n_kv_heads = 2;
  s.ffn = 384;
  s.n_layers = 1;
  s.vocab = 64;
  const std::string dir = test::make_temp_dir(tag);
  write_synthetic_model(s, dir + "/src");
  return dir;
}

}  // namespace

TEST_CASE("checkpoint: every code width, per channel and grouped, sym and asym, round-trips exactly on odd widths",
          "[checkpoint]") {
  const std::string dir = odd_model("ckpt-rt");
  Model src(dir + "/src");
  // Group widths dividing down_proj's 384 columns, unusual ones (3, 48, 96) included: any divisor is a grid.
  const int64_t group_sizes[] = {32, 128, 3, 48, 96, 384, 64};
  int tested = 0;
  for (int bits = kGridMinBits; bits <= kGridMaxBits; ++bits)
    for (bool sym : {true, false})
      for (bool grouped : {false, true}) {
        const WeightGrid grid{bits, grouped ? group_sizes[(bits + sym) % 7] : kGridPerChannel, sym};
        const WeightQuantSpec spec = spec_of(grid);
        const LinearId id = grouped ? LinearId::Down : LinearId::Q;
        const std::string module = grouped ? "model.layers.0.mlp.down_proj" : "model.layers.0.self_attn.q_proj";
        const LinearId other = grouped ? LinearId::Up : LinearId::K;
        const at::Tensor w = src.load_layer(0)[id].weight;
        const QuantizedWeight qw = quantize_weight(w, spec, module);
        const std::string out = dir + "/" + grid.name();
        CheckpointWriter writer(src, out, {{module, ModuleQuantInfo{grid.name(), spec, "rtn", false}}}, false);
        writer.write_module(module, qw);
        writer.copy_unquantized();
        writer.commit({});
        CheckpointQuantConfig qc;
        REQUIRE(read_checkpoint_quant_config(out, qc));
        CHECK(qc.modules.at(module).format == grid.name());
        TensorArchive archive(out);
        const QuantizedWeight back = load_quantized_weight(archive, module, qc.modules.at(module));
        INFO("grid " << grid.name());
        CHECK(back.q.equal(qw.q));
        CHECK(back.scales.equal(qw.scales));  // scales are fp16 values already (quantizer rounds them)
        CHECK(back.zeros.equal(qw.zeros));
        CHECK(back.g_idx.equal(qw.g_idx));
        // The runner sees exactly dequantize(stored), and unquantized tensors are copied bit for bit.
        auto loaded = open_model(out);
        CHECK(loaded->load_layer(0)[id].weight.equal(dequantize(qw)));
        CHECK(loaded->load_layer(0)[other].weight.equal(src.load_layer(0)[other].weight));
        ++tested;
      }
  CHECK(tested == 28);
}

TEST_CASE("checkpoint: act-order GPTQ dequantizes to the matrix the algorithm produced", "[checkpoint]") {
  const std::string dir = odd_model("ckpt-act");
  Model src(dir + "/src");
  const std::string module = "model.layers.0.self_attn.q_proj";  // [40, 40]
  const at::Tensor w = src.load_layer(0)[LinearId::Q].weight;
  at::manual_seed(3);
  HessianAccumulator h(40, module);
  h.add(at::randn({4, 16, 40}) * at::exp(at::randn({40})));  // channel scales spread: a real permutation
  GptqOptions opt;
  opt.act_order = true;
  const WeightQuantSpec spec{4, kPerChannel, true, false};
  const QuantizedWeight qw = gptq_quantize({module, w, h.hessian(), spec, opt}).weight;
  REQUIRE(qw.g_idx.equal(at::zeros({40}, at::kInt)));  // per channel: one group
  CheckpointWriter writer(src, dir + "/out", {{module, ModuleQuantInfo{"w4", spec, "gptq", true}}}, false);
  writer.write_module(module, qw);
  writer.copy_unquantized();
  writer.commit({});
  auto loaded = open_model(dir + "/out");
  CHECK(loaded->load_layer(0)[LinearId::Q].weight.equal(dequantize(qw)));

  // Grouped act-order: g_idx is a real permutation of groups and must survive.
  const WeightQuantSpec g8{4, 8, false, false};
  const QuantizedWeight qg = gptq_quantize({module, w, h.hessian(), g8, opt}).weight;
  REQUIRE_FALSE(qg.g_idx.equal(at::arange(40, at::kInt).div(8, "floor").to(at::kInt)));
  CheckpointWriter wg(src, dir + "/outg", {{module, ModuleQuantInfo{"w4g8asym", g8, "gptq", true}}}, false);
  wg.write_module(module, qg);
  wg.copy_unquantized();
  wg.commit({});
  CheckpointQuantConfig qc;
  REQUIRE(read_checkpoint_quant_config(dir + "/outg", qc));
  TensorArchive archive(dir + "/outg");
  CHECK(load_quantized_weight(archive, module, qc.modules.at(module)).g_idx.equal(qg.g_idx));
  CHECK(open_model(dir + "/outg")->load_layer(0)[LinearId::Q].weight.equal(dequantize(qg)));
}

TEST_CASE("checkpoint: refuses to overwrite, leaves nothing behind on failure, rejects newer versions", "[checkpoint]") {
  const std::string dir = odd_model("ckpt-safe");
  Model src(dir + "/src");
  const std::string module = "model.layers.0.self_attn.o_proj";
  const WeightQuantSpec spec{8, kPerChannel, true, false};
  {
    CheckpointWriter writer(src, dir + "/out", {{module, ModuleQuantInfo{"w8", spec, "rtn", false}}}, false);
    writer.write_module(module, quantize_weight(src.load_layer(0)[LinearId::O].weight, spec, module));
    // No copy_unquantized/commit: as if an error interrupted the run.
  }
  CHECK_FALSE(file_exists(dir + "/out/config.json"));
  CHECK_FALSE(is_directory(dir + "/out"));
  write_text_file_atomic(dir + "/taken", "x");
  CHECK_THROWS_WITH(CheckpointWriter(src, dir + "/taken", {}, false), Catch::Contains("already exists") &&
                                                                        Catch::Contains("--force"));
  CHECK_THROWS_WITH(CheckpointWriter(src, dir + "/src", {}, true), Catch::Contains("is the input"));

  // A checkpoint declaring a newer format version is refused with a sentence that says so.
  CheckpointWriter writer(src, dir + "/v", {{module, ModuleQuantInfo{"w8", spec, "rtn", false}}}, false);
  writer.write_module(module, quantize_weight(src.load_layer(0)[LinearId::O].weight, spec, module));
  writer.copy_unquantized();
  writer.commit({});
  std::string cfg = read_text_file(dir + "/v/config.json");
  const std::string from = "\"format_version\": 1";
  REQUIRE(cfg.find(from) != std::string::npos);
  cfg.replace(cfg.find(from), from.size(), "\"format_version\": 2");
  write_text_file_atomic(dir + "/v/config.json", cfg);
  CHECK_THROWS_WITH(open_model(dir + "/v"), Catch::Contains("format version 2 is newer"));
}
