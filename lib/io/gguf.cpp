#include "io/gguf.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "core/half.h"
#include "io/gguf_kquants.h"

namespace ptq {

namespace {

void check_blocks(int64_t n, const char* what) {
  if (n % kGgmlBlock != 0) fail_input("{}: row length {} is not a multiple of the block size 32", what, n);
}

// ---- the table's quantize/dequantize entries -------------------------------------------------------------------

void quantize_f32(const float* x, void* y, int64_t nrow, int64_t n, const float*) {
  std::memcpy(y, x, static_cast<size_t>(nrow * n) * 4);
}
template <uint16_t (*Convert)(float)>
void quantize_half(const float* x, void* y, int64_t nrow, int64_t n, const float*) {
  auto* o = static_cast<uint8_t*>(y);
  for (int64_t j = 0; j < nrow * n; ++j) {
    const uint16_t h = Convert(x[j]);
    std::memcpy(o + 2 * j, &h, 2);
  }
}
void quantize_q8_0(const float* x, void* y, int64_t nrow, int64_t n, const float*) {  // ggml ignores weights
  quantize_row_q8_0_ref(x, static_cast<BlockQ8_0*>(y), nrow * n);
}

void dequantize_f32(const uint8_t* src, float* dst, int64_t n) { std::memcpy(dst, src, static_cast<size_t>(n) * 4); }
template <float (*Convert)(uint16_t)>
void dequantize_half(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    uint16_t h;
    std::memcpy(&h, src + 2 * j, 2);
    dst[j] = Convert(h);
  }
}
// Blocks are byte arrays inside the map: each is copied to an aligned struct rather than type-punned.
template <typename Block, int64_t QK, void (*Row)(const Block*, float*, int64_t)>
void dequantize_blocks(const uint8_t* src, float* dst, int64_t n) {
  if (n % QK != 0) fail_input("ggml_decode: {} elements are not a multiple of the block size {}", n, QK);
  for (int64_t b = 0; b < n / QK; ++b) {
    Block blk;
    std::memcpy(&blk, src + b * sizeof(Block), sizeof(Block));
    Row(&blk, dst + b * QK, QK);
  }
}

template <typename Block, int64_t QK, void (*Row)(const Block*, float*, int64_t)>
constexpr GgmlTypeTraits block_type(GgmlType t, const char* name, GgmlQuantizeFn quantize) {
  return {t, name, QK, sizeof(Block), quantize, dequantize_blocks<Block, QK, Row>};
}

// Order: --help and ggml_writable_type_names list them so (float types, the 32-blocks, the K-quants).
const GgmlTypeTraits kTypes[] = {
    {GgmlType::F32, "f32", 1, 4, quantize_f32, dequantize_f32},
    {GgmlType::F16, "f16", 1, 2, quantize_half<f32_to_fp16>, dequantize_half<fp16_to_f32>},
    {GgmlType::BF16, "bf16", 1, 2, quantize_half<f32_to_bf16>, dequantize_half<bf16_to_f32>},
    block_type<BlockQ8_0, 32, dequantize_row_q8_0>(GgmlType::Q8_0, "q8_0", quantize_q8_0),
    block_type<BlockQ4_0, 32, dequantize_row_q4_0>(GgmlType::Q4_0, "q4_0", quantize_q4_0),
    block_type<BlockQ4_1, 32, dequantize_row_q4_1>(GgmlType::Q4_1, "q4_1", quantize_q4_1),
    block_type<BlockQ5_0, 32, dequantize_row_q5_0>(GgmlType::Q5_0, "q5_0", quantize_q5_0),
    block_type<BlockQ5_1, 32, dequantize_row_q5_1>(GgmlType::Q5_1, "q5_1", quantize_q5_1),
    block_type<BlockQ2_K, kQK_K, dequantize_row_q2_K>(GgmlType::Q2_K, "q2_k", quantize_q2_K),
    block_type<BlockQ3_K, kQK_K, dequantize_row_q3_K>(GgmlType::Q3_K, "q3_k", quantize_q3_K),
    block_type<BlockQ4_K, kQK_K, dequantize_row_q4_K>(GgmlType::Q4_K, "q4_k", quantize_q4_K),
    block_type<BlockQ5_K, kQK_K, dequantize_row_q5_K>(GgmlType::Q5_K, "q5_k", quantize_q5_K),
    block_type<BlockQ6_K, kQK_K, dequantize_row_q6_K>(GgmlType::Q6_K, "q6_k", quantize_q6_K),
};

}  // namespace

