// Activation observers: streaming statistics of one linear input, and the ObserverSet that feeds the
// observation points of a decoder layer from the forward's LinearInputHook.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "calibration/stats.h"
#include "model/model.h"
#include "quant/hessian.h"

namespace ptq {

using StatTensor = std::pair<Stat, at::Tensor>;

// Accumulates statistics of a [samples, tokens, channels] input, batch by batch. Per-channel statistics are
// single passes over the rows, threads splitting the channels, so each channel's sum runs over the tokens in
// order: results do not depend on the thread count, and any split of the same data into batches gives the
// same statistics (bit for bit except the Hessian's fp32 rescaling).
class Observer {
 public:
  Observer(int64_t channels, std::string name) : channels_(channels), name_(std::move(name)) {}
  virtual ~Observer() = default;
  Observer(const Observer&) = delete;
  Observer& operator=(const Observer&) = delete;

  // x: [samples, tokens, channels] or [tokens, channels] (one sample), any float dtype. Values must be
  // finite (ObserverSet checks once per point). Throws naming the observer for a wrong shape.
  void observe(const at::Tensor& x);
  // The statistics so far; throws when nothing was observed.
  std::vector<StatTensor> results() const;

 protected:
  // x: [samples, tokens, channels] fp32 contiguous, samples and tokens >= 1.
  virtual void add(const at::Tensor& x) = 0;
  virtual std::vector<StatTensor> finish() const = 0;
  int64_t channels_;
  std::string name_;

 private:
  bool observed_ = false;
};

class TokenCountObserver : public Observer {  // tokens
 public:
  using Observer::Observer;

 private:
  void add(const at::Tensor& x) override;
  std::vector<StatTensor> finish() const override;
  int64_t tokens_ = 0;
};

class ChannelMinMaxObserver : public Observer {  // min, max (exact)
 public:
  using Observer::Observer;

 private:
  void add(const at::Tensor& x) override;
  std::vector<StatTensor> finish() const override;
  std::vector<float> min_, max_;
};

class ChannelAbsMaxObserver : public Observer {  // absmax (exact)
 public:
  using Observer::Observer;

 private:
  void add(const at::Tensor& x) override;
  std::vector<StatTensor> finish() const override;
  std::vector<float> absmax_;
};

class ChannelMeanAbsObserver : public Observer {  // mean_abs: sum |x| in double / tokens
 public:
  using Observer::Observer;

 private:
  void add(const at::Tensor& x) override;
  std::vector<StatTensor> finish() const override;
  std::vector<double> sum_;
  int64_t tokens_ = 0;
};

class ChannelSumSqObserver : public Observer {  // imatrix_sum_sq: sum x^2 in double
 public:
  using Observer::Observer;

 private:
  void add(const at::Tensor& x) override;
  std::vector<StatTensor> finish() const override;
  std::vector<double> sum_;
};

// midrange_mean: mean over samples of (max_t x + min_t x) / 2, per channel (OutlierTune's shift z).
class MidrangeMeanObserver : public Observer {
 public:
  using Observer::Observer;

 private:
  void add(const at::Tensor& x) override;
  std::vector<StatTensor> finish() const override;
  std::vector<double> sum_;
  int64_t samples_ = 0;
};

// tensor_absmax (exact) and the percentile stats of |x| over every element. Method: a histogram indexed by
// the top 16 bits of |x|'s float bit pattern (8 exponent + 7 mantissa bits), i.e. 128 log-spaced bins per
// octave over the whole float range (linear bins below 2^-126). A quantile q is the midpoint of the bin
// holding the nearest-rank order statistic (rank ceil(q N)), capped at the exact max: its relative error
// is at most 2^-8 (0.39%). The counts are exact integers, so batching never changes the result.
class AbsHistogramObserver : public Observer {
 public:
  static constexpr int kBins = 1 << 15;
  using Observer::Observer;
  double quantile(double q) const;
  float absmax() const;
  int64_t count() const { return count_; }

 private:
  void add(const at::Tensor& x) override;
  std::vector<StatTensor> finish() const override;
  std::vector<uint64_t> counts_ = std::vector<uint64_t>(kBins, 0);
  uint32_t max_bits_ = 0;  // bit pattern of the largest |x|
  int64_t count_ = 0;
};

// hessian: HessianAccumulator's (2/n) sum x x^T, n = samples (sequences), fp32.
class HessianObserver : public Observer {
 public:
  HessianObserver(int64_t channels, std::string name);

 private:
  void add(const at::Tensor& x) override;
  std::vector<StatTensor> finish() const override;
  HessianAccumulator acc_;
};

// The fewest observers that provide `stats` for an input of `channels` channels (`name` in messages).
std::vector<std::unique_ptr<Observer>> make_observers(const StatSet& stats, int64_t channels, const std::string& name);

// Observers of every observation point of one decoder layer. hook() dispatches a linear module's input to
// the observers of its point; the forward passes the same tensor to every consumer of a shared input, so
// a point observes only at its first consumer (q_proj, gate_proj/fc1) and the others are skipped.
class ObserverSet {
 public:
  // `stats` plus Stat::Tokens, which every point records.
  ObserverSet(const ModelConfig& cfg, int64_t layer, StatSet stats);
  ObserverSet(const ObserverSet&) = delete;
  ObserverSet& operator=(const ObserverSet&) = delete;

  const LinearInputHook& hook() const { return hook_; }
  // Checks x is finite (naming the point), then feeds the point's observers.
  void observe(LinearId id, const at::Tensor& x);
  // Adds this layer's points and their requested statistics to `out`.
  void collect(CalibrationStats& out) const;

 private:
  struct Point {
    InputPoint info;
    std::vector<std::unique_ptr<Observer>> observers;
  };
  int64_t layer_;
  StatSet stats_;
  std::vector<Point> points_;
  std::array<int, kNumLinear> observed_at_{};  // point index where `id` is a first consumer, else -1
  LinearInputHook hook_;
};

}  // namespace ptq
