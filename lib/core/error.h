// Error helpers: the library throws, main() catches once and maps to an exit code.
#pragma once

#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace ptq {

// Bad input or configuration: a file, tensor, flag or value the user supplied is not what was expected.
template <typename... Args>
[[noreturn]] void fail_input(fmt::format_string<Args...> f, Args&&... args) {
  throw std::invalid_argument(fmt::format(f, std::forward<Args>(args)...));
}

// I/O or environment failure: the operation itself could not be carried out.
template <typename... Args>
[[noreturn]] void fail_io(fmt::format_string<Args...> f, Args&&... args) {
  throw std::runtime_error(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace ptq
