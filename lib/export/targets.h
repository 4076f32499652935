// Which runtime can load what a recipe produces, and through which export: the table of `ptq recipes` and of
// the README's "which recipe for which runtime". Each verdict is asked of the exporters' own rules (the GGUF
// mapping, the GPTQ bit widths, compressed-tensors' activation gap), on a module whose width fills whole int32
// words (any real model's); a model with odd widths can still be refused module by module at export time.
#pragma once

#include <string>
#include <vector>

#include "pipeline/recipe.h"

namespace ptq {

struct ExportFit {
  std::string runtime;  // "llama.cpp", "vLLM / transformers", "ptq runner"
  std::string how;      // e.g. "GGUF Q4_0, lossless", "with --group-size 32: GGUF Q4_0", "no: ..."
  bool loads = false;   // the runtime runs the result (possibly after a flag named in `how`)
};

std::vector<ExportFit> export_fits(const Recipe& r);

// What quantizing with the recipe needs besides the model: "nothing", "calibration text", ...
std::string recipe_needs(const Recipe& r);

// "W4 g128 sym", "W8 per-channel sym, A8 per_token sym"
std::string recipe_grid(const Recipe& r);

}  // namespace ptq
