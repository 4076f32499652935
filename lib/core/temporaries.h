// Temporary outputs and interruption. Every output is assembled under a temporary name next to it (a directory
// OUT.tmp-<pid>, core/model_dir.h; a file PATH.tmp.<pid>.<random>, core/file.h) and renamed into place when whole.
// While one exists it is registered here, so that SIGINT / SIGTERM remove it before the process exits with 130 /
// 143, and a later run writing the same output removes the temporaries of processes that no longer run (SIGKILL,
// power loss).
#pragma once

#include <string>

namespace ptq {

void register_temporary(const std::string& path);
void unregister_temporary(const std::string& path);

// Blocks SIGINT and SIGTERM in the calling thread, and so in every thread it starts later (OpenMP, LibTorch), and
// starts the one thread that waits for them: it removes the registered temporaries, says so on stderr in one line,
// and exits with 128 + the signal number. Call once, first thing in main().
void install_signal_cleanup();

// Removes the temporaries of `path` (`<path>.tmp-<pid>`, `<path>.tmp.<pid>.<hex>`) whose process is gone. Returns
// how many it removed.
int remove_stale_temporaries(const std::string& path);

}  // namespace ptq
