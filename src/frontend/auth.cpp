// API keys for the OpenAI routes (see auth.h).
#include "frontend/auth.h"

#include <cctype>

namespace tandem::frontend {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// A key travels as one header token: no separators (a comma would split TANDEM_API_KEY and a
// --api-key passed on by `tandem serve`), no blanks, no control bytes.
bool valid_key(std::string_view key) {
  for (char c : key) {
    const auto u = static_cast<unsigned char>(c);
    if (c == ',' || c == ' ' || c == '\t' || u < 0x20 || u == 0x7f) return false;
  }
  return true;
}

}  // namespace

bool constant_time_equals(std::string_view presented, std::string_view key) {
  // volatile: the compiler may neither stop the loop once a difference is known nor skip bytes.
  volatile unsigned char diff = presented.size() == key.size() ? 0 : 1;
  const size_t n = presented.size();
  for (size_t i = 0; i < key.size(); ++i) {
    // The branch is on the presented length, which the client knows. A shorter token is compared as
    // if padded with zero bytes; its length already counts as a difference.
    const unsigned char p = i < n ? static_cast<unsigned char>(presented[i]) : 0;
    diff = static_cast<unsigned char>(diff | (p ^ static_cast<unsigned char>(key[i])));
  }
  return diff == 0;
}

StatusOr<std::vector<std::string>> resolve_api_keys(const std::vector<std::string>& flag_values, const char* env_value) {
  std::vector<std::string> keys;
  if (!flag_values.empty()) {
    for (size_t i = 0; i < flag_values.size(); ++i) {
      const std::string_view key = trim(flag_values[i]);
      if (key.empty()) return Status::InvalidArgument("--api-key: key " + std::to_string(i + 1) + " is empty");
      if (!valid_key(key)) {
        return Status::InvalidArgument("--api-key: key " + std::to_string(i + 1) +
                                       " holds a comma, a blank or a control character");
      }
      keys.emplace_back(key);
    }
    return keys;
  }
  if (env_value == nullptr) return keys;
  const std::string_view all(env_value);
  size_t start = 0;
  for (int index = 1;; ++index) {
    const size_t comma = all.find(',', start);
    const std::string_view key = trim(all.substr(start, comma == std::string_view::npos ? comma : comma - start));
    if (!key.empty()) {
      if (!valid_key(key)) {
        return Status::InvalidArgument("TANDEM_API_KEY: entry " + std::to_string(index) +
                                       " holds a blank or a control character");
      }
      keys.emplace_back(key);
    }
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return keys;
}

std::optional<std::string_view> bearer_token(const HttpRequest& request) {
  const std::string* header = request.header("authorization");
  if (!header) return std::nullopt;
  std::string_view value = trim(*header);
  constexpr std::string_view kScheme = "bearer";
  if (value.size() < kScheme.size()) return std::nullopt;
  for (size_t i = 0; i < kScheme.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(value[i])) != kScheme[i]) return std::nullopt;
  }
  value.remove_prefix(kScheme.size());
  if (!value.empty() && value.front() != ' ' && value.front() != '\t') return std::nullopt;  // "Bearerx"
  return trim(value);
}

std::optional<ApiError> ApiKeys::check(const HttpRequest& request, const std::string& also_accepted) const {
  if (keys_.empty()) return std::nullopt;
  const std::optional<std::string_view> token = bearer_token(request);
  if (!token) return ApiError::unauthorized("Missing bearer token: send Authorization: Bearer <API key>");
  bool match = false;
  for (const auto& key : keys_) match = constant_time_equals(*token, key) | match;
  if (!also_accepted.empty()) match = constant_time_equals(*token, also_accepted) | match;
  if (!match) return ApiError::unauthorized("Invalid API key");
  return std::nullopt;
}

const HttpHeaders& unauthorized_headers() {
  static const HttpHeaders headers = {{"WWW-Authenticate", "Bearer"}};
  return headers;
}

}  // namespace tandem::frontend
