#include "transforms/fold.h"

#include <ATen/ATen.h>

#include "core/error.h"

namespace ptq {

namespace {

// The consumers that read a point's channels as their input columns.
std::vector<LinearId> consumers(const ModelConfig& cfg, FoldPoint p) {
  switch (p) {
    case FoldPoint::AttnNorm: return {LinearId::Q, LinearId::K, LinearId::V};
    case FoldPoint::MlpNorm:
      return cfg.gated_mlp ? std::vector<LinearId>{LinearId::Gate, LinearId::Up} : std::vector<LinearId>{LinearId::Up};
    case FoldPoint::VToO: return {LinearId::O};
    case FoldPoint::UpToDown:
    case FoldPoint::GateToDown: return {LinearId::Down};
    case FoldPoint::QToK: return {};
  }
  return {};
}

// Checks a factor vector and returns it as contiguous fp32.
at::Tensor checked_vector(const ModelConfig& cfg, const LayerWeights& w, FoldPoint p, const at::Tensor& t,
                          const char* what, bool positive) {
  const int64_t n = fold_point_width(cfg, w, p);
  if (!t.defined() || t.dim() != 1 || t.size(0) != n)
    fail_input("fold {}: {} must be a vector of {} values, got shape {}", fold_point_name(p), what, n,
               t.defined() ? shape_str(t.sizes().vec()) : "undefined");
  at::Tensor f = t.to(at::kFloat).contiguous();
  if (!at::isfinite(f).all().item<bool>())
    fail_input("fold {}: {} contains NaN or Inf; expected finite values", fold_point_name(p), what);
  if (positive && !(f > 0).all().item<bool>())
    fail_input("fold {}: {} has a value <= 0 (min {}); expected positive factors (a sign flip does not "
               "commute with ReLU, and 0 is not invertible)",
               fold_point_name(p), what, f.min().item<double>());
  return f;
}

void require_pre_norm(const ModelConfig& cfg, FoldPoint p) {
  if (!cfg.pre_norm)
    fail_input("fold {}: the model is post-norm (do_layer_norm_before=false): the norm output also feeds the "
               "residual stream, so a factor folded into it is not undone by the consumers",
               fold_point_name(p));
}

// s[n_kv_heads * hd] -> [n_heads * hd]: query head h reads kv head h / n_rep, and heads are contiguous
// blocks of hd channels, so kv head j's block is repeated for query heads j·n_rep ... j·n_rep + n_rep - 1.
at::Tensor repeat_kv(const ModelConfig& cfg, const at::Tensor& s) {
  const int64_t hkv = cfg.n_kv_heads, hd = cfg.head_dim, rep = cfg.n_rep();
  return s.view({hkv, 1, hd}).expand({hkv, rep, hd}).reshape({hkv * rep * hd});
}

// Rows (output channels) of a linear scaled by r, bias too.
void scale_rows(Linear& l, const at::Tensor& r) {
  l.weight = l.weight * r.unsqueeze(1);
  if (l.bias.defined()) l.bias = l.bias * r;
}

void require_linear(const ModelConfig& cfg, const LayerWeights& w, FoldPoint p, LinearId id) {
  if (!w[id].defined())
    fail_input("fold {}: layer weights have no {} (not loaded?)", fold_point_name(p), linear_module_name(cfg, id));
}

}  // namespace

const char* fold_point_name(FoldPoint p) {
  switch (p) {
    case FoldPoint::AttnNorm: return "attn_norm->q,k,v";
    case FoldPoint::MlpNorm: return "mlp_norm->gate,up";
    case FoldPoint::VToO: return "v->o";
    case FoldPoint::UpToDown: return "up->down";
    case FoldPoint::QToK: return "q<->k";
    case FoldPoint::GateToDown: return "gate->down";
  }
  return "?";
}

int64_t fold_point_width(const ModelConfig& cfg, const LayerWeights& w, FoldPoint p) {
  switch (p) {
    case FoldPoint::AttnNorm:
    case FoldPoint::MlpNorm: {
      const Norm& n = p == FoldPoint::AttnNorm ? w.attn_norm : w.mlp_norm;
      return n.weight.defined() ? n.weight.size(0) : cfg.hidden;
    }
    case FoldPoint::VToO:
    case FoldPoint::QToK: return cfg.n_kv_heads * cfg.head_dim;
    case FoldPoint::UpToDown:
    case FoldPoint::GateToDown: return w[LinearId::Up].defined() ? w[LinearId::Up].weight.size(0) : cfg.ffn;
  }
  return 0;
}

void fold_input_scale(const ModelConfig& cfg, LayerWeights& w, FoldPoint p, const at::Tensor& s_in) {
  if (p == FoldPoint::GateToDown)
    fail_input("fold {}: not function-preserving: down reads act(gate)·up and act = SiLU is not homogeneous "
               "(silu(x/s) != silu(x)/s); fold into up->down instead",
               fold_point_name(p));
  const at::Tensor s = checked_vector(cfg, w, p, s_in, "s", /*positive=*/true);
  const at::Tensor inv = s.reciprocal();
  for (LinearId id : consumers(cfg, p)) require_linear(cfg, w, p, id);
  switch (p) {
    case FoldPoint::AttnNorm:
    case FoldPoint::MlpNorm: {
      require_pre_norm(cfg, p);
      Norm& n = p == FoldPoint::AttnNorm ? w.attn_norm : w.mlp_norm;
      n.weight = n.weight * inv;
      if (n.bias.defined()) n.bias = n.bias * inv;
      break;
    }
    case FoldPoint::VToO:
      require_linear(cfg, w, p, LinearId::V);
      scale_rows(w[LinearId::V], inv);
      break;
    case FoldPoint::UpToDown:
      require_linear(cfg, w, p, LinearId::Up);
      if (!cfg.gated_mlp && cfg.act != Activation::ReLU)
        fail_input("fold {}: not function-preserving for an ungated MLP with GELU: down reads act(up) and only "
                   "ReLU satisfies act(x/s) = act(x)/s",
                   fold_point_name(p));
      scale_rows(w[LinearId::Up], inv);
      break;
    case FoldPoint::QToK: {
      require_linear(cfg, w, p, LinearId::Q);
      require_linear(cfg, w, p, LinearId::K);
      if (cfg.use_rope) {
        // RoPE rotates the pair (i, i + hd/2) of each head; a scale commutes with that rotation only when
        // both members carry the same factor.
        const int64_t half = cfg.head_dim / 2;
        const at::Tensor heads = s.view({cfg.n_kv_heads, 2, half});
        if (!heads.select(1, 0).equal(heads.select(1, 1)))
          fail_input("fold {}: the model applies RoPE after q/k, which rotates channel pairs (i, i+{}); s must "
                     "satisfy s_i = s_(i+{}) in every head (max mismatch {})",
                     fold_point_name(p), half, half,
                     (heads.select(1, 0) - heads.select(1, 1)).abs().max().item<double>());
      }
      scale_rows(w[LinearId::Q], repeat_kv(cfg, inv));
      scale_rows(w[LinearId::K], s);
      return;
    }
    case FoldPoint::GateToDown: return;
  }
  const at::Tensor cols = p == FoldPoint::VToO ? repeat_kv(cfg, s) : s;
  for (LinearId id : consumers(cfg, p)) w[id].weight = w[id].weight * cols.unsqueeze(0);
}

void add_input_shift(const ModelConfig& cfg, LayerWeights& w, FoldPoint p, const at::Tensor& z_in) {
  if (p == FoldPoint::UpToDown || p == FoldPoint::GateToDown)
    fail_input("fold {}: a shift is not function-preserving here: down reads act(gate)·up (or act(up)), so "
               "shifting up by z changes down's input by a token-dependent amount",
               fold_point_name(p));
  if (p == FoldPoint::QToK)
    fail_input("fold {}: a shift of q or k changes the attention scores; only scales fold here",
               fold_point_name(p));
  const at::Tensor z = checked_vector(cfg, w, p, z_in, "z", /*positive=*/false);
  for (LinearId id : consumers(cfg, p)) require_linear(cfg, w, p, id);
  auto shift_bias = [](at::Tensor& bias, const at::Tensor& delta) {
    bias = bias.defined() ? bias + delta : delta.clone();
  };
  if (p == FoldPoint::VToO) {
    require_linear(cfg, w, p, LinearId::V);
    shift_bias(w[LinearId::V].bias, -z);
  } else {
    require_pre_norm(cfg, p);
    shift_bias(p == FoldPoint::AttnNorm ? w.attn_norm.bias : w.mlp_norm.bias, -z);
  }
  const at::Tensor cols = p == FoldPoint::VToO ? repeat_kv(cfg, z) : z;
  for (LinearId id : consumers(cfg, p)) shift_bias(w[id].bias, at::mv(w[id].weight, cols));
}

namespace {

// New input channel c' of the consumers reads current channel index[c'] scaled by frac[c'] (the producer emits
// it); channels from `pad_from` on are padding, whose consumer columns are zeroed.
void apply_channel_map(const ModelConfig& cfg, LayerWeights& w, FoldPoint p, const std::vector<int64_t>& index,
                       const std::vector<float>& frac, int64_t pad_from) {
  const at::Tensor idx = at::tensor(index, at::kLong);
  const at::Tensor f = at::tensor(frac, at::kFloat);
  if (p == FoldPoint::UpToDown) {
    Linear& up = w[LinearId::Up];
    up.weight = up.weight.index_select(0, idx) * f.unsqueeze(1);
    if (up.bias.defined()) up.bias = up.bias.index_select(0, idx) * f;
    if (cfg.gated_mlp) {
      Linear& gate = w[LinearId::Gate];
      gate.weight = gate.weight.index_select(0, idx);
      if (gate.bias.defined()) gate.bias = gate.bias.index_select(0, idx);
    }
  } else {
    Norm& nm = p == FoldPoint::AttnNorm ? w.attn_norm : w.mlp_norm;
    nm.index = nm.index.defined() ? nm.index.index_select(0, idx) : idx;
    nm.weight = nm.weight.index_select(0, idx) * f;
    if (nm.bias.defined()) nm.bias = nm.bias.index_select(0, idx) * f;
  }
  for (LinearId id : consumers(cfg, p)) {
    at::Tensor cols = w[id].weight.index_select(1, idx);
    if (pad_from < static_cast<int64_t>(index.size())) cols.narrow(1, pad_from, cols.size(1) - pad_from).zero_();
    w[id].weight = cols;
  }
}

}  // namespace

void split_input_channels(const ModelConfig& cfg, LayerWeights& w, FoldPoint p, const std::vector<int64_t>& channels,
                          const std::vector<int64_t>& k) {
  if (p == FoldPoint::VToO || p == FoldPoint::QToK || p == FoldPoint::GateToDown)
    fail_input("split {}: not supported: only norm -> consumers and up -> down can emit split channels "
               "(attention reads q, k, v per head of head_dim channels)",
               fold_point_name(p));
  if (channels.size() != k.size())
    fail_input("split {}: {} channels but {} split counts; expected one k per channel", fold_point_name(p),
               channels.size(), k.size());
  for (LinearId id : consumers(cfg, p)) require_linear(cfg, w, p, id);
  if (p == FoldPoint::UpToDown && !cfg.gated_mlp && cfg.act != Activation::ReLU)
    fail_input("split {}: not function-preserving for an ungated MLP with GELU (act(x/k) != act(x)/k)",
               fold_point_name(p));
  if (p != FoldPoint::UpToDown) require_pre_norm(cfg, p);
  const int64_t n = fold_point_width(cfg, w, p);
  // index[c'] = the current channel that new channel c' copies; frac[c'] = the share of it that c' carries.
  std::vector<int64_t> index(n);
  for (int64_t j = 0; j < n; ++j) index[j] = j;
  std::vector<float> frac(n, 1.0f);
  std::vector<bool> seen(n, false);
  for (size_t i = 0; i < channels.size(); ++i) {
    const int64_t c = channels[i];
    if (c < 0 || c >= n || seen[c])
      fail_input("split {}: channel {} is outside [0, {}) or listed twice", fold_point_name(p), c, n);
    if (k[i] < 2) fail_input("split {}: channel {} has k = {}; expected k >= 2", fold_point_name(p), c, k[i]);
    seen[c] = true;
    const float share = 1.0f / static_cast<float>(k[i]);
    frac[c] = share;
    for (int64_t r = 1; r < k[i]; ++r) {
      index.push_back(c);
      frac.push_back(share);
    }
  }
  apply_channel_map(cfg, w, p, index, frac, /*pad_from=*/static_cast<int64_t>(index.size()));
}

void pad_input_channels(const ModelConfig& cfg, LayerWeights& w, FoldPoint p, int64_t extra) {
  if (p == FoldPoint::VToO || p == FoldPoint::QToK || p == FoldPoint::GateToDown)
    fail_input("pad {}: not supported: only norm -> consumers and up -> down can emit extra channels",
               fold_point_name(p));
  if (extra < 0) fail_input("pad {}: {} extra channels requested", fold_point_name(p), extra);
  for (LinearId id : consumers(cfg, p)) require_linear(cfg, w, p, id);
  if (p != FoldPoint::UpToDown) require_pre_norm(cfg, p);
  if (extra == 0) return;
  const int64_t n = fold_point_width(cfg, w, p);
  std::vector<int64_t> index(n);
  for (int64_t j = 0; j < n; ++j) index[j] = j;
  std::vector<float> frac(n, 1.0f);
  // Padding channels copy channel 0 with share 0: the producer emits exact zeros (norm γ·0 and β·0; up rows · 0,
  // so silu(gate)·0 = relu(0) = 0), and their consumer columns are zero.
  index.resize(n + extra, 0);
  frac.resize(n + extra, 0.0f);
  apply_channel_map(cfg, w, p, index, frac, n);
}

}  // namespace ptq
