#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

#include <algorithm>
#include <cerrno>
#include <random>
#include <cstring>
#include <limits>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"
#include "core/half.h"

namespace ptq {

using nlohmann::json;

namespace {

// What both writers accept from add(): a valid new name and exactly shape x dtype bytes.
void check_added_tensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape, size_t nbytes,
                        bool duplicate) {
  if (name == "__metadata__" || name.empty()) fail_input("safetensors writer: invalid tensor name \"{}\"", name);
  if (duplicate) fail_input("safetensors writer: tensor \"{}\" added twice", name);
  uint64_t expected = dtype_size(dtype);
  for (int64_t d : shape) {
    if (d < 0) fail_input("safetensors writer: tensor \"{}\" has negative dimension in {}", name, shape_str(shape));
    expected *= static_cast<uint64_t>(d);
  }
  if (expected != nbytes)
    fail_input("safetensors writer: tensor \"{}\" {} x {} needs {} bytes, got {}", name, shape_str(shape),
               dtype_name(dtype), expected, nbytes);
}

}  // namespace

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

namespace {

constexpr uint64_t kMaxHeaderBytes = 100u << 20;  // the reference implementation's limit

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

json parse_header(const std::string& path, const char* text, size_t len) {
  // Duplicate names are an error; nlohmann would silently keep the last one, so watch top-level keys.
  std::unordered_set<std::string> seen;
  json::parser_callback_t cb = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!seen.insert(key).second) fail_input("{}: duplicate tensor name \"{}\" in the header", path, key);
    }
    return true;
  };
  try {
    return json::parse(text, text + len, cb);
  } catch (const json::exception& e) {
    fail_input("{}: header is not valid JSON/UTF-8 ({})", path, e.what());
  }
}

}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path) : file_(path) {
  const size_t size = file_.size();
  if (size < 8) fail_input("{}: file is {} bytes, too short for a safetensors header (8-byte length)", path, size);
  const uint64_t header_len = read_u64_le(file_.data());
  if (header_len > size - 8)
    fail_input("{}: header length {} runs past the end of the file ({} bytes)", path, header_len, size);
  if (header_len > kMaxHeaderBytes)
    fail_input("{}: header length {} exceeds the {} byte limit", path, header_len, kMaxHeaderBytes);
  json header = parse_header(path, reinterpret_cast<const char*>(file_.data() + 8), header_len);
  if (!header.is_object()) fail_input("{}: header must be a JSON object, found {}", path, header.type_name());

  buffer_ = file_.data() + 8 + header_len;
  const uint64_t buffer_size = size - 8 - header_len;

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail_input("{}: __metadata__ must be an object of strings", path);
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          fail_input("{}: __metadata__[\"{}\"] must be a string, found {}", path, m.key(), m.value().type_name());
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object()) fail_input("{}: tensor \"{}\": entry must be an object", path, name);
    TensorInfo t;
    t.name = name;
    auto dt = v.find("dtype");
    if (dt == v.end() || !dt->is_string()) fail_input("{}: tensor \"{}\": missing \"dtype\" string", path, name);
    auto parsed = dtype_from_name(dt->get<std::string>());
    if (!parsed)
      fail_input("{}: tensor \"{}\": unknown dtype \"{}\" (expected one of {})", path, name, dt->get<std::string>(),
                 dtype_names());
    t.dtype = *parsed;
    auto sh = v.find("shape");
    if (sh == v.end() || !sh->is_array()) fail_input("{}: tensor \"{}\": missing \"shape\" array", path, name);
    for (const auto& d : *sh) {
      if (!d.is_number_unsigned())
        fail_input("{}: tensor \"{}\": shape entries must be non-negative integers, found {}", path, name, d.dump());
      if (d.get<uint64_t>() > uint64_t(std::numeric_limits<int32_t>::max()))
        fail_input("{}: tensor \"{}\": shape entry {} is implausibly large", path, name, d.get<uint64_t>());
      t.shape.push_back(d.get<int64_t>());
    }
    auto off = v.find("data_offsets");
    if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned())
      fail_input("{}: tensor \"{}\": \"data_offsets\" must be [begin, end] non-negative integers", path, name);
    t.begin = (*off)[0].get<uint64_t>();
    t.end = (*off)[1].get<uint64_t>();
    if (t.begin > t.end) fail_input("{}: tensor \"{}\": data_offsets [{}, {}] has begin > end", path, name, t.begin, t.end);
    if (t.end > buffer_size)
      fail_input("{}: tensor \"{}\": data_offsets [{}, {}] outside the {}-byte data buffer", path, name, t.begin,
                 t.end, buffer_size);
    // numel * size cannot overflow: each dim < 2^31 and the product is compared step by step.
    unsigned __int128 expected = dtype_size(t.dtype);
    for (int64_t d : t.shape) expected *= static_cast<uint64_t>(d);
    if (expected != t.end - t.begin)
      fail_input("{}: tensor \"{}\": shape {} x {} needs {} bytes, data_offsets give {}", path, name,
                 shape_str(t.shape), dtype_name(t.dtype), static_cast<uint64_t>(expected), t.end - t.begin);
    tensors_.push_back(std::move(t));
  }

  // The tensors must tile the buffer exactly.
  std::vector<const TensorInfo*> by_offset;
  for (const auto& t : tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t pos = 0;
  const TensorInfo* prev = nullptr;
  for (const TensorInfo* t : by_offset) {
    if (t->begin < pos)
      fail_input("{}: tensor \"{}\" [{}, {}] overlaps tensor \"{}\" [{}, {}]", path, t->name, t->begin, t->end,
                 prev->name, prev->begin, prev->end);
    if (t->begin > pos)
      fail_input("{}: gap of {} unreferenced bytes before tensor \"{}\" at offset {}", path, t->begin - pos, t->name,
                 pos);
    pos = t->end;
    prev = t;
  }
  if (pos != buffer_size)
    fail_input("{}: {} trailing bytes after the last tensor (buffer is {} bytes, tensors cover {})", path,
               buffer_size - pos, buffer_size, pos);

  for (size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

TensorView SafetensorsFile::view(const std::string& name) const {
  const TensorInfo* t = find(name);
  if (t == nullptr) fail_input("{}: no tensor named \"{}\"", path(), name);
  return TensorView{t, buffer_ + t->begin};
}

void SafetensorsFile::release(const std::string& name) const {
  const TensorView v = view(name);
  file_.release(static_cast<size_t>(v.data - file_.data()), v.nbytes());
}

TensorArchive::TensorArchive(const std::string& path) : path_(path) {
  auto add_file = [&](const std::string& file) {
    files_.push_back(std::make_unique<SafetensorsFile>(file));
    return files_.size() - 1;
  };
  if (!is_directory(path)) {
    size_t idx = add_file(path);
    for (const auto& t : files_[idx]->tensors()) where_[t.name] = idx;
    return;
  }
  const std::string index_path = path + "/model.safetensors.index.json";
  const std::string single = path + "/model.safetensors";
  if (file_exists(index_path)) {
    json index;
    try {
      index = json::parse(read_text_file(index_path));
    } catch (const json::exception& e) {
      fail_input("{}: not valid JSON ({})", index_path, e.what());
    }
    if (!index.contains("weight_map") || !index["weight_map"].is_object())
      fail_input("{}: missing \"weight_map\" object", index_path);
    std::map<std::string, size_t> shard_index;
    for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
      if (!it.value().is_string()) fail_input("{}: weight_map[\"{}\"] must be a file name", index_path, it.key());
      const std::string shard = it.value().get<std::string>();
      if (shard.find('/') != std::string::npos || shard == "..")
        fail_input("{}: weight_map[\"{}\"] = \"{}\" must be a file in the same directory", index_path, it.key(), shard);
      auto s = shard_index.find(shard);
      size_t idx = s != shard_index.end() ? s->second : (shard_index[shard] = add_file(path + "/" + shard));
      if (files_[idx]->find(it.key()) == nullptr)
        fail_input("{}: weight_map names \"{}\" in {}, which does not contain it", index_path, it.key(), shard);
      where_[it.key()] = idx;
    }
  } else if (file_exists(single)) {
    size_t idx = add_file(single);
    for (const auto& t : files_[idx]->tensors()) where_[t.name] = idx;
  } else {
    fail_input("{}: no model.safetensors or model.safetensors.index.json in this directory", path);
  }
}

TensorView TensorArchive::view(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail_input("{}: checkpoint has no tensor \"{}\"", path_, name);
  return files_[it->second]->view(name);
}

void TensorArchive::release(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail_input("{}: checkpoint has no tensor \"{}\"", path_, name);
  files_[it->second]->release(name);
}

std::vector<std::string> TensorArchive::names() const {
  std::vector<std::string> out;
  for (const auto& kv : where_) out.push_back(kv.first);
  std::sort(out.begin(), out.end());
  return out;
}

uint64_t TensorArchive::total_file_bytes() const {
  uint64_t n = 0;
  for (const auto& f : files_) n += f->file_size();
  return n;
}

void SafetensorsWriter::add(const std::string& name, DType dtype, const std::vector<int64_t>& shape, const void* data,
                            size_t nbytes) {
  check_added_tensor(name, dtype, shape, nbytes, names_.count(name) != 0);
  Entry e{name, dtype, shape, {}};
  e.bytes.assign(static_cast<const uint8_t*>(data), static_cast<const uint8_t*>(data) + nbytes);
  names_[name] = entries_.size();
  entries_.push_back(std::move(e));
}

void SafetensorsWriter::add_f32(const std::string& name, const std::vector<int64_t>& shape, const float* data) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  add(name, DType::F32, shape, data, static_cast<size_t>(n) * 4);
}