const GgmlTypeTraits* ggml_type_traits_by_id(uint32_t id) {
  for (const auto& t : kTypes)
    if (static_cast<uint32_t>(t.type) == id) return &t;
  return nullptr;
}

const GgmlTypeTraits& ggml_type_traits(GgmlType t) { return *ggml_type_traits_by_id(static_cast<uint32_t>(t)); }

std::optional<GgmlType> ggml_type_from_name(std::string_view name) {
  for (const auto& t : kTypes)
    if (name == t.name) return t.type;
  return std::nullopt;
}

std::string ggml_writable_type_names() {
  std::string s;
  for (const auto& t : kTypes) s += (s.empty() ? "" : ", ") + std::string(t.name);
  return s;
}

size_t ggml_nbytes(GgmlType t, int64_t n) {
  const auto& tr = ggml_type_traits(t);
  if (n < 0 || n % tr.block_size != 0)
    fail_input("{} elements cannot be stored as {}: not a multiple of its block size {}", n, tr.name, tr.block_size);
  return static_cast<size_t>(n / tr.block_size) * tr.type_size;
}

// ---- block formats -------------------------------------------------------------------------------------------

void quantize_row_q4_0_ref(const float* x, BlockQ4_0* y, int64_t n) {
  check_blocks(n, "quantize_row_q4_0_ref");
  for (int64_t b = 0; b < n / kGgmlBlock; ++b) {
    const float* xb = x + b * kGgmlBlock;
    float amax = 0, max = 0;
    for (int j = 0; j < kGgmlBlock; ++j)
      if (std::fabs(xb[j]) > amax) {
        amax = std::fabs(xb[j]);
        max = xb[j];
      }
    const float d = max / -8;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y[b].d = f32_to_fp16(d);
    for (int j = 0; j < kGgmlBlock / 2; ++j) {
      const int q0 = std::min(15, static_cast<int>(static_cast<int8_t>(xb[j] * id + 8.5f)));
      const int q1 = std::min(15, static_cast<int>(static_cast<int8_t>(xb[j + 16] * id + 8.5f)));
      y[b].qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
  }
}

void quantize_row_q4_1_ref(const float* x, BlockQ4_1* y, int64_t n) {
  check_blocks(n, "quantize_row_q4_1_ref");
  for (int64_t b = 0; b < n / kGgmlBlock; ++b) {
    const float* xb = x + b * kGgmlBlock;
    float mn = std::numeric_limits<float>::max(), mx = -std::numeric_limits<float>::max();
    for (int j = 0; j < kGgmlBlock; ++j) {
      mn = std::min(mn, xb[j]);
      mx = std::max(mx, xb[j]);
    }
    const float d = (mx - mn) / 15;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y[b].d = f32_to_fp16(d);
    y[b].m = f32_to_fp16(mn);
    for (int j = 0; j < kGgmlBlock / 2; ++j) {
      const int q0 = std::min(15, static_cast<int>(static_cast<int8_t>((xb[j] - mn) * id + 0.5f)));
      const int q1 = std::min(15, static_cast<int>(static_cast<int8_t>((xb[j + 16] - mn) * id + 0.5f)));
      y[b].qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
  }
}

void quantize_row_q8_0_ref(const float* x, BlockQ8_0* y, int64_t n) {
  check_blocks(n, "quantize_row_q8_0_ref");
  for (int64_t b = 0; b < n / kGgmlBlock; ++b) {
    const float* xb = x + b * kGgmlBlock;
    float amax = 0;
    for (int j = 0; j < kGgmlBlock; ++j) amax = std::max(amax, std::fabs(xb[j]));
    const float d = amax / 127;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y[b].d = f32_to_fp16(d);
    for (int j = 0; j < kGgmlBlock; ++j) y[b].qs[j] = static_cast<int8_t>(std::round(xb[j] * id));
  }
}

void dequantize_row_q4_0(const BlockQ4_0* x, float* y, int64_t n) {
  check_blocks(n, "dequantize_row_q4_0");
  for (int64_t b = 0; b < n / kGgmlBlock; ++b) {
    const float d = fp16_to_f32(x[b].d);
    for (int j = 0; j < kGgmlBlock / 2; ++j) {
      y[b * kGgmlBlock + j] = float((x[b].qs[j] & 0x0f) - 8) * d;
      y[b * kGgmlBlock + j + 16] = float((x[b].qs[j] >> 4) - 8) * d;
    }
  }
}

void dequantize_row_q4_1(const BlockQ4_1* x, float* y, int64_t n) {
  check_blocks(n, "dequantize_row_q4_1");
  for (int64_t b = 0; b < n / kGgmlBlock; ++b) {
    const float d = fp16_to_f32(x[b].d), m = fp16_to_f32(x[b].m);
    for (int j = 0; j < kGgmlBlock / 2; ++j) {
      y[b * kGgmlBlock + j] = float(x[b].qs[j] & 0x0f) * d + m;
      y[b * kGgmlBlock + j + 16] = float(x[b].qs[j] >> 4) * d + m;
    }
  }
}

void dequantize_row_q8_0(const BlockQ8_0* x, float* y, int64_t n) {
  check_blocks(n, "dequantize_row_q8_0");
  for (int64_t b = 0; b < n / kGgmlBlock; ++b) {
    const float d = fp16_to_f32(x[b].d);
    for (int j = 0; j < kGgmlBlock; ++j) y[b * kGgmlBlock + j] = float(x[b].qs[j]) * d;
  }
}

std::vector<uint8_t> ggml_encode(GgmlType t, const float* x, int64_t rows, int64_t cols, std::string_view what,
                                 const float* quant_weights) {
  const auto& tr = ggml_type_traits(t);
  if (cols % tr.block_size != 0)
    fail_input("{}: rows of {} values cannot be stored as {} (blocks of {})", what, cols, tr.name, tr.block_size);
  const int64_t n = rows * cols;
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) fail_input("{}: element {} is {}; GGUF export needs finite weights", what, i, x[i]);
  if (quant_weights != nullptr)
    for (int64_t i = 0; i < cols; ++i)
      if (!std::isfinite(quant_weights[i]) || quant_weights[i] < 0)
        fail_input("{}: importance of column {} is {}; importances must be finite and non-negative", what, i,
                   quant_weights[i]);
  std::vector<uint8_t> out(ggml_nbytes(t, n));
  if (n > 0) tr.quantize(x, out.data(), rows, cols, quant_weights);
  return out;
}

void ggml_decode(GgmlType t, const uint8_t* src, float* dst, int64_t n) { ggml_type_traits(t).dequantize(src, dst, n); }

// ---- values --------------------------------------------------------------------------------------------------

const char* gguf_value_type_name(GgufValueType t) {
  static const char* const names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32",
                                      "bool", "string", "array", "u64", "i64", "f64"};
  const auto i = static_cast<uint32_t>(t);
  return i < 13 ? names[i] : "unknown";
}

