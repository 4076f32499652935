#include "model/tokenizer_json.h"

#include <algorithm>
#include <array>
#include <queue>
#include <unordered_map>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/utf8.h"
#include "core/file.h"

namespace ptq {

namespace {

using nlohmann::json;

// Ids index a table of tokens, so an id is memory: the largest real vocabularies hold ~256K tokens, and an id past
// this bound (or one that does not fit int32, which nlohmann would truncate) is refused before anything is sized
// by it.
constexpr int64_t kMaxTokenId = (int64_t(1) << 24) - 1;

int32_t token_id(const json& v, const std::string& what) {
  if (!v.is_number_integer()) fail_input("{}: expected an integer id, found {}", what, v.dump());
  const int64_t id = v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(kMaxTokenId) ? kMaxTokenId + 1
                                                                                         : v.get<int64_t>();
  if (id < 0 || id > kMaxTokenId) fail_input("{}: id {} is outside 0..{}", what, v.dump(), kMaxTokenId);
  return static_cast<int32_t>(id);
}

// ---- UTF-8 ---------------------------------------------------------------------------------------------------

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Every byte that does not start a well-formed sequence becomes U+FFFD (as a Rust/JS string would hold it).
std::string sanitize_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    size_t n = utf8_seq_len(s, i);
    if (n == 0) break;
    i += n;
  }
  if (i == s.size()) return s;
  std::string out(s, 0, i);
  while (i < s.size()) {
    size_t n = utf8_seq_len(s, i);
    if (n == 0) {
      out += "\xEF\xBF\xBD";
      ++i;
    } else {
      out.append(s, i, n);
      i += n;
    }
  }
  return out;
}

size_t utf8_char_len(const std::string& s, size_t i) {
  const unsigned char c = static_cast<unsigned char>(s[i]);
  size_t n = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : 4;
  return std::min(n, s.size() - i);
}

bool is_ascii(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return;
  std::string out;
  size_t pos = 0, hit;
  while ((hit = s.find(from, pos)) != std::string::npos) {
    out.append(s, pos, hit - pos);
    out += to;
    pos = hit + from.size();
  }
  if (pos == 0) return;
  out.append(s, pos, std::string::npos);
  s.swap(out);
}

// Unicode NFC through ICU (text must be valid UTF-8).
std::string nfc(const std::string& s) {
  if (is_ascii(s)) return s;  // ASCII is always NFC
  UErrorCode err = U_ZERO_ERROR;
  const UNormalizer2* norm = unorm2_getNFCInstance(&err);
  int32_t len16 = 0;
  err = U_ZERO_ERROR;
  u_strFromUTF8(nullptr, 0, &len16, s.data(), static_cast<int32_t>(s.size()), &err);
  std::vector<UChar> src(static_cast<size_t>(len16) + 1);
  err = U_ZERO_ERROR;
  u_strFromUTF8(src.data(), len16 + 1, nullptr, s.data(), static_cast<int32_t>(s.size()), &err);
  if (U_FAILURE(err)) fail_io("ICU: cannot convert text to UTF-16 ({})", u_errorName(err));
  if (unorm2_isNormalized(norm, src.data(), len16, &err) && U_SUCCESS(err)) return s;
  err = U_ZERO_ERROR;
  std::vector<UChar> dst(static_cast<size_t>(len16) * 3 + 16);  // NFC expands by at most 3x
  int32_t n = unorm2_normalize(norm, src.data(), len16, dst.data(), static_cast<int32_t>(dst.size()), &err);
  if (U_FAILURE(err)) fail_io("ICU: NFC normalization failed ({})", u_errorName(err));
  std::string out(static_cast<size_t>(n) * 3 + 4, '\0');
  int32_t out_len = 0;
  err = U_ZERO_ERROR;
  u_strToUTF8(out.data(), static_cast<int32_t>(out.size()), &out_len, dst.data(), n, &err);
  if (U_FAILURE(err)) fail_io("ICU: cannot convert text back to UTF-8 ({})", u_errorName(err));
  out.resize(static_cast<size_t>(out_len));
  return out;
}

// ---- GPT-2's byte <-> unicode map (ByteLevel) ---------------------------------------------------------------
// Printable Latin-1 bytes map to themselves; the other 68 bytes, in order, to U+0100, U+0101, ...
struct ByteMap {
  std::array<std::string, 256> to_char;
  std::unordered_map<std::string, uint8_t> to_byte;
  ByteMap() {
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      append_utf8(to_char[b], printable ? static_cast<uint32_t>(b) : next++);
      to_byte[to_char[b]] = static_cast<uint8_t>(b);
    }
  }
};
const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

