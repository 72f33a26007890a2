// The `tandem` subcommands. Each registers its flags on the CLI11 app and returns the function that
// runs it; main() parses, calls it, and turns a thrown tandem::Error into one line on stderr.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>

namespace tandem::cli {

using Runner = std::function<int()>;

Runner add_generate_command(CLI::App& app);
Runner add_make_model_command(CLI::App& app);
Runner add_devices_command(CLI::App& app);
Runner add_worker_command(CLI::App& app);
Runner add_frontend_command(CLI::App& app);
Runner add_serve_command(CLI::App& app);
Runner add_tokenize_command(CLI::App& app);
// `tandem bench`: a group whose subcommands are registered in bench_command.cpp, one line each.
Runner add_bench_command(CLI::App& app);

// `tandem bench <name>` subcommands: each adds itself to the bench group and returns its runner.
Runner add_bench_serve_command(CLI::App& bench);
Runner add_bench_report_command(CLI::App& bench);
Runner add_bench_throughput_command(CLI::App& bench);
Runner add_bench_latency_command(CLI::App& bench);

}  // namespace tandem::cli