GgufValue GgufValue::u32(uint32_t v) { GgufValue x; x.type = GgufValueType::U32; x.i = v; return x; }
GgufValue GgufValue::i32(int32_t v) { GgufValue x; x.type = GgufValueType::I32; x.i = v; return x; }
GgufValue GgufValue::u64(uint64_t v) { GgufValue x; x.type = GgufValueType::U64; x.i = static_cast<int64_t>(v); return x; }
GgufValue GgufValue::f32(float v) { GgufValue x; x.type = GgufValueType::F32; x.f = v; return x; }
GgufValue GgufValue::boolean(bool v) { GgufValue x; x.type = GgufValueType::BOOL; x.i = v; return x; }
GgufValue GgufValue::string(std::string v) { GgufValue x; x.type = GgufValueType::STRING; x.s = std::move(v); return x; }
GgufValue GgufValue::string_array(std::vector<std::string> v) {
  GgufValue x;
  x.type = GgufValueType::ARRAY;
  x.elem = GgufValueType::STRING;
  x.strings = std::move(v);
  return x;
}
GgufValue GgufValue::f32_array(std::vector<double> v) {
  GgufValue x;
  x.type = GgufValueType::ARRAY;
  x.elem = GgufValueType::F32;
  x.floats = std::move(v);
  return x;
}
GgufValue GgufValue::i32_array(std::vector<int64_t> v) {
  GgufValue x;
  x.type = GgufValueType::ARRAY;
  x.elem = GgufValueType::I32;
  x.ints = std::move(v);
  return x;
}

