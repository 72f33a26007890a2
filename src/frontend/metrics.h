// Prometheus metrics of the frontend, rendered in the text exposition format (version 0.0.4).
// Names follow vLLM's where one exists (vllm:time_to_first_token_seconds, ...) and tandem_* otherwise.
// Thread-safety: none; used from the frontend's I/O thread only.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace tandem::frontend {

// A label set rendered as `{a="x",b="y"}`; "" for none.
std::string labels(const std::vector<std::pair<std::string, std::string>>& pairs);

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}
  void observe(double value);
  void render(std::string& out, const std::string& name, const std::string& label_set) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // [bounds + 1], not cumulative
  double sum_ = 0;
  uint64_t count_ = 0;
};

class Metrics {
 public:
  // Counters and gauges by full series (name + label set).
  void add(const std::string& name, const std::string& label_set, double delta = 1);
  void set(const std::string& name, const std::string& label_set, double value);
  double get(const std::string& name, const std::string& label_set = "") const;
  Histogram& histogram(const std::string& name, const std::string& label_set, const std::vector<double>& bounds);
  // Declares TYPE and HELP for a name.
  void describe(const std::string& name, const std::string& type, const std::string& help);
  // Drops every series of `name` (gauges of workers that left).
  void clear(const std::string& name);
  std::string render() const;

 private:
  struct Family {
    std::string type = "gauge";
    std::string help;
    std::map<std::string, double> values;        // label set -> value
    std::map<std::string, Histogram> histograms;  // label set -> histogram
  };
  std::map<std::string, Family> families_;
};

// Latency buckets in seconds (vLLM's, roughly).
const std::vector<double>& latency_buckets();

}  // namespace tandem::frontend
