#include "core/table.h"

#include "core/progress.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <stdexcept>

#include <fmt/format.h>

namespace ptq {

namespace {
// A cell is right-aligned when it is one number (optionally with a unit suffix like "x" or "%").
bool looks_numeric(const std::string& s) {
  if (s.empty()) return false;
  char* end = nullptr;
  std::strtod(s.c_str(), &end);
  if (end == s.c_str()) return false;
  const std::string rest(end);
  return rest.empty() || rest == "%" || rest == "x";
}
}  // namespace

std::string Table::render() const {
  std::vector<size_t> width(headers_.size(), 0);
  for (size_t c = 0; c < headers_.size(); ++c) width[c] = headers_[c].size();
  for (const auto& r : rows_)
    for (size_t c = 0; c < r.size() && c < width.size(); ++c) width[c] = std::max(width[c], r[c].size());
  auto line = [&](const std::vector<std::string>& cells, bool header) {
    std::string out;
    for (size_t c = 0; c < width.size(); ++c) {
      const std::string cell = c < cells.size() ? cells[c] : "";
      const bool right = !header && looks_numeric(cell);
      out += c ? "  " : "";
      out += right ? fmt::format("{:>{}}", cell, width[c]) : fmt::format("{:<{}}", cell, width[c]);
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    return out + "\n";
  };
  std::string out = line(headers_, true);
  std::string rule;
  for (size_t c = 0; c < width.size(); ++c) rule += (c ? "  " : "") + std::string(width[c], '-');
  out += rule + "\n";
  for (const auto& r : rows_) out += line(r, false);
  return out;
}

std::string human_bytes(double b) {
  if (b >= 1e9) return fmt::format("{:.2f} GB", b / 1e9);
  if (b >= 1e6) return fmt::format("{:.1f} MB", b / 1e6);
  if (b >= 1e3) return fmt::format("{:.1f} kB", b / 1e3);
  return fmt::format("{:.0f} B", b);
}

int64_t parse_byte_size(std::string_view text, std::string_view what) {
  const std::string s(text);
  const char* begin = s.c_str();
  char* end = nullptr;
  const double value = std::strtod(begin, &end);
  std::string unit(end == begin ? "?" : end);  // no number at all: refused below
  unit.erase(0, unit.find_first_not_of(' '));
  std::transform(unit.begin(), unit.end(), unit.begin(), [](unsigned char c) { return std::tolower(c); });
  struct Unit {
    const char* name;
    double bytes;
  };
  static const Unit kUnits[] = {{"", 1},         {"b", 1},          {"kb", 1e3},         {"mb", 1e6},
                                {"gb", 1e9},     {"tb", 1e12},      {"kib", 1024.0},     {"mib", 1048576.0},
                                {"gib", 1073741824.0}, {"tib", 1099511627776.0}};
  for (const Unit& u : kUnits) {
    if (unit != u.name) continue;
    const double bytes = std::floor(value * u.bytes);
    // Below 2^62: a size no file reaches, and one that converts to int64_t exactly enough.
    if (!(bytes >= 1) || !(bytes < 4.6e18))
      throw std::invalid_argument(fmt::format("{} {}: the size must be at least one byte (and below 4.6e18)", what, s));
    return static_cast<int64_t>(bytes);
  }
  throw std::invalid_argument(fmt::format("{} {}: not a size; give bytes (12345678) or a number with a unit: "
                                          "kB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024)",
                                          what, s));
}

std::string human_count(double n) {
  if (n >= 1e9) return fmt::format("{:.2f}B", n / 1e9);
  if (n >= 1e6) return fmt::format("{:.2f}M", n / 1e6);
  if (n >= 1e3) return fmt::format("{:.1f}K", n / 1e3);
  return fmt::format("{:.0f}", n);
}

std::string join(const std::vector<std::string>& items, std::string_view sep) {
  std::string s;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) s += sep;
    s += items[i];
  }
  return s;
}

std::string regex_escape(std::string_view s) {
  static constexpr std::string_view kSpecial = R"(.^$|()[]{}*+?\)";
  std::string out;
  for (char c : s) {
    if (kSpecial.find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

std::string join_module_list(const std::vector<std::string>& v, size_t max) {
  if (verbose() || v.size() <= max) return join(v);
  return join({v.begin(), v.begin() + static_cast<std::ptrdiff_t>(max)}) +
         fmt::format(", ... ({} in all; --verbose lists them)", v.size());
}

}  // namespace ptq
