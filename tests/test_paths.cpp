#include "tests/test_paths.h"

#include <cstdlib>
#include <stdexcept>
#include <vector>

namespace ptq::test {

std::string source_dir() { return PTQ_SOURCE_DIR; }

std::string repo_path(const std::string& relative) { return source_dir() + "/" + relative; }

std::string make_temp_dir(const std::string& tag) {
  std::string pattern = "/tmp/ptq-test-" + tag + "-XXXXXX";
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) throw std::runtime_error("mkdtemp failed for " + pattern);
  return std::string(buf.data());
}

}  // namespace ptq::test
