// Element types of tensors on disk, one traits table shared by every reader and writer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ptq {

// Names are the safetensors spellings and part of the file format: append, never rename.
enum class DType : uint8_t { F32, F16, BF16, I8, I32, I64, U8, BOOL, F8_E4M3 };

struct DTypeTraits {
  DType dtype;
  const char* name;  // safetensors "dtype" string
  size_t size;       // bytes per element
};

const DTypeTraits& dtype_traits(DType t);
std::optional<DType> dtype_from_name(std::string_view name);
inline const char* dtype_name(DType t) { return dtype_traits(t).name; }
inline size_t dtype_size(DType t) { return dtype_traits(t).size; }
// Every known dtype name, comma separated (for error messages and --help).
std::string dtype_names();

// Index of the first NaN or Inf among `count` elements of a float dtype (F32, F16, BF16) at `data`, little endian;
// nullopt when all are finite or the dtype is not one of those.
std::optional<size_t> first_nonfinite(DType t, const void* data, size_t count);

}  // namespace ptq
