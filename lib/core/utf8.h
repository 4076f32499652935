// UTF-8 well-formedness (Unicode Table 3-7: no overlong forms, no surrogates, nothing past U+10FFFF), one
// definition for every reader that must tell text from bytes: user texts, recipes, tokenizer.json, error messages.
#pragma once

#include <cstddef>
#include <string_view>

namespace ptq {

// Length of the well-formed sequence starting at s[i] (1-4), or 0 when none starts there (including a sequence
// cut by the end of `s`).
size_t utf8_seq_len(std::string_view s, size_t i);

// Offset of the first byte that does not start a well-formed sequence, or std::string_view::npos.
size_t first_invalid_utf8(std::string_view s);

}  // namespace ptq
