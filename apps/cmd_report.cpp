// ptq report; the report `ptq quantize --report` writes.
#include <cstdio>

#include "apps/commands.h"
#include "core/file.h"
#include "core/model_dir.h"
#include "core/table.h"
#include "report/report.h"

namespace ptq::cli {

namespace {

struct ReportArgs {
  ReportOptions opts;
  std::string out;
  bool force = false, json = false;
};

// The page goes to a temporary file renamed over OUT, so a failed run never leaves half a report.
void write_report(const ReportOptions& opts, const std::string& out, bool json) {
  const ReportData data = build_report_data(opts);
  const std::string html = render_report_html(data);
  write_text_file_atomic(out, html);
  if (json) return print_json(data.to_json());
  std::fprintf(stderr, "report: %s (%s)\n", out.c_str(), human_bytes(static_cast<double>(html.size())).c_str());
}

void run_report(const GlobalOptions& g, const ReportArgs& a) {
  apply_global_options(g, a.json);
  check_output_path(a.out, std::vector<std::string>{a.opts.quantized, a.opts.fp, a.opts.stats}, a.force);
  write_report(a.opts, a.out, a.json);
}

}  // namespace

void write_quantize_report(const std::string& out_html, const std::string& quantized, const std::string& fp_model,
                           const std::string& stats) {
  ReportOptions o;
  o.quantized = quantized;
  o.fp = fp_model;
  o.stats = stats;
  write_report(o, out_html, /*json=*/false);
}

void add_report_command(CLI::App& app, GlobalOptions& g) {
  auto* cmd = app.add_subcommand(
      "report",
      "Write a self-contained HTML report of a quantized checkpoint (inline SVG, no network): provenance, "
      "per-layer per-channel activation ranges before and after migration (--stats), per-module weight NMSE and "
      "output error (GPTQ vs RTN), the bits map, perplexity and accuracy against FP (--data, --tasks)");
  auto a = std::make_shared<ReportArgs>();
  cmd->add_option("QUANTIZED", a->opts.quantized, "Quantized checkpoint (ptq, GPTQ or compressed-tensors)")->required();
  cmd->add_option("-o,--output", a->out, "HTML file to write (atomically)")->required();
  cmd->add_flag("--force", a->force, "Replace an existing report (only a file ptq wrote)");
  cmd->add_option("--fp", a->opts.fp,
                  "The FP model: recovers the migration from the folded norms, checks --stats, adds the FP column "
                  "of the quality table (default: the checkpoint's source model, when that directory exists)");
  cmd->add_option("--stats", a->opts.stats, "Calibration stats of the FP model (`ptq calibrate FP -o STATS`)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--data", a->opts.data, "Text file for perplexity (as `ptq eval ppl`)")->check(CLI::ExistingFile);
  cmd->add_option("--seqlen", a->opts.ppl.seqlen, "Perplexity window length (default: min(2048, model context))")
      ->check(kNonNegative);
  cmd->add_option("--max-windows", a->opts.ppl.max_windows, "Evaluate only the first K windows (default: all)")
      ->check(kNonNegative);
  cmd->add_option("--tasks", a->opts.tasks, "JSONL task files for zero-shot accuracy (as `ptq eval tasks`)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--limit", a->opts.task_limit, "Evaluate only the first N items of each task (default: all)")
      ->check(kNonNegative);
  cmd->add_flag("--json", a->json,
                "Also print the report's figures as one JSON object on stdout (the numbers the page draws; NaN: null)");
  cmd->callback([&g, a] { run_report(g, *a); });
}

}  // namespace ptq::cli