namespace {
bool integer_type(GgufValueType t) {
  switch (t) {
    case GgufValueType::U8: case GgufValueType::I8: case GgufValueType::U16: case GgufValueType::I16:
    case GgufValueType::U32: case GgufValueType::I32: case GgufValueType::U64: case GgufValueType::I64:
      return true;
    default: return false;
  }
}
size_t scalar_size(GgufValueType t) {
  switch (t) {
    case GgufValueType::U8: case GgufValueType::I8: case GgufValueType::BOOL: return 1;
    case GgufValueType::U16: case GgufValueType::I16: return 2;
    case GgufValueType::U32: case GgufValueType::I32: case GgufValueType::F32: return 4;
    case GgufValueType::U64: case GgufValueType::I64: case GgufValueType::F64: return 8;
    default: return 0;
  }
}
}  // namespace

bool GgufValue::is_integer() const { return integer_type(type); }
size_t GgufValue::array_size() const { return ints.size() + floats.size() + strings.size(); }

int64_t GgufTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

// ---- reader --------------------------------------------------------------------------------------------------

namespace {

class Cursor {
 public:
  Cursor(const uint8_t* p, size_t size, const std::string& path) : p_(p), size_(size), path_(path) {}
  size_t pos() const { return pos_; }
  void need(uint64_t n, const std::string& what) const {
    if (n > size_ - pos_)
      fail_input("{}: truncated GGUF: {} needs {} bytes at offset {}, only {} left", path_, what, n, pos_,
                 size_ - pos_);
  }
  template <typename T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string str(const std::string& what) {
    const uint64_t n = read<uint64_t>(what + " length");
    need(n, what);
    std::string s(reinterpret_cast<const char*>(p_ + pos_), n);
    pos_ += n;
    return s;
  }

 private:
  const uint8_t* p_;
  size_t size_, pos_ = 0;
  const std::string& path_;
};

void read_scalar(Cursor& c, GgufValueType t, GgufValue& v, const std::string& what, const std::string& path) {
  switch (t) {
    case GgufValueType::U8: v.i = c.read<uint8_t>(what); break;
    case GgufValueType::I8: v.i = c.read<int8_t>(what); break;
    case GgufValueType::U16: v.i = c.read<uint16_t>(what); break;
    case GgufValueType::I16: v.i = c.read<int16_t>(what); break;
    case GgufValueType::U32: v.i = c.read<uint32_t>(what); break;
    case GgufValueType::I32: v.i = c.read<int32_t>(what); break;
    case GgufValueType::U64: v.i = static_cast<int64_t>(c.read<uint64_t>(what)); break;
    case GgufValueType::I64: v.i = c.read<int64_t>(what); break;
    case GgufValueType::F32: v.f = c.read<float>(what); break;
    case GgufValueType::F64: v.f = c.read<double>(what); break;
    case GgufValueType::BOOL: {
      const uint8_t b = c.read<uint8_t>(what);
      if (b > 1) fail_input("{}: {} at offset {} is a bool holding {}, expected 0 or 1", path, what, c.pos() - 1, b);
      v.i = b;
      break;
    }
    case GgufValueType::STRING: v.s = c.str(what); break;
    default: fail_input("{}: {} has value type {}, not a scalar", path, what, static_cast<uint32_t>(t));
  }
}

GgufValueType read_value_type(Cursor& c, const std::string& what, const std::string& path) {
  const size_t at = c.pos();
  const uint32_t t = c.read<uint32_t>(what + " type");
  if (t > 12) fail_input("{}: {} has unknown value type {} at offset {} (known 0..12)", path, what, t, at);
  return static_cast<GgufValueType>(t);
}

}  // namespace

