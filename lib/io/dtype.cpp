#include "io/dtype.h"

#include <cstring>

#include <array>

namespace ptq {

namespace {
constexpr std::array<DTypeTraits, 9> kDTypes = {{
    {DType::F32, "F32", 4},
    {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2},
    {DType::I8, "I8", 1},
    {DType::I32, "I32", 4},
    {DType::I64, "I64", 8},
    {DType::U8, "U8", 1},
    {DType::BOOL, "BOOL", 1},
    {DType::F8_E4M3, "F8_E4M3", 1},
}};
}  // namespace

const DTypeTraits& dtype_traits(DType t) { return kDTypes[static_cast<size_t>(t)]; }

std::optional<DType> dtype_from_name(std::string_view name) {
  for (const auto& t : kDTypes)
    if (name == t.name) return t.dtype;
  return std::nullopt;
}

std::string dtype_names() {
  std::string s;
  for (const auto& t : kDTypes) s += (s.empty() ? "" : ", ") + std::string(t.name);
  return s;
}

namespace {
// An IEEE value is NaN or Inf when its exponent bits are all ones: test them on the raw bits of each width.
template <typename Bits>
std::optional<size_t> first_all_ones(const void* data, size_t count, Bits exponent_mask) {
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < count; ++i) {
    Bits v;
    std::memcpy(&v, p + i * sizeof(Bits), sizeof(Bits));
    if ((v & exponent_mask) == exponent_mask) return i;
  }
  return std::nullopt;
}
}  // namespace

std::optional<size_t> first_nonfinite(DType t, const void* data, size_t count) {
  switch (t) {
    case DType::F32: return first_all_ones<uint32_t>(data, count, 0x7f800000u);
    case DType::F16: return first_all_ones<uint16_t>(data, count, 0x7c00u);
    case DType::BF16: return first_all_ones<uint16_t>(data, count, 0x7f80u);
    default: return std::nullopt;
  }
}

}  // namespace ptq
