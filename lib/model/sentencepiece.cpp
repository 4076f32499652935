#include "model/sentencepiece.h"

#include <cstring>
#include <queue>

#include "core/error.h"
#include "core/file.h"

namespace ptq {

namespace {

const std::string kSpaceSymbol = "\xE2\x96\x81";  // U+2581 "▁"

// Protobuf wire format, just enough for ModelProto: varints, 32/64-bit fixed, length-delimited fields.
struct WireReader {
  const uint8_t* p;
  const uint8_t* end;
  const std::string& where;

  bool done() const { return p >= end; }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p >= end) fail_input("{}: truncated protobuf varint", where);
      uint8_t b = *p++;
      v |= uint64_t(b & 0x7f) << shift;
      if (b < 0x80) return v;
    }
    fail_input("{}: malformed protobuf varint", where);
  }
  // Reads one field; returns its number and wire type, leaving the payload in `value`/`bytes`.
  void field(uint32_t& number, uint32_t& wire, uint64_t& value, std::string& bytes) {
    uint64_t key = varint();
    number = static_cast<uint32_t>(key >> 3);
    wire = static_cast<uint32_t>(key & 7);
    switch (wire) {
      case 0: value = varint(); break;
      case 1: need(8); std::memcpy(&value, p, 8); p += 8; break;
      case 5: { need(4); uint32_t v; std::memcpy(&v, p, 4); value = v; p += 4; break; }
      case 2: {
        uint64_t n = varint();
        need(n);
        bytes.assign(reinterpret_cast<const char*>(p), n);
        p += n;
        break;
      }
      default: fail_input("{}: unsupported protobuf wire type {} (field {})", where, wire, number);
    }
  }
  void need(uint64_t n) {
    if (uint64_t(end - p) < n) fail_input("{}: truncated protobuf field", where);
  }
};

float as_float(uint64_t bits32) {
  uint32_t b = static_cast<uint32_t>(bits32);
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// Length in bytes of the UTF-8 character starting with `c` (1 for malformed lead bytes).
size_t utf8_len(unsigned char c) {
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) return 2;
  if ((c & 0xF0) == 0xE0) return 3;
  if ((c & 0xF8) == 0xF0) return 4;
  return 1;
}

// 0..15 for a hex digit (either case), else -1.
int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool valid_utf8_char(const std::string& s, size_t i, size_t n) {
  if (n == 1) return static_cast<unsigned char>(s[i]) < 0x80;
  if (i + n > s.size()) return false;
  for (size_t k = 1; k < n; ++k)
    if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
  return true;
}

}  // namespace

SentencePieceModel SentencePieceModel::load(const std::string& path) { return parse(read_text_file(path), path); }

