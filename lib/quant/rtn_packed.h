// RTN straight from a stored weight into the ptq checkpoint's packed tensors (quant/checkpoint.h layout): one pass
// over the rows of W as stored (F32, F16 or BF16, e.g. a memory-mapped safetensors view), all threads, with no fp32
// copy of W, no code matrix and no LibTorch temporaries. Per (row, group) it applies the scalar reference exactly
// (find_grid_ref's range, grid_from_range_ref, quantize_code_ref), so the packed bytes equal those of
// quantize_weight + CheckpointWriter::write_module; the distortion figures (quant/metrics.h) come from the same
// pass: per-row double sums added in row order, so they do not depend on the thread count (they equal
// distortion()'s up to summation order).
//
// This is the quantize driver's path for RTN without calibration (pipeline/quantize.cpp): the LibTorch path spent
// most of its time zero-filling and unmapping fresh temporaries (kernel page faults, measured with perf).
#pragma once

#include <string_view>

#include "io/safetensors.h"
#include "quant/checkpoint.h"
#include "quant/metrics.h"
#include "quant/quantizer.h"

namespace ptq {

struct RtnPacked {
  PackedModuleTensors tensors;
  Distortion error;
};

// Whether rtn_pack takes this weight and grid: F32/F16/BF16 [out, in], no MSE clip search, per-channel or groups
// dividing `in` (per-tensor grids and MSE go through quantize_weight).
bool rtn_pack_supports(const TensorView& w, const WeightQuantSpec& spec);
// Throws naming `name` and the element for NaN/Inf (as check_finite), or a scale beyond fp16 (as write_module).
RtnPacked rtn_pack(const TensorView& w, const WeightQuantSpec& spec, std::string_view name);

}  // namespace ptq
