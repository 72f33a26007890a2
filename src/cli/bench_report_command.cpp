// `tandem bench report`: result files of `tandem bench serve` -> one self-contained HTML page of plots.
#include <nlohmann/json.hpp>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "loadgen/report.h"
#include "loadgen/serve_benchmark.h"
#include "cli/commands.h"
#include "common/error.h"

namespace tandem::cli {
namespace {

struct BenchReportFlags {
  std::vector<std::string> results;
  std::string out = "report.html";
  std::string title = "tandem bench serve";
  std::string chartjs;
};

}  // namespace

Runner add_bench_report_command(CLI::App& bench) {
  auto flags = std::make_shared<BenchReportFlags>();
  CLI::App* cmd = bench.add_subcommand("report", "Plot result files of `tandem bench serve` into one offline HTML page");
  cmd->add_option("results", flags->results, "Result files (--save-result of tandem bench serve), overlaid")->required();
  cmd->add_option("--out,-o", flags->out, "The HTML file to write")->capture_default_str();
  cmd->add_option("--title", flags->title, "Page title")->capture_default_str();
  cmd->add_option("--chartjs", flags->chartjs, "Chart.js UMD bundle to embed (default: data/npm/.../chart.umd.min.js)");
  return [flags]() {
    auto data = loadgen::build_report_data(flags->results, flags->title);
    if (!data.ok()) throw Error("RESULTS: " + data.status().message());
    auto chartjs = loadgen::find_chartjs(flags->chartjs);
    if (!chartjs.ok()) throw Error("--chartjs: " + chartjs.status().message());
    Status written = loadgen::write_file_atomically(flags->out, loadgen::render_report_html(*data, *chartjs));
    if (!written.ok()) throw Error("--out: " + written.message());
    std::printf("Report written to %s\n", flags->out.c_str());
    return 0;
  };
}

}  // namespace tandem::cli
