#include "calibration/observers.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "core/error.h"
#include "quant/quantizer.h"

namespace ptq {

namespace {

float float_from_bits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Which observer provides each statistic (stat_traits() order).
enum class Kind { Count, MinMax, AbsMax, MeanAbs, SumSq, Midrange, Histogram, Hessian };
constexpr Kind kProvider[kNumStats] = {Kind::Count,     Kind::MinMax,    Kind::MinMax,    Kind::AbsMax,
                                       Kind::MeanAbs,   Kind::SumSq,     Kind::Midrange,  Kind::Histogram,
                                       Kind::Histogram, Kind::Histogram, Kind::Histogram, Kind::Hessian};

std::unique_ptr<Observer> make_observer(Kind kind, int64_t channels, const std::string& name) {
  switch (kind) {
    case Kind::Count: return std::make_unique<TokenCountObserver>(channels, name);
    case Kind::MinMax: return std::make_unique<ChannelMinMaxObserver>(channels, name);
    case Kind::AbsMax: return std::make_unique<ChannelAbsMaxObserver>(channels, name);
    case Kind::MeanAbs: return std::make_unique<ChannelMeanAbsObserver>(channels, name);
    case Kind::SumSq: return std::make_unique<ChannelSumSqObserver>(channels, name);
    case Kind::Midrange: return std::make_unique<MidrangeMeanObserver>(channels, name);
    case Kind::Histogram: return std::make_unique<AbsHistogramObserver>(channels, name);
    case Kind::Hessian: return std::make_unique<HessianObserver>(channels, name);
  }
  return nullptr;
}

// Calls f(c0, c1) on disjoint channel ranges in parallel; each call walks every row for its channels, so a
// channel's accumulation order is the row order whatever the thread count.
template <typename F>
void for_channel_blocks(int64_t channels, const F& f) {
  at::parallel_for(0, channels, /*grain_size=*/16, f);
}

at::Tensor to_tensor(const std::vector<float>& v) { return at::tensor(v, at::kFloat); }
at::Tensor to_tensor(const std::vector<double>& v, double divisor) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = static_cast<float>(v[i] / divisor);
  return to_tensor(out);
}

// One pass over the bit patterns of x (fp32, contiguous): an all-ones exponent is Inf or NaN.
bool all_finite(const at::Tensor& x) {
  const float* d = x.data_ptr<float>();
  std::atomic<bool> finite{true};
  at::parallel_for(0, x.numel(), 1 << 16, [&](int64_t begin, int64_t end) {
    uint32_t bad = 0;
    for (int64_t i = begin; i < end; ++i) {
      uint32_t u;
      std::memcpy(&u, d + i, sizeof u);
      bad |= static_cast<uint32_t>((u & 0x7f800000u) == 0x7f800000u);
    }
    if (bad != 0) finite = false;
  });
  return finite;
}

}  // namespace

void Observer::observe(const at::Tensor& x) {
  if ((x.dim() != 2 && x.dim() != 3) || x.size(-1) != channels_ || !x.is_floating_point() || x.numel() == 0)
    fail_input("{}: observed input has shape {} ({}); expected non-empty float [tokens, {}] or [samples, tokens, {}]",
               name_, shape_str(x.sizes().vec()), c10::toString(x.scalar_type()), channels_, channels_);
  at::NoGradGuard no_grad;
  add((x.dim() == 2 ? x.unsqueeze(0) : x).to(at::kFloat).contiguous());
  observed_ = true;
}

std::vector<StatTensor> Observer::results() const {
  if (!observed_) fail_input("{}: no input was observed, so there are no statistics", name_);
  return finish();
}

void TokenCountObserver::add(const at::Tensor& x) { tokens_ += x.size(0) * x.size(1); }

std::vector<StatTensor> TokenCountObserver::finish() const {
  return {{Stat::Tokens, at::full({1}, tokens_, at::kLong)}};
}

void ChannelMinMaxObserver::add(const at::Tensor& x) {
  const int64_t C = channels_, rows = x.numel() / C;
  if (min_.empty()) {
    min_.assign(C, std::numeric_limits<float>::infinity());
    max_.assign(C, -std::numeric_limits<float>::infinity());
  }
  const float* d = x.data_ptr<float>();
  float *mn = min_.data(), *mx = max_.data();
  for_channel_blocks(C, [&](int64_t c0, int64_t c1) {
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = d + r * C;
      for (int64_t c = c0; c < c1; ++c) {
        mn[c] = row[c] < mn[c] ? row[c] : mn[c];
        mx[c] = row[c] > mx[c] ? row[c] : mx[c];
      }
    }
  });
}

