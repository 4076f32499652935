// lib/core bit allocation: the Lagrangian allocator against the exact dynamic program on small random instances
// (never over budget, optimal at its own breakpoints, within one unit's step of the optimum elsewhere), a hand-solved
// case, infeasible budgets and bad input. LibTorch-free (runs under ASan/UBSan too).
#include <catch2/catch.hpp>

#include <algorithm>
#include <random>
#include <stdexcept>
#include <vector>

#include "core/bit_allocation.h"

using namespace ptq;

namespace {

// Units whose choices have whole-number costs 1..40 and errors that mostly (not always) fall with cost, as measured
// sensitivities do (a noisy measurement can rank two grids against their size).
std::vector<AllocUnit> random_units(std::mt19937& rng, int n) {
  std::uniform_int_distribution<int> nc(1, 5), cost(1, 40);
  std::uniform_real_distribution<double> u01(0, 1);
  std::vector<AllocUnit> units(n);
  for (int i = 0; i < n; ++i) {
    units[i].name = "m" + std::to_string(i);
    const double scale = 0.1 + 10 * u01(rng);
    for (int c = nc(rng); c > 0; --c) {
      const double k = cost(rng);
      units[i].choices.push_back({k, scale * (std::exp(-k / 10) + 0.1 * u01(rng))});
    }
  }
  return units;
}

double cheapest_total(const std::vector<AllocUnit>& units) {
  double s = 0;
  for (const auto& u : units) {
    double m = 1e300;
    for (const auto& c : u.choices) m = std::min(m, c.cost);
    s += m;
  }
  return s;
}

double largest_step(const std::vector<AllocUnit>& units) {
  double s = 0;
  for (const auto& u : units) {
    double lo = 1e300, hi = 0;
    for (const auto& c : u.choices) {
      lo = std::min(lo, c.error);
      hi = std::max(hi, c.error);
    }
    s = std::max(s, hi - lo);
  }
  return s;
}

}  // namespace

TEST_CASE("bit allocation: a hand-solved instance", "[allocation]") {
  // Two modules with choices costing 1, 2 and 4 bytes; budget 5. Every allocation within it: A1+B1 (cost 2, error 15),
  // A2+B1 (3, 7), A1+B2 (3, 11), A2+B2 (4, 3), A4+B1 (5, 6), A1+B4 (5, 9.5): the optimum is A2+B2, error 3.
  const std::vector<AllocUnit> units = {{"A", {{1, 9}, {2, 1}, {4, 0}}}, {"B", {{1, 6}, {2, 2}, {4, 0.5}}}};
  const Allocation exact = allocate_exact(units, 5);
  const Allocation lag = allocate_lagrangian(units, 5);
  CHECK(exact.choice == std::vector<int>{1, 1});
  CHECK(exact.error == Approx(3));
  CHECK(lag.choice == exact.choice);
  CHECK(lag.cost == 4);
}

TEST_CASE("bit allocation: never over budget, optimal at its breakpoints, within one unit's step elsewhere",
          "[allocation]") {
  std::mt19937 rng(20261202);
  int breakpoints = 0;
  for (int trial = 0; trial < 300; ++trial) {
    CAPTURE(trial);
    const std::vector<AllocUnit> units = random_units(rng, 2 + trial % 9);
    const int64_t lo = static_cast<int64_t>(cheapest_total(units));
    std::uniform_int_distribution<int64_t> pick(lo, lo + 40 * static_cast<int64_t>(units.size()));
    const int64_t budget = pick(rng);
    const Allocation lag = allocate_lagrangian(units, static_cast<double>(budget));
    const Allocation exact = allocate_exact(units, budget);
    REQUIRE(lag.feasible);
    REQUIRE(exact.feasible);
    CHECK(lag.cost <= budget);
    CHECK(lag.error >= exact.error - 1e-9);
    // The LP relaxation (a lower bound of the optimum) has one fractional unit; the allocation differs from it there.
    CHECK(lag.error <= exact.error + largest_step(units) + 1e-9);

    // A Lagrangian minimiser is optimal for its own cost: with the budget set to it, both solvers agree on the error.
    std::uniform_real_distribution<double> lam(0, 2);
    Allocation at;
    at.choice = lagrangian_choice(units, lam(rng));
    allocation_totals(units, at);
    const Allocation lag2 = allocate_lagrangian(units, at.cost);
    const Allocation exact2 = allocate_exact(units, static_cast<int64_t>(at.cost));
    CHECK(lag2.error == Approx(exact2.error).epsilon(1e-12));
    CHECK(exact2.error <= at.error + 1e-9);
    CHECK(at.error <= exact2.error + 1e-9);
    ++breakpoints;
  }
  CHECK(breakpoints == 300);
}

TEST_CASE("bit allocation: a budget below the cheapest choices is infeasible and says so", "[allocation]") {
  const std::vector<AllocUnit> units = {{"A", {{3, 1}, {5, 0}}}, {"B", {{2, 4}, {6, 1}}}};
  const Allocation lag = allocate_lagrangian(units, 4);
  CHECK_FALSE(lag.feasible);
  CHECK(lag.choice == std::vector<int>{0, 0});
  CHECK(lag.cost == 5);
  CHECK_FALSE(allocate_exact(units, 4).feasible);
  // The whole budget: every unit's least error.
  CHECK(allocate_lagrangian(units, 11).choice == std::vector<int>{1, 1});
}

TEST_CASE("bit allocation: bad units are refused by name", "[allocation]") {
  CHECK_THROWS_WITH(allocate_lagrangian({{"layers.0.q", {}}}, 1), Catch::Contains("layers.0.q") && Catch::Contains("no choice"));
  CHECK_THROWS_WITH(allocate_lagrangian({{"k", {{1, -1}}}}, 1), Catch::Contains("\"k\""));
  CHECK_THROWS_WITH(allocate_exact({{"v", {{1.5, 1}}}}, 3), Catch::Contains("whole-number"));
  CHECK_THROWS_WITH(allocate_exact({{"v", {{1, 1}}}}, 100, 10), Catch::Contains("up to 10"));
}
