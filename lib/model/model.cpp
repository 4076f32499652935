#include "model/model.h"

#include <algorithm>
#include <cstdlib>
#include <cmath>
#include <limits>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "core/error.h"
#include "core/progress.h"
#include "kernels/hadamard.h"
#include "kernels/linear.h"

namespace ptq {

namespace {

const char* linear_field(const ArchTraits& t, LinearId id) {
  switch (id) {
    case LinearId::Q: return t.q_proj;
    case LinearId::K: return t.k_proj;
    case LinearId::V: return t.v_proj;
    case LinearId::O: return t.o_proj;
    case LinearId::Gate: return t.gate_proj;
    case LinearId::Up: return t.up_proj;
    case LinearId::Down: return t.down_proj;
  }
  return "";
}

// x [..., k] through packed weights W [n, k] on the CPU kernels -> [..., n].
at::Tensor packed_linear(const kernels::PackedWeights& w, const at::Tensor& x, const at::Tensor& bias,
                         bool int8_activations = false) {
  const at::Tensor xc = x.to(at::kFloat).contiguous();
  std::vector<int64_t> shape = xc.sizes().vec();
  if (shape.empty() || shape.back() != w.k)
    fail_input("linear input has {} features, the module takes {}", shape.empty() ? 0 : shape.back(), w.k);
  shape.back() = w.n;
  at::Tensor y = at::empty(shape, at::kFloat);
  const at::Tensor b = bias.defined() ? bias.to(at::kFloat).contiguous() : at::Tensor();
  const int64_t m = xc.numel() / w.k;
  const float* bp = b.defined() ? b.data_ptr<float>() : nullptr;
  // int8 activations where linear_q8 is the faster kernel (q8_max_tokens: every call on AVX-512 VNNI, decode-sized
  // ones elsewhere); otherwise the fp32 kernels, which are exact.
  if (int8_activations && m <= kernels::q8_max_tokens() && kernels::q8_supports(w)) {
    kernels::linear_q8(w, xc.data_ptr<float>(), m, y.data_ptr<float>(), bp);
  } else {
    kernels::linear(w, xc.data_ptr<float>(), m, y.data_ptr<float>(), bp);
  }
  return y;
}

at::Tensor linear(const Linear& l, const at::Tensor& x, bool int8_activations) {
  if (l.kernel) return l.kernel->forward(x);
  if (l.packed) return packed_linear(*l.packed, x, l.bias, int8_activations);
  return l.bias.defined() ? at::linear(x, l.weight, l.bias) : at::matmul(x, l.weight.t());
}

// Modules reading the same x: through their kernels' forward_siblings where every one has a kernel, else one by one.
std::vector<at::Tensor> linear_siblings(const std::vector<const Linear*>& ls, const at::Tensor& x,
                                        bool int8_activations) {
  std::vector<const LinearKernel*> kernels;
  for (const Linear* l : ls)
    if (l->kernel) kernels.push_back(l->kernel.get());
  if (kernels.size() == ls.size()) return kernels[0]->forward_siblings(x, kernels);
  std::vector<at::Tensor> out;
  for (const Linear* l : ls) out.push_back(linear(*l, x, int8_activations));
  return out;
}

// Writes this call's keys/values [B, Hkv, T, hd] at positions pos0.. of the cache, in its storage type.
void kv_store(KVCache& c, int64_t layer, int64_t pos0, const at::Tensor& k, const at::Tensor& v) {
  const int64_t T = k.size(2);
  if (c.type != KvCacheType::Int8) {
    c.k[layer].narrow(2, pos0, T).copy_(k);
    c.v[layer].narrow(2, pos0, T).copy_(v);
    return;
  }
  auto put = [&](const at::Tensor& x, at::Tensor& codes, at::Tensor& step) {
    at::Tensor s = x.abs().amax(-1, /*keepdim=*/true) / 127.0;
    s = at::where(s > 0, s, at::ones_like(s));  // an all-zero vector keeps step 1 (codes 0)
    codes.narrow(2, pos0, T).copy_(at::round(x / s).clamp(-127, 127).to(at::kChar));
    step.narrow(2, pos0, T).copy_(s);
  };
  put(k, c.k[layer], c.k_step[layer]);
  put(v, c.v[layer], c.v_step[layer]);
}

// Keys or values of positions [0, L) as fp32.
at::Tensor kv_read(const KVCache& c, const std::vector<at::Tensor>& x, const std::vector<at::Tensor>& step,
                   int64_t layer, int64_t L) {
  const at::Tensor t = x[layer].narrow(2, 0, L);
  switch (c.type) {
    case KvCacheType::F32: return t;
    case KvCacheType::F16: return t.to(at::kFloat);
    case KvCacheType::Int8: return t.to(at::kFloat) * step[layer].narrow(2, 0, L);
  }
  return t;
}

at::Tensor apply_norm(const ModelConfig& cfg, const Norm& n, const at::Tensor& x) {
  const bool layer_norm = cfg.norm == NormKind::LayerNorm;
  if (layer_norm && !n.index.defined()) return at::layer_norm(x, {x.size(-1)}, n.weight, n.bias, cfg.norm_eps);
  at::Tensor y = layer_norm ? at::layer_norm(x, {x.size(-1)}, {}, {}, cfg.norm_eps)
                            : x * at::rsqrt(x.pow(2).mean(-1, /*keepdim=*/true) + cfg.norm_eps);
  // Only folds (lib/transforms/fold.h) give an RMSNorm a bias (OutlierTune shift) or an index (channel split).
  if (n.index.defined()) y = y.index_select(-1, n.index);
  y = y * n.weight;
  return n.bias.defined() ? y + n.bias : y;
}

// HF rotate-half RoPE: x * cos + rotate_half(x) * sin, rotate_half(x) = cat(-x2, x1).
at::Tensor apply_rope(const at::Tensor& x, const ForwardContext& ctx) {
  const int64_t half = x.size(-1) / 2;
  at::Tensor x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  return x * ctx.cos + at::cat({-x2, x1}, -1) * ctx.sin;
}

at::Tensor activation(const ModelConfig& cfg, const at::Tensor& x) {
  switch (cfg.act) {
    case Activation::SiLU: return at::silu(x);
    case Activation::ReLU: return at::relu(x);
    case Activation::GELU: return at::gelu(x);
  }
  return x;
}

// Scores are computed for one sequence and a block of query rows at a time, so that the score block
// stays around kScoreBlockFloats (8 MB): large enough for BLAS, small enough to avoid fresh page-faulted
// allocations (measured on stories260K, 8 windows of 512 tokens at once: 4x slower unblocked). Blocking
// never depends on the batch size, so a sequence's result does not either.
constexpr int64_t kScoreBlockFloats = 2 << 20;

// q [B, H, T, hd], k/v [B, Hkv, L, hd] -> [B, H, T, hd]. GQA without repeating keys: the rep query heads
// of one kv head are stacked along the row axis. Causal: a block of queries only reads keys up to its
// last position.
at::Tensor causal_attention(const at::Tensor& q_in, const at::Tensor& k, const at::Tensor& v,
                            const ForwardContext& ctx, int64_t rep) {
  const int64_t B = q_in.size(0), H = q_in.size(1), T = q_in.size(2), hd = q_in.size(3);
  const int64_t Hkv = k.size(1), L = k.size(2);
  const double scale = 1.0 / std::sqrt(double(hd));
  at::Tensor q = q_in.contiguous().view({B, Hkv, rep, T, hd});
  at::Tensor out = at::empty({B, Hkv, rep, T, hd}, q.options());
  const int64_t rows = std::max<int64_t>(1, kScoreBlockFloats / (H * L));
  for (int64_t b = 0; b < B; ++b) {
    at::Tensor kt = k[b].transpose(1, 2);  // [Hkv, hd, L]
    at::Tensor vb = v[b];                  // [Hkv, L, hd]
    for (int64_t t0 = 0; t0 < T; t0 += rows) {
      const int64_t tc = std::min(rows, T - t0);
      const int64_t lc = std::min(L, ctx.pos0 + t0 + tc);
      at::Tensor qc = q[b].narrow(2, t0, tc).reshape({Hkv, rep * tc, hd});
      at::Tensor mask = ctx.mask.narrow(0, t0, tc).narrow(1, 0, lc).repeat({rep, 1});
      // scale * q kᵀ + mask in one pass, then softmax over keys.
      at::Tensor p = at::baddbmm(mask, qc, kt.narrow(2, 0, lc), 1.0, scale).softmax(-1);
      out[b].narrow(2, t0, tc).copy_(at::bmm(p, vb.narrow(1, 0, lc)).view({Hkv, rep, tc, hd}));
    }
  }
  return out.view({B, H, T, hd});
}

void expect_shape(const std::string& name, const at::Tensor& t, std::vector<int64_t> shape) {
  if (t.sizes().vec() != shape)
    fail_input("tensor \"{}\" has shape {}, expected {} from config.json", name, shape_str(t.sizes().vec()),
               shape_str(shape));
}

}  // namespace

std::shared_ptr<void> upload_tensor(kernels::Memory& mem, const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  std::shared_ptr<void> p = mem.alloc(c.nbytes());
  mem.to_device(p.get(), c.data_ptr(), c.nbytes());
  return p;
}

at::Tensor download_into(kernels::Memory& mem, const void* src, at::Tensor t) {
  mem.to_host(t.data_ptr(), src, t.nbytes());
  return t;
}

std::vector<at::Tensor> LinearKernel::forward_siblings(const at::Tensor& x,
                                                       const std::vector<const LinearKernel*>& siblings) const {
  std::vector<at::Tensor> out;
  for (const LinearKernel* k : siblings) out.push_back(k->forward(x));
  return out;
}

const char* linear_module_name(const ModelConfig& cfg, LinearId id) { return linear_field(cfg.traits(), id); }

at::Tensor dequantize_packed(const kernels::PackedWeights& w) {
  at::Tensor out = at::empty({w.n, w.k}, at::kFloat);
  float* p = out.data_ptr<float>();
  at::parallel_for(0, w.n, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) kernels::dequantize_row(w, r, p + r * w.k);
  });
  return out;
}

