#include <vector>

#include "kernels/linear.h"

namespace ptq::kernels {

void linear_ref(const PackedWeights& w, const float* x, int64_t m, float* y, const float* bias) {
  // Threads over output rows (this is also the path of layouts the vector kernels do not take).
#pragma omp parallel
  {
  std::vector<float> row(w.k);
#pragma omp for schedule(static)
  for (int64_t r = 0; r < w.n; ++r) {
    dequantize_row(w, r, row.data());
    for (int64_t i = 0; i < m; ++i) {
      double acc = bias != nullptr ? bias[r] : 0.0;
      for (int64_t c = 0; c < w.k; ++c) acc += double(x[i * w.k + c]) * double(row[c]);
      y[i * w.n + r] = float(acc);
    }
  }
  }
}

}  // namespace ptq::kernels
