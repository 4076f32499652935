// End to end on the bundled stories260K: calibrate, the stats file round trip, an independent check of
// layer 0's statistics, refusal of stats for another model or from a newer format, determinism.
#include <catch2/catch.hpp>

#include <cmath>

#include <ATen/ATen.h>

#include "calibration/calibrate.h"
#include "core/file.h"
#include "io/safetensors.h"
#include "model/synthetic.h"
#include "tests/test_paths.h"

using namespace ptq;
using Catch::Matchers::Contains;

namespace {

const std::string kModel = test::repo_path("data/models/stories260K");
const std::string kCreated = "2000-01-01T00:00:00Z";  // pinned so that two runs give identical bytes

CalibrationDataSpec small_spec() {
  CalibrationDataSpec spec;
  spec.files = {test::repo_path("data/tinystories-valid.txt")};
  spec.nsamples = 4;
  spec.seqlen = 64;
  spec.seed = 0;
  return spec;
}

CalibrationStats run(Model& model, const CalibrationDataSpec& spec, StatSet stats = default_stats()) {
  CalibrateOptions opts;
  opts.stats = stats;
  opts.batch = 3;  // 4 windows: batches of 3 and 1, so batching is exercised
  opts.created = kCreated;
  return calibrate(model, load_model_calibration_data(model, spec), opts);
}

// Rewrites a stats file with one metadata value changed.
void rewrite_with(const std::string& from, const std::string& to, const std::string& key, const std::string& value) {
  SafetensorsFile f(from);
  SafetensorsWriter w;
  for (const auto& [k, v] : f.metadata()) w.set_metadata(k, v);
  w.set_metadata(key, value);
  for (const auto& t : f.tensors()) w.add(t.name, t.dtype, t.shape, f.view(t.name).data, t.nbytes());
  w.write(to);
}

}  // namespace

TEST_CASE("calibrate stories260K: file round trip and layer 0 against an independent computation", "[calibration]") {
  Model model(kModel);
  const ModelConfig& cfg = model.config();
  const CalibrationStats stats = run(model, small_spec());
  REQUIRE(stats.points().size() == static_cast<size_t>(4 * cfg.n_layers));

  const std::string dir = test::make_temp_dir("calib");
  const std::string path = dir + "/stats.safetensors";
  save_calibration_stats(stats, path, false);
  const CalibrationStats loaded = load_calibration_stats(path, model);
  CHECK(loaded.source == path);
  REQUIRE(loaded.tensors().size() == stats.tensors().size());
  for (const auto& [name, t] : stats.tensors()) {
    INFO(name);
    REQUIRE(loaded.tensors().count(name));
    CHECK(at::equal(loaded.tensors().at(name), t));
  }
  CHECK(loaded.metadata.at("format") == "ptq.calibration");
  CHECK(loaded.metadata.at("format_version") == "1");
  CHECK(loaded.metadata.at("nsamples") == "4");
  CHECK(loaded.metadata.at("seqlen") == "64");
  CHECK(loaded.metadata.at("tokens") == "256");
  CHECK(loaded.metadata.at("created") == kCreated);
  CHECK(loaded.metadata.at("data_sha256") == sha256_file(small_spec().files[0]));
  CHECK(loaded.metadata.at("stats") == default_stats().names());
  CHECK(loaded.point(2, LinearId::V).name == "model.layers.2.self_attn.q_proj");
  CHECK(loaded.get(4, LinearId::Down, Stat::Tokens).item<int64_t>() == 256);
  REQUIRE_THROWS_WITH(loaded.get(0, LinearId::Q, Stat::Hessian), Contains("hessian") && Contains("--hessian"));

  // Layer 0's q/k/v input from the checkpoint alone: embedding rows, then RMSNorm with input_layernorm.
  const CalibrationData data = load_model_calibration_data(model, small_spec());
  SafetensorsFile ckpt(kModel + "/model.safetensors");
  const at::Tensor embed = to_float_tensor(ckpt.view("model.embed_tokens.weight"));
  const at::Tensor gamma = to_float_tensor(ckpt.view("model.layers.0.input_layernorm.weight"));
  at::Tensor ids = at::empty({4, 64}, at::kLong);
  for (int64_t s = 0; s < 4; ++s)
    for (int64_t t = 0; t < 64; ++t) ids[s][t] = data.windows[s][t];
  const at::Tensor e = embed.index_select(0, ids.flatten());
  const at::Tensor x = e / at::sqrt(e.square().mean(-1, true) + cfg.norm_eps) * gamma;
  // fp32 on both sides, differing only in operation order inside the norm: a few ulps (1e-6 ~ 8 ulps).
  CHECK(at::allclose(loaded.get(0, LinearId::Q, Stat::AbsMax), std::get<0>(x.abs().max(0)), 1e-6, 0));
  // Sum of squares in double over 256 tokens of those same values: the same few-ulp input differences.
  const at::Tensor sumsq = x.to(at::kDouble).square().sum(0);
  CHECK(at::allclose(loaded.get(0, LinearId::K, Stat::SumSq).to(at::kDouble), sumsq, 1e-5, 0));

  const auto summary = summarize_stats(loaded);
  REQUIRE(summary.size() == loaded.points().size());
  const at::Tensor a = loaded.get(0, LinearId::Q, Stat::AbsMax);
  CHECK(summary[0].absmax == a.max().item<float>());
  CHECK(summary[0].outlier_ratio == Approx(a.max().item<double>() / a.median().item<double>()));
  CHECK(summary[0].tokens == 256);
}

