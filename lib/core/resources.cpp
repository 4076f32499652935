#include "core/resources.h"

#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>

#include "core/file.h"

namespace ptq {

std::string executable_dir() {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return {};
  std::string p(buf, static_cast<size_t>(n));
  const size_t slash = p.rfind('/');
  return slash == std::string::npos ? std::string() : p.substr(0, slash);
}

std::vector<std::string> resource_dirs(const std::string& kind) {
  std::vector<std::string> candidates;
  if (const char* home = std::getenv("PTQ_HOME"); home != nullptr && *home != '\0')
    candidates.push_back(std::string(home) + "/" + kind);
  if (const std::string exe = executable_dir(); !exe.empty())
    candidates.push_back(exe + "/../share/ptq/" + kind);
#ifdef PTQ_SOURCE_DIR
  candidates.push_back(std::string(PTQ_SOURCE_DIR) + "/" + kind);
#endif
  std::vector<std::string> dirs;
  for (const auto& c : candidates) {
    if (!is_directory(c)) continue;
    char real[PATH_MAX];
    const std::string dir = ::realpath(c.c_str(), real) != nullptr ? std::string(real) : c;
    if (std::find(dirs.begin(), dirs.end(), dir) == dirs.end()) dirs.push_back(dir);
  }
  return dirs;
}

std::string find_resource(const std::string& kind, const std::string& relative) {
  for (const auto& d : resource_dirs(kind)) {
    const std::string p = d + "/" + relative;
    if (file_exists(p)) return p;
  }
  return {};
}

}  // namespace ptq
