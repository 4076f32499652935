// Temporary outputs and interruption. Every output is assembled under a ScopedTemporary next to it (directories:
// core/model_dir.h; files: write_file_atomic, core/file.h) and renamed into place when whole. While one exists it is
// registered here, so that SIGINT / SIGTERM remove it before the process exits with 130 /
// 143, and a later run writing the same output removes the temporaries of processes that no longer run (SIGKILL,
// power loss).
#pragma once

#include <string>

namespace ptq {

// The temporary an output is assembled under, next to it: `<out>.tmp-<pid>` (a directory) or
// `<out>.tmp.<pid>.<random hex>` (a file). Construction first removes the temporaries of `out` whose process is gone,
// then registers the new name (SIGINT/SIGTERM remove it; nothing is created). The destructor removes whatever is at
// the name unless release() said it was renamed into place, and unregisters it.
class ScopedTemporary {
 public:
  enum class Kind { Directory, File };
  ScopedTemporary(const std::string& out, Kind kind);
  ~ScopedTemporary();
  ScopedTemporary(const ScopedTemporary&) = delete;
  ScopedTemporary& operator=(const ScopedTemporary&) = delete;

  const std::string& path() const { return path_; }
  void release() { released_ = true; }  // it was renamed to its output: nothing left to remove

 private:
  std::string path_;
  bool released_ = false;
};

// A line printed after the interruption notice (e.g. how to resume the work kept so far); empty: none.
void set_interrupt_note(const std::string& note);

// Blocks SIGINT and SIGTERM in the calling thread, and so in every thread it starts later (OpenMP, LibTorch), and
// starts the one thread that waits for them: it removes the registered temporaries, says so on stderr in one line,
// and exits with 128 + the signal number. Call once, first thing in main().
void install_signal_cleanup();

}  // namespace ptq
