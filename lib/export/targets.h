// Which runtime can load what a recipe produces, and through which export: the table of `ptq recipes` and of
// the README's "which recipe for which runtime". Each verdict is asked of the exporters' own rules (the GGUF
// mapping, the GPTQ bit widths, compressed-tensors' activation gap), on a module whose width fills whole int32
// words (any real model's); a model with odd widths can still be refused module by module at export time.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "io/gguf.h"
#include "pipeline/recipe.h"
#include "quant/checkpoint.h"

namespace ptq {

struct ExportFit {
  std::string runtime;  // "llama.cpp", "vLLM / transformers", "ptq runner"
  std::string how;      // e.g. "GGUF Q4_0, lossless", "with --group-size 32: GGUF Q4_0", "no: ..."
  bool loads = false;   // the runtime runs the result (possibly after a flag named in `how`)
};

std::vector<ExportFit> export_fits(const Recipe& r);

// The ggml type a module of `m`'s grid maps to losslessly once quantized with --group-size 32 in natural column
// order, when quantize can produce that grid (a weight format exists); nullopt otherwise. The "--group-size 32"
// advice of `ptq recipes` and of the GGUF export's refusal.
std::optional<GgmlType> gguf_type_at_group_32(const ModuleQuantInfo& m);

// What quantizing with the recipe needs besides the model: "nothing", "calibration text", ...
std::string recipe_needs(const Recipe& r);

// "W4 g128 sym", "W8 per-channel sym, A8 per_token sym"
std::string recipe_grid(const Recipe& r);

}  // namespace ptq
