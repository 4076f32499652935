// ptq inspect | generate | bench | synth
#include <cstdlib>
#include <cstdio>
#include <map>
#include <thread>

#include <fmt/format.h>

#include "apps/commands.h"
#include "core/error.h"
#include "core/file.h"
#include "core/model_dir.h"
#include "core/table.h"
#include "runtime/inspect.h"
#include "model/model.h"
#include "runtime/open_model.h"
#include "model/synthetic.h"
#include "model/tokenizer.h"
#include "runtime/generate.h"
#include "kernels/bandwidth.h"
#include "kernels/cpu_features.h"
#include "kernels/cuda/device.h"

namespace ptq::cli {

namespace {

void run_inspect(const GlobalOptions& g, const std::string& path, bool json) {
  apply_global_options(g, json);
  const ModelSummary s = summarize_model(path);
  const ModelConfig& c = s.config;
  if (json) {
    nlohmann::json j = {{"model", s.path},
                        {"kind", s.kind},
                        {"architecture", c.model_type},
                        {"layers", c.n_layers},
                        {"hidden_size", c.hidden},
                        {"intermediate_size", c.ffn},
                        {"heads", c.n_heads},
                        {"kv_heads", c.n_kv_heads},
                        {"head_dim", c.head_dim},
                        {"vocab_size", c.vocab},
                        {"context_length", c.max_positions},
                        {"tie_word_embeddings", c.tie_embeddings},
                        {"parameters", s.parameters},
                        {"params_by_dtype", s.params_by_dtype},
                        {"tensors_by_dtype", s.tensors_by_dtype},
                        {"tensors", s.tensors},
                        {"file_bytes", s.file_bytes},
                        {"files", s.files},
                        {"tokenizer", s.tokenizer},
                        {"quantized", s.quantized},
                        {"bits_per_weight", s.model_bits_per_weight}};
    if (s.quantized) {
      nlohmann::json mods = nlohmann::json::array();
      for (const auto& m : s.modules)
        mods.push_back({{"module", m.module}, {"format", m.format}, {"method", m.method}, {"params", m.params},
                        {"bits_per_weight", m.bits_per_weight}, {"metrics", m.metrics},
                        {"activation", m.activation.empty() ? nlohmann::json(nullptr) : nlohmann::json(m.activation)},
                        {"folded", m.folded},
                        {"input_scale_range", m.act_scale_max > 0 ? nlohmann::json{m.act_scale_min, m.act_scale_max}
                                                                  : nlohmann::json(nullptr)}});
      j["modules"] = mods;
      j["unquantized"] = s.unquantized;
      j["modules_by_format"] = s.modules_by_format;
      j["quantized_bits_per_weight"] = s.quantized_bits_per_weight;
      if (!s.rotation.empty()) j["rotation"] = nlohmann::json::parse(s.rotation);
      if (s.allocation) j["allocation"] = s.allocation->to_json();
    }
    print_json(j);
    return;
  }
  std::string dtypes;
  for (const auto& [name, n] : s.params_by_dtype)
    dtypes += fmt::format("{}{} {} ({} tensors)", dtypes.empty() ? "" : ", ", name, human_count(n),
                          s.tensors_by_dtype.at(name));
  Table t({"field", "value"});
  t.add_row({"model", s.path});
  t.add_row({"checkpoint kind", s.kind});
  t.add_row({"architecture", c.model_type});
  t.add_row({"layers", std::to_string(c.n_layers)});
  t.add_row({"hidden / ffn", fmt::format("{} / {}", c.hidden, c.ffn)});
  t.add_row({"heads / kv heads / head_dim", fmt::format("{} / {} / {}", c.n_heads, c.n_kv_heads, c.head_dim)});
  t.add_row({"vocab", std::to_string(c.vocab)});
  t.add_row({"context", std::to_string(c.max_positions)});
  t.add_row({"tied embeddings", c.tie_embeddings ? "yes" : "no"});
  t.add_row({"parameters", fmt::format("{} ({})", s.parameters, human_count(s.parameters))});
  t.add_row({"dtypes", dtypes});
  t.add_row({"tensors / files", fmt::format("{} / {}", s.tensors, s.files.size())});
  t.add_row({"size on disk", human_bytes(s.file_bytes)});
  t.add_row({"tokenizer", s.tokenizer});
  t.add_row({"bits per weight (all tensors)", fmt::format("{:.3f}", s.model_bits_per_weight)});
  if (s.quantized) {
    std::string formats;
    for (const auto& [f, n] : s.modules_by_format) formats += fmt::format("{}{} x {}", formats.empty() ? "" : ", ", n, f);
    t.add_row({"quantized modules", formats});
    t.add_row({"bits per quantized weight", fmt::format("{:.3f}", s.quantized_bits_per_weight)});
    t.add_row({"floating-point linear modules", std::to_string(s.unquantized.size())});
  }
  std::fputs(t.render().c_str(), stdout);
  if (!s.quantized) return;
  std::printf("\n");
  bool any_act = false;
  for (const auto& q : s.modules) any_act = any_act || !q.activation.empty() || !q.folded.empty();
  if (any_act) {
    // Activation-quantized checkpoints: the scheme per module, what was folded in, the static scale range.
    Table a({"module", "format", "activation", "input scale range", "folded"});
    for (const auto& q : s.modules) {
      std::string folded;
      for (const auto& f : q.folded) folded += (folded.empty() ? "" : "; ") + f;
      a.add_row({q.module, q.format, q.activation.empty() ? "fp" : q.activation,
                 q.act_scale_max > 0 ? fmt::format("[{:.4g}, {:.4g}]", q.act_scale_min, q.act_scale_max) : "-",
                 folded.empty() ? "-" : folded});
    }
    std::fputs(a.render().c_str(), stdout);
    if (!s.rotation.empty()) std::printf("rotation: %s\n", s.rotation.c_str());
  }
  Table m({"module", "format", "method", "bits/w", "NMSE", "SNR dB", "out err", "RTN out err"});
  auto metric = [](const nlohmann::json& j, const char* key, const char* f) {
    return j.is_object() && j.contains(key) && j[key].is_number() ? fmt::format(fmt::runtime(f), j[key].get<double>())
                                                                  : std::string("-");
  };
  for (const auto& q : s.modules)
    m.add_row({q.module, q.format, q.method, fmt::format("{:.3f}", q.bits_per_weight), metric(q.metrics, "nmse", "{:.3e}"),
               metric(q.metrics, "snr_db", "{:.1f}"), metric(q.metrics, "output_error", "{:.4g}"),
               metric(q.metrics, "rtn_output_error", "{:.4g}")});
  std::fputs(m.render().c_str(), stdout);
  for (const auto& [module, reason] : s.unquantized) std::printf("%s: floating point (%s)\n", module.c_str(), reason.c_str());
  if (s.allocation) {
    const AllocationSummary& al = *s.allocation;
    std::printf("\nmixed precision: ");
    if (al.target_bytes > 0)
      std::printf("target size %s, achieved %s (%.0f bytes); ", human_bytes(al.target_bytes).c_str(),
                  human_bytes(al.size_bytes).c_str(), al.size_bytes);
    else
      std::printf("target %.3f bits/weight; ", al.target_bpw);
    std::printf("achieved %.3f bits/weight in the allocated modules\n", al.achieved_bpw);
    std::printf("sensitivity: %s%s, per %s; %s\n", al.metric.c_str(),
                al.sensitivity.empty() ? "" : (" (" + al.sensitivity + ")").c_str(), al.unit.c_str(),
                al.grid_counts().c_str());
    std::fputs(render_allocation_map(al).c_str(), stdout);
  }
}

struct GenerateArgs {
  std::string model, prompt;
  GenerateOptions opts;
  RunFlags run;
  bool json = false;
};

void run_generate(const GlobalOptions& g, const GenerateArgs& a) {
  apply_global_options(g, a.json);
  auto model_ptr = open_run_model(a.model, a.run);
  Model& model = *model_ptr;
  auto tok = load_tokenizer(a.model);
  std::vector<int32_t> prompt = tok->encode(a.prompt);
  if (!a.json) std::printf("%s", a.prompt.c_str());
  // Decode prompt + continuation and print only what follows the decoded prompt: decoding the new ids alone
  // would drop the space a SentencePiece piece carries at the start of a text ("is" + "▁not" -> "isnot"), and a
  // character spread over several byte tokens comes out whole.
  std::vector<int32_t> shown = prompt;
  const std::string prompt_text = tok->decode(prompt);
  std::string printed = prompt_text;
  auto continuation = [&](const std::vector<int32_t>& ids) {
    std::vector<int32_t> all = prompt;
    all.insert(all.end(), ids.begin(), ids.end());
    const std::string text = tok->decode(all);
    return text.compare(0, prompt_text.size(), prompt_text) == 0 ? text.substr(prompt_text.size()) : tok->decode(ids);
  };
  GenerateResult r = generate(model, prompt, a.opts, [&](int32_t id) {
    if (a.json) return;
    shown.push_back(id);
    std::string text = tok->decode(shown);
    if (text.size() > printed.size() && text.compare(0, printed.size(), printed) == 0) {
      std::fputs(text.c_str() + printed.size(), stdout);
      std::fflush(stdout);
      printed = text;
    }
  });
  const double tok_s = r.tokens.size() > 1 ? (r.tokens.size() - 1) / r.decode_seconds : 0;
  if (a.json) {
    print_json({{"model", a.model},
                {"prompt", a.prompt},
                {"prompt_ids", prompt},
                {"ids", r.tokens},
                {"text", continuation(r.tokens)},
                {"decode_tok_s", tok_s}});
  } else {
    std::printf("\n");
    std::fprintf(stderr, "[%zu prompt tokens, %zu generated, %.1f tok/s]\n", prompt.size(), r.tokens.size(), tok_s);
  }
}

struct BenchArgs {
  std::string model;
  BenchOptions opts;
  RunFlags run;
  bool json = false;
};

void run_bench(const GlobalOptions& g, const BenchArgs& a) {
  apply_global_options(g, a.json);
  auto model_ptr = open_run_model(a.model, a.run);
  Model& model = *model_ptr;
  BenchResult r = bench_model(model, a.opts);
  // The bound of the memory the weights are read from: the CPU's measured read bandwidth, or the GPU's peak.
  const ForwardRunner* device_runner = model.forward_runner();
  const double bw = device_runner != nullptr ? kernels::cuda::device_info(0).peak_bandwidth_gbs
                                             : kernels::measure_read_bandwidth();
  // Decode reads every weight once per token: the bandwidth bound is bandwidth / weight bytes.
  const double bound = r.weight_bytes > 0 ? bw * 1e9 / double(r.weight_bytes) : 0;
  nlohmann::json j = {{"model", a.model},
                      {"runner", a.run.reference ? "reference" : "packed"},
                      {"device", device_runner != nullptr ? device_runner->device() : "cpu"},
                      {"bandwidth_from", device_runner != nullptr ? "device peak" : "measured CPU read"},
                      {"isa", kernels::isa_name(kernels::best_isa())},
                      {"kv_cache", kv_cache_type_name(model.kv_cache_type())},
                      {"activations", model.int8_activations() ? "q8" : "f32"},
                      {"prompt_tokens", r.prompt_tokens},
                      {"gen_tokens", r.gen_tokens},
                      {"prefill_tok_s", r.prefill_tok_s},
                      {"decode_tok_s", r.decode_tok_s},
                      {"peak_rss_mb", r.peak_rss_mb},
                      {"weight_bytes", r.weight_bytes},
                      {"kv_cache_bytes", r.kv_cache_bytes},
                      {"read_bandwidth_gbs", bw},
                      {"decode_bound_tok_s", bound},
                      {"decode_share_of_bound", bound > 0 ? r.decode_tok_s / bound : 0.0},
                      {"threads", g.threads > 0 ? g.threads : int(std::thread::hardware_concurrency())},
                      {"repeats", a.opts.repeats}};
  // How OpenMP threads wait between parallel regions (apps/main.cpp sets it for bench unless the user did).
  const char* policy = std::getenv("OMP_WAIT_POLICY");
  const char* spin = std::getenv("GOMP_SPINCOUNT");
  j["omp_wait"] = fmt::format("OMP_WAIT_POLICY={} GOMP_SPINCOUNT={}", policy ? policy : "(unset)", spin ? spin : "(unset)");
  if (a.json) return print_json(j);
  Table t({"model", "runner", "prompt", "gen", "prefill tok/s", "decode tok/s", "peak RSS MB", "weights MB",
           "KV cache MB", "decode / bound"});
  t.add_row({a.model, j["runner"].get<std::string>(), std::to_string(r.prompt_tokens), std::to_string(r.gen_tokens),
             fmt::format("{:.1f}", r.prefill_tok_s), fmt::format("{:.1f}", r.decode_tok_s),
             fmt::format("{:.1f}", r.peak_rss_mb), fmt::format("{:.1f}", r.weight_bytes / 1e6),
             fmt::format("{:.1f} ({})", r.kv_cache_bytes / 1e6, kv_cache_type_name(model.kv_cache_type())),
             bound > 0 ? fmt::format("{:.0f}% of {:.1f} tok/s ({:.1f} GB/s)", 100 * r.decode_tok_s / bound, bound, bw)
                       : std::string("-")});
  std::fputs(t.render().c_str(), stdout);
}

struct SynthArgs {
  SyntheticSpec spec;
  std::string arch = "llama", dtype = "F32", out, tokenizer_from;
  bool force = false;
};

void run_synth(const GlobalOptions& g, const SynthArgs& a) {
  apply_global_options(g, false);
  SyntheticSpec spec = a.spec;
  std::map<std::string, Arch> arches = {{"llama", Arch::Llama}, {"mistral", Arch::Mistral}, {"qwen2", Arch::Qwen2}, {"opt", Arch::Opt}};
  if (!arches.count(a.arch)) fail_input("--arch \"{}\" is not one of {}", a.arch, supported_model_types());
  spec.arch = arches[a.arch];
  auto dt = dtype_from_name(a.dtype);
  if (!dt) fail_input("--dtype \"{}\" is not one of F32, F16, BF16", a.dtype);
  spec.dtype = *dt;
  ModelDirWriter dir(a.out, a.tokenizer_from, a.force);  // assembled aside, renamed into place when whole
  write_synthetic_model(spec, dir.tmp());
  if (!a.tokenizer_from.empty()) dir.copy_tokenizer_files(a.tokenizer_from);
  dir.commit();
  std::printf("wrote %s (%s, %lld layers, hidden %lld)\n", a.out.c_str(), a.arch.c_str(),
              static_cast<long long>(spec.n_layers), static_cast<long long>(spec.hidden));
}

}  // namespace

void add_model_commands(CLI::App& app, GlobalOptions& g) {
  {
    auto* cmd = app.add_subcommand("inspect", "Architecture, dimensions, parameter count, dtypes and size of a model");
    auto path = std::make_shared<std::string>();
    auto json = std::make_shared<bool>(false);
    cmd->add_option("MODEL", *path, "Hugging Face model directory")->required();
    cmd->add_flag("--json", *json, "Print one JSON object");
    cmd->callback([&g, path, json] { run_inspect(g, *path, *json); });
  }
  {
    auto* cmd = app.add_subcommand("generate", "Generate text from a prompt (greedy by default)");
    auto a = std::make_shared<GenerateArgs>();
    cmd->add_option("MODEL", a->model, "Hugging Face model directory")->required();
    cmd->add_option("--prompt", a->prompt, "Prompt text")->required();
    cmd->add_option("-n,--max-new-tokens", a->opts.max_new_tokens, "Tokens to generate")->default_val(64)->check(kPositive);
    cmd->add_option("--temperature", a->opts.temperature, "Sampling temperature; 0 = greedy")->default_val(0.0)->check(kNonNegative);
    cmd->add_option("--seed", a->opts.seed, "Sampling seed")->default_val(0);
    add_run_flags(cmd, a->run, "q8");
    cmd->add_flag("--json", a->json, "Print one JSON object");
    cmd->callback([&g, a] { run_generate(g, *a); });
  }
  {
    auto* cmd = app.add_subcommand("bench",
                                   "Prefill and decode throughput (tokens/s), peak memory, weight and KV cache bytes, and "
                                   "decode against the machine's read bandwidth bound");
    auto a = std::make_shared<BenchArgs>();
    cmd->add_option("MODEL", a->model, "Hugging Face model directory")->required();
    cmd->add_option("--prompt", a->opts.prompt_tokens, "Prompt tokens (random ids)")->default_val(128)->check(kPositive);
    cmd->add_option("--gen", a->opts.gen_tokens, "Tokens to decode")->default_val(128)->check(kPositive);
    cmd->add_option("--repeats", a->opts.repeats, "Runs; the best is reported")->default_val(3)->check(kPositive);
    add_run_flags(cmd, a->run, "q8");
    cmd->add_flag("--json", a->json, "Print one JSON object");
    cmd->callback([&g, a] { run_bench(g, *a); });
  }
  {
    auto* cmd = app.add_subcommand("synth", "Write a synthetic checkpoint (random weights, real names and config keys)");
    auto a = std::make_shared<SynthArgs>();
    cmd->add_option("-o,--output", a->out, "Output directory")->required();
    cmd->add_flag("--force", a->force, "Replace an existing output directory (only one ptq wrote)");
    cmd->add_option("--arch", a->arch, "llama | mistral | qwen2 | opt")->default_val("llama");
    cmd->add_option("--hidden", a->spec.hidden, "Hidden size")->default_val(64)->check(kPositive);
    cmd->add_option("--layers", a->spec.n_layers, "Decoder layers")->default_val(2)->check(kPositive);
    cmd->add_option("--heads", a->spec.n_heads, "Attention heads")->default_val(4)->check(kPositive);
    cmd->add_option("--kv-heads", a->spec.n_kv_heads, "Key/value heads (GQA)")->default_val(2)->check(kPositive);
    cmd->add_option("--ffn", a->spec.ffn, "MLP width")->default_val(128)->check(kPositive);
    cmd->add_option("--vocab", a->spec.vocab, "Vocabulary size")->default_val(512)->check(kPositive);
    cmd->add_option("--context", a->spec.max_positions, "Context length")->default_val(256)->check(kPositive);
    cmd->add_option("--dtype", a->dtype, "F32 | F16 | BF16")->default_val("F32");
    cmd->add_option("--seed", a->spec.seed, "Random seed")->default_val(0);
    cmd->add_flag("--tie", a->spec.tie_embeddings, "Tie lm_head to the embedding");
    cmd->add_option("--tokenizer-from", a->tokenizer_from, "Copy tokenizer files from this model directory");
    cmd->add_option("--shard-size", a->spec.shard_bytes,
                    "Split the weights into model-0000i-of-0000n.safetensors files of at most this size plus an "
                    "index, as Hugging Face does (e.g. 10GB; kb = 1000 bytes, kib = 1024); 0 = one file")
        ->transform(CLI::AsSizeValue(true))
        ->default_val(0);
    cmd->callback([&g, a] { run_synth(g, *a); });
  }
}

}  // namespace ptq::cli
