#include "export/gguf_export.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"
#include "core/half.h"
#include "core/model_dir.h"
#include "calibration/stats.h"
#include "checkpoint/checkpoint.h"
#include "export/gptq_export.h"
#include "export/imatrix_export.h"
#include "export/targets.h"
#include "io/safetensors.h"
#include "model/gguf_model.h"
#include "model/model.h"
#include "model/sentencepiece.h"
#include "quant/checkpoint.h"

namespace ptq {

namespace fs = std::filesystem;
using nlohmann::json;

std::vector<int64_t> gguf_rope_permutation(int64_t heads, int64_t head_dim) {
  std::vector<int64_t> perm(heads * head_dim);
  const int64_t half = head_dim / 2;
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < half; ++i)
      for (int64_t t = 0; t < 2; ++t) perm[h * head_dim + 2 * i + t] = h * head_dim + t * half + i;
  return perm;
}

namespace {

// One tensor of the output: its GGUF name, its HF source, and (for the seven linear modules) the module path.
struct Slot {
  std::string gguf, hf, module;
  int64_t rope_heads = 0;  // q/k: heads whose rows are permuted
  bool norm = false;
  bool linear = false;
  int64_t layer = -1;      // decoder layer of blk.* tensors
};

std::vector<Slot> llama_slots(const ModelConfig& cfg) {
  const ArchTraits& t = cfg.traits();
  std::vector<Slot> s;
  s.push_back({"token_embd.weight", std::string(t.embed) + ".weight", "", 0, false, false});
  s.push_back({"output_norm.weight", std::string(t.final_norm) + ".weight", "", 0, true, false});
  if (!cfg.tie_embeddings) s.push_back({"output.weight", std::string(t.lm_head) + ".weight", "", 0, false, false});
  for (int64_t i = 0; i < cfg.n_layers; ++i) {
    auto lin = [&](LinearId id, const char* mod, int64_t heads) {
      s.push_back({gguf_linear_tensor_name(i, id), cfg.layer_tensor(i, mod, "weight"), cfg.layer_module(i, mod),
                   heads, false, true, i});
    };
    auto norm = [&](const char* gguf, const char* mod) {
      s.push_back({fmt::format("blk.{}.{}.weight", i, gguf), cfg.layer_tensor(i, mod, "weight"), "", 0, true, false, i});
    };
    lin(LinearId::Q, t.q_proj, cfg.n_heads);
    lin(LinearId::K, t.k_proj, cfg.n_kv_heads);
    lin(LinearId::V, t.v_proj, 0);
    lin(LinearId::O, t.o_proj, 0);
    norm("attn_norm", t.attn_norm);
    lin(LinearId::Gate, t.gate_proj, 0);
    lin(LinearId::Down, t.down_proj, 0);
    lin(LinearId::Up, t.up_proj, 0);
    norm("ffn_norm", t.mlp_norm);
  }
  return s;
}

void check_llama(const ModelConfig& cfg, const std::string& dir) {
  if (cfg.arch != Arch::Llama && cfg.arch != Arch::Mistral)
    fail_input("{}: GGUF export supports llama and mistral (llama architecture) models, this one is \"{}\"", dir,
               cfg.model_type);
  if (cfg.qkv_bias || cfg.o_bias || cfg.mlp_bias)
    fail_input("{}: GGUF llama export has no bias tensors, but this model has linear biases", dir);
  if (cfg.head_dim * cfg.n_heads != cfg.hidden)
    fail_input("{}: head_dim {} x heads {} != hidden {}: not expressible in GGUF llama metadata", dir, cfg.head_dim,
               cfg.n_heads, cfg.hidden);
}

at::Tensor permute_rows(const at::Tensor& t, const std::vector<int64_t>& perm) {
  at::Tensor idx = at::from_blob(const_cast<int64_t*>(perm.data()), {int64_t(perm.size())}, at::kLong).clone();
  return t.index_select(0, idx).contiguous();
}

std::vector<uint8_t> encode_tensor(GgmlType type, const at::Tensor& w32, const std::string& what,
                                   const float* quant_weights) {
  at::Tensor w = w32.contiguous();
  const int64_t cols = w.dim() == 1 ? w.size(0) : w.size(-1);
  const int64_t rows = w.numel() / std::max<int64_t>(cols, 1);
  return ggml_encode(type, w.data_ptr<float>(), rows, cols, what, quant_weights);
}

// A stored 2-D float tensor (F32/F16/BF16 view of the mapped file) encoded as `type` on all threads, 64 rows at a time
// per thread, with no fp32 copy of the tensor; output row r is stored row perm[r] when perm is given (q/k RoPE rows).
// Rows are independent blocks, so the bytes equal encode_tensor's of the whole (permuted) tensor.
std::vector<uint8_t> encode_rows(GgmlType type, const TensorView& v, const std::vector<int64_t>& perm,
                                 const std::string& what, const float* quant_weights) {
  constexpr int64_t kRows = 64;
  const int64_t rows = v.shape()[0], cols = v.shape()[1];
  if (cols % ggml_type_traits(type).block_size != 0)  // named before any thread starts
    fail_input("{}: rows of {} values cannot be stored as {} (blocks of {})", what, cols, ggml_type_name(type),
               ggml_type_traits(type).block_size);
  const size_t row_bytes = ggml_nbytes(type, cols);
  std::vector<uint8_t> out(row_bytes * static_cast<size_t>(rows));
  at::parallel_for(0, rows, kRows, [&](int64_t begin, int64_t end) {
    std::vector<float> x(static_cast<size_t>(kRows * cols));
    for (int64_t r0 = begin; r0 < end; r0 += kRows) {
      const int64_t r1 = std::min(end, r0 + kRows);
      for (int64_t r = r0; r < r1; ++r) view_row_f32(v, perm.empty() ? r : perm[r], &x[(r - r0) * cols]);
      const std::vector<uint8_t> bytes =
          ggml_encode(type, x.data(), r1 - r0, cols, fmt::format("{} (rows {}..{})", what, r0, r1 - 1), quant_weights);
      std::memcpy(out.data() + r0 * row_bytes, bytes.data(), bytes.size());
    }
  });
  return out;
}

std::vector<float> decode_all(GgmlType type, const std::vector<uint8_t>& bytes, int64_t n) {
  std::vector<float> out(n);
  ggml_decode(type, bytes.data(), out.data(), n);
  return out;
}

enum class Mapping { None, Q4_0, Q4_1, Q8_0 };

bool natural_g32(const QuantizedWeight& qw) {
  const int64_t K = qw.q.size(1);
  if (qw.spec.group_size != 32 || K % 32 != 0) return false;
  if (!qw.g_idx.defined()) return true;
  at::Tensor expect = at::arange(K, at::kInt).div(32, "floor").to(at::kInt);
  return qw.g_idx.to(at::kInt).equal(expect);
}

Mapping mapping_of(const ModuleQuantInfo& info) {
  if (info.ggml) return Mapping::None;  // already GGUF blocks: copied
  if (info.spec.group_size != 32 || info.act_order || info.in_features % 32 != 0) return Mapping::None;
  if (info.spec.bits == 4) return info.spec.sym ? Mapping::Q4_0 : Mapping::Q4_1;
  if (info.spec.bits == 8 && info.spec.sym) return Mapping::Q8_0;
  return Mapping::None;
}

GgmlType mapped_type(Mapping m) {
  return m == Mapping::Q4_0 ? GgmlType::Q4_0 : m == Mapping::Q4_1 ? GgmlType::Q4_1 : GgmlType::Q8_0;
}

// Blocks straight from a ptq module's codes (rows already in output order). Writes the max |error| the fp16
// storage of d/m adds relative to ptq's dequantized value.
std::vector<uint8_t> map_blocks(Mapping m, const QuantizedWeight& qw, const std::string& module, double& max_err) {
  const int64_t N = qw.q.size(0), K = qw.q.size(1), nb = K / 32;
  if (!natural_g32(qw)) fail_input("module \"{}\": columns are not in natural group-32 order", module);
  at::Tensor q = qw.q.to(at::kInt).contiguous(), z = qw.zeros.to(at::kInt).contiguous();
  at::Tensor s = qw.scales.to(at::kFloat).contiguous();
  const int32_t* qp = q.data_ptr<int32_t>();
  const int32_t* zp = z.data_ptr<int32_t>();
  const float* sp = s.data_ptr<float>();
  const size_t bs = ggml_type_traits(mapped_type(m)).type_size;
  std::vector<uint8_t> out(N * nb * bs);
  max_err = 0;
  for (int64_t r = 0; r < N; ++r)
    for (int64_t b = 0; b < nb; ++b) {
      const int32_t* qb = qp + r * K + b * 32;
      const float scale = sp[r * nb + b];
      const int32_t zero = zp[r * nb + b];
      const uint16_t d = f32_to_fp16(scale);
      float ref[32], got[32];
      for (int j = 0; j < 32; ++j) ref[j] = scale * float(qb[j] - zero);
      uint8_t* o = out.data() + (r * nb + b) * bs;
      if (m == Mapping::Q4_0 || m == Mapping::Q4_1) {
        if (m == Mapping::Q4_0 && zero != 8)
          fail_input("module \"{}\": row {} group {} has zero {}, Q4_0 needs 8", module, r, b, zero);
        BlockQ4_1 blk1{};
        BlockQ4_0 blk0{};
        uint8_t* qs = m == Mapping::Q4_0 ? blk0.qs : blk1.qs;
        for (int j = 0; j < 16; ++j) qs[j] = uint8_t(qb[j] | (qb[j + 16] << 4));
        if (m == Mapping::Q4_0) {
          blk0.d = d;
          std::memcpy(o, &blk0, bs);
          dequantize_row_q4_0(&blk0, got, 32);
        } else {
          blk1.d = d;
          blk1.m = f32_to_fp16(-float(zero) * scale);
          std::memcpy(o, &blk1, bs);
          dequantize_row_q4_1(&blk1, got, 32);
        }
      } else {
        if (zero != 128) fail_input("module \"{}\": row {} group {} has zero {}, Q8_0 needs 128", module, r, b, zero);
        BlockQ8_0 blk{};
        blk.d = d;
        for (int j = 0; j < 32; ++j) blk.qs[j] = int8_t(qb[j] - 128);
        std::memcpy(o, &blk, bs);
        dequantize_row_q8_0(&blk, got, 32);
      }
      for (int j = 0; j < 32; ++j) max_err = std::max(max_err, double(std::fabs(got[j] - ref[j])));
    }
  return out;
}

int64_t pieces_or_fail(const SentencePieceModel& sp, const ModelConfig& cfg, const std::string& path) {
  const int64_t n = static_cast<int64_t>(sp.pieces().size());
  if (n != cfg.vocab)
    fail_input("{}: {} pieces but config.json vocab_size is {}; GGUF needs one token per embedding row", path, n,
               cfg.vocab);
  return n;
}

}  // namespace

