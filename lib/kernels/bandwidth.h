// The machine's memory read bandwidth, the bound of a decode step that reads every weight once per token.
#pragma once

namespace ptq::kernels {

// GB/s (1e9 bytes) of a multithreaded sequential read of a buffer much larger than the caches (256 MiB), best of
// 3 passes, on the OpenMP threads the kernels use, each reading one contiguous slice as the decode kernels stream
// weights (software prefetch 2 KiB ahead, independent accumulators). Measured once per process (about 0.3 s), then
// cached.
double measure_read_bandwidth();

}  // namespace ptq::kernels
