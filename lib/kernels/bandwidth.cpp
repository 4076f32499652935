#include "kernels/bandwidth.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>

namespace ptq::kernels {

double measure_read_bandwidth() {
  static const double gbs = [] {
    constexpr int64_t kWords = (int64_t(256) << 20) / 8;
    std::unique_ptr<uint64_t[]> buf(new uint64_t[kWords]);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < kWords; ++i) buf[i] = uint64_t(i);  // touch every page, on the threads that read it
    double best = 0;
    volatile uint64_t sink = 0;
    for (int pass = 0; pass < 3; ++pass) {
      const auto t0 = std::chrono::steady_clock::now();
      uint64_t sum = 0;
#pragma omp parallel for simd schedule(static) reduction(+ : sum)
      for (int64_t i = 0; i < kWords; ++i) sum += buf[i];
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      sink = sink + sum;
      best = std::max(best, double(kWords) * 8 / s / 1e9);
    }
    return best;
  }();
  return gbs;
}

}  // namespace ptq::kernels
