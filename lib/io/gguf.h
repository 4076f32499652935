// GGUF v3 (llama.cpp's container): a validating reader over a memory map, an atomic writer, and the ggml
// block formats Q4_0 / Q4_1 / Q8_0 with llama.cpp's reference rounding (Q5_0 / Q5_1 and the K-quants Q2_K..Q6_K, and
// the importance-weighted roundings, are in gguf_kquants.h); one table of every type ptq reads and writes.
//
// Layout (little-endian throughout; a big-endian file is recognised and refused):
//   "GGUF"  u32 version (3; 2 is read too, it has the same layout)  u64 tensor_count  u64 kv_count
//   kv_count x { string key, u32 value_type, value }
//       string = u64 byte length + UTF-8 bytes (no terminator)
//       value  = the scalar (u8 i8 u16 i16 u32 i32 f32 bool(u8) u64 i64 f64), a string, or an array:
//                u32 element_type, u64 count, count elements (arrays of arrays are not used by llama.cpp
//                and are refused)
//   tensor_count x { string name, u32 n_dims (1..4), u64 dims[n_dims], u32 ggml_type, u64 offset }
//       dims[0] is the contiguous dimension: a torch weight W[out, in] is written with dims {in, out};
//       offset is relative to the data section and a multiple of the alignment
//   zero padding to a multiple of `general.alignment` (u32 KV, default 32), then the data section.
// A row of dims[0] elements of a block type is dims[0] / block_size consecutive blocks (see the structs
// below); dims[0] must be a multiple of the block size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/file.h"

namespace ptq {

// ---- ggml tensor types -------------------------------------------------------------------------------------
// Ids are ggml's (part of the file format).
enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, BF16 = 30
};

// ggml's quantize_<type>(src, dst, nrow, n_per_row, quant_weights): nrow rows of n_per_row floats (a multiple of the
// block size) into consecutive rows of blocks; quant_weights (n_per_row importances, or nullptr) is used by the types
// with an importance-weighted rounding (Q4_0, Q4_1, Q5_0, Q5_1, K-quants) and ignored by the others, as in ggml.
using GgmlQuantizeFn = void (*)(const float* src, void* dst, int64_t nrow, int64_t n_per_row,
                                const float* quant_weights);
// n elements from bytes at any alignment (a GGUF map).
using GgmlDequantizeFn = void (*)(const uint8_t* src, float* dst, int64_t n);

struct GgmlTypeTraits {
  GgmlType type;
  const char* name;    // lower case, as --gguf-type and llama.cpp spell it
  int64_t block_size;  // elements per block (1 for float types)
  size_t type_size;    // bytes per block
  GgmlQuantizeFn quantize;
  GgmlDequantizeFn dequantize;
};

const GgmlTypeTraits& ggml_type_traits(GgmlType t);
// nullptr for an id ptq does not know.
const GgmlTypeTraits* ggml_type_traits_by_id(uint32_t id);
std::optional<GgmlType> ggml_type_from_name(std::string_view name);
std::string ggml_writable_type_names();  // "f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, ..., q6_k"
inline const char* ggml_type_name(GgmlType t) { return ggml_type_traits(t).name; }
// Bytes of `n` elements; throws std::invalid_argument unless n is a multiple of the block size.
size_t ggml_nbytes(GgmlType t, int64_t n);

// ---- block formats (ggml-common.h), 32 weights per block ----------------------------------------------------
constexpr int kGgmlBlock = 32;
// Q4_0: x̂ = (q - 8) * d, q in 0..15; qs[j] holds q[j] in its low nibble and q[j + 16] in its high nibble.
struct BlockQ4_0 {
  uint16_t d;  // fp16
  uint8_t qs[kGgmlBlock / 2];
};
// Q4_1: x̂ = q * d + m, q in 0..15; nibbles as Q4_0.
struct BlockQ4_1 {
  uint16_t d, m;  // fp16
  uint8_t qs[kGgmlBlock / 2];
};
// Q8_0: x̂ = qs[j] * d.
struct BlockQ8_0 {
  uint16_t d;  // fp16
  int8_t qs[kGgmlBlock];
};
static_assert(sizeof(BlockQ4_0) == 18, "block_q4_0 is 2 + 16 bytes");
static_assert(sizeof(BlockQ4_1) == 20, "block_q4_1 is 2 + 2 + 16 bytes");
static_assert(sizeof(BlockQ8_0) == 34, "block_q8_0 is 2 + 32 bytes");

// llama.cpp's reference quantizers (quantize_row_*_ref in ggml-quants.c), one row of n values (n a multiple
// of 32, x finite: callers check). Rounding:
//   Q4_0: d = m / -8 with m the value of largest magnitude (its sign kept), q = min(15, trunc(x / d + 8.5))
//   Q4_1: d = (max - min) / 15, m = min, q = min(15, trunc((x - min) / d + 0.5))
//   Q8_0: d = absmax / 127, q = round_half_away(x / d)
// The codes are computed from the fp32 d (x * (1/d)); only the stored d/m are rounded to fp16, as in ggml.
void quantize_row_q4_0_ref(const float* x, BlockQ4_0* y, int64_t n);
void quantize_row_q4_1_ref(const float* x, BlockQ4_1* y, int64_t n);
void quantize_row_q8_0_ref(const float* x, BlockQ8_0* y, int64_t n);
void dequantize_row_q4_0(const BlockQ4_0* x, float* y, int64_t n);
void dequantize_row_q4_1(const BlockQ4_1* x, float* y, int64_t n);
void dequantize_row_q8_0(const BlockQ8_0* x, float* y, int64_t n);