std::vector<StatTensor> ChannelMinMaxObserver::finish() const {
  return {{Stat::Min, to_tensor(min_)}, {Stat::Max, to_tensor(max_)}};
}

void ChannelAbsMaxObserver::add(const at::Tensor& x) {
  const int64_t C = channels_, rows = x.numel() / C;
  absmax_.resize(C, 0.f);
  const float* d = x.data_ptr<float>();
  float* am = absmax_.data();
  for_channel_blocks(C, [&](int64_t c0, int64_t c1) {
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = d + r * C;
      for (int64_t c = c0; c < c1; ++c) am[c] = std::max(am[c], std::fabs(row[c]));
    }
  });
}

std::vector<StatTensor> ChannelAbsMaxObserver::finish() const { return {{Stat::AbsMax, to_tensor(absmax_)}}; }

void ChannelMeanAbsObserver::add(const at::Tensor& x) {
  const int64_t C = channels_, rows = x.numel() / C;
  sum_.resize(C, 0.0);
  const float* d = x.data_ptr<float>();
  double* sum = sum_.data();
  for_channel_blocks(C, [&](int64_t c0, int64_t c1) {
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = d + r * C;
      for (int64_t c = c0; c < c1; ++c) sum[c] += std::fabs(static_cast<double>(row[c]));
    }
  });
  tokens_ += rows;
}

std::vector<StatTensor> ChannelMeanAbsObserver::finish() const {
  return {{Stat::MeanAbs, to_tensor(sum_, static_cast<double>(tokens_))}};
}

void ChannelSumSqObserver::add(const at::Tensor& x) {
  const int64_t C = channels_, rows = x.numel() / C;
  sum_.resize(C, 0.0);
  const float* d = x.data_ptr<float>();
  double* sum = sum_.data();
  for_channel_blocks(C, [&](int64_t c0, int64_t c1) {
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = d + r * C;
      for (int64_t c = c0; c < c1; ++c) sum[c] += static_cast<double>(row[c]) * static_cast<double>(row[c]);
    }
  });
}

std::vector<StatTensor> ChannelSumSqObserver::finish() const { return {{Stat::SumSq, to_tensor(sum_, 1.0)}}; }

void MidrangeMeanObserver::add(const at::Tensor& x) {
  const int64_t C = channels_, S = x.size(0), T = x.size(1);
  sum_.resize(C, 0.0);
  const float* d = x.data_ptr<float>();
  double* sum = sum_.data();
  for_channel_blocks(C, [&](int64_t c0, int64_t c1) {
    std::vector<float> mn(c1 - c0), mx(c1 - c0);
    for (int64_t s = 0; s < S; ++s) {
      const float* first = d + s * T * C;
      std::copy(first + c0, first + c1, mn.begin());
      std::copy(first + c0, first + c1, mx.begin());
      for (int64_t t = 1; t < T; ++t) {
        const float* row = first + t * C;
        for (int64_t c = c0; c < c1; ++c) {
          mn[c - c0] = row[c] < mn[c - c0] ? row[c] : mn[c - c0];
          mx[c - c0] = row[c] > mx[c - c0] ? row[c] : mx[c - c0];
        }
      }
      // (max + min) / 2 in double: exact.
      for (int64_t c = c0; c < c1; ++c) sum[c] += 0.5 * (static_cast<double>(mx[c - c0]) + mn[c - c0]);
    }
  });
  samples_ += S;
}

std::vector<StatTensor> MidrangeMeanObserver::finish() const {
  return {{Stat::MidrangeMean, to_tensor(sum_, static_cast<double>(samples_))}};
}

