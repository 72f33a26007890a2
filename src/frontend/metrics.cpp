// Prometheus text rendering (see metrics.h).
#include "frontend/metrics.h"

#include <cmath>
#include <cstdio>

namespace tandem::frontend {

namespace {
std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buffer[64];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buffer, sizeof(buffer), "%.0f", v);
  } else {
    std::snprintf(buffer, sizeof(buffer), "%.9g", v);
  }
  return buffer;
}

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

// Adds one label to a label set: {a="x"} + le="1" -> {a="x",le="1"}.
std::string with_label(const std::string& set, const std::string& pair) {
  if (set.empty()) return "{" + pair + "}";
  return set.substr(0, set.size() - 1) + "," + pair + "}";
}
}  // namespace

std::string labels(const std::vector<std::pair<std::string, std::string>>& pairs) {
  if (pairs.empty()) return "";
  std::string out = "{";
  for (size_t i = 0; i < pairs.size(); ++i) {
    out += (i ? "," : "") + pairs[i].first + "=\"" + escape(pairs[i].second) + "\"";
  }
  return out + "}";
}

void Histogram::observe(double value) {
  size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += value;
  ++count_;
}

void Histogram::render(std::string& out, const std::string& name, const std::string& label_set) const {
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    cumulative += counts_[i];
    std::string le = i < bounds_.size() ? number(bounds_[i]) : "+Inf";
    out += name + "_bucket" + with_label(label_set, "le=\"" + le + "\"") + " " + std::to_string(cumulative) + "\n";
  }
  out += name + "_sum" + label_set + " " + number(sum_) + "\n";
  out += name + "_count" + label_set + " " + std::to_string(count_) + "\n";
}

void Metrics::add(const std::string& name, const std::string& label_set, double delta) {
  families_[name].values[label_set] += delta;
}

void Metrics::set(const std::string& name, const std::string& label_set, double value) {
  families_[name].values[label_set] = value;
}

double Metrics::get(const std::string& name, const std::string& label_set) const {
  auto f = families_.find(name);
  if (f == families_.end()) return 0;
  auto v = f->second.values.find(label_set);
  return v == f->second.values.end() ? 0 : v->second;
}

Histogram& Metrics::histogram(const std::string& name, const std::string& label_set, const std::vector<double>& bounds) {
  auto& family = families_[name];
  family.type = "histogram";
  auto it = family.histograms.find(label_set);
  if (it == family.histograms.end()) it = family.histograms.emplace(label_set, Histogram(bounds)).first;
  return it->second;
}

void Metrics::describe(const std::string& name, const std::string& type, const std::string& help) {
  auto& family = families_[name];
  family.type = type;
  family.help = help;
}

void Metrics::clear(const std::string& name) {
  auto f = families_.find(name);
  if (f != families_.end()) f->second.values.clear();
}

std::string Metrics::render() const {
  std::string out;
  for (const auto& [name, family] : families_) {
    if (!family.help.empty()) out += "# HELP " + name + " " + family.help + "\n";
    out += "# TYPE " + name + " " + family.type + "\n";
    for (const auto& [set, value] : family.values) out += name + set + " " + number(value) + "\n";
    for (const auto& [set, h] : family.histograms) h.render(out, name, set);
  }
  return out;
}

const std::vector<double>& latency_buckets() {
  static const std::vector<double> kBuckets = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5,
                                               0.75,  1.0,   2.5,  5.0,  7.5,  10.0, 20.0, 40.0, 80.0};
  return kBuckets;
}

}  // namespace tandem::frontend