// ---- PCRE2 ----------------------------------------------------------------------------------------------------
class Regex {
 public:
  Regex(const std::string& pattern, const std::string& where) {
    int code = 0;
    PCRE2_SIZE offset = 0;
    re_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP, &code,
                        &offset, nullptr);
    if (!re_) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(code, msg, sizeof(msg));
      fail_input("{}: split regex /{}/ does not compile at offset {}: {}", where, pattern, offset,
                 reinterpret_cast<const char*>(msg));
    }
    pcre2_jit_compile(re_, PCRE2_JIT_COMPLETE);  // optional speed-up; the interpreter is used when JIT is absent
  }
  ~Regex() { pcre2_code_free(re_); }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // [begin, end) of every match, left to right (text is valid UTF-8).
  std::vector<std::pair<size_t, size_t>> find_all(const std::string& text) const {
    std::vector<std::pair<size_t, size_t>> out;
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(re_, nullptr);
    size_t start = 0;
    while (start < text.size()) {
      int rc = pcre2_match(re_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), start, PCRE2_NO_UTF_CHECK,
                           md, nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        pcre2_match_data_free(md);
        fail_io("PCRE2 match failed with code {}", rc);
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      if (ov[1] == ov[0]) {  // empty match: step over one character
        start = ov[0] + utf8_char_len(text, ov[0]);
        continue;
      }
      out.emplace_back(ov[0], ov[1]);
      start = ov[1];
    }
    pcre2_match_data_free(md);
    return out;
  }

 private:
  pcre2_code* re_ = nullptr;
};

// GPT-2's split pattern: ByteLevel with use_regex.
const char* const kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

std::string pattern_of(const json& p, const std::string& where) {
  if (p.contains("Regex") && p["Regex"].is_string()) return p["Regex"].get<std::string>();
  if (p.contains("String") && p["String"].is_string()) return "\\Q" + p["String"].get<std::string>() + "\\E";
  fail_input("{}: pattern must be {{\"Regex\": ...}} or {{\"String\": ...}}, found {}", where, p.dump());
}

std::string string_pattern(const json& p, const std::string& where) {
  if (p.contains("String") && p["String"].is_string()) return p["String"].get<std::string>();
  fail_input("{}: only {{\"String\": ...}} patterns are supported here, found {}", where, p.dump());
}

const json& member(const json& j, const char* key, const std::string& where) {
  if (!j.is_object() || !j.contains(key)) fail_input("{}: missing \"{}\"", where, key);
  return j[key];
}

template <typename T>
T get_or(const json& j, const char* key, T fallback) {
  if (!j.is_object() || !j.contains(key) || j[key].is_null()) return fallback;
  return j[key].get<T>();
}

// A token in tokenizer_config.json: a string or an AddedToken object {"content": ...}.
std::string config_token(const json& cfg, const char* key) {
  if (!cfg.is_object() || !cfg.contains(key)) return "";
  const json& v = cfg[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return "";
}

// ---- pipeline components --------------------------------------------------------------------------------------
enum class NormKind { Nfc, Prepend, Replace };
struct NormStep {
  NormKind kind;
  std::string a, b;  // Prepend: a; Replace: a -> b
};

enum class PreKind { Split, ByteLevel, Metaspace };
enum class Prepend { Always, First, Never };
struct PreStep {
  explicit PreStep(PreKind k) : kind(k) {}
  PreKind kind;
  std::shared_ptr<const Regex> regex;  // Split; ByteLevel with use_regex
  bool add_prefix_space = false;       // ByteLevel
  std::string replacement;             // Metaspace
  Prepend prepend = Prepend::Always;   // Metaspace
  bool split = false;                  // Metaspace
};

enum class DecKind { ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace };
struct DecStep {
  explicit DecStep(DecKind k, std::string a_ = "", std::string b_ = "") : kind(k), a(std::move(a_)), b(std::move(b_)) {}
  DecKind kind;
  std::string a, b;  // Replace a -> b; Strip content a; Metaspace replacement a
  int start = 0, stop = 0;
  bool strip_first_space = false;  // Metaspace
};

struct AddedToken {
  std::string content;
  int32_t id;
  bool special, lstrip, rstrip;
};

// A pre-tokenized piece of text; `at_start`: it begins at byte 0 of the input (Metaspace "first").
struct Piece {
  std::string text;
  bool at_start;
};

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

}  // namespace

