#include "eval/task_data.h"

#include <algorithm>
#include <cctype>
#include <initializer_list>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"

namespace ptq {

namespace {

using Json = nlohmann::json;

// What an adapter knows about the line it reads, for messages: "data/piqa.jsonl:12: ...".
struct Source {
  const std::string& where;  // "path:line"
  const char* format;
  const char* schema;
};

const Json& field(const Json& j, const char* key, const Source& s) {
  auto it = j.find(key);
  if (it == j.end()) fail_input("{}: field \"{}\" missing; the {} format expects {}", s.where, key, s.format, s.schema);
  return *it;
}

std::string get_string(const Json& j, const char* key, const Source& s) {
  const Json& v = field(j, key, s);
  if (!v.is_string()) fail_input("{}: field \"{}\" is {}, expected a string", s.where, key, v.type_name());
  return v.get<std::string>();
}

std::vector<std::string> get_strings(const Json& j, const char* key, const Source& s) {
  const Json& v = field(j, key, s);
  if (!v.is_array() || v.empty() || !std::all_of(v.begin(), v.end(), [](const Json& e) { return e.is_string(); }))
    fail_input("{}: field \"{}\" must be a non-empty array of strings", s.where, key);
  return v.get<std::vector<std::string>>();
}

// Labels are integers in some copies of a dataset and digit strings in others ("1" in WinoGrande).
int64_t get_integer(const Json& j, const char* key, const Source& s) {
  const Json& v = field(j, key, s);
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_string()) {
    const std::string t = v.get<std::string>();
    if (!t.empty() && t.size() < 10 && std::all_of(t.begin(), t.end(), [](char c) { return c >= '0' && c <= '9'; }))
      return std::stoll(t);
  }
  fail_input("{}: field \"{}\" is {}, expected an integer", s.where, key, v.dump());
}

// The item id: the first of `keys` present (string or number), else the line.
std::string get_id(const Json& j, std::initializer_list<const char*> keys, int64_t line) {
  for (const char* k : keys) {
    auto it = j.find(k);
    if (it == j.end()) continue;
    if (it->is_string()) return it->get<std::string>();
    if (it->is_number()) return it->dump();
  }
  return "line " + std::to_string(line);
}

// Python's str.strip() on ASCII whitespace.
std::string strip(const std::string& t) {
  const char* ws = " \t\n\r\v\f";
  const size_t b = t.find_first_not_of(ws);
  return b == std::string::npos ? std::string() : t.substr(b, t.find_last_not_of(ws) - b + 1);
}

std::string replace_all(std::string t, const std::string& from, const std::string& to) {
  std::string out;
  size_t pos = 0;
  for (size_t hit; (hit = t.find(from, pos)) != std::string::npos; pos = hit + from.size()) out += t.substr(pos, hit - pos) + to;
  return out + t.substr(pos);
}

// Python's str.capitalize() (first character upper case, the rest lower case), ASCII letters only.
std::string capitalize(std::string t) {
  for (size_t i = 0; i < t.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(t[i]);
    if (c < 0x80) t[i] = static_cast<char>(i == 0 ? std::toupper(c) : std::tolower(c));
  }
  return t;
}

// lm-evaluation-harness hellaswag `preprocess`: strip, " [title]" -> ". ", drop "[...]" (not across a
// newline, like the regex "\[.*?\]"), then one pass of "  " -> " ".
std::string hellaswag_clean(const std::string& text) {
  std::string t = replace_all(strip(text), " [title]", ". ");
  std::string out;
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i] == '[') {
      const size_t close = t.find_first_of("]\n", i + 1);
      if (close != std::string::npos && t[close] == ']') {
        i = close;
        continue;
      }
    }
    out += t[i];
  }
  return replace_all(out, "  ", " ");
}

TaskItem adapt_generic(const Json& j, const Source& s, int64_t line) {
  TaskItem it;
  it.id = get_id(j, {"id"}, line);
  it.contexts = {get_string(j, "context", s)};
  it.continuations = get_strings(j, "choices", s);
  it.label = get_integer(j, "label", s);
  return it;
}

TaskItem adapt_cloze(const Json& j, const Source& s, int64_t line) {
  TaskItem it;
  it.id = get_id(j, {"id"}, line);
  it.contexts = {get_string(j, "context", s)};
  it.continuations = {get_string(j, "target", s)};
  return it;
}

TaskItem adapt_piqa(const Json& j, const Source& s, int64_t line) {
  TaskItem it;
  it.id = get_id(j, {"id"}, line);
  it.contexts = {"Question: " + get_string(j, "goal", s) + "\nAnswer:"};
  it.continuations = {" " + get_string(j, "sol1", s), " " + get_string(j, "sol2", s)};
  it.label = get_integer(j, "label", s);
  return it;
}

