#include "core/progress.h"

#include <malloc.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include <fmt/format.h>

namespace ptq {

namespace {
bool g_progress_enabled = true;

std::string format_duration(double s) {
  if (s < 0 || s > 1e7) return "?";
  int t = static_cast<int>(s + 0.5);
  if (t >= 3600) return fmt::format("{}h{:02}m", t / 3600, (t / 60) % 60);
  if (t >= 60) return fmt::format("{}m{:02}s", t / 60, t % 60);
  return fmt::format("{}s", t);
}
}  // namespace

void set_progress_enabled(bool enabled) { g_progress_enabled = enabled; }
bool progress_enabled() { return g_progress_enabled && ::isatty(2); }

namespace {
bool g_verbose = false;
}
void set_verbose(bool v) { g_verbose = v; }
bool verbose() { return g_verbose; }

Progress::Progress(std::string label, int64_t total, std::string unit)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), active_(progress_enabled()) {
  start_ = std::chrono::steady_clock::now();
  last_draw_ = start_ - std::chrono::seconds(1);
}

Progress::~Progress() { finish(); }

void Progress::update(int64_t done, const std::string& detail) {
  if (!active_ || finished_) return;
  auto now = std::chrono::steady_clock::now();
  if (done < total_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  double elapsed = std::chrono::duration<double>(now - start_).count();
  double rate = elapsed > 0 ? done / elapsed : 0;
  double eta = rate > 0 ? (total_ - done) / rate : -1;
  std::string line = fmt::format("\r\033[K{} {}/{}", label_, done, total_);
  if (!unit_.empty() && rate > 0) line += fmt::format("  {:.1f} {}/s", rate, unit_);
  line += fmt::format("  elapsed {}  ETA {}", format_duration(elapsed), format_duration(eta));
  if (!detail.empty()) line += "  " + detail;
  std::fputs(line.c_str(), stderr);
  std::fflush(stderr);
}

void Progress::finish() {
  if (!active_ || finished_) return;
  finished_ = true;
  std::fputs("\r\033[K", stderr);
  std::fflush(stderr);
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double peak_rss_mb() {
  struct rusage ru {};
  ::getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1024.0;  // Linux reports kilobytes.
}

uint64_t available_memory_bytes() {
  uint64_t avail = 0;
  if (std::FILE* f = std::fopen("/proc/meminfo", "r")) {
    char line[256];
    unsigned long long kb = 0;
    while (std::fgets(line, sizeof line, f))
      if (std::sscanf(line, "MemAvailable: %llu kB", &kb) == 1) avail = kb * 1024;
    std::fclose(f);
  }
  auto read_u64 = [](const char* path, uint64_t& v) {
    std::FILE* f = std::fopen(path, "r");
    if (!f) return false;
    unsigned long long x = 0;
    const bool ok = std::fscanf(f, "%llu", &x) == 1;  // "max" (no limit) does not parse
    std::fclose(f);
    v = x;
    return ok;
  };
  uint64_t limit = 0, used = 0;
  if (read_u64("/sys/fs/cgroup/memory.max", limit) && read_u64("/sys/fs/cgroup/memory.current", used)) {
    const uint64_t left = limit > used ? limit - used : 0;
    avail = avail == 0 ? left : std::min(avail, left);
  }
  return avail;
}

void release_free_heap() { ::malloc_trim(0); }

}  // namespace ptq
