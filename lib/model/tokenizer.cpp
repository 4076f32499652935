#include "model/tokenizer.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"
#include "model/sentencepiece.h"

namespace ptq {

namespace {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(const std::string& model_path, bool add_bos)
      : sp_(SentencePieceModel::load(model_path)), add_bos_(add_bos) {}

  std::vector<int32_t> encode(const std::string& text, bool add_bos) const override {
    std::vector<int32_t> ids = sp_.encode(text);
    if (add_bos && bos_id() >= 0) ids.insert(ids.begin(), bos_id());
    return ids;
  }
  std::string decode(const std::vector<int32_t>& ids) const override { return sp_.decode(ids); }
  int64_t vocab_size() const override { return static_cast<int64_t>(sp_.pieces().size()); }
  int32_t bos_id() const override { return sp_.bos_id(); }
  int32_t eos_id() const override { return sp_.eos_id(); }
  bool add_bos_default() const override { return add_bos_; }
  std::string describe() const override { return fmt::format("sentencepiece-bpe({} pieces)", sp_.pieces().size()); }

 private:
  SentencePieceModel sp_;
  bool add_bos_;
};

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& dir) {
  bool add_bos = true;  // LlamaTokenizer's default
  const std::string cfg_path = dir + "/tokenizer_config.json";
  if (file_exists(cfg_path)) {
    nlohmann::json cfg;
    try {
      cfg = nlohmann::json::parse(read_text_file(cfg_path));
    } catch (const nlohmann::json::parse_error& e) {
      fail_input("{}: not valid JSON ({})", cfg_path, e.what());
    }
    if (cfg.contains("add_bos_token") && cfg["add_bos_token"].is_boolean()) add_bos = cfg["add_bos_token"].get<bool>();
  }
  const std::string spm = dir + "/tokenizer.model";
  if (file_exists(spm)) return std::make_unique<SentencePieceTokenizer>(spm, add_bos);
  fail_input("{}: no tokenizer.model (SentencePiece) found; tokenizer.json is not supported yet", dir);
}

}  // namespace ptq
