// Prometheus text format parsing (https://prometheus.io/docs/instrumenting/exposition_formats/).
#include "loadgen/server_metrics.h"

#include <cstdlib>
#include <sstream>
#include <vector>

namespace tandem::loadgen {
namespace {

bool wanted_prefix(std::string_view name) {
  return name.rfind("tandem_", 0) == 0 || name.rfind("vllm:", 0) == 0;
}

std::string_view base_name(std::string_view series) { return series.substr(0, series.find('{')); }

}  // namespace

MetricSamples parse_prometheus_counters(std::string_view text) {
  std::map<std::string, std::string, std::less<>> types;  // metric family -> counter|gauge|histogram|...
  MetricSamples samples;
  std::istringstream in{std::string(text)};
  std::string line;
  std::vector<std::pair<std::string, double>> pending;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    if (line[0] == '#') {
      std::istringstream words(line);
      std::string hash, kind, name, type;
      words >> hash >> kind >> name >> type;
      if (kind == "TYPE") types[name] = type;
      continue;
    }
    // "name{labels} value [timestamp]"; label values may contain spaces, so find the end of the labels.
    size_t name_end = line.find_first_of("{ ");
    if (name_end == std::string::npos) continue;
    size_t series_end = name_end;
    if (line[name_end] == '{') {
      bool quoted = false;
      for (size_t i = name_end + 1; i < line.size(); ++i) {
        if (line[i] == '\\') { ++i; continue; }
        if (line[i] == '"') quoted = !quoted;
        if (line[i] == '}' && !quoted) { series_end = i + 1; break; }
      }
      if (series_end == name_end) continue;
    }
    std::string series = line.substr(0, series_end);
    if (!wanted_prefix(series)) continue;
    const char* value_text = line.c_str() + series_end;
    char* end = nullptr;
    double value = std::strtod(value_text, &end);
    if (end == value_text) continue;
    pending.emplace_back(std::move(series), value);
  }
  for (auto& [series, value] : pending) {
    std::string_view name = base_name(series);
    // Find the family's TYPE: the name itself, or without a _total/_sum/_count/_bucket suffix.
    std::string type;
    for (std::string_view suffix : {"", "_total", "_sum", "_count", "_bucket", "_created"}) {
      if (name.size() > suffix.size() && name.substr(name.size() - suffix.size()) == suffix) {
        auto it = types.find(name.substr(0, name.size() - suffix.size()));
        if (it != types.end()) {
          type = it->second;
          if (suffix == "_created" || (type == "histogram" && suffix == "_bucket")) type = "skip";
          break;
        }
      }
    }
    // Untyped series count when named like counters; gauges never do.
    bool counter_like = type == "counter" || type == "histogram" || type == "summary" ||
                        (type.empty() && (name.ends_with("_total") || name.ends_with("_sum") || name.ends_with("_count")));
    if (counter_like) samples[series] = value;
  }
  return samples;
}

MetricSamples metric_deltas(const MetricSamples& before, const MetricSamples& after) {
  MetricSamples deltas;
  for (const auto& [series, value] : after) {
    auto it = before.find(series);
    double delta = value - (it == before.end() ? 0.0 : it->second);
    if (delta != 0.0) deltas[series] = delta;
  }
  return deltas;
}

}  // namespace tandem::loadgen
