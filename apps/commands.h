// Subcommand registration for the ptq binary. apps/ only parses arguments and calls lib/.
#pragma once

#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

namespace ptq::cli {

struct GlobalOptions {
  int threads = 0;  // 0: all cores
  bool quiet = false;
};

// Applies --threads/--quiet/--json; every subcommand calls it first.
void apply_global_options(const GlobalOptions& g, bool json);
// Numeric flag checks with short messages (CLI11's own print the whole double range).
extern const CLI::Validator kNonNegative;  // >= 0
extern const CLI::Validator kPositive;     // >= 1
// Prints one JSON object on stdout.
void print_json(const nlohmann::json& j);

void add_model_commands(CLI::App& app, GlobalOptions& g);  // inspect, generate, bench, synth
void add_eval_commands(CLI::App& app, GlobalOptions& g);
void add_quantize_command(CLI::App& app, GlobalOptions& g);   // eval ppl, eval tasks
void add_calibrate_command(CLI::App& app, GlobalOptions& g);  // calibrate
void add_export_commands(CLI::App& app, GlobalOptions& g);    // export, gguf-to-hf, logits
void add_tokenize_command(CLI::App& app, GlobalOptions& g);   // tokenize
void add_transform_commands(CLI::App& app, GlobalOptions& g);  // outlierize

}  // namespace ptq::cli
