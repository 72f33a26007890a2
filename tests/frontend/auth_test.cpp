// API keys (auth.h): the constant-time comparison, where keys come from (flags, TANDEM_API_KEY), the
// bearer token of a request, and the 401s of ApiKeys::check.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include "frontend/auth.h"

namespace tandem::frontend {
namespace {

HttpRequest with_authorization(const std::string& value) {
  HttpRequest r;
  r.method = "POST";
  r.path = "/v1/completions";
  r.headers["authorization"] = value;
  return r;
}

TEST(ConstantTimeEquals, EqualOnlyForTheSameBytes) {
  EXPECT_TRUE(constant_time_equals("secret-key", "secret-key"));
  EXPECT_FALSE(constant_time_equals("secret-kez", "secret-key"));
  EXPECT_FALSE(constant_time_equals("Secret-key", "secret-key"));
  EXPECT_FALSE(constant_time_equals("secret-ke", "secret-key"));    // a prefix
  EXPECT_FALSE(constant_time_equals("secret-keyy", "secret-key"));  // longer
  EXPECT_FALSE(constant_time_equals("", "secret-key"));
  EXPECT_FALSE(constant_time_equals(std::string("secret-key\0", 11), "secret-key"));
  // A shorter token is not padded into a match: "ab" against "ab\0".
  EXPECT_FALSE(constant_time_equals("ab", std::string("ab\0", 3)));
  EXPECT_TRUE(constant_time_equals("", ""));
}

// Where the first difference lies must not change the time: an early exit would make a difference in
// the first byte about a million times faster to find than one in the last. The bound is loose (a
// factor of 3 on medians) so that a busy machine does not make it flaky.
TEST(ConstantTimeEquals, TimeDoesNotDependOnWhereTheFirstDifferenceIs) {
  const std::string key(1 << 20, 'k');
  std::string first = key, last = key;
  first.front() = 'x';
  last.back() = 'x';
  auto median_ns = [&](const std::string& presented) {
    std::vector<int64_t> times;
    for (int i = 0; i < 15; ++i) {
      const auto start = std::chrono::steady_clock::now();
      const bool equal = constant_time_equals(presented, key);
      times.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count());
      EXPECT_FALSE(equal);
    }
    std::sort(times.begin(), times.end());
    return static_cast<double>(times[times.size() / 2]);
  };
  const double early = median_ns(first), late = median_ns(last);
  EXPECT_LT(late / early, 3.0) << "first byte differs: " << early << " ns, last byte: " << late << " ns";
  EXPECT_LT(early / late, 3.0) << "first byte differs: " << early << " ns, last byte: " << late << " ns";
}

TEST(ResolveApiKeys, FlagsWinOverTheEnvironment) {
  auto keys = resolve_api_keys({"a1", " b2 "}, "env-key");
  ASSERT_TRUE(keys.ok());
  EXPECT_EQ(*keys, (std::vector<std::string>{"a1", "b2"}));
}

TEST(ResolveApiKeys, EnvironmentHoldsCommaSeparatedKeys) {
  auto keys = resolve_api_keys({}, " k1, k2 ,,k3,");
  ASSERT_TRUE(keys.ok());
  EXPECT_EQ(*keys, (std::vector<std::string>{"k1", "k2", "k3"}));
  auto none = resolve_api_keys({}, nullptr);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  auto blank = resolve_api_keys({}, " , ");
  ASSERT_TRUE(blank.ok());
  EXPECT_TRUE(blank->empty());
}

TEST(ResolveApiKeys, KeysThatCannotTravelInAHeaderAreRefusedWithoutBeingEchoed) {
  auto comma = resolve_api_keys({"ok", "bad,key"}, nullptr);
  ASSERT_FALSE(comma.ok());
  EXPECT_NE(comma.status().message().find("--api-key: key 2"), std::string::npos);
  EXPECT_EQ(comma.status().message().find("bad,key"), std::string::npos);
  EXPECT_FALSE(resolve_api_keys({"with space"}, nullptr).ok());
  EXPECT_FALSE(resolve_api_keys({""}, nullptr).ok());
  auto control = resolve_api_keys({}, "good,bad\x01key");
  ASSERT_FALSE(control.ok());
  EXPECT_NE(control.status().message().find("TANDEM_API_KEY: entry 2"), std::string::npos);
  EXPECT_EQ(control.status().message().find("bad"), std::string::npos);
}

TEST(BearerToken, SchemeIsCaseInsensitiveAndBlanksAreTrimmed) {
  EXPECT_EQ(bearer_token(with_authorization("Bearer abc")), "abc");
  EXPECT_EQ(bearer_token(with_authorization("bearer   abc ")), "abc");
  EXPECT_EQ(bearer_token(with_authorization("BEARER\tabc")), "abc");
  EXPECT_EQ(bearer_token(with_authorization("Bearer")), "");
  EXPECT_FALSE(bearer_token(with_authorization("Bearerabc")).has_value());
  EXPECT_FALSE(bearer_token(with_authorization("Basic YWJj")).has_value());
  EXPECT_FALSE(bearer_token(HttpRequest{}).has_value());
}

TEST(ApiKeys, WithoutKeysEveryRequestPasses) {
  ApiKeys keys;
  EXPECT_FALSE(keys.enabled());
  EXPECT_FALSE(keys.check(HttpRequest{}).has_value());
}

TEST(ApiKeys, AnyOfSeveralKeysPassesAndOthersGet401) {
  ApiKeys keys({"key-one", "key-two"});
  EXPECT_FALSE(keys.check(with_authorization("Bearer key-one")).has_value());
  EXPECT_FALSE(keys.check(with_authorization("Bearer key-two")).has_value());

  auto missing = keys.check(HttpRequest{});
  ASSERT_TRUE(missing.has_value());
  EXPECT_EQ(missing->status, 401);
  EXPECT_NE(missing->message.find("Missing bearer token"), std::string::npos);
  auto body = nlohmann::json::parse(error_body(*missing));
  EXPECT_EQ(body["error"]["type"], "invalid_request_error");
  EXPECT_EQ(body["error"]["code"], 401);

  for (const char* wrong : {"Bearer key-three", "Bearer key-on", "Bearer key-one2", "Bearer ", "Basic key-one"}) {
    auto error = keys.check(with_authorization(wrong));
    ASSERT_TRUE(error.has_value()) << wrong;
    EXPECT_EQ(error->status, 401) << wrong;
  }
  EXPECT_EQ(keys.check(with_authorization("Bearer nope"))->message, "Invalid API key");
}

TEST(ApiKeys, TheAdminTokenIsAcceptedOnlyWhereOffered) {
  ApiKeys keys({"user-key"});
  EXPECT_FALSE(keys.check(with_authorization("Bearer admin"), "admin").has_value());
  EXPECT_TRUE(keys.check(with_authorization("Bearer admin")).has_value());
  EXPECT_TRUE(keys.check(with_authorization("Bearer "), "").has_value());  // an empty admin token is none
}

}  // namespace
}  // namespace tandem::frontend
