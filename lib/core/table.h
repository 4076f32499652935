// Plain-text tables for terminal reports: columns sized to their widest cell, numbers right-aligned.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ptq {

class Table {
 public:
  explicit Table(std::vector<std::string> headers) : headers_(std::move(headers)) {}
  void add_row(std::vector<std::string> cells) { rows_.push_back(std::move(cells)); }
  std::string render() const;

 private:
  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
};

// "13.2 MB", "1.18 GB": sizes for humans (powers of 1000, as disk vendors and HF hub pages show them).
std::string human_bytes(double bytes);
// The inverse, for flags like --target-size: "12345678" (bytes), "2.5GB" / "900MB" / "64kB" (powers of 1000, as above),
// "900MiB" / "1.5GiB" / "512KiB" (powers of 1024); units are case-insensitive, a space before them is allowed, a
// trailing "B" alone means bytes. Fractions are rounded down to whole bytes. Throws std::invalid_argument naming
// `what` for anything else, zero or a negative size.
int64_t parse_byte_size(std::string_view text, std::string_view what);
// "8.39M", "6.74B": parameter counts for humans.
std::string human_count(double n);

// items joined by `sep`: "a, b, c".
std::string join(const std::vector<std::string>& items, std::string_view sep = ", ");
// Lists in one-line messages: "a, b, c, ... (N in all; --verbose lists them)", or every item with --verbose
// (set_verbose, core/progress.h).
std::string join_module_list(const std::vector<std::string>& items, size_t max = 12);
// `s` with every ECMAScript regex metacharacter backslash-escaped: the pattern that matches `s` literally
// ("model.layers.0" -> model\.layers\.0).
std::string regex_escape(std::string_view s);

}  // namespace ptq
