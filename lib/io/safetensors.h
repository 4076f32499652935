// safetensors: a validating reader over a memory map (single file or sharded directory) and an atomic writer.
//
// Layout (little-endian): u64 N, then N bytes of UTF-8 JSON
//   {"name": {"dtype": "F16", "shape": [d0, d1, ...], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "string value", ...}}
// then the byte buffer; offsets are relative to the buffer start. The reader requires the tensors to
// tile the buffer exactly (sorted by offset, no gap, no overlap, nothing left over), as the reference
// Rust implementation does.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/file.h"
#include "io/dtype.h"

namespace ptq {

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets inside the data buffer
  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(end - begin); }
};

// A tensor's bytes inside a mapped file; valid while the file that produced it is alive.
struct TensorView {
  const TensorInfo* info = nullptr;
  const uint8_t* data = nullptr;
  const std::string& name() const { return info->name; }
  DType dtype() const { return info->dtype; }
  const std::vector<int64_t>& shape() const { return info->shape; }
  int64_t numel() const { return info->numel(); }
  size_t nbytes() const { return info->nbytes(); }
};

std::string shape_str(const std::vector<int64_t>& shape);

// Whether view_row_f32 reads `v`: a 2-D F32, F16 or BF16 tensor.
bool is_float_matrix(const TensorView& v);
// Row `row` of such a tensor as fp32 (shape()[1] values into dst), converted exactly.
void view_row_f32(const TensorView& v, int64_t row, float* dst);

class SafetensorsFile {
 public:
  // Maps and validates `path`; throws std::invalid_argument naming the file (and tensor) on any defect.
  explicit SafetensorsFile(const std::string& path);

  const std::string& path() const { return file_.path(); }
  size_t file_size() const { return file_.size(); }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const TensorInfo* find(const std::string& name) const;
  // Throws std::invalid_argument naming the file when the tensor is absent.
  TensorView view(const std::string& name) const;
  // Drops the tensor's pages from this process's resident memory once a caller has copied what it
  // needs (MappedFile::release); views stay valid and read the same bytes.
  void release(const std::string& name) const;

 private:
  MappedFile file_;
  const uint8_t* buffer_ = nullptr;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a model directory: `model.safetensors`, or the shards named by
// `model.safetensors.index.json` ("weight_map": tensor name -> shard file). A path to a single
// .safetensors file also works.
class TensorArchive {
 public:
  explicit TensorArchive(const std::string& path);

  bool contains(const std::string& name) const { return where_.count(name) != 0; }
  TensorView view(const std::string& name) const;
  void release(const std::string& name) const;  // SafetensorsFile::release
  std::vector<std::string> names() const;  // sorted
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }
  uint64_t total_file_bytes() const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::unordered_map<std::string, size_t> where_;  // tensor name -> index into files_
};

// Writes a safetensors file whose tensor list is declared up front while the data arrives later, in any
// order (a quantizer streams layer by layer without holding the output in memory). Data goes to a
// temporary file next to `path` at each tensor's offset; commit() checks every tensor was written, syncs
// and renames. Without commit() (an exception on the way) the temporary is removed.
class SafetensorsStreamWriter {
 public:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
  };
  SafetensorsStreamWriter(std::string path, const std::vector<Entry>& entries,
                          const std::map<std::string, std::string>& metadata);
  ~SafetensorsStreamWriter();
  SafetensorsStreamWriter(const SafetensorsStreamWriter&) = delete;
  SafetensorsStreamWriter& operator=(const SafetensorsStreamWriter&) = delete;

  // Exactly once per declared tensor; nbytes must match its shape and dtype.
  void write(const std::string& name, const void* data, size_t nbytes);
  bool written(const std::string& name) const;
  void commit();
  uint64_t file_size() const { return data_start_ + total_; }

 private:
  struct Slot {
    uint64_t offset, nbytes;
    bool written;
  };
  std::string path_, tmp_;
  int fd_ = -1;
  uint64_t data_start_ = 0, total_ = 0;
  std::unordered_map<std::string, Slot> slots_;
  bool committed_ = false;
};

// Writes a safetensors file whose tensors are not known up front (shapes decided while streaming, e.g. a
// layer whose input channels a transform split): each add() appends the data to a spool file next to
// `path`; commit() writes the header and copies the spooled data behind it (one sequential pass through a
// mapping, a tensor at a time, so memory stays bounded), then renames. Without commit() both temporaries
// are removed.
//
// Resumable (quantize --resume): the spool may instead be a file the caller names and keeps. state() syncs it and
// returns the tensors it holds, {"bytes": B, "tensors": [{"name", "dtype", "shape", "offset", "nbytes"}...]};
// a writer constructed with that state continues the same spool, cutting off whatever was appended after the
// state was taken (a tensor half written when the run was killed). Such a spool is not removed by the destructor.
class SafetensorsSpoolWriter {
 public:
  SafetensorsSpoolWriter(std::string path, std::map<std::string, std::string> metadata);
  // `state`: null for a new spool at `spool` (created or truncated), else what state() returned for it.
  SafetensorsSpoolWriter(std::string path, std::map<std::string, std::string> metadata, std::string spool,
                         const nlohmann::json* state);
  ~SafetensorsSpoolWriter();
  SafetensorsSpoolWriter(const SafetensorsSpoolWriter&) = delete;
  SafetensorsSpoolWriter& operator=(const SafetensorsSpoolWriter&) = delete;

  // Once per name; nbytes must match shape x dtype.
  void add(const std::string& name, DType dtype, const std::vector<int64_t>& shape, const void* data, size_t nbytes);
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  void commit();
  nlohmann::json state();
  uint64_t data_bytes() const { return spooled_; }
  uint64_t file_size() const { return file_size_; }  // after commit()

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    uint64_t offset, nbytes;
  };
  std::string path_, spool_;
  std::map<std::string, std::string> metadata_;
  int fd_ = -1;
  uint64_t spooled_ = 0, file_size_ = 0;
  std::vector<Entry> entries_;
  std::unordered_map<std::string, size_t> index_;
  bool committed_ = false;
  bool own_spool_ = true;  // removed with the writer (false: the caller's resumable spool)
};

// Collects tensors and metadata, then writes one safetensors file atomically (temp + rename).
// Tensor data is copied on add(), so callers may free their buffers.
class SafetensorsWriter {
 public:
  void add(const std::string& name, DType dtype, const std::vector<int64_t>& shape, const void* data,
           size_t nbytes);
  void add_f32(const std::string& name, const std::vector<int64_t>& shape, const float* data);
  void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }
  size_t size() const { return entries_.size(); }
  void write(const std::string& path) const;

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };
  std::vector<Entry> entries_;
  std::unordered_map<std::string, size_t> names_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace ptq
