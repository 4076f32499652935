#include "io/dtype.h"

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

}  // namespace ptq
