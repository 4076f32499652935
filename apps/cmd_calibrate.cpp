// ptq calibrate
#include <cstdio>
#include <filesystem>

#include <fmt/format.h>

#include "apps/commands.h"
#include "calibration/calibrate.h"
#include "core/progress.h"
#include "core/table.h"

namespace ptq::cli {

namespace {

struct CalibrateArgs {
  std::string model, out;
  CalibrationDataSpec data;
  int64_t batch = 8;
  bool hessian = false, force = false, json = false;
};

void run_calibrate(const GlobalOptions& g, const CalibrateArgs& a) {
  apply_global_options(g, a.json);
  check_stats_output(a.out, a.model, a.force);  // before the work, not after it
  const double t0 = now_seconds();
  Model model(a.model);
  CalibrateOptions opts;
  opts.batch = a.batch;
  if (a.hessian) opts.stats.add(Stat::Hessian);
  const CalibrationData data = load_model_calibration_data(model, a.data, opts.batch);
  const CalibrationStats stats = calibrate(model, data, opts);
  save_calibration_stats(stats, a.out, a.force);
  const double seconds = now_seconds() - t0;
  const auto file_bytes = static_cast<int64_t>(std::filesystem::file_size(a.out));
  const std::vector<PointSummary> summary = summarize_stats(stats);
  const auto& m = stats.metadata;

  if (a.json) {
    nlohmann::json points = nlohmann::json::array();
    for (const auto& s : summary)
      points.push_back({{"point", s.point},
                        {"layer", s.layer},
                        {"in_features", s.in_features},
                        {"tokens", s.tokens},
                        {"absmax", s.absmax},
                        {"p99_9", s.p99_9},
                        {"median_channel_absmax", s.median_absmax},
                        {"outlier_ratio", s.outlier_ratio},
                        {"max_channel", s.max_channel}});
    print_json({{"stats", a.out},
                {"model", a.model},
                {"model_fingerprint", m.at("model_fingerprint")},
                {"data_source", data.source},
                {"data_sha256", data.data_sha256},
                {"nsamples", data.windows.size()},
                {"seqlen", data.seqlen},
                {"seed", data.seed},
                {"statistics", opts.stats.names()},
                {"file_bytes", file_bytes},
                {"seconds", seconds},
                {"peak_rss_mb", peak_rss_mb()},
                {"points", points}});
    return;
  }
  Table t({"point", "in", "absmax", "p99.9 |x|", "median ch absmax", "outlier ratio", "max ch"});
  for (const auto& s : summary)
    t.add_row({s.point, std::to_string(s.in_features), fmt::format("{:.4g}", s.absmax), fmt::format("{:.4g}", s.p99_9),
               fmt::format("{:.4g}", s.median_absmax), fmt::format("{:.1f}", s.outlier_ratio),
               std::to_string(s.max_channel)});
  std::fputs(t.render().c_str(), stdout);
  std::printf("wrote %s (%s): %zu points x %s; %zu windows x %lld tokens from %s; %.1f s\n", a.out.c_str(),
              human_bytes(static_cast<double>(file_bytes)).c_str(), summary.size(), opts.stats.names().c_str(),
              data.windows.size(), static_cast<long long>(data.seqlen), data.source.c_str(), seconds);
}

}  // namespace

void add_calibrate_command(CLI::App& app, GlobalOptions& g) {
  auto* cmd = app.add_subcommand("calibrate", "Activation statistics of every linear input, streamed layer by layer");
  auto a = std::make_shared<CalibrateArgs>();
  cmd->add_option("MODEL", a->model, "Hugging Face model directory")->required();
  cmd->add_option("-o,--output", a->out, "Stats file to write (safetensors)")->required();
  auto* data = cmd->add_option("--data", a->data.files, "Calibration text file (repeatable; default: bundled text)");
  cmd->add_option("--nsamples", a->data.nsamples, "Calibration windows")->default_val(128)->check(kPositive);
  cmd->add_option("--seqlen", a->data.seqlen, "Tokens per window (default: min(2048, context))")->check(kPositive);
  cmd->add_option("--seed", a->data.seed, "Seed of the window offsets / synthetic tokens")->default_val(0);
  cmd->add_flag("--synthetic", a->data.synthetic, "Random token ids instead of text (data-free)")->excludes(data);
  cmd->add_flag("--hessian", a->hessian, "Also store the GPTQ Hessian (in x in floats per point)");
  cmd->add_option("--batch", a->batch, "Windows per forward call")->default_val(8)->check(kPositive);
  cmd->add_flag("--force", a->force, "Overwrite an existing stats file");
  cmd->add_flag("--json", a->json, "Print one JSON object");
  cmd->callback([&g, a] { run_calibrate(g, *a); });
}

}  // namespace ptq::cli