GgufFile::GgufFile(const std::string& path) : file_(path) {
  Cursor c(file_.data(), file_.size(), path);
  c.need(4, "magic");
  if (std::memcmp(file_.data(), "GGUF", 4) != 0)
    fail_input("{}: not a GGUF file (magic {:02x}{:02x}{:02x}{:02x}, expected \"GGUF\")", path, file_.data()[0],
               file_.data()[1], file_.data()[2], file_.data()[3]);
  c.read<uint32_t>("magic");
  version_ = c.read<uint32_t>("version");
  if (version_ == 0x03000000 || version_ == 0x02000000)
    fail_input("{}: big-endian GGUF (version bytes {:08x}); ptq reads little-endian files only", path, version_);
  if (version_ != 2 && version_ != 3)
    fail_input("{}: GGUF version {} is not supported (ptq reads versions 2 and 3)", path, version_);
  const uint64_t n_tensors = c.read<uint64_t>("tensor_count");
  const uint64_t n_kv = c.read<uint64_t>("kv_count");
  // Each KV takes at least 8 + 4 bytes, each tensor info at least 8 + 4 + 8 + 4 + 8: refuse absurd counts before
  // reserving anything.
  if (n_kv > file_.size() / 12 || n_tensors > file_.size() / 32)
    fail_input("{}: header claims {} KVs and {} tensors, more than a {}-byte file can hold", path, n_kv, n_tensors,
               file_.size());
  kvs_.reserve(n_kv);
  for (uint64_t k = 0; k < n_kv; ++k) {
    const size_t at = c.pos();
    GgufKV kv;
    kv.key = c.str(fmt::format("key of KV {}", k));
    const std::string what = "KV \"" + kv.key + "\"";
    if (kv_index_.count(kv.key)) fail_input("{}: duplicate key \"{}\" at offset {}", path, kv.key, at);
    kv.value.type = read_value_type(c, what, path);
    if (kv.value.type == GgufValueType::ARRAY) {
      kv.value.elem = read_value_type(c, what + " element", path);
      if (kv.value.elem == GgufValueType::ARRAY)
        fail_input("{}: {} is an array of arrays (not supported)", path, what);
      const uint64_t n = c.read<uint64_t>(what + " count");
      const uint64_t min_size = kv.value.elem == GgufValueType::STRING ? 8 : scalar_size(kv.value.elem);
      c.need(n * min_size, what + fmt::format(" ({} elements)", n));
      GgufValue e;
      for (uint64_t j = 0; j < n; ++j) {
        read_scalar(c, kv.value.elem, e, what, path);
        if (kv.value.elem == GgufValueType::STRING) kv.value.strings.push_back(std::move(e.s));
        else if (kv.value.elem == GgufValueType::F32 || kv.value.elem == GgufValueType::F64) kv.value.floats.push_back(e.f);
        else kv.value.ints.push_back(e.i);
      }
    } else {
      read_scalar(c, kv.value.type, kv.value, what, path);
    }
    kv_index_[kv.key] = kvs_.size();
    kvs_.push_back(std::move(kv));
  }
  if (const GgufValue* a = find("general.alignment")) {
    if (a->type != GgufValueType::U32 || a->i == 0 || (a->i & (a->i - 1)) != 0)
      fail_input("{}: general.alignment must be a u32 power of two, found {} {}", path, gguf_value_type_name(a->type),
                 a->i);
    alignment_ = static_cast<uint64_t>(a->i);
  }
  tensors_.reserve(n_tensors);
  for (uint64_t k = 0; k < n_tensors; ++k) {
    const size_t at = c.pos();
    GgufTensorInfo t;
    t.name = c.str(fmt::format("name of tensor {}", k));
    const std::string what = "tensor \"" + t.name + "\"";
    if (tensor_index_.count(t.name)) fail_input("{}: duplicate tensor \"{}\" at offset {}", path, t.name, at);
    const uint32_t nd = c.read<uint32_t>(what + " n_dims");
    if (nd < 1 || nd > 4) fail_input("{}: {} has {} dimensions (GGUF allows 1..4)", path, what, nd);
    int64_t numel = 1;
    for (uint32_t d = 0; d < nd; ++d) {
      const uint64_t v = c.read<uint64_t>(what + " dims");
      // Divided, not multiplied: numel * v can wrap past 2^64 (two dims of 2^35) and pass a product check.
      if (v == 0 || v > (uint64_t(1) << 40) || v > (uint64_t(1) << 50) / uint64_t(numel))
        fail_input("{}: {} dimension {} is {} (must be positive; total elements at most 2^50)", path, what, d, v);
      t.dims.push_back(static_cast<int64_t>(v));
      numel *= static_cast<int64_t>(v);
    }
    const uint32_t type = c.read<uint32_t>(what + " type");
    const GgmlTypeTraits* tr = ggml_type_traits_by_id(type);
    if (tr == nullptr) fail_input("{}: {} has ggml type {}, which ptq does not know", path, what, type);
    t.type = tr->type;
    if (t.dims[0] % tr->block_size != 0)
      fail_input("{}: {} has rows of {} elements, not a multiple of {}'s block size {}", path, what, t.dims[0],
                 tr->name, tr->block_size);
    t.offset = c.read<uint64_t>(what + " offset");
    if (t.offset % alignment_ != 0)
      fail_input("{}: {} data offset {} is not a multiple of the alignment {}", path, what, t.offset, alignment_);
    t.nbytes = static_cast<uint64_t>(numel / tr->block_size) * tr->type_size;
    tensor_index_[t.name] = tensors_.size();
    tensors_.push_back(std::move(t));
  }
  data_offset_ = (c.pos() + alignment_ - 1) / alignment_ * alignment_;
  if (data_offset_ > file_.size())
    fail_input("{}: data section would start at {} (aligned to {}), past the end of the {}-byte file", path,
               data_offset_, alignment_, file_.size());
  const uint64_t data_size = file_.size() - data_offset_;
  std::vector<const GgufTensorInfo*> by_offset;
  for (const auto& t : tensors_) {
    if (t.offset > data_size || t.nbytes > data_size - t.offset)
      fail_input("{}: tensor \"{}\" ({} {} bytes at data offset {}) runs past the end of the file (data section "
                 "{} bytes)", path, t.name, ggml_type_name(t.type), t.nbytes, t.offset, data_size);
    by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i - 1]->offset + by_offset[i - 1]->nbytes > by_offset[i]->offset)
      fail_input("{}: tensors \"{}\" and \"{}\" overlap in the data section", path, by_offset[i - 1]->name,
                 by_offset[i]->name);
}

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kvs_[it->second].value;
}

