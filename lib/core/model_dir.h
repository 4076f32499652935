// Writing a model directory (or one output file) safely: an existing output is never replaced without force,
// the input is never the output, and a directory appears whole or not at all.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "core/temporaries.h"

namespace ptq {

// The rules every command that writes follows, checked on resolved real paths (symlinks, "..", "." resolved)
// before anything is written or removed; each refusal is a std::invalid_argument naming both paths:
//  - the output may not be an input, lie inside an input directory (e.g. -o MODEL/model.safetensors), or contain an
//    input (e.g. -o DIR for DIR/model, or -o . from the directory holding the model);
//  - an existing output is replaced only with `force`, and only when ptq wrote it (is_ptq_output); anything else is
//    refused whatever `force` says.
// `inputs` may hold empty or missing paths (ignored). Trailing slashes of `out` do not matter.
void check_output_path(const std::string& out, const std::vector<std::string>& inputs, bool force);
inline void check_output_path(const std::string& out, const std::string& input, bool force) {
  check_output_path(out, std::vector<std::string>{input}, force);
}

// What marks an output as ptq's: a directory holds kOutputMarkerFile (written by ModelDirWriter); a file holds the
// string kOutputMarker in its first kOutputMarkerSpan bytes (a GGUF metadata key, a safetensors __metadata__ key,
// an HTML <meta> name: each writer puts it near the start).
constexpr const char* kOutputMarkerFile = ".ptq-output";
constexpr const char* kOutputMarker = "ptq.output";
constexpr size_t kOutputMarkerSpan = 64 * 1024;
bool is_ptq_output(const std::string& path);

// A model directory assembled under OUT.tmp-<pid> and renamed to OUT by commit(). Construction checks OUT with
// check_output_path(), removes temporaries of OUT left by dead processes, and creates the temporary directory,
// registered so that SIGINT/SIGTERM remove it (core/temporaries.h); the destructor removes it unless commit() ran,
// so an error on the way leaves nothing behind. commit() writes kOutputMarkerFile into it first.
class ModelDirWriter {
 public:
  ModelDirWriter(const std::string& out, const std::vector<std::string>& inputs, bool force);
  ModelDirWriter(const std::string& out, const std::string& input, bool force)
      : ModelDirWriter(out, std::vector<std::string>{input}, force) {}
  ModelDirWriter(const ModelDirWriter&) = delete;
  ModelDirWriter& operator=(const ModelDirWriter&) = delete;

  const std::string& out() const { return out_; }  // without trailing slashes
  const std::string& tmp() const { return tmp_.path(); }
  std::string file(const std::string& name) const { return tmp() + "/" + name; }

  // Copies the tokenizer files and generation_config.json that exist in `src_dir` (tokenizer.model,
  // tokenizer.json, tokenizer_config.json, special_tokens_map.json, vocab.json, merges.txt, added_tokens.json).
  void copy_tokenizer_files(const std::string& src_dir) const;

  // Renames the temporary directory to OUT. An existing OUT is removed first when `force` was given; one that
  // appeared since construction without `force` is refused.
  void commit();

 private:
  std::string out_;
  bool force_ = false;
  ScopedTemporary tmp_;  // initialised after out_, which runs the output checks
};

}  // namespace ptq
