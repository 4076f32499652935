// Bit allocation under a size budget: a multiple-choice knapsack. Each unit (a linear module) takes exactly one of its
// choices (a grid or GGUF type), each with a cost (bytes as the target format stores it) and an error (the measured
// sensitivity, e.g. 1/2 tr(dW H dW^T) of that choice); the allocation minimises the summed error with the summed cost
// within the budget. LibTorch-free (ptq_base): it sees only numbers.
//
// allocate_lagrangian: for a multiplier λ every unit independently takes argmin(error + λ·cost) (ties: the cheaper);
// the total cost falls as λ grows, so λ is bisected to the smallest value whose allocation fits. Such an allocation is
// optimal for its own total cost (no allocation of lower or equal cost has a lower error: the Lagrangian bound); the
// budget left over is then spent greedily (repair): repeatedly the upgrade with the largest error drop per added byte
// that still fits. The result never exceeds the budget; against the optimum it can lose at most what one unit's step
// between two of its choices is worth (the LP relaxation has one fractional unit). allocate_exact is the dynamic program
// over integer costs, for small instances and for the tests.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ptq {

struct AllocChoice {
  double cost = 0;   // >= 0
  double error = 0;  // >= 0, finite
};

struct AllocUnit {
  std::string name;
  std::vector<AllocChoice> choices;  // at least one
};

struct Allocation {
  std::vector<int> choice;  // per unit, an index into its choices
  double cost = 0, error = 0;
  bool feasible = true;     // false: even the cheapest choices exceed the budget (choice holds them)
  double lambda = 0;        // the multiplier the Lagrangian step ended at (0 for allocate_exact)
};

// Throws std::invalid_argument naming the unit for an empty choice list, or a negative or non-finite cost or error.
Allocation allocate_lagrangian(const std::vector<AllocUnit>& units, double budget);
// The exact optimum when every cost is a whole number (checked) and the budget is at most max_budget (a size guard:
// O(units x budget x choices) time, O(units x budget) memory).
Allocation allocate_exact(const std::vector<AllocUnit>& units, int64_t budget, int64_t max_budget = 1 << 22);
// Every unit's Lagrangian choice for multiplier `lambda`.
std::vector<int> lagrangian_choice(const std::vector<AllocUnit>& units, double lambda);
// Cost and error of an allocation.
void allocation_totals(const std::vector<AllocUnit>& units, Allocation& a);

}  // namespace ptq