SentencePieceModel SentencePieceModel::parse(const std::string& bytes, const std::string& where) {
  SentencePieceModel m;
  int model_type = 1;  // UNIGRAM is the proto default
  std::string charsmap, norm_name;
  WireReader top{reinterpret_cast<const uint8_t*>(bytes.data()),
                 reinterpret_cast<const uint8_t*>(bytes.data()) + bytes.size(), where};
  uint32_t num, wire;
  uint64_t value;
  std::string payload;
  while (!top.done()) {
    top.field(num, wire, value, payload);
    if (num == 1 && wire == 2) {  // repeated SentencePiece pieces
      Piece piece;
      WireReader r{reinterpret_cast<const uint8_t*>(payload.data()),
                   reinterpret_cast<const uint8_t*>(payload.data()) + payload.size(), where};
      std::string inner;
      while (!r.done()) {
        uint32_t n2, w2;
        uint64_t v2 = 0;
        r.field(n2, w2, v2, inner);
        if (n2 == 1 && w2 == 2) piece.text = inner;
        else if (n2 == 2 && w2 == 5) piece.score = as_float(v2);
        else if (n2 == 3 && w2 == 0) piece.type = static_cast<PieceType>(v2);
      }
      m.pieces_.push_back(std::move(piece));
    } else if (num == 2 && wire == 2) {  // TrainerSpec
      WireReader r{reinterpret_cast<const uint8_t*>(payload.data()),
                   reinterpret_cast<const uint8_t*>(payload.data()) + payload.size(), where};
      std::string inner;
      while (!r.done()) {
        uint32_t n2, w2;
        uint64_t v2 = 0;
        r.field(n2, w2, v2, inner);
        if (w2 == 0) {
          switch (n2) {
            case 3: model_type = static_cast<int>(v2); break;
            case 24: m.whitespace_as_suffix_ = v2 != 0; break;
            case 35: m.byte_fallback_ = v2 != 0; break;
            case 40: m.unk_id_ = static_cast<int32_t>(v2); break;
            case 41: m.bos_id_ = static_cast<int32_t>(v2); break;
            case 42: m.eos_id_ = static_cast<int32_t>(v2); break;
            case 43: m.pad_id_ = static_cast<int32_t>(v2); break;
            default: break;
          }
        } else if (w2 == 2 && n2 == 44) {
          m.unk_surface_ = inner;
        }
      }
    } else if (num == 3 && wire == 2) {  // NormalizerSpec
      WireReader r{reinterpret_cast<const uint8_t*>(payload.data()),
                   reinterpret_cast<const uint8_t*>(payload.data()) + payload.size(), where};
      std::string inner;
      while (!r.done()) {
        uint32_t n2, w2;
        uint64_t v2 = 0;
        r.field(n2, w2, v2, inner);
        if (n2 == 1 && w2 == 2) norm_name = inner;
        else if (n2 == 2 && w2 == 2) charsmap = inner;
        else if (n2 == 3 && w2 == 0) m.add_dummy_prefix_ = v2 != 0;
        else if (n2 == 4 && w2 == 0) m.remove_extra_whitespaces_ = v2 != 0;
        else if (n2 == 5 && w2 == 0) m.escape_whitespaces_ = v2 != 0;
      }
    }
  }
  if (m.pieces_.empty()) fail_input("{}: no pieces (not a SentencePiece model?)", where);
  if (model_type != 2)
    fail_input("{}: SentencePiece model type {} is not supported (only BPE, type 2)", where, model_type);
  if (!charsmap.empty())
    fail_input("{}: normalization \"{}\" with a precompiled character map is not supported (identity only)", where,
               norm_name);
  if (m.whitespace_as_suffix_) fail_input("{}: treat_whitespace_as_suffix is not supported", where);
  const int32_t n = static_cast<int32_t>(m.pieces_.size());
  // encode() emits unk_id for characters without a piece, so it must be one; bos/eos may be -1 (none).
  if (m.unk_id_ < 0 || m.unk_id_ >= n) fail_input("{}: unk_id {} outside the {} pieces", where, m.unk_id_, n);
  for (int32_t* id : {&m.bos_id_, &m.eos_id_})
    if (*id < -1 || *id >= n) fail_input("{}: special token id {} outside the {} pieces", where, *id, n);
  std::fill(std::begin(m.byte_ids_), std::end(m.byte_ids_), -1);
  for (int32_t i = 0; i < n; ++i) {
    const Piece& p = m.pieces_[i];
    const bool mergeable =
        p.type == PieceType::Normal || p.type == PieceType::UserDefined || p.type == PieceType::Unused;
    if (p.type == PieceType::UserDefined || p.type == PieceType::Unused)
      fail_input("{}: user-defined and unused pieces (\"{}\") are not supported yet", where, p.text);
    auto& table = mergeable ? m.mergeable_ : m.reserved_;
    if (!table.emplace(p.text, i).second) fail_input("{}: piece \"{}\" appears twice", where, p.text);
    if (p.type == PieceType::Byte) {
      // Exactly "<0x" two hex digits ">": sscanf's %X would also take a sign ("<0x-1>") and index past the table.
      const int hi = hex_digit(p.text.size() == 6 ? p.text[3] : 0), lo = hex_digit(p.text.size() == 6 ? p.text[4] : 0);
      if (p.text.size() != 6 || p.text.compare(0, 3, "<0x") != 0 || p.text[5] != '>' || hi < 0 || lo < 0)
        fail_input("{}: byte piece \"{}\" is not of the form <0xXX>", where, p.text);
      m.byte_ids_[hi * 16 + lo] = i;
    }
  }
  m.space_prefix_only_ = true;
  for (const auto& [text, id] : m.mergeable_)
    if (text.find(kSpaceSymbol, 1) != std::string::npos) m.space_prefix_only_ = false;
  if (m.byte_fallback_)
    for (int b = 0; b < 256; ++b)
      if (m.byte_ids_[b] < 0) fail_input("{}: byte_fallback is on but piece <0x{:02X}> is missing", where, b);
  return m;
}

// Identity normalization with SentencePiece's whitespace handling: optional removal of leading, trailing
// and repeated spaces, a dummy "▁" prefix, spaces escaped as "▁", invalid UTF-8 bytes replaced by U+FFFD.
std::string SentencePieceModel::normalize(const std::string& text) const {
  std::string out;
  if (text.empty()) return out;
  out.reserve(text.size() + text.size() / 4 + 3);
  size_t i = 0;
  if (remove_extra_whitespaces_)
    while (i < text.size() && text[i] == ' ') ++i;
  if (i == text.size()) return out;
  if (add_dummy_prefix_) out += escape_whitespaces_ ? kSpaceSymbol : " ";
  bool prev_space = remove_extra_whitespaces_;
  while (i < text.size()) {
    size_t n = utf8_len(static_cast<unsigned char>(text[i]));
    if (!valid_utf8_char(text, i, n)) {
      out += "\xEF\xBF\xBD";
      prev_space = false;
      i += 1;
      continue;
    }
    if (text[i] == ' ') {
      if (!(remove_extra_whitespaces_ && prev_space)) out += escape_whitespaces_ ? kSpaceSymbol : " ";
      prev_space = remove_extra_whitespaces_;
    } else {
      out.append(text, i, n);
      prev_space = false;
    }
    i += n;
  }
  if (remove_extra_whitespaces_) {
    const std::string sp = escape_whitespaces_ ? kSpaceSymbol : " ";
    while (out.size() >= sp.size() && out.compare(out.size() - sp.size(), sp.size(), sp) == 0)
      out.resize(out.size() - sp.size());
  }
  return out;
}

