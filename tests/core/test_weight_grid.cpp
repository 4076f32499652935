// core/weight_grid: the grid name grammar (every grid round-trips, malformed names refused), storage accounting
// against hand-computed sizes, and the bit-width traits against the stream layout's definition.
#include <catch2/catch.hpp>

#include <numeric>
#include <set>
#include <stdexcept>
#include <string>

#include "core/weight_grid.h"

using namespace ptq;

TEST_CASE("weight grid names: every grid prints a name that parses back to it", "[grid]") {
  std::set<std::string> names;
  int n = 0;
  for (int bits = kGridMinBits; bits <= kGridMaxBits; ++bits)
    for (int64_t group : {kGridPerChannel, int64_t{1}, int64_t{3}, int64_t{32}, int64_t{64}, int64_t{128},
                          int64_t{256}, int64_t{11008}, int64_t{1} << 40})
      for (bool sym : {true, false}) {
        const WeightGrid g{bits, group, sym};
        const std::string name = g.name();
        INFO(name);
        CHECK(names.insert(name).second);  // distinct grids, distinct names
        const auto back = parse_weight_grid(name);
        REQUIRE(back.has_value());
        CHECK(*back == g);
        CHECK_NOTHROW(check_weight_grid(g, "test"));
        ++n;
      }
  CHECK(n == 7 * 9 * 2);
}

TEST_CASE("weight grid names: the issue's examples and the grammar's edges", "[grid]") {
  CHECK(weight_grid("w4g128", "t") == WeightGrid{4, 128, true});
  CHECK(weight_grid("w3asym", "t") == WeightGrid{3, kGridPerChannel, false});
  CHECK(weight_grid("w8g32", "t") == WeightGrid{8, 32, true});
  CHECK(weight_grid("w5g256asym", "t") == WeightGrid{5, 256, false});
  for (const char* bad : {"", "w", "w1", "w9", "w10", "w4g", "w4g0", "w4g032", "w4g-1", "w4sym", "w4g128asy",
                          "w4asymg128", "W4", "q4_0", "w4g128 ", " w4", "w4g99999999999999999999", "w4gasym",
                          "w4g12x", "w4asymasym"}) {
    INFO("\"" << bad << "\"");
    CHECK_FALSE(parse_weight_grid(bad).has_value());
  }
  CHECK_THROWS_WITH(weight_grid("q4_0", "--grid"),
                    Catch::Contains("--grid") && Catch::Contains("\"q4_0\"") && Catch::Contains("w<bits 2..8>"));
  CHECK_THROWS_WITH(check_weight_grid({9, 128, true}, "--bits"), Catch::Contains("--bits") && Catch::Contains("9"));
  CHECK_THROWS_WITH(check_weight_grid({4, 0, true}, "x"), Catch::Contains("group size 0"));
  CHECK_THROWS_WITH(check_weight_grid({4, -2, true}, "x"), Catch::Contains("group size -2"));
}

TEST_CASE("weight grid presets are documentation rows of valid, distinct grids", "[grid]") {
  std::set<std::string> seen;
  for (const auto& p : weight_grid_presets()) {
    INFO(p.name);
    const auto g = parse_weight_grid(p.name);
    REQUIRE(g.has_value());
    CHECK(g->name() == p.name);  // presets are spelled canonically
    CHECK(seen.insert(p.name).second);
    CHECK(std::string(p.help).size() > 10);
  }
}

TEST_CASE("weight grid sizes count codes, fp16 scales and asymmetric zeros", "[grid]") {
  // [4096, 4096] w4g128: codes 4096*4096*4/8 = 8388608 B; 32 groups per row, fp16 scales 4096*32*2 = 262144 B.
  CHECK(WeightGrid{4, 128, true}.bytes_for(4096, 4096) == 8388608 + 262144);
  CHECK(WeightGrid{4, 128, true}.bits_per_weight(4096) == 4.125);  // 4 + 16/128
  // Asymmetric adds a 4-bit zero per group: 4096*32*4/8 = 65536 B; 4 + 20/128 bits.
  CHECK(WeightGrid{4, 128, false}.bytes_for(4096, 4096) == 8388608 + 262144 + 65536);
  CHECK(WeightGrid{4, 128, false}.bits_per_weight(4096) == 4.15625);
  // Per channel: one scale per row. [11008, 4096] w8: 11008*4096 + 11008*2 bytes.
  CHECK(WeightGrid{8, kGridPerChannel, true}.bytes_for(11008, 4096) == 11008LL * 4096 + 11008 * 2);
  CHECK(WeightGrid{8, kGridPerChannel, true}.bits_per_weight(4096) == 8 + 16.0 / 4096);
  // 3 bits: 3 * 7 = 21 code bits + 16 scale bits = 37 bits -> 5 bytes (rounded up).
  CHECK(WeightGrid{3, 128, true}.bytes_for(1, 7) == 5);
  // 5-bit asym g256 over 4096: 5 + (16 + 5) / 256 bits per weight.
  CHECK(WeightGrid{5, 256, false}.bits_per_weight(4096) == 5 + 21.0 / 256);
}

TEST_CASE("bit width traits follow the stream layout and the containers' definitions", "[grid]") {
  for (int b = kGridMinBits; b <= kGridMaxBits; ++b) {
    const BitWidthTraits& t = bit_width_traits(b);
    INFO(b << " bits");
    CHECK(t.bits == b);
    // The stream repeats every lcm(b, 32) bits.
    CHECK(t.stream_period_codes * b == std::lcm(b, 32));
    CHECK(t.stream_period_words * 32 == std::lcm(b, 32));
    CHECK(t.container_bits >= b);
    CHECK((t.container_bits == 2 || t.container_bits == 4 || t.container_bits == 8));
    CHECK(t.gptq == (b == 2 || b == 3 || b == 4 || b == 8));  // GPTQ's kernels and files define these widths
    CHECK(t.int32_lanes == (32 % b == 0));
  }
  CHECK_THROWS_WITH(bit_width_traits(1, "m.qweight"), Catch::Contains("m.qweight") && Catch::Contains("1 bits"));
  CHECK_THROWS_AS(bit_width_traits(9), std::invalid_argument);
}
