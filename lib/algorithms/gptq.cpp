#include "algorithms/gptq.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <numeric>
#include <vector>

#include <ATen/ATen.h>

#include "core/error.h"
#include "io/gguf.h"
#include "io/gguf_kquants.h"
#include "io/safetensors.h"
#include "kernels/gptq_ops.h"
#include "model/model.h"

namespace ptq {

namespace {

constexpr double kDampGrowth = 10;  // percdamp multiplier per retry
constexpr int kDampRetries = 3;     // 0.01 -> 0.1 -> 1 -> 10: beyond that H itself is broken (checked finite)

double next_percdamp(double p) { return p > 0 ? p * kDampGrowth : GptqOptions{}.percdamp; }

std::string damp_warning(std::string_view name, double first, double used) {
  return fmt::format("{}: the damped Hessian was not positive definite with percdamp {}; used percdamp {}", name,
                     first, used);
}

// W [out, in] and H [in, in] as fresh contiguous fp32 tensors, checked.
std::pair<at::Tensor, at::Tensor> checked_inputs(const LinearQuantRequest& rq) {
  at::Tensor w = checked_weight(rq.weight, rq.spec, rq.name).clone();
  const int64_t in = w.size(1);
  if (!rq.hessian.defined())
    fail_input("{}: gptq needs the layer's Hessian from calibration data; none was given", rq.name);
  if (rq.hessian.dim() != 2 || rq.hessian.size(0) != in || rq.hessian.size(1) != in)
    fail_input("{}: Hessian has shape {}; expected [{}, {}] for a weight [{}, {}]", rq.name,
               shape_str(rq.hessian.sizes().vec()), in, in, w.size(0), in);
  at::Tensor h = rq.hessian.to(at::kFloat).clone().contiguous();
  check_finite(h, rq.name + " Hessian");
  // Every column would count as dead and GPTQ would zero the whole weight: no inputs were seen (or the stats file is
  // damaged); that is a calibration problem to report, not a result.
  if (h.diagonal().abs().max().item<float>() == 0.f)
    fail_input("{}: the Hessian is all zero (calibration saw no input to this module); recalibrate or check the stats "
               "file", rq.name);
  const GptqOptions& o = rq.gptq;
  if (!(o.percdamp >= 0) || !std::isfinite(o.percdamp))
    fail_input("{}: percdamp {} is not a finite value >= 0", rq.name, o.percdamp);
  if (o.block_size < 1) fail_input("{}: GPTQ block size {} must be at least 1", rq.name, o.block_size);
  return {w, h};
}

// True when column i starts a group whose grid is computed during the sweep (static groups are precomputed).
bool starts_group(bool static_groups, int64_t i, int64_t width) { return i % width == 0 && !static_groups; }

// g_idx and the column -> grid mapping after act-order: with static groups (or a single group) column c
// belongs to group c / width; otherwise groups form in permuted order, column perm[j] in group j / width.
std::vector<int32_t> group_index(bool static_groups, const std::vector<int64_t>& perm, int64_t width) {
  std::vector<int32_t> g(perm.size());
  for (size_t j = 0; j < perm.size(); ++j) {
    const int64_t col = perm[j];
    g[col] = static_cast<int32_t>((static_groups ? col : static_cast<int64_t>(j)) / width);
  }
  return g;
}

// ---- fast path: ATen, fp32, lazy blocks ------------------------------------------------------------------

// Steps 4-5: U upper with U^T U = (H + lambda I)^-1, raising percdamp on failure.
at::Tensor inverse_cholesky_upper(const at::Tensor& h, const LinearQuantRequest& rq, std::string& warning) {
  const double mean_diag = h.diagonal().mean().item<double>();
  double p = rq.gptq.percdamp;
  for (int attempt = 0;; ++attempt, p = next_percdamp(p)) {
    at::Tensor hd = h.clone();
    hd.diagonal().add_(p * mean_diag);
    auto [l, info] = at::linalg_cholesky_ex(hd);
    if (info.item<int64_t>() == 0) {
      auto [u, info_u] = at::linalg_cholesky_ex(at::cholesky_inverse(l), /*upper=*/true);
      if (info_u.item<int64_t>() == 0 && at::isfinite(u).all().item<bool>()) {
        if (attempt > 0) warning = damp_warning(rq.name, rq.gptq.percdamp, p);
        return u;
      }
    }
    if (attempt == kDampRetries)
      fail_input("{}: the Hessian is not positive definite even with percdamp {} (tried from {})", rq.name, p,
                 rq.gptq.percdamp);
  }
}

// Rows [i, end) of wt as they stand at column i of the sweep: rows inside the lazy block are up to date, rows past it
// still miss the block's pending update -err[0, i-i1) * U[i1..i, i2..end) (a group's current weights).
using CurrentRows = std::function<at::Tensor(int64_t end)>;
// Quantizes column i (row i of wt, fp32 [out], fully updated) and returns its dequantized values.
using ColumnQuantizer = std::function<at::Tensor(int64_t i, const at::Tensor& col, const CurrentRows& current)>;

// 6. The sweep over wt = W^T [in, out] in blocks of B columns; inside a block every update is applied at once, to the
// block only, then the lazy batch updates every later column. Returns GPTQ's loss sum (w - q)^2 / U_ii^2 / 2.
double gptq_sweep(at::Tensor& wt, const at::Tensor& u, int64_t block_size, const ColumnQuantizer& quantize_column) {
  const int64_t in = wt.size(0), out = wt.size(1);
  const float* ud = u.data_ptr<float>();
  double loss = 0;
  for (int64_t i1 = 0; i1 < in; i1 += block_size) {
    const int64_t i2 = std::min(i1 + block_size, in), count = i2 - i1;
    at::Tensor block = wt.slice(0, i1, i2);  // a view: updates land in wt
    at::Tensor err = at::empty({count, out});
    for (int64_t i = i1; i < i2; ++i) {
      const CurrentRows current = [&](int64_t end) {
        at::Tensor cur = block.slice(0, i - i1, std::min(end, i2) - i1);
        if (end > i2)
          cur = at::cat({cur, wt.slice(0, i2, end) - u.slice(0, i1, i).slice(1, i2, end).t().mm(err.slice(0, 0, i - i1))});
        return cur;
      };
      const at::Tensor col = block[i - i1];
      const at::Tensor diff = col - quantize_column(i, col, current);
      const double d = ud[i * in + i];
      loss += diff.dot(diff).item<double>() / (d * d) / 2;
      const at::Tensor e = err[i - i1].copy_(diff / d);
      if (i + 1 < i2) block.slice(0, i - i1 + 1).addr_(u[i].slice(0, i + 1, i2), e, 1, -1);
    }
    if (i2 < in) wt.slice(0, i2).addmm_(u.slice(0, i1, i2).slice(1, i2).t(), err, 1, -1);
  }
  return loss;
}

// 2. Dead columns (H_ii = 0): no calibration signal, so the weight is irrelevant to the objective; zeroed, H_ii = 1.
void zero_dead_columns(at::Tensor& w, at::Tensor& h) {
  const at::Tensor dead = h.diagonal() == 0;
  h.diagonal().masked_fill_(dead, 1);
  w.masked_fill_(dead.unsqueeze(0), 0);
}

// Steps 1-3 and 7, shared by the CPU sweep and the device sweep.
struct SweepSetup {
  at::Tensor wt, h;  // W^T [in, out] and H [in, in], dead columns zeroed, in sweep order (act-order's permutation)
  int64_t out = 0, in = 0, width = 0, groups = 0;
  bool per_tensor = false, static_groups = false;
  std::vector<GridTensors> fixed;  // static groups' grids, natural group order
  std::vector<int64_t> perm;       // sweep position -> input column
};

SweepSetup prepare_sweep(const LinearQuantRequest& rq) {
  auto [w, h] = checked_inputs(rq);
  const WeightQuantSpec& spec = rq.spec;
  SweepSetup s;
  s.out = w.size(0);
  s.in = w.size(1);
  s.width = group_width(spec, s.in);
  s.groups = group_count(spec, s.in);
  s.per_tensor = spec.group_size == kPerTensor;
  s.static_groups = rq.gptq.static_groups && spec.group_size > 0;
  zero_dead_columns(w, h);
  // Work on W^T [in, out]: column i of W is the contiguous row i, and its update is a rank-1 addr_.
  s.wt = w.t().contiguous();
  // 3. Static groups' grids, before any update.
  if (s.static_groups)
    for (int64_t g = 0; g < s.groups; ++g)
      s.fixed.push_back(find_grid(s.wt.slice(0, g * s.width, (g + 1) * s.width).t(), spec.bits, spec.sym, spec.mse));
  s.perm.resize(s.in);
  std::iota(s.perm.begin(), s.perm.end(), 0);
  if (rq.gptq.act_order) {
    const at::Tensor p = std::get<1>(at::sort(h.diagonal(), /*stable=*/true, /*dim=*/0, /*descending=*/true));
    std::copy_n(p.data_ptr<int64_t>(), s.in, s.perm.begin());
    s.wt = s.wt.index_select(0, p);
    h = h.index_select(0, p).index_select(1, p);
  }
  s.h = h.contiguous();
  return s;
}

// The per-tensor grid: computed at column 0 from the whole (not yet updated) weight, stored on every row.
GridTensors per_tensor_grid(const SweepSetup& s, const WeightQuantSpec& spec) {
  const GridTensors g = find_grid(s.wt.reshape({1, -1}), spec.bits, spec.sym, spec.mse);
  return {g.scale.expand({s.out}), g.inv_scale.expand({s.out}), g.zero.expand({s.out})};
}

// 7. codes [in, out] and grids [G, out] in sweep order -> the weight in column order.
QuantizedWeight finish_sweep(const SweepSetup& s, const WeightQuantSpec& spec, const at::Tensor& codes,
                             const at::Tensor& scales, const at::Tensor& zeros) {
  std::vector<int64_t> inv(s.in);
  for (int64_t j = 0; j < s.in; ++j) inv[s.perm[j]] = j;
  QuantizedWeight qw;
  qw.spec = spec;
  qw.q = codes.index_select(0, at::tensor(inv, at::kLong)).t().to(at::kByte).contiguous();
  qw.scales = scales.t().contiguous();
  qw.zeros = zeros.t().to(at::kInt).contiguous();
  qw.g_idx = at::tensor(group_index(s.static_groups, s.perm, s.width), at::kInt);
  return qw;
}

LinearQuantResult gptq_quantize_cpu(const LinearQuantRequest& rq) {
  SweepSetup s = prepare_sweep(rq);
  const WeightQuantSpec& spec = rq.spec;
  const int64_t out = s.out, in = s.in, width = s.width;
  at::Tensor scales = at::empty({s.groups, out}), zeros = at::empty({s.groups, out});
  auto store_grid = [&](int64_t group, const GridTensors& g) {
    scales[group].copy_(g.scale);
    zeros[group].copy_(g.zero);
  };
  for (int64_t g = 0; g < static_cast<int64_t>(s.fixed.size()); ++g) store_grid(g, s.fixed[g]);

  // 4-5.
  LinearQuantResult result;
  const at::Tensor u = inverse_cholesky_upper(s.h, rq, result.warning).contiguous();  // LAPACK returns it column-major

  // 6. A group's grid is computed at its first column, from its current weights.
  at::Tensor codes = at::empty({in, out});
  GridTensors grid;
  result.loss = gptq_sweep(s.wt, u, rq.gptq.block_size, [&](int64_t i, const at::Tensor& col, const CurrentRows& current) {
    if (s.per_tensor && i == 0) {
      grid = per_tensor_grid(s, spec);
      store_grid(0, grid);
    } else if (starts_group(s.static_groups, i, width) && !s.per_tensor) {
      grid = find_grid(current(std::min(i + width, in)).t(), spec.bits, spec.sym, spec.mse);
      store_grid(i / width, grid);
    } else if (s.static_groups) {
      grid = s.fixed[s.perm[i] / width];
    }
    const at::Tensor q = quantize_codes(col, grid, spec.bits);
    codes[i].copy_(q);
    return dequantize_codes(q, grid);
  });
  result.weight = finish_sweep(s, spec, codes, scales, zeros);
  return result;
}

}  // namespace

LinearQuantResult gptq_quantize_on(kernels::GptqOps& ops, const LinearQuantRequest& rq) {
  SweepSetup s = prepare_sweep(rq);
  const WeightQuantSpec& spec = rq.spec;
  const int64_t out = s.out, in = s.in;

  // 4-5. U from the damped Hessian, raising percdamp on failure.
  LinearQuantResult result;
  std::shared_ptr<void> u = ops.alloc(static_cast<size_t>(in * in) * sizeof(float));
  {
    const std::shared_ptr<void> h = upload_tensor(ops, s.h);
    const std::shared_ptr<void> work = ops.alloc(static_cast<size_t>(2 * in * in) * sizeof(double));
    const double mean_diag = s.h.diagonal().mean().item<double>();
    double p = rq.gptq.percdamp;
    for (int attempt = 0;; ++attempt, p = next_percdamp(p)) {
      if (ops.inverse_cholesky_upper(static_cast<const float*>(h.get()), in, p * mean_diag,
                                     static_cast<double*>(work.get()), static_cast<float*>(u.get()))) {
        if (attempt > 0) result.warning = damp_warning(rq.name, rq.gptq.percdamp, p);
        break;
      }
      if (attempt == kDampRetries)
        fail_input("{}: the Hessian is not positive definite even with percdamp {} (tried from {})", rq.name, p,
                   rq.gptq.percdamp);
    }
  }

  // 6. Grids given before the sweep (static groups, per tensor) or computed on the device at each group's start.
  at::Tensor scale = at::ones({s.groups, out}), inv_scale = at::ones({s.groups, out}), zero = at::zeros({s.groups, out});
  auto set_grid = [&](int64_t g, const GridTensors& grid) {
    scale[g].copy_(grid.scale);
    inv_scale[g].copy_(grid.inv_scale);
    zero[g].copy_(grid.zero);
  };
  for (int64_t g = 0; g < static_cast<int64_t>(s.fixed.size()); ++g) set_grid(g, s.fixed[g]);
  if (s.per_tensor) set_grid(0, per_tensor_grid(s, spec));
  std::vector<int32_t> column_group(static_cast<size_t>(in));
  for (int64_t i = 0; i < in; ++i)
    column_group[i] = static_cast<int32_t>((s.static_groups ? s.perm[i] : i) / s.width);

  kernels::GptqSweepBuffers b = kernels::alloc_gptq_sweep(ops, in, out, s.groups);
  kernels::GptqSweep& v = b.view;
  ops.to_device(v.wt, s.wt.data_ptr(), s.wt.nbytes());
  ops.to_device(v.scale, scale.data_ptr(), scale.nbytes());
  ops.to_device(v.inv_scale, inv_scale.data_ptr(), inv_scale.nbytes());
  ops.to_device(v.zero, zero.data_ptr(), zero.nbytes());
  ops.to_device(b.column_group.get(), column_group.data(), column_group.size() * sizeof(int32_t));
  v.u = static_cast<const float*>(u.get());
  v.width = s.width;
  v.bits = spec.bits;
  v.sym = spec.sym;
  v.mse = spec.mse;
  v.grids_at_starts = !s.static_groups && !s.per_tensor;
  kernels::gptq_sweep(ops, v);

  result.loss = download_into(ops, b.loss.get(), at::empty({out}, at::kDouble)).sum().item<double>();
  result.weight = finish_sweep(s, spec, download_into(ops, b.codes.get(), at::empty({in, out}, at::kByte)),
                               download_into(ops, b.scale.get(), scale), download_into(ops, b.zero.get(), zero));
  return result;
}

std::shared_ptr<kernels::GptqOps> gptq_ops(GptqDevice device) {
  switch (device) {
    case GptqDevice::Cpu: return nullptr;
    case GptqDevice::Cuda: return kernels::cuda_gptq_ops();
    case GptqDevice::CudaHostEmulation: return kernels::cuda_gptq_host_emulation();
  }
  throw std::logic_error("gptq_ops: unknown device");
}

LinearQuantResult gptq_quantize(const LinearQuantRequest& rq) {
  if (rq.gptq.device == GptqDevice::Cpu) return gptq_quantize_cpu(rq);
  return gptq_quantize_on(*gptq_ops(rq.gptq.device), rq);
}

GgmlQuantResult gptq_ggml_quantize(const LinearQuantRequest& rq, GgmlType type) {
  auto [w, h] = checked_inputs(rq);
  const int64_t out = w.size(0), in = w.size(1);
  const GgmlGridTraits* grid = ggml_grid_traits(type);
  if (!grid) fail_input("{}: GPTQ on a GGUF grid needs a block type; {} has none", rq.name, ggml_type_name(type));
  if (in % ggml_type_traits(type).block_size != 0)
    fail_input("{}: rows of {} are not a multiple of {}'s block {}", rq.name, in, ggml_type_name(type),
               ggml_type_traits(type).block_size);
  if (rq.gptq.device != GptqDevice::Cpu)
    fail_input("{}: GPTQ on a GGUF block grid ({}) runs on the CPU only; drop --device cuda", rq.name,
               ggml_type_name(type));
  if (rq.gptq.act_order)
    fail_input("{}: GGUF blocks hold columns in natural order; GPTQ on {} cannot use act_order", rq.name,
               ggml_type_name(type));
  // llama.cpp's importance of each input column, Σx² / tokens (its imatrix): H = (2/n) Σ x x^T, so diag(H) / 2.
  const at::Tensor importance = (h.diagonal() / 2).contiguous();
  zero_dead_columns(w, h);

  // 3. The static grid: ggml's own block quantizer on the (dead-column-zeroed) weights, importance-weighted or its
  // reference search (GptqOptions::ggml_importance); GPTQ then chooses the codes on it.
  GgmlQuantResult result;
  result.type = type;
  result.blocks = ggml_encode(type, w.data_ptr<float>(), out, in, rq.name,
                              rq.gptq.ggml_importance ? importance.data_ptr<float>() : nullptr);
  const size_t row_bytes = ggml_nbytes(type, in);
  const int64_t subs = in / grid->sub;
  at::Tensor a = at::empty({out, subs}), b = at::empty({out, subs});
  for (int64_t r = 0; r < out; ++r)
    ggml_row_grid(type, result.blocks.data() + r * row_bytes, in, a[r].data_ptr<float>(), b[r].data_ptr<float>());
  // Per column, the grid of every row: column i uses sub-block i / sub, stored [subs, out] contiguous.
  a = a.t().contiguous();
  b = b.t().contiguous();

  // 4-6.
  at::Tensor wt = w.t().contiguous();
  const at::Tensor u = inverse_cholesky_upper(h, rq, result.warning).contiguous();
  at::Tensor codes = at::empty({in, out}, at::kChar), xhat = at::empty({in, out});
  result.loss = gptq_sweep(wt, u, rq.gptq.block_size, [&](int64_t i, const at::Tensor& col, const CurrentRows&) {
    const at::Tensor c = col.contiguous();
    const int64_t s = i / grid->sub;
    ggml_round_to_grid(*grid, c.data_ptr<float>(), a[s].data_ptr<float>(), b[s].data_ptr<float>(), out,
                       codes[i].data_ptr<int8_t>(), xhat[i].data_ptr<float>());
    return xhat[i];
  });

  // The blocks with GPTQ's codes; they must decode to exactly the values the sweep used.
  const at::Tensor row_codes = codes.t().contiguous();
  result.w_hat = xhat.t().contiguous();
  std::vector<float> decoded(static_cast<size_t>(in));
  for (int64_t r = 0; r < out; ++r) {
    uint8_t* row = result.blocks.data() + r * row_bytes;
    ggml_row_set_codes(type, row, in, row_codes[r].data_ptr<int8_t>());
    ggml_decode(type, row, decoded.data(), in);
    const float* want = result.w_hat[r].data_ptr<float>();
    for (int64_t c = 0; c < in; ++c)
      if (std::memcmp(&decoded[c], &want[c], sizeof(float)) != 0)
        throw std::logic_error(fmt::format("{}: row {} column {} of the {} blocks decodes to {} (code {}), not GPTQ's {}",
                                           rq.name, r, c, ggml_type_name(type), decoded[c],
                                           row_codes[r][c].item<int>(), want[c]));
  }
  return result;
}

// ---- reference: scalar loops in double -------------------------------------------------------------------

namespace {

using Matrix = std::vector<double>;  // row-major n x n

// Lower Cholesky factor of a symmetric n x n matrix; false when a pivot is not positive.
bool cholesky_lower(const Matrix& a, int64_t n, Matrix& l) {
  l.assign(n * n, 0);
  for (int64_t j = 0; j < n; ++j) {
    double s = a[j * n + j];
    for (int64_t k = 0; k < j; ++k) s -= l[j * n + k] * l[j * n + k];
    if (!(s > 0)) return false;
    l[j * n + j] = std::sqrt(s);
    for (int64_t i = j + 1; i < n; ++i) {
      double t = a[i * n + j];
      for (int64_t k = 0; k < j; ++k) t -= l[i * n + k] * l[j * n + k];
      l[i * n + j] = t / l[j * n + j];
    }
  }
  return true;
}

// (L L^T)^-1 = L^-T L^-1 from the lower factor L.
Matrix inverse_from_cholesky(const Matrix& l, int64_t n) {
  Matrix li(n * n, 0);  // L^-1, lower, by forward substitution column by column
  for (int64_t c = 0; c < n; ++c) {
    li[c * n + c] = 1 / l[c * n + c];
    for (int64_t i = c + 1; i < n; ++i) {
      double s = 0;
      for (int64_t k = c; k < i; ++k) s -= l[i * n + k] * li[k * n + c];
      li[i * n + c] = s / l[i * n + i];
    }
  }
  Matrix inv(n * n, 0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t k = std::max(i, j); k < n; ++k) s += li[k * n + i] * li[k * n + j];
      inv[i * n + j] = s;
    }
  return inv;
}

// Grid of the current (double) weights w[r * in + c] for c in [c0, c1), via the float primitives.
GridParams grid_of(const std::vector<double>& w, int64_t in, int64_t r0, int64_t r1, int64_t c0, int64_t c1,
                   const WeightQuantSpec& spec) {
  std::vector<float> v;
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t c = c0; c < c1; ++c) v.push_back(static_cast<float>(w[r * in + c]));
  return find_grid_ref(v.data(), static_cast<int64_t>(v.size()), 1, spec.bits, spec.sym, spec.mse);
}

}  // namespace

