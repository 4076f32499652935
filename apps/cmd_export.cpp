// ptq export (GGUF, GPTQ v1/v2, compressed-tensors, llama.cpp imatrix), ptq gguf-to-hf (the dequantized weights llama.cpp reads)
// and ptq logits (raw logits of a token sequence, for comparison with other runtimes).
#include <cstdio>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "apps/commands.h"
#include "core/error.h"
#include "core/table.h"
#include "export/gguf_export.h"
#include "export/compressed_tensors_export.h"
#include "export/gptq_export.h"
#include "export/imatrix_export.h"
#include "runtime/open_model.h"

namespace ptq::cli {

namespace {

struct ExportArgs {
  std::string model, format, out, gguf_type, stats, float_dtype = "F16";
  bool allow_requant = false, json = false, force = false, keep_unpackable_float = false;
};

// gptq, gptq_v2, compressed-tensors: directories of packed modules.
void run_export_packed(const ExportArgs& a) {
  PackedExportOptions opts;
  opts.format = a.format == "gptq" ? GptqFormat::V1 : GptqFormat::V2;
  const auto dt = dtype_from_name(a.float_dtype);
  if (!dt || (*dt != DType::F16 && *dt != DType::BF16 && *dt != DType::F32))
    fail_input("--float-dtype {} is not one of F16, BF16, F32", a.float_dtype);
  opts.float_dtype = *dt;
  opts.force = a.force;
  opts.keep_unpackable_float = a.keep_unpackable_float;
  const PackedExportReport rep = a.format == "compressed-tensors" ? export_compressed_tensors(a.model, a.out, opts)
                                                                   : export_gptq(a.model, a.out, opts);
  if (a.json) {
    print_json({{"output", rep.output}, {"format", rep.format}, {"bytes", rep.bytes}, {"modules", rep.modules},
                {"kept_float", rep.kept_float}, {"bits_per_weight", rep.bits_per_weight}, {"notes", rep.notes},
                {"quantization_config", rep.quantization_config}});
    return;
  }
  for (const auto& [m, why] : rep.kept_float)
    std::fprintf(stderr, "note: %s stays %s: %s\n", m.c_str(), a.float_dtype.c_str(), why.c_str());
  for (const auto& n : rep.notes) std::fprintf(stderr, "note: %s\n", n.c_str());
  const std::string layout = rep.quantization_config.value("format", "");
  std::printf("wrote %s (%s%s%s): %zu modules packed, %s, %.3f bits/weight over the packed modules\n",
              rep.output.c_str(), rep.format.c_str(), layout.empty() ? "" : " ", layout.c_str(), rep.modules.size(),
              human_bytes(rep.bytes).c_str(), rep.bits_per_weight);
}

// imatrix: the calibration Σx² of a stats file as llama.cpp's importance matrix GGUF.
void run_export_imatrix(const ExportArgs& a) {
  if (!a.gguf_type.empty() || !a.stats.empty() || a.allow_requant || a.keep_unpackable_float)
    fail_input("--format imatrix exports statistics, not weights: --gguf-type, --stats, --allow-requant and "
               "--keep-unpackable-float do not apply");
  const ImatrixExportReport rep = export_imatrix(a.model, a.out, a.force);
  if (a.json) {
    print_json({{"output", rep.output}, {"format", "imatrix"}, {"bytes", rep.bytes}, {"entries", rep.entries},
                {"chunk_count", rep.chunk_count}, {"chunk_size", rep.chunk_size}, {"datasets", rep.datasets}});
    return;
  }
  std::printf("wrote %s (llama.cpp imatrix): %lld weight entries, %lld chunks of %lld tokens, %s\n", rep.output.c_str(),
              static_cast<long long>(rep.entries), static_cast<long long>(rep.chunk_count),
              static_cast<long long>(rep.chunk_size), human_bytes(rep.bytes).c_str());
}

void run_export(const GlobalOptions& g, const ExportArgs& a) {
  apply_global_options(g, a.json);
  if (a.format != "gguf" && (!a.gguf_type.empty() || !a.stats.empty()) && a.format != "imatrix")
    fail_input("--gguf-type and --stats apply to --format gguf, not {}", a.format);
  if (a.format == "gptq" || a.format == "gptq_v2" || a.format == "compressed-tensors") return run_export_packed(a);
  if (a.format == "imatrix") return run_export_imatrix(a);
  if (a.format != "gguf")
    fail_input("--format {} is not one of gguf, gptq, gptq_v2, compressed-tensors, imatrix", a.format);
  GgufExportOptions opts;
  if (!a.gguf_type.empty()) parse_gguf_type(a.gguf_type, opts);
  opts.stats = a.stats;
  opts.allow_requant = a.allow_requant;
  opts.force = a.force;
  const GgufExportReport rep = export_gguf(a.model, a.out, opts);
  if (a.json) {
    nlohmann::json tensors = nlohmann::json::array();
    for (const auto& t : rep.tensors)
      tensors.push_back({{"name", t.gguf_name}, {"source", t.source_name}, {"type", ggml_type_name(t.type)},
                         {"dims", t.dims}, {"how", t.how}});
    print_json({{"output", rep.output}, {"bytes", rep.bytes}, {"parameters", rep.parameters},
                {"bits_per_weight", rep.bits_per_weight}, {"tensors", tensors}, {"kept_float", rep.kept_float},
                {"fallback", rep.fallback}, {"imatrix", rep.imatrix}, {"requant_nmse", rep.requant_nmse},
                {"mapped_max_abs_error", rep.mapped_max_abs_error}});
    return;
  }
  for (const auto& [name, why] : rep.kept_float) std::fprintf(stderr, "note: %s stays F32: %s\n", name.c_str(), why.c_str());
  std::map<std::string, std::vector<std::string>> fallbacks;  // one note per reason: llama.cpp's fallback by width
  for (const auto& [name, why] : rep.fallback) fallbacks[why].push_back(name);
  for (const auto& [why, names] : fallbacks)
    std::fprintf(stderr, "note: %zu tensor(s) (%s): %s\n", names.size(), join_module_list(names, 3).c_str(), why.c_str());
  for (const auto& [mod, nmse] : rep.requant_nmse)
    std::fprintf(stderr, "warning: %s re-quantized; NMSE added vs the checkpoint's weights %.3e\n", mod.c_str(), nmse);
  std::map<std::string, int> by_type;
  for (const auto& t : rep.tensors) by_type[ggml_type_name(t.type)]++;
  std::string types;
  for (const auto& [t, n] : by_type) types += fmt::format("{}{} {}", types.empty() ? "" : ", ", n, t);
  std::printf("wrote %s: %zu tensors (%s), %s, %.3f bits/weight%s\n", rep.output.c_str(), rep.tensors.size(),
              types.c_str(), human_bytes(rep.bytes).c_str(), rep.bits_per_weight,
              rep.imatrix ? ", importance-weighted rounding" : "");
}

std::vector<int64_t> parse_ids(const std::string& s) {
  std::vector<int64_t> ids;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = s.find_first_of(", ", i);
    if (j == std::string::npos) j = s.size();
    if (j > i) {
      try {
        size_t used = 0;
        ids.push_back(std::stoll(s.substr(i, j - i), &used));
        if (used != j - i) throw std::invalid_argument("trailing");
      } catch (const std::exception&) {
        fail_input("--ids: \"{}\" is not an integer", s.substr(i, j - i));
      }
    }
    i = j + 1;
  }
  if (ids.empty()) fail_input("--ids is empty");
  return ids;
}

}  // namespace

