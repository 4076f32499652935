#include "export/compressed_tensors_export.h"

#include <set>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "core/error.h"
#include "model/config.h"

namespace ptq {

using nlohmann::json;

namespace {

json weights_scheme(const ModuleQuantInfo& m) {
  const bool group = m.spec.group_size > 0;
  return {{"num_bits", m.spec.bits},
          {"type", "int"},
          {"symmetric", m.spec.sym},
          {"strategy", group ? "group" : "channel"},
          {"group_size", group ? json(m.spec.group_size) : json()},
          {"dynamic", false},
          {"actorder", m.act_order ? json("group") : json()}};
}

}  // namespace

PackedExportReport export_compressed_tensors(const std::string& model_dir, const std::string& out_dir,
                                             const PackedExportOptions& opts) {
  if (opts.float_dtype == DType::BF16)
    fail_input("compressed-tensors export: weight_scale is written in the float dtype, and BF16 would round ptq's "
               "fp16 scales; use --float-dtype F16 or F32");
  const at::ScalarType scale_st = opts.float_dtype == DType::F32 ? at::kFloat : at::kHalf;
  PackedFormat f;
  f.name = "compressed-tensors";
  f.unpackable = [](const ModuleQuantInfo& info) -> std::string {
    const int b = info.spec.bits;
    if (32 % b != 0)
      return fmt::format("{}-bit codes would straddle int32 words; pack-quantized holds 2, 4 or 8 bits", b);
    if ((info.in_features * b) % 32 != 0) return fmt::format("in_features*{} must be a multiple of 32", b);
    if (!info.spec.sym && (info.out_features * b) % 32 != 0)
      return fmt::format("out_features*{} must be a multiple of 32 to pack the zero points", b);
    return "";
  };
  f.declare = [&opts](const std::string& m, const ModuleQuantInfo& info) {
    const int b = info.spec.bits;
    const int64_t N = info.out_features, K = info.in_features, G = group_count(info.spec, K);
    std::vector<SafetensorsStreamWriter::Entry> e = {{m + ".weight_packed", DType::I32, {N, K * b / 32}},
                                                     {m + ".weight_scale", opts.float_dtype, {N, G}},
                                                     {m + ".weight_shape", DType::I64, {2}}};
    if (!info.spec.sym) e.push_back({m + ".weight_zero_point", DType::I32, {N * b / 32, G}});
    if (info.act_order) e.push_back({m + ".weight_g_idx", DType::I32, {K}});
    return e;
  };
  f.pack = [scale_st](const std::string& m, const ModuleQuantInfo& info, const QuantizedWeight& qw) {
    const int b = qw.spec.bits;
    std::vector<std::pair<std::string, at::Tensor>> t;
    t.emplace_back(m + ".weight_packed", pack_bits(qw.q, b, m + ".weight_packed"));
    t.emplace_back(m + ".weight_scale", qw.scales.to(scale_st));
    t.emplace_back(m + ".weight_shape", at::tensor({info.out_features, info.in_features}, at::kLong));
    if (!info.spec.sym)
      t.emplace_back(m + ".weight_zero_point",
                     pack_bits(qw.zeros.t().contiguous(), b, m + ".weight_zero_point").t().contiguous());
    else if (!(qw.zeros == (1 << (b - 1))).all().item<bool>())
      fail_input("module \"{}\" is declared symmetric but has a zero other than {}", m, 1 << (b - 1));
    if (info.act_order) t.emplace_back(m + ".weight_g_idx", qw.g_idx.to(at::kInt));
    return t;
  };
  f.config = [](const PackedExportInput& in, const PackedExportReport& rep) {
    std::map<std::string, std::vector<std::string>> by_scheme;  // scheme JSON -> modules
    for (const auto& m : rep.modules) by_scheme[weights_scheme(in.qc.modules.at(m)).dump()].push_back(m);
    std::set<std::string> ignore;
    const ModelConfig cfg = load_model_config(in.dir);
    if (!cfg.tie_embeddings) ignore.insert(cfg.traits().lm_head);
    json groups = json::object();
    int i = 0;
    for (const auto& [scheme, mods] : by_scheme) {
      groups[fmt::format("group_{}", i++)] = {
          {"targets", by_scheme.size() == 1 ? json::array({"Linear"}) : json(mods)},
          {"weights", json::parse(scheme)},
          {"input_activations", nullptr},
          {"output_activations", nullptr},
          {"format", "pack-quantized"}};
    }
    if (by_scheme.size() == 1) {  // "Linear" targets every linear module: list every decoder linear not packed
      const ArchTraits& t = cfg.traits();
      const std::set<std::string> packed(rep.modules.begin(), rep.modules.end());
      for (int64_t l = 0; l < cfg.n_layers; ++l)
        for (const char* mod : {t.q_proj, t.k_proj, t.v_proj, t.o_proj, t.gate_proj, t.up_proj, t.down_proj}) {
          if (!*mod) continue;
          const std::string path = cfg.layer_module(l, mod);
          if (!packed.count(path)) ignore.insert(path);
        }
    }
    return json{{"quant_method", "compressed-tensors"},
                {"format", "pack-quantized"},
                {"quantization_status", "compressed"},
                {"config_groups", groups},
                {"ignore", std::vector<std::string>(ignore.begin(), ignore.end())},
                {"kv_cache_scheme", nullptr}};
  };
  return export_packed(model_dir, out_dir, f, opts);
}

}  // namespace ptq
