#include "runtime/decoder_runner.h"

#include <ATen/ATen.h>

#include "core/error.h"
#include "core/progress.h"
#include "quant/act_linear.h"

namespace ptq {

struct DecoderRunner::Layer {
  NormWeights attn_norm, mlp_norm;
  // The online rotation of down_proj's input, or null: a Hadamard seed's factors, or a dense rotation R (composed by a
  // transform; uploaded as a linear module's weights Rᵀ, so g · R = g (Rᵀ)ᵀ runs as the backend's fp32 linear op).
  std::unique_ptr<kernels::Backend::Weights> down_hadamard, down_rotation;
  int64_t ffn = 0;  // gate/up outputs, down_proj's input: the config's, or wider where a fold split channels
  std::unique_ptr<kernels::Backend::Weights> linear[kNumLinear];
  std::shared_ptr<void> bias[kNumLinear];
  bool act[kNumLinear] = {};  // activation-quantized (Backend::act_linear; the bias is inside)
};

struct DecoderRunner::Sequence {
  std::vector<std::shared_ptr<void>> k, v;  // per layer [kv_heads][capacity][head_dim] fp16 bits
  int64_t length = 0, capacity = 0;
};

namespace {

// Names what the runner does not take in `cfg`, or returns empty.
std::string unsupported_config(const ModelConfig& cfg) {
  if (cfg.norm != NormKind::RMSNorm) return "LayerNorm";
  if (!cfg.use_rope) return "learned positions instead of RoPE";
  if (!cfg.gated_mlp || cfg.act != Activation::SiLU) return "an MLP other than gated SiLU (SwiGLU)";
  if (!cfg.pre_norm || !cfg.final_norm) return "post-norm layers";
  if (cfg.embed_dim != cfg.hidden) return "embedding projections (word_embed_proj_dim != hidden_size)";
  return "";
}

}  // namespace

DecoderRunner::~DecoderRunner() = default;

DecoderRunner::NormWeights DecoderRunner::upload_norm(const Norm& n) {
  NormWeights w;
  w.gamma = upload_tensor(*backend_, n.weight.to(at::kFloat));
  if (n.bias.defined()) w.beta = upload_tensor(*backend_, n.bias.to(at::kFloat));
  w.width = model_.config().hidden;
  if (n.index.defined()) {  // in range: the loader checks it (model.cpp)
    w.index = upload_tensor(*backend_, n.index.to(at::kLong));
    w.width = n.index.numel();
  }
  max_norm_width_ = std::max(max_norm_width_, w.width);
  return w;
}

DecoderRunner::DecoderRunner(Model& model, std::unique_ptr<kernels::Backend> backend, int64_t max_rows)
    : model_(model), backend_(std::move(backend)), max_rows_(max_rows) {
  if (max_rows_ < 1) fail_input("DecoderRunner: max_rows must be at least 1, got {}", max_rows_);
  const ModelConfig& cfg = model.config();
  if (const std::string why = unsupported_config(cfg); !why.empty())
    fail_input("--device {}: this model ({}) has {}; the device runner takes Llama-family decoders (RMSNorm, RoPE, "
               "gated SiLU MLP); run it on the CPU (the default)", backend_->name(), cfg.model_type, why);
  if (model.kv_cache_type() != KvCacheType::F16)
    fail_input("--device {} keeps an f16 KV cache; --kv-cache {} runs on the CPU only", backend_->name(),
               kv_cache_type_name(model.kv_cache_type()));
  Progress progress("upload", cfg.n_layers);
  layers_.resize(size_t(cfg.n_layers));
  for (int64_t i = 0; i < cfg.n_layers; ++i) {
    const LayerWeights& w = model.layer(i);
    Layer& l = layers_[size_t(i)];
    l.attn_norm = upload_norm(w.attn_norm);
    l.mlp_norm = upload_norm(w.mlp_norm);
    l.ffn = w[LinearId::Gate].out_features();
    if (w[LinearId::Up].out_features() != l.ffn || w[LinearId::Down].in_features() != l.ffn)
      fail_input("--device {}: layer {}'s gate_proj, up_proj and down_proj disagree on the MLP width ({}, {}, {})",
                 backend_->name(), i, l.ffn, w[LinearId::Up].out_features(),
                 w[LinearId::Down].in_features());
    max_ffn_ = std::max(max_ffn_, l.ffn);
    if (w.down_hadamard != nullptr)
      l.down_hadamard = backend_->upload(*w.down_hadamard);
    else if (w.down_rotation.defined()) {  // [ffn, ffn]: add_down_rotation checks it against down_proj's input
      l.down_rotation = backend_->upload(*view_float_tensor(w.down_rotation.t()));
      weight_bytes_ += l.down_rotation->bytes();
    }
    for (int j = 0; j < kNumLinear; ++j) {
      const Linear& lin = w.linear[j];
      const std::string name = linear_module_name(cfg, LinearId(j));
      if (lin.kernel != nullptr) {
        const auto* act = dynamic_cast<const ActQuantLinear*>(lin.kernel.get());
        const std::string why = act != nullptr ? act->device_unsupported() : "a kernel the device runner does not know";
        if (!why.empty())
          fail_input("--device {}: layer {} {} is activation-quantized with {}; run it on the CPU (the default)",
                     backend_->name(), i, name, why);
        const ActQuantLinear::DeviceView v = act->device_view();
        l.linear[j] = backend_->upload(v.view);
        l.act[j] = true;
        weight_bytes_ += l.linear[j]->bytes();
        continue;
      }
      if (!lin.defined()) fail_input("--device {}: layer {} has no {}", backend_->name(), i, name);
      // A module without a packed form (kept in fp32) is viewed; the view keeps it alive past release_layer.
      l.linear[j] = backend_->upload(lin.packed != nullptr ? *lin.packed : *view_float_tensor(lin.weight));
      weight_bytes_ += l.linear[j]->bytes();
      if (lin.bias.defined()) l.bias[j] = upload_tensor(*backend_, lin.bias.to(at::kFloat));
    }
    model.release_layer(i);
    progress.update(i + 1);
  }
  progress.finish();
  if (model.final_norm().index.defined())  // no fold splits it: the head is not activation-quantized
    fail_input("--device {}: the final norm carries a channel split; run it on the CPU", backend_->name());
  final_norm_ = upload_norm(model.final_norm());
  head_ = backend_->upload(*model.packed_head());
  weight_bytes_ += head_->bytes();
  backend_->synchronize();
}

void* DecoderRunner::scratch_bytes(Slot slot, size_t bytes) {
  auto& [size, mem] = scratch_[size_t(slot)];
  if (size < bytes) {
    mem = backend_->alloc(bytes);
    size = bytes;
  }
  return mem.get();
}

void DecoderRunner::run_batch(const int64_t* ids, int64_t batch, int64_t m, Sequence* seqs, bool last_only,
                              float* out) {
  const ModelConfig& cfg = model_.config();
  const int64_t pos0 = seqs[0].length, H = cfg.n_heads, Hkv = cfg.n_kv_heads, hd = cfg.head_dim, D = cfg.hidden;
  for (int64_t b = 0; b < batch; ++b) {
    if (seqs[b].length != pos0)
      fail_input("KV cache sequences at different lengths ({} and {}): a batch continues from one length",
                 seqs[b].length, pos0);
    if (pos0 + m > seqs[b].capacity)
      fail_input("KV cache holds {} positions; {} + {} tokens do not fit", seqs[b].capacity, pos0, m);
  }
  const int64_t M = batch * m;  // rows: sequence b's token t is row b·m + t
  const at::Tensor e =
      model_.embed(at::from_blob(const_cast<int64_t*>(ids), {batch, m}, at::kLong), pos0).to(at::kFloat).contiguous();
  float* h = scratch<float>(Slot::Hidden, size_t(M * D));
  float* x = scratch<float>(Slot::Normed, size_t(M * max_norm_width_));
  float* q = scratch<float>(Slot::Q, size_t(M * H * hd));
  float* k = scratch<float>(Slot::K, size_t(M * Hkv * hd));
  float* v = scratch<float>(Slot::V, size_t(M * Hkv * hd));
  float* att = scratch<float>(Slot::Attention, size_t(M * H * hd));
  float* tmp = scratch<float>(Slot::Residual, size_t(M * D));
  float* g = scratch<float>(Slot::Gate, size_t(M * max_ffn_));
  float* u = scratch<float>(Slot::Up, size_t(M * max_ffn_));
  const int64_t rows = last_only ? batch : M;  // logits' rows: each sequence's last token, or every token
  float* logits = scratch<float>(Slot::Logits, size_t(rows * cfg.vocab));
  int64_t* positions = scratch<int64_t>(Slot::Positions, size_t(M));
  backend_->to_device(h, e.data_ptr<float>(), size_t(M * D) * sizeof(float));
  // The tokens' positions, once per call: every layer's RoPE reads them.
  std::vector<int64_t> pos(static_cast<size_t>(M));
  for (int64_t r = 0; r < M; ++r) pos[size_t(r)] = pos0 + r % m;
  backend_->to_device(positions, pos.data(), pos.size() * sizeof(int64_t));

  const kernels::AttentionDims dims{H, Hkv, hd, seqs[0].capacity, cfg.sliding_window};
  const float eps = float(cfg.norm_eps);
  auto lin = [&](const Layer& l, LinearId id, const float* in, float* o) {
    const int j = int(id);
    if (l.act[j])
      backend_->act_linear(*l.linear[j], in, M, o);
    else
      backend_->linear(*l.linear[j], in, M, o, static_cast<const float*>(l.bias[j].get()));
  };
  auto norm = [&](const NormWeights& n, const float* in, int64_t n_rows, float* o) {
    backend_->rms_norm(in, n_rows, D, static_cast<const float*>(n.gamma.get()), static_cast<const float*>(n.beta.get()),
                       eps, n.split(), o);
  };
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = layers_[i];
    norm(l.attn_norm, h, M, x);
    lin(l, LinearId::Q, x, q);
    lin(l, LinearId::K, x, k);
    lin(l, LinearId::V, x, v);
    backend_->rope(q, M, H, hd, positions, cfg.rope_theta);
    backend_->rope(k, M, Hkv, hd, positions, cfg.rope_theta);
    for (int64_t b = 0; b < batch; ++b) {  // each sequence its own cache
      auto* kc = static_cast<uint16_t*>(seqs[b].k[i].get());
      auto* vc = static_cast<uint16_t*>(seqs[b].v[i].get());
      backend_->kv_append(dims, k + b * m * Hkv * hd, v + b * m * Hkv * hd, m, pos0, kc, vc);
      backend_->attention(dims, q + b * m * H * hd, m, pos0, kc, vc, att + b * m * H * hd);
    }
    lin(l, LinearId::O, att, tmp);
    backend_->add(h, tmp, M * D);
    norm(l.mlp_norm, h, M, x);
    lin(l, LinearId::Gate, x, g);
    lin(l, LinearId::Up, x, u);
    backend_->swiglu(g, u, M * l.ffn, g);
    float* mid = g;
    if (l.down_hadamard != nullptr) {
      backend_->hadamard(*l.down_hadamard, g, M);
    } else if (l.down_rotation != nullptr) {
      backend_->linear(*l.down_rotation, g, M, u, nullptr);  // up's output is spent: u = g · R
      mid = u;
    }
    lin(l, LinearId::Down, mid, tmp);
    backend_->add(h, tmp, M * D);
  }
  if (last_only) {  // each sequence's last row into row b of x, then the head over those rows
    for (int64_t b = 0; b < batch; ++b) norm(final_norm_, h + (b * m + m - 1) * D, 1, x + b * D);
  } else {
    norm(final_norm_, h, M, x);
  }
  backend_->linear(*head_, x, rows, logits, nullptr);
  backend_->to_host(out, logits, size_t(rows * cfg.vocab) * sizeof(float));
  if (backend_->take_nonfinite_act_input())
    fail_input("--device {}: an activation-quantized module's input held NaN or Inf (the model's activations "
               "overflowed or its weights are damaged); the CPU path refuses the same input",
               backend_->name());
  for (int64_t b = 0; b < batch; ++b) seqs[b].length = pos0 + m;
}