const GgufValue& GgufFile::typed(const std::string& key, GgufValueType t) const {
  const GgufValue* v = find(key);
  if (v == nullptr) fail_input("{}: metadata key \"{}\" is missing", path(), key);
  const bool ok = t == GgufValueType::U64 ? v->is_integer()
                  : t == GgufValueType::F64 ? (v->type == GgufValueType::F32 || v->type == GgufValueType::F64)
                                            : v->type == t;
  if (!ok)
    fail_input("{}: metadata key \"{}\" is {}, expected {}", path(), key, gguf_value_type_name(v->type),
               t == GgufValueType::U64 ? "an integer" : t == GgufValueType::F64 ? "f32 or f64" : gguf_value_type_name(t));
  return *v;
}

uint64_t GgufFile::get_uint(const std::string& key) const {
  const GgufValue& v = typed(key, GgufValueType::U64);
  if (v.i < 0 && v.type != GgufValueType::U64)
    fail_input("{}: metadata key \"{}\" is {}, expected a non-negative integer", path(), key, v.i);
  return static_cast<uint64_t>(v.i);
}
int64_t GgufFile::get_int(const std::string& key) const { return typed(key, GgufValueType::U64).i; }
double GgufFile::get_float(const std::string& key) const { return typed(key, GgufValueType::F64).f; }
bool GgufFile::get_bool(const std::string& key) const { return typed(key, GgufValueType::BOOL).i != 0; }
const std::string& GgufFile::get_string(const std::string& key) const { return typed(key, GgufValueType::STRING).s; }

