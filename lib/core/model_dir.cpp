#include "core/model_dir.h"

#include <unistd.h>

#include <filesystem>

#include "core/error.h"

namespace ptq {

namespace fs = std::filesystem;

namespace {

const char* const kTokenizerFiles[] = {"tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                                       "special_tokens_map.json", "generation_config.json", "vocab.json",
                                       "merges.txt", "added_tokens.json"};

std::string strip_slashes(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

}  // namespace

void check_output_path(const std::string& out_arg, const std::string& input, bool force) {
  const std::string out = strip_slashes(out_arg);
  std::error_code ec;
  if (!fs::exists(out, ec)) return;
  if (!input.empty() && fs::exists(input, ec) && fs::equivalent(out, input, ec))
    fail_input("output {} is the input model; inputs are never modified", out);
  if (!force) fail_input("output {} already exists; choose another -o or pass --force to replace it", out);
}

ModelDirWriter::ModelDirWriter(const std::string& out, const std::string& input, bool force)
    : out_(strip_slashes(out)), force_(force) {
  check_output_path(out_, input, force);
  tmp_ = fmt::format("{}.tmp-{}", out_, ::getpid());
  std::error_code ec;
  fs::remove_all(tmp_, ec);
  fs::create_directories(tmp_, ec);
  if (ec) fail_io("cannot create directory {}: {}", tmp_, ec.message());
}

ModelDirWriter::~ModelDirWriter() {
  if (committed_) return;
  std::error_code ec;
  fs::remove_all(tmp_, ec);
}

void ModelDirWriter::copy_tokenizer_files(const std::string& src_dir) const {
  for (const char* f : kTokenizerFiles) {
    const std::string src = src_dir + "/" + f;
    std::error_code ec;
    if (!fs::is_regular_file(src, ec)) continue;
    fs::copy_file(src, file(f), fs::copy_options::overwrite_existing, ec);
    if (ec) fail_io("cannot copy {} to {}: {}", src, file(f), ec.message());
  }
}

void ModelDirWriter::commit() {
  std::error_code ec;
  if (fs::exists(out_, ec)) {
    if (!force_) fail_input("output {} appeared while it was being written; not replacing it without --force", out_);
    fs::remove_all(out_, ec);
    if (ec) fail_io("cannot remove {} to replace it: {}", out_, ec.message());
  }
  fs::rename(tmp_, out_, ec);
  if (ec) fail_io("cannot rename {} to {}: {}", tmp_, out_, ec.message());
  committed_ = true;
}

}  // namespace ptq
