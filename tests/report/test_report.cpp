// `ptq report`: the page from hand-built figures (every section, escaping, self-contained, one heatmap cell per layer
// and channel), the figures from real checkpoints of the bundled stories260K (the checkpoint's own metrics; the
// after-migration ranges against the quantized model's measured inputs).
#include <catch2/catch.hpp>

#include <cmath>
#include <tuple>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "calibration/calibrate.h"
#include "calibration/stats.h"
#include "pipeline/quantize.h"
#include "pipeline/recipe.h"
#include "quant/checkpoint.h"
#include "report/report.h"
#include "report/svg.h"
#include "runtime/open_model.h"
#include "tests/test_paths.h"

using namespace ptq;
using Catch::Matchers::Contains;

namespace {

const std::string kModel = test::repo_path("data/models/stories260K");

size_t count(const std::string& hay, const std::string& needle) {
  size_t n = 0;
  for (size_t at = hay.find(needle); at != std::string::npos; at = hay.find(needle, at + needle.size())) ++n;
  return n;
}

ChannelHeatmap ramp(int64_t layers, int64_t channels) {
  std::vector<std::vector<double>> rows(layers);
  for (int64_t i = 0; i < layers; ++i)
    for (int64_t c = 0; c < channels; ++c) rows[i].push_back(c == 7 ? 300.0 : 0.5 + 0.01 * (c + i));
  return make_channel_heatmap(rows);
}

ModuleFigure module(const std::string& path, int64_t layer, const std::string& kind, int bits) {
  ModuleFigure m;
  m.module = path;
  m.layer = layer;
  m.kind = kind;
  m.bits = bits;
  m.format = bits ? fmt::format("w{}g32", bits) : "";
  m.method = bits ? "gptq" : "";
  return m;
}

ReportData hand_built() {
  ReportData d;
  d.model = "out/<b>model</b>";
  d.provenance = {{"recipe", "w4a16 & friends"}, {"created", "2026-01-01T00:00:00Z"}};
  d.layers = 2;
  d.module_kinds = {"q", "down"};
  ModuleFigure q = module("model.layers.0.<script>alert(1)</script>", 0, "q", 4);
  q.nmse = 0.01, q.output_error = 1.5, q.rtn_output_error = 2.5;
  ModuleFigure fp = module("model.layers.0.mlp.down_proj", 0, "down", 0);
  fp.fp_reason = "in_features 172 is not a multiple of group size 32";
  ModuleFigure q1 = module("model.layers.1.self_attn.q_proj", 1, "q", 3);
  q1.nmse = 0.04, q1.output_error = 3, q1.rtn_output_error = 2;
  d.modules = {q, fp, q1};
  d.stats = "stats.safetensors";
  ActivationFigure a;
  a.point = "attn";
  a.consumers = "q_proj, k_proj, v_proj";
  a.before = ramp(3, 70);
  a.note = "Nothing was folded at this input.";
  d.activations = {a};
  d.quality.data = "data/<x>.txt";
  d.quality.tasks = {"sotu"};
  for (const auto& [label, ppl, acc] : {std::tuple{"FP", 10.0, 0.5}, std::tuple{"quantized", 10.5, 0.45}}) {
    QualityRow r;
    r.label = r.path = label;
    r.ppl = ppl;
    r.tasks.push_back({acc, 0.1, NAN});
    d.quality.rows.push_back(r);
  }
  return d;
}

Recipe small_recipe(const std::string& config) {
  Recipe r = load_recipe(test::repo_path("configs/" + config));
  r.weights.group_size = 32;
  r.calibration.nsamples = 4;
  r.calibration.seqlen = 64;
  r.calibration.files = {test::repo_path("data/tinystories-valid.txt")};
  return r;
}

std::string quantize(const Recipe& r, const std::string& out) {
  Model model(kModel);
  QuantizeOptions o;
  o.recipe = r;
  o.out_dir = out;
  quantize_model(model, o);
  return out;
}

CalibrationDataSpec calib_spec() {
  CalibrationDataSpec spec;
  spec.files = {test::repo_path("data/tinystories-valid.txt")};
  spec.nsamples = 4;
  spec.seqlen = 64;
  return spec;
}

CalibrationStats calibrate_model(Model& m) {
  return calibrate(m, load_model_calibration_data(m, calib_spec()), CalibrateOptions{});
}

}  // namespace

