// Weight grids as values: bits 2..8, input columns per group (or one group per output channel), symmetric or
// not. One name grammar for recipes, checkpoints, `--grid`, reports and errors; storage accounting; and one
// traits row per bit width saying how each container holds codes of that width. No LibTorch: the quantizer's
// WeightQuantSpec (quant/quantizer.h) converts to and from it.
//
// Name grammar (print(parse(s)) == s for every name it accepts; recipes and checkpoints store names):
//   grid  := "w" BITS [ "g" GROUP ] [ "asym" ]
//   BITS  := 2 .. 8
//   GROUP := input columns per group, a positive decimal without leading zeros; absent = one group per output
//            channel (the whole row)
//   asym  := a zero point per group (min/max grid); absent = symmetric, zero 2^(bits-1) implied
// e.g. w4g128 (the common GPTQ checkpoint), w3asym (GPTQ paper's per-channel 3-bit), w8g32 (maps onto GGUF
// Q8_0), w5g256asym. Whether GROUP divides a module's width is checked where the width is known
// (quant/quantizer.h check_spec); every grid the grammar accepts is one the quantizer supports.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ptq {

constexpr int kGridMinBits = 2, kGridMaxBits = 8;
constexpr int64_t kGridPerChannel = -1;  // group_size of a per-output-channel grid (quant/quantizer.h kPerChannel)

struct WeightGrid {
  int bits = 4;
  int64_t group_size = 128;  // > 0, or kGridPerChannel
  bool sym = true;

  std::string name() const;
  // Groups of a row of `in` weights (a partial last group counts, for the storage figures below).
  int64_t groups(int64_t in) const;
  // Bytes a packed [out, in] weight needs: b-bit codes, one fp16 scale per (row, group) and, for asymmetric
  // grids, one b-bit zero per (row, group); rounded up to a whole byte. Packing padding and g_idx are not
  // counted (they depend on the checkpoint format, not the grid).
  int64_t bytes_for(int64_t out, int64_t in) const;
  // Average storage bits per weight of a row of `in` weights (same accounting as bytes_for).
  double bits_per_weight(int64_t in) const;
  bool operator==(const WeightGrid& o) const { return bits == o.bits && group_size == o.group_size && sym == o.sym; }
  bool operator!=(const WeightGrid& o) const { return !(*this == o); }
};

// The grammar in one line, for errors and --help.
extern const char* const kWeightGridGrammar;

// nullopt unless `name` follows the grammar.
std::optional<WeightGrid> parse_weight_grid(std::string_view name);
// Throws std::invalid_argument naming `what` (a flag, a recipe key, a checkpoint entry) and the grammar.
WeightGrid weight_grid(std::string_view name, std::string_view what);
// Throws naming `what` unless bits is 2..8 and group_size is positive or kGridPerChannel.
void check_weight_grid(const WeightGrid& g, std::string_view what);

// Named grids shown by --help: documentation rows, not a closed list (any grid the grammar accepts works).
struct WeightGridPreset {
  const char* name;
  const char* help;
};
const std::vector<WeightGridPreset>& weight_grid_presets();
std::string weight_grid_preset_names();  // comma separated

// ---- codes of each width in each container -----------------------------------------------------------------
// One row per bit width:
//   stream_period_*: the LSB-first int32 bit stream (ptq checkpoints, GPTQ qweight/qzeros; quant/formats.h)
//                    repeats every lcm(bits, 32) bits: stream_period_codes codes in stream_period_words words
//   container_bits:  the runner's packed blocks (kernels/packed_weights.h) keep codes in 2, 4 or 8 bits
//   gptq:            GPTQ v1/v2 files define the width (2, 3, 4, 8)
//   int32_lanes:     compressed-tensors pack-quantized packs 32 / bits codes per int32 (bits dividing 32)
struct BitWidthTraits {
  int bits;
  int stream_period_codes, stream_period_words;
  int container_bits;
  bool gptq;
  bool int32_lanes;
};
// Throws naming `what` unless bits is 2..8.
const BitWidthTraits& bit_width_traits(int bits, std::string_view what = "weight grid");

}  // namespace ptq
