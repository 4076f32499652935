#include "core/temporaries.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include <fmt/format.h>

namespace ptq {

namespace fs = std::filesystem;

namespace {

std::mutex g_mutex;
std::set<std::string> g_temporaries;
std::string g_interrupt_note;

bool all_digits(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

bool process_gone(const std::string& pid_text) {
  const long pid = std::strtol(pid_text.c_str(), nullptr, 10);
  if (pid <= 0 || pid == static_cast<long>(::getpid())) return false;
  return ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
}

// The pid in a temporary's name after `base`: ".tmp-<pid>" (directories) or ".tmp.<pid>.<hex>" (files); "" if the
// name is not one of ours.
std::string temporary_pid(const std::string& name, const std::string& base) {
  if (name.size() <= base.size() || name.compare(0, base.size(), base) != 0) return {};
  const std::string rest = name.substr(base.size());
  if (rest.rfind(".tmp-", 0) == 0 && all_digits(rest.substr(5))) return rest.substr(5);
  if (rest.rfind(".tmp.", 0) == 0) {
    const size_t dot = rest.find('.', 5);
    if (dot != std::string::npos && all_digits(rest.substr(5, dot - 5))) return rest.substr(5, dot - 5);
  }
  return {};
}

[[noreturn]] void cleanup_and_exit(int sig) {
  int removed = 0;
  std::lock_guard<std::mutex> lock(g_mutex);  // held until _exit: no temporary is registered meanwhile
  for (const auto& p : g_temporaries) {
    std::error_code ec;
    if (fs::remove_all(p, ec) > 0) ++removed;
  }
  std::fprintf(stderr, "\ninterrupted (%s): removed %d temporary output(s); nothing was written\n",
               sig == SIGINT ? "SIGINT" : "SIGTERM", removed);
  if (!g_interrupt_note.empty()) std::fprintf(stderr, "%s\n", g_interrupt_note.c_str());
  std::fflush(stderr);
  ::_exit(128 + sig);
}

// Removes the temporaries of `path` (`<path>.tmp-<pid>`, `<path>.tmp.<pid>.<hex>`) whose process is gone.
void remove_stale_temporaries(const std::string& path) {
  fs::path p(path);
  while (!p.empty() && p.filename().empty()) p = p.parent_path();  // trailing slashes
  const std::string base = p.filename().string();
  const fs::path dir = p.parent_path().empty() ? fs::path(".") : p.parent_path();
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string pid = temporary_pid(it->path().filename().string(), base);
    if (pid.empty() || !process_gone(pid)) continue;
    std::error_code rec;
    if (fs::remove_all(it->path(), rec) > 0)
      std::fprintf(stderr, "note: removed %s, left by an interrupted run (process %s)\n", it->path().c_str(), pid.c_str());
  }
}

}  // namespace

ScopedTemporary::ScopedTemporary(const std::string& out, Kind kind) {
  remove_stale_temporaries(out);
  if (kind == Kind::Directory) {
    path_ = fmt::format("{}.tmp-{}", out, ::getpid());
  } else {  // several files of one process may be written side by side
    std::random_device rd;
    path_ = fmt::format("{}.tmp.{}.{:08x}", out, ::getpid(), rd());
  }
  std::lock_guard<std::mutex> lock(g_mutex);
  g_temporaries.insert(path_);
}

ScopedTemporary::~ScopedTemporary() {
  if (!released_) {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::lock_guard<std::mutex> lock(g_mutex);
  g_temporaries.erase(path_);
}

void set_interrupt_note(const std::string& note) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_interrupt_note = note;
}

void install_signal_cleanup() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  if (pthread_sigmask(SIG_BLOCK, &set, nullptr) != 0) return;  // signals keep their default action
  std::thread([set] {
    int sig = 0;
    while (sigwait(&set, &sig) != 0) {
    }
    cleanup_and_exit(sig);
  }).detach();
}

}  // namespace ptq