void SafetensorsWriter::write(const std::string& path) const {
  std::vector<SafetensorsStreamWriter::Entry> entries;
  for (const auto& e : entries_) entries.push_back({e.name, e.dtype, e.shape});
  SafetensorsStreamWriter out(path, entries, metadata_);
  for (const auto& e : entries_) out.write(e.name, e.bytes.data(), e.bytes.size());
  out.commit();
}

SafetensorsStreamWriter::SafetensorsStreamWriter(std::string path, const std::vector<Entry>& entries,
                                                 const std::map<std::string, std::string>& metadata)
    : path_(std::move(path)) {
  json header = json::object();
  for (const auto& e : entries) {
    if (e.name == "__metadata__" || e.name.empty())
      fail_input("safetensors writer: invalid tensor name \"{}\"", e.name);
    uint64_t nbytes = dtype_size(e.dtype);
    for (int64_t d : e.shape) {
      if (d < 0) fail_input("safetensors writer: tensor \"{}\" has negative dimension in {}", e.name, shape_str(e.shape));
      nbytes *= static_cast<uint64_t>(d);
    }
    if (!slots_.emplace(e.name, Slot{total_, nbytes, false}).second)
      fail_input("safetensors writer: tensor \"{}\" declared twice", e.name);
    header[e.name] = {{"dtype", dtype_name(e.dtype)}, {"shape", e.shape}, {"data_offsets", {total_, total_ + nbytes}}};
    total_ += nbytes;
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text += ' ';  // keep the data buffer 8-byte aligned
  data_start_ = 8 + text.size();

  std::random_device rd;
  tmp_ = fmt::format("{}.tmp.{}.{:08x}", path_, ::getpid(), rd());
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd_ < 0) fail_io("cannot create {}: {}", tmp_, std::strerror(errno));
  std::string prefix(8, '\0');
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<char>((uint64_t(text.size()) >> (8 * i)) & 0xff);
  prefix += text;
  if (::pwrite(fd_, prefix.data(), prefix.size(), 0) != static_cast<ssize_t>(prefix.size()) ||
      ::ftruncate(fd_, static_cast<off_t>(data_start_ + total_)) != 0) {
    const int e = errno;
    ::close(fd_);
    ::unlink(tmp_.c_str());
    fail_io("write to {} failed: {}", tmp_, std::strerror(e));
  }
}

