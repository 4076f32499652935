#include "export/targets.h"

#include <algorithm>

#include <cctype>

#include <fmt/format.h>

#include "export/compressed_tensors_export.h"
#include "core/table.h"
#include "export/gguf_export.h"
#include "quant/checkpoint.h"

namespace ptq {

namespace {

// A module of the recipe's grid whose K and N fill whole int32 words at every width (4096 = 2^12).
constexpr int64_t kProbeWidth = 4096;

ModuleQuantInfo probe_module(const Recipe& r) {
  ModuleQuantInfo m;
  m.spec = r.weights;
  m.method = r.method;
  m.act_order = r.method == "gptq" && r.gptq.act_order;
  m.in_features = m.out_features = kProbeWidth;
  if (r.act_enabled) m.act = r.activations;
  return m;
}

std::string group_text(int64_t g) { return g > 0 ? fmt::format("g{}", g) : g == kPerChannel ? "per-channel" : "per-tensor"; }

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

bool gptq_bits(int b) { return b == 2 || b == 3 || b == 4 || b == 8; }
bool pack_quantized_bits(int b) { return 32 % b == 0; }

// What stands between the recipe's result and a runtime running the architecture's standard forward.
std::string rewrite_gap(const Recipe& r) {
  if (r.rotation.enabled && r.rotation.online_down) return "online Hadamard before down_proj";
  if (!migration_method(r.migration.method).keeps_architecture)
    return fmt::format("{} adds tensors a standard model lacks", r.migration.method);
  return "";
}

ExportFit llama_cpp_fit(const Recipe& r, const ModuleQuantInfo& m) {
  ExportFit f{"llama.cpp", "", false};
  if (r.act_enabled) {
    f.how = "no: GGUF runs weight-only";
    return f;
  }
  if (const std::string gap = rewrite_gap(r); !gap.empty()) {
    f.how = "no: " + gap;
    return f;
  }
  f.loads = true;
  if (r.target_bpw > 0 && !r.gguf) {
    f.how = "re-quantized (--allow-requant); for GGUF allocate over ggml types (a weights.gguf_type recipe)";
    return f;
  }
  if (r.gguf) {
    f.how = fmt::format("GGUF {}, as quantized (--gguf-type {})", upper(r.gguf->name()), r.gguf->name());
    return f;
  }
  if (const auto t = gguf_lossless_type(m)) {
    f.how = fmt::format("GGUF {}, lossless", upper(ggml_type_name(*t)));
    return f;
  }
  if (const auto t = gguf_type_at_group_32(m)) {
    f.how = fmt::format("with --group-size 32{}: GGUF {}, lossless", m.act_order ? ", no act-order" : "",
                        upper(ggml_type_name(*t)));
    return f;
  }
  f.how = "re-quantized (--allow-requant)";
  return f;
}

ExportFit vllm_fit(const Recipe& r, const ModuleQuantInfo& m) {
  ExportFit f{"vLLM / transformers", "", false};
  if (const std::string gap = rewrite_gap(r); !gap.empty()) {
    f.how = "no: " + gap;
    return f;
  }
  if (r.gguf) {
    f.how = "no: GGUF blocks (K-quant scales and mins) have no GPTQ / compressed-tensors form";
    return f;
  }
  if (m.act) {
    const std::string gap = int_quantized_activation_gap(m);
    f.loads = gap.empty();
    f.how = f.loads ? "compressed-tensors int-quantized" : "no: " + gap;
    return f;
  }
  // Every width the recipe can give a module: its grid, or each allocation candidate.
  std::vector<int> widths{m.spec.bits};
  if (r.target_bpw > 0) {
    widths.clear();
    for (const auto& c : r.candidates) widths.push_back(weight_grid(c, "allocation.candidates").bits);
    if (widths.empty()) widths = {2, 3, 4, 5, 6, 8};
  }
  const bool gptq = std::all_of(widths.begin(), widths.end(), gptq_bits);
  const bool packed = std::all_of(widths.begin(), widths.end(), pack_quantized_bits);
  std::vector<std::string> ways;
  if (gptq) ways.push_back(r.target_bpw > 0 ? "GPTQ (dynamic per-module bits)" : m.spec.sym ? "GPTQ" : "GPTQ v2");
  if (packed) ways.push_back("compressed-tensors");
  f.loads = !ways.empty();
  if (!f.loads) {
    f.how = fmt::format("no: {}-bit weights (GPTQ packs 2/3/4/8, compressed-tensors 2/4/8)", m.spec.bits);
    return f;
  }
  f.how = join(ways);
  return f;
}

}  // namespace

std::optional<GgmlType> gguf_type_at_group_32(const ModuleQuantInfo& m) {
  ModuleQuantInfo g32 = m;
  g32.spec.group_size = 32;
  g32.act_order = false;
  return gguf_lossless_type(g32);
}

std::vector<ExportFit> export_fits(const Recipe& r) {
  const ModuleQuantInfo m = probe_module(r);
  std::vector<ExportFit> fits{llama_cpp_fit(r, m), vllm_fit(r, m)};
  // The runner runs every checkpoint ptq writes; weight-only ones on the packed kernels.
  fits.push_back({"ptq runner",
                  r.act_enabled ? "yes (activation-quantized modules in fp64 reference)"
                  : r.gguf      ? "yes (GGUF blocks decoded to fp32)"
                                : "yes, packed",
                  true});
  return fits;
}

std::string recipe_needs(const Recipe& r) {
  if (weight_algorithm(r.method).needs_hessian) return "calibration text (or --stats)";
  return r.activation_path() ? "calibration text" : "nothing";
}

std::string recipe_grid(const Recipe& r) {
  if (r.gguf) return fmt::format("GGUF {} blocks", upper(r.gguf->name()));
  if (r.target_bpw > 0)
    return fmt::format("mixed, {:g} bits/weight from {}", r.target_bpw,
                       r.candidates.empty() ? std::string("2-8 bits") : join(r.candidates));
  std::string s = fmt::format("W{} {} {}", r.weights.bits, group_text(r.weights.group_size), r.weights.sym ? "sym" : "asym");
  if (r.method == "gptq" && r.gptq.act_order) s += " act-order";
  if (r.act_enabled) s += ", A" + r.activations.describe().substr(1);
  if (r.migration.method != "none") s += ", " + r.migration.method;
  if (r.rotation.enabled) s += ", Hadamard";
  return s;
}

}  // namespace ptq
