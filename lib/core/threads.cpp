// Thread count for LibTorch intra-op work and OpenMP. Kept apart from progress.cpp so that the rest of
// lib/core (and lib/io) builds without LibTorch.
#include <algorithm>
#include <thread>

#include <ATen/Parallel.h>

#include "core/progress.h"

namespace ptq {

int set_num_threads(int n) {
  if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(n);
  return at::get_num_threads();
}

}  // namespace ptq