SafetensorsStreamWriter::~SafetensorsStreamWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_.c_str());
}

void SafetensorsStreamWriter::write(const std::string& name, const void* data, size_t nbytes) {
  auto it = slots_.find(name);
  if (it == slots_.end()) fail_input("safetensors writer: tensor \"{}\" was not declared for {}", name, path_);
  Slot& slot = it->second;
  if (slot.written) fail_input("safetensors writer: tensor \"{}\" written twice", name);
  if (nbytes != slot.nbytes)
    fail_input("safetensors writer: tensor \"{}\" needs {} bytes, got {}", name, slot.nbytes, nbytes);
  const auto* p = static_cast<const char*>(data);
  uint64_t done = 0;
  while (done < nbytes) {
    const ssize_t n = ::pwrite(fd_, p + done, nbytes - done, static_cast<off_t>(data_start_ + slot.offset + done));
    if (n <= 0) fail_io("write of tensor \"{}\" to {} failed: {}", name, tmp_, std::strerror(errno));
    done += static_cast<uint64_t>(n);
  }
  slot.written = true;
}

bool SafetensorsStreamWriter::written(const std::string& name) const {
  auto it = slots_.find(name);
  return it != slots_.end() && it->second.written;
}

void SafetensorsStreamWriter::commit() {
  for (const auto& [name, slot] : slots_)
    if (!slot.written) fail_input("safetensors writer: tensor \"{}\" of {} was never written", name, path_);
  if (::fsync(fd_) != 0) fail_io("fsync of {} failed: {}", tmp_, std::strerror(errno));
  ::close(fd_);
  fd_ = -1;
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0)
    fail_io("cannot rename {} to {}: {}", tmp_, path_, std::strerror(errno));
  committed_ = true;
}

