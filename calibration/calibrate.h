// The calibration stage: stream the FP model layer by layer over calibration windows and gather the
// activation statistics of every observation point (see stats.h for the stats file).
#pragma once

#include <cstdint>
#include <string>

#include "calibration/data.h"
#include "calibration/stats.h"
#include "model/model.h"

namespace ptq {

struct CalibrateOptions {
  StatSet stats = default_stats();
  int64_t batch = 8;    // windows per forward call
  std::string created;  // "created" metadata; empty: SOURCE_DATE_EPOCH when set, else now (ISO 8601 UTC)
};

// Calibration windows for `model`: its tokenizer is loaded only for text (synthetic data needs none). First, before
// anything is allocated, a run that would not fit is refused: calibration_memory_bytes against the memory available,
// with the figure and the flags to change.
CalibrationData load_model_calibration_data(const Model& model, const CalibrationDataSpec& spec, int64_t batch = 8);

// Peak bytes of streaming `nsamples` windows of `seqlen` tokens through the layers `batch` windows at a time
// (LayerStreamer): every window's fp32 hidden states and token ids, one batch's activations (the MLP's three
// [seqlen, ffn] products, the attention scores, a few [seqlen, hidden] temporaries), one layer's fp32 weights and the
// Hessians of its inputs (fp64).
uint64_t calibration_memory_bytes(const ModelConfig& cfg, int64_t nsamples, int64_t seqlen, int64_t batch);

// Runs every decoder layer once over `data`, holding one layer's weights at a time (Model::load_layer),
// with progress "calibrate i/n" on a terminal. The result carries the provenance metadata of stats.h.
CalibrationStats calibrate(Model& model, const CalibrationData& data, const CalibrateOptions& opts);

}  // namespace ptq
