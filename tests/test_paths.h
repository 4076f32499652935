// Paths the tests need: the repository root (bundled models and texts live under data/).
#pragma once

#include <string>

namespace ptq::test {

std::string source_dir();
// source_dir() + "/" + relative
std::string repo_path(const std::string& relative);
// A fresh, empty temporary directory for one test, removed with its contents when the test process exits
// (PTQ_KEEP_TEST_TMP=1 keeps it).
std::string make_temp_dir(const std::string& tag);

}  // namespace ptq::test