struct HfTokenizer::Impl {
  std::string where;
  // BPE model
  std::unordered_map<std::string, int32_t> vocab;  // model vocab + added tokens
  std::vector<std::string> id_to_token;
  std::vector<bool> is_special;
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges;  // (left id, right id) -> (rank, merged id)
  int32_t unk_id = -1;
  bool fuse_unk = false, byte_fallback = false, ignore_merges = false;
  std::array<int32_t, 256> byte_ids{};
  // pipeline
  std::vector<NormStep> normalizers;
  std::vector<PreStep> pre_tokenizers;
  std::vector<DecStep> decoders;
  std::vector<AddedToken> added;                     // longest content first
  std::array<std::vector<size_t>, 256> added_by_byte;  // indices into `added` by first byte
  std::vector<int32_t> prefix, suffix;               // post-processor's special tokens around the sequence
  int32_t bos = -1, eos = -1;
  std::string model_name;

  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  void parse_model(const json& m);
  void parse_normalizer(const json& n, const std::string& path);
  void parse_pre_tokenizer(const json& p, const std::string& path);
  void parse_decoder(const json& d, const std::string& path);
  void parse_post_processor(const json& p, const std::string& path);

  std::vector<Piece> pre_tokenize(const std::string& section, bool at_start) const;
  void bpe(const std::string& word, std::vector<int32_t>& ids) const;
  void encode_section(const std::string& section, bool at_start,
                      std::unordered_map<std::string, std::vector<int32_t>>& cache, std::vector<int32_t>& ids) const;
};

