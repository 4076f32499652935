// ptq eval ppl
#include <cstdio>

#include <fmt/format.h>

#include "apps/commands.h"
#include "core/file.h"
#include "core/table.h"
#include "eval/perplexity.h"
#include "model/model.h"
#include "model/tokenizer.h"

namespace ptq::cli {

namespace {

struct PplArgs {
  std::vector<std::string> models;
  std::string data;
  PerplexityOptions opts;
  bool json = false;
};

void run_ppl(const GlobalOptions& g, const PplArgs& a) {
  apply_global_options(g, a.json);
  const std::string text = read_text_file(a.data);
  const std::string sha = sha256_hex(text.data(), text.size());
  nlohmann::json results = nlohmann::json::array();
  Table t({"model", "ppl", "nll", "windows", "seqlen", "tokens", "tokenizer", "seconds"});
  for (const auto& path : a.models) {
    Model model(path);
    auto tok = load_tokenizer(path);
    const std::vector<int32_t> ids = tok->encode(text);
    PerplexityResult r = evaluate_perplexity(model, ids, a.opts, fmt::format("ppl {}", path));
    results.push_back({{"model", path},
                       {"ppl", r.ppl},
                       {"nll", r.nll},
                       {"tokens", r.tokens},
                       {"predicted_tokens", r.predicted},
                       {"windows", r.windows},
                       {"seqlen", r.seqlen},
                       {"tokenizer", tok->describe()},
                       {"add_bos", tok->add_bos_default()},
                       {"data", a.data},
                       {"data_sha256", sha},
                       {"seconds", r.seconds}});
    t.add_row({path, fmt::format("{:.4f}", r.ppl), fmt::format("{:.5f}", r.nll), std::to_string(r.windows),
               std::to_string(r.seqlen), std::to_string(r.tokens), tok->describe(), fmt::format("{:.1f}", r.seconds)});
  }
  if (a.json) return print_json({{"results", results}});
  std::printf("perplexity on %s (sha256 %.12s...)\n", a.data.c_str(), sha.c_str());
  std::fputs(t.render().c_str(), stdout);
}

}  // namespace

void add_eval_commands(CLI::App& app, GlobalOptions& g) {
  auto* eval = app.add_subcommand("eval", "Measure model quality: perplexity (ppl)");
  eval->require_subcommand(1);
  auto* cmd = eval->add_subcommand(
      "ppl", "Perplexity on a text file: non-overlapping windows of --seqlen tokens, every next token scored "
             "(GPTQ protocol). Several models give one side-by-side table.");
  auto a = std::make_shared<PplArgs>();
  cmd->add_option("MODEL", a->models, "One or more model directories")->required();
  cmd->add_option("--data", a->data, "Text file to evaluate on")->required()->check(CLI::ExistingFile);
  cmd->add_option("--seqlen", a->opts.seqlen, "Window length in tokens (default: min(2048, model context))")
      ->check(kNonNegative);
  cmd->add_option("--max-windows", a->opts.max_windows, "Evaluate only the first K windows (default: all)")
      ->check(kNonNegative);
  cmd->add_option("--batch", a->opts.batch, "Windows per forward pass")->default_val(8)->check(kPositive);
  cmd->add_flag("--json", a->json, "Print one JSON object: {\"results\": [...]}");
  cmd->callback([&g, a] { run_ppl(g, *a); });
}

}  // namespace ptq::cli
