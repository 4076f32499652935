// CPU instruction sets the kernels can use, detected once at run time.
#pragma once

#include <string_view>

namespace ptq::kernels {

// Ordered: a higher level implies the lower ones are usable.
enum class Isa : int { Ref = 0, Avx2 = 1, Avx512 = 2 };

const char* isa_name(Isa isa);
// Parses "ref", "avx2", "avx512"; throws std::invalid_argument naming the value otherwise.
Isa parse_isa(std::string_view name);

// The best level this CPU supports (Avx2 needs AVX2+FMA+F16C; Avx512 needs F/BW/VL/DQ), lowered by the
// environment variable PTQ_ISA=ref|avx2 (to benchmark or test a lower path on the same machine).
Isa best_isa();
// What the CPU itself supports, ignoring PTQ_ISA.
Isa detected_isa();
bool has_avx512_vnni();

}  // namespace ptq::kernels
