// The packed runner's weights of a GGUF model, straight from the file's blocks (declared in model/gguf_model.h). Apart
// from gguf_model.cpp, which the LibTorch-free fuzz targets build: this part needs the model and the kernels.
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "io/gguf.h"
#include "io/gguf_kquants.h"
#include "kernels/packed_weights.h"
#include "model/config.h"
#include "model/gguf_model.h"

namespace ptq {

std::shared_ptr<const kernels::PackedWeights> pack_gguf_tensor(const std::shared_ptr<const GgufFile>& g,
                                                               const GgufTensorInfo& t, int64_t qk_head_dim) {
  if (t.dims.size() != 2) return nullptr;
  const int64_t k = t.dims[0], n = t.dims[1];
  const uint8_t* data = g->tensor_data(t);
  const size_t row_bytes = ggml_nbytes(t.type, k);
  auto src_row = [&](int64_t r) { return data + (qk_head_dim > 0 ? gguf_qk_row(r, qk_head_dim) : r) * row_bytes; };
  if (t.type == GgmlType::F32 || t.type == GgmlType::F16 || t.type == GgmlType::BF16) {
    const kernels::WeightKind kind = t.type == GgmlType::F32   ? kernels::WeightKind::F32
                                     : t.type == GgmlType::F16 ? kernels::WeightKind::F16
                                                               : kernels::WeightKind::BF16;
    if (qk_head_dim <= 0)  // viewed in the mapped file
      return std::make_shared<const kernels::PackedWeights>(kernels::view_float_weights(kind, data, n, k, g));
    auto rows = std::make_shared<std::vector<uint8_t>>(n * row_bytes);  // q/k rows copied in Hugging Face order
    for (int64_t r = 0; r < n; ++r) std::memcpy(rows->data() + r * row_bytes, src_row(r), row_bytes);
    return std::make_shared<const kernels::PackedWeights>(kernels::view_float_weights(kind, rows->data(), n, k, rows));
  }
  const GgmlGridTraits* grid = ggml_grid_traits(t.type);
  if (grid == nullptr) return nullptr;
  // Codes c in [lo, hi] become unsigned u = c - base: types with a stored min start at 0 (base = lo = 0, offsets =
  // -b); the others are symmetric around 0 and take base = -2^(bits-1), so that w = a * c = a * u - a * 2^(bits-1)
  // is the kernels' symmetric grid (no offsets stored).
  int bits = 1;
  while ((1 << bits) < grid->hi - grid->lo + 1) ++bits;
  if (!grid->min && (grid->lo < -(1 << (bits - 1)) || grid->hi >= (1 << (bits - 1)))) ++bits;
  const int base = grid->min ? grid->lo : -(1 << (bits - 1));
  const int64_t groups = k / grid->sub;
  std::vector<uint8_t> q(n * k);
  std::vector<float> scales(n * groups), offsets(grid->min ? n * groups : 0);
#pragma omp parallel
  {
    std::vector<int8_t> c(k);
    std::vector<float> b(groups);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < n; ++r) {
      ggml_row_codes(t.type, src_row(r), k, c.data());
      ggml_row_grid(t.type, src_row(r), k, scales.data() + r * groups, b.data());
      for (int64_t j = 0; j < k; ++j) q[r * k + j] = uint8_t(c[j] - base);
      if (grid->min)
        for (int64_t s = 0; s < groups; ++s) offsets[r * groups + s] = -b[s];
    }
  }
  auto w = std::make_shared<const kernels::PackedWeights>(kernels::pack_quantized_affine(
      q.data(), n, k, bits, groups, scales.data(), grid->min ? offsets.data() : nullptr, t.name.c_str()));
  g->release(t);  // its blocks now live in `w`: the mapped pages would count in the RSS a second time
  return w;
}

namespace {

// The runner's weights of a GGUF model: 2-D tensors packed from the file's own blocks (pack_gguf_tensor); everything
// else, and the fp32 weights of the reference runner and of inspect, from the converted directory.
class GgufWeightSource final : public WeightSource {
 public:
  GgufWeightSource(const TensorArchive& archive, std::shared_ptr<const GgufFile> gguf, int64_t head_dim)
      : archive_(archive), gguf_(std::move(gguf)), head_dim_(head_dim) {}
  bool contains(const std::string& name) const override { return archive_.contains(name); }
  at::Tensor load(const std::string& name) const override { return ArchiveWeightSource(archive_).load(name); }
  std::shared_ptr<const kernels::PackedWeights> load_packed(const std::string& module) const override {
    const std::string gname = gguf_name_of(module + ".weight");
    const GgufTensorInfo* t = gname.empty() ? nullptr : gguf_->find_tensor(gname);
    std::shared_ptr<const kernels::PackedWeights> w;
    if (t != nullptr) w = pack_gguf_tensor(gguf_, *t, is_qk_tensor(gname) ? head_dim_ : 0);
    return w != nullptr ? w : view_archive_weight(archive_, module);
  }

 private:
  const TensorArchive& archive_;
  std::shared_ptr<const GgufFile> gguf_;
  int64_t head_dim_;
};

}  // namespace

std::unique_ptr<Model> open_gguf_model(const std::string& gguf_path, const std::string& dir) {
  auto gguf = std::make_shared<const GgufFile>(gguf_path);
  const int64_t head_dim = load_model_config(dir).head_dim;
  return std::make_unique<Model>(dir, [gguf, head_dim](const TensorArchive& archive) {
    return std::make_unique<GgufWeightSource>(archive, gguf, head_dim);
  });
}

}  // namespace ptq
