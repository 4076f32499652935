#include "core/model_dir.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "core/error.h"
#include "core/file.h"
#include "core/temporaries.h"

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

namespace {

// Real path of `p`; for a path that does not exist yet, its longest existing prefix resolved and the rest appended.
fs::path real_path(const std::string& p) {
  std::error_code ec;
  fs::path r = fs::weakly_canonical(fs::absolute(p, ec), ec);
  return ec ? fs::absolute(p).lexically_normal() : r;
}

// True when `inner` is `outer` or lies below it (component-wise, on normalised absolute paths).
bool is_within(const fs::path& inner, const fs::path& outer) {
  auto i = inner.begin(), o = outer.begin();
  for (; o != outer.end(); ++o, ++i) {
    if (o->empty()) continue;  // a trailing separator
    if (i == inner.end() || *i != *o) return false;
  }
  return true;
}

}  // namespace

namespace {
// OUT without trailing slashes, once check_output_path accepts it (nothing is created before that).
std::string checked_output(const std::string& out, const std::vector<std::string>& inputs, bool force) {
  check_output_path(out, inputs, force);
  return strip_slashes(out);
}
}  // namespace

bool is_ptq_output(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) return fs::exists(fs::path(path) / kOutputMarkerFile, ec);
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return false;
  std::string head(kOutputMarkerSpan, '\0');
  head.resize(std::fread(head.data(), 1, head.size(), f));
  std::fclose(f);
  return head.find(kOutputMarker) != std::string::npos;
}

void check_output_path(const std::string& out_arg, const std::vector<std::string>& inputs, bool force) {
  const std::string out = strip_slashes(out_arg);
  const fs::path out_real = real_path(out);
  std::error_code ec;
  for (const auto& input : inputs) {
    if (input.empty() || !fs::exists(input, ec)) continue;
    const fs::path in_real = real_path(input);
    if (out_real == in_real) fail_input("output {} is the input {}; inputs are never modified", out, input);
    if (is_within(in_real, out_real))
      fail_input("output {} contains the input {}; writing it would replace the input; choose an output outside it",
                 out, input);
    if (fs::is_directory(in_real, ec) && is_within(out_real, in_real))
      fail_input("output {} lies inside the input {}; inputs are never modified; choose an output outside it", out,
                 input);
  }
  if (!fs::exists(out, ec)) return;
  if (!force) fail_input("output {} already exists; choose another -o or pass --force to replace it", out);
  if (!is_ptq_output(out))
    fail_input("output {} exists and was not written by ptq (no {} marker); --force replaces only ptq's own outputs; "
               "remove it yourself or choose another -o", out, fs::is_directory(out, ec) ? kOutputMarkerFile : kOutputMarker);
}

ModelDirWriter::ModelDirWriter(const std::string& out, const std::vector<std::string>& inputs, bool force)
    : out_(checked_output(out, inputs, force)), force_(force), tmp_(out_, ScopedTemporary::Kind::Directory) {
  std::error_code ec;
  fs::remove_all(tmp(), ec);
  fs::create_directories(tmp(), ec);
  if (ec) fail_io("cannot create directory {}: {}", tmp(), ec.message());
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
  write_text_file_atomic(file(kOutputMarkerFile),
                         fmt::format("{{\"{}\": \"ptq {}\"}}\n", kOutputMarker, PTQ_VERSION));
  std::error_code ec;
  if (fs::exists(out_, ec)) {
    if (!force_) fail_input("output {} appeared while it was being written; not replacing it without --force", out_);
    if (!is_ptq_output(out_))
      fail_input("output {} appeared while it was being written and was not written by ptq; not replacing it", out_);
    fs::remove_all(out_, ec);
    if (ec) fail_io("cannot remove {} to replace it: {}", out_, ec.message());
  }
  fs::rename(tmp(), out_, ec);
  if (ec) fail_io("cannot rename {} to {}: {}", tmp(), out_, ec.message());
  tmp_.release();
}

}  // namespace ptq
