#include "core/weight_grid.h"

#include <array>
#include <charconv>

#include "core/error.h"

namespace ptq {

namespace {

constexpr int kScaleBits = 16;  // one fp16 scale per (row, group)

// Reads a decimal without sign or leading zeros from the front of `s`; nullopt when there is none or it
// overflows.
std::optional<int64_t> take_decimal(std::string_view& s) {
  size_t n = 0;
  while (n < s.size() && s[n] >= '0' && s[n] <= '9') ++n;
  if (n == 0 || (n > 1 && s[0] == '0')) return std::nullopt;
  int64_t v = 0;
  if (std::from_chars(s.data(), s.data() + n, v).ec != std::errc()) return std::nullopt;
  s.remove_prefix(n);
  return v;
}

constexpr int stream_period_codes(int bits) {
  int a = bits, b = 32;  // 32 / gcd(bits, 32)
  while (b != 0) {
    const int t = a % b;
    a = b;
    b = t;
  }
  return 32 / a;
}

constexpr BitWidthTraits traits_row(int bits, bool gptq) {
  return {bits, stream_period_codes(bits), stream_period_codes(bits) * bits / 32,
          bits <= 2 ? 2 : bits <= 4 ? 4 : 8, gptq, 32 % bits == 0};
}

constexpr std::array<BitWidthTraits, kGridMaxBits - kGridMinBits + 1> kBitWidths = {
    traits_row(2, true), traits_row(3, true), traits_row(4, true), traits_row(5, false),
    traits_row(6, false), traits_row(7, false), traits_row(8, true)};
static_assert(kBitWidths[1].stream_period_codes == 32 && kBitWidths[1].stream_period_words == 3,
              "3-bit: 32 codes fill 3 words");
static_assert(kBitWidths[4].stream_period_codes == 16 && kBitWidths[4].stream_period_words == 3,
              "6-bit: 16 codes fill 3 words");
static_assert(kBitWidths[2].container_bits == 4 && kBitWidths[1].container_bits == 4 &&
                  kBitWidths[3].container_bits == 8 && kBitWidths[0].container_bits == 2,
              "runner containers: 3-bit codes in 4-bit room, 5..7-bit in bytes");

}  // namespace

const char* const kWeightGridGrammar =
    "w<bits 2..8>[g<columns per group>][asym], e.g. w4g128, w3asym, w8g32, w5g256asym (no g: one group per output "
    "channel; no asym: symmetric)";

std::string WeightGrid::name() const {
  std::string s = "w" + std::to_string(bits);
  if (group_size > 0) s += "g" + std::to_string(group_size);
  if (!sym) s += "asym";
  return s;
}

int64_t WeightGrid::groups(int64_t in) const { return group_size > 0 ? (in + group_size - 1) / group_size : 1; }

int64_t WeightGrid::bytes_for(int64_t out, int64_t in) const {
  const int64_t bits_total = out * in * bits + out * groups(in) * (kScaleBits + (sym ? 0 : bits));
  return (bits_total + 7) / 8;
}

double WeightGrid::bits_per_weight(int64_t in) const {
  return bits + static_cast<double>(groups(in) * (kScaleBits + (sym ? 0 : bits))) / static_cast<double>(in);
}

std::optional<WeightGrid> parse_weight_grid(std::string_view s) {
  WeightGrid g;
  if (s.empty() || s[0] != 'w') return std::nullopt;
  s.remove_prefix(1);
  // One digit: "w10" must not parse as bits 1 followed by garbage, nor as bits 10.
  if (s.empty() || s[0] < '0' || s[0] > '9' || (s.size() > 1 && s[1] >= '0' && s[1] <= '9')) return std::nullopt;
  g.bits = s[0] - '0';
  s.remove_prefix(1);
  if (g.bits < kGridMinBits || g.bits > kGridMaxBits) return std::nullopt;
  g.group_size = kGridPerChannel;
  if (!s.empty() && s[0] == 'g') {
    s.remove_prefix(1);
    const auto group = take_decimal(s);
    if (!group || *group == 0) return std::nullopt;
    g.group_size = *group;
  }
  g.sym = true;
  if (s == "asym") {
    g.sym = false;
    s = {};
  }
  if (!s.empty()) return std::nullopt;
  return g;
}

WeightGrid weight_grid(std::string_view name, std::string_view what) {
  if (auto g = parse_weight_grid(name)) return *g;
  fail_input("{}: \"{}\" is not a weight grid; expected {}", what, name, kWeightGridGrammar);
}

void check_weight_grid(const WeightGrid& g, std::string_view what) {
  if (g.bits < kGridMinBits || g.bits > kGridMaxBits)
    fail_input("{}: {} weight bits; expected {} to {}", what, g.bits, kGridMinBits, kGridMaxBits);
  if (g.group_size <= 0 && g.group_size != kGridPerChannel)
    fail_input("{}: group size {}; expected a positive number of input columns per group, or -1 (one group per "
               "output channel)", what, g.group_size);
}

const std::vector<WeightGridPreset>& weight_grid_presets() {
  static const std::vector<WeightGridPreset> presets = {
      {"w8", "8-bit symmetric, per output channel (the weight half of W8A8)"},
      {"w8g32", "8-bit symmetric, groups of 32 (GGUF Q8_0's grid)"},
      {"w6", "6-bit symmetric, per output channel (the weight half of W6A6)"},
      {"w4", "4-bit symmetric, per output channel"},
      {"w4asym", "4-bit asymmetric, per output channel (GPTQ paper's W4)"},
      {"w4g128", "4-bit symmetric, groups of 128 (the common GPTQ checkpoint)"},
      {"w4g128asym", "4-bit asymmetric, groups of 128"},
      {"w4g32", "4-bit symmetric, groups of 32 (GGUF Q4_0 up to fp16 scales)"},
      {"w4g32asym", "4-bit asymmetric, groups of 32 (GGUF Q4_1's grid)"},
      {"w3asym", "3-bit asymmetric, per output channel (GPTQ paper's W3)"},
      {"w3g128", "3-bit symmetric, groups of 128"},
      {"w2g64asym", "2-bit asymmetric, groups of 64"},
  };
  return presets;
}

std::string weight_grid_preset_names() {
  std::string s;
  for (const auto& p : weight_grid_presets()) s += (s.empty() ? "" : ", ") + std::string(p.name);
  return s;
}

const BitWidthTraits& bit_width_traits(int bits, std::string_view what) {
  if (bits < kGridMinBits || bits > kGridMaxBits)
    fail_input("{}: {} bits; codes are {} to {} bits wide", what, bits, kGridMinBits, kGridMaxBits);
  return kBitWidths[static_cast<size_t>(bits - kGridMinBits)];
}

}  // namespace ptq
