// API keys for the OpenAI routes (issue 20): which keys a frontend accepts (--api-key, repeatable, or
// TANDEM_API_KEY with several keys separated by commas), and the check of a request's
// "Authorization: Bearer KEY" against them. The comparison takes a time that does not depend on where
// the presented token first differs from a key, nor on which key it matches, so that timing cannot
// reveal a key byte by byte. Keys are never logged: only their number is.
//
// Ownership: ApiKeys owns copies of the keys.
// Thread-safety: ApiKeys is immutable after construction; its methods may be called from any thread.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "frontend/http.h"
#include "frontend/openai.h"

namespace tandem::frontend {

// True when `presented` equals `key`. Every byte of `key` is visited whatever `presented` holds, with
// no branch on their contents: the time depends on key.size() only (which is fixed per server and
// unavoidable to reveal), never on the presented bytes or the position of the first difference.
bool constant_time_equals(std::string_view presented, std::string_view key);

// The keys a frontend accepts: the --api-key values when any is given, else TANDEM_API_KEY's
// comma-separated entries (`env_value`, null when unset), surrounding blanks trimmed and empty
// entries skipped. An error (naming the flag or the variable, never echoing the key) for a key that
// could not be sent in an HTTP header: one with a comma, a blank or a control character inside.
StatusOr<std::vector<std::string>> resolve_api_keys(const std::vector<std::string>& flag_values,
                                                    const char* env_value);

// The token of an "Authorization: Bearer TOKEN" header (the scheme case-insensitive, as RFC 6750
// allows); nullopt when the header is absent or names another scheme.
std::optional<std::string_view> bearer_token(const HttpRequest& request);

class ApiKeys {
 public:
  ApiKeys() = default;
  explicit ApiKeys(std::vector<std::string> keys) : keys_(std::move(keys)) {}
  bool enabled() const { return !keys_.empty(); }
  size_t size() const { return keys_.size(); }
  // Whether `request` may use a /v1/* route: always when no key is set; else when its bearer token
  // equals one of the keys or `also_accepted` (when non-empty; the admin token on the admin route).
  // Every key is compared, matched or not. Else the 401 to answer: "Missing bearer token" without an
  // Authorization header, "Invalid API key" with a wrong one.
  std::optional<ApiError> check(const HttpRequest& request, const std::string& also_accepted = "") const;

 private:
  std::vector<std::string> keys_;
};

// The headers a 401 from check() goes out with (RFC 6750's challenge).
const HttpHeaders& unauthorized_headers();

}  // namespace tandem::frontend
