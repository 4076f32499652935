// llama.cpp importance matrix ("imatrix") export: the per-channel Σx² of every linear input that `ptq calibrate`
// records (calibration/stats.h, statistics "imatrix_sum_sq" and "tokens"), as the GGUF file llama-imatrix writes
// and `llama-quantize --imatrix` reads (tools/imatrix/imatrix.cpp, common/imatrix-loader.cpp in llama.cpp).
//
// Layout (GGUF v3, no general.architecture: an imatrix file has none):
//   KVs     general.type "imatrix"; imatrix.datasets [string] (the calibration text files, or "synthetic");
//           imatrix.chunk_count u32 (calibration windows); imatrix.chunk_size u32 (tokens per window);
//           ptq.* provenance (tool version, stats file, model, data sha256, seed). llama-quantize refuses a GGUF
//           imatrix without the three imatrix.* keys.
//   tensors per linear weight W[N, K] of the model, named by its GGUF tensor name <w> ("blk.3.attn_q.weight",
//           gguf_linear_tensor_name), sorted by name as llama.cpp writes them:
//             <w>.in_sum2  F32 dims {K}  Σ over calibration tokens of x_k² (the stats file's values, unchanged)
//             <w>.counts   F32 dims {1}  tokens summed over (llama.cpp divides in_sum2 by it)
//           llama-imatrix makes them {K, 1} and {1, 1} but gguf_write_to_file stores ggml_n_dims, which drops the
//           trailing 1: one dimension each, as here.
//           q/k/v share one input and so one statistic, which each of the three entries carries (as llama.cpp's
//           own collector sees it); likewise gate/up. llama.cpp's optional "<w>.in_sum" (Σx) is not written:
//           ptq records no signed mean.
// Tensor names are llama.cpp's for the llama family and qwen2 (same linear names); OPT has no llama.cpp
// architecture and is refused. scripts/check_gguf_llama_cpp.sh has llama.cpp's own llama-quantize load the file and
// checks that it changes Q2_K's result the way an importance matrix should; scripts/check_imatrix_llama_cpp.sh
// compares the file with llama-imatrix's own on the same token windows (same entries, shapes and counts; mean
// squares within 1e-4, docs/RESULTS.md).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

namespace ptq {

class CalibrationStats;

// One imatrix entry: the Σx² (fp32, as in_sum2 stores it) of a linear weight's input and the tokens summed.
struct ImatrixEntry {
  at::Tensor sum_sq;  // [K] float32
  int64_t tokens = 0;
  // What llama-quantize --imatrix hands ggml as quant_weights (tools/quantize/quantize.cpp, load_imatrix):
  // in_sum2 / counts in fp32, 1 for every column when no token was counted.
  std::vector<float> quant_weights() const;
};

// The entries of `stats` by GGUF weight name (gguf_linear_tensor_name: every consumer of a point carries its
// statistic), sorted by name. Throws std::invalid_argument naming `stats_path` and the point when imatrix_sum_sq or
// tokens is missing, or Σx² holds a negative or non-finite value.
std::map<std::string, ImatrixEntry> imatrix_entries(const CalibrationStats& stats, const std::string& stats_path);

struct ImatrixExportReport {
  std::string output;
  uint64_t bytes = 0;
  int64_t entries = 0;  // weight tensors covered
  int64_t chunk_count = 0, chunk_size = 0;
  std::vector<std::string> datasets;
};

// Reads a stats file of `ptq calibrate` and writes `out_path` atomically (an existing file only with `force`).
// Throws std::invalid_argument naming the point when imatrix_sum_sq or tokens is missing.
ImatrixExportReport export_imatrix(const std::string& stats_path, const std::string& out_path, bool force);

}  // namespace ptq
