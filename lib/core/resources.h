// Bundled resources (recipes in configs/, the default calibration text in data/), found from any working
// directory: next to an installed binary first, then in the source tree the binary was built from.
//
// Search order for a resource kind ("configs" or "data"):
//   1. $PTQ_HOME/<kind>                      a user's own override
//   2. <binary dir>/../share/ptq/<kind>      `cmake --install` (bin/ptq, share/ptq/{configs,data})
//   3. <source dir>/<kind>                   the tree this binary was built from (compile-time PTQ_SOURCE_DIR)
#pragma once

#include <string>
#include <vector>

namespace ptq {

// The existing directories of `kind`, in search order (duplicates removed).
std::vector<std::string> resource_dirs(const std::string& kind);

// The first existing `<dir>/<relative>` over resource_dirs(kind); empty when there is none.
std::string find_resource(const std::string& kind, const std::string& relative);

// The directory holding the running binary (from /proc/self/exe); empty if unknown.
std::string executable_dir();

}  // namespace ptq