namespace {
[[noreturn]] void wrong_elem(const std::string& path, const std::string& key, const GgufValue& v, const char* want) {
  fail_input("{}: metadata key \"{}\" is an array of {}, expected an array of {}", path, key,
             gguf_value_type_name(v.elem), want);
}
}  // namespace

const std::vector<std::string>& GgufFile::get_string_array(const std::string& key) const {
  const GgufValue& v = typed(key, GgufValueType::ARRAY);
  if (v.elem != GgufValueType::STRING) wrong_elem(path(), key, v, "string");
  return v.strings;
}
const std::vector<double>& GgufFile::get_float_array(const std::string& key) const {
  const GgufValue& v = typed(key, GgufValueType::ARRAY);
  if (v.elem != GgufValueType::F32 && v.elem != GgufValueType::F64) wrong_elem(path(), key, v, "f32/f64");
  return v.floats;
}
const std::vector<int64_t>& GgufFile::get_int_array(const std::string& key) const {
  const GgufValue& v = typed(key, GgufValueType::ARRAY);
  if (!integer_type(v.elem) && v.elem != GgufValueType::BOOL) wrong_elem(path(), key, v, "integers");
  return v.ints;
}

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const GgufTensorInfo& GgufFile::tensor(const std::string& name) const {
  const GgufTensorInfo* t = find_tensor(name);
  if (t == nullptr) fail_input("{}: no tensor \"{}\"", path(), name);
  return *t;
}

std::vector<float> GgufFile::tensor_f32(const std::string& name) const {
  const GgufTensorInfo& t = tensor(name);
  std::vector<float> out(static_cast<size_t>(t.numel()));
  ggml_decode(t.type, tensor_data(t), out.data(), t.numel());
  return out;
}

// ---- writer --------------------------------------------------------------------------------------------------

GgufWriter::GgufWriter(uint64_t alignment) : alignment_(alignment) {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0) fail_input("GGUF alignment {} is not a power of two", alignment);
  if (alignment != 32) set("general.alignment", GgufValue::u32(static_cast<uint32_t>(alignment)));
}

void GgufWriter::set(const std::string& key, GgufValue value) {
  for (auto& kv : kvs_)
    if (kv.key == key) {
      kv.value = std::move(value);
      return;
    }
  kvs_.push_back({key, std::move(value)});
}

void GgufWriter::add_tensor(const std::string& name, std::vector<int64_t> dims, GgmlType type, Producer produce) {
  if (names_.count(name)) fail_input("GGUF writer: tensor \"{}\" added twice", name);
  if (dims.empty() || dims.size() > 4) fail_input("GGUF writer: tensor \"{}\" has {} dims (1..4)", name, dims.size());
  const auto& tr = ggml_type_traits(type);
  if (dims[0] % tr.block_size != 0)
    fail_input("GGUF writer: tensor \"{}\" rows of {} cannot be {} (blocks of {})", name, dims[0], tr.name,
               tr.block_size);
  Pending p;
  p.info.name = name;
  p.info.dims = std::move(dims);
  p.info.type = type;
  p.info.nbytes = ggml_nbytes(type, p.info.numel());
  uint64_t offset = 0;
  if (!tensors_.empty()) {
    const auto& last = tensors_.back().info;
    offset = (last.offset + last.nbytes + alignment_ - 1) / alignment_ * alignment_;
  }
  p.info.offset = offset;
  p.produce = std::move(produce);
  names_[name] = tensors_.size();
  tensors_.push_back(std::move(p));
}

namespace {

class Out {
 public:
  Out(std::FILE* f, const std::string& path) : f_(f), path_(path) {}
  void bytes(const void* p, size_t n) {
    if (n != 0 && std::fwrite(p, 1, n, f_) != n)
      fail_io("write to {} failed at offset {}: {}", path_, pos_, std::strerror(errno));
    pos_ += n;
  }
  template <typename T>
  void put(T v) { bytes(&v, sizeof(T)); }
  void str(const std::string& s) {
    put<uint64_t>(s.size());
    bytes(s.data(), s.size());
  }
  void pad_to(uint64_t alignment) {
    static const char zeros[64] = {};
    while (pos_ % alignment != 0) bytes(zeros, std::min<uint64_t>(alignment - pos_ % alignment, sizeof(zeros)));
  }
  uint64_t pos() const { return pos_; }

