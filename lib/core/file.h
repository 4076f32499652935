// Files: read-only memory maps, whole-file text reads for small files, atomic writes, sha256.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>

namespace ptq {

// A read-only mapping of a whole file. Large files are never read into memory: pages are faulted in
// on demand and can be dropped by the kernel again.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

  // Drops the resident pages that lie wholly inside [offset, offset + length) from this process (they
  // count in its RSS once read). The content is unchanged: the mapping is read-only and private, so a
  // later read faults the pages in again from the file (usually still in the page cache). Const for that
  // reason. The range must lie inside the file.
  void release(size_t offset, size_t length) const;

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Small text files (configs, JSON, texts to evaluate): read whole.
std::string read_text_file(const std::string& path);
// A text a user hands in (calibration or evaluation data): read whole, refused with a one-line reason when it is
// missing, a directory, empty, or not text (a NUL byte or invalid UTF-8 in its first 64 KiB). `what` names the flag.
std::string read_user_text(const std::string& path, const std::string& what);
bool file_exists(const std::string& path);
bool is_directory(const std::string& path);

// Writes `path` atomically: `write` fills a temporary file next to it, which is fsync'ed and renamed
// over `path` only if `write` returns normally. On any exception the temporary is removed and `path`
// is left as it was.
void write_file_atomic(const std::string& path, const std::function<void(std::FILE*)>& write);
void write_text_file_atomic(const std::string& path, const std::string& text);

// Lower-case hex sha256 of a byte range / of a file's content.
std::string sha256_hex(const void* data, size_t size);
std::string sha256_file(const std::string& path);

}  // namespace ptq