const char* kv_cache_type_name(KvCacheType t) {
  switch (t) {
    case KvCacheType::F32: return "f32";
    case KvCacheType::F16: return "f16";
    case KvCacheType::Int8: return "int8";
  }
  return "?";
}

KvCacheType parse_kv_cache_type(const std::string& name) {
  for (KvCacheType t : {KvCacheType::F32, KvCacheType::F16, KvCacheType::Int8})
    if (name == kv_cache_type_name(t)) return t;
  fail_input("--kv-cache: \"{}\" is not one of f32, f16, int8", name);
}

int64_t KVCache::bytes() const {
  int64_t n = device_bytes;
  for (const auto* group : {&k, &v, &k_step, &v_step})
    for (const at::Tensor& t : *group) n += t.numel() * int64_t(t.element_size());
  return n;
}

std::shared_ptr<const kernels::PackedWeights> view_archive_weight(const TensorArchive& archive,
                                                                  const std::string& module) {
  const std::string name = module + ".weight";
  if (!archive.contains(name)) return nullptr;
  const TensorView v = archive.view(name);
  kernels::WeightKind kind;
  switch (v.dtype()) {
    case DType::F32: kind = kernels::WeightKind::F32; break;
    case DType::F16: kind = kernels::WeightKind::F16; break;
    case DType::BF16: kind = kernels::WeightKind::BF16; break;
    default: return nullptr;
  }
  const std::vector<int64_t> shape = v.shape();
  if (shape.size() != 2 || shape[0] <= 0 || shape[1] <= 0) return nullptr;
  return std::make_shared<const kernels::PackedWeights>(kernels::view_float_weights(kind, v.data, shape[0], shape[1]));
}

