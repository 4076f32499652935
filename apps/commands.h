// Subcommand registration for the ptq binary. apps/ only parses arguments and calls lib/.
#pragma once

#include <memory>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

namespace ptq {
class Model;
}

namespace ptq::cli {

struct GlobalOptions {
  int threads = 0;  // 0: all cores
  bool quiet = false;
  bool verbose = false;
};

// Applies --threads/--quiet/--json; every subcommand calls it first.
void apply_global_options(const GlobalOptions& g, bool json);
// Numeric flag checks with short messages (CLI11's own print the whole double range).
extern const CLI::Validator kNonNegative;  // >= 0
extern const CLI::Validator kPositive;     // >= 1
// --reference-runner and --kv-cache of the commands that run a model (eval, generate, bench, logits), into `o`.
struct RunFlags {
  bool reference = false;
  std::string kv_cache;     // empty: the runner's default
  std::string activations;  // "f32" | "q8"; set by add_run_flags to the command's default
  bool activations_given = false;  // --activations was on the command line
  std::string device = "cpu";      // "cpu" | "cuda"
};
// `default_activations`: "f32" (eval, logits: exact) or "q8" (generate, bench: llama.cpp's arithmetic).
void add_run_flags(CLI::App* cmd, RunFlags& f, const char* default_activations);
// open_model_for_run with the flags (lib/runtime/open_model.h).
std::unique_ptr<Model> open_run_model(const std::string& path, const RunFlags& f);
// Prints one JSON object on stdout.
void print_json(const nlohmann::json& j);

void add_model_commands(CLI::App& app, GlobalOptions& g);  // inspect, generate, bench, synth
void add_eval_commands(CLI::App& app, GlobalOptions& g);       // eval ppl, eval tasks
void add_quantize_command(CLI::App& app, GlobalOptions& g);   // quantize, recipes
void add_calibrate_command(CLI::App& app, GlobalOptions& g);  // calibrate
void add_export_commands(CLI::App& app, GlobalOptions& g);    // export, gguf-to-hf, logits
void add_tokenize_command(CLI::App& app, GlobalOptions& g);   // tokenize
void add_transform_commands(CLI::App& app, GlobalOptions& g);  // outlierize
void add_report_command(CLI::App& app, GlobalOptions& g);     // report
// `ptq quantize --report`: the report of the checkpoint just written, from what quantize had at hand (the FP input,
// its --stats); evaluations are left to `ptq report`.
void write_quantize_report(const std::string& out_html, const std::string& quantized, const std::string& fp_model,
                           const std::string& stats);

}  // namespace ptq::cli
