// ptq outlierize: function-preserving rewrites of an FP model, written as a new HF model directory.
#include <cstdio>

#include <fmt/format.h>

#include "apps/commands.h"
#include "transforms/outlierize.h"

namespace ptq::cli {

namespace {

struct OutlierizeArgs {
  std::string model, out;
  OutlierizeOptions opt;
  bool json = false;
};

void run_outlierize(const GlobalOptions& g, const OutlierizeArgs& a) {
  apply_global_options(g, a.json);
  const OutlierizeResult r = outlierize_model(a.model, a.out, a.opt);
  if (a.json) {
    print_json({{"model", a.model}, {"output", a.out}, {"channels", a.opt.channels}, {"scale", a.opt.scale},
                {"seed", a.opt.seed}, {"channels_per_layer", r.channels}});
    return;
  }
  for (size_t i = 0; i < r.channels.size(); ++i)
    std::printf("layer %zu: channels %s x %g\n", i, fmt::format("{}", fmt::join(r.channels[i], ",")).c_str(),
                a.opt.scale);
  std::printf("wrote %s (F32; config.json \"ptq_outlierize\" records the channels)\n", a.out.c_str());
}

}  // namespace

void add_transform_commands(CLI::App& app, GlobalOptions& g) {
  auto a = std::make_shared<OutlierizeArgs>();
  auto* cmd = app.add_subcommand(
      "outlierize", "Plant activation outlier channels without changing the model's function: K channels of each "
                    "norm's weight x S, the consumers' matching columns / S");
  cmd->add_option("MODEL", a->model, "Hugging Face model directory (pre-norm)")->required();
  cmd->add_option("-o,--output", a->out, "Output model directory")->required();
  cmd->add_option("--channels", a->opt.channels, "Outlier channels per layer (K)")->check(kNonNegative)
      ->capture_default_str();
  cmd->add_option("--scale", a->opt.scale, "Outlier factor (S)")->capture_default_str();
  cmd->add_option("--seed", a->opt.seed, "Seed of the per-layer channel choice")->capture_default_str();
  cmd->add_flag("--force", a->opt.force, "Replace an existing output directory");
  cmd->add_flag("--json", a->json, "Print the chosen channels as JSON");
  cmd->callback([&g, a] { run_outlierize(g, *a); });
}

}  // namespace ptq::cli