TEST_CASE("report page: every section, escaped text, nothing outside the file, one cell per layer and channel",
          "[report]") {
  const ReportData d = hand_built();
  const std::string html = render_report_html(d);
  for (const char* id : kReportSections) CHECK_THAT(html, Contains(fmt::format("<section id=\"{}\">", id)));
  // The module name's tag arrives as text; the page's own two scripts are the only ones.
  CHECK_THAT(html, Contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
  CHECK(count(html, "<script") == 2);
  CHECK(html.find("<b>model</b>") == std::string::npos);
  CHECK_THAT(html, Contains("w4a16 &amp; friends"));
  // Self-contained: no URL of any scheme (inline SVG needs no xmlns).
  CHECK(html.find("http://") == std::string::npos);
  CHECK(html.find("https://") == std::string::npos);
  CHECK(html.find("url(") == std::string::npos);
  CHECK(count(html, "<rect class=\"c\"") == 3 * 70);
  CHECK_THAT(html, Contains("data-rows=\"3\" data-cols=\"70\""));
  // The bits map marks the FP module; the output-error summary counts where GPTQ beat RTN.
  CHECK_THAT(html, Contains("class=\"fp\""));
  CHECK_THAT(html, Contains("below RTN on 1 of 2 modules"));
  CHECK(render_report_html(d) == html);  // pure

  SECTION("the same figures as JSON, NaN as null") {
    const nlohmann::json j = d.to_json();
    CHECK(j["modules"].size() == 3);
    CHECK(j["modules"][1]["fp_reason"] == "in_features 172 is not a multiple of group size 32");
    CHECK(j["activation_ranges"]["points"][0]["before"]["absmax"].size() == 3);
    CHECK(j["activation_ranges"]["points"][0]["after"].is_null());
    CHECK(j["quality"]["rows"][0]["tasks"][0]["acc_norm"].is_null());
  }
  SECTION("an empty report still has every section, each saying what adds it") {
    ReportData e;
    e.activations_note = "No calibration statistics given.";
    e.quality.note = "Not measured: --data FILE adds perplexity.";
    const std::string h = render_report_html(e);
    for (const char* id : kReportSections) CHECK_THAT(h, Contains(fmt::format("<section id=\"{}\">", id)));
    CHECK_THAT(h, Contains("No calibration statistics given."));
    CHECK_THAT(h, Contains("--data FILE"));
  }
}

TEST_CASE("report heatmap bins: wide inputs keep their outlier, ragged rows are padded", "[report]") {
  std::vector<std::vector<double>> rows(2, std::vector<double>(1100, 1.0));
  rows[1][1099] = 99;
  rows[0].resize(1000);  // a layer without the split channels of the other
  const ChannelHeatmap h = make_channel_heatmap(rows);
  CHECK(h.channels == 1100);
  CHECK(h.bin == 3);  // ceil(1100 / 512)
  REQUIRE(h.absmax[0].size() == 367);
  CHECK(h.absmax[1][366] == 99);
  CHECK(std::isnan(h.absmax[0][366]));
  CHECK(h.absmax[0][333] == 1.0);  // channels 999..1001: one present
  report::HeatmapSpec spec;
  spec.values = h.absmax;
  CHECK(count(report::svg_heatmap(spec), "class=\"c\"") == 2 * 367);
}

TEST_CASE("build_report_data: a GPTQ checkpoint of stories260K, its metrics and bits, FP modules with reasons",
          "[report]") {
  const std::string dir = test::make_temp_dir("report-gptq");
  const std::string out = quantize(small_recipe("w4a16-gptq.yaml"), dir + "/q");
  CheckpointQuantConfig qc;
  REQUIRE(read_checkpoint_quant_config(out, qc));

  ReportOptions o;
  o.quantized = out;
  const ReportData d = build_report_data(o);
  CHECK(d.layers == 5);
  const std::vector<std::string> kinds = {"q", "k", "v", "o", "gate", "up", "down"};
  CHECK(d.module_kinds == kinds);
  REQUIRE(d.modules.size() == 35);
  int quantized = 0;
  for (const auto& m : d.modules) {
    INFO(m.module);
    if (m.kind == "down") {  // 172 inputs: no group of 32 divides them
      CHECK(m.bits == 0);
      CHECK(m.fp_reason == qc.unquantized.at(m.module));
      continue;
    }
    ++quantized;
    const nlohmann::json& metrics = qc.modules.at(m.module).metrics;
    CHECK(m.bits == 4);
    CHECK(m.format == "w4g32");
    CHECK(m.nmse == metrics["nmse"].get<double>());
    CHECK(m.snr_db == metrics["snr_db"].get<double>());
    CHECK(m.output_error == metrics["output_error"].get<double>());
    CHECK(m.rtn_output_error == metrics["rtn_output_error"].get<double>());
  }
  CHECK(quantized == static_cast<int>(qc.modules.size()));
  auto row = [&](const std::string& label) {
    for (const auto& [k, v] : d.provenance)
      if (k == label) return v;
    return std::string("(absent)");
  };
  CHECK_THAT(row("recipe"), Contains("w4a16-gptq"));
  CHECK(row("weight method") == "gptq");
  CHECK(row("created") == qc.raw["provenance"]["date"].get<std::string>());
  // No stats, no data: the sections say how to add them.
  CHECK(d.activations.empty());
  CHECK_THAT(d.activations_note, Contains("ptq calibrate"));
  CHECK(d.quality.rows.empty());
  CHECK_THAT(d.quality.note, Contains("--data"));

  SECTION("with stats: one figure per input point, layers x channels, nothing folded") {
    Model fp(kModel);
    const std::string stats = dir + "/stats.safetensors";
    save_calibration_stats(calibrate_model(fp), stats, false);
    o.stats = stats;  // the FP model comes from the checkpoint's provenance
    const ReportData s = build_report_data(o);
    REQUIRE(s.activations.size() == 4);
    const int64_t widths[] = {64, 64, 64, 172};
    for (int p = 0; p < 4; ++p) {
      CHECK(s.activations[p].before.absmax.size() == 5);
      CHECK(s.activations[p].before.channels == widths[p]);
      CHECK_FALSE(s.activations[p].after);
    }
    const CalibrationStats loaded = load_calibration_stats(stats, fp);
    CHECK(s.activations[3].before.absmax[2][5] == loaded.get(2, LinearId::Down, Stat::AbsMax)[5].item<float>());
    CHECK(count(render_report_html(s), "<rect class=\"c\"") == 5 * (64 * 3 + 172));
  }
}

TEST_CASE("build_report_data: SmoothQuant's after-migration ranges are the quantized model's inputs", "[report]") {
  const std::string dir = test::make_temp_dir("report-sq");
  Recipe r = small_recipe("w8a8-smoothquant.yaml");
  r.weights.group_size = -1;
  const std::string out = quantize(r, dir + "/q");
  Model fp(kModel);
  const std::string stats = dir + "/stats.safetensors";
  save_calibration_stats(calibrate_model(fp), stats, false);

  ReportOptions o;
  o.quantized = out;
  o.fp = kModel;
  o.stats = stats;
  const ReportData d = build_report_data(o);
  REQUIRE(d.activations.size() == 4);
  const ActivationFigure& attn = d.activations[0];
  REQUIRE(attn.after);
  CHECK(d.activations[2].after);       // mlp: folded into post_attention_layernorm
  CHECK_FALSE(d.activations[1].after);  // o: nothing folded there
  CHECK_THAT(attn.note, Contains("smoothquant"));

  // Layer 0's attention input is norm(embedding) in both models, so the recovered range must be what the quantized
  // model's q_proj actually receives on the same windows.
  auto q = open_model(out);
  const CalibrationStats measured = calibrate_model(*q);
  const at::Tensor want = measured.get(0, LinearId::Q, Stat::AbsMax);
  REQUIRE(attn.after->absmax[0].size() == static_cast<size_t>(want.numel()));
  int changed = 0;
  for (int64_t c = 0; c < want.numel(); ++c) {
    INFO("channel " << c);
    CHECK(attn.after->absmax[0][c] == Approx(want[c].item<float>()).epsilon(1e-5));
    changed += std::abs(attn.after->absmax[0][c] - attn.before.absmax[0][c]) > 1e-3 * attn.before.absmax[0][c];
  }
  CHECK(changed > 32);  // the migration moved most channels
}