// Encodes `rows` rows of `cols` floats as type t with ggml's quantize_<type> (see GgmlQuantizeFn; quant_weights:
// `cols` importances or nullptr). Throws naming `what` for NaN/Inf (in x or quant_weights) or a width that is not
// a multiple of the block size.
std::vector<uint8_t> ggml_encode(GgmlType t, const float* x, int64_t rows, int64_t cols, std::string_view what,
                                 const float* quant_weights = nullptr);
// Decodes n elements of type t (a multiple of its block size) to floats.
void ggml_decode(GgmlType t, const uint8_t* src, float* dst, int64_t n);

// ---- metadata values -----------------------------------------------------------------------------------------
enum class GgufValueType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7, STRING = 8, ARRAY = 9, U64 = 10, I64 = 11,
  F64 = 12
};
const char* gguf_value_type_name(GgufValueType t);

// One KV value. Scalars: integer types in `i` (u64 values above 2^63 keep their bits), floats in `f`, bools in
// `i` (0/1), strings in `s`. Arrays: `elem` is the element type and exactly one of ints/floats/strings holds
// the elements.
struct GgufValue {
  GgufValueType type = GgufValueType::U32;
  GgufValueType elem = GgufValueType::U32;
  int64_t i = 0;
  double f = 0;
  std::string s;
  std::vector<int64_t> ints;
  std::vector<double> floats;
  std::vector<std::string> strings;

  static GgufValue u32(uint32_t v);
  static GgufValue i32(int32_t v);
  static GgufValue u64(uint64_t v);
  static GgufValue f32(float v);
  static GgufValue boolean(bool v);
  static GgufValue string(std::string v);
  static GgufValue string_array(std::vector<std::string> v);
  static GgufValue f32_array(std::vector<double> v);
  static GgufValue i32_array(std::vector<int64_t> v);
  bool is_integer() const;
  size_t array_size() const;
};

struct GgufKV {
  std::string key;
  GgufValue value;
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> dims;  // ggml order: dims[0] contiguous
  GgmlType type = GgmlType::F32;
  uint64_t offset = 0;        // inside the data section
  uint64_t nbytes = 0;
  int64_t numel() const;
};

class GgufFile {
 public:
  // Maps and validates `path`: magic, version, every string/array inside the file, known value and tensor
  // types, no duplicate keys or tensor names, alignment a power of two, dims[0] a multiple of the block size,
  // offsets aligned and every tensor inside the data section without overlap. Throws std::invalid_argument
  // naming the file, the byte offset and (where there is one) the key or tensor.
  explicit GgufFile(const std::string& path);

  const std::string& path() const { return file_.path(); }
  size_t file_size() const { return file_.size(); }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // file offset of the data section

  const std::vector<GgufKV>& kvs() const { return kvs_; }
  const GgufValue* find(const std::string& key) const;
  bool has(const std::string& key) const { return find(key) != nullptr; }
  // Typed access; each throws naming the file and key when it is absent or of another type. get_uint
  // accepts any integer type holding a non-negative value, get_float F32/F64.
  uint64_t get_uint(const std::string& key) const;
  int64_t get_int(const std::string& key) const;
  double get_float(const std::string& key) const;
  bool get_bool(const std::string& key) const;
  const std::string& get_string(const std::string& key) const;
  const std::vector<std::string>& get_string_array(const std::string& key) const;
  const std::vector<double>& get_float_array(const std::string& key) const;
  const std::vector<int64_t>& get_int_array(const std::string& key) const;

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(const std::string& name) const;
  // Throws naming the file when absent.
  const GgufTensorInfo& tensor(const std::string& name) const;
  // The tensor's bytes inside the map (valid while this object lives).
  const uint8_t* tensor_data(const GgufTensorInfo& t) const { return file_.data() + data_offset_ + t.offset; }
  // Drops the tensor's pages from this process's resident set (they are read again from the file if touched): for a
  // tensor whose content has been copied elsewhere (the runner's packed weights).
  void release(const GgufTensorInfo& t) const { file_.release(data_offset_ + t.offset, t.nbytes); }
  // The tensor decoded to floats, row-major with dims[0] contiguous (a GGUF [K, N] gives N rows of K).
  std::vector<float> tensor_f32(const std::string& name) const;

 private:
  const GgufValue& typed(const std::string& key, GgufValueType t) const;
  MappedFile file_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32, data_offset_ = 0;
  std::vector<GgufKV> kvs_;
  std::unordered_map<std::string, size_t> kv_index_;
  std::vector<GgufTensorInfo> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
};

// Collects KVs and tensor declarations, then writes the file atomically (temp + rename). Tensor data is
// produced by a callback when write() reaches it, so at most one tensor's bytes are held at a time.
class GgufWriter {
 public:
  explicit GgufWriter(uint64_t alignment = 32);
  // Replaces the value when the key exists (order of first set is kept).
  void set(const std::string& key, GgufValue value);
  using Producer = std::function<std::vector<uint8_t>()>;
  // dims in ggml order. Throws for a duplicate name or dims[0] not a multiple of the type's block size.
  void add_tensor(const std::string& name, std::vector<int64_t> dims, GgmlType type, Producer produce);
  // Writes `path`; each producer's output must have exactly the declared byte size (checked).
  void write(const std::string& path) const;
  size_t tensor_count() const { return tensors_.size(); }

 private:
  struct Pending {
    GgufTensorInfo info;
    Producer produce;
  };
  uint64_t alignment_;
  std::vector<GgufKV> kvs_;
  std::vector<Pending> tensors_;
  std::unordered_map<std::string, size_t> names_;
};

}  // namespace ptq