void HfTokenizer::Impl::parse_model(const json& m) {
  const std::string path = where + ": model";
  const std::string type = get_or<std::string>(m, "type", "BPE");
  if (type != "BPE") fail_input("{}: model type \"{}\" is not supported (only BPE)", path, type);
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (!get_or<std::string>(m, key, "").empty())
      fail_input("{}: \"{}\" is not supported (found \"{}\")", path, key, m[key].get<std::string>());
  if (m.contains("dropout") && !m["dropout"].is_null() && m["dropout"].get<double>() != 0)
    fail_input("{}: BPE dropout is not supported", path);
  fuse_unk = get_or<bool>(m, "fuse_unk", false);
  byte_fallback = get_or<bool>(m, "byte_fallback", false);
  ignore_merges = get_or<bool>(m, "ignore_merges", false);
  const json& v = member(m, "vocab", path);
  if (!v.is_object()) fail_input("{}.vocab: expected an object token -> id", path);
  int32_t max_id = -1;
  for (auto it = v.begin(); it != v.end(); ++it) {
    const int32_t id = token_id(it.value(), fmt::format("{}.vocab[\"{}\"]", path, it.key()));
    vocab[it.key()] = id;
    max_id = std::max(max_id, id);
  }
  id_to_token.assign(static_cast<size_t>(max_id) + 1, "");
  for (const auto& [tok, id] : vocab) id_to_token[id] = tok;
  const std::string unk = get_or<std::string>(m, "unk_token", "");
  if (!unk.empty()) {
    auto it = vocab.find(unk);
    if (it == vocab.end()) fail_input("{}: unk_token \"{}\" is not in the vocab", path, unk);
    unk_id = it->second;
  }
  byte_ids.fill(-1);
  if (byte_fallback)
    for (int b = 0; b < 256; ++b) {
      auto it = vocab.find(fmt::format("<0x{:02X}>", b));
      if (it != vocab.end()) byte_ids[b] = it->second;
    }
  const json& ms = member(m, "merges", path);
  if (!ms.is_array()) fail_input("{}.merges: expected an array", path);
  merges.reserve(ms.size());
  for (size_t r = 0; r < ms.size(); ++r) {
    std::string a, b;
    if (ms[r].is_string()) {  // "left right"
      const std::string s = ms[r].get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        fail_input("{}.merges[{}]: expected \"left right\", found \"{}\"", path, r, s);
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (ms[r].is_array() && ms[r].size() == 2 && ms[r][0].is_string() && ms[r][1].is_string()) {
      a = ms[r][0].get<std::string>();
      b = ms[r][1].get<std::string>();
    } else {
      fail_input("{}.merges[{}]: expected a string or a pair of strings, found {}", path, r, ms[r].dump());
    }
    auto ia = vocab.find(a), ib = vocab.find(b), iab = vocab.find(a + b);
    if (ia == vocab.end() || ib == vocab.end() || iab == vocab.end())
      fail_input("{}.merges[{}]: \"{}\" + \"{}\": a part or the merged token is not in the vocab", path, r, a, b);
    merges.emplace(pair_key(ia->second, ib->second), std::make_pair(static_cast<int32_t>(r), iab->second));
  }
}

void HfTokenizer::Impl::parse_normalizer(const json& n, const std::string& path) {
  if (n.is_null()) return;
  const std::string type = get_or<std::string>(n, "type", "");
  if (type == "Sequence") {
    const json& list = member(n, "normalizers", path);
    for (size_t i = 0; i < list.size(); ++i) parse_normalizer(list[i], fmt::format("{}.normalizers[{}]", path, i));
  } else if (type == "NFC") {
    normalizers.push_back({NormKind::Nfc, "", ""});
  } else if (type == "Prepend") {
    normalizers.push_back({NormKind::Prepend, member(n, "prepend", path).get<std::string>(), ""});
  } else if (type == "Replace") {
    normalizers.push_back({NormKind::Replace, string_pattern(member(n, "pattern", path), path),
                           member(n, "content", path).get<std::string>()});
  } else {
    fail_input("{}: normalizer \"{}\" is not supported (NFC, Prepend, Replace, Sequence are)", path, type);
  }
}

void HfTokenizer::Impl::parse_pre_tokenizer(const json& p, const std::string& path) {
  if (p.is_null()) return;
  const std::string type = get_or<std::string>(p, "type", "");
  if (type == "Sequence") {
    const json& list = member(p, "pretokenizers", path);
    for (size_t i = 0; i < list.size(); ++i) parse_pre_tokenizer(list[i], fmt::format("{}.pretokenizers[{}]", path, i));
  } else if (type == "Split") {
    const std::string behavior = get_or<std::string>(p, "behavior", "Isolated");
    if (behavior != "Isolated" || get_or<bool>(p, "invert", false))
      fail_input("{}: Split with behavior \"{}\"{} is not supported (Isolated only)", path, behavior,
                 get_or<bool>(p, "invert", false) ? " and invert" : "");
    PreStep s(PreKind::Split);
    s.regex = std::make_shared<Regex>(pattern_of(member(p, "pattern", path), path), path);
    pre_tokenizers.push_back(std::move(s));
  } else if (type == "ByteLevel") {
    PreStep s(PreKind::ByteLevel);
    s.add_prefix_space = get_or<bool>(p, "add_prefix_space", false);
    if (get_or<bool>(p, "use_regex", true)) s.regex = std::make_shared<Regex>(kGpt2Pattern, path);
    pre_tokenizers.push_back(std::move(s));
  } else if (type == "Metaspace") {
    PreStep s(PreKind::Metaspace);
    s.replacement = get_or<std::string>(p, "replacement", "\xE2\x96\x81");
    std::string scheme = get_or<std::string>(p, "prepend_scheme", "");
    if (scheme.empty()) scheme = get_or<bool>(p, "add_prefix_space", true) ? "always" : "never";
    static const std::pair<const char*, Prepend> kSchemes[] = {
        {"always", Prepend::Always}, {"first", Prepend::First}, {"never", Prepend::Never}};
    auto it = std::find_if(std::begin(kSchemes), std::end(kSchemes), [&](const auto& e) { return scheme == e.first; });
    if (it == std::end(kSchemes)) fail_input("{}: unknown prepend_scheme \"{}\"", path, scheme);
    s.prepend = it->second;
    s.split = get_or<bool>(p, "split", true);
    pre_tokenizers.push_back(std::move(s));
  } else {
    fail_input("{}: pre-tokenizer \"{}\" is not supported (Split, ByteLevel, Metaspace, Sequence are)", path, type);
  }
}

void HfTokenizer::Impl::parse_decoder(const json& d, const std::string& path) {
  if (d.is_null()) return;
  const std::string type = get_or<std::string>(d, "type", "");
  if (type == "Sequence") {
    const json& list = member(d, "decoders", path);
    for (size_t i = 0; i < list.size(); ++i) parse_decoder(list[i], fmt::format("{}.decoders[{}]", path, i));
  } else if (type == "ByteLevel") {
    decoders.emplace_back(DecKind::ByteLevel);
  } else if (type == "Replace") {
    decoders.emplace_back(DecKind::Replace, string_pattern(member(d, "pattern", path), path),
                          member(d, "content", path).get<std::string>());
  } else if (type == "ByteFallback") {
    decoders.emplace_back(DecKind::ByteFallback);
  } else if (type == "Fuse") {
    decoders.emplace_back(DecKind::Fuse);
  } else if (type == "Strip") {
    DecStep s(DecKind::Strip, member(d, "content", path).get<std::string>());
    s.start = get_or<int>(d, "start", 0);
    s.stop = get_or<int>(d, "stop", 0);
    decoders.push_back(std::move(s));
  } else if (type == "Metaspace") {
    DecStep s(DecKind::Metaspace, get_or<std::string>(d, "replacement", "\xE2\x96\x81"));
    std::string scheme = get_or<std::string>(d, "prepend_scheme", "");
    s.strip_first_space = scheme.empty() ? get_or<bool>(d, "add_prefix_space", true) : scheme != "never";
    decoders.push_back(std::move(s));
  } else {
    fail_input("{}: decoder \"{}\" is not supported (ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, "
               "Sequence are)", path, type);
  }
}

void HfTokenizer::Impl::parse_post_processor(const json& p, const std::string& path) {
  if (p.is_null()) return;
  const std::string type = get_or<std::string>(p, "type", "");
  auto token_id = [&](const std::string& tok) {
    auto it = vocab.find(tok);
    if (it == vocab.end()) fail_input("{}: special token \"{}\" is not in the vocab", path, tok);
    return it->second;
  };
  if (type == "Sequence") {
    const json& list = member(p, "processors", path);
    for (size_t i = 0; i < list.size(); ++i) parse_post_processor(list[i], fmt::format("{}.processors[{}]", path, i));
  } else if (type == "ByteLevel") {
    // offsets only; ids unchanged
  } else if (type == "TemplateProcessing") {
    const json& single = member(p, "single", path);
    const json& specials = get_or<json>(p, "special_tokens", json::object());
    bool seen_sequence = false;
    for (const auto& item : single) {
      if (item.contains("Sequence")) {
        seen_sequence = true;
      } else if (item.contains("SpecialToken")) {
        const std::string name = member(item["SpecialToken"], "id", path).get<std::string>();
        std::vector<int32_t> ids;
        if (specials.contains(name) && specials[name].contains("ids")) ids = specials[name]["ids"].get<std::vector<int32_t>>();
        else ids.push_back(token_id(name));
        auto& dst = seen_sequence ? suffix : prefix;
        dst.insert(dst.end(), ids.begin(), ids.end());
      } else {
        fail_input("{}.single: unexpected item {}", path, item.dump());
      }
    }
  } else if (type == "RobertaProcessing" || type == "BertProcessing") {
    prefix.push_back(token_id(member(p, "cls", path)[0].get<std::string>()));
    suffix.push_back(token_id(member(p, "sep", path)[0].get<std::string>()));
  } else {
    fail_input("{}: post-processor \"{}\" is not supported", path, type);
  }
}

// Splits one section into words as the pre-tokenizer sequence does (no pre-tokenizer: the section is one word).
std::vector<Piece> HfTokenizer::Impl::pre_tokenize(const std::string& section, bool at_start) const {
  std::vector<Piece> pieces{{section, at_start}};
  for (const PreStep& step : pre_tokenizers) {
    std::vector<Piece> next;
    for (Piece& p : pieces) {
      if (step.kind == PreKind::Metaspace) {
        std::string t = p.text;
        replace_all(t, " ", step.replacement);
        const bool prepend = step.prepend == Prepend::Always || (step.prepend == Prepend::First && p.at_start);
        if (prepend && t.compare(0, step.replacement.size(), step.replacement) != 0) t = step.replacement + t;
        if (!step.split) {
          next.push_back({std::move(t), p.at_start});
          continue;
        }
        // MergedWithNext: every replacement character starts a new word.
        size_t begin = 0;
        while (begin < t.size()) {
          size_t end = t.find(step.replacement, begin + 1);
          if (end == std::string::npos) end = t.size();
          next.push_back({t.substr(begin, end - begin), p.at_start && begin == 0});
          begin = end;
        }
        continue;
      }
      std::string text = std::move(p.text);
      if (step.kind == PreKind::ByteLevel && step.add_prefix_space && text.compare(0, 1, " ") != 0) text = " " + text;
      std::vector<std::pair<size_t, size_t>> spans;
      if (step.regex) {
        // Isolated: matches and the text between them are words of their own.
        size_t pos = 0;
        for (auto [b, e] : step.regex->find_all(text)) {
          if (b > pos) spans.emplace_back(pos, b);
          spans.emplace_back(b, e);
          pos = e;
        }
        if (pos < text.size()) spans.emplace_back(pos, text.size());
      } else {
        spans.emplace_back(0, text.size());
      }
      for (auto [b, e] : spans) {
        std::string w = text.substr(b, e - b);
        if (step.kind == PreKind::ByteLevel) {
          std::string mapped;
          for (unsigned char c : w) mapped += byte_map().to_char[c];
          w.swap(mapped);
        }
        next.push_back({std::move(w), p.at_start && b == 0});
      }
    }
    pieces.swap(next);
  }
  return pieces;
}

// BPE of one word, as `tokenizers`' Word::merge_all: symbols start as characters (byte-fallback tokens or
// unk for characters outside the vocab); the adjacent pair with the lowest merge rank merges first,
// leftmost on ties.
void HfTokenizer::Impl::bpe(const std::string& word, std::vector<int32_t>& ids) const {
  if (ignore_merges) {
    auto it = vocab.find(word);
    if (it != vocab.end()) {
      ids.push_back(it->second);
      return;
    }
  }
  struct Symbol {
    int32_t id;
    int32_t prev, next;
    bool alive;
  };
  std::vector<Symbol> sym;
  bool pending_unk = false;  // the last symbol is an unk that fuse_unk may extend
  for (size_t i = 0; i < word.size();) {
    const size_t n = utf8_char_len(word, i);
    auto it = vocab.find(word.substr(i, n));
    if (it != vocab.end()) {
      sym.push_back({it->second, 0, 0, true});
      pending_unk = false;
    } else if (byte_fallback && std::all_of(word.begin() + i, word.begin() + i + n,
                                            [&](char c) { return byte_ids[static_cast<unsigned char>(c)] >= 0; })) {
      for (size_t k = 0; k < n; ++k) sym.push_back({byte_ids[static_cast<unsigned char>(word[i + k])], 0, 0, true});
      pending_unk = false;
    } else if (unk_id >= 0) {
      if (!(fuse_unk && pending_unk)) sym.push_back({unk_id, 0, 0, true});
      pending_unk = true;
    }  // without an unk token the character is dropped, as in `tokenizers`
    i += n;
  }
  const int32_t count = static_cast<int32_t>(sym.size());
  for (int32_t k = 0; k < count; ++k) {
    sym[k].prev = k - 1;
    sym[k].next = k + 1 < count ? k + 1 : -1;
  }
  struct Cand {
    int32_t rank, pos, new_id;
  };
  auto worse = [](const Cand& a, const Cand& b) { return a.rank > b.rank || (a.rank == b.rank && a.pos > b.pos); };
  std::priority_queue<Cand, std::vector<Cand>, decltype(worse)> queue(worse);
  auto push = [&](int32_t l) {
    if (l < 0 || sym[l].next < 0) return;
    auto it = merges.find(pair_key(sym[l].id, sym[sym[l].next].id));
    if (it != merges.end()) queue.push({it->second.first, l, it->second.second});
  };
  for (int32_t k = 0; k + 1 < count; ++k) push(k);
  while (!queue.empty()) {
    const Cand c = queue.top();
    queue.pop();
    Symbol& l = sym[c.pos];
    if (!l.alive || l.next < 0) continue;
    Symbol& r = sym[l.next];
    auto it = merges.find(pair_key(l.id, r.id));
    if (it == merges.end() || it->second.second != c.new_id || it->second.first != c.rank) continue;  // stale
    l.id = c.new_id;
    r.alive = false;
    l.next = r.next;
    if (r.next >= 0) sym[r.next].prev = c.pos;
    push(l.prev);
    push(c.pos);
  }
  for (int32_t k = count ? 0 : -1; k >= 0; k = sym[k].next) ids.push_back(sym[k].id);
}

void HfTokenizer::Impl::encode_section(const std::string& raw, bool at_start,
                                       std::unordered_map<std::string, std::vector<int32_t>>& cache,
                                       std::vector<int32_t>& ids) const {
  std::string text = raw;
  for (const NormStep& n : normalizers) {
    switch (n.kind) {
      case NormKind::Nfc: text = nfc(text); break;
      case NormKind::Prepend: if (!text.empty()) text = n.a + text; break;
      case NormKind::Replace: replace_all(text, n.a, n.b); break;
    }
  }
  if (text.empty()) return;
  for (const Piece& p : pre_tokenize(text, at_start)) {
    if (p.text.empty()) continue;
    auto it = cache.find(p.text);
    if (it == cache.end()) {
      std::vector<int32_t> part;
      bpe(p.text, part);
      it = cache.emplace(p.text, std::move(part)).first;
    }
    ids.insert(ids.end(), it->second.begin(), it->second.end());
  }
}

HfTokenizer HfTokenizer::load(const std::string& path, const std::string& config_json) {
  return parse(read_text_file(path), config_json, path);
}

HfTokenizer HfTokenizer::parse(const std::string& json_text, const std::string& config_json, const std::string& where) {
  auto impl = std::make_shared<Impl>();
  Impl& t = *impl;
  t.where = where;
  json j, cfg;
  try {
    j = json::parse(json_text);
    if (!config_json.empty()) cfg = json::parse(config_json);
  } catch (const json::exception& e) {
    fail_input("{}: not valid JSON ({})", where, e.what());
  }
  try {
    t.parse_model(member(j, "model", where));
    // Added tokens extend or override the model's vocab.
    if (j.contains("added_tokens")) {
      for (size_t i = 0; i < j["added_tokens"].size(); ++i) {
        const json& a = j["added_tokens"][i];
        const std::string path = fmt::format("{}: added_tokens[{}]", where, i);
        AddedToken tok{member(a, "content", path).get<std::string>(), token_id(member(a, "id", path), path + ".id"),
                       get_or<bool>(a, "special", false), get_or<bool>(a, "lstrip", false),
                       get_or<bool>(a, "rstrip", false)};
        if (tok.content.empty() || tok.id < 0) fail_input("{}: empty content or negative id", path);
        if (get_or<bool>(a, "single_word", false))
          fail_input("{}: \"{}\" has single_word, which is not supported", path, tok.content);
        t.vocab[tok.content] = tok.id;
        if (static_cast<size_t>(tok.id) >= t.id_to_token.size()) t.id_to_token.resize(static_cast<size_t>(tok.id) + 1);
        t.id_to_token[tok.id] = tok.content;
        t.added.push_back(tok);
      }
    }
    std::stable_sort(t.added.begin(), t.added.end(),
                     [](const AddedToken& a, const AddedToken& b) { return a.content.size() > b.content.size(); });
    for (size_t i = 0; i < t.added.size(); ++i) t.added_by_byte[static_cast<unsigned char>(t.added[i].content[0])].push_back(i);
    t.is_special.assign(t.id_to_token.size(), false);
    for (const AddedToken& a : t.added) t.is_special[a.id] = a.special;

    t.parse_normalizer(get_or<json>(j, "normalizer", json()), where + ": normalizer");
    t.parse_pre_tokenizer(get_or<json>(j, "pre_tokenizer", json()), where + ": pre_tokenizer");
    t.parse_decoder(get_or<json>(j, "decoder", json()), where + ": decoder");
    t.parse_post_processor(get_or<json>(j, "post_processor", json()), where + ": post_processor");
  } catch (const json::exception& e) {
    fail_input("{}: unexpected structure ({})", where, e.what());
  }

  auto id_of = [&](const std::string& tok) {
    auto it = tok.empty() ? t.vocab.end() : t.vocab.find(tok);
    return it == t.vocab.end() ? -1 : it->second;
  };
  // LlamaTokenizerFast (and its relatives) rebuild the template from add_bos_token / add_eos_token; other
  // classes ignore those keys and keep the file's post-processor.
  const std::string cls = cfg.is_object() ? get_or<std::string>(cfg, "tokenizer_class", "") : "";
  const bool rebuilds = cls.rfind("Llama", 0) == 0 || cls.rfind("CodeLlama", 0) == 0 || cls.rfind("Gemma", 0) == 0;
  const int32_t cfg_bos = id_of(config_token(cfg, "bos_token"));
  const int32_t cfg_eos = id_of(config_token(cfg, "eos_token"));
  if (rebuilds) {
    if (cfg.contains("add_bos_token") && cfg["add_bos_token"].is_boolean()) {
      t.prefix.clear();
      if (cfg["add_bos_token"].get<bool>() && cfg_bos >= 0) t.prefix.push_back(cfg_bos);
    }
    if (cfg.contains("add_eos_token") && cfg["add_eos_token"].is_boolean()) {
      t.suffix.clear();
      if (cfg["add_eos_token"].get<bool>() && cfg_eos >= 0) t.suffix.push_back(cfg_eos);
    }
  }
  t.bos = !t.prefix.empty() ? t.prefix.front() : cfg_bos;
  t.eos = cfg_eos;
  const bool byte_level = std::any_of(t.pre_tokenizers.begin(), t.pre_tokenizers.end(),
                                      [](const PreStep& s) { return s.kind == PreKind::ByteLevel; });
  t.model_name = fmt::format("tokenizer.json {}bpe({} tokens, {} merges{})", byte_level ? "byte-level " : "",
                             t.id_to_token.size(), t.merges.size(), t.byte_fallback ? ", byte fallback" : "");
  HfTokenizer out;
  out.impl_ = std::move(impl);
  return out;
}

std::vector<int32_t> HfTokenizer::encode(const std::string& input, bool add_special) const {
  const Impl& t = *impl_;
  const std::string text = sanitize_utf8(input);
  std::vector<int32_t> ids;
  if (add_special) ids = t.prefix;
  std::unordered_map<std::string, std::vector<int32_t>> cache;
  // Cut added tokens out of the raw text; lstrip/rstrip tokens take the whitespace beside them.
  size_t section_begin = 0, i = 0;
  while (i < text.size()) {
    const AddedToken* hit = nullptr;
    for (size_t k : t.added_by_byte[static_cast<unsigned char>(text[i])]) {
      const AddedToken& a = t.added[k];
      if (text.compare(i, a.content.size(), a.content) == 0) {
        hit = &a;
        break;
      }
    }
    if (!hit) {
      ++i;
      continue;
    }
    size_t section_end = i;
    if (hit->lstrip)
      while (section_end > section_begin && is_space(text[section_end - 1])) --section_end;
    t.encode_section(text.substr(section_begin, section_end - section_begin), section_begin == 0, cache, ids);
    ids.push_back(hit->id);
    i += hit->content.size();
    if (hit->rstrip)
      while (i < text.size() && is_space(text[i])) ++i;
    section_begin = i;
  }
  t.encode_section(text.substr(section_begin), section_begin == 0, cache, ids);
  if (add_special) ids.insert(ids.end(), t.suffix.begin(), t.suffix.end());
  return ids;
}

std::string HfTokenizer::decode(const std::vector<int32_t>& ids) const {
  const Impl& t = *impl_;
  std::vector<std::string> toks;
  for (int32_t id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= t.id_to_token.size() || t.is_special[id]) continue;
    toks.push_back(t.id_to_token[id]);
  }
  for (const DecStep& d : t.decoders) {
    switch (d.kind) {
      case DecKind::ByteLevel: {
        // Characters of the byte map become their bytes; a token holding any other character stays as it is.
        std::string bytes;
        for (const std::string& tok : toks) {
          std::string b;
          bool mapped = true;
          for (size_t i = 0; i < tok.size() && mapped;) {
            const size_t n = utf8_char_len(tok, i);
            auto it = byte_map().to_byte.find(tok.substr(i, n));
            if (it == byte_map().to_byte.end()) mapped = false;
            else b += static_cast<char>(it->second);
            i += n;
          }
          bytes += mapped ? b : tok;
        }
        toks = {sanitize_utf8(bytes)};
        break;
      }
      case DecKind::Replace:
        for (std::string& tok : toks) replace_all(tok, d.a, d.b);
        break;
      case DecKind::ByteFallback: {
        std::vector<std::string> out;
        std::string pending;
        auto flush = [&] {
          if (pending.empty()) return;
          // Valid UTF-8 joins as text; otherwise every byte is one U+FFFD, as in `tokenizers`.
          if (sanitize_utf8(pending) == pending) out.push_back(pending);
          else for (size_t k = 0; k < pending.size(); ++k) out.push_back("\xEF\xBF\xBD");
          pending.clear();
        };
        for (const std::string& tok : toks) {
          unsigned v = 0;
          if (tok.size() == 6 && tok.compare(0, 3, "<0x") == 0 && tok[5] == '>' &&
              std::sscanf(tok.c_str() + 3, "%2X", &v) == 1) {
            pending += static_cast<char>(v);
          } else {
            flush();
            out.push_back(tok);
          }
        }
        flush();
        toks.swap(out);
        break;
      }
      case DecKind::Fuse: {
        std::string all;
        for (const std::string& tok : toks) all += tok;
        toks = {all};
        break;
      }
      case DecKind::Strip:
        for (std::string& tok : toks) {
          size_t b = 0, e = tok.size();
          for (int k = 0; k < d.start && tok.compare(b, d.a.size(), d.a) == 0; ++k) b += d.a.size();
          for (int k = 0; k < d.stop && e >= b + d.a.size() && tok.compare(e - d.a.size(), d.a.size(), d.a) == 0; ++k)
            e -= d.a.size();
          tok = tok.substr(b, e - b);
        }
        break;
      case DecKind::Metaspace:
        for (size_t k = 0; k < toks.size(); ++k) {
          replace_all(toks[k], d.a, " ");
          if (k == 0 && d.strip_first_space && !toks[k].empty() && toks[k][0] == ' ') toks[k].erase(0, 1);
        }
        break;
    }
  }
  std::string out;
  for (const std::string& tok : toks) out += tok;
  return out;
}

std::string HfTokenizer::token(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < impl_->id_to_token.size() ? impl_->id_to_token[id] : std::string();
}

int32_t HfTokenizer::id(const std::string& token) const {
  auto it = impl_->vocab.find(token);
  return it == impl_->vocab.end() ? -1 : it->second;
}

int64_t HfTokenizer::vocab_size() const { return static_cast<int64_t>(impl_->id_to_token.size()); }
int32_t HfTokenizer::bos_id() const { return impl_->bos; }
int32_t HfTokenizer::eos_id() const { return impl_->eos; }
bool HfTokenizer::adds_special() const { return !impl_->prefix.empty() || !impl_->suffix.empty(); }
std::string HfTokenizer::describe() const { return impl_->model_name; }

}  // namespace ptq