at::Tensor to_float_tensor(const TensorView& view) {
  at::ScalarType st;
  switch (view.dtype()) {
    case DType::F32: st = at::kFloat; break;
    case DType::F16: st = at::kHalf; break;
    case DType::BF16: st = at::kBFloat16; break;
    default:
      fail_input("tensor \"{}\" has dtype {}, expected F32, F16 or BF16 for a floating-point weight", view.name(),
                 dtype_name(view.dtype()));
  }
  at::Tensor src = at::from_blob(const_cast<uint8_t*>(view.data), view.shape(), at::TensorOptions().dtype(st));
  return st == at::kFloat ? src.clone() : src.to(at::kFloat);
}

ForwardContext make_forward_context(const ModelConfig& cfg, int64_t pos0, int64_t n_new) {
  ForwardContext ctx;
  ctx.pos0 = pos0;
  ctx.n_new = n_new;
  const int64_t total = pos0 + n_new;
  if (cfg.use_rope) {
    // Angles in double, then fp32 tables: positions up to the context length stay exact.
    const int64_t hd = cfg.head_dim, half = hd / 2;
    at::Tensor inv_freq = at::empty({half}, at::kDouble);
    auto* f = inv_freq.data_ptr<double>();
    for (int64_t i = 0; i < half; ++i) f[i] = 1.0 / std::pow(cfg.rope_theta, double(2 * i) / double(hd));
    at::Tensor pos = at::arange(pos0, total, at::kDouble);
    at::Tensor ang = at::outer(pos, inv_freq);
    ang = at::cat({ang, ang}, -1);
    ctx.cos = ang.cos().to(at::kFloat);
    ctx.sin = ang.sin().to(at::kFloat);
  }
  at::Tensor q_pos = at::arange(pos0, total, at::kLong).unsqueeze(1);
  at::Tensor k_pos = at::arange(0, total, at::kLong).unsqueeze(0);
  at::Tensor blocked = k_pos > q_pos;
  if (cfg.sliding_window > 0) blocked = blocked | (q_pos - k_pos >= cfg.sliding_window);
  ctx.mask = at::zeros({n_new, total}, at::kFloat).masked_fill(blocked, -std::numeric_limits<float>::infinity());
  return ctx;
}

