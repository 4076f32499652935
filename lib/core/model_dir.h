// Writing a model directory (or one output file) safely: an existing output is never replaced without force,
// the input is never the output, and a directory appears whole or not at all.
#pragma once

#include <string>

namespace ptq {

// Throws std::invalid_argument when `out` is the same file system entry as `input` (any `force`; `input` may be
// empty or absent) or exists and `force` is false. Trailing slashes of `out` do not matter.
void check_output_path(const std::string& out, const std::string& input, bool force);

// A model directory assembled under OUT.tmp-<pid> and renamed to OUT by commit(). Construction checks OUT with
// check_output_path() and creates the temporary directory (a stale one of the same name is removed); the
// destructor removes it unless commit() ran, so an error on the way leaves nothing behind.
class ModelDirWriter {
 public:
  ModelDirWriter(const std::string& out, const std::string& input, bool force);
  ~ModelDirWriter();
  ModelDirWriter(const ModelDirWriter&) = delete;
  ModelDirWriter& operator=(const ModelDirWriter&) = delete;

  const std::string& out() const { return out_; }  // without trailing slashes
  const std::string& tmp() const { return tmp_; }
  std::string file(const std::string& name) const { return tmp_ + "/" + name; }

  // Copies the tokenizer files and generation_config.json that exist in `src_dir` (tokenizer.model,
  // tokenizer.json, tokenizer_config.json, special_tokens_map.json, vocab.json, merges.txt, added_tokens.json).
  void copy_tokenizer_files(const std::string& src_dir) const;

  // Renames the temporary directory to OUT. An existing OUT is removed first when `force` was given; one that
  // appeared since construction without `force` is refused.
  void commit();

 private:
  std::string out_, tmp_;
  bool force_ = false, committed_ = false;
};

}  // namespace ptq