SafetensorsSpoolWriter::SafetensorsSpoolWriter(std::string path, std::map<std::string, std::string> metadata)
    : path_(std::move(path)), metadata_(std::move(metadata)) {
  std::random_device rd;
  spool_ = fmt::format("{}.spool.{}.{:08x}", path_, ::getpid(), rd());
  fd_ = ::open(spool_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd_ < 0) fail_io("cannot create {}: {}", spool_, std::strerror(errno));
}

SafetensorsSpoolWriter::SafetensorsSpoolWriter(std::string path, std::map<std::string, std::string> metadata,
                                               std::string spool, const nlohmann::json* state)
    : path_(std::move(path)), spool_(std::move(spool)), metadata_(std::move(metadata)), own_spool_(false) {
  fd_ = ::open(spool_.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | (state ? 0 : O_TRUNC), 0644);
  if (fd_ < 0) fail_io("cannot open {}: {}", spool_, std::strerror(errno));
  if (!state) return;
  try {
    for (const auto& t : state->at("tensors")) {
      const std::string dtype = t.at("dtype").get<std::string>();
      const auto dt = dtype_from_name(dtype);
      if (!dt) fail_input("{}: unknown dtype \"{}\" in its state", spool_, dtype);
      const Entry e{t.at("name").get<std::string>(), *dt, t.at("shape").get<std::vector<int64_t>>(),
                    t.at("offset").get<uint64_t>(), t.at("nbytes").get<uint64_t>()};
      check_added_tensor(e.name, e.dtype, e.shape, e.nbytes, index_.count(e.name) != 0);
      if (e.offset != spooled_) fail_input("{}: tensor \"{}\" is not where its state says", spool_, e.name);
      index_[e.name] = entries_.size();
      entries_.push_back(e);
      spooled_ += e.nbytes;
    }
    if (state->at("bytes").get<uint64_t>() != spooled_) fail_input("{}: its state does not add up", spool_);
  } catch (const nlohmann::json::exception& e) {
    fail_input("{}: malformed spool state ({})", spool_, e.what());
  }
  struct stat st{};
  if (::fstat(fd_, &st) != 0 || static_cast<uint64_t>(st.st_size) < spooled_)
    fail_input("{} holds {} bytes, fewer than the {} its state records; it was damaged", spool_,
               static_cast<uint64_t>(st.st_size), spooled_);
  if (::ftruncate(fd_, static_cast<off_t>(spooled_)) != 0)
    fail_io("cannot truncate {}: {}", spool_, std::strerror(errno));
}

SafetensorsSpoolWriter::~SafetensorsSpoolWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (own_spool_) ::unlink(spool_.c_str());
}

nlohmann::json SafetensorsSpoolWriter::state() {
  if (committed_) fail_input("safetensors writer: {} is already committed", path_);
  if (::fdatasync(fd_) != 0) fail_io("fsync of {} failed: {}", spool_, std::strerror(errno));
  nlohmann::json tensors = nlohmann::json::array();
  for (const Entry& e : entries_)
    tensors.push_back({{"name", e.name}, {"dtype", dtype_name(e.dtype)}, {"shape", e.shape}, {"offset", e.offset},
                       {"nbytes", e.nbytes}});
  return {{"bytes", spooled_}, {"tensors", tensors}};
}