TEST_CASE("calibration stats: refused for another model, a newer format, or another file kind", "[calibration]") {
  Model model(kModel);
  const std::string dir = test::make_temp_dir("calib-refuse");
  const std::string path = dir + "/stats.safetensors";
  save_calibration_stats(run(model, small_spec()), path, false);

  SECTION("another model: a fingerprint mismatch naming both") {
    const std::string other = dir + "/synthetic";
    write_synthetic_model(SyntheticSpec{}, other);
    Model synth(other);
    REQUIRE_THROWS_WITH(load_calibration_stats(path, synth),
                        Contains("made for another model") && Contains(model_fingerprint(kModel)) &&
                            Contains(model_fingerprint(other)) && Contains(kModel) && Contains(other));
  }
  SECTION("a newer format version") {
    const std::string newer = dir + "/newer.safetensors";
    rewrite_with(path, newer, "format_version", "2");
    REQUIRE_THROWS_WITH(load_calibration_stats(newer, model), Contains("version 2, newer than the version 1"));
  }
  SECTION("not a stats file") {
    REQUIRE_THROWS_WITH(load_calibration_stats(kModel + "/model.safetensors", model),
                        Contains("not a ptq calibration stats file"));
  }
  SECTION("an existing file is not overwritten unless asked") {
    const CalibrationStats again = load_calibration_stats(path, model);
    REQUIRE_THROWS_WITH(save_calibration_stats(again, path, false), Contains("already exists") && Contains("--force"));
    save_calibration_stats(again, path, true);
  }
}

TEST_CASE("calibrate: the same seed gives a byte-identical file, and the Hessian agrees with sum x^2",
          "[calibration]") {
  Model model(kModel);
  const std::string dir = test::make_temp_dir("calib-det");
  const StatSet with_hessian = default_stats().add(Stat::Hessian);
  save_calibration_stats(run(model, small_spec(), with_hessian), dir + "/a.safetensors", false);
  save_calibration_stats(run(model, small_spec(), with_hessian), dir + "/b.safetensors", false);
  // "created" is pinned by CalibrateOptions::created (the CLI honours SOURCE_DATE_EPOCH); everything else,
  // including the model fingerprint, is a function of the model, the data and the seed.
  CHECK(read_text_file(dir + "/a.safetensors") == read_text_file(dir + "/b.safetensors"));

  CalibrationDataSpec other_seed = small_spec();
  other_seed.seed = 1;
  save_calibration_stats(run(model, other_seed), dir + "/c.safetensors", false);
  CHECK(SafetensorsFile(dir + "/c.safetensors").metadata().at("seed") == "1");
  CHECK(read_text_file(dir + "/a.safetensors") != read_text_file(dir + "/c.safetensors"));

  const CalibrationStats s = load_calibration_stats(dir + "/a.safetensors", model);
  // diag H = (2/n) sum x^2 with n = 4 sequences; H accumulates in fp32 (1e-5 relative covers its roundings).
  for (int64_t layer : {0, 4})
    for (LinearId id : {LinearId::Q, LinearId::O, LinearId::Gate, LinearId::Down}) {
      const at::Tensor diag = s.get(layer, id, Stat::Hessian).diagonal().to(at::kDouble);
      const at::Tensor want = s.get(layer, id, Stat::SumSq).to(at::kDouble) * (2.0 / 4);
      CHECK(at::allclose(diag, want, 1e-5, 1e-9));
    }
}

TEST_CASE("calibrate: synthetic tokens on a model without a tokenizer", "[calibration]") {
  const std::string dir = test::make_temp_dir("calib-synth");
  write_synthetic_model(SyntheticSpec{}, dir);
  Model model(dir);
  CalibrationDataSpec spec;
  spec.synthetic = true;
  spec.nsamples = 2;
  spec.seqlen = 16;
  const CalibrationStats s = run(model, spec);
  CHECK(s.metadata.at("data_source") == "synthetic");
  CHECK(s.get(1, LinearId::Up, Stat::Tokens).item<int64_t>() == 32);
  spec.synthetic = false;
  REQUIRE_THROWS(load_model_calibration_data(model, spec));  // text needs the tokenizer the model lacks
}
