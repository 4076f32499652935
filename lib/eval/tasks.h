// Zero-shot accuracy with lm-evaluation-harness semantics: log-likelihood scoring of (context, continuation)
// requests split on token boundaries, acc / acc_norm for multiple choice, greedy match for cloze.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "eval/task_data.h"

namespace ptq {

class Model;
class Tokenizer;

// The token split of one request (the harness's `_encode_pair`): trailing whitespace of the context moves
// to the front of the continuation; context = tok(context), continuation = tok(context + continuation)
// minus its first len(context) tokens; both encodings with the BOS the tokenizer config asks for. The
// model is scored on context ++ continuation.
struct EncodedRequest {
  std::vector<int32_t> context, continuation;
};
EncodedRequest encode_request(const Tokenizer& tok, const std::string& context, const std::string& continuation);

struct TaskOptions {
  // Continuations scored per forward call (choices of one item that share a context run together).
  // Scores agree across batch sizes to fp32 round-off (BLAS may sum a row differently for another row count),
  // so acc and acc_norm are the same unless two choices tie within ~1e-5 nats.
  int64_t batch = 8;
};

struct ItemScores {
  std::vector<double> logprob;  // per choice: Σ log p(continuation token | everything before), nats
  std::vector<int64_t> tokens;  // per choice: continuation tokens scored
  std::vector<bool> greedy;     // per choice: the argmax reproduces every continuation token
  int64_t pred = 0;             // argmax of logprob (first on ties)
  int64_t pred_norm = 0;        // argmax of logprob / norm_length(continuation)
  bool truncated = false;       // some choice's context was left-truncated to the model's context length
};

struct TaskResult {
  std::string task;  // Task::name
  TaskKind kind = TaskKind::MultipleChoice;
  int64_t n = 0;
  // Multiple choice: acc and acc_norm. Cloze: acc = greedy match of the whole target; acc_norm is unused.
  double acc = 0, acc_stderr = 0;
  double acc_norm = 0, acc_norm_stderr = 0;
  double target_logprob = 0;  // cloze: mean over items of the target's log-likelihood (sum over its tokens)
  int64_t truncated = 0;      // items with a left-truncated context
  double seconds = 0, items_per_second = 0;
  std::vector<ItemScores> items;
};

// Standard error of an accuracy p over n items, sqrt(p (1 - p) / n).
double accuracy_stderr(double p, int64_t n);

// Scores every item. Choices whose (truncated) contexts are equal run the context once through the model
// into a KV cache; their continuations then run in batches of `opts.batch` from that cache. A sequence
// longer than the model's context length keeps its last context_length + 1 tokens (the last token is
// only predicted), so the continuation stays whole; a continuation that alone does not fit is an error.
TaskResult evaluate_task(Model& model, const Tokenizer& tok, const Task& task, const TaskOptions& opts,
                         const std::string& progress_label = "tasks");

}  // namespace ptq