at::Tensor decoder_layer_forward(const ModelConfig& cfg, const LayerWeights& w, int64_t layer, const at::Tensor& h,
                                 const ForwardContext& ctx, KVCache* cache, const LinearInputHook* hook) {
  const int64_t B = h.size(0), T = h.size(1);
  const int64_t H = cfg.n_heads, Hkv = cfg.n_kv_heads, hd = cfg.head_dim, rep = cfg.n_rep();
  auto run = [&](LinearId id, const at::Tensor& x) {
    if (hook != nullptr) (*hook)(layer, id, x);
    return linear(w[id], x, ctx.int8_activations);
  };
  auto run_siblings = [&](std::initializer_list<LinearId> ids, const at::Tensor& x) {
    std::vector<const Linear*> ls;
    for (LinearId id : ids) {
      if (hook != nullptr) (*hook)(layer, id, x);
      ls.push_back(&w[id]);
    }
    return linear_siblings(ls, x, ctx.int8_activations);
  };

  // Attention block.
  at::Tensor x = cfg.pre_norm ? apply_norm(cfg, w.attn_norm, h) : h;
  const std::vector<at::Tensor> qkv = run_siblings({LinearId::Q, LinearId::K, LinearId::V}, x);
  at::Tensor q = qkv[0].view({B, T, H, hd}).transpose(1, 2);
  at::Tensor k = qkv[1].view({B, T, Hkv, hd}).transpose(1, 2);
  at::Tensor v = qkv[2].view({B, T, Hkv, hd}).transpose(1, 2);
  if (cfg.use_rope) {
    q = apply_rope(q, ctx);
    k = apply_rope(k, ctx);
  }
  int64_t L = T;
  if (cache != nullptr) {
    if (ctx.pos0 + T > cache->capacity)
      fail_input("KV cache holds {} positions; {} + {} tokens do not fit", cache->capacity, ctx.pos0, T);
    kv_store(*cache, layer, ctx.pos0, k, v);
    L = ctx.pos0 + T;
    k = kv_read(*cache, cache->k, cache->k_step, layer, L);
    v = kv_read(*cache, cache->v, cache->v_step, layer, L);
  }
  at::Tensor attn = causal_attention(q, k, v, ctx, rep).transpose(1, 2).reshape({B, T, H * hd});
  at::Tensor out = h + run(LinearId::O, attn);
  if (!cfg.pre_norm) out = apply_norm(cfg, w.attn_norm, out);

  // MLP block.
  x = cfg.pre_norm ? apply_norm(cfg, w.mlp_norm, out) : out;
  at::Tensor mid;
  if (cfg.gated_mlp) {
    const std::vector<at::Tensor> gate_up = run_siblings({LinearId::Gate, LinearId::Up}, x);
    mid = activation(cfg, gate_up[0]) * gate_up[1];
  } else {
    mid = activation(cfg, run(LinearId::Up, x));
  }
  if (w.down_hadamard != nullptr) {
    mid = mid.to(at::kFloat).contiguous();  // this layer's own temporary (silu(gate) · up): rotated in place
    kernels::hadamard_rotate(*w.down_hadamard, mid.data_ptr<float>(), mid.numel() / w.down_hadamard->n());
  } else if (w.down_rotation.defined()) {
    mid = at::matmul(mid, w.down_rotation);
  }
  out = out + run(LinearId::Down, mid);
  if (!cfg.pre_norm) out = apply_norm(cfg, w.mlp_norm, out);
  return out;
}