 private:
  std::FILE* f_;
  const std::string& path_;
  uint64_t pos_ = 0;
};

void write_scalar(Out& o, GgufValueType t, const GgufValue& v, size_t j, bool array) {
  // An array keeps its elements in the one vector its element type selects.
  const bool is_float = t == GgufValueType::F32 || t == GgufValueType::F64;
  const int64_t i = !array ? v.i : (is_float || t == GgufValueType::STRING) ? 0 : v.ints.at(j);
  const double f = !array ? v.f : is_float ? v.floats.at(j) : 0;
  switch (t) {
    case GgufValueType::U8: o.put<uint8_t>(static_cast<uint8_t>(i)); break;
    case GgufValueType::I8: o.put<int8_t>(static_cast<int8_t>(i)); break;
    case GgufValueType::U16: o.put<uint16_t>(static_cast<uint16_t>(i)); break;
    case GgufValueType::I16: o.put<int16_t>(static_cast<int16_t>(i)); break;
    case GgufValueType::U32: o.put<uint32_t>(static_cast<uint32_t>(i)); break;
    case GgufValueType::I32: o.put<int32_t>(static_cast<int32_t>(i)); break;
    case GgufValueType::U64: o.put<uint64_t>(static_cast<uint64_t>(i)); break;
    case GgufValueType::I64: o.put<int64_t>(i); break;
    case GgufValueType::BOOL: o.put<uint8_t>(i != 0); break;
    case GgufValueType::F32: o.put<float>(static_cast<float>(f)); break;
    case GgufValueType::F64: o.put<double>(f); break;
    case GgufValueType::STRING: o.str(array ? v.strings[j] : v.s); break;
    default: fail_input("GGUF writer: value type {} cannot be written here", gguf_value_type_name(t));
  }
}

}  // namespace

void GgufWriter::write(const std::string& path) const {
  write_file_atomic(path, [&](std::FILE* f) {
    Out o(f, path);
    o.bytes("GGUF", 4);
    o.put<uint32_t>(3);
    o.put<uint64_t>(tensors_.size());
    o.put<uint64_t>(kvs_.size());
    for (const auto& kv : kvs_) {
      o.str(kv.key);
      o.put<uint32_t>(static_cast<uint32_t>(kv.value.type));
      if (kv.value.type == GgufValueType::ARRAY) {
        o.put<uint32_t>(static_cast<uint32_t>(kv.value.elem));
        const size_t n = kv.value.array_size();
        o.put<uint64_t>(n);
        for (size_t j = 0; j < n; ++j) write_scalar(o, kv.value.elem, kv.value, j, true);
      } else {
        write_scalar(o, kv.value.type, kv.value, 0, false);
      }
    }
    for (const auto& t : tensors_) {
      o.str(t.info.name);
      o.put<uint32_t>(static_cast<uint32_t>(t.info.dims.size()));
      for (int64_t d : t.info.dims) o.put<uint64_t>(static_cast<uint64_t>(d));
      o.put<uint32_t>(static_cast<uint32_t>(t.info.type));
      o.put<uint64_t>(t.info.offset);
    }
    o.pad_to(alignment_);
    const uint64_t data_start = o.pos();
    for (const auto& t : tensors_) {
      o.pad_to(alignment_);
      if (o.pos() - data_start != t.info.offset)
        fail_io("GGUF writer: internal offset mismatch for tensor \"{}\"", t.info.name);
      const std::vector<uint8_t> data = t.produce();
      if (data.size() != t.info.nbytes)
        fail_input("GGUF writer: tensor \"{}\" produced {} bytes, declared {} {} needs {}", t.info.name, data.size(),
                   ggml_type_name(t.info.type), fmt::join(t.info.dims, "x"), t.info.nbytes);
      o.bytes(data.data(), data.size());
    }
    o.pad_to(alignment_);  // as gguf-py: the file ends on an aligned boundary
  });
}

}  // namespace ptq