TaskItem adapt_arc(const Json& j, const Source& s, int64_t line) {
  TaskItem it;
  it.id = get_id(j, {"id"}, line);
  it.contexts = {"Question: " + get_string(j, "question", s) + "\nAnswer:"};
  const Json& choices = field(j, "choices", s);
  if (!choices.is_object())
    fail_input("{}: field \"choices\" is {}, expected an object {{\"text\": [...], \"label\": [...]}}", s.where,
               choices.type_name());
  const std::vector<std::string> text = get_strings(choices, "text", s), labels = get_strings(choices, "label", s);
  if (text.size() != labels.size())
    fail_input("{}: choices has {} texts but {} labels", s.where, text.size(), labels.size());
  for (const auto& t : text) it.continuations.push_back(" " + t);
  const Json& key = field(j, "answerKey", s);
  const std::string answer = key.is_string() ? key.get<std::string>() : key.dump();
  auto pos = std::find(labels.begin(), labels.end(), answer);
  if (pos == labels.end()) {
    std::string all;
    for (const auto& l : labels) all += (all.empty() ? "" : ", ") + l;
    fail_input("{}: answerKey \"{}\" is not one of the choice labels [{}]", s.where, answer, all);
  }
  it.label = pos - labels.begin();
  return it;
}

TaskItem adapt_hellaswag(const Json& j, const Source& s, int64_t line) {
  TaskItem it;
  it.id = get_id(j, {"ind", "id"}, line);
  const std::string ctx = get_string(j, "ctx_a", s) + " " + capitalize(get_string(j, "ctx_b", s));
  it.contexts = {hellaswag_clean(get_string(j, "activity_label", s) + ": " + ctx)};
  for (const auto& e : get_strings(j, "endings", s)) it.continuations.push_back(" " + hellaswag_clean(e));
  it.label = get_integer(j, "label", s);
  return it;
}

TaskItem adapt_winogrande(const Json& j, const Source& s, int64_t line) {
  TaskItem it;
  it.id = get_id(j, {"qID", "id"}, line);
  const std::string sentence = get_string(j, "sentence", s);
  const size_t blank = sentence.find('_');
  if (blank == std::string::npos) fail_input("{}: sentence has no \"_\" blank to fill", s.where);
  for (const char* opt : {"option1", "option2"}) it.contexts.push_back(sentence.substr(0, blank) + get_string(j, opt, s));
  const std::string rest = " " + strip(sentence.substr(blank + 1));
  it.continuations = {rest, rest};
  const int64_t answer = get_integer(j, "answer", s);
  if (answer != 1 && answer != 2) fail_input("{}: answer {} out of range, expected \"1\" or \"2\"", s.where, answer);
  it.label = answer - 1;
  return it;
}

TaskItem adapt_lambada(const Json& j, const Source& s, int64_t line) {
  TaskItem it;
  it.id = get_id(j, {"id"}, line);
  const std::string text = get_string(j, "text", s);
  const size_t last = text.rfind(' ');
  if (last == std::string::npos) fail_input("{}: text has no space, so no last word to predict", s.where);
  it.contexts = {text.substr(0, last)};
  it.continuations = {text.substr(last)};
  return it;
}

struct FormatTraits {
  TaskFormat format;
  const char* name;
  TaskKind kind;
  const char* schema;
  std::vector<const char*> detect;  // fields that identify the format in auto mode
  TaskItem (*adapt)(const Json&, const Source&, int64_t line);
};

// Auto detection takes the first row whose `detect` fields are all present.
const std::vector<FormatTraits>& format_table() {
  static const std::vector<FormatTraits> table = {
      {TaskFormat::Generic, "generic", TaskKind::MultipleChoice, "{id, context, choices: [...], label}",
       {"context", "choices", "label"}, adapt_generic},
      {TaskFormat::Cloze, "cloze", TaskKind::Cloze, "{id, context, target}", {"context", "target"}, adapt_cloze},
      {TaskFormat::Piqa, "piqa", TaskKind::MultipleChoice, "{goal, sol1, sol2, label}", {"goal", "sol1", "sol2"},
       adapt_piqa},
      {TaskFormat::Arc, "arc", TaskKind::MultipleChoice, "{question, choices: {text: [...], label: [...]}, answerKey}",
       {"question", "choices", "answerKey"}, adapt_arc},
      {TaskFormat::Hellaswag, "hellaswag", TaskKind::MultipleChoice, "{activity_label, ctx_a, ctx_b, endings, label}",
       {"ctx_a", "ctx_b", "endings"}, adapt_hellaswag},
      {TaskFormat::Winogrande, "winogrande", TaskKind::MultipleChoice, "{sentence, option1, option2, answer}",
       {"sentence", "option1", "option2"}, adapt_winogrande},
      {TaskFormat::Lambada, "lambada", TaskKind::Cloze, "{text}", {"text"}, adapt_lambada},
  };
  return table;
}

