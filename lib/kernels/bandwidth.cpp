#include "kernels/bandwidth.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>

#if defined(__SSE2__)
#include <emmintrin.h>
#include <xmmintrin.h>
#endif
#include <omp.h>

namespace ptq::kernels {

namespace {

// Σ of the 64-bit words in [p, p + bytes) (bytes a multiple of 64), read the way the decode kernels stream their
// weights: software prefetch 2 KiB ahead (linear_q8's kPrefetchBytes) and independent accumulators. A plain
// `sum += buf[i]` loop, which this replaced, kept fewer reads in flight and measured 9.3 GB/s on one thread where
// the F16 GEMV streamed 11.8 and this reads 15.4 (2-core Xeon; the table's "% of bound" then exceeded 100%).
uint64_t stream_sum(const char* p, int64_t bytes) {
#if defined(__SSE2__)
  __m128i acc[4] = {_mm_setzero_si128(), _mm_setzero_si128(), _mm_setzero_si128(), _mm_setzero_si128()};
  for (int64_t off = 0; off < bytes; off += 64) {
    _mm_prefetch(p + off + 2048, _MM_HINT_T0);
    for (int j = 0; j < 4; ++j)
      acc[j] = _mm_add_epi64(acc[j], _mm_load_si128(reinterpret_cast<const __m128i*>(p + off + 16 * j)));
  }
  alignas(16) uint64_t v[2];
  _mm_store_si128(reinterpret_cast<__m128i*>(v), _mm_add_epi64(_mm_add_epi64(acc[0], acc[1]), _mm_add_epi64(acc[2], acc[3])));
  return v[0] + v[1];
#else
  const uint64_t* w = reinterpret_cast<const uint64_t*>(p);
  uint64_t s[4] = {0, 0, 0, 0};
  for (int64_t i = 0; i < bytes / 8; i += 4)
    for (int j = 0; j < 4; ++j) s[j] += w[i + j];
  return s[0] + s[1] + s[2] + s[3];
#endif
}

}  // namespace

double measure_read_bandwidth() {
  static const double gbs = [] {
    constexpr int64_t kBytes = int64_t(256) << 20;
    constexpr int64_t kWords = kBytes / 8;
    std::unique_ptr<uint64_t[]> buf(new uint64_t[kWords]);  // 16-byte aligned (operator new[])
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < kWords; ++i) buf[i] = uint64_t(i);  // touch every page, on the threads that read it
    const char* base = reinterpret_cast<const char*>(buf.get());
    double best = 0;
    volatile uint64_t sink = 0;
    for (int pass = 0; pass < 3; ++pass) {
      const auto t0 = std::chrono::steady_clock::now();
      uint64_t sum = 0;
#pragma omp parallel reduction(+ : sum)
      {
        // Each thread one contiguous run of cache lines (the slices the static schedule above touched).
        const int64_t lines = kBytes / 64, threads = omp_get_num_threads(), per = (lines + threads - 1) / threads;
        const int64_t l0 = std::min(lines, per * omp_get_thread_num()), l1 = std::min(lines, l0 + per);
        sum += stream_sum(base + l0 * 64, (l1 - l0) * 64);
      }
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      sink = sink + sum;
      best = std::max(best, double(kBytes) / s / 1e9);
    }
    return best;
  }();
  return gbs;
}

}  // namespace ptq::kernels