Model::Model(const std::string& dir) : Model(dir, SourceFactory()) {}

Model::Model(const std::string& dir, const SourceFactory& make_source) : dir_(dir), cfg_(load_model_config(dir)) {
  archive_ = std::make_unique<TensorArchive>(dir);
  source_ = make_source ? make_source(*archive_) : std::make_unique<ArchiveWeightSource>(*archive_);
  // Check the embedding's shape from the header now: a checkpoint that disagrees with its config.json is
  // refused before any work starts.
  const std::string embed_name = std::string(cfg_.traits().embed) + ".weight";
  const std::vector<int64_t> embed_shape = archive_->view(embed_name).shape();
  if (embed_shape != std::vector<int64_t>{cfg_.vocab, cfg_.embed_dim})
    fail_input("tensor \"{}\" has shape {}, expected {} from config.json", embed_name, shape_str(embed_shape),
               shape_str({cfg_.vocab, cfg_.embed_dim}));
  // A config announcing fewer layers than the file holds would silently run a truncated model.
  const std::string prefix = cfg_.layer_module(0, "");
  const std::string stem = prefix.substr(0, prefix.size() - 2);  // "model.layers."
  int64_t file_layers = 0;
  for (const auto& name : archive_->names()) {
    if (name.compare(0, stem.size(), stem) != 0) continue;
    const int64_t i = std::strtoll(name.c_str() + stem.size(), nullptr, 10);
    file_layers = std::max(file_layers, i + 1);
  }
  if (file_layers > cfg_.n_layers)
    fail_input("{}: config.json says num_hidden_layers {} but the checkpoint holds {} layers ({}{}...); the config does "
               "not belong to these weights", dir, cfg_.n_layers, file_layers, stem, file_layers - 1);
  layers_.resize(cfg_.n_layers);
}

void Model::load_io_weights() const {
  if (io_loaded_) return;
  const ArchTraits& t = cfg_.traits();
  const std::string pfx_embed = t.embed;
  if (packed_) embed_packed_ = source_->load_packed(pfx_embed);
  if (embed_packed_) {
    if (embed_packed_->n != cfg_.vocab || embed_packed_->k != cfg_.embed_dim)
      fail_input("tensor \"{}.weight\" has shape [{}, {}], expected [{}, {}] from config.json", pfx_embed,
                 embed_packed_->n, embed_packed_->k, cfg_.vocab, cfg_.embed_dim);
  } else {
    embed_ = load(pfx_embed + ".weight");
    expect_shape(pfx_embed + ".weight", embed_, {cfg_.vocab, cfg_.embed_dim});
  }
  if (*t.pos_embed) {
    pos_embed_ = load(std::string(t.pos_embed) + ".weight");
    if (pos_embed_.size(0) < cfg_.max_positions + cfg_.pos_offset || pos_embed_.size(1) != cfg_.hidden)
      fail_input("tensor \"{}.weight\" has shape {}, expected [{}, {}]", t.pos_embed, shape_str(pos_embed_.sizes().vec()),
                 cfg_.max_positions + cfg_.pos_offset, cfg_.hidden);
  }
  if (cfg_.embed_dim != cfg_.hidden) {
    project_in_ = load(std::string(t.project_in) + ".weight");
    project_out_ = load(std::string(t.project_out) + ".weight");
    expect_shape(std::string(t.project_in) + ".weight", project_in_, {cfg_.hidden, cfg_.embed_dim});
    expect_shape(std::string(t.project_out) + ".weight", project_out_, {cfg_.embed_dim, cfg_.hidden});
  }
  if (cfg_.final_norm) {
    final_norm_.weight = load(std::string(t.final_norm) + ".weight");
    expect_shape(std::string(t.final_norm) + ".weight", final_norm_.weight, {cfg_.hidden});
    if (cfg_.norm == NormKind::LayerNorm) final_norm_.bias = load(std::string(t.final_norm) + ".bias");
  }
  const std::string head_name = std::string(t.lm_head) + ".weight";
  const bool tied = cfg_.tie_embeddings && !source_->contains(head_name);
  if (packed_) head_packed_ = tied ? embed_packed_ : source_->load_packed(t.lm_head);
  if (head_packed_) {
    if (head_packed_->n != cfg_.vocab || head_packed_->k != cfg_.embed_dim)
      fail_input("tensor \"{}\" has shape [{}, {}], expected [{}, {}] from config.json", head_name, head_packed_->n,
                 head_packed_->k, cfg_.vocab, cfg_.embed_dim);
  } else if (tied) {
    if (!embed_.defined()) embed_ = dequantize_packed(*embed_packed_);
    lm_head_ = embed_;
  } else {
    lm_head_ = load(head_name);
    expect_shape(head_name, lm_head_, {cfg_.vocab, cfg_.embed_dim});
  }
  io_loaded_ = true;
}