const FormatTraits& traits(TaskFormat f) {
  for (const auto& t : format_table())
    if (t.format == f) return t;
  fail_input("task format {} has no adapter", static_cast<int>(f));
}

const FormatTraits& detect_format(const Json& j, const std::string& where) {
  for (const auto& t : format_table())
    if (std::all_of(t.detect.begin(), t.detect.end(), [&](const char* k) { return j.contains(k); })) return t;
  std::string known;
  for (const auto& t : format_table()) known += fmt::format("\n  {}: {}", t.name, t.schema);
  fail_input("{}: cannot tell the task format from the fields of this item; pass --format. Known formats:{}", where,
             known);
}

void check_item(const TaskItem& it, TaskKind kind, const std::string& where) {
  const int64_t n = static_cast<int64_t>(it.choices());
  // A multiple-choice item with one choice is always answered right: it would only inflate the accuracy.
  if (kind == TaskKind::MultipleChoice && n < 2)
    fail_input("{}: {} choice(s); a multiple-choice item needs at least two", where, n);
  if (it.label < 0 || it.label >= n)
    fail_input("{}: label {} out of range for {} choices (expected 0..{})", where, it.label, n, n - 1);
  for (int64_t c = 0; c < n; ++c) {
    if (norm_length(it.continuations[c]) == 0)
      fail_input("{}: choice {} (\"{}\") is empty; nothing to score", where, c, it.continuations[c]);
  }
}

// nlohmann's message says "line 1, column N" of the one-line string; keep only what went wrong.
std::string json_reason(const std::string& what) {
  const size_t col = what.find("column ");
  const size_t colon = col == std::string::npos ? std::string::npos : what.find(": ", col);
  return colon == std::string::npos ? what : what.substr(colon + 2);
}

}  // namespace

int64_t norm_length(const std::string& continuation) {
  const int64_t chars = std::count_if(continuation.begin(), continuation.end(), [](char c) { return (c & 0xC0) != 0x80; });
  return chars - (!continuation.empty() && continuation[0] == ' ');
}

const char* task_format_name(TaskFormat f) { return f == TaskFormat::Auto ? "auto" : traits(f).name; }

const char* task_format_schema(TaskFormat f) {
  return f == TaskFormat::Auto ? "any of the known formats" : traits(f).schema;
}

std::vector<std::string> task_format_names() {
  std::vector<std::string> names = {"auto"};
  for (const auto& t : format_table()) names.push_back(t.name);
  return names;
}

TaskFormat parse_task_format(const std::string& name) {
  if (name == "auto") return TaskFormat::Auto;
  for (const auto& t : format_table())
    if (name == t.name) return t.format;
  std::string all;
  for (const auto& n : task_format_names()) all += (all.empty() ? "" : ", ") + n;
  fail_input("unknown task format \"{}\"; expected one of: {}", name, all);
}

Task parse_task(const std::string& jsonl, const std::string& path, TaskFormat format, int64_t limit) {
  Task task;
  task.path = path;
  const size_t slash = path.find_last_of('/');
  task.name = slash == std::string::npos ? path : path.substr(slash + 1);
  for (const char* ext : {".jsonl", ".json"}) {
    const std::string e = ext;
    if (task.name.size() > e.size() && task.name.compare(task.name.size() - e.size(), e.size(), e) == 0) {
      task.name.resize(task.name.size() - e.size());
      break;
    }
  }
  const FormatTraits* fmt = format == TaskFormat::Auto ? nullptr : &traits(format);
  int64_t line = 0;
  for (size_t pos = 0; pos < jsonl.size() && (limit <= 0 || int64_t(task.items.size()) < limit);) {
    size_t end = jsonl.find('\n', pos);
    if (end == std::string::npos) end = jsonl.size();
    const std::string text = jsonl.substr(pos, end - pos);
    pos = end + 1;
    ++line;
    if (strip(text).empty()) continue;
    const std::string where = fmt::format("{}:{}", path, line);
    Json j;
    try {
      j = Json::parse(text);
    } catch (const Json::exception& e) {
      fail_input("{}: not valid JSON: {}", where, json_reason(e.what()));
    }
    if (!j.is_object()) fail_input("{}: expected a JSON object per line, found {}", where, j.type_name());
    if (fmt == nullptr) fmt = &detect_format(j, where);
    TaskItem item = fmt->adapt(j, Source{where, fmt->name, fmt->schema}, line);
    item.line = line;
    check_item(item, fmt->kind, where);
    task.items.push_back(std::move(item));
  }
  if (task.items.empty()) fail_input("{}: no items (an empty task file?)", path);
  task.format = fmt->format;
  task.kind = fmt->kind;
  return task;
}

Task load_task(const std::string& path, TaskFormat format, int64_t limit) {
  return parse_task(read_text_file(path), path, format, limit);
}

}  // namespace ptq
