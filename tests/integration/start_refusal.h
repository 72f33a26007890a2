// The check every "a bad flag or credential fails the start" test makes: `tandem frontend` and
// `tandem worker` given the same arguments must each exit non-zero within 30 s (never hang) with
// every expected phrase in their output.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "harness.h"

namespace tandem::testing {

// Runs `tandem frontend --port 0 ARGS` and `tandem worker --engine fake WORKER_ARGS ARGS`, expects each
// refused as above, and returns their outputs (for checks of what must not appear, a password say).
inline std::vector<std::string> expect_start_refused(const std::string& args, const std::vector<std::string>& expect,
                                                     const std::string& worker_args = "") {
  std::vector<std::string> outputs;
  for (const std::string& command : {"frontend --port 0 " + args, "worker --engine fake " + worker_args + args}) {
    int status = 0;
    const auto start = std::chrono::steady_clock::now();
    const std::string out = shell("timeout -k 5 60 " + tandem_binary() + " " + command + " 2>&1", &status);
    EXPECT_NE(status, 0) << command << ": " << out;
    EXPECT_NE(status, 124) << command << ": still running after 60 s";
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30)) << command;
    for (const auto& words : expect) EXPECT_NE(out.find(words), std::string::npos) << command << ": " << out;
    outputs.push_back(out);
  }
  return outputs;
}

}  // namespace tandem::testing