void add_export_commands(CLI::App& app, GlobalOptions& g) {
  auto* cmd = app.add_subcommand(
      "export",
      "Export a model (FP or quantized) for another runtime: --format gguf|gptq|gptq_v2|compressed-tensors; or a "
      "calibration stats file as llama.cpp's importance matrix: --format imatrix. Activation-quantized checkpoints "
      "(W8A8: 8-bit weights, per-token dynamic or per-tensor static 8-bit activations) export only as "
      "compressed-tensors int-quantized. Every format refuses, with the list, what a standard Llama cannot run: "
      "RMSNorm biases (OutlierTune), norm index tensors / split channels (MergeQuant), linear biases the "
      "architecture lacks, an online Hadamard rotation (--hadamard), and activation schemes the format does not "
      "carry (any, for gguf/gptq/gptq_v2; per-channel, non-8-bit or clipped-dynamic ones for compressed-tensors)");
  auto a = std::make_shared<ExportArgs>();
  cmd->add_option("MODEL", a->model,
                  "Hugging Face model directory, ptq checkpoint, or GPTQ (v1/v2) / compressed-tensors checkpoint; "
                  "for --format imatrix the stats file of `ptq calibrate`")
      ->required();
  cmd->add_option("--format", a->format,
                  "Output format: gguf (llama.cpp; quantized g32 grids of any quantized MODEL map to Q4_0/Q4_1/Q8_0), "
                  "gptq (v1 layout), gptq_v2, compressed-tensors (pack-quantized for weight-only checkpoints, "
                  "int-quantized with input_activations + input_scale for W8A8 ones; these three need a quantized "
                  "MODEL), "
                  "imatrix (llama.cpp importance matrix GGUF from the calibration Σx², for llama-quantize --imatrix)")
      ->required();
  cmd->add_option("-o,--output", a->out,
                  "Output file (gguf, imatrix) or directory (gptq, gptq_v2, compressed-tensors)")
      ->required();
  std::string mixes;
  for (const auto& m : gguf_mixes())
    mixes += fmt::format("; {} (llama-quantize {}): {}", m.name, m.llama_name, m.rule);
  cmd->add_option("--gguf-type", a->gguf_type,
                  "gguf: type of the FP tensors, as llama-quantize writes it from the F32 GGUF, byte for byte. f32 "
                  "(default), f16, bf16: every tensor but the norms. A ggml block type (q8_0, q4_0, q4_1, q5_0, q5_1, "
                  "q2_k, q3_k, q4_k, q5_k, q6_k) is llama-quantize --pure: every 2-D weight (linear modules, "
                  "token_embd, output) of that type. A K-quant mix is llama-quantize's ftype of that name (names that "
                  "are also ggml types get _mix), each with output q6_k: " + mixes.substr(2) +
                      ". Rows not a multiple of a type's block fall back as in llama.cpp (q2_k/q3_k -> q4_0, q4_k -> "
                      "q5_0, q5_k -> q5_1, q6_k -> q8_0, f16 when not a multiple of 32)");
  cmd->add_option("--stats", a->stats,
                  "gguf: the `ptq calibrate` stats file of MODEL: block types use ggml's importance-weighted rounding "
                  "with Σx²/tokens per input column (what llama-quantize --imatrix does with `--format imatrix`'s "
                  "file)");
  cmd->add_flag("--allow-requant", a->allow_requant,
                "gguf: re-quantize modules whose grid has no ggml equivalent (reports the error added; without it "
                "they are refused with the list)");
  cmd->add_option("--float-dtype", a->float_dtype,
                  "gptq/compressed-tensors: dtype of the tensors not packed: F16 (default), BF16, F32 (keeps the F32 "
                  "tensors a transform rewrote, e.g. folded norms, bit for bit; a note lists those F16 rounds)");
  cmd->add_flag("--keep-unpackable-float", a->keep_unpackable_float,
                "gptq/compressed-tensors: store modules whose width does not fill int32 words as float weights "
                "(default: refused with the list)");
  cmd->add_flag("--force", a->force, "Replace an existing output file or directory (never the input)");
  cmd->add_flag("--json", a->json, "Print one JSON object");
  cmd->callback([&g, a] { run_export(g, *a); });

  auto* back = app.add_subcommand("gguf-to-hf", "Decode a llama GGUF into an FP32 Hugging Face directory (the exact "
                                                "weights llama.cpp loads), config/tokenizer from CONFIG_DIR");
  auto b = std::make_shared<std::array<std::string, 3>>();
  back->add_option("GGUF", (*b)[0], "GGUF file")->required();
  back->add_option("--config", (*b)[1], "Directory with config.json and tokenizer files")->required();
  back->add_option("-o,--output", (*b)[2], "Output directory (must not exist)")->required();
  back->callback([&g, b] {
    apply_global_options(g, false);
    gguf_to_hf_f32((*b)[0], (*b)[1], (*b)[2]);
  });

  auto* lg = app.add_subcommand("logits", "Raw logits of one token sequence (JSON: {\"ids\", \"logits\": [T][V]})");
  auto l = std::make_shared<std::pair<std::string, std::string>>();
  auto lrun = std::make_shared<RunFlags>();
  lg->add_option("MODEL", l->first, "Model directory")->required();
  lg->add_option("--ids", l->second, "Token ids, comma separated")->required();
  add_run_flags(lg, *lrun, "f32");
  lg->callback([&g, l, lrun] {
    apply_global_options(g, true);
    const std::vector<int64_t> ids = parse_ids(l->second);
    auto model = open_run_model(l->first, *lrun);
    for (int64_t id : ids)
      if (id < 0 || id >= model->config().vocab)
        fail_input("--ids: token {} is outside the vocabulary [0, {})", id, model->config().vocab);
    at::Tensor t = at::from_blob(const_cast<int64_t*>(ids.data()), {1, int64_t(ids.size())}, at::kLong).clone();
    at::Tensor logits = model->forward(t).squeeze(0).to(at::kFloat).contiguous();
    nlohmann::json rows = nlohmann::json::array();
    const float* p = logits.data_ptr<float>();
    for (int64_t i = 0; i < logits.size(0); ++i)
      rows.push_back(std::vector<float>(p + i * logits.size(1), p + (i + 1) * logits.size(1)));
    print_json({{"model", l->first}, {"ids", ids}, {"logits", rows}});
  });
}

}  // namespace ptq::cli