Model::~Model() = default;

at::Tensor ArchiveWeightSource::load(const std::string& name) const {
  at::Tensor t = to_float_tensor(archive_.view(name));
  // The fp32 copy is what the caller keeps; the mapped pages would otherwise stay resident, and a model
  // streamed layer by layer would end up with the whole checkpoint in its RSS.
  archive_.release(name);
  return t;
}

at::Tensor Model::load(const std::string& name) const { return source_->load(name); }

at::Tensor Model::load_optional(const std::string& name) const {
  return source_->contains(name) ? load(name) : at::Tensor();
}

LayerWeights Model::load_layer(int64_t i) const {
  if (i < 0 || i >= cfg_.n_layers) fail_input("layer {} out of range (model has {})", i, cfg_.n_layers);
  const ArchTraits& t = cfg_.traits();
  LayerWeights w;
  // A checkpoint written after folds may give a norm an index (channel split) and an RMSNorm a bias
  // (shift); the consumers' input width is then the index length.
  auto load_norm = [&](const char* module, Norm& n) {
    const std::string iname = cfg_.layer_tensor(i, module, "index");
    if (archive_->contains(iname)) {
      const TensorView v = archive_->view(iname);
      if (v.dtype() != DType::I64 || v.shape().size() != 1)
        fail_input("tensor \"{}\" is {} {}, expected I64 [n]", iname, dtype_name(v.dtype()), shape_str(v.shape()));
      n.index = at::from_blob(const_cast<uint8_t*>(v.data), v.shape(), at::kLong).clone();
      if (n.index.numel() > 0 && (n.index.min().item<int64_t>() < 0 || n.index.max().item<int64_t>() >= cfg_.hidden))
        fail_input("tensor \"{}\" holds a channel outside [0, {})", iname, cfg_.hidden);
    }
    const int64_t width = n.index.defined() ? n.index.size(0) : cfg_.hidden;
    const std::string wname = cfg_.layer_tensor(i, module, "weight"), bname = cfg_.layer_tensor(i, module, "bias");
    n.weight = load(wname);
    expect_shape(wname, n.weight, {width});
    n.bias = cfg_.norm == NormKind::LayerNorm ? load(bname) : load_optional(bname);
    if (n.bias.defined()) expect_shape(bname, n.bias, {width});
  };
  load_norm(t.attn_norm, w.attn_norm);
  load_norm(t.mlp_norm, w.mlp_norm);
  const int64_t q_out = cfg_.n_heads * cfg_.head_dim, kv_out = cfg_.n_kv_heads * cfg_.head_dim;
  const int64_t attn_in = w.attn_norm.weight.size(0), mlp_in = w.mlp_norm.weight.size(0);
  // up_proj may have more rows than config's ffn after a split of down_proj's input channels.
  int64_t ffn = cfg_.ffn;
  if (const char* up = linear_field(t, LinearId::Up); *up != '\0') {
    for (const char* field : {"weight", "qweight"}) {  // a packed module's qweight also has `out` rows
      const std::string uname = cfg_.layer_tensor(i, up, field);
      if (archive_->contains(uname) && !archive_->view(uname).shape().empty())
        ffn = std::max(ffn, archive_->view(uname).shape()[0]);
    }
  }
  struct Expect {
    LinearId id;
    int64_t out, in;
    bool bias;
  };
  const Expect expects[] = {
      {LinearId::Q, q_out, attn_in, cfg_.qkv_bias},  {LinearId::K, kv_out, attn_in, cfg_.qkv_bias},
      {LinearId::V, kv_out, attn_in, cfg_.qkv_bias}, {LinearId::O, cfg_.hidden, q_out, cfg_.o_bias},
      {LinearId::Gate, ffn, mlp_in, cfg_.mlp_bias}, {LinearId::Up, ffn, mlp_in, cfg_.mlp_bias},
      {LinearId::Down, cfg_.hidden, ffn, cfg_.mlp_bias},
  };
  for (const Expect& e : expects) {
    const char* module = linear_field(t, e.id);
    if (*module == '\0') continue;
    Linear& l = w[e.id];
    const std::string wname = cfg_.layer_tensor(i, module, "weight");
    if (packed_) l.packed = source_->load_packed(cfg_.layer_module(i, module));
    if (l.packed) {
      if (l.packed->n != e.out || l.packed->k != e.in)
        fail_input("tensor \"{}\" has shape [{}, {}], expected {} from config.json", wname, l.packed->n, l.packed->k,
                   shape_str({e.out, e.in}));
    } else {
      l.weight = load(wname);
      expect_shape(wname, l.weight, {e.out, e.in});
    }
    const std::string bname = cfg_.layer_tensor(i, module, "bias");
    l.bias = e.bias ? load(bname) : load_optional(bname);
    if (l.bias.defined()) expect_shape(bname, l.bias, {e.out});
  }
  if (finisher_) finisher_(i, w);
  return w;
}

