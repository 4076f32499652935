#include "core/bit_allocation.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace ptq {

namespace {

void check_units(const std::vector<AllocUnit>& units) {
  for (const AllocUnit& u : units) {
    if (u.choices.empty()) fail_input("bit allocation: unit \"{}\" has no choice", u.name);
    for (const AllocChoice& c : u.choices)
      if (!(c.cost >= 0) || !std::isfinite(c.cost) || !(c.error >= 0) || !std::isfinite(c.error))
        fail_input("bit allocation: unit \"{}\" has a choice of cost {} and error {}; both must be finite and >= 0",
                   u.name, c.cost, c.error);
  }
}

int cheapest(const AllocUnit& u) {
  int best = 0;
  for (int c = 1; c < static_cast<int>(u.choices.size()); ++c) {
    const AllocChoice &a = u.choices[c], &b = u.choices[best];
    if (a.cost < b.cost || (a.cost == b.cost && a.error < b.error)) best = c;
  }
  return best;
}

}  // namespace

void allocation_totals(const std::vector<AllocUnit>& units, Allocation& a) {
  a.cost = a.error = 0;
  for (size_t u = 0; u < units.size(); ++u) {
    a.cost += units[u].choices[a.choice[u]].cost;
    a.error += units[u].choices[a.choice[u]].error;
  }
}

std::vector<int> lagrangian_choice(const std::vector<AllocUnit>& units, double lambda) {
  std::vector<int> choice(units.size());
  for (size_t u = 0; u < units.size(); ++u) {
    const auto& cs = units[u].choices;
    int best = 0;
    for (int c = 1; c < static_cast<int>(cs.size()); ++c) {
      const double f = cs[c].error + lambda * cs[c].cost, g = cs[best].error + lambda * cs[best].cost;
      if (f < g || (f == g && cs[c].cost < cs[best].cost)) best = c;
    }
    choice[u] = best;
  }
  return choice;
}

Allocation allocate_lagrangian(const std::vector<AllocUnit>& units, double budget) {
  check_units(units);
  Allocation a;
  a.choice.resize(units.size());
  for (size_t u = 0; u < units.size(); ++u) a.choice[u] = cheapest(units[u]);
  allocation_totals(units, a);
  if (a.cost > budget) {  // nothing fits: the cheapest allocation, flagged
    a.feasible = false;
    return a;
  }
  auto cost_of = [&](double lambda) {
    Allocation t;
    t.choice = lagrangian_choice(units, lambda);
    allocation_totals(units, t);
    return t;
  };
  // λ = 0 takes every unit's least error; large enough a λ its cheapest (above the steepest error-per-byte slope).
  Allocation best = cost_of(0);
  if (best.cost > budget) {
    double steep = 0;
    for (const AllocUnit& u : units)
      for (const AllocChoice& x : u.choices)
        for (const AllocChoice& y : u.choices)
          if (y.cost > x.cost) steep = std::max(steep, (x.error - y.error) / (y.cost - x.cost));
    double lo = 0, hi = 2 * steep + 1;
    best = cost_of(hi);
    for (int it = 0; it < 200 && hi - lo > 1e-15 * hi; ++it) {
      const double mid = 0.5 * (lo + hi);
      Allocation t = cost_of(mid);
      if (t.cost <= budget) {
        hi = mid;
        best = std::move(t);
      } else {
        lo = mid;
      }
    }
    best.lambda = hi;
    if (best.cost > budget) best = a;  // rounding at the breakpoint: start from the cheapest, the repair fills it
  }
  // Repair: spend what is left on the upgrade with the largest error drop per added byte that still fits.
  for (;;) {
    const double left = budget - best.cost;
    int bu = -1, bc = -1;
    double rate = 0;
    for (size_t u = 0; u < units.size(); ++u) {
      const AllocChoice& cur = units[u].choices[best.choice[u]];
      for (int c = 0; c < static_cast<int>(units[u].choices.size()); ++c) {
        const AllocChoice& x = units[u].choices[c];
        const double dc = x.cost - cur.cost, de = cur.error - x.error;
        if (de <= 0 || dc > left) continue;
        const double r = dc > 0 ? de / dc : std::numeric_limits<double>::infinity();
        if (r > rate) {
          rate = r;
          bu = static_cast<int>(u);
          bc = c;
        }
      }
    }
    if (bu < 0) break;
    best.choice[bu] = bc;
    allocation_totals(units, best);
  }
  return best;
}

Allocation allocate_exact(const std::vector<AllocUnit>& units, int64_t budget, int64_t max_budget) {
  check_units(units);
  if (budget > max_budget)
    fail_input("bit allocation: the exact solver takes budgets up to {}, got {}", max_budget, budget);
  for (const AllocUnit& u : units)
    for (const AllocChoice& c : u.choices)
      if (c.cost != std::floor(c.cost))
        fail_input("bit allocation: the exact solver needs whole-number costs; unit \"{}\" has {}", u.name, c.cost);
  const double inf = std::numeric_limits<double>::infinity();
  const int64_t B = std::max<int64_t>(budget, -1);
  // best[b]: least error of the units so far at total cost exactly b; pick[u][b]: the choice that reached it.
  std::vector<double> best(static_cast<size_t>(B + 1), inf), next;
  if (B >= 0) best[0] = 0;
  std::vector<std::vector<int>> pick(units.size(), std::vector<int>(static_cast<size_t>(B + 1), -1));
  for (size_t u = 0; u < units.size(); ++u) {
    next.assign(static_cast<size_t>(B + 1), inf);
    for (int64_t b = 0; b <= B; ++b) {
      if (best[b] == inf) continue;
      for (int c = 0; c < static_cast<int>(units[u].choices.size()); ++c) {
        const int64_t nb = b + static_cast<int64_t>(units[u].choices[c].cost);
        if (nb > B) continue;
        const double e = best[b] + units[u].choices[c].error;
        if (e < next[nb]) {
          next[nb] = e;
          pick[u][nb] = c;
        }
      }
    }
    best.swap(next);
  }
  Allocation a;
  a.choice.resize(units.size());
  int64_t at = -1;
  for (int64_t b = 0; b <= B; ++b)
    if (best[b] < inf && (at < 0 || best[b] < best[at])) at = b;
  if (at < 0) {  // nothing fits
    for (size_t u = 0; u < units.size(); ++u) a.choice[u] = cheapest(units[u]);
    a.feasible = false;
    allocation_totals(units, a);
    return a;
  }
  for (size_t u = units.size(); u-- > 0;) {
    const int c = pick[u][at];
    a.choice[u] = c;
    at -= static_cast<int64_t>(units[u].choices[c].cost);
  }
  allocation_totals(units, a);
  return a;
}

}  // namespace ptq
