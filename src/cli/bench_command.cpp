// `tandem bench`: the benchmark group. Each benchmark is a subcommand registered below with one line.
#include <memory>
#include <utility>
#include <vector>

#include "cli/commands.h"

namespace tandem::cli {

Runner add_bench_command(CLI::App& app) {
  CLI::App* bench = app.add_subcommand("bench", "Benchmarks with the names and flags of `vllm bench`");
  bench->require_subcommand(1);
  auto commands = std::make_shared<std::vector<std::pair<CLI::App*, Runner>>>();
  auto add = [&](Runner (*register_command)(CLI::App&)) {
    size_t before = bench->get_subcommands({}).size();
    Runner run = register_command(*bench);
    commands->emplace_back(bench->get_subcommands({})[before], std::move(run));
  };
  add(add_bench_serve_command);
  add(add_bench_report_command);
  return [commands]() {
    for (auto& [sub, run] : *commands) {
      if (sub->parsed()) return run();
    }
    return 1;
  };
}

}  // namespace tandem::cli
