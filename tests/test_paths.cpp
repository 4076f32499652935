#include "tests/test_paths.h"

#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <stdexcept>
#include <vector>

namespace ptq::test {

namespace {

// The directories make_temp_dir handed out, removed when the test process exits: ctest runs each test case in
// its own process, so a run never holds more than the cases in flight (CI once ran out of disk on ~3 GB of
// leftovers). PTQ_KEEP_TEST_TMP=1 keeps them, for looking at a failure.
class TempDirRegistry {
 public:
  void add(std::string dir) {
    std::lock_guard<std::mutex> lock(mutex_);
    dirs_.push_back(std::move(dir));
  }
  ~TempDirRegistry() {
    const char* keep = std::getenv("PTQ_KEEP_TEST_TMP");
    if (keep != nullptr && std::string(keep) == "1") return;
    for (const std::string& dir : dirs_) {
      std::error_code ec;  // best effort: a test may have removed or locked its own directory
      std::filesystem::remove_all(dir, ec);
    }
  }

 private:
  std::mutex mutex_;
  std::vector<std::string> dirs_;
};

TempDirRegistry& registry() {
  static TempDirRegistry instance;
  return instance;
}

}  // namespace

std::string source_dir() { return PTQ_SOURCE_DIR; }

std::string repo_path(const std::string& relative) { return source_dir() + "/" + relative; }

std::string make_temp_dir(const std::string& tag) {
  std::string pattern = "/tmp/ptq-test-" + tag + "-XXXXXX";
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) throw std::runtime_error("mkdtemp failed for " + pattern);
  std::string dir(buf.data());
  registry().add(dir);
  return dir;
}

}  // namespace ptq::test