LinearQuantResult gptq_ref(const LinearQuantRequest& rq) {
  auto [wf, hf] = checked_inputs(rq);
  const WeightQuantSpec& spec = rq.spec;
  const GptqOptions& opt = rq.gptq;
  const int64_t out = wf.size(0), n = wf.size(1), width = group_width(spec, n), groups = group_count(spec, n);
  const bool per_tensor = spec.group_size == kPerTensor;
  const bool static_groups = opt.static_groups && spec.group_size > 0;
  std::vector<double> w(wf.data_ptr<float>(), wf.data_ptr<float>() + out * n);
  Matrix h(hf.data_ptr<float>(), hf.data_ptr<float>() + n * n);

  for (int64_t c = 0; c < n; ++c)
    if (h[c * n + c] == 0) {
      h[c * n + c] = 1;
      for (int64_t r = 0; r < out; ++r) w[r * n + c] = 0;
    }
  std::vector<GridParams> grids(out * groups);  // [out, G]
  if (static_groups)
    for (int64_t r = 0; r < out; ++r)
      for (int64_t g = 0; g < groups; ++g)
        grids[r * groups + g] = grid_of(w, n, r, r + 1, g * width, (g + 1) * width, spec);
  std::vector<int64_t> perm(n);
  std::iota(perm.begin(), perm.end(), 0);
  if (opt.act_order)
    std::stable_sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) { return h[a * n + a] > h[b * n + b]; });
  std::vector<double> wp(out * n);
  Matrix hp(n * n);
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t r = 0; r < out; ++r) wp[r * n + j] = w[r * n + perm[j]];
    for (int64_t k = 0; k < n; ++k) hp[j * n + k] = h[perm[j] * n + perm[k]];
  }

  LinearQuantResult result;
  double mean_diag = 0;
  for (int64_t c = 0; c < n; ++c) mean_diag += hp[c * n + c] / static_cast<double>(n);
  Matrix l, u_lower;  // u_lower = U^T
  double p = opt.percdamp;
  for (int attempt = 0;; ++attempt, p = next_percdamp(p)) {
    Matrix hd = hp;
    for (int64_t c = 0; c < n; ++c) hd[c * n + c] += p * mean_diag;
    if (cholesky_lower(hd, n, l) && cholesky_lower(inverse_from_cholesky(l, n), n, u_lower)) {
      if (attempt > 0) result.warning = damp_warning(rq.name, opt.percdamp, p);
      break;
    }
    if (attempt == kDampRetries)
      fail_input("{}: the Hessian is not positive definite even with percdamp {} (tried from {})", rq.name, p,
                 opt.percdamp);
  }
  auto U = [&](int64_t i, int64_t j) { return u_lower[j * n + i]; };

  std::vector<uint8_t> q(out * n);
  double loss = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (starts_group(static_groups, i, width)) {
      const GridParams whole = per_tensor ? grid_of(wp, n, 0, out, 0, n, spec) : GridParams{};
      for (int64_t r = 0; r < out; ++r)
        grids[r * groups + i / width] = per_tensor ? whole : grid_of(wp, n, r, r + 1, i, i + width, spec);
    }
    const int64_t g = static_groups ? perm[i] / width : i / width;
    for (int64_t r = 0; r < out; ++r) {
      const GridParams& gp = grids[r * groups + g];
      const double x = wp[r * n + i];
      const double code = std::clamp(std::nearbyint(x * gp.inv_scale) + gp.zero, 0.0,
                                     static_cast<double>(max_code(spec.bits)));
      q[r * n + i] = static_cast<uint8_t>(code);
      const double diff = x - gp.scale * (code - gp.zero);
      loss += diff * diff / (U(i, i) * U(i, i)) / 2;
      const double e = diff / U(i, i);
      for (int64_t j = i + 1; j < n; ++j) wp[r * n + j] -= e * U(i, j);
    }
  }

  QuantizedWeight& qw = result.weight;
  qw.spec = spec;
  qw.q = at::empty({out, n}, at::kByte);
  qw.scales = at::empty({out, groups}, at::kFloat);
  qw.zeros = at::empty({out, groups}, at::kInt);
  for (int64_t r = 0; r < out; ++r) {
    for (int64_t j = 0; j < n; ++j) qw.q.data_ptr<uint8_t>()[r * n + perm[j]] = q[r * n + j];
    for (int64_t g = 0; g < groups; ++g) {
      qw.scales.data_ptr<float>()[r * groups + g] = grids[r * groups + g].scale;
      qw.zeros.data_ptr<int32_t>()[r * groups + g] = static_cast<int32_t>(grids[r * groups + g].zero);
    }
  }
  qw.g_idx = at::tensor(group_index(static_groups, perm, width), at::kInt);
  result.loss = loss;
  return result;
}

}  // namespace ptq