void SafetensorsSpoolWriter::add(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                                 const void* data, size_t nbytes) {
  if (committed_) fail_input("safetensors writer: {} is already committed", path_);
  check_added_tensor(name, dtype, shape, nbytes, index_.count(name) != 0);
  const auto* p = static_cast<const char*>(data);
  for (uint64_t done = 0; done < nbytes;) {
    const ssize_t n = ::pwrite(fd_, p + done, nbytes - done, static_cast<off_t>(spooled_ + done));
    if (n <= 0) fail_io("write of tensor \"{}\" to {} failed: {}", name, spool_, std::strerror(errno));
    done += static_cast<uint64_t>(n);
  }
  index_[name] = entries_.size();
  entries_.push_back({name, dtype, shape, spooled_, nbytes});
  spooled_ += nbytes;
}

void SafetensorsSpoolWriter::commit() {
  if (committed_) return;
  // No fsync of the spool: it is read back from the page cache right here, and the output's own fsync makes the result
  // durable (a resumable run's state() syncs the spool before it records anything).
  ::close(fd_);
  fd_ = -1;
  std::vector<SafetensorsStreamWriter::Entry> decl;
  for (const Entry& e : entries_) decl.push_back({e.name, e.dtype, e.shape});
  SafetensorsStreamWriter out(path_, decl, metadata_);
  if (spooled_ > 0) {
    MappedFile spool(spool_);
    for (const Entry& e : entries_) {
      out.write(e.name, spool.data() + e.offset, e.nbytes);
      spool.release(e.offset, e.nbytes);
    }
  } else {
    for (const Entry& e : entries_) out.write(e.name, nullptr, 0);
  }
  out.commit();
  file_size_ = out.file_size();
  if (own_spool_) ::unlink(spool_.c_str());
  committed_ = true;
}

namespace {

// fp16 -> fp32 of a row: F16C's vcvtph2ps where the CPU has it (exact, like fp16_to_f32), else the scalar conversion.
#if defined(__x86_64__)
__attribute__((target("avx,f16c"))) void fp16_row_f16c(const uint16_t* src, float* dst, int64_t n) {
  int64_t k = 0;
  for (; k + 8 <= n; k += 8)
    _mm256_storeu_ps(dst + k, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + k))));
  for (; k < n; ++k) dst[k] = fp16_to_f32(src[k]);
}
#endif

#if defined(__x86_64__)
// CPUID.1:ECX OSXSAVE (27), AVX (28) and F16C (29), and the OS saving YMM state (XCR0 bits 1-2). Asked through cpuid
// rather than __builtin_cpu_supports, which clang 14 refuses for "f16c".
bool cpu_has_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
  constexpr unsigned kNeed = (1u << 27) | (1u << 28) | (1u << 29);
  if ((c & kNeed) != kNeed) return false;
  unsigned lo = 0, hi = 0;
  __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (lo & 6u) == 6u;
}
#endif

void fp16_row(const uint16_t* src, float* dst, int64_t n) {
#if defined(__x86_64__)
  static const bool f16c = cpu_has_f16c();
  if (f16c) return fp16_row_f16c(src, dst, n);
#endif
  for (int64_t k = 0; k < n; ++k) dst[k] = fp16_to_f32(src[k]);
}

}  // namespace

bool is_float_matrix(const TensorView& v) {
  const DType d = v.dtype();
  return v.shape().size() == 2 && (d == DType::F32 || d == DType::F16 || d == DType::BF16);
}

void view_row_f32(const TensorView& v, int64_t row, float* dst) {
  if (!is_float_matrix(v))
    fail_input("tensor \"{}\" is {} {}; expected a 2-D F32/F16/BF16 matrix", v.name(), dtype_name(v.dtype()),
               shape_str(v.shape()));
  const int64_t cols = v.shape()[1];
  switch (v.dtype()) {
    case DType::F32:
      std::memcpy(dst, v.data + row * cols * 4, static_cast<size_t>(cols) * 4);
      return;
    case DType::F16:
      fp16_row(reinterpret_cast<const uint16_t*>(v.data) + row * cols, dst, cols);
      return;
    default: {
      const auto* src = reinterpret_cast<const uint16_t*>(v.data) + row * cols;
      for (int64_t k = 0; k < cols; ++k) dst[k] = bf16_to_f32(src[k]);
      return;
    }
  }
}

}  // namespace ptq
