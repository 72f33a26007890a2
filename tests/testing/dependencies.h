// Tests that need something outside the build (etcd, nats-server, node packages, chromium, the
// tokenizer data of scripts/fetch_data.sh): on a developer's machine a missing one skips the test, in
// CI (CI=true, as GitHub Actions and GitLab set it) it fails the test, so CI never passes by skipping
// what it was meant to run. GPU tests are kept out of CI by their ctest label, not by this.
// Thread-safety: reads the environment only; call from the test's thread (GTEST_SKIP/FAIL return).
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

namespace tandem::testing {

// True when a missing dependency must fail the test: $CI is set to anything but "", "0" or "false".
inline bool missing_dependency_fails() {
  const char* ci = std::getenv("CI");
  if (ci == nullptr) return false;
  const std::string v = ci;
  return !v.empty() && v != "0" && v != "false";
}

}  // namespace tandem::testing

// When `missing` is true: fails the test in CI, skips it elsewhere; either way returns from the
// calling function (GTEST_FAIL / GTEST_SKIP), so use it where those may be used (a test body, SetUp, a
// void helper). `what` is streamed into the message: name the dependency and how to get it.
#define TANDEM_SKIP_OR_FAIL_IF_MISSING(missing, what)                                           \
  do {                                                                                          \
    if (missing) {                                                                              \
      if (::tandem::testing::missing_dependency_fails()) {                                      \
        GTEST_FAIL() << "missing dependency (CI=true, so this fails instead of skipping): " << what; \
      } else {                                                                                  \
        GTEST_SKIP() << "missing dependency: " << what;                                         \
      }                                                                                         \
    }                                                                                           \
  } while (0)
