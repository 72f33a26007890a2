// tandem: one binary whose subcommands are the roles of a cluster (DESIGN.md §1).
#include <spdlog/spdlog.h>

#include <cstdio>
#include <exception>
#include <vector>

#include "cli/commands.h"
#include "common/error.h"
#include "common/logging.h"

int main(int argc, char** argv) {
  CLI::App app{"tandem: LLM serving with disaggregated prefill and decode"};
  app.require_subcommand(1);
  std::string log_level = "warn";
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error|off")->capture_default_str();

  std::vector<std::pair<CLI::App*, tandem::cli::Runner>> commands;
  auto add = [&](tandem::cli::Runner (*register_command)(CLI::App&)) {
    size_t before = app.get_subcommands({}).size();
    tandem::cli::Runner run = register_command(app);
    commands.emplace_back(app.get_subcommands({})[before], std::move(run));
  };
  add(tandem::cli::add_generate_command);
  add(tandem::cli::add_make_model_command);
  add(tandem::cli::add_devices_command);
  add(tandem::cli::add_worker_command);
  add(tandem::cli::add_frontend_command);
  add(tandem::cli::add_serve_command);
  add(tandem::cli::add_tokenize_command);
  add(tandem::cli::add_bench_command);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    tandem::init_logging(log_level);
    for (auto& [sub, run] : commands) {
      if (sub->parsed()) return run();
    }
  } catch (const tandem::Error& e) {
    std::fprintf(stderr, "tandem: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tandem: internal error: %s\n", e.what());
    return 2;
  }
  return 1;
}