KVCache DecoderRunner::new_cache(int64_t batch, int64_t capacity) {
  const ModelConfig& cfg = model_.config();
  auto seqs = std::make_shared<std::vector<Sequence>>(size_t(batch));
  const size_t bytes = size_t(cfg.n_kv_heads * capacity * cfg.head_dim) * sizeof(uint16_t);
  for (Sequence& s : *seqs) {
    s.capacity = capacity;
    for (int64_t i = 0; i < cfg.n_layers; ++i) {
      s.k.push_back(backend_->alloc(bytes));
      s.v.push_back(backend_->alloc(bytes));
    }
  }
  KVCache c;
  c.type = KvCacheType::F16;
  c.capacity = capacity;
  c.device_bytes = int64_t(2 * bytes) * cfg.n_layers * batch;
  c.device = seqs;
  return c;
}

at::Tensor DecoderRunner::forward(const at::Tensor& ids, KVCache* cache, bool last_only) {
  if (ids.dim() != 2) fail_input("forward expects token ids [batch, tokens], got {} dims", ids.dim());
  const at::Tensor flat = ids.to(at::kLong).contiguous();
  const int64_t B = flat.size(0), T = flat.size(1);
  if (T == 0) fail_input("forward of no tokens");
  const int64_t rows = last_only ? 1 : T;
  at::Tensor logits = at::empty({B, rows, model_.config().vocab}, at::kFloat);
  std::vector<Sequence>* seqs = nullptr;
  KVCache scratch_cache;
  if (cache != nullptr) {
    seqs = static_cast<std::vector<Sequence>*>(cache->device.get());
    if (seqs == nullptr) fail_input("this KV cache was not made by the {} runner (Model::new_cache)", device());
  } else {
    scratch_cache = new_cache(B, T);
    seqs = static_cast<std::vector<Sequence>*>(scratch_cache.device.get());
  }
  if (int64_t(seqs->size()) != B) fail_input("KV cache holds {} sequences, the batch has {}", seqs->size(), B);
  // Sequences in chunks of at most max_rows_ rows (one sequence where it alone is longer): their rows share every
  // linear op, each weight read once per chunk; the activations' scratch stays bounded by the chunk.
  const int64_t per_chunk = std::max<int64_t>(1, max_rows_ / T);
  for (int64_t b = 0; b < B; b += per_chunk) {
    const int64_t n = std::min(per_chunk, B - b);
    run_batch(flat.data_ptr<int64_t>() + b * T, n, T, seqs->data() + b, last_only,
              logits.data_ptr<float>() + b * rows * model_.config().vocab);
  }
  if (cache != nullptr) cache->length += T;
  return logits;
}

}  // namespace ptq
