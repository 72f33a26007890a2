// Progress of a benchmark run on stderr: a redrawn bar on a terminal, plain periodic lines otherwise (a
// log file or CI keeps readable lines instead of carriage returns). Both show requests done, the
// current completion rate (over the last 3 s), failures, requests in flight and elapsed time.
// Thread-safety: called from the client's I/O thread only.
#pragma once

#include <cstdio>
#include <deque>
#include <string>
#include <utility>

#include "loadgen/openai_client.h"

namespace tandem::loadgen {

enum class ProgressMode { kAuto, kBar, kLines, kNone };

class ProgressPrinter {
 public:
  // kAuto picks kBar when out is a terminal, else kLines. Lines are printed every line_interval_s.
  ProgressPrinter(std::FILE* out, ProgressMode mode, std::string title, double line_interval_s = 5.0);
  void update(const RunProgress& progress);

 private:
  std::FILE* out_;
  ProgressMode mode_;
  std::string title_;
  double line_interval_s_;
  double last_line_s_ = -1e9;
  bool finished_ = false;
  std::deque<std::pair<double, int32_t>> recent_;  // (elapsed_s, completed) over the last few seconds
};

}  // namespace tandem::loadgen