GgufExportReport export_gguf(const std::string& model_dir, const std::string& out_path, const GgufExportOptions& given) {
  if (is_directory(out_path)) fail_input("output {} is a directory; GGUF export writes one file", out_path);
  check_output_path(out_path, model_dir, given.force);
  const Checkpoint ck(model_dir);
  // What a standard llama cannot hold is refused before the model is opened.
  if (ck.kind() != CheckpointKind::Gguf) refuse_nonstandard(model_dir, "GGUF", ck.archive(), ck.quant_config());
  std::unique_ptr<Model> model = ck.open_model();
  const ModelConfig& cfg = model->config();
  check_llama(cfg, model_dir);
  // Quantized modules: a ptq checkpoint's, or an imported GPTQ / compressed-tensors checkpoint's (the readers
  // open_model uses), so a GPTQ grid that is a ggml type maps onto it exactly as a ptq one does.
  const CheckpointQuantConfig& qc = ck.quant_config();
  const bool is_imported = ck.imported(), quantized = ck.quantized();
  const std::function<QuantizedWeight(const std::string&)> load_codes = [&](const std::string& module) {
    return ck.load_weight(module);
  };

  // --gguf-type: a float type or a pure block type for every FP tensor but the norms, or a mix deciding per tensor.
  // Without one, a checkpoint quantized onto GGUF's grids (recipe weights.gguf_type) gets the type it was made for,
  // so token_embd and output are stored as that mix stores them.
  GgufExportOptions opts = given;
  if (!opts.type && !opts.mix && quantized && qc.raw.contains("weights") && qc.raw["weights"].is_object() &&
      qc.raw["weights"].value("gguf_type", nlohmann::json()).is_string())
    parse_gguf_type(qc.raw["weights"]["gguf_type"].get<std::string>(), opts);
  if (opts.type && opts.mix) fail_input("GGUF export: a ggml type and a K-quant mix were both given; choose one");
  const GgmlType requested = opts.type.value_or(GgmlType::F32);
  const GgufMixModel mix_model = gguf_mix_model(cfg);
  // Importances per GGUF weight name (Σx² / tokens, what llama-quantize --imatrix computes from the imatrix export).
  std::map<std::string, std::vector<float>> importance;
  if (!opts.stats.empty()) {
    if (!opts.mix && ggml_type_traits(requested).block_size == 1)
      fail_input("--stats {}: an importance matrix weights the rounding of block types; {} has none (pass a block "
                 "type or a K-quant mix as --gguf-type)", opts.stats, ggml_type_name(requested));
    const CalibrationStats stats = load_calibration_stats(opts.stats, *model);  // refuses another model's stats
    for (const auto& [name, e] : imatrix_entries(stats, opts.stats)) importance[name] = e.quant_weights();
  }

  // Plan every tensor before writing anything: refusals happen here.
  GgufExportReport rep;
  rep.output = out_path;
  struct Plan {
    Slot slot;
    GgmlType type;
    Mapping map = Mapping::None;
    bool blocks = false;  // a module stored as GGUF blocks (recipe weights.gguf_type): copied as stored
    bool requant = false;
    std::vector<int64_t> dims = {};
    const std::vector<float>* importance = nullptr;  // quant_weights of the weighted rounding
  };
  std::vector<Plan> plans;
  std::map<std::string, std::vector<std::string>> refused;  // grid -> modules
  bool g32_fixes_all = true;  // quantizing with --group-size 32 would make every refused module map losslessly
  for (const Slot& s : llama_slots(cfg)) {
    if (!model->weights().contains(s.hf)) fail_input("{}: tensor \"{}\" is missing", model_dir, s.hf);
    Plan p{s, requested};
    int64_t N = 0, K = 0;
    if (s.norm) {
      p.type = GgmlType::F32;
      N = 1;
      K = cfg.hidden;
      p.dims = {K};
    } else {
      const auto it = quantized ? qc.modules.find(s.module) : qc.modules.end();
      if (it != qc.modules.end()) {
        N = it->second.out_features;
        K = it->second.in_features;
      } else {
        const TensorView v = model->archive().view(s.hf);
        if (v.shape().size() != 2) fail_input("{}: tensor \"{}\" is {}, expected 2-D", model_dir, s.hf, shape_str(v.shape()));
        N = v.shape()[0];
        K = v.shape()[1];
      }
      p.dims = {K, N};
      if (it != qc.modules.end()) {
        const ModuleQuantInfo& info = it->second;
        p.map = mapping_of(info);
        if (info.ggml) {
          p.type = *info.ggml;
          p.blocks = true;
        } else if (p.map != Mapping::None) {
          p.type = mapped_type(p.map);
        } else if (K % 32 != 0) {
          p.type = GgmlType::F32;
          rep.kept_float[s.gguf] = fmt::format("{} ({} bits g{}): rows of {} are not a multiple of 32; stored as "
                                               "F32 dequantized values (exact)", s.module, info.spec.bits,
                                               info.spec.group_size, K);
        } else {
          if (!opts.allow_requant) {
            const std::string grid = fmt::format("{}-bit {} {}{}", info.spec.bits, info.spec.sym ? "sym" : "asym",
                                                 info.spec.group_size > 0 ? fmt::format("group {}", info.spec.group_size)
                                                                          : std::string("per-channel"),
                                                 info.act_order ? " act-order" : "");
            refused[grid].push_back(s.module);
            g32_fixes_all = g32_fixes_all && gguf_type_at_group_32(info).has_value();
            continue;
          }
          p.requant = true;
          p.type = info.spec.bits <= 4 ? (info.spec.sym ? GgmlType::Q4_0 : GgmlType::Q4_1) : GgmlType::Q8_0;
        }
      } else {
        std::string why;
        p.type = gguf_target_tensor_type(GgufTarget{requested, opts.mix}, s.gguf, s.layer, K, mix_model, why);
        if (!why.empty()) rep.fallback[s.gguf] = why;
        const auto imp = importance.find(s.gguf);
        if (imp != importance.end() && ggml_type_traits(p.type).block_size > 1) {
          if (static_cast<int64_t>(imp->second.size()) != K)
            fail_input("--stats {}: {} has {} importances, tensor \"{}\" has rows of {}", opts.stats, s.gguf,
                       imp->second.size(), s.hf, K);
          p.importance = &imp->second;
        }
      }
    }
    plans.push_back(std::move(p));
  }
  if (!refused.empty()) {
    // One line: each grid with a count and the first modules, then the fix.
    std::string list;
    size_t n = 0;
    for (const auto& [grid, mods] : refused) {
      list += fmt::format("{}{} ({}): {}", list.empty() ? "" : "; ", grid, mods.size(), join_module_list(mods, 3));
      n += mods.size();
    }
    fail_input("{}: {} module(s) have grids with no ggml equivalent (ggml holds 4-bit sym/asym and 8-bit sym, group "
               "32, natural column order): {}. Fix: {}or pass --allow-requant to re-quantize them to Q4_0/Q4_1/Q8_0 "
               "(the added error is reported)", model_dir, n, list,
               g32_fixes_all ? "quantize with --group-size 32 (and without --act-order) for a lossless export, " : "");
  }

  GgufWriter w;
  w.set("general.architecture", GgufValue::string("llama"));
  w.set(kOutputMarker, GgufValue::string(std::string("ptq ") + PTQ_VERSION));  // --force may replace it (model_dir.h)
  w.set("general.name", GgufValue::string(fs::path(model_dir).filename().string().empty()
                                             ? fs::path(model_dir).parent_path().filename().string()
                                             : fs::path(model_dir).filename().string()));
  bool any_block = false;
  for (const auto& p : plans) any_block |= ggml_type_traits(p.type).block_size > 1;
  if (any_block) w.set("general.quantization_version", GgufValue::u32(2));
  if (opts.mix) w.set("general.file_type", GgufValue::u32(gguf_mix_traits(*opts.mix).llama_ftype));
  w.set("llama.context_length", GgufValue::u32(static_cast<uint32_t>(cfg.max_positions)));
  w.set("llama.embedding_length", GgufValue::u32(static_cast<uint32_t>(cfg.hidden)));
  w.set("llama.block_count", GgufValue::u32(static_cast<uint32_t>(cfg.n_layers)));
  w.set("llama.feed_forward_length", GgufValue::u32(static_cast<uint32_t>(cfg.ffn)));
  w.set("llama.attention.head_count", GgufValue::u32(static_cast<uint32_t>(cfg.n_heads)));
  w.set("llama.attention.head_count_kv", GgufValue::u32(static_cast<uint32_t>(cfg.n_kv_heads)));
  w.set("llama.rope.dimension_count", GgufValue::u32(static_cast<uint32_t>(cfg.head_dim)));
  w.set("llama.rope.freq_base", GgufValue::f32(static_cast<float>(cfg.rope_theta)));
  w.set("llama.attention.layer_norm_rms_epsilon", GgufValue::f32(static_cast<float>(cfg.norm_eps)));

  // Tokenizer: SentencePiece pieces/scores/types (GGUF token types use SentencePiece's numbering).
  const std::string spm_path = model_dir + "/tokenizer.model";
  if (!file_exists(spm_path))
    fail_input("{}: no tokenizer.model; GGUF export embeds a SentencePiece tokenizer (tokenizer.json is not supported "
               "yet)", model_dir);
  const SentencePieceModel sp = SentencePieceModel::load(spm_path);
  pieces_or_fail(sp, cfg, spm_path);
  std::vector<std::string> tokens;
  std::vector<double> scores;
  std::vector<int64_t> types;
  for (const auto& piece : sp.pieces()) {
    tokens.push_back(piece.text);
    scores.push_back(piece.score);
    types.push_back(static_cast<int64_t>(piece.type));
  }
  w.set("tokenizer.ggml.model", GgufValue::string("llama"));
  w.set("tokenizer.ggml.tokens", GgufValue::string_array(std::move(tokens)));
  w.set("tokenizer.ggml.scores", GgufValue::f32_array(std::move(scores)));
  w.set("tokenizer.ggml.token_type", GgufValue::i32_array(std::move(types)));
  w.set("tokenizer.ggml.unknown_token_id", GgufValue::u32(static_cast<uint32_t>(sp.unk_id())));
  w.set("tokenizer.ggml.bos_token_id",
        GgufValue::u32(static_cast<uint32_t>(cfg.bos_id >= 0 ? cfg.bos_id : sp.bos_id())));
  w.set("tokenizer.ggml.eos_token_id",
        GgufValue::u32(static_cast<uint32_t>(cfg.eos_id >= 0 ? cfg.eos_id : sp.eos_id())));
  if (sp.pad_id() >= 0) w.set("tokenizer.ggml.padding_token_id", GgufValue::u32(static_cast<uint32_t>(sp.pad_id())));

  // Provenance (llama.cpp ignores unknown keys).
  w.set("ptq.version", GgufValue::string(PTQ_VERSION));
  w.set("ptq.source", GgufValue::string(model_dir));
  if (is_imported) w.set("ptq.source_format", GgufValue::string(ck.kind_name()));
  // The quantizer in one short line (method, recipe, calibration data): the checkpoint's whole quantization_config with
  // its per-module metrics would add ~20 KB to every file (the metrics stay in the checkpoint and its report).
  if (quantized) {
    const json& wj = qc.raw.value("weights", json::object());
    const json& rj = qc.raw.value("recipe", json::object());
    const json& pj = qc.raw.value("provenance", json::object());
    const json& cj = pj.value("calibration", json::object());
    std::string q = wj.value("method", std::string("?"));
    if (rj.contains("name") && rj["name"].is_string()) q += " " + rj["name"].get<std::string>();
    if (cj.contains("data_sha256") && cj["data_sha256"].is_string())
      q += fmt::format(" calibration sha256 {:.12}", cj["data_sha256"].get<std::string>());
    w.set("ptq.quantization", GgufValue::string(q));
  }
  if (!importance.empty()) w.set("ptq.imatrix_stats", GgufValue::string(opts.stats));
  rep.imatrix = !importance.empty();

  const Model* m = model.get();
  for (const Plan& p : plans) {
    GgufExportTensor info{p.slot.gguf, p.slot.hf, p.type, p.dims, ""};
    const bool is_q = quantized && qc.modules.count(p.slot.module);
    info.how = p.blocks                ? fmt::format("copied (ptq {} blocks)", qc.modules.at(p.slot.module).format)
               : p.map != Mapping::None ? fmt::format("mapped from {}{}", is_imported ? "" : "ptq ",
                                                    qc.modules.at(p.slot.module).format)
               : p.requant           ? "re-quantized"
               : is_q                ? "dequantized"
               : ggml_type_traits(p.type).block_size > 1 ? "quantized"
                                                          : "converted";
    rep.tensors.push_back(info);
    int64_t numel = 1;
    for (int64_t d : p.dims) numel *= d;
    rep.parameters += numel;
    rep.bits_per_weight += 8.0 * double(ggml_nbytes(p.type, numel));
    const std::vector<int64_t> perm =
        p.slot.rope_heads > 0 ? gguf_rope_permutation(p.slot.rope_heads, cfg.head_dim) : std::vector<int64_t>();
    GgufExportReport* r = &rep;
    // Producers run inside w.write() below, while everything captured by reference is alive.
    const ModuleQuantInfo* stored = p.blocks ? &qc.modules.at(p.slot.module) : nullptr;
    w.add_tensor(p.slot.gguf, p.dims, p.type, [m, p, perm, r, stored, &load_codes]() -> std::vector<uint8_t> {
      if (stored) {  // rows of blocks, q/k rows into ggml's RoPE order
        std::vector<uint8_t> bytes = load_ggml_blocks(m->archive(), p.slot.module, *stored);
        if (perm.empty()) return bytes;
        const size_t row = ggml_nbytes(p.type, stored->in_features);
        std::vector<uint8_t> out(bytes.size());
        for (size_t i = 0; i < perm.size(); ++i)
          std::memcpy(out.data() + i * row, bytes.data() + static_cast<size_t>(perm[i]) * row, row);
        return out;
      }
      if (p.map != Mapping::None) {
        QuantizedWeight qw = load_codes(p.slot.module);
        if (!perm.empty()) {
          qw.q = permute_rows(qw.q, perm);
          qw.scales = permute_rows(qw.scales, perm);
          qw.zeros = permute_rows(qw.zeros, perm);
        }
        double err = 0;
        auto bytes = map_blocks(p.map, qw, p.slot.module, err);
        r->mapped_max_abs_error[p.slot.module] = err;
        return bytes;
      }
      if (!p.requant && m->archive().contains(p.slot.hf)) {
        const TensorView v = m->archive().view(p.slot.hf);
        if (is_float_matrix(v) && ggml_type_traits(p.type).block_size > 1) {
          auto bytes = encode_rows(p.type, v, perm, p.slot.hf, p.importance ? p.importance->data() : nullptr);
          m->archive().release(p.slot.hf);  // its mapped pages would otherwise stay resident until the end
          return bytes;
        }
      }
      at::Tensor t = m->weights().load(p.slot.hf).to(at::kFloat).contiguous();
      if (!perm.empty()) t = permute_rows(t, perm);
      auto bytes = encode_tensor(p.type, t, p.slot.hf, p.importance ? p.importance->data() : nullptr);
      if (p.requant) {
        const std::vector<float> back = decode_all(p.type, bytes, t.numel());
        const float* ref = t.data_ptr<float>();
        double num = 0, den = 0;
        for (int64_t i = 0; i < t.numel(); ++i) {
          num += double(back[i] - ref[i]) * double(back[i] - ref[i]);
          den += double(ref[i]) * double(ref[i]);
        }
        r->requant_nmse[p.slot.module] = den > 0 ? num / den : 0;
      }
      return bytes;
    });
  }
  w.write(out_path);
  struct stat st {};
  if (::stat(out_path.c_str(), &st) == 0) rep.bytes = static_cast<uint64_t>(st.st_size);
  rep.bits_per_weight = rep.parameters > 0 ? rep.bits_per_weight / double(rep.parameters) : 0;
  return rep;
}

