// Zero-shot task files (JSONL): the generic and cloze forms and adapters for the public benchmark schemas
// (PIQA, ARC, HellaSwag, WinoGrande, LAMBADA), all turned into (context, continuation) requests.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ptq {

enum class TaskFormat { Auto, Generic, Cloze, Piqa, Arc, Hellaswag, Winogrande, Lambada };

// Multiple choice: the argmax of the continuations' log-likelihoods is the answer.
// Cloze: one continuation (the target), correct when greedy decoding reproduces all its tokens.
enum class TaskKind { MultipleChoice, Cloze };

// One item as (context, continuation) pairs, in the strings the model sees. Continuations carry their
// leading space (" sol1"); the tokenizer-level split happens at scoring time (tasks.h).
struct TaskItem {
  std::string id;
  // One shared context, or one per choice (WinoGrande partial scoring: the choice is in the context and
  // every choice shares the continuation).
  std::vector<std::string> contexts;
  std::vector<std::string> continuations;  // one per choice; the target for cloze items
  int64_t label = 0;                       // index of the correct choice (0 for cloze)
  int64_t line = 0;                        // 1-based line in the task file

  size_t choices() const { return continuations.size(); }
  const std::string& context(size_t choice) const { return contexts.size() == 1 ? contexts[0] : contexts[choice]; }
};

struct Task {
  std::string name;  // file name without directory and ".jsonl", e.g. "sotu-continuation"
  std::string path;
  TaskFormat format = TaskFormat::Auto;  // the resolved format, never Auto
  TaskKind kind = TaskKind::MultipleChoice;
  std::vector<TaskItem> items;
};

// "auto", "generic", "cloze", "piqa", ... ; parse throws std::invalid_argument listing the names.
const char* task_format_name(TaskFormat f);
TaskFormat parse_task_format(const std::string& name);
std::vector<std::string> task_format_names();
// The JSON fields a format reads, e.g. "{goal, sol1, sol2, label}": for --help and error messages.
const char* task_format_schema(TaskFormat f);

// The length acc_norm divides by: Unicode code points (Python's len), without the leading space.
int64_t norm_length(const std::string& continuation);

// Reads a JSONL task file; blank lines are skipped. Auto detects the format from the first item's fields.
// `limit` > 0 keeps the first `limit` items. Every error names the file and line and what was expected:
// invalid JSON, a missing or mistyped field, a label outside the choices, an empty choice.
Task load_task(const std::string& path, TaskFormat format = TaskFormat::Auto, int64_t limit = 0);
// The same from text; `path` names the source in messages and gives the task name.
Task parse_task(const std::string& jsonl, const std::string& path, TaskFormat format = TaskFormat::Auto,
                int64_t limit = 0);

}  // namespace ptq
