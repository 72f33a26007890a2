// Progress bar and periodic progress lines.
#include "loadgen/progress.h"

#include <unistd.h>

#include <fmt/format.h>

namespace tandem::loadgen {

ProgressPrinter::ProgressPrinter(std::FILE* out, ProgressMode mode, std::string title, double line_interval_s)
    : out_(out), mode_(mode), title_(std::move(title)), line_interval_s_(line_interval_s) {
  if (mode_ == ProgressMode::kAuto) mode_ = isatty(fileno(out_)) ? ProgressMode::kBar : ProgressMode::kLines;
}

void ProgressPrinter::update(const RunProgress& p) {
  if (mode_ == ProgressMode::kNone || finished_) return;
  const bool done = p.completed >= p.total;
  // The current rate, over a window of the last few seconds; the average over the run once it is done.
  constexpr double kWindowS = 3.0;
  recent_.emplace_back(p.elapsed_s, p.completed);
  while (recent_.size() > 2 && recent_[1].first <= p.elapsed_s - kWindowS) recent_.pop_front();
  const double window_s = p.elapsed_s - recent_.front().first;
  double rate = window_s > 0.2 ? (p.completed - recent_.front().second) / window_s
                               : (p.elapsed_s > 0 ? p.completed / p.elapsed_s : 0.0);
  if (done && p.elapsed_s > 0) rate = p.completed / p.elapsed_s;
  const int elapsed = static_cast<int>(p.elapsed_s);
  const std::string clock = fmt::format("{}:{:02}", elapsed / 60, elapsed % 60);
  if (mode_ == ProgressMode::kBar) {
    constexpr int kWidth = 30;
    const int filled = p.total > 0 ? static_cast<int>(static_cast<int64_t>(kWidth) * p.completed / p.total) : kWidth;
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(kWidth, '.');
    fmt::print(out_, "\r{} [{}] {}/{} req  {:.1f} req/s  {} in flight  {} failed  {}\x1b[K", title_, bar, p.completed,
               p.total, rate, p.in_flight, p.failed, clock);
    if (done) fmt::print(out_, "\n");
  } else if (done || p.elapsed_s - last_line_s_ >= line_interval_s_) {
    last_line_s_ = p.elapsed_s;
    fmt::print(out_, "{}: {}/{} requests done ({} failed), {:.1f} req/s, {} in flight, elapsed {}\n", title_,
               p.completed, p.total, p.failed, rate, p.in_flight, clock);
  }
  std::fflush(out_);
  finished_ = done;
}

}  // namespace tandem::loadgen
