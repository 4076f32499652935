#include "transforms/rotate.h"

#include <algorithm>
#include <vector>

#include <ATen/ATen.h>

#include "core/error.h"
#include "io/safetensors.h"

namespace ptq {

namespace {

// Double elements per block of a product: 2^22 · 8 bytes = 32 MB of temporaries, whatever the matrix size.
constexpr int64_t kBlockElems = int64_t{1} << 22;

// Loose on purpose: an fp32-rounded orthogonal matrix of size n has ‖QᵀQ - I‖ <= ~2u√n (1.5e-5 at n = 16384);
// the mistakes this catches (a missing 1/√n, a non-orthogonal matrix, a transposed factor of a non-square
// product) are of order 1.
constexpr double kOrthoTol = 1e-3;

std::string shape_of(const at::Tensor& t) { return t.defined() ? shape_str(t.sizes().vec()) : "undefined"; }

// Checks that Q is an orthogonal [n, n] matrix and returns it in double. Orthogonality is probed with four
// fixed vectors P (‖QᵀQP - P‖ / ‖P‖), O(n²) instead of the O(n³) of forming QᵀQ.
at::Tensor checked_rotation(const at::Tensor& Q, int64_t n, const char* what) {
  if (!Q.defined() || Q.dim() != 2 || Q.size(0) != n || Q.size(1) != n)
    fail_input("{}: the rotation must be [{}, {}], got {}", what, n, n, shape_of(Q));
  if (!at::isFloatingType(Q.scalar_type()))
    fail_input("{}: the rotation must be a floating tensor, got {}", what, c10::toString(Q.scalar_type()));
  const at::Tensor q = Q.to(at::kDouble);
  if (!at::isfinite(q).all().item<bool>()) fail_input("{}: the rotation contains NaN or Inf", what);
  const at::Tensor r = at::arange(n, at::kDouble).unsqueeze(1) + 1, c = at::arange(4, at::kDouble).unsqueeze(0);
  const at::Tensor probe = at::cos(0.37 * r * (c + 1) + c);
  const double err = (at::mm(q.t(), at::mm(q, probe)) - probe).norm().item<double>() / probe.norm().item<double>();
  if (!(err < kOrthoTol))
    fail_input("{}: the rotation is not orthogonal: |QᵀQp - p| / |p| = {:.3g} on probe vectors (expected < {})",
               what, err, kOrthoTol);
  return q;
}

// W·Qd (Qd double) rounded once to fp32, in row blocks so the double copy of W stays small.
at::Tensor times(const at::Tensor& W, const at::Tensor& Qd) {
  at::Tensor out = at::empty({W.size(0), Qd.size(1)}, at::kFloat);
  const int64_t rows = W.size(0), block = std::max<int64_t>(1, kBlockElems / std::max<int64_t>(1, W.size(1)));
  for (int64_t r = 0; r < rows; r += block) {
    const int64_t nr = std::min(block, rows - r);
    out.narrow(0, r, nr).copy_(at::mm(W.narrow(0, r, nr).to(at::kDouble), Qd));
  }
  return out;
}

// Qdᵀ·W = (Wᵀ·Qd)ᵀ.
at::Tensor transposed_times(const at::Tensor& Qd, const at::Tensor& W) { return times(W.t(), Qd).t().contiguous(); }

void require_norm_plain(const ModelConfig& cfg, const Norm& n, const char* which, const char* what) {
  if (!n.weight.defined()) fail_input("{}: layer weights have no {} (not loaded?)", what, which);
  if (n.index.defined())
    fail_input("{}: {} has a channel-split index; split channels after rotating, not before (the rotation "
               "mixes all {} channels)",
               what, which, cfg.hidden);
  if (n.bias.defined())
    fail_input("{}: {} has a bias (an OutlierTune shift); shift after rotating, not before (RMSNorm(h)·γ + β does "
               "not commute with the rotation)",
               what, which);
}

void require_linear(const ModelConfig& cfg, const LayerWeights& w, LinearId id, int64_t in, const char* what) {
  const Linear& l = w[id];
  if (!l.defined())
    fail_input("{}: layer weights have no {} (not loaded?)", what, linear_module_name(cfg, id));
  if (l.kernel)
    fail_input("{}: {} already runs through a quantized kernel; rotate the FP weights before quantizing", what,
               linear_module_name(cfg, id));
  if (in >= 0 && l.weight.size(1) != in)
    fail_input("{}: {} has {} input channels, expected {}", what, linear_module_name(cfg, id), l.weight.size(1), in);
}

std::vector<LinearId> mlp_inputs(const ModelConfig& cfg) {
  return cfg.gated_mlp ? std::vector<LinearId>{LinearId::Gate, LinearId::Up} : std::vector<LinearId>{LinearId::Up};
}

}  // namespace

void check_rotation_supported(const ModelConfig& cfg) {
  if (cfg.norm != NormKind::RMSNorm)
    fail_input("rotation: {} uses LayerNorm, whose mean subtraction does not commute with a rotation "
               "(LayerNorm(h·Q) != LayerNorm(h)·Q unless Q maps the all-ones direction to itself); only RMSNorm "
               "models (llama, mistral, qwen2) can be rotated",
               cfg.model_type);
  if (!cfg.pre_norm)
    fail_input("rotation: {} is post-norm: the norm's output is the residual stream itself, so its γ cannot be "
               "folded into the consumers and the stream cannot stay rotated",
               cfg.model_type);
  if (cfg.embed_dim != cfg.hidden)
    fail_input("rotation: the embedding width {} differs from hidden_size {} (a projection sits between them)",
               cfg.embed_dim, cfg.hidden);
}

void fold_norm_into_consumers(const ModelConfig& cfg, LayerWeights& w) {
  constexpr const char* what = "fold_norm_into_consumers";
  check_rotation_supported(cfg);
  struct Point {
    Norm& norm;
    const char* name;
    std::vector<LinearId> consumers;
  };
  const Point points[] = {{w.attn_norm, "attn_norm", {LinearId::Q, LinearId::K, LinearId::V}},
                          {w.mlp_norm, "mlp_norm", mlp_inputs(cfg)}};
  for (const Point& p : points) {
    require_norm_plain(cfg, p.norm, p.name, what);
    if (!at::isfinite(p.norm.weight).all().item<bool>()) fail_input("{}: {} γ contains NaN or Inf", what, p.name);
    for (LinearId id : p.consumers) require_linear(cfg, w, id, cfg.hidden, what);
  }
  for (const Point& p : points) {
    const at::Tensor gamma = p.norm.weight.to(at::kFloat);
    for (LinearId id : p.consumers) w[id].weight = w[id].weight * gamma.unsqueeze(0);
    p.norm.weight = at::ones_like(gamma);
  }
}

void rotate_layer(const ModelConfig& cfg, LayerWeights& w, const at::Tensor& Q) {
  constexpr const char* what = "rotate_layer";
  check_rotation_supported(cfg);
  for (const Norm* norm : {&w.attn_norm, &w.mlp_norm}) {
    const char* name = norm == &w.attn_norm ? "attn_norm" : "mlp_norm";
    require_norm_plain(cfg, *norm, name, what);
    if (!(norm->weight == 1).all().item<bool>())
      fail_input("{}: {} γ is not all ones; call fold_norm_into_consumers first (RMSNorm(h·Q)·γ != "
                 "RMSNorm(h)·γ·Q unless γ = 1)",
                 what, name);
  }
  std::vector<LinearId> inputs = {LinearId::Q, LinearId::K, LinearId::V};
  for (LinearId id : mlp_inputs(cfg)) inputs.push_back(id);
  for (LinearId id : inputs) require_linear(cfg, w, id, cfg.hidden, what);
  for (LinearId id : {LinearId::O, LinearId::Down}) {
    require_linear(cfg, w, id, -1, what);
    if (w[id].weight.size(0) != cfg.hidden)
      fail_input("{}: {} has {} output channels, expected {}", what, linear_module_name(cfg, id),
                 w[id].weight.size(0), cfg.hidden);
  }
  const at::Tensor q = checked_rotation(Q, cfg.hidden, what);
  for (LinearId id : inputs) w[id].weight = times(w[id].weight, q);
  for (LinearId id : {LinearId::O, LinearId::Down}) {
    Linear& l = w[id];
    l.weight = transposed_times(q, l.weight);
    if (l.bias.defined()) l.bias = times(l.bias.unsqueeze(0), q).squeeze(0);  // (Qᵀb)ᵀ = bᵀQ
  }
}

void add_down_rotation(const ModelConfig& cfg, LayerWeights& w, const at::Tensor& H) {
  constexpr const char* what = "add_down_rotation";
  require_linear(cfg, w, LinearId::Down, -1, what);
  Linear& down = w[LinearId::Down];
  const at::Tensor h = checked_rotation(H, down.weight.size(1), what);
  down.weight = times(down.weight, h);
  w.down_rotation = w.down_rotation.defined() ? times(w.down_rotation, h) : h.to(at::kFloat);
}

at::Tensor rotate_embedding(const at::Tensor& embed, const at::Tensor& Q) {
  if (!embed.defined() || embed.dim() != 2)
    fail_input("rotate_embedding: the embedding must be [vocab, hidden], got {}", shape_of(embed));
  return times(embed, checked_rotation(Q, embed.size(1), "rotate_embedding"));
}

at::Tensor fold_final_norm_into_head(const at::Tensor& lm_head, const at::Tensor& gamma) {
  if (!lm_head.defined() || lm_head.dim() != 2)
    fail_input("fold_final_norm_into_head: lm_head must be [vocab, hidden], got {}", shape_of(lm_head));
  if (!gamma.defined() || gamma.dim() != 1 || gamma.size(0) != lm_head.size(1))
    fail_input("fold_final_norm_into_head: γ must be a vector of {} values, got {}", lm_head.size(1),
               shape_of(gamma));
  return lm_head.to(at::kFloat) * gamma.to(at::kFloat).unsqueeze(0);
}

at::Tensor rotate_head(const at::Tensor& lm_head, const at::Tensor& gamma, const at::Tensor& Q) {
  if (!lm_head.defined() || lm_head.dim() != 2)
    fail_input("rotate_head: lm_head must be [vocab, hidden], got {}", shape_of(lm_head));
  at::Tensor q = checked_rotation(Q, lm_head.size(1), "rotate_head");
  if (gamma.defined()) {
    if (gamma.dim() != 1 || gamma.size(0) != lm_head.size(1))
      fail_input("rotate_head: γ must be a vector of {} values, got {}", lm_head.size(1), shape_of(gamma));
    q = gamma.to(at::kDouble).unsqueeze(1) * q;  // diag(γ)·Q
  }
  return times(lm_head, q);
}

}  // namespace ptq
