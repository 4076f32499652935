#include "calibration/calibrate.h"

#include <algorithm>
#include <cstdlib>
#include <ctime>

#include <ATen/ATen.h>

#include "calibration/observers.h"
#include "calibration/streamer.h"
#include "core/error.h"
#include "core/progress.h"
#include "core/table.h"
#include "model/tokenizer.h"

namespace ptq {

namespace {

// Stands in for the tokenizer of a model that has none when the data is synthetic: load_calibration_data
// never encodes text then, so any use is a bug and says so.
class NoTokenizer : public Tokenizer {
 public:
  explicit NoTokenizer(std::string dir) : dir_(std::move(dir)) {}
  std::vector<int32_t> encode(const std::string&, bool) const override { fail(); }
  std::string decode(const std::vector<int32_t>&) const override { fail(); }
  int64_t vocab_size() const override { fail(); }
  int32_t bos_id() const override { fail(); }
  int32_t eos_id() const override { fail(); }
  bool add_bos_default() const override { fail(); }
  std::string describe() const override { return "none (synthetic calibration data)"; }

 private:
  [[noreturn]] void fail() const { fail_input("{}: text calibration data needs the model's tokenizer", dir_); }
  std::string dir_;
};

// ISO 8601 UTC; SOURCE_DATE_EPOCH (reproducible-builds.org) pins it for byte-identical outputs.
std::string creation_time() {
  std::time_t t = std::time(nullptr);
  if (const char* epoch = std::getenv("SOURCE_DATE_EPOCH")) {
    char* end = nullptr;
    const long long v = std::strtoll(epoch, &end, 10);
    if (end == epoch || *end != '\0' || v < 0)
      fail_input("SOURCE_DATE_EPOCH=\"{}\" is not a non-negative integer (seconds since 1970)", epoch);
    t = static_cast<std::time_t>(v);
  }
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

uint64_t calibration_memory_bytes(const ModelConfig& cfg, int64_t nsamples, int64_t seqlen, int64_t batch) {
  const double n = static_cast<double>(nsamples), T = static_cast<double>(seqlen);
  const double b = static_cast<double>(std::min(batch, nsamples));
  const double h = static_cast<double>(cfg.hidden), f = static_cast<double>(cfg.ffn);
  const double kv = static_cast<double>(cfg.n_kv_heads * cfg.head_dim);
  const double windows = n * T * (4 * h + 4 + 8);  // hidden states, the windows' ids, the ids tensor
  const double batch_acts = b * T * (3 * f + 8 * h + static_cast<double>(cfg.n_heads) * T) * 4;
  const double layer = (2 * h * h + 2 * h * kv + 3 * h * f) * 4 + (3 * h * h + f * f) * 8;
  return static_cast<uint64_t>(windows + batch_acts + layer);
}

CalibrationData load_model_calibration_data(const Model& model, const CalibrationDataSpec& spec, int64_t batch) {
  const ModelConfig& cfg = model.config();
  const int64_t seqlen = spec.seqlen > 0 ? spec.seqlen : std::min<int64_t>(2048, cfg.max_positions);
  const uint64_t avail = available_memory_bytes();
  if (spec.nsamples > 0 && seqlen > 0 && avail > 0) {
    const uint64_t need = calibration_memory_bytes(cfg, spec.nsamples, seqlen, batch);
    if (need > avail) {
      int64_t fit = 0;  // the most windows that fit (calibration_memory_bytes grows with nsamples)
      for (int64_t lo = 1, hi = spec.nsamples; lo <= hi;) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (calibration_memory_bytes(cfg, mid, seqlen, batch) <= avail) {
          fit = mid;
          lo = mid + 1;
        } else {
          hi = mid - 1;
        }
      }
      fail_input("calibration would need about {} ({} windows x {} tokens x hidden {}, plus one layer and batch) but "
                 "{} is available; {}", human_bytes(need), spec.nsamples, seqlen, cfg.hidden, human_bytes(avail),
                 fit > 0 ? fmt::format("lower --nsamples to at most {} or --seqlen", fit)
                         : std::string("lower --seqlen or --batch"));
    }
  }
  if (spec.synthetic) {
    if (!spec.files.empty()) fail_input("--synthetic takes no --data files (got {})", spec.files.front());
    return load_calibration_data(spec, NoTokenizer(model.path()), cfg.vocab, cfg.max_positions);
  }
  const auto tok = load_tokenizer(model.path());
  return load_calibration_data(spec, *tok, cfg.vocab, cfg.max_positions);
}

CalibrationStats calibrate(Model& model, const CalibrationData& data, const CalibrateOptions& opts) {
  at::NoGradGuard no_grad;
  const ModelConfig& cfg = model.config();
  CalibrationStats out;
  const int64_t nsamples = static_cast<int64_t>(data.windows.size());
  out.metadata = {{"model_fingerprint", model_fingerprint(model.path())},
                  {"model", model.path()},
                  {"model_type", cfg.model_type},
                  {"layers", std::to_string(cfg.n_layers)},
                  {"data_source", data.source},
                  {"data_sha256", data.data_sha256},
                  {"nsamples", std::to_string(nsamples)},
                  {"seqlen", std::to_string(data.seqlen)},
                  {"seed", std::to_string(data.seed)},
                  {"tokens", std::to_string(nsamples * data.seqlen)},
                  {"text_tokens", std::to_string(data.text_tokens)},
                  {"percentile_method",
                   "nearest rank over a histogram of |x| with 128 log-spaced bins per octave (bin midpoint, "
                   "relative error <= 2^-8)"},
                  {"tool", std::string("ptq ") + PTQ_VERSION},
                  {"created", opts.created.empty() ? creation_time() : opts.created}};

  LayerStreamer streamer(model, data, opts.batch);
  Progress progress("calibrate", cfg.n_layers, "layer");
  for (int64_t i = 0; i < cfg.n_layers; ++i) {
    const LayerWeights w = model.load_layer(i);
    ObserverSet observers(cfg, i, opts.stats);
    streamer.run(i, w, &observers.hook(), /*advance=*/i + 1 < cfg.n_layers);
    observers.collect(out);
    progress.update(i + 1);
  }
  progress.finish();
  return out;
}

}  // namespace ptq