std::vector<int32_t> SentencePieceModel::encode(const std::string& text) const {
  const std::string norm = normalize(text);
  std::vector<int32_t> ids;
  if (norm.empty()) return ids;
  if (!space_prefix_only_) {
    encode_normalized(norm, ids);
    return ids;
  }
  // No piece holds "▁" past its first character, so no merge can cross the start of a "▁": segment each
  // "▁"-led chunk on its own (identical result), remembering chunks already seen.
  std::unordered_map<std::string, std::vector<int32_t>> cache;
  size_t begin = 0;
  while (begin < norm.size()) {
    size_t end = norm.find(kSpaceSymbol, begin + 1);
    if (end == std::string::npos) end = norm.size();
    std::string chunk = norm.substr(begin, end - begin);
    auto it = cache.find(chunk);
    if (it == cache.end()) {
      std::vector<int32_t> part;
      encode_normalized(chunk, part);
      it = cache.emplace(std::move(chunk), std::move(part)).first;
    }
    ids.insert(ids.end(), it->second.begin(), it->second.end());
    begin = end;
  }
  return ids;
}

void SentencePieceModel::encode_normalized(const std::string& norm, std::vector<int32_t>& ids) const {
  // Symbols are byte ranges of `norm` in a doubly linked list; start with one symbol per character.
  struct Symbol {
    int32_t prev, next;
    size_t begin, len;
  };
  std::vector<Symbol> sym;
  for (size_t i = 0; i < norm.size();) {
    size_t n = std::min(utf8_len(static_cast<unsigned char>(norm[i])), norm.size() - i);
    int32_t k = static_cast<int32_t>(sym.size());
    sym.push_back({k - 1, k + 1, i, n});
    i += n;
  }
  sym.back().next = -1;

  struct Pair {
    float score;
    int32_t left, right;
    size_t len;  // merged length when queued; stale entries no longer match
  };
  auto worse = [](const Pair& a, const Pair& b) {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  };
  std::priority_queue<Pair, std::vector<Pair>, decltype(worse)> agenda(worse);
  std::string key;
  auto try_pair = [&](int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    key.assign(norm, sym[l].begin, sym[l].len + sym[r].len);
    auto it = mergeable_.find(key);
    if (it == mergeable_.end()) return;
    agenda.push({pieces_[it->second].score, l, r, key.size()});
  };
  for (size_t i = 0; i + 1 < sym.size(); ++i) try_pair(static_cast<int32_t>(i), static_cast<int32_t>(i + 1));
  while (!agenda.empty()) {
    Pair top = agenda.top();
    agenda.pop();
    Symbol& l = sym[top.left];
    Symbol& r = sym[top.right];
    if (l.len == 0 || r.len == 0 || l.next != top.right || l.len + r.len != top.len) continue;
    l.len += r.len;
    l.next = r.next;
    if (r.next >= 0) sym[r.next].prev = top.left;
    r.len = 0;
    try_pair(l.prev, top.left);
    try_pair(top.left, l.next);
  }

  for (int32_t k = 0; k >= 0; k = sym[k].next) {
    key.assign(norm, sym[k].begin, sym[k].len);
    auto it = mergeable_.find(key);
    if (it != mergeable_.end()) {
      ids.push_back(it->second);
    } else if (byte_fallback_) {
      for (unsigned char c : key) ids.push_back(byte_ids_[c]);
    } else {
      ids.push_back(unk_id_);
    }
  }
}

std::string SentencePieceModel::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) {
    if (id < 0 || id >= static_cast<int32_t>(pieces_.size())) continue;
    const Piece& p = pieces_[id];
    switch (p.type) {
      case PieceType::Control: break;
      case PieceType::Unknown: out += unk_surface_; break;
      case PieceType::Byte: out += static_cast<char>(std::strtol(p.text.c_str() + 3, nullptr, 16)); break;
      default: out += p.text; break;
    }
  }
  // Unescape "▁" and drop the dummy prefix.
  std::string text;
  text.reserve(out.size());
  for (size_t i = 0; i < out.size();) {
    if (out.compare(i, kSpaceSymbol.size(), kSpaceSymbol) == 0) {
      text += ' ';
      i += kSpaceSymbol.size();
    } else {
      text += out[i++];
    }
  }
  if (add_dummy_prefix_ && !text.empty() && text[0] == ' ') text.erase(0, 1);
  return text;
}

}  // namespace ptq
