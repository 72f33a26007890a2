// `tandem bench report`: one self-contained HTML page (opens offline, no network) that plots one or more
// result files of `tandem bench serve` overlaid: TTFT and TPOT percentiles against request rate, goodput
// against rate, latency CDFs and output throughput over time. Chart.js is embedded in the page.
// Thread-safety: plain functions.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <string>
#include <vector>

#include "common/status.h"

namespace tandem::loadgen {

// The Chart.js UMD bundle to embed: flag_value when given, else $TANDEM_CHARTJS, else
// data/npm/node_modules/chart.js/dist/chart.umd.min.js beside the binary's build tree or the source tree
// (scripts/fetch_data.sh installs it). NotFound lists where it looked.
StatusOr<std::string> find_chartjs(const std::string& flag_value);

// The charts of the page, computed from the result files: {"title", "files": [...], "charts": [{"id",
// "title", "x_type", "x_title", "y_title", "labels", "datasets": [{"label", "data", "color", "dash"}]}],
// "summary": [...]}. InvalidArgument names a file that is not a result file.
StatusOr<nlohmann::json> build_report_data(const std::vector<std::string>& result_paths, const std::string& title);

// The whole page. chartjs_source is the library's JavaScript, inlined.
std::string render_report_html(const nlohmann::json& report_data, const std::string& chartjs_source);

}  // namespace tandem::loadgen
