// JSON text written straight into a string, byte for byte what nlohmann::json::dump() writes (no
// indent, UTF-8 passed through, object keys in the order the json holds them), for the stream chunks
// the frontend writes once per token: building a json tree per chunk and dumping it cost ~10% of the
// frontend's CPU (bench/results/2026-12-02-cpu-serve-overhead/).
//
// Thread-safety: free functions over the caller's string.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace tandem::frontend {

// Appends `text` as a JSON string. Text that is not valid UTF-8 goes through nlohmann, which throws
// its type_error (316), as dump() would.
void append_json_string(std::string* out, std::string_view text);
// Appends `value` as dump() writes it.
void append_json(std::string* out, const nlohmann::json& value);
// Appends a decimal integer.
void append_json_int(std::string* out, int64_t value);

}  // namespace tandem::frontend
