#include "eval/tasks.h"

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>

#include "core/error.h"
#include "core/progress.h"
#include "model/model.h"
#include "model/tokenizer.h"

namespace ptq {

namespace {

at::Tensor ids_tensor(const std::vector<int32_t>& ids) {
  at::Tensor x = at::empty({1, static_cast<int64_t>(ids.size())}, at::kLong);
  std::copy(ids.begin(), ids.end(), x.data_ptr<int64_t>());
  return x;
}

// Scores continuations that all follow `prefix`. The prefix runs once (batch 1) into a KV cache whose last
// logits score every continuation's first token; the rest of the continuations run from copies of that
// cache, `batch` at a time, right-padded to the longest in the chunk (the causal mask keeps padding from
// touching the real tokens before it). Writes s.logprob[c] and s.greedy[c] for the choices c in `members`.
void score_group(Model& model, const std::vector<int32_t>& prefix, const std::vector<size_t>& members,
                 const std::vector<EncodedRequest>& req, int64_t batch, ItemScores& s) {
  const int64_t P = static_cast<int64_t>(prefix.size());
  KVCache cache = model.new_cache(1, P);
  at::Tensor first = at::log_softmax(model.forward_last(ids_tensor(prefix), &cache)[0][0], -1).contiguous();
  const float* pf = first.data_ptr<float>();
  const int64_t first_argmax = first.argmax().item<int64_t>();

  auto cont = [&](int64_t m) -> const std::vector<int32_t>& { return req[members[m]].continuation; };
  const int64_t n = static_cast<int64_t>(members.size());
  for (int64_t m = 0; m < n; ++m) {
    s.logprob[members[m]] = pf[cont(m)[0]];
    s.greedy[members[m]] = first_argmax == cont(m)[0];
  }
  for (int64_t c0 = 0; c0 < n; c0 += batch) {
    const int64_t nb = std::min(batch, n - c0);
    int64_t L = 0;  // continuation tokens fed as input: all but the last, which is only predicted
    for (int64_t m = c0; m < c0 + nb; ++m) L = std::max<int64_t>(L, static_cast<int64_t>(cont(m).size()) - 1);
    if (L == 0) continue;
    KVCache rows = model.new_cache(nb, P + L);
    for (size_t l = 0; l < rows.k.size(); ++l) {
      rows.k[l].narrow(2, 0, P).copy_(cache.k[l]);  // broadcasts the batch-1 prefix to nb rows
      rows.v[l].narrow(2, 0, P).copy_(cache.v[l]);
    }
    rows.length = P;
    at::Tensor x = at::zeros({nb, L}, at::kLong);  // id 0 pads: any valid id will do
    auto* px = x.data_ptr<int64_t>();
    for (int64_t r = 0; r < nb; ++r) std::copy(cont(c0 + r).begin(), cont(c0 + r).end() - 1, px + r * L);
    at::Tensor lp = at::log_softmax(model.forward(x, &rows), -1).contiguous();  // [nb, L, vocab]
    at::Tensor am = lp.argmax(-1).contiguous();
    const float* plp = lp.data_ptr<float>();
    const int64_t* pam = am.data_ptr<int64_t>();
    const int64_t V = lp.size(2);
    for (int64_t r = 0; r < nb; ++r) {
      const auto& ids = cont(c0 + r);
      const size_t c = members[c0 + r];
      for (size_t j = 1; j < ids.size(); ++j) {
        const int64_t pos = r * L + static_cast<int64_t>(j) - 1;
        s.logprob[c] += plp[pos * V + ids[j]];
        s.greedy[c] = s.greedy[c] && pam[pos] == ids[j];
      }
    }
  }
}

int64_t argmax_first(const std::vector<double>& v) {
  return static_cast<int64_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

}  // namespace

EncodedRequest encode_request(const Tokenizer& tok, const std::string& context, const std::string& continuation) {
  // The harness moves what `context.rstrip()` removes: any whitespace, not only spaces (ASCII here).
  const size_t keep = context.find_last_not_of(" \t\n\r\v\f") + 1;  // npos + 1 == 0: all whitespace
  const std::string ctx = context.substr(0, keep), cont = context.substr(keep) + continuation;
  EncodedRequest r;
  r.context = tok.encode(ctx);
  const std::vector<int32_t> whole = tok.encode(ctx + cont);
  if (whole.size() > r.context.size()) r.continuation.assign(whole.begin() + r.context.size(), whole.end());
  // An empty context conditions on BOS, as the harness's prefix token, even where the config adds none.
  if (r.context.empty() && tok.bos_id() >= 0) r.context = {tok.bos_id()};
  return r;
}

double accuracy_stderr(double p, int64_t n) { return n > 0 ? std::sqrt(p * (1 - p) / double(n)) : 0.0; }

TaskResult evaluate_task(Model& model, const Tokenizer& tok, const Task& task, const TaskOptions& opts,
                         const std::string& progress_label) {
  at::NoGradGuard no_grad;
  const int64_t max_len = model.config().max_positions;
  const int64_t batch = std::max<int64_t>(1, opts.batch);
  TaskResult res;
  res.task = task.name;
  res.kind = task.kind;
  res.n = static_cast<int64_t>(task.items.size());
  res.items.resize(task.items.size());
  // Weights load (and convert to fp32) on first use: do it before the clock starts, so items/s is throughput.
  for (int64_t l = 0; l < model.config().n_layers; ++l) model.layer(l);
  const double t0 = now_seconds();
  Progress progress(progress_label, res.n, "items");
  int64_t correct = 0, correct_norm = 0;
  double sum_target = 0;
  for (size_t i = 0; i < task.items.size(); ++i) {
    const TaskItem& item = task.items[i];
    ItemScores& s = res.items[i];
    const size_t n = item.choices();
    std::vector<EncodedRequest> req(n);
    std::vector<std::vector<int32_t>> prefixes;  // distinct (truncated) contexts, in order of appearance
    std::vector<size_t> group(n);
    for (size_t c = 0; c < n; ++c) {
      req[c] = encode_request(tok, item.context(c), item.continuations[c]);
      const auto& ctx = req[c].context;
      const int64_t cont_len = static_cast<int64_t>(req[c].continuation.size());
      if (ctx.empty())
        fail_input("{}:{}: choice {} has an empty context and the tokenizer has no BOS to condition on", task.path,
                   item.line, c);
      if (cont_len == 0)
        fail_input("{}:{}: choice {} (\"{}\") adds no tokens after the context", task.path, item.line, c,
                   item.continuations[c]);
      if (cont_len > max_len)
        fail_input("{}:{}: choice {} is {} tokens long, more than the model's context length {}", task.path, item.line,
                   c, cont_len, max_len);
      const int64_t drop = std::max<int64_t>(0, static_cast<int64_t>(ctx.size()) + cont_len - 1 - max_len);
      s.truncated = s.truncated || drop > 0;
      std::vector<int32_t> prefix(ctx.begin() + drop, ctx.end());
      auto it = std::find(prefixes.begin(), prefixes.end(), prefix);
      group[c] = it - prefixes.begin();
      if (it == prefixes.end()) prefixes.push_back(std::move(prefix));
    }
    s.logprob.assign(n, 0.0);
    s.tokens.resize(n);
    s.greedy.assign(n, false);
    for (size_t g = 0; g < prefixes.size(); ++g) {
      std::vector<size_t> members;
      for (size_t c = 0; c < n; ++c)
        if (group[c] == g) members.push_back(c);
      score_group(model, prefixes[g], members, req, batch, s);
    }
    std::vector<double> normed(n);
    for (size_t c = 0; c < n; ++c) {
      if (!std::isfinite(s.logprob[c]))  // a NaN would make every choice lose and the accuracy meaningless
        fail_input("{}:{}: the log-likelihood of choice {} is not finite (NaN or Inf) under {}: a weight, scale or "
                   "activation overflowed; `ptq inspect` the model", task.path, item.line, c, model.path());
      s.tokens[c] = static_cast<int64_t>(req[c].continuation.size());
      normed[c] = s.logprob[c] / static_cast<double>(norm_length(item.continuations[c]));
    }
    s.pred = argmax_first(s.logprob);
    s.pred_norm = argmax_first(normed);
    res.truncated += s.truncated;
    if (task.kind == TaskKind::Cloze) {
      correct += s.greedy[0];
      sum_target += s.logprob[0];
    } else {
      correct += s.pred == item.label;
      correct_norm += s.pred_norm == item.label;
    }
    progress.update(static_cast<int64_t>(i) + 1);
  }
  progress.finish();
  res.seconds = now_seconds() - t0;
  res.items_per_second = res.seconds > 0 ? double(res.n) / res.seconds : 0.0;
  res.acc = double(correct) / double(res.n);
  res.acc_stderr = accuracy_stderr(res.acc, res.n);
  if (task.kind == TaskKind::Cloze) {
    res.target_logprob = sum_target / double(res.n);
  } else {
    res.acc_norm = double(correct_norm) / double(res.n);
    res.acc_norm_stderr = accuracy_stderr(res.acc_norm, res.n);
  }
  return res;
}

}  // namespace ptq
