// The byte-level alphabet of GPT-2 (Radford et al. 2019, `bytes_to_unicode` in openai/gpt-2
// encoder.py): every byte maps to one printable code point, so that byte-level BPE vocabularies can
// be stored as text. Qwen3 and Llama-3.1 tokenizer.json files spell their tokens in it.
// Thread-safety: immutable tables built once.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tandem::tokenizer {

// The code point that stands for `byte`.
char32_t byte_to_char(uint8_t byte);

// The byte that `cp` stands for, or nullopt when `cp` is not in the alphabet.
std::optional<uint8_t> char_to_byte(char32_t cp);

// Decodes a token spelled in the alphabet into its raw bytes; nullopt if any character of `token`
// is outside the alphabet. REQUIRES: `token` is valid UTF-8.
std::optional<std::string> byte_level_decode(std::string_view token);

}  // namespace tandem::tokenizer
