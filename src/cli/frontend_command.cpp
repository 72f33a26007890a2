// `tandem frontend`: the OpenAI-compatible HTTP server with the embedded worker registry.
#include <spdlog/spdlog.h>

#include <atomic>
#include <csignal>

#include "cli/commands.h"
#include "cli/signals.h"
#include "cluster/etcd.h"
#include "common/error.h"
#include "frontend/frontend.h"

namespace tandem::cli {
namespace {

struct FrontendCommandOptions {
  frontend::FrontendOptions options;
  std::string tokenizer;
  std::string registry = "embedded";
  int port = 8000;
  int registry_port = 0;
  size_t max_body_bytes = 16u << 20;
  int drain_timeout_ms = 30000;
  std::string reasoning_parser;
};

}  // namespace

Runner add_frontend_command(CLI::App& app) {
  auto o = std::make_shared<FrontendCommandOptions>();
  auto& f = o->options;
  CLI::App* cmd = app.add_subcommand("frontend", "Serve the OpenAI-compatible API and route to workers");
  cmd->add_option("--host", f.http.host, "HTTP address")->capture_default_str();
  cmd->add_option("--port", o->port, "HTTP port (0 = any; see --ready-file)")->capture_default_str();
  cmd->add_option("--registry", o->registry, "Worker registry: embedded, or etcd://host:port[,host:port...]")->capture_default_str();
  cmd->add_option("--namespace", f.cluster_namespace, "Cluster namespace: etcd keys under /tandem/<namespace>/")->capture_default_str();
  cmd->add_option("--prefill-queue", f.prefill_queue, "nats://host:port: remote prefills go through the NATS JetStream queue");
  cmd->add_option("--frontend-id", f.frontend_id, "Name of this frontend in logs and to workers (default host-pid)");
  cmd->add_option("--admin-token", f.admin_token, "Token for POST /v1/tandem/router from any address (default: localhost only)");
  cmd->add_option("--registry-host", f.registry_host, "Address workers register on")->capture_default_str();
  cmd->add_option("--registry-port", o->registry_port, "Port workers register on (0 = any)")->capture_default_str();
  cmd->add_option("--tokenizer", o->tokenizer, "Directory with tokenizer.json (for text prompts and chat)");
  cmd->add_option("--served-model-name", f.served_model_name,
                  "Model names to serve, one or more, each reaching every worker (default: the names workers register)");
  cmd->add_option("--reasoning-parser", o->reasoning_parser,
                  "Split chat replies' <think>...</think> into reasoning_content: qwen3 or deepseek_r1 (default: none)");
  cmd->add_option("--max-local-prefill", f.router.max_local_prefill, "Uncached prompt tokens above which prefill runs remotely")->capture_default_str();
  cmd->add_option("--max-prefill-queue", f.router.max_prefill_queue, "Remote prefill only while fewer than this are queued")->capture_default_str();
  cmd->add_option("--heartbeat-timeout-ms", f.heartbeat_timeout_ms, "Drop a worker silent this long")->capture_default_str();
  cmd->add_option("--remote-prefill-timeout-ms", f.remote_prefill_timeout_ms, "Deadline of a remote prefill before the decode worker prefills locally")->capture_default_str();
  cmd->add_option("--request-timeout-ms", f.request_timeout_ms, "Fail a request with no output for this long")->capture_default_str();
  cmd->add_option("--default-max-tokens", f.default_max_tokens, "Chat max_tokens when the request has none")->capture_default_str();
  cmd->add_option("--max-body-bytes", o->max_body_bytes, "Larger request bodies get 413")->capture_default_str();
  cmd->add_option("--drain-timeout-ms", o->drain_timeout_ms, "On SIGTERM, wait this long for running requests")->capture_default_str();
  cmd->add_option("--ready-file", f.ready_file, "Write {http_port, registry_port} here once listening");
  return [o]() {
    // Before any thread starts, so that every thread blocks the signals.
    auto target = std::make_shared<std::atomic<frontend::Frontend*>>(nullptr);
    auto early_stop = std::make_shared<std::atomic<bool>>(false);
    int drain_ms = o->drain_timeout_ms;
    handle_termination_signals([target, early_stop, drain_ms](int signo) {
      // First SIGTERM drains; SIGINT or a second signal stops at once.
      static int count = 0;
      frontend::Frontend* server = target->load();
      if (!server) {
        early_stop->store(true);
      } else if (++count == 1 && signo == SIGTERM) {
        server->drain(drain_ms);
      } else {
        server->stop();
      }
    });
    if (o->registry != "embedded") {
      auto endpoints = cluster::parse_etcd_url(o->registry);
      if (!endpoints.ok()) throw Error("--registry: " + endpoints.status().message() + " (use embedded or etcd://host:port)");
      o->options.etcd = std::move(*endpoints);
    }
    auto reasoning = frontend::parse_reasoning_format(o->reasoning_parser);
    if (!reasoning) throw Error("--reasoning-parser: unknown parser '" + o->reasoning_parser + "' (use qwen3 or deepseek_r1)");
    o->options.reasoning = *reasoning;
    o->options.http.port = static_cast<uint16_t>(o->port);
    o->options.http.max_body_bytes = o->max_body_bytes;
    o->options.registry_port = static_cast<uint16_t>(o->registry_port);
    std::unique_ptr<frontend::PromptCodec> codec;
    if (!o->tokenizer.empty()) codec = frontend::load_prompt_codec(o->tokenizer);
    frontend::Frontend server(o->options, std::move(codec));
    target->store(&server);
    if (early_stop->load()) return 0;
    server.run();
    target->store(nullptr);
    return 0;
  };
}

}  // namespace tandem::cli
