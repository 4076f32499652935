// ptq eval ppl | tasks
#include <algorithm>
#include <cstdio>

#include <fmt/format.h>

#include "apps/commands.h"
#include "core/error.h"
#include "core/file.h"
#include "core/table.h"
#include "eval/perplexity.h"
#include "eval/tasks.h"
#include "model/model.h"
#include "runtime/open_model.h"
#include "model/tokenizer.h"

namespace ptq::cli {

namespace {

struct PplArgs {
  std::vector<std::string> models;
  std::string data;
  std::string kl_reference;  // empty: no KL
  PerplexityOptions opts;
  RunFlags run;
  bool json = false;
};

void run_ppl(const GlobalOptions& g, const PplArgs& a) {
  apply_global_options(g, a.json);
  const std::string text = read_user_text(a.data, "--data");
  const std::string sha = sha256_hex(text.data(), text.size());
  nlohmann::json results = nlohmann::json::array();
  // With several models, each row's perplexity change against the first (the baseline, e.g. the FP model).
  const bool compare = a.models.size() > 1;
  std::vector<std::string> header = {"model", "ppl"};
  if (compare) header.push_back("Δ% vs first");
  const bool kl = !a.kl_reference.empty();
  if (kl) header.insert(header.end(), {"mean KL", "ref ppl"});
  for (const char* h : {"nll", "windows", "seqlen", "scored", "tokenizer", "seconds"}) header.push_back(h);
  Table t(header);
  // The KL reference runs in lockstep with each model, on the same windows; it must read the same token stream.
  std::unique_ptr<Model> reference;
  std::vector<int32_t> reference_ids;
  if (kl) {
    reference = open_run_model(a.kl_reference, a.run);
    reference_ids = load_tokenizer(a.kl_reference)->encode(text);
  }
  double base_ppl = 0;
  for (const auto& path : a.models) {
    auto model_ptr = open_run_model(path, a.run);
    Model& model = *model_ptr;
    auto tok = load_tokenizer(path);
    const std::vector<int32_t> ids = tok->encode(text);
    if (kl && ids != reference_ids) {
      const auto diff = std::mismatch(ids.begin(), ids.end(), reference_ids.begin(), reference_ids.end());
      fail_input("--kl-reference {} tokenizes {} differently from {} ({} vs {} tokens, first difference at token {}); "
                 "KL divergence needs the same tokenizer", a.kl_reference, a.data, path, reference_ids.size(),
                 ids.size(), diff.first - ids.begin());
    }
    PerplexityResult r = evaluate_perplexity(model, ids, a.opts, fmt::format("ppl {}", path), reference.get());
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
    if (kl) {
      results.back()["kl_reference"] = a.kl_reference;
      results.back()["mean_kl"] = r.mean_kl;
      results.back()["reference_ppl"] = r.reference_ppl;
    }
    if (results.size() == 1) base_ppl = r.ppl;
    std::vector<std::string> row = {path, fmt::format("{:.4f}", r.ppl)};
    if (compare) row.push_back(results.size() == 1 ? "-" : fmt::format("{:+.2f}", 100.0 * (r.ppl / base_ppl - 1.0)));
    if (kl) row.insert(row.end(), {fmt::format("{:.6f}", r.mean_kl), fmt::format("{:.4f}", r.reference_ppl)});
    for (std::string c : {fmt::format("{:.5f}", r.nll), std::to_string(r.windows), std::to_string(r.seqlen),
                          std::to_string(r.predicted), tok->describe(), fmt::format("{:.1f}", r.seconds)})
      row.push_back(std::move(c));
    t.add_row(row);
  }
  if (a.json) return print_json({{"results", results}});
  std::printf("perplexity on %s (sha256 %.12s...)\n", a.data.c_str(), sha.c_str());
  if (kl) std::printf("mean KL(P_ref || P_model) per predicted token, nats; reference: %s\n", a.kl_reference.c_str());
  std::fputs(t.render().c_str(), stdout);
}

struct TasksArgs {
  std::vector<std::string> models;
  std::vector<std::string> tasks;
  std::string format = "auto";
  int64_t limit = 0;
  TaskOptions opts;
  RunFlags run;
  bool json = false;
};

// Column headers: model directory names, or the full paths where two names collide.
std::vector<std::string> model_labels(const std::vector<std::string>& paths) {
  std::vector<std::string> labels;
  for (std::string p : paths) {
    while (p.size() > 1 && p.back() == '/') p.pop_back();
    const size_t slash = p.find_last_of('/');
    labels.push_back(slash == std::string::npos ? p : p.substr(slash + 1));
  }
  for (const auto& l : labels)
    if (std::count(labels.begin(), labels.end(), l) > 1) return paths;
  return labels;
}

void run_tasks(const GlobalOptions& g, const TasksArgs& a) {
  apply_global_options(g, a.json);
  const TaskFormat format = parse_task_format(a.format);
  std::vector<Task> tasks;
  for (const auto& path : a.tasks) tasks.push_back(load_task(path, format, a.limit));
  const std::vector<std::string> labels = model_labels(a.models);
  std::vector<std::vector<TaskResult>> results(a.models.size());  // [model][task]
  nlohmann::json out = nlohmann::json::array();
  for (size_t m = 0; m < a.models.size(); ++m) {
    const std::string& path = a.models[m];
    auto model_ptr = open_run_model(path, a.run);
    Model& model = *model_ptr;
    auto tok = load_tokenizer(path);
    for (const Task& task : tasks) {
      TaskResult r = evaluate_task(model, *tok, task, a.opts, fmt::format("{} {}", task.name, labels[m]));
      nlohmann::json j = {{"model", path}, {"task", task.name}, {"n", r.n}, {"acc", r.acc}, {"acc_stderr", r.acc_stderr}};
      if (task.kind == TaskKind::Cloze) {
        j["target_logprob"] = r.target_logprob;
      } else {
        j["acc_norm"] = r.acc_norm;
        j["acc_norm_stderr"] = r.acc_norm_stderr;
      }
      j["format"] = task_format_name(task.format);
      j["data"] = task.path;
      j["data_sha256"] = sha256_file(task.path);
      j["limit"] = a.limit;
      j["truncated"] = r.truncated;
      j["tokenizer"] = tok->describe();
      j["add_bos"] = tok->add_bos_default();
      j["seconds"] = r.seconds;
      j["items_per_second"] = r.items_per_second;
      out.push_back(std::move(j));
      results[m].push_back(std::move(r));
    }
  }
  if (a.json) return print_json({{"results", out}});

  std::vector<std::string> header = {"task", "format", "n", "metric"};
  header.insert(header.end(), labels.begin(), labels.end());
  Table t(header);
  for (size_t ti = 0; ti < tasks.size(); ++ti) {
    const Task& task = tasks[ti];
    // The first row of a task names it; the others only add a metric.
    auto row = [&](const char* metric, auto cell) {
      const bool first = std::string(metric) == "acc";
      std::vector<std::string> r = {first ? task.name : "", first ? task_format_name(task.format) : "",
                                    first ? std::to_string(results[0][ti].n) : "", metric};
      for (size_t m = 0; m < a.models.size(); ++m) r.push_back(cell(results[m][ti]));
      t.add_row(r);
    };
    row("acc", [](const TaskResult& r) { return fmt::format("{:.4f} ± {:.4f}", r.acc, r.acc_stderr); });
    if (a.models.size() > 1) {
      const double base = results[0][ti].acc;  // percentage points against the first model
      row("Δ acc pt", [base](const TaskResult& r) { return fmt::format("{:+.2f}", 100.0 * (r.acc - base)); });
    }
    if (task.kind == TaskKind::Cloze)
      row("target_logprob", [](const TaskResult& r) { return fmt::format("{:.4f}", r.target_logprob); });
    else
      row("acc_norm", [](const TaskResult& r) { return fmt::format("{:.4f} ± {:.4f}", r.acc_norm, r.acc_norm_stderr); });
    row("truncated", [](const TaskResult& r) { return std::to_string(r.truncated); });
    row("items/s", [](const TaskResult& r) { return fmt::format("{:.1f}", r.items_per_second); });
  }
  if (labels != a.models)
    for (size_t m = 0; m < a.models.size(); ++m) std::printf("%s: %s\n", labels[m].c_str(), a.models[m].c_str());
  std::fputs(t.render().c_str(), stdout);
}

}  // namespace

void add_eval_commands(CLI::App& app, GlobalOptions& g) {
  auto* eval = app.add_subcommand("eval", "Measure model quality: perplexity (ppl), zero-shot accuracy (tasks)");
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
  cmd->add_option("--kl-reference", a->kl_reference,
                  "Also the mean KL divergence KL(P_ref || P_model) per predicted token (nats, llama.cpp's definition) "
                  "against this model (e.g. the FP one), run in lockstep on the same windows; must share the "
                  "tokenizer. Adds mean_kl and reference_ppl to --json");
  add_run_flags(cmd, a->run, "f32");
  cmd->add_flag("--json", a->json, "Print one JSON object: {\"results\": [...]}");
  cmd->callback([&g, a] { run_ppl(g, *a); });

  auto* tcmd = eval->add_subcommand(
      "tasks", "Zero-shot accuracy with lm-evaluation-harness semantics: multiple choice by log-likelihood (acc, "
               "acc_norm by characters) and cloze by greedy match. Several models give one side-by-side table.");
  auto ta = std::make_shared<TasksArgs>();
  tcmd->add_option("MODEL", ta->models, "One or more model directories")->required();
  tcmd->add_option("--tasks", ta->tasks, "One or more JSONL task files")->required()->check(CLI::ExistingFile);
  std::string formats;
  for (const auto& n : task_format_names())
    if (n != "auto") formats += fmt::format("\n  {}: {}", n, task_format_schema(parse_task_format(n)));
  tcmd->add_option("--format", ta->format, "Schema of the task files (default: detected per file):" + formats)
      ->check(CLI::IsMember(task_format_names()));
  tcmd->add_option("--limit", ta->limit, "Evaluate only the first N items of each task (default: all)")
      ->check(kNonNegative);
  tcmd->add_option("--batch", ta->opts.batch, "Continuations per forward pass (scores agree to fp32 round-off)")
      ->default_val(8)
      ->check(kPositive);
  add_run_flags(tcmd, ta->run, "f32");
  tcmd->add_flag("--json", ta->json, "Print one JSON object: {\"results\": [...]}");
  tcmd->callback([&g, ta] { run_tasks(g, *ta); });
}

}  // namespace ptq::cli
