// libFuzzer target: a zero-shot task file (JSONL, lib/eval/task_data.h parse_task), format detected from the
// first item as `ptq eval --tasks` does, then the continuation lengths acc_norm divides by.
#include <cstddef>
#include <cstdint>

#include "eval/task_data.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ptq::fuzz::expect_clean_refusal([&] {
    const ptq::Task t = ptq::parse_task(ptq::fuzz::as_string(data, size), "fuzz/task.jsonl");
    int64_t n = 0;
    for (const auto& item : t.items)
      for (size_t c = 0; c < item.choices(); ++c)
        n += ptq::norm_length(item.continuations[c]) + static_cast<int64_t>(item.context(c).size()) + item.label;
    volatile int64_t sink = n;
    (void)sink;
  });
  return 0;
}
