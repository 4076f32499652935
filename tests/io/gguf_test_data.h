// Seeded Gaussian test data shared by the lib/io GGUF tests.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace ptq::test {

inline std::vector<float> gaussian_values(size_t n, uint32_t seed, float sigma = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0, sigma);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

}  // namespace ptq::test
