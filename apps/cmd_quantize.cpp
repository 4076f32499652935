// ptq quantize
#include <cstdio>
#include <map>
#include <vector>

#include <fmt/format.h>

#include "algorithms/gptq.h"
#include "apps/commands.h"
#include "calibration/calibrate.h"
#include "core/error.h"
#include "core/model_dir.h"
#include "core/progress.h"
#include "core/table.h"
#include "eval/kl_sensitivity.h"
#include "export/targets.h"
#include "pipeline/quantize.h"
#include "pipeline/recipe.h"
#include "quant/formats.h"
#include "runtime/open_model.h"

namespace ptq::cli {

namespace {

struct QuantizeArgs {
  std::string model, recipe, out, stats;
  std::vector<std::string> data, ignore;
  std::optional<std::string> method;
  std::optional<std::string> grid;
  std::optional<int> bits;
  std::optional<int64_t> group_size, nsamples, seqlen;
  std::optional<uint64_t> seed;
  std::optional<double> damp;
  std::optional<int> act_bits;
  std::optional<std::string> act_granularity, act_method;
  bool hadamard = false;
  bool sym = false, asym = false, act_order = false, static_groups = false, synthetic = false;
  bool force = false, resume = false, json = false;
  int64_t batch = 8;
  std::string report;  // --report: the HTML report of the output
  std::optional<double> target_bpw;
  std::optional<std::string> target_size;
  std::vector<std::string> candidates;
  std::string sensitivity_metric, allocation_unit, save_sensitivity, sensitivity;
  std::string device = "cpu";
};

std::string fmt_opt(const std::optional<double>& v, const char* f = "{:.4g}") {
  return v ? fmt::format(fmt::runtime(f), *v) : "-";
}

void run_quantize(const GlobalOptions& g, const QuantizeArgs& a) {
  apply_global_options(g, a.json);
  QuantizeOptions opts;
  opts.started = now_seconds();  // the kl sensitivities below count in the reported time
  opts.recipe = load_recipe(a.recipe);
  Recipe& r = opts.recipe;
  if (a.method) {
    weight_algorithm(*a.method);
    r.method = *a.method;
  }
  if (a.grid) r.weights = spec_of(weight_grid(*a.grid, "--grid"), r.weights.mse);
  if (a.bits) r.weights.bits = *a.bits;
  if (a.group_size) r.weights.group_size = *a.group_size;
  if (a.sym) r.weights.sym = true;
  if (a.asym) r.weights.sym = false;
  if (a.act_order) r.gptq.act_order = true;
  if (a.static_groups) r.gptq.static_groups = true;
  if (a.damp) r.gptq.percdamp = *a.damp;
  if (a.device == "cuda") {
    if (!weight_algorithm(r.method).needs_hessian)
      fail_input("--device cuda runs GPTQ's solve on the GPU; method {} has none (give --method gptq)", r.method);
    if (r.gguf)
      fail_input("--device cuda: GPTQ on a GGUF block grid runs on the CPU only; drop --device cuda or use a linear "
                 "grid (--grid)");
    gptq_ops(GptqDevice::Cuda);  // no device: says why before any work
    r.gptq.device = GptqDevice::Cuda;
  }
  if (!a.data.empty()) r.calibration.files = a.data;
  if (a.synthetic) r.calibration.synthetic = true;
  if (a.nsamples) r.calibration.nsamples = *a.nsamples;
  if (a.seqlen) r.calibration.seqlen = *a.seqlen;
  if (a.seed) r.calibration.seed = *a.seed;
  for (const auto& p : a.ignore) r.ignore.push_back(p);
  if (a.act_bits || a.act_granularity) r.act_enabled = true;
  if (a.act_bits) r.activations.bits = *a.act_bits;
  if (a.act_granularity) {
    const auto gran = act_granularity_from_name(*a.act_granularity);
    if (!gran) fail_input("--act-granularity {} is not per_tensor, per_channel or per_token", *a.act_granularity);
    r.activations.granularity = *gran;
  }
  if (a.act_method) {
    migration_method(*a.act_method);  // throws listing the methods
    r.migration.method = *a.act_method;
    if (r.migration.method != "none" && !r.act_enabled)
      fail_input("--act-method {} needs activation quantization: give --act-bits or use a W*A* recipe", *a.act_method);
  }
  if (a.hadamard) r.rotation.enabled = true;
  check_weight_grid(grid_of(r.weights), "--bits/--group-size");
  opts.out_dir = a.out;
  opts.force = a.force;
  opts.resume = a.resume;
  opts.batch = a.batch;
  opts.stats_path = a.stats;
  if (a.target_bpw) opts.allocation.target_bpw = *a.target_bpw;
  if (a.target_size) opts.allocation.target_bytes = static_cast<double>(parse_byte_size(*a.target_size, "--target-size"));
  add_candidates(a.candidates, r.gguf.has_value(), opts.allocation, "--candidates");
  if (!a.candidates.empty() && !a.target_bpw && !a.target_size && !(r.target_bpw > 0))
    fail_input("--candidates lists the grids --target-bpw / --target-size choose from; give one of them");
  opts.allocation.metric = a.sensitivity_metric;
  // The command's default is rtn-kl (its KL probes run the model here; the library's, which cannot run it, is rtn), or
  // the metric of the file --sensitivity reuses.
  if (a.sensitivity_metric.empty() && r.allocation_sensitivity.empty())
    opts.allocation.metric = a.sensitivity.empty() ? "rtn-kl" : load_sensitivity_table(a.sensitivity).metric;
  opts.allocation.unit = a.allocation_unit;
  opts.allocation.save_sensitivity = a.save_sensitivity;
  opts.allocation.load_sensitivity = a.sensitivity;
  const bool allocating = a.target_bpw || a.target_size || r.target_bpw > 0;
  for (const auto& [flag, set] : {std::pair{"--sensitivity-metric", !a.sensitivity_metric.empty()},
                                  std::pair{"--allocation-unit", !a.allocation_unit.empty()},
                                  std::pair{"--save-sensitivity", !a.save_sensitivity.empty()},
                                  std::pair{"--sensitivity", !a.sensitivity.empty()}})
    if (set && !allocating) fail_input("{} belongs to mixed precision; give --target-bpw or --target-size", flag);

  if (!a.report.empty()) check_output_path(a.report, a.model, a.force);  // before the work, not after
  if (!a.save_sensitivity.empty()) check_output_path(a.save_sensitivity, {a.model, a.sensitivity, a.stats}, a.force);
  auto model = open_model_to_quantize(a.model);
  if (allocating && a.sensitivity.empty() && !r.activation_path()) {
    // The kl and rtn-kl metrics run the model (lib/eval, above the quantize pipeline): measured here, handed in.
    const AllocationOptions merged = merged_allocation_options(opts.allocation, r);
    if (merged.metric == "kl" || merged.metric == "rtn-kl") {
      SensitivityTable t = plan_sensitivity_table(*model, r, merged);
      CalibrationDataSpec spec = r.calibration;
      spec.nsamples = std::min<int64_t>(spec.nsamples, kKlSensitivityWindows);
      const CalibrationData calib = load_model_calibration_data(*model, spec, a.batch);
      measure_kl_sensitivities(*model, r, calib.windows, t, a.batch);
      opts.allocation.given = std::move(t);
    }
  }
  const QuantizeReport rep = quantize_model(*model, opts);
  if (!a.report.empty()) write_quantize_report(a.report, a.out, a.model, a.stats);

  if (a.json) {
    nlohmann::json mods = nlohmann::json::array();
    for (const auto& m : rep.modules) {
      nlohmann::json j = {{"module", m.module},       {"format", m.format}, {"method", m.method},
                          {"params", m.params},       {"nmse", m.weight_error.nmse},
                          {"snr_db", m.weight_error.snr_db}, {"max_abs_error", m.weight_error.max_abs_error},
                          {"sign_flips", m.weight_error.sign_flips}, {"zero_fraction", m.weight_error.zero_fraction}};
      if (m.loss) j["loss"] = *m.loss;
      if (m.output_error) j["output_error"] = *m.output_error;
      if (m.rtn_output_error) j["rtn_output_error"] = *m.rtn_output_error;
      if (!m.warning.empty()) j["warning"] = m.warning;
      mods.push_back(j);
    }
    print_json({{"model", a.model},
                {"output", a.out},
                {"recipe", r.to_json()},
                {"modules", mods},
                {"unquantized", rep.unquantized},
                {"quantized_params", rep.quantized_params},
                {"avg_bits_per_weight", rep.avg_bits_per_weight},
                {"output_bytes", rep.output_bytes},
                {"calibration", rep.calibration},
                {"allocation", rep.allocation ? rep.allocation->to_json() : nlohmann::json(nullptr)},
                {"seconds", rep.seconds},
                {"peak_rss_mb", rep.peak_rss_mb}});
    return;
  }
  // One note per reason (a recipe's group size can leave dozens of modules floating point for the same one).
  std::map<std::string, std::vector<std::string>> by_reason;
  for (const auto& [path, reason] : rep.unquantized) by_reason[reason].push_back(path);
  for (const auto& [reason, paths] : by_reason)
    std::fprintf(stderr, "note: %zu module(s) stay floating point (%s): %s\n", paths.size(), reason.c_str(),
                 join_module_list(paths, 3).c_str());
  for (const auto& m : rep.modules)
    if (!m.warning.empty()) std::fprintf(stderr, "warning: %s: %s\n", m.module.c_str(), m.warning.c_str());
  Table t({"module", "format", "NMSE", "SNR dB", "max|err|", "flips", "loss", "out err", "RTN out err"});
  for (const auto& m : rep.modules)
    t.add_row({m.module, m.format, fmt::format("{:.3e}", m.weight_error.nmse), fmt::format("{:.1f}", m.weight_error.snr_db),
               fmt::format("{:.3g}", m.weight_error.max_abs_error), std::to_string(m.weight_error.sign_flips),
               fmt_opt(m.loss), fmt_opt(m.output_error), fmt_opt(m.rtn_output_error)});
  std::fputs(t.render().c_str(), stdout);
  std::printf("\nmethod %s, %zu modules quantized, %zu kept floating point\n", r.method.c_str(), rep.modules.size(),
              rep.unquantized.size());
  std::printf("calibration: %s\n", rep.calibration.c_str());
  std::printf("avg bits per quantized weight (codes + fp16 scales + zeros): %.3f\n", rep.avg_bits_per_weight);
  if (rep.allocation) {
    std::map<std::string, int> count;
    for (const auto& m : rep.allocation->modules) ++count[m.grids[m.chosen]];
    std::string grids;
    for (const auto& [grid, n] : count) grids += fmt::format("{}{} x{}", grids.empty() ? "" : ", ", grid, n);
    const AllocationReport& al = *rep.allocation;
    const std::string target =
        al.target_bytes > 0 ? fmt::format("target size {} ({:.0f} bytes), achieved {} ({:.0f} bytes: {} outside the "
                                          "allocated modules), {:.3f} bits/weight in the modules",
                                          human_bytes(al.target_bytes), al.target_bytes, human_bytes(al.size_bytes),
                                          al.size_bytes, human_bytes(al.fixed_bytes), al.achieved_bpw)
                            : fmt::format("target {:.3f} bits/weight, achieved {:.3f}", al.target_bpw, al.achieved_bpw);
    const std::string metric =
        al.metric == "kl"       ? fmt::format("mean KL on {}", al.sensitivity)
        : al.metric == "rtn-kl" ? fmt::format("rtn output error scaled to each unit's KL ({})", al.sensitivity)
                                : fmt::format("{} {} output error", al.sensitivity, al.metric);
    std::printf("allocation: %s (per %s, sensitivity: %s); %s\n", target.c_str(), al.unit.c_str(), metric.c_str(),
                grids.c_str());
  }
  std::printf("output: %s (%s), time %.1f s, peak RSS %.0f MB\n", a.out.c_str(), human_bytes(rep.output_bytes).c_str(),
              rep.seconds, rep.peak_rss_mb);
}

struct RecipesArgs {
  bool json = false;
};

// `ptq recipes`: the bundled recipes, what they produce and need, and which runtime loads the result.
void run_recipes(const GlobalOptions& g, const RecipesArgs& a) {
  apply_global_options(g, a.json);
  nlohmann::json out = nlohmann::json::array();
  // The text table stays terminal-wide: papers and the runner's column (it runs everything) are in --json.
  Table t({"recipe", "grid", "needs", "llama.cpp", "vLLM / transformers"});
  auto first_reason = [](const std::string& how) { return how.substr(0, how.find(';')); };
  for (const auto& b : bundled_recipes()) {
    const Recipe r = load_recipe(b.path);
    const auto fits = export_fits(r);
    nlohmann::json runtimes = nlohmann::json::object();
    for (const auto& f : fits) runtimes[f.runtime] = {{"loads", f.loads}, {"how", f.how}};
    out.push_back({{"name", b.name},
                   {"path", b.path},
                   {"grid", recipe_grid(r)},
                   {"paper", r.paper},
                   {"needs", recipe_needs(r)},
                   {"default", b.name == kDefaultRecipe},
                   {"runtimes", runtimes}});
    t.add_row({b.name + (b.name == kDefaultRecipe ? " (default)" : ""), recipe_grid(r), recipe_needs(r),
               first_reason(fits[0].how), first_reason(fits[1].how)});
  }
  if (a.json) {
    print_json({{"recipes", out}});
    return;
  }
  std::fputs(t.render().c_str(), stdout);
  std::printf("ptq's own runner (eval, generate, bench) runs every result. Papers and details: ptq recipes --json\n"
              "use: ptq quantize MODEL -o OUT --recipe NAME (flags such as --group-size override the recipe)\n");
}

}  // namespace

void add_quantize_command(CLI::App& app, GlobalOptions& g) {
  {
    auto* cmd = app.add_subcommand("recipes",
                                   "List the bundled recipes: grid, paper, what they need, and which runtime can load "
                                   "the result through which export");
    auto a = std::make_shared<RecipesArgs>();
    cmd->add_flag("--json", a->json, "Print one JSON object");
    cmd->callback([&g, a] { run_recipes(g, *a); });
  }
  auto* cmd = app.add_subcommand(
      "quantize", "Quantize a model with a recipe (default " + std::string(kDefaultRecipe) +
                      "; `ptq recipes` lists them); flags override the recipe. Methods: " +
                      weight_algorithm_names() + ". Weight grids: any " + kWeightGridGrammar + "; common ones: " +
                      weight_grid_preset_names());
  auto a = std::make_shared<QuantizeArgs>();
  cmd->add_option("MODEL", a->model, "Hugging Face model directory")->required();
  a->recipe = kDefaultRecipe;
  cmd->add_option("--recipe", a->recipe,
                  "A bundled recipe's name (`ptq recipes` lists them) or a recipe YAML file")
      ->default_str(kDefaultRecipe);
  cmd->add_option("-o,--output", a->out, "Output directory (a ptq checkpoint)")->required();
  cmd->add_flag("--force", a->force,
                "Replace an existing output directory that ptq wrote (and give up an interrupted run's state)");
  cmd->add_flag("--resume", a->resume,
                "Continue the interrupted run writing OUTPUT from its last finished layer (state in "
                "OUTPUT.ptq-resume/); give the same command and flags, plus --resume. The output is byte for byte "
                "that of an uninterrupted run");
  cmd->add_option("--data", a->data, "Calibration text file (repeatable; default: data/sotu-train.txt)");
  cmd->add_flag("--synthetic", a->synthetic, "Calibrate on random tokens (data-free)");
  cmd->add_option("--stats", a->stats,
                  "Statistics from `ptq calibrate --hessian`: GPTQ uses the FP model's Hessians from it instead of "
                  "streaming calibration data (no forward passes; not sequential)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--nsamples", a->nsamples, "Calibration windows")->check(kPositive);
  cmd->add_option("--seqlen", a->seqlen, "Calibration window length (0: min(2048, model context))")->check(kNonNegative);
  cmd->add_option("--seed", a->seed, "Calibration sampling seed");
  cmd->add_option("--method", a->method, "Weight algorithm: " + weight_algorithm_names());
  cmd->add_option("--grid", a->grid,
                  std::string("Weight grid by name, ") + kWeightGridGrammar +
                      "; --bits, --group-size, --sym/--asym given too override its parts")
      ->type_name("GRID");
  cmd->add_option("--bits", a->bits, "Weight bits (2..8)");
  cmd->add_option("--group-size", a->group_size, "Input columns per group; -1 = per output channel");
  auto* sym = cmd->add_flag("--sym", a->sym, "Symmetric grid (zero 2^(b-1))");
  cmd->add_flag("--asym", a->asym, "Asymmetric grid (min/max with a zero point)")->excludes(sym);
  cmd->add_flag("--act-order", a->act_order, "GPTQ: columns in order of decreasing Hessian diagonal (desc_act)");
  cmd->add_flag("--static-groups", a->static_groups, "GPTQ: group grids from the unpermuted weights");
  cmd->add_option("--damp", a->damp, "GPTQ dampening: fraction of mean(diag H) added to the diagonal");
  cmd->add_option("--device", a->device,
                  "Where GPTQ runs: cpu, or cuda (the first CUDA GPU: the calibration Hessians are accumulated, "
                  "factorised and swept there; the calibration forward stays on the CPU; needs a build with "
                  "-DPTQ_WITH_CUDA=ON; linear grids only)")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->default_str("cpu");
  cmd->add_option("--ignore", a->ignore, "Regex of module paths to keep floating point (repeatable)");
  cmd->add_option("--act-bits", a->act_bits, "Activation bits (enables activation quantization)")
      ->check(CLI::Range(2, 8));
  cmd->add_option("--act-granularity", a->act_granularity,
                  "Activation scales: per_tensor (static), per_channel (static), per_token (dynamic)");
  cmd->add_option("--act-method", a->act_method, "Activation method (migration): " + migration_method_names());
  cmd->add_flag("--hadamard", a->hadamard,
                "QuaRot-style randomized Hadamard rotation of the residual stream, plus online before down_proj");
  cmd->add_option("--target-bpw", a->target_bpw,
                  "Mixed precision: choose every module's grid from --candidates so the quantized modules average this "
                  "many bits per weight (codes + scales + zeros) with the least measured sensitivity "
                  "(--sensitivity-metric); --stats gives the FP model's Hessians, else one calibration pass does")
      ->check(kPositive);
  cmd->add_option("--target-size", a->target_size,
                  "Mixed precision like --target-bpw, the budget given as the checkpoint's size: the quantized "
                  "modules' bytes plus every other tensor at its stored dtype (embeddings, norms, lm_head, modules "
                  "left FP). Bytes (12345678) or with a unit: 2.5GB, 900MB (powers of 1000), 900MiB, 1.5GiB (powers "
                  "of 1024)")
      ->excludes("--target-bpw")
      ->type_name("SIZE");
  cmd->add_option("--candidates", a->candidates,
                  "Grids --target-bpw / --target-size choose from, comma separated (default: 2, 3, 4, 5, 6 and 8 bits at the recipe's "
                  "group size and symmetry; with a GGUF recipe, ggml block types, default q2_k,q3_k,q4_k,q5_k,q6_k,q8_0)")
      ->delimiter(',')
      ->type_name("GRID,...");
  cmd->add_option("--sensitivity-metric", a->sensitivity_metric,
                  "What mixed precision minimises (recipe allocation.sensitivity; default rtn-kl): rtn = the output error "
                  "1/2 tr(dW H dW^T) RTN leaves on each candidate (the diagonal form with a stats file without "
                  "Hessians); gptq = the same for what GPTQ leaves (one GPTQ run per module and candidate; needs "
                  "Hessians); kl = the mean KL divergence from the FP model on " +
                      std::to_string(kKlSensitivityWindows) +
                      " calibration windows with that unit alone RTN-quantized (one forward per unit and candidate); "
                      "rtn-kl = rtn's errors with each unit's scaled to equal its kl on the candidate of median size "
                      "(one forward per unit: kl's weighting of units at a fraction of its time)")
      ->check(CLI::IsMember(sensitivity_metric_names()));
  cmd->add_option("--allocation-unit", a->allocation_unit,
                  "module (default): every linear module gets its own grid; layer: all linear modules of a decoder "
                  "layer share one (costs and errors summed per layer)")
      ->check(CLI::IsMember(allocation_unit_names()));
  cmd->add_option("--save-sensitivity", a->save_sensitivity,
                  "Write every unit's bytes and error on every candidate to this JSON file (for --sensitivity); an "
                  "existing file is replaced only with --force");
  cmd->add_option("--sensitivity", a->sensitivity,
                  "Reuse a --save-sensitivity file instead of measuring (its metric unless --sensitivity-metric or the "
                  "recipe names one); refused when it was measured on another model (config.json or weights), other "
                  "candidates, metric or unit")
      ->check(CLI::ExistingFile);
  cmd->add_option("--batch", a->batch, "Calibration windows per layer forward")->default_val(8)->check(kPositive);
  cmd->add_flag("--json", a->json, "Print one JSON object");
  cmd->add_option("--report", a->report,
                  "Also write an HTML report of the output (`ptq report`: provenance, weight error, bits map; the "
                  "activation ranges when --stats is given)");
  cmd->callback([&g, a] { run_quantize(g, *a); });
}

}  // namespace ptq::cli
