#include "calibration/calibrate.h"

#include <cstdlib>
#include <ctime>

#include <ATen/ATen.h>

#include "calibration/observers.h"
#include "calibration/streamer.h"
#include "core/error.h"
#include "core/progress.h"
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

CalibrationData load_model_calibration_data(const Model& model, const CalibrationDataSpec& spec) {
  const ModelConfig& cfg = model.config();
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
