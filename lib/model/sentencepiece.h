// SentencePiece BPE models (tokenizer.model), read and run natively.
//
// Why not libsentencepiece: Debian's libsentencepiece0 exports a bundled protobuf 3.14 runtime whose
// symbols collide with LibTorch's libprotobuf 3.21 in one process (a crash at load time). The model file
// is a small protobuf; we parse the fields encoding needs and implement SentencePiece's BPE segmentation
// (highest-scoring adjacent merge first, leftmost on ties; byte fallback for unknown characters).
// Tests compare ids with Debian's `spm_encode` (the real implementation, run as a separate process).
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace ptq {

class SentencePieceModel {
 public:
  // Piece types, numbered as in sentencepiece_model.proto.
  enum class PieceType : uint8_t { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 };

  struct Piece {
    std::string text;
    float score = 0;
    PieceType type = PieceType::Normal;
  };

  // Throws std::invalid_argument naming `path` when the file is not a SentencePiece BPE model it supports.
  static SentencePieceModel load(const std::string& path);
  static SentencePieceModel parse(const std::string& bytes, const std::string& where);

  // Encodes without BOS/EOS.
  std::vector<int32_t> encode(const std::string& text) const;
  std::string decode(const std::vector<int32_t>& ids) const;

  const std::vector<Piece>& pieces() const { return pieces_; }
  int32_t unk_id() const { return unk_id_; }
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  int32_t pad_id() const { return pad_id_; }
  bool byte_fallback() const { return byte_fallback_; }
  bool add_dummy_prefix() const { return add_dummy_prefix_; }

 private:
  std::string normalize(const std::string& text) const;
  // BPE of an already normalized string, appending ids.
  void encode_normalized(const std::string& norm, std::vector<int32_t>& ids) const;

  std::vector<Piece> pieces_;
  std::unordered_map<std::string, int32_t> mergeable_;  // normal pieces: what BPE may produce
  std::unordered_map<std::string, int32_t> reserved_;   // control, unknown and byte pieces
  int32_t byte_ids_[256];
  int32_t unk_id_ = 0, bos_id_ = 1, eos_id_ = 2, pad_id_ = -1;
  bool byte_fallback_ = false;
  bool add_dummy_prefix_ = true, remove_extra_whitespaces_ = true, escape_whitespaces_ = true;
  bool whitespace_as_suffix_ = false;
  bool space_prefix_only_ = false;  // no piece holds "▁" past its first character: encode "▁"-led chunks apart
  std::string unk_surface_ = " \xE2\x81\x87 ";
};

}  // namespace ptq
