// ptq: offline post-training quantization for LLMs. Entry point: argument parsing and error mapping.
#include <cstdio>
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <unistd.h>
#include <stdexcept>

#include <c10/util/Exception.h>
#include <fmt/format.h>

#include "apps/commands.h"
#include "core/error.h"
#include "core/progress.h"
#include "core/temporaries.h"
#include "core/utf8.h"
#include "model/model.h"
#include "runtime/open_model.h"

namespace ptq::cli {

constexpr int kMaxThreadsPerCore = 4;

void apply_global_options(const GlobalOptions& g, bool json) {
  set_progress_enabled(!g.quiet && !json);
  set_verbose(g.verbose);
  // More threads than a few per core only adds contention (and --threads 100000 would start that many).
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int threads = g.threads;
  if (threads > kMaxThreadsPerCore * cores) {
    std::fprintf(stderr, "warning: --threads %d is more than %d per core on this %d-core machine; using %d\n", threads,
                 kMaxThreadsPerCore, cores, kMaxThreadsPerCore * cores);
    threads = kMaxThreadsPerCore * cores;
  }
  set_num_threads(threads);
}

void print_json(const nlohmann::json& j) { std::printf("%s\n", j.dump(2).c_str()); }

void add_run_flags(CLI::App* cmd, RunFlags& f, const char* default_activations) {
  cmd->add_flag("--reference-runner", f.reference,
                "Run on fp32 weights with LibTorch matmuls (the dequantize-on-load reference path) instead of the "
                "packed kernels");
  cmd->add_option("--kv-cache", f.kv_cache,
                  "KV cache storage: f32 | f16 | int8 (per token and kv head steps); default f16, or f32 with "
                  "--reference-runner")
      ->check(CLI::IsMember({"f32", "f16", "int8"}));
  f.activations = default_activations;
  cmd->add_option("--activations", f.activations,
                  "Activations inside quantized-weight matmuls: f32 (exact) or q8 (rounded to int8 per block of 32, as "
                  "llama.cpp's Q4_0/Q8_0 dot does; faster). q8 applies to decode steps (<= 4 tokens per call), and "
                  "to prompts too on CPUs with AVX-512 VNNI, where the int8 kernel is also the faster prefill")
      ->check(CLI::IsMember({"f32", "q8"}))
      ->default_str(default_activations)
      ->each([&f](const std::string&) { f.activations_given = true; });
  cmd->add_option("--device", f.device,
                  "Where the forward runs: cpu (the packed CPU kernels) or cuda (the first CUDA GPU: weights, "
                  "activations and an f16 KV cache on the device; Llama-family models with float, weight-only "
                  "quantized or activation-quantized modules; needs a build with -DPTQ_WITH_CUDA=ON)")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->default_str("cpu");
}

std::unique_ptr<Model> open_run_model(const std::string& path, const RunFlags& f) {
  RunOptions o;
  o.reference = f.reference;
  o.device = f.device == "cuda" ? RunDevice::Cuda : RunDevice::Cpu;
  if (o.device == RunDevice::Cuda && f.activations_given && f.activations == "q8")
    fail_input("--activations q8 runs on the CPU kernels only; --device cuda keeps activations in fp32");
  o.int8_activations = o.device == RunDevice::Cpu && f.activations == "q8";
  if (!f.kv_cache.empty()) o.kv_cache = parse_kv_cache_type(f.kv_cache);
  return open_model_for_run(path, o);
}

namespace {
CLI::Validator number_at_least(double lo, const char* what) {
  return CLI::Validator(
      [lo, what](std::string& s) -> std::string {
        char* end = nullptr;
        double v = std::strtod(s.c_str(), &end);
        if (end == s.c_str() || *end != '\0' || !(v >= lo)) return std::string("must be ") + what + ", got " + s;
        return {};
      },
      what);
}
}  // namespace

const CLI::Validator kNonNegative = number_at_least(0, "a number >= 0");
const CLI::Validator kPositive = number_at_least(1, "a number >= 1");

// An error message as one printable line: control bytes and bytes that are not UTF-8 (from a damaged file's
// names or texts) are shown as \xNN instead of reaching the terminal raw.
std::string printable(const std::string& m) {
  std::string out;
  for (size_t i = 0; i < m.size();) {
    const unsigned char c = static_cast<unsigned char>(m[i]);
    const size_t len = utf8_seq_len(m, i);
    if (len == 0 || (len == 1 && (c < 0x20 || c == 0x7f))) {
      out += fmt::format("\\x{:02x}", c);
      ++i;
    } else {
      out.append(m, i, len);
      i += len;
    }
  }
  return out;
}

}  // namespace ptq::cli

int main(int argc, char** argv) {
  // libgomp (LibTorch's CPU threads) spin-waits between parallel regions by default; on a machine where
  // other processes compete for the cores that turns minutes into tens of minutes (measured: GPTQ on
  // sotu-llama-8m 133 s spinning vs 17 s passive, 2 cores, load 4). libgomp reads OMP_WAIT_POLICY when it
  // is loaded, before main(), so set it and re-execute once. A user's own setting is kept.
  // Token-by-token decoding (`bench`, `generate`) is the exception: each step starts a few hundred short parallel
  // regions, and waking sleeping threads for each cost a third of the step (measured on the 1.1B shape's W4 g32, 2
  // threads: decode 21.0 tok/s passive, 32.9 with a spin of GOMP_SPINCOUNT=20000 before sleeping, 31.9 always
  // spinning; the same spin made two GPTQ runs sharing 2 cores 4x slower, so only these commands get it).
  if (std::getenv("OMP_WAIT_POLICY") == nullptr && std::getenv("GOMP_SPINCOUNT") == nullptr) {
    ::setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    for (int i = 1; i < argc; ++i)
      if (std::strcmp(argv[i], "bench") == 0 || std::strcmp(argv[i], "generate") == 0) {
        ::setenv("GOMP_SPINCOUNT", "20000", 1);
        break;
      }
    ::execv("/proc/self/exe", argv);  // returns only on failure: then run as we are
  }
  // SIGINT/SIGTERM remove the run's temporary outputs and exit 130/143 (core/temporaries.h); before any thread starts.
  ptq::install_signal_cleanup();
  using namespace ptq::cli;
  CLI::App app{"ptq: offline post-training quantization toolchain for LLMs (C++; CPU, and CUDA in builds with nvcc)"};
  app.set_version_flag("--version", std::string("ptq ") + PTQ_VERSION);
  app.require_subcommand(1);
  GlobalOptions g;
  app.add_option("--threads", g.threads, "CPU threads (default: all cores)")->check(kNonNegative);
  app.add_flag("-q,--quiet", g.quiet, "No progress output");
  app.add_flag("-v,--verbose", g.verbose, "List every item in messages (e.g. all modules a refusal names)");
  // Global flags are accepted after the subcommand too (`ptq quantize ... --threads 1 -q`): a subcommand passes
  // what it does not know to this parser.
  app.fallthrough();
  add_model_commands(app, g);
  add_quantize_command(app, g);
  add_eval_commands(app, g);
  add_calibrate_command(app, g);
  add_export_commands(app, g);
  add_tokenize_command(app, g);
  add_transform_commands(app, g);
  add_report_command(app, g);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "error: %s (see --help)\n", printable(e.what()).c_str());
    return 2;
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "error: %s\n", printable(e.what()).c_str());
    return 2;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "error: %s\n", printable(e.what_without_backtrace()).c_str());
    return 3;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", printable(e.what()).c_str());
    return 1;
  }
  return 0;
}
