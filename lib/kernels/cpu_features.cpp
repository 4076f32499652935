#include "kernels/cpu_features.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include <cstdlib>
#include <stdexcept>
#include <string>

namespace ptq::kernels {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Ref: return "ref";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
  }
  return "?";
}

Isa parse_isa(std::string_view name) {
  for (Isa i : {Isa::Ref, Isa::Avx2, Isa::Avx512})
    if (name == isa_name(i)) return i;
  throw std::invalid_argument("instruction set \"" + std::string(name) + "\" is not one of ref, avx2, avx512");
}

#if defined(__x86_64__) || defined(__i386__)
namespace {
// CPUID.1:ECX bit 29. Not __builtin_cpu_supports("f16c"): clang 14 (the fuzzing build, tests/fuzz) rejects it.
bool has_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(1, &a, &b, &c, &d) != 0 && (c & bit_F16C) != 0;
}
}  // namespace
#endif

Isa detected_isa() {
  static const Isa isa = [] {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
      return Isa::Avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c())
      return Isa::Avx2;
#endif
    return Isa::Ref;
  }();
  return isa;
}

bool has_avx512_vnni() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool v = detected_isa() == Isa::Avx512 && __builtin_cpu_supports("avx512vnni");
  return v;
#else
  return false;
#endif
}

Isa best_isa() {
  static const Isa isa = [] {
    Isa best = detected_isa();
    if (const char* env = std::getenv("PTQ_ISA"); env != nullptr && *env != '\0') {
      const Isa want = parse_isa(env);
      if (static_cast<int>(want) < static_cast<int>(best)) best = want;
    }
    return best;
  }();
  return isa;
}

}  // namespace ptq::kernels
