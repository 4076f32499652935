// Shared pieces of the libFuzzer targets (tests/fuzz/fuzz_*.cpp): the one rule every target applies, and inputs
// handed to parsers that only read paths.
//
// The rule (docs/ARCHITECTURE.md, Errors): bad input is refused with std::invalid_argument, an I/O failure is a
// std::runtime_error; both are the documented outcome and are swallowed here. Anything else — another exception
// type (nlohmann/yaml-cpp/LibTorch errors leaking out unexplained), a crash, a sanitizer report, a hang, memory
// past -rss_limit_mb — is a finding: the exception escapes LLVMFuzzerTestOneInput and libFuzzer reports it.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>

namespace ptq::fuzz {

// Runs `body`, swallowing the library's documented error exceptions only.
template <typename F>
void expect_clean_refusal(F&& body) {
  try {
    body();
  } catch (const std::invalid_argument&) {
  } catch (const std::runtime_error&) {
  }
}

// The bytes as an anonymous in-memory file, opened by path (/proc/self/fd/N) by readers that map files.
class MemFile {
 public:
  MemFile(const uint8_t* data, size_t size) {
    fd_ = ::memfd_create("ptq-fuzz", MFD_CLOEXEC);
    if (fd_ < 0) throw std::logic_error("memfd_create failed");
    for (size_t done = 0; done < size;) {
      const ssize_t n = ::write(fd_, data + done, size - done);
      if (n <= 0) throw std::logic_error("memfd write failed");
      done += static_cast<size_t>(n);
    }
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  ~MemFile() { ::close(fd_); }
  MemFile(const MemFile&) = delete;
  MemFile& operator=(const MemFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  int fd_ = -1;
  std::string path_;
};

// A scratch directory of this process, removed at a normal exit: under $PTQ_FUZZ_SCRATCH (scripts/fuzz.sh sets it
// and removes it, also after a crash), else on tmpfs (/dev/shm when present).
inline const std::string& scratch_dir() {
  static const std::string dir = [] {
    namespace fs = std::filesystem;
    const char* env = std::getenv("PTQ_FUZZ_SCRATCH");
    const fs::path root = env && *env ? fs::path(env)
                          : fs::exists("/dev/shm") ? fs::path("/dev/shm")
                                                   : fs::temp_directory_path();
    const fs::path d = root / ("ptq-fuzz-" + std::to_string(::getpid()));
    fs::remove_all(d);
    fs::create_directories(d);
    static struct Cleanup {
      fs::path p;
      ~Cleanup() {
        std::error_code ec;
        fs::remove_all(p, ec);
      }
    } cleanup{d};
    return d.string();
  }();
  return dir;
}

inline std::string as_string(const uint8_t* data, size_t size) {
  return std::string(reinterpret_cast<const char*>(data), size);
}

}  // namespace ptq::fuzz
