#include "export/gptq_export.h"

#include <cstring>
#include <set>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "core/error.h"
#include "core/progress.h"
#include "core/file.h"
#include "core/table.h"
#include "core/model_dir.h"
#include "export/compressed_tensors_export.h"
#include "model/config.h"
#include "model/model.h"
#include "checkpoint/checkpoint.h"

namespace ptq {

using nlohmann::json;

namespace {

at::ScalarType scalar_type(DType d) {
  switch (d) {
    case DType::F16: return at::kHalf;
    case DType::BF16: return at::kBFloat16;
    case DType::F32: return at::kFloat;
    default: fail_input("export: float tensors can be written as F16, BF16 or F32, not {}", dtype_name(d));
  }
}

const char* torch_dtype_name(DType d) {
  return d == DType::F16 ? "float16" : d == DType::BF16 ? "bfloat16" : "float32";
}

bool is_float(DType d) { return d == DType::F32 || d == DType::F16 || d == DType::BF16; }

bool has_suffix(const std::string& s, const char* suf) {
  const size_t n = std::strlen(suf);
  return s.size() > n && s.compare(s.size() - n, n, suf) == 0;
}

// Tensors a packed module of the input occupies (ptq and GPTQ names, static activation parameters;
// compressed-tensors names, the int8 ".weight" of int-quantized included).
const char* const kInputPackedSuffixes[] = {".qweight",       ".qzeros",           ".scales",
                                            ".g_idx",         ".input_scale",      ".input_zero_point",
                                            ".weight_packed", ".weight_scale",     ".weight_zero_point",
                                            ".weight_shape",  ".weight_g_idx",     ".weight"};

// The [out, in] config.json gives linear module `id` (what a standard runtime allocates).
std::pair<int64_t, int64_t> expected_shape(const ModelConfig& cfg, LinearId id) {
  switch (id) {
    case LinearId::Q: return {cfg.n_heads * cfg.head_dim, cfg.hidden};
    case LinearId::K:
    case LinearId::V: return {cfg.n_kv_heads * cfg.head_dim, cfg.hidden};
    case LinearId::O: return {cfg.hidden, cfg.n_heads * cfg.head_dim};
    case LinearId::Down: return {cfg.hidden, cfg.ffn};
    default: return {cfg.ffn, cfg.hidden};  // gate, up
  }
}

bool has_bias_in_architecture(const ModelConfig& cfg, LinearId id) {
  switch (id) {
    case LinearId::Q:
    case LinearId::K:
    case LinearId::V: return cfg.qkv_bias;
    case LinearId::O: return cfg.o_bias;
    default: return cfg.mlp_bias;
  }
}

}  // namespace

std::vector<std::string> nonstandard_features(const std::string& model_dir, const TensorArchive& archive,
                                              const CheckpointQuantConfig& qc, const ActivationGap& activation_gap) {
  const ModelConfig cfg = load_model_config(model_dir);
  const ArchTraits& t = cfg.traits();
  // kind -> names, in the order the kinds are first met
  std::vector<std::pair<std::string, std::vector<std::string>>> gaps;
  auto add = [&gaps](const std::string& kind, const std::string& name) {
    for (auto& [k, names] : gaps)
      if (k == kind) return names.push_back(name);
    gaps.push_back({kind, {name}});
  };

  std::vector<std::string> norms;  // norm paths, without ".weight"
  if (cfg.final_norm && *t.final_norm) norms.push_back(t.final_norm);
  for (int64_t l = 0; l < cfg.n_layers; ++l)
    for (const char* n : {t.attn_norm, t.mlp_norm})
      if (*n) norms.push_back(cfg.layer_module(l, n));
  for (const std::string& n : norms) {
    if (cfg.norm == NormKind::RMSNorm && archive.contains(n + ".bias"))
      add(fmt::format("RMSNorm biases ({} has none; a shift folded in, e.g. OutlierTune's symmetrization)",
                      cfg.model_type), n + ".bias");
    if (archive.contains(n + ".index"))
      add("norm channel-index tensors (channel splits, e.g. MergeQuant's dimensional reconstruction: the norm emits "
          "duplicated channels no standard norm does)", n + ".index");
  }

  for (int64_t l = 0; l < cfg.n_layers; ++l)
    for (int i = 0; i < kNumLinear; ++i) {
      const LinearId id = static_cast<LinearId>(i);
      const char* name = linear_module_name(cfg, id);
      if (*name == '\0') continue;
      const std::string m = cfg.layer_module(l, name);
      if (!has_bias_in_architecture(cfg, id) && archive.contains(m + ".bias") &&
          to_float_tensor(archive.view(m + ".bias")).abs().max().item<double>() != 0)
        add(fmt::format("linear biases on modules the {} architecture has none on (config.json)", cfg.model_type),
            m + ".bias");
      const auto it = qc.modules.find(m);
      std::pair<int64_t, int64_t> shape{0, 0};
      if (it != qc.modules.end()) {
        shape = {it->second.out_features, it->second.in_features};
      } else if (archive.contains(m + ".weight") && archive.view(m + ".weight").shape().size() == 2) {
        shape = {archive.view(m + ".weight").shape()[0], archive.view(m + ".weight").shape()[1]};
      }
      const std::pair<int64_t, int64_t> want = expected_shape(cfg, id);
      if (shape.first != 0 && shape != want)
        add("modules of another shape than config.json gives (split channels: widened inputs, or producers emitting "
            "copies)", fmt::format("{} [{}, {}], expected [{}, {}]", m, shape.first, shape.second, want.first,
                                   want.second));
    }

  if (qc.raw.is_object() && qc.raw.contains("rotation") && qc.raw["rotation"].is_object() &&
      qc.raw["rotation"].contains("down_proj_hadamard_seed"))
    add("an online Hadamard rotation of every down_proj input (quantization_config.rotation), which no standard "
        "runtime applies", fmt::format("down_proj_hadamard_seed {}", qc.raw["rotation"]["down_proj_hadamard_seed"].dump()));

  std::vector<std::string> out;
  for (const auto& [kind, names] : gaps) out.push_back(kind + ": " + join_module_list(names, 6));

  // Activation schemes, one line per reason: the schemes met, then the modules.
  std::map<std::string, std::pair<std::set<std::string>, std::vector<std::string>>> acts;
  for (const auto& [m, info] : qc.modules) {
    if (!info.act) continue;
    const std::string why = activation_gap ? activation_gap(info)
                                           : "the format stores weights only: a runtime would run these modules on "
                                             "unquantized inputs";
    if (why.empty()) continue;
    acts[why].first.insert(info.act->describe());
    acts[why].second.push_back(m);
  }
  for (const auto& [why, v] : acts) {
    const std::vector<std::string> schemes(v.first.begin(), v.first.end());
    out.push_back(fmt::format("activation quantization ({}; {}): {}", join_module_list(schemes, 3), why,
                              join_module_list(v.second, 6)));
  }
  return out;
}

void refuse_nonstandard(const std::string& model_dir, const std::string& format, const TensorArchive& archive,
                        const CheckpointQuantConfig& qc, const ActivationGap& activation_gap) {
  const std::vector<std::string> gaps = nonstandard_features(model_dir, archive, qc, activation_gap);
  if (gaps.empty()) return;
  std::string list;
  for (size_t i = 0; i < gaps.size(); ++i) list += fmt::format("{}({}) {}", i ? "; " : "", i + 1, gaps[i]);
  bool any_act = false;
  for (const auto& [m, info] : qc.modules) any_act = any_act || info.act.has_value();
  std::string hint;
  if (any_act && nonstandard_features(model_dir, archive, qc, int_quantized_activation_gap).empty()) {
    hint = "; compressed-tensors int-quantized carries these 8-bit activation schemes: ptq export --format "
           "compressed-tensors";
  } else {
    hint = "; ptq evaluates this checkpoint as it is (ptq eval); for another runtime, quantize with a recipe whose "
           "transforms fold into the architecture's own tensors (e.g. configs/w8a8-smoothquant.yaml, or weight-only)";
  }
  fail_input("{}: {} export cannot represent what this checkpoint holds beyond a standard {} model, and would "
             "silently change its function: {}{}", model_dir, format, load_model_config(model_dir).model_type, list,
             hint);
}

PackedExportReport export_packed(const std::string& model_dir, const std::string& out_dir,
                                 const PackedFormat& format, const PackedExportOptions& opts) {
  const at::ScalarType float_st = scalar_type(opts.float_dtype);
  ModelDirWriter dir(out_dir, model_dir, opts.force);  // refusals before reading anything

  const Checkpoint ck(model_dir);
  if (!ck.quantized())
    fail_input("{} is not a quantized checkpoint; {} export writes the codes of a quantized model: run `ptq "
               "quantize` first (e.g. with configs/w4a16-gptq.yaml), then export its output", model_dir, format.name);
  const TensorArchive& archive = ck.archive();
  PackedExportInput in;
  in.dir = model_dir;
  in.qc = ck.quant_config();
  const std::function<QuantizedWeight(const std::string&)> load = [&](const std::string& m) { return ck.load_weight(m); };
  in.load_act = [&](const std::string& m) { return ck.load_act_params(m); };
  const QuantSettings settings = ck.settings();
  in.damp = settings.damp;
  in.true_sequential = settings.true_sequential;
  in.static_groups = settings.static_groups;
  in.provenance = settings.provenance;
  if (in.qc.modules.empty()) fail_input("{}: the checkpoint has no quantized module to export", model_dir);
  std::vector<std::string> blocks;
  for (const auto& [m, info] : in.qc.modules)
    if (info.ggml) blocks.push_back(m);
  if (!blocks.empty())
    fail_input("{}: {} module(s) are stored as GGUF blocks ({}, first {}), whose K-quant scales and mins have no {} "
               "form; export this checkpoint with --format gguf", model_dir, blocks.size(),
               in.qc.modules.at(blocks.front()).format, blocks.front(), format.name);
  refuse_nonstandard(model_dir, format.name, archive, in.qc, format.activation_gap);
  if (format.check) format.check(in);

  PackedExportReport rep;
  rep.output = dir.out();
  rep.format = format.name;
  if (format.notes) rep.notes = format.notes(in);
  std::vector<std::string> unpackable;
  for (const auto& [m, info] : in.qc.modules) {
    const std::string why = format.unpackable(info);
    if (why.empty()) continue;
    rep.kept_float[m] = why;
    unpackable.push_back(fmt::format("{} [{}, {}]", m, info.out_features, info.in_features));
  }
  if (!unpackable.empty() && !opts.keep_unpackable_float)
    fail_input("{}: {} module(s) cannot be stored as {}: {} ({}); pass --keep-unpackable-float to store them as {} "
               "weights", model_dir, unpackable.size(), format.name, join_module_list(unpackable),
               rep.kept_float.begin()->second, dtype_name(opts.float_dtype));

  auto input_packed = [&](const std::string& name) {
    for (const char* suf : kInputPackedSuffixes)
      if (has_suffix(name, suf) && in.qc.modules.count(name.substr(0, name.size() - std::strlen(suf)))) return true;
    return false;
  };
  std::vector<SafetensorsStreamWriter::Entry> entries;
  for (const auto& name : archive.names()) {
    if (input_packed(name)) continue;
    const TensorView v = archive.view(name);
    entries.push_back({name, is_float(v.dtype()) ? opts.float_dtype : v.dtype(), v.shape()});
  }
  std::map<std::string, uint64_t> module_bytes;
  for (const auto& [m, info] : in.qc.modules) {
    if (rep.kept_float.count(m)) {
      entries.push_back({m + ".weight", opts.float_dtype, {info.out_features, info.in_features}});
      continue;
    }
    for (auto& e : format.declare(m, info)) {
      int64_t n = 1;
      for (int64_t d : e.shape) n *= d;
      module_bytes[m] += uint64_t(n) * dtype_size(e.dtype);
      entries.push_back(std::move(e));
    }
  }

  const json provenance = {{"tool", "ptq"}, {"version", PTQ_VERSION}, {"format", format.name},
                           {"exported_from", model_dir}, {"source_provenance", in.provenance}};
  {
    SafetensorsStreamWriter out(dir.file("model.safetensors"), entries,
                                {{"format", "pt"}, {"ptq.provenance", provenance.dump()}});
    auto write = [&](const std::string& name, const at::Tensor& t) {
      const at::Tensor c = t.contiguous();
      out.write(name, c.data_ptr(), static_cast<size_t>(c.numel() * c.element_size()));
    };
    std::vector<std::string> refused;  // collected so that the message lists them all
    for (const auto& [m, info] : in.qc.modules) {
      const QuantizedWeight qw = load(m);
      if (rep.kept_float.count(m)) {
        write(m + ".weight", dequantize(qw).to(float_st));
        continue;
      }
      if (format.refuse && format.refuse(qw)) {
        refused.push_back(m);
        continue;
      }
      if (at::isinf(qw.scales.to(at::kHalf)).any().item<bool>())
        fail_input("{}: module \"{}\": a scale of {} does not fit fp16; {} stores fp16 scales", model_dir, m,
                   qw.scales.abs().max().item<double>(), format.name);
      for (const auto& [name, t] : format.pack(m, info, qw, in.load_act(m))) write(name, t);
      rep.modules.push_back(m);
    }
    if (!refused.empty()) fail_input("{}: {}", model_dir, format.refusal(join_module_list(refused)));
    std::vector<std::string> rounded;  // float tensors float_dtype does not hold exactly (e.g. F32 folded norms)
    for (const auto& name : archive.names()) {
      if (out.written(name) || input_packed(name)) continue;
      const TensorView v = archive.view(name);
      if (is_float(v.dtype())) {
        const at::Tensor x = to_float_tensor(v), y = x.to(float_st);
        if (!at::equal(y.to(x.scalar_type()), x)) rounded.push_back(name);
        write(name, y);
      } else {
        out.write(name, v.data, v.nbytes());
      }
      archive.release(name);
    }
    out.commit();
    rep.bytes = out.file_size();
    if (!rounded.empty())
      rep.notes.push_back(fmt::format("{} float tensor(s) rounded to {} (--float-dtype F32 keeps them bit for bit): {}",
                                      rounded.size(), dtype_name(opts.float_dtype), join_module_list(rounded, 4)));
  }

  uint64_t packed_bytes = 0;
  int64_t packed_params = 0;
  for (const auto& m : rep.modules) {
    packed_bytes += module_bytes[m];
    packed_params += in.qc.modules.at(m).out_features * in.qc.modules.at(m).in_features;
  }
  rep.bits_per_weight = packed_params ? 8.0 * double(packed_bytes) / double(packed_params) : 0;

  // Provenance stays out of quantization_config, which loaders parse against their own schema.
  const json q = format.config(in, rep);
  rep.quantization_config = q;
  json cfg = json::parse(read_text_file(model_dir + "/config.json"));
  cfg["torch_dtype"] = torch_dtype_name(opts.float_dtype);
  cfg["quantization_config"] = q;
  cfg["ptq_provenance"] = provenance;
  write_text_file_atomic(dir.file("config.json"), cfg.dump(2) + "\n");
  if (format.quantize_config_json) write_text_file_atomic(dir.file("quantize_config.json"), q.dump(2) + "\n");
  dir.copy_tokenizer_files(model_dir);
  dir.commit();
  return rep;
}

GptqExportReport export_gptq(const std::string& model_dir, const std::string& out_dir, const GptqExportOptions& opts) {
  const GptqFormat gf = opts.format;
  PackedFormat f;
  f.name = gptq_format_name(gf);
  f.unpackable = [](const ModuleQuantInfo& info) -> std::string {
    const int b = info.spec.bits;
    if ((info.in_features * b) % 32 == 0 && (info.out_features * b) % 32 == 0) return "";
    return fmt::format("at {} bits, in_features*{} and out_features*{} must be multiples of 32 (GPTQ packs whole "
                       "int32 words along K in qweight and along N in qzeros)", b, b, b);
  };
  f.declare = [](const std::string& m, const ModuleQuantInfo& info) {
    const int b = info.spec.bits;
    const int64_t N = info.out_features, K = info.in_features, G = group_count(info.spec, K);
    return std::vector<SafetensorsStreamWriter::Entry>{{m + ".qweight", DType::I32, {K * b / 32, N}},
                                                       {m + ".qzeros", DType::I32, {G, N * b / 32}},
                                                       {m + ".scales", DType::F16, {G, N}},
                                                       {m + ".g_idx", DType::I32, {K}}};
  };
  if (gf == GptqFormat::V1) {
    f.refuse = [](const QuantizedWeight& qw) { return (qw.zeros == 0).any().item<bool>(); };
    f.refusal = [](const std::string& list) {
      return fmt::format("these modules have an asymmetric zero point of 0, which a \"gptq\" (v1) checkpoint cannot "
                         "store (v1 stores zero - 1; -1 wraps to all ones and corrupts the neighbouring zeros of "
                         "the packed word, the known v1 interop bug): {}; export --format gptq_v2, or quantize with a "
                         "symmetric grid (--sym)", list);
    };
  }
  f.pack = [gf](const std::string& m, const ModuleQuantInfo&, const QuantizedWeight& qw, const ActQuantParams&) {
    const GptqTensors t = pack_gptq(qw, gf, m);
    return std::vector<std::pair<std::string, at::Tensor>>{
        {m + ".qweight", t.qweight}, {m + ".qzeros", t.qzeros}, {m + ".scales", t.scales}, {m + ".g_idx", t.g_idx}};
  };
  f.config = [gf](const PackedExportInput& in, const PackedExportReport& rep) {
    // sym only when every module is symmetric (zeros are stored for every module, so dequantization does not
    // depend on it); desc_act when any module is act-ordered (g_idx is always written).
    bool sym = true, desc_act = false;
    for (const auto& [m, info] : in.qc.modules) {
      sym = sym && info.spec.sym;
      desc_act = desc_act || info.act_order;
    }
    // The global bits / group_size are the scheme most modules have; every other module (a mixed-precision
    // allocation, a recipe's overrides) gets a GPTQModel "dynamic" rule "+:^<path>$" with its own.
    std::map<std::pair<int, int64_t>, int> count;
    for (const auto& [m, info] : in.qc.modules) ++count[{info.spec.bits, info.spec.group_size > 0 ? info.spec.group_size : -1}];
    const std::pair<int, int64_t> global =
        std::max_element(count.begin(), count.end(), [](const auto& a, const auto& b) { return a.second < b.second; })
            ->first;
    json q = {{"bits", global.first},
              {"group_size", global.second},
              {"damp_percent", in.damp},
              {"desc_act", desc_act},
              {"static_groups", in.static_groups},
              {"sym", sym},
              {"true_sequential", in.true_sequential},
              {"quant_method", "gptq"},
              {"checkpoint_format", gptq_format_name(gf)},
              {"model_file_base_name", "model"},
              {"meta", {{"quantizer", {fmt::format("ptq:{}", PTQ_VERSION)}}}}};
    json dynamic = json::object();
    auto exact = [](char sign, const std::string& m) { return std::string(1, sign) + ":^" + regex_escape(m) + "$"; };
    for (const auto& [m, why] : rep.kept_float) dynamic[exact('-', m)] = json::object();  // stays a float Linear
    for (const auto& m : rep.modules) {
      const WeightQuantSpec& sp = in.qc.modules.at(m).spec;
      const std::pair<int, int64_t> own{sp.bits, sp.group_size > 0 ? sp.group_size : -1};
      if (own != global) dynamic[exact('+', m)] = {{"bits", own.first}, {"group_size", own.second}};
    }
    if (!dynamic.empty()) q["dynamic"] = dynamic;
    return q;
  };
  f.quantize_config_json = true;
  return export_packed(model_dir, out_dir, f, opts);
}

}  // namespace ptq
