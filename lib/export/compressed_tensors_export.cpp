#include "export/compressed_tensors_export.h"

#include <set>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "core/error.h"
#include "model/config.h"

namespace ptq {

using nlohmann::json;

namespace {

constexpr const char* kPackQuantized = "pack-quantized";
constexpr const char* kIntQuantized = "int-quantized";

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

// QuantizationArgs of the input activations: static per-tensor or dynamic per-token (the only two
// int_quantized_activation_gap lets through); compressed-tensors gives static schemes the "minmax" observer and
// dynamic ones none.
json input_scheme(const ActQuantSpec& a) {
  const bool dynamic = !a.is_static();
  return {{"num_bits", a.bits},
          {"type", "int"},
          {"symmetric", a.sym},
          {"strategy", dynamic ? "token" : "tensor"},
          {"group_size", json()},
          {"dynamic", dynamic},
          {"actorder", json()},
          {"observer", dynamic ? json() : json("minmax")}};
}

// ptq's unsigned 8-bit codes / zeros (0..255) as compressed-tensors' signed int8 (value - 128).
at::Tensor signed_int8(const at::Tensor& unsigned_values, const std::string& what) {
  const at::Tensor v = unsigned_values.to(at::kInt);
  if (v.numel() > 0 && (v.min().item<int>() < 0 || v.max().item<int>() > 255))
    fail_input("{}: values outside 0..255 cannot be stored as int8 - 128", what);
  return (v - 128).to(at::kChar).contiguous();
}

// Remarks for vLLM, whose int8 W8A8 path is narrower than the format: symmetric per-channel weights only, and q/k/v
// and gate/up fused into one GEMM with one activation scheme and one input scale.
std::vector<std::string> vllm_notes(const PackedExportInput& in) {
  std::vector<std::string> notes, narrow, unfused;
  for (const auto& [m, info] : in.qc.modules)
    if (info.act && (info.spec.group_size > 0 || !info.spec.sym || info.act_order))
      narrow.push_back(fmt::format("{} ({})", m, info.format));
  if (!narrow.empty())
    notes.push_back("vLLM's int8 W8A8 kernels take symmetric per-channel weights; these group-wise / asymmetric / "
                    "act-ordered ones load in transformers (compressed-tensors decompresses them), vLLM refuses "
                    "them: " + join_module_list(narrow, 6));
  const ModelConfig cfg = load_model_config(in.dir);
  const ArchTraits& t = cfg.traits();
  for (int64_t l = 0; l < cfg.n_layers; ++l)
    for (const std::vector<const char*>& fused : {std::vector<const char*>{t.q_proj, t.k_proj, t.v_proj},
                                                  std::vector<const char*>{t.gate_proj, t.up_proj}}) {
      std::vector<std::string> mods;
      for (const char* f : fused)
        if (*f) mods.push_back(cfg.layer_module(l, f));
      const auto first = in.qc.modules.find(mods[0]);
      if (first == in.qc.modules.end() || !first->second.act) continue;
      const ActQuantParams p0 = in.load_act(mods[0]);
      for (size_t i = 1; i < mods.size(); ++i) {
        const auto it = in.qc.modules.find(mods[i]);
        if (it == in.qc.modules.end() || !it->second.act) continue;
        bool same = it->second.act->describe() == first->second.act->describe();
        if (same && first->second.act->is_static()) {
          const ActQuantParams p = in.load_act(mods[i]);
          same = at::equal(p.scale, p0.scale) && at::equal(p.zero, p0.zero);
        }
        if (!same) unfused.push_back(fmt::format("{} vs {}", mods[i], mods[0]));
      }
    }
  if (!unfused.empty())
    notes.push_back("vLLM fuses q/k/v and gate/up into one GEMM with one activation scheme and one input scale, but "
                    "these fused modules differ in scheme or static scale (vLLM refuses differing schemes and keeps "
                    "one scale for the fused GEMM): " + join_module_list(unfused, 6));
  return notes;
}

}  // namespace

std::string int_quantized_activation_gap(const ModuleQuantInfo& info) {
  if (!info.act) return "";
  const ActQuantSpec& a = *info.act;
  std::vector<std::string> why;
  if (a.bits != 8) why.push_back(fmt::format("int-quantized holds 8-bit activations, not {}-bit", a.bits));
  if (a.granularity == ActGranularity::PerChannel)
    why.push_back("per-channel static input scales have no compressed-tensors/vLLM form (strategy tensor or token)");
  if (!a.is_static() && a.clip != 1.0)
    why.push_back(fmt::format("per-token scales clipped to {} x absmax, where runtimes use the plain absmax", a.clip));
  if (info.spec.bits != 8)
    why.push_back(fmt::format("{}-bit weights, where int-quantized holds 8-bit ones", info.spec.bits));
  std::string s;
  for (const auto& w : why) s += (s.empty() ? "" : "; ") + w;
  return s;
}

PackedExportReport export_compressed_tensors(const std::string& model_dir, const std::string& out_dir,
                                             const PackedExportOptions& opts) {
  if (opts.float_dtype == DType::BF16)
    fail_input("compressed-tensors export: weight_scale is written in the float dtype, and BF16 would round ptq's "
               "fp16 scales; use --float-dtype F16 or F32");
  const at::ScalarType scale_st = opts.float_dtype == DType::F32 ? at::kFloat : at::kHalf;
  PackedFormat f;
  f.name = "compressed-tensors";
  // int-quantized when the modules carry activation schemes (check: all of them), pack-quantized otherwise.
  f.activation_gap = int_quantized_activation_gap;
  f.check = [](const PackedExportInput& in) {
    std::vector<std::string> with, without;
    for (const auto& [m, info] : in.qc.modules) (info.act ? with : without).push_back(m);
    if (!with.empty() && !without.empty())
      fail_input("{}: {} module(s) carry an activation scheme (compressed-tensors int-quantized) and {} do not: {}; "
                 "an int-quantized checkpoint gives every quantized module its input_activations (vLLM reads int "
                 "weights without them only as float weights): quantize every module with activations, or none",
                 in.dir, with.size(), without.size(), join_module_list(without));
  };
  f.notes = vllm_notes;
  f.unpackable = [](const ModuleQuantInfo& info) -> std::string {
    if (info.act) return "";  // int-quantized: one int8 per weight (8 bits checked by activation_gap)
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
    std::vector<SafetensorsStreamWriter::Entry> e;
    if (info.act) {
      e = {{m + ".weight", DType::I8, {N, K}}, {m + ".weight_scale", opts.float_dtype, {N, G}}};
      if (!info.spec.sym) e.push_back({m + ".weight_zero_point", DType::I8, {N, G}});
      if (info.act_order) e.push_back({m + ".weight_g_idx", DType::I32, {K}});
      if (info.act->is_static()) {
        e.push_back({m + ".input_scale", DType::F32, {1}});
        if (!info.act->sym) e.push_back({m + ".input_zero_point", DType::I8, {1}});
      }
      return e;
    }
    e = {{m + ".weight_packed", DType::I32, {N, K * b / 32}},
         {m + ".weight_scale", opts.float_dtype, {N, G}},
         {m + ".weight_shape", DType::I64, {2}}};
    if (!info.spec.sym) e.push_back({m + ".weight_zero_point", DType::I32, {N * b / 32, G}});
    if (info.act_order) e.push_back({m + ".weight_g_idx", DType::I32, {K}});
    return e;
  };
  f.pack = [scale_st](const std::string& m, const ModuleQuantInfo& info, const QuantizedWeight& qw,
                      const ActQuantParams& act) {
    const int b = qw.spec.bits;
    std::vector<std::pair<std::string, at::Tensor>> t;
    if (qw.spec.sym && !(qw.zeros == (1 << (b - 1))).all().item<bool>())
      fail_input("module \"{}\" is declared symmetric but has a zero other than {}", m, 1 << (b - 1));
    if (info.act) {
      t.emplace_back(m + ".weight", signed_int8(qw.q, m + ".weight"));
      t.emplace_back(m + ".weight_scale", qw.scales.to(scale_st));
      if (!qw.spec.sym) t.emplace_back(m + ".weight_zero_point", signed_int8(qw.zeros, m + ".weight_zero_point"));
      if (info.act_order) t.emplace_back(m + ".weight_g_idx", qw.g_idx.to(at::kInt));
      if (info.act->is_static()) {
        if (!act.scale.defined() || act.scale.numel() != 1)
          fail_input("module \"{}\": a per-tensor static activation scheme needs one input scale", m);
        t.emplace_back(m + ".input_scale", act.scale.to(at::kFloat).reshape({1}));
        if (!info.act->sym) {
          const at::Tensor z = act.zero.to(at::kDouble).reshape({1});
          if (!at::equal(z, z.round())) fail_input("module \"{}\": input zero point {} is not an integer", m,
                                                   z.item<double>());
          t.emplace_back(m + ".input_zero_point", signed_int8(z, m + ".input_zero_point"));
        }
      }
      return t;
    }
    t.emplace_back(m + ".weight_packed", pack_bits(qw.q, b, m + ".weight_packed"));
    t.emplace_back(m + ".weight_scale", qw.scales.to(scale_st));
    t.emplace_back(m + ".weight_shape", at::tensor({info.out_features, info.in_features}, at::kLong));
    if (!info.spec.sym)
      t.emplace_back(m + ".weight_zero_point",
                     pack_bits(qw.zeros.t().contiguous(), b, m + ".weight_zero_point").t().contiguous());
    if (info.act_order) t.emplace_back(m + ".weight_g_idx", qw.g_idx.to(at::kInt));
    return t;
  };
  f.config = [](const PackedExportInput& in, const PackedExportReport& rep) {
    bool int_quantized = false;
    for (const auto& [m, info] : in.qc.modules) int_quantized = int_quantized || info.act.has_value();
    const char* format = int_quantized ? kIntQuantized : kPackQuantized;
    std::map<std::string, std::vector<std::string>> by_scheme;  // {weights, input_activations} JSON -> modules
    for (const auto& m : rep.modules) {
      const ModuleQuantInfo& info = in.qc.modules.at(m);
      const json scheme = {{"weights", weights_scheme(info)},
                           {"input_activations", info.act ? input_scheme(*info.act) : json()}};
      by_scheme[scheme.dump()].push_back(m);
    }
    std::set<std::string> ignore;
    const ModelConfig cfg = load_model_config(in.dir);
    if (!cfg.tie_embeddings) ignore.insert(cfg.traits().lm_head);
    json groups = json::object();
    int i = 0;
    for (const auto& [scheme, mods] : by_scheme) {
      const json s = json::parse(scheme);
      groups[fmt::format("group_{}", i++)] = {
          {"targets", by_scheme.size() == 1 ? json::array({"Linear"}) : json(mods)},
          {"weights", s["weights"]},
          {"input_activations", s["input_activations"]},
          {"output_activations", nullptr},
          {"format", format}};
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
                {"format", format},
                {"quantization_status", "compressed"},
                {"config_groups", groups},
                {"ignore", std::vector<std::string>(ignore.begin(), ignore.end())},
                {"kv_cache_scheme", nullptr}};
  };
  return export_packed(model_dir, out_dir, f, opts);
}

}  // namespace ptq
