#include "model/tokenizer.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"
#include "model/gguf_model.h"
#include "model/sentencepiece.h"
#include "model/tokenizer_json.h"

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

// tokenizer.json: "add_bos" means the post-processor's special tokens (tokenizer_config.json's
// add_bos_token is applied at load where the tokenizer class honours it).
class JsonTokenizer final : public Tokenizer {
 public:
  JsonTokenizer(HfTokenizer tok, std::string note) : tok_(std::move(tok)), note_(std::move(note)) {}

  std::vector<int32_t> encode(const std::string& text, bool add_bos) const override { return tok_.encode(text, add_bos); }
  std::string decode(const std::vector<int32_t>& ids) const override { return tok_.decode(ids); }
  int64_t vocab_size() const override { return tok_.vocab_size(); }
  int32_t bos_id() const override { return tok_.bos_id(); }
  int32_t eos_id() const override { return tok_.eos_id(); }
  bool add_bos_default() const override { return tok_.adds_special(); }
  std::string describe() const override { return tok_.describe() + note_; }

 private:
  HfTokenizer tok_;
  std::string note_;
};

// Text the two tokenizer files of one directory must encode alike before tokenizer.json is preferred:
// leading/repeated spaces, digits, punctuation, accents, CJK, emoji (byte fallback) and a newline.
const char* const kAgreementSample =
    "  The quick brown fox, 1234567 jumps -- over \"the\" lazy dog's back!\n"
    "Émile écrivit 3.14159 fois: naïve café; 日本語のテキスト 🙂👍 Москва  end ";

}  // namespace

namespace {

// A tokenizer with more pieces than the model has embedding rows belongs to another model (a swapped or stale
// file): some text would give ids the model cannot embed, so it is refused up front, naming the file.
std::unique_ptr<Tokenizer> fitting(std::unique_ptr<Tokenizer> tok, const std::string& file, const std::string& dir) {
  const std::string cfg_path = dir + "/config.json";
  if (!file_exists(cfg_path)) return tok;
  int64_t vocab = 0;
  try {
    const nlohmann::json cfg = nlohmann::json::parse(read_text_file(cfg_path));
    if (!cfg.is_object() || !cfg.contains("vocab_size") || !cfg["vocab_size"].is_number_integer()) return tok;
    vocab = cfg["vocab_size"].get<int64_t>();
  } catch (const nlohmann::json::exception&) {
    return tok;  // the config's own loader says what is wrong with it
  }
  if (vocab > 0 && tok->vocab_size() > vocab)
    fail_input("{} has {} tokens but {} says vocab_size {}: the tokenizer belongs to another model (its ids {}..{} "
               "have no embedding); copy the model's own tokenizer", file, tok->vocab_size(), cfg_path, vocab, vocab,
               tok->vocab_size() - 1);
  return tok;
}

std::unique_ptr<Tokenizer> load_tokenizer_files(const std::string& dir);

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& dir) {
  if (is_gguf_file(dir)) return load_tokenizer(resolve_model_path(dir));  // the embedded vocabulary, converted
  return load_tokenizer_files(dir);
}

namespace {

std::unique_ptr<Tokenizer> load_tokenizer_files(const std::string& dir) {
  bool add_bos = true;  // LlamaTokenizer's default
  std::string cfg_text;
  const std::string cfg_path = dir + "/tokenizer_config.json";
  if (file_exists(cfg_path)) {
    cfg_text = read_text_file(cfg_path);
    nlohmann::json cfg;
    try {
      cfg = nlohmann::json::parse(cfg_text);
    } catch (const nlohmann::json::exception& e) {
      fail_input("{}: not valid JSON ({})", cfg_path, e.what());
    }
    if (cfg.contains("add_bos_token") && cfg["add_bos_token"].is_boolean()) add_bos = cfg["add_bos_token"].get<bool>();
  }
  const std::string spm = dir + "/tokenizer.model";
  const std::string tj = dir + "/tokenizer.json";
  const bool has_spm = file_exists(spm), has_json = file_exists(tj);
  if (has_json && !has_spm) return fitting(std::make_unique<JsonTokenizer>(HfTokenizer::load(tj, cfg_text), ""), tj, dir);
  if (has_spm && !has_json) return fitting(std::make_unique<SentencePieceTokenizer>(spm, add_bos), spm, dir);
  if (has_spm && has_json) {
    // Both: tokenizer.json (what transformers' fast tokenizer runs) only where it agrees with tokenizer.model.
    // A tokenizer.json using a component we do not implement leaves tokenizer.model in charge.
    auto sp = std::make_unique<SentencePieceTokenizer>(spm, add_bos);
    std::unique_ptr<JsonTokenizer> js;
    try {
      js = std::make_unique<JsonTokenizer>(HfTokenizer::load(tj, cfg_text), " (agrees with tokenizer.model)");
    } catch (const std::invalid_argument&) {
      return fitting(std::move(sp), spm, dir);
    }
    if (js->encode(kAgreementSample, true) == sp->encode(kAgreementSample, true) &&
        js->vocab_size() == sp->vocab_size())
      return fitting(std::move(js), tj, dir);
    return fitting(std::move(sp), spm, dir);
  }
  fail_input("{}: no tokenizer found: expected tokenizer.json (Hugging Face) or tokenizer.model (SentencePiece)", dir);
}

}  // namespace

}  // namespace ptq
