#include <gtest/gtest.h>

#include "common/status.h"

namespace tandem {
namespace {

StatusOr<int> parse_positive(int v) {
  if (v <= 0) return Status::InvalidArgument("max_tokens must be >= 1");
  return v;
}

Status chain(int v) {
  TANDEM_RETURN_IF_ERROR(parse_positive(v).status());
  return Status::Ok();
}

TEST(Status, CarriesKindAndMessage) {
  EXPECT_TRUE(Status::Ok().ok());
  Status s = Status::NotFound("model 'x'");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.to_string(), "NotFound: model 'x'");
}

TEST(Status, StatusOrHoldsValueOrError) {
  auto good = parse_positive(3);
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(*good, 3);
  auto bad = parse_positive(-1);
  EXPECT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(chain(-2).message(), "max_tokens must be >= 1");
  EXPECT_TRUE(chain(2).ok());
}

}  // namespace
}  // namespace tandem
