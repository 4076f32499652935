#include "calibration/streamer.h"

#include <algorithm>

#include <ATen/ATen.h>

#include "calibration/data.h"
#include "core/error.h"

namespace ptq {

LayerStreamer::LayerStreamer(Model& model, const CalibrationData& data, int64_t batch)
    : model_(model), batch_(std::max<int64_t>(1, batch)) {
  if (data.windows.empty()) fail_input("calibration data has no windows");
  at::NoGradGuard no_grad;
  const int64_t n = static_cast<int64_t>(data.windows.size()), T = data.seqlen;
  at::Tensor ids = at::empty({n, T}, at::kLong);
  auto* p = ids.data_ptr<int64_t>();
  for (int64_t s = 0; s < n; ++s) std::copy(data.windows[s].begin(), data.windows[s].end(), p + s * T);
  hidden_ = at::empty({n, T, model.config().hidden}, at::kFloat);
  for (int64_t b0 = 0; b0 < n; b0 += batch_) {
    const int64_t nb = std::min(batch_, n - b0);
    hidden_.narrow(0, b0, nb).copy_(model.embed(ids.narrow(0, b0, nb), 0));
  }
  ctx_ = make_forward_context(model.config(), 0, T);
}

void LayerStreamer::run(int64_t layer, const LayerWeights& w, const LinearInputHook* hook, bool advance) {
  at::NoGradGuard no_grad;
  const int64_t n = hidden_.size(0);
  for (int64_t b0 = 0; b0 < n; b0 += batch_) {
    const int64_t nb = std::min(batch_, n - b0);
    at::Tensor h = hidden_.narrow(0, b0, nb);
    at::Tensor out = decoder_layer_forward(model_.config(), w, layer, h, ctx_, nullptr, hook);
    if (advance) h.copy_(out);
  }
}

}  // namespace ptq
