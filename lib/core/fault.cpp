#include "core/fault.h"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

namespace ptq {

namespace {

struct FaultPlan {
  std::string point;
  long at = 0;
  int signal = SIGKILL;
  long seen = 0;
};

FaultPlan* parse_plan() {
  const char* env = std::getenv("PTQ_TEST_SIGNAL_AT");
  if (env == nullptr || *env == '\0') return nullptr;
  static FaultPlan plan;
  const std::string s = env;
  const size_t a = s.find(':');
  if (a == std::string::npos) return nullptr;
  const size_t b = s.find(':', a + 1);
  plan.point = s.substr(0, a);
  plan.at = std::strtol(s.substr(a + 1, b == std::string::npos ? std::string::npos : b - a - 1).c_str(), nullptr, 10);
  if (b != std::string::npos) {
    const std::string sig = s.substr(b + 1);
    plan.signal = sig == "INT" ? SIGINT : sig == "TERM" ? SIGTERM : SIGKILL;
  }
  return &plan;
}

}  // namespace

void fault_point(const char* point) {
  static FaultPlan* plan = parse_plan();
  if (plan == nullptr || plan->point != point || ++plan->seen != plan->at) return;
  // Process-directed, so the signal-waiting thread of core/temporaries.h sees SIGINT/SIGTERM; this thread stops
  // here until it has cleaned up and exited, as a real interruption would find it.
  ::kill(::getpid(), plan->signal);
  for (;;) ::pause();
}

}  // namespace ptq
