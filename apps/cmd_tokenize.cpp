// ptq tokenize: the ids a model's tokenizer gives a text, and the inverse (--decode).
#include <cstdio>

#include "apps/commands.h"
#include "core/error.h"
#include "core/file.h"
#include "model/tokenizer.h"

namespace ptq::cli {

namespace {

struct TokenizeArgs {
  std::string model, text, file;
  bool json = false, decode = false, no_special = false;
};

// Ids for --decode: integers separated by spaces, commas or newlines, optionally inside [ ].
std::vector<int32_t> parse_ids(const std::string& s, const std::string& where) {
  std::vector<int32_t> ids;
  size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (c == ' ' || c == ',' || c == '\n' || c == '\t' || c == '\r' || c == '[' || c == ']') {
      ++i;
      continue;
    }
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(s.substr(i, 20), &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || v < 0 || v > INT32_MAX)
      fail_input("{}: expected token ids (non-negative integers) at character {}, found \"{}\"", where, i,
                 s.substr(i, 12));
    ids.push_back(static_cast<int32_t>(v));
    i += used;
  }
  return ids;
}

void run_tokenize(const GlobalOptions& g, const TokenizeArgs& a) {
  apply_global_options(g, a.json);
  const std::string input = a.file.empty() ? a.text : read_text_file(a.file);
  const std::string where = a.file.empty() ? "--text" : a.file;
  auto tok = load_tokenizer(a.model);
  if (a.decode) {
    const std::vector<int32_t> ids = parse_ids(input, where);
    for (int32_t id : ids)  // decoders skip unknown ids; a silently shorter text would hide the mistake
      if (id < 0 || id >= tok->vocab_size())
        fail_input("{}: id {} is outside the tokenizer's vocabulary 0..{} ({})", where, id, tok->vocab_size() - 1,
                   tok->describe());
    const std::string text = tok->decode(ids);
    if (a.json) print_json({{"text", text}});
    else std::printf("%s\n", text.c_str());
    return;
  }
  const std::vector<int32_t> ids = a.no_special ? tok->encode(input, false) : tok->encode(input);
  if (a.json) {
    print_json({{"ids", ids}, {"tokens", ids.size()}});
    return;
  }
  std::string line;
  for (int32_t id : ids) line += (line.empty() ? "" : " ") + std::to_string(id);
  std::printf("%s\n", line.c_str());
  std::fprintf(stderr, "[%zu tokens, %s]\n", ids.size(), tok->describe().c_str());
}

}  // namespace

void add_tokenize_command(CLI::App& app, GlobalOptions& g) {
  auto a = std::make_shared<TokenizeArgs>();
  auto* cmd = app.add_subcommand("tokenize", "Token ids of a text with the model's tokenizer (--decode: ids to text)");
  cmd->add_option("MODEL", a->model, "Model directory (tokenizer.json or tokenizer.model)")->required();
  auto* text = cmd->add_option("--text", a->text, "The text (with --decode: the ids)");
  auto* file = cmd->add_option("--file", a->file, "Read the text (or ids) from a file")->check(CLI::ExistingFile);
  text->excludes(file);
  file->excludes(text);
  cmd->add_flag("--decode", a->decode, "Decode ids (space/comma separated) back to text");
  cmd->add_flag("--no-special", a->no_special, "Do not add BOS/special tokens (default: as the model's config says)");
  cmd->add_flag("--json", a->json, "Print {\"ids\": [...], \"tokens\": n} (--decode: {\"text\": ...})");
  cmd->callback([&g, a, text, file] {
    if (text->count() + file->count() != 1) fail_input("tokenize: give exactly one of --text and --file");
    run_tokenize(g, *a);
  });
}

}  // namespace ptq::cli