const LayerWeights& Model::layer(int64_t i) {
  if (i < 0 || i >= cfg_.n_layers) fail_input("layer {} out of range (model has {})", i, cfg_.n_layers);
  if (!layers_[i]) {
    layers_[i] = load_layer(i);
    // Packing a layer leaves its unpacked codes freed on the heap; glibc keeps such pages unless told.
    if (packed_) release_free_heap();
  }
  return *layers_[i];
}

void Model::release_layer(int64_t i) { layers_.at(i).reset(); }

at::Tensor Model::embed(const at::Tensor& ids, int64_t pos0) const {
  load_io_weights();
  if (ids.numel() > 0) {
    const int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
    if (lo < 0 || hi >= cfg_.vocab) fail_input("token id {} outside the vocabulary [0, {})", lo < 0 ? lo : hi, cfg_.vocab);
  }
  at::Tensor h;
  if (embed_packed_) {
    const at::Tensor flat = ids.reshape({-1}).to(at::kLong).contiguous();
    h = at::empty({flat.numel(), cfg_.embed_dim}, at::kFloat);
    const int64_t* id = flat.data_ptr<int64_t>();
    float* out = h.data_ptr<float>();
    for (int64_t j = 0; j < flat.numel(); ++j) kernels::dequantize_row(*embed_packed_, id[j], out + j * cfg_.embed_dim);
    std::vector<int64_t> shape = ids.sizes().vec();
    shape.push_back(cfg_.embed_dim);
    h = h.view(shape);
  } else {
    h = at::embedding(embed_, ids);
  }
  if (project_in_.defined()) h = at::matmul(h, project_in_.t());
  if (pos_embed_.defined()) {
    const int64_t T = ids.size(1);
    if (pos0 + T > cfg_.max_positions)
      fail_input("{} positions exceed the model's learned {} positions", pos0 + T, cfg_.max_positions);
    h = h + pos_embed_.narrow(0, pos0 + cfg_.pos_offset, T);
  }
  return h;
}

