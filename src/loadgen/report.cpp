// HTML report of benchmark results, with the charting library inlined so the page needs no network.
#include "loadgen/report.h"

#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#ifndef TANDEM_SOURCE_DATA_DIR
#define TANDEM_SOURCE_DATA_DIR ""
#endif

namespace tandem::loadgen {
namespace {

constexpr const char* kChartjsRelative = "npm/node_modules/chart.js/dist/chart.umd.min.js";
constexpr size_t kMaxCdfPoints = 200;

std::string read_file(const std::string& path, bool& ok) {
  std::ifstream in(path, std::ios::binary);
  ok = static_cast<bool>(in);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

std::string html_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// A rate as written in the result file ("inf" or a number) -> its label and sort key.
std::pair<std::string, double> rate_of(const nlohmann::json& value) {
  if (value.is_number()) return {fmt::format("{:g}", value.get<double>()), value.get<double>()};
  return {"inf", INFINITY};
}

nlohmann::json cdf_points(std::vector<double> values) {
  nlohmann::json points = nlohmann::json::array();
  if (values.empty()) return points;
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  const size_t m = std::min(n, kMaxCdfPoints);
  for (size_t k = 0; k < m; ++k) {
    size_t index = m == 1 ? n - 1 : static_cast<size_t>(std::llround(static_cast<double>(k) * (n - 1) / (m - 1)));
    points.push_back({{"x", values[index]}, {"y", static_cast<double>(index + 1) / static_cast<double>(n)}});
  }
  return points;
}

// The latency keys of a run in display order: mean, median, then pNN by N.
std::vector<std::pair<std::string, std::string>> latency_keys(const nlohmann::json& run, const std::string& metric) {
  std::vector<std::pair<std::string, std::string>> keys = {{"mean", "mean_" + metric + "_ms"},
                                                           {"median", "median_" + metric + "_ms"}};
  std::vector<std::pair<double, std::string>> ps;
  const std::string suffix = "_" + metric + "_ms";
  for (const auto& [key, value] : run.items()) {
    if (key.size() > suffix.size() + 1 && key[0] == 'p' && key.ends_with(suffix)) {
      std::string p = key.substr(1, key.size() - 1 - suffix.size());
      ps.emplace_back(std::strtod(p.c_str(), nullptr), key);
    }
  }
  std::sort(ps.begin(), ps.end());
  for (const auto& [p, key] : ps) keys.emplace_back(key.substr(0, key.size() - suffix.size()), key);
  return keys;
}

}  // namespace

StatusOr<std::string> find_chartjs(const std::string& flag_value) {
  std::vector<std::string> candidates;
  if (!flag_value.empty()) {
    candidates.push_back(flag_value);
  } else {
    if (const char* env = std::getenv("TANDEM_CHARTJS"); env != nullptr && *env != '\0') candidates.push_back(env);
    std::error_code ec;
    std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (!ec) {
      candidates.push_back((exe.parent_path() / "data" / kChartjsRelative).string());
      candidates.push_back((exe.parent_path().parent_path() / "data" / kChartjsRelative).string());
    }
    if (std::string(TANDEM_SOURCE_DATA_DIR).size() > 0) {
      candidates.push_back((std::filesystem::path(TANDEM_SOURCE_DATA_DIR) / kChartjsRelative).string());
    }
  }
  for (const std::string& path : candidates) {
    bool ok = false;
    std::string source = read_file(path, ok);
    if (ok && !source.empty()) return source;
  }
  std::string looked;
  for (const std::string& path : candidates) looked += (looked.empty() ? "" : ", ") + path;
  return Status::NotFound("Chart.js not found (looked at " + looked + "); run scripts/fetch_data.sh or pass --chartjs");
}

StatusOr<nlohmann::json> build_report_data(const std::vector<std::string>& result_paths, const std::string& title) {
  struct File {
    std::string label;
    nlohmann::json doc;
  };
  std::vector<File> files;
  std::map<std::string, int> label_uses;
  for (const std::string& path : result_paths) {
    bool ok = false;
    std::string text = read_file(path, ok);
    if (!ok) return Status::NotFound("cannot read '" + path + "'");
    nlohmann::json doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (!doc.is_object() || !doc.contains("format") || !doc["format"].is_string() ||
        doc["format"].get<std::string>().rfind("tandem-bench-serve/", 0) != 0 || !doc.contains("runs") ||
        !doc["runs"].is_array()) {
      return Status::InvalidArgument("'" + path + "' is not a result file of tandem bench serve --save-result");
    }
    std::string label = doc.value("label", "");
    if (label.empty()) label = std::filesystem::path(path).stem().string();
    if (int uses = ++label_uses[label]; uses > 1) label += fmt::format(" ({})", uses);
    files.push_back({label, std::move(doc)});
  }

  // The union of the rates, numbers ascending and inf last: the x axis of the rate plots.
  std::map<double, std::string> rate_axis;
  for (const File& f : files) {
    for (const auto& run : f.doc["runs"]) {
      auto [label, value] = rate_of(run.value("request_rate", nlohmann::json("inf")));
      rate_axis[value] = label;
    }
  }
  nlohmann::json labels = nlohmann::json::array();
  std::map<std::string, size_t> rate_index;
  for (const auto& [value, label] : rate_axis) {
    rate_index[label] = labels.size();
    labels.push_back(label);
  }

  auto rate_chart = [&](const std::string& id, const std::string& chart_title, const std::string& y_title) {
    return nlohmann::json{{"id", id}, {"title", chart_title}, {"x_type", "category"}, {"x_title", "request rate (req/s)"},
                          {"y_title", y_title}, {"labels", labels}, {"datasets", nlohmann::json::array()}};
  };
  auto xy_chart = [&](const std::string& id, const std::string& chart_title, const std::string& x_title,
                      const std::string& y_title) {
    return nlohmann::json{{"id", id}, {"title", chart_title}, {"x_type", "linear"}, {"x_title", x_title},
                          {"y_title", y_title}, {"labels", nlohmann::json::array()}, {"datasets", nlohmann::json::array()}};
  };
  nlohmann::json ttft = rate_chart("ttft_vs_rate", "TTFT against request rate", "TTFT (ms)");
  nlohmann::json tpot = rate_chart("tpot_vs_rate", "TPOT against request rate", "TPOT (ms)");
  nlohmann::json goodput = rate_chart("goodput_vs_rate", "Goodput and request throughput against request rate", "req/s");
  nlohmann::json ttft_cdf = xy_chart("ttft_cdf", "TTFT distribution (CDF)", "TTFT (ms)", "fraction of requests");
  nlohmann::json tpot_cdf = xy_chart("tpot_cdf", "TPOT distribution (CDF)", "TPOT (ms)", "fraction of requests");
  nlohmann::json e2el_cdf = xy_chart("e2el_cdf", "End-to-end latency distribution (CDF)", "E2E latency (ms)", "fraction of requests");
  nlohmann::json timeline = xy_chart("throughput_timeline", "Output throughput over time", "time since run start (s)", "output tokens/s");
  for (nlohmann::json* chart : {&ttft_cdf, &tpot_cdf, &e2el_cdf}) (*chart)["log_toggle"] = true;
  nlohmann::json summary = nlohmann::json::array();

  size_t run_series = 0;  // colour of each per-run series: every series its own, the file's by dash
  for (size_t fi = 0; fi < files.size(); ++fi) {
    const File& f = files[fi];
    const nlohmann::json& runs = f.doc["runs"];
    if (runs.empty()) continue;
    auto add_rate_series = [&](nlohmann::json& chart, const std::string& metric) {
      int dash = 0;
      for (const auto& [name, key] : latency_keys(runs[0], metric)) {
        nlohmann::json data(labels.size(), nullptr);
        for (const auto& run : runs) {
          if (run.contains(key)) data[rate_index[rate_of(run["request_rate"]).first]] = run[key];
        }
        chart["datasets"].push_back({{"label", f.label + " " + name}, {"data", data}, {"color", fi}, {"dash", dash++}});
      }
    };
    add_rate_series(ttft, "ttft");
    add_rate_series(tpot, "tpot");
    bool has_goodput = false;
    nlohmann::json good(labels.size(), nullptr), thr(labels.size(), nullptr);
    for (const auto& run : runs) {
      size_t i = rate_index[rate_of(run["request_rate"]).first];
      if (run.contains("request_goodput") && run["request_goodput"].is_number()) {
        good[i] = run["request_goodput"];
        has_goodput = true;
      }
      thr[i] = run.value("request_throughput", 0.0);
    }
    if (has_goodput) goodput["datasets"].push_back({{"label", f.label + " goodput"}, {"data", good}, {"color", fi}, {"dash", 0}});
    goodput["datasets"].push_back({{"label", f.label + " request throughput"}, {"data", thr}, {"color", fi}, {"dash", 1}});

    const size_t dash = fi;
    for (const auto& run : runs) {
      const std::string series = f.label + " @ " + rate_of(run["request_rate"]).first;
      const size_t color = run_series++;
      std::vector<double> ttfts, tpots, e2els;
      for (const auto& q : run.value("requests", nlohmann::json::array())) {
        if (!q.value("success", false)) continue;
        if (q.contains("ttft_ms")) ttfts.push_back(q["ttft_ms"].get<double>());
        if (q.contains("e2el_ms")) e2els.push_back(q["e2el_ms"].get<double>());
        if (q.value("output_tokens", 0) > 1 && q.contains("tpot_ms")) tpots.push_back(q["tpot_ms"].get<double>());
      }
      ttft_cdf["datasets"].push_back({{"label", series}, {"data", cdf_points(ttfts)}, {"color", color}, {"dash", dash}});
      tpot_cdf["datasets"].push_back({{"label", series}, {"data", cdf_points(tpots)}, {"color", color}, {"dash", dash}});
      e2el_cdf["datasets"].push_back({{"label", series}, {"data", cdf_points(e2els)}, {"color", color}, {"dash", dash}});
      nlohmann::json points = nlohmann::json::array();
      if (run.contains("timeline") && run["timeline"].is_object()) {
        const double bucket = run["timeline"].value("bucket_s", 1.0);
        const auto& values = run["timeline"]["output_throughput"];
        for (size_t i = 0; i < values.size(); ++i) points.push_back({{"x", (static_cast<double>(i) + 0.5) * bucket}, {"y", values[i]}});
      }
      timeline["datasets"].push_back({{"label", series}, {"data", points}, {"color", color}, {"dash", dash}});
      summary.push_back({{"series", series},
                         {"completed", run.value("completed", 0)},
                         {"failed", run.value("failed", 0)},
                         {"request_throughput", run.value("request_throughput", 0.0)},
                         {"request_goodput", run.contains("request_goodput") ? run["request_goodput"] : nlohmann::json(nullptr)},
                         {"output_throughput", run.value("output_throughput", 0.0)},
                         {"mean_ttft_ms", run.value("mean_ttft_ms", 0.0)},
                         {"median_tpot_ms", run.value("median_tpot_ms", 0.0)},
                         {"mean_e2el_ms", run.value("mean_e2el_ms", 0.0)}});
    }
  }
  nlohmann::json file_list = nlohmann::json::array();
  for (size_t i = 0; i < files.size(); ++i) {
    file_list.push_back({{"label", files[i].label}, {"path", result_paths[i]}, {"date", files[i].doc.value("date", "")},
                         {"config", files[i].doc.value("config", nlohmann::json::object())}});
  }
  return nlohmann::json{{"title", title},
                        {"files", file_list},
                        {"charts", {ttft, tpot, goodput, ttft_cdf, tpot_cdf, e2el_cdf, timeline}},
                        {"summary", summary}};
}

namespace {

// Draws every chart of the data block; window.tandemReport.charts maps chart id -> Chart for tests.
constexpr const char* kRenderScript = R"JS(
(function () {
  const report = JSON.parse(document.getElementById('report-data').textContent);
  const palette = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#7f7f7f', '#bcbd22'];
  const dashes = [[], [6, 3], [2, 2], [8, 3, 2, 3], [1, 3], [10, 4]];
  window.tandemReport = { charts: {} };
  const container = document.getElementById('charts');
  for (const spec of report.charts) {
    const section = document.createElement('section');
    section.className = 'chart';
    section.id = 'chart-' + spec.id;
    const heading = document.createElement('h2');
    heading.textContent = spec.title;
    const holder = document.createElement('div');
    holder.className = 'canvas-holder';
    const canvas = document.createElement('canvas');
    canvas.id = 'canvas-' + spec.id;
    holder.appendChild(canvas);
    section.appendChild(heading);
    if (spec.log_toggle) {
      // Latencies can span decades (a queue building up); a log axis keeps both ends readable.
      const toggle = document.createElement('label');
      toggle.className = 'toggle';
      const box = document.createElement('input');
      box.type = 'checkbox';
      box.addEventListener('change', () => {
        const chart = window.tandemReport.charts[spec.id];
        chart.options.scales.x.type = box.checked ? 'logarithmic' : 'linear';
        chart.update();
      });
      toggle.appendChild(box);
      toggle.appendChild(document.createTextNode(' log scale'));
      section.appendChild(toggle);
    }
    section.appendChild(holder);
    container.appendChild(section);
    const datasets = spec.datasets.map(d => ({
      label: d.label,
      data: d.data,
      borderColor: palette[d.color % palette.length],
      backgroundColor: palette[d.color % palette.length],
      borderDash: dashes[d.dash % dashes.length],
      borderWidth: 1.5,
      pointRadius: spec.x_type === 'category' ? 3 : 0,
      spanGaps: true,
      tension: 0,
      fill: false,
    }));
    const chart = new Chart(canvas, {
      type: 'line',
      data: { labels: spec.labels, datasets: datasets },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        interaction: { mode: 'nearest', intersect: false },
        scales: {
          x: { type: spec.x_type, title: { display: true, text: spec.x_title } },
          y: { beginAtZero: true, title: { display: true, text: spec.y_title } },
        },
        plugins: { legend: { position: 'bottom', labels: { usePointStyle: true, pointStyle: 'line' } } },
      },
    });
    window.tandemReport.charts[spec.id] = chart;
  }
  window.tandemReport.ready = true;
})();
)JS";

constexpr const char* kStyle = R"CSS(
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 22px; margin-bottom: 4px; }
h2 { font-size: 15px; margin: 0 0 8px 0; }
#charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 20px; }
.chart { border: 1px solid #ddd; border-radius: 6px; padding: 12px; }
.canvas-holder { position: relative; height: 340px; }
table { border-collapse: collapse; font-size: 13px; margin: 12px 0 20px 0; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
td:first-child, th:first-child { text-align: left; }
.meta { color: #666; font-size: 13px; }
.toggle { font-size: 12px; color: #444; display: block; margin-bottom: 4px; }
)CSS";

}  // namespace

std::string render_report_html(const nlohmann::json& data, const std::string& chartjs_source) {
  std::string json = data.dump();
  // "</" inside a <script> would end it early; "<\/" is the same string in JSON.
  for (size_t pos = 0; (pos = json.find("</", pos)) != std::string::npos; pos += 3) json.replace(pos, 2, "<\\/");
  std::string html;
  html += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>" +
          html_escape(data.value("title", "tandem bench report")) + "</title>\n<style>" + kStyle + "</style>\n";
  html += "<script>\n" + chartjs_source + "\n</script>\n</head>\n<body>\n";
  html += "<h1>" + html_escape(data.value("title", "tandem bench report")) + "</h1>\n";
  html += "<p class=\"meta\">Written by tandem bench report from:</p>\n<ul class=\"meta\">\n";
  for (const auto& f : data["files"]) {
    const auto& c = f["config"];
    html += "<li><b>" + html_escape(f.value("label", "")) + "</b> &mdash; " + html_escape(f.value("path", "")) + ", " +
            html_escape(f.value("date", "")) + "; " + html_escape(c.value("dataset_name", "")) + " dataset, " +
            html_escape(c.value("endpoint", "")) + ", model " + html_escape(c.value("model", "")) + "</li>\n";
  }
  html += "</ul>\n<table>\n<tr><th>series</th><th>ok</th><th>failed</th><th>req/s</th><th>goodput req/s</th><th>output tok/s</th>"
          "<th>mean TTFT ms</th><th>median TPOT ms</th><th>mean E2E ms</th></tr>\n";
  for (const auto& s : data["summary"]) {
    const std::string goodput = s["request_goodput"].is_number() ? fmt::format("{:.2f}", s["request_goodput"].get<double>()) : "&ndash;";
    html += fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.2f}</td><td>{}</td><td>{:.1f}</td><td>{:.2f}</td><td>{:.2f}</td>"
                        "<td>{:.2f}</td></tr>\n",
                        html_escape(s["series"].get<std::string>()), s["completed"].get<int>(), s["failed"].get<int>(),
                        s["request_throughput"].get<double>(), goodput, s["output_throughput"].get<double>(),
                        s["mean_ttft_ms"].get<double>(), s["median_tpot_ms"].get<double>(), s["mean_e2el_ms"].get<double>());
  }
  html += "</table>\n<div id=\"charts\"></div>\n";
  html += "<script id=\"report-data\" type=\"application/json\">" + json + "</script>\n";
  html += std::string("<script>") + kRenderScript + "</script>\n</body>\n</html>\n";
  return html;
}

}  // namespace tandem::loadgen