void gguf_to_hf_f32(const std::string& gguf_path, const std::string& config_dir, const std::string& out_dir) {
  const GgufFile g(gguf_path);
  const ModelConfig cfg = load_model_config(config_dir);
  check_llama(cfg, config_dir);
  ModelDirWriter dir(out_dir, {gguf_path, config_dir}, /*force=*/false);
  {
    SafetensorsWriter sw;
    for (const Slot& s : llama_slots(cfg)) {
      const GgufTensorInfo& t = g.tensor(s.gguf);
      std::vector<float> v = g.tensor_f32(s.gguf);
      std::vector<int64_t> shape(t.dims.rbegin(), t.dims.rend());
      if (s.rope_heads > 0) {
        const auto perm = gguf_rope_permutation(s.rope_heads, cfg.head_dim);
        const int64_t K = t.dims[0];
        std::vector<float> back(v.size());
        for (size_t nr = 0; nr < perm.size(); ++nr)
          std::memcpy(&back[perm[nr] * K], &v[nr * K], K * sizeof(float));
        v.swap(back);
      }
      sw.add_f32(s.hf, shape, v.data());
    }
    sw.set_metadata("format", "pt");
    sw.set_metadata("ptq.source_gguf", gguf_path);
    sw.write(dir.file("model.safetensors"));
  }
  json c = json::parse(read_text_file(config_dir + "/config.json"));
  c.erase("quantization_config");
  c["torch_dtype"] = "float32";
  write_text_file_atomic(dir.file("config.json"), c.dump(2));
  dir.copy_tokenizer_files(config_dir);
  dir.commit();
}

void parse_gguf_type(const std::string& name, GgufExportOptions& opts) {
  const GgufTarget t = parse_gguf_target(name, "--gguf-type");
  opts.type = t.type;
  opts.mix = t.mix;
}

std::optional<GgmlType> gguf_lossless_type(const ModuleQuantInfo& info) {
  if (info.ggml) return info.ggml;
  const Mapping m = mapping_of(info);
  if (m == Mapping::None) return std::nullopt;
  return mapped_type(m);
}

}  // namespace ptq