at::Tensor Model::head(const at::Tensor& h) const {
  load_io_weights();
  at::Tensor x = cfg_.final_norm ? apply_norm(cfg_, final_norm_, h) : h;
  if (project_out_.defined()) x = at::matmul(x, project_out_.t());
  if (head_packed_) return packed_linear(*head_packed_, x, at::Tensor());
  return at::matmul(x, lm_head_.t());
}

at::Tensor Model::hidden(const at::Tensor& ids, KVCache* cache, const LinearInputHook* hook) {
  if (ids.dim() != 2) fail_input("forward expects token ids [batch, tokens], got {} dims", ids.dim());
  const int64_t pos0 = cache != nullptr ? cache->length : 0;
  const int64_t T = ids.size(1);
  ForwardContext ctx = make_forward_context(cfg_, pos0, T);
  ctx.int8_activations = int8_act_;
  at::Tensor h = embed(ids, pos0);
  for (int64_t i = 0; i < cfg_.n_layers; ++i) h = decoder_layer_forward(cfg_, layer(i), i, h, ctx, cache, hook);
  if (cache != nullptr) cache->length = pos0 + T;
  return h;
}

at::Tensor Model::forward(const at::Tensor& ids, KVCache* cache, const LinearInputHook* hook) {
  if (runner_) {
    if (hook != nullptr) fail_input("calibration hooks run only on the CPU forward, not on the {} runner", runner_->device());
    return runner_->forward(ids, cache, false);
  }
  return head(hidden(ids, cache, hook));
}

at::Tensor Model::forward_last(const at::Tensor& ids, KVCache* cache) {
  if (runner_) return runner_->forward(ids, cache, true);
  const at::Tensor h = hidden(ids, cache, nullptr);
  return head(h.narrow(1, h.size(1) - 1, 1).contiguous());
}

const Norm& Model::final_norm() const {
  load_io_weights();
  return final_norm_;
}

std::shared_ptr<const kernels::PackedWeights> Model::packed_head() const {
  load_io_weights();
  if (head_packed_) return head_packed_;
  return view_float_tensor(lm_head_);  // the head has no packed form: its fp32 weight, viewed
}

std::shared_ptr<const kernels::PackedWeights> view_float_tensor(const at::Tensor& w) {
  auto t = std::make_shared<at::Tensor>(w.to(at::kFloat).contiguous());
  return std::make_shared<const kernels::PackedWeights>(kernels::view_float_weights(
      kernels::WeightKind::F32, t->data_ptr<float>(), t->size(0), t->size(1), std::shared_ptr<const void>(t, t.get())));
}

KVCache Model::new_cache(int64_t batch, int64_t capacity) const {
  if (runner_) return runner_->new_cache(batch, capacity);
  KVCache c;
  c.type = kv_type_;
  c.capacity = capacity;
  const at::ScalarType st = kv_type_ == KvCacheType::F32 ? at::kFloat : kv_type_ == KvCacheType::F16 ? at::kHalf : at::kChar;
  for (int64_t i = 0; i < cfg_.n_layers; ++i) {
    c.k.push_back(at::zeros({batch, cfg_.n_kv_heads, capacity, cfg_.head_dim}, st));
    c.v.push_back(at::zeros({batch, cfg_.n_kv_heads, capacity, cfg_.head_dim}, st));
    if (kv_type_ == KvCacheType::Int8) {
      c.k_step.push_back(at::ones({batch, cfg_.n_kv_heads, capacity, 1}, at::kFloat));
      c.v_step.push_back(at::ones({batch, cfg_.n_kv_heads, capacity, 1}, at::kFloat));
    }
  }
  return c;
}

int64_t Model::packed_weight_bytes() {
  if (runner_) return runner_->weight_bytes();
  load_io_weights();
  int64_t n = head_packed_ ? head_packed_->bytes() : lm_head_.defined() ? lm_head_.numel() * 4 : 0;
  for (int64_t i = 0; i < cfg_.n_layers; ++i)
    for (const Linear& l : layer(i).linear)
      n += l.kernel ? l.kernel->weight_bytes() : l.packed ? l.packed->bytes() : l.weight.defined() ? l.weight.numel() * 4 : 0;
  return n;
}

int64_t Model::parameter_count() const {
  int64_t n = 0;
  for (const auto& name : archive_->names()) n += archive_->view(name).numel();
  return n;
}

}  // namespace ptq