void AbsHistogramObserver::add(const at::Tensor& x) {
  const float* data = x.data_ptr<float>();
  std::mutex merge;
  at::parallel_for(0, x.numel(), 1 << 16, [&](int64_t begin, int64_t end) {
    std::vector<uint64_t> local(kBins, 0);
    uint32_t local_max = 0;
    for (int64_t i = begin; i < end; ++i) {
      uint32_t a;
      std::memcpy(&a, data + i, sizeof a);
      a &= 0x7fffffffu;  // |x|: clear the sign bit
      local[a >> 16]++;
      local_max = std::max(local_max, a);
    }
    std::lock_guard<std::mutex> lock(merge);
    for (int b = 0; b < kBins; ++b) counts_[b] += local[b];
    max_bits_ = std::max(max_bits_, local_max);
  });
  count_ += x.numel();
}

float AbsHistogramObserver::absmax() const { return float_from_bits(max_bits_); }

double AbsHistogramObserver::quantile(double q) const {
  if (!(q > 0 && q <= 1)) fail_input("{}: quantile {} is outside (0, 1]", name_, q);
  if (count_ == 0) fail_input("{}: no input was observed, so there is no quantile", name_);
  const uint64_t rank = std::max<uint64_t>(1, static_cast<uint64_t>(std::ceil(q * static_cast<double>(count_))));
  uint64_t seen = 0;
  int b = 0;
  for (; b < kBins; ++b) {
    seen += counts_[b];
    if (seen >= rank) break;
  }
  const double lo = float_from_bits(uint32_t(b) << 16);
  const double hi = float_from_bits(uint32_t(b + 1) << 16);  // +inf past the largest finite bin
  return std::min(0.5 * (lo + hi), static_cast<double>(absmax()));
}

std::vector<StatTensor> AbsHistogramObserver::finish() const {
  std::vector<StatTensor> out = {{Stat::TensorAbsMax, at::full({1}, absmax(), at::kFloat)}};
  for (int s = 0; s < kNumStats; ++s) {
    const StatTraits& t = stat_traits(static_cast<Stat>(s));
    if (t.quantile > 0) out.emplace_back(t.stat, at::full({1}, quantile(t.quantile), at::kFloat));
  }
  return out;
}

HessianObserver::HessianObserver(int64_t channels, std::string name)
    : Observer(channels, name), acc_(channels, std::move(name)) {}

void HessianObserver::add(const at::Tensor& x) { acc_.add(x); }

// A copy: the accumulator keeps rescaling its own tensor in place if observation goes on.
std::vector<StatTensor> HessianObserver::finish() const { return {{Stat::Hessian, acc_.hessian().clone()}}; }

std::vector<std::unique_ptr<Observer>> make_observers(const StatSet& stats, int64_t channels, const std::string& name) {
  std::vector<std::unique_ptr<Observer>> out;
  std::vector<Kind> made;
  for (Stat s : stats.list()) {
    const Kind k = kProvider[static_cast<int>(s)];
    if (std::find(made.begin(), made.end(), k) != made.end()) continue;
    made.push_back(k);
    out.push_back(make_observer(k, channels, name));
  }
  return out;
}

ObserverSet::ObserverSet(const ModelConfig& cfg, int64_t layer, StatSet stats)
    : layer_(layer), stats_(stats.add(Stat::Tokens)) {
  observed_at_.fill(-1);
  for (const InputPoint& p : layer_input_points(cfg, layer)) {
    observed_at_[static_cast<int>(p.first)] = static_cast<int>(points_.size());
    points_.push_back({p, make_observers(stats_, p.in_features, p.name)});
  }
  hook_ = [this](int64_t l, LinearId id, const at::Tensor& x) {
    if (l != layer_) fail_input("observers of layer {} were handed the input of layer {}", layer_, l);
    observe(id, x);
  };
}

void ObserverSet::observe(LinearId id, const at::Tensor& x) {
  const int idx = observed_at_[static_cast<int>(id)];
  if (idx < 0) return;  // a later consumer of an input already observed at its first consumer
  Point& p = points_[idx];
  const at::Tensor xf = x.to(at::kFloat).contiguous();
  if (!all_finite(xf)) check_finite(xf, p.info.name + " input");  // throws, naming the first bad element
  for (auto& o : p.observers) o->observe(xf);
}

void ObserverSet::collect(CalibrationStats& out) const {
  for (const Point& p : points_) {
    out.add_point(p.info);
    for (const auto& o : p.observers)
      for (auto& [stat, t] : o->results())
        if (stats_.has(stat)) out.set(p.info.name, stat, t);
  }
}

}  // namespace ptq
