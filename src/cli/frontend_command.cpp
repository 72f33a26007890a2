// `tandem frontend`: the OpenAI-compatible HTTP server with the embedded worker registry.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdlib>

#include "cli/cluster_flags.h"
#include "cli/commands.h"
#include "cli/etcd_flags.h"
#include "cli/signals.h"
#include "cluster/etcd.h"
#include "cluster/keys.h"
#include "common/error.h"
#include "frontend/auth.h"
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
  std::string tool_call_parser;
  bool enable_auto_tool_choice = false;  // vLLM's flag, accepted: --tool-call-parser alone turns tool calling on
  std::vector<std::string> api_keys;  // --api-key values; else TANDEM_API_KEY
  double header_timeout_s = 10;
  double idle_timeout_s = 60;
  double send_timeout_s = 30;
  double request_timeout_s = 0;
  ClusterFlags cluster;
  EtcdFlags etcd;
  std::string router_mode = frontend::router_mode_name(frontend::RouterOptions{}.mode);  // the struct's default: kv
};

int to_ms(double seconds) { return static_cast<int>(std::min(seconds * 1000.0, 2e9)); }

}  // namespace

Runner add_frontend_command(CLI::App& app) {
  auto o = std::make_shared<FrontendCommandOptions>();
  auto& f = o->options;
  CLI::App* cmd = app.add_subcommand("frontend", "Serve the OpenAI-compatible API and route to workers");
  cmd->add_option("--host", f.http.host, "HTTP address")->capture_default_str();
  cmd->add_option("--port", o->port, "HTTP port (0 = any; see --ready-file)")->capture_default_str();
  cmd->add_option("--registry", o->registry, "Worker registry: embedded, or etcd://host:port[,host:port...] (etcds://: over TLS)")->capture_default_str();
  cmd->add_option("--namespace", f.cluster_namespace, "Cluster namespace: etcd keys under /tandem/<namespace>/")->capture_default_str();
  add_etcd_flags(cmd, &o->etcd);
  cmd->add_option("--prefill-queue", f.prefill_queue, "nats://host:port: remote prefills go through the NATS JetStream queue (tls://[TOKEN@|USER:PASS@]host:port[?ca=F&cert=F&key=F&creds=F] over TLS; docs/security.md)");
  cmd->add_option("--frontend-id", f.frontend_id, "Name of this frontend in logs and to workers (default host-pid)");
  cmd->add_option("--admin-token", f.admin_token, "Token for POST /v1/tandem/router from any address (default: localhost only)");
  cmd->add_option("--registry-host", f.registry_host, "Address workers register on")->capture_default_str();
  cmd->add_option("--registry-port", o->registry_port, "Port workers register on (0 = any)")->capture_default_str();
  cmd->add_option("--tokenizer", o->tokenizer, "Directory with tokenizer.json (for text prompts and chat)");
  cmd->add_option("--served-model-name", f.served_model_name,
                  "Model names to serve, one or more, each reaching every worker (default: the names workers register)");
  cmd->add_option("--reasoning-parser", o->reasoning_parser,
                  "Split chat replies' <think>...</think> into reasoning_content: qwen3 or deepseek_r1 (default: none)");
  cmd->add_option("--tool-call-parser", o->tool_call_parser,
                  "Serve 'tools' in chat and read the model's calls into tool_calls: hermes or llama3_json (default: none)");
  cmd->add_flag("--enable-auto-tool-choice", o->enable_auto_tool_choice,
                "Accepted for vLLM's command lines (tool calling is on whenever --tool-call-parser is given)");
  cmd->add_option("--max-local-prefill", f.router.max_local_prefill, "Uncached prompt tokens above which prefill runs remotely")->capture_default_str();
  cmd->add_option("--max-prefill-queue", f.router.max_prefill_queue, "Remote prefill only while fewer than this are queued")->capture_default_str();
  cmd->add_option("--router-mode", o->router_mode,
                  "How a request's worker is chosen: kv (cached overlap and load), least-loaded, round-robin, random, "
                  "prefix-hash (by the prompt's first tokens: the benchmark's oracle)")
      ->capture_default_str();
  cmd->add_option("--kv-overlap-score-weight", f.router.kv_overlap_score_weight,
                  "kv mode: weight of the blocks a worker would prefill against its load in blocks")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--router-temperature", f.router.temperature,
                  "kv mode: 0 picks the lowest cost; above 0, a softmax draw over the costs")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--migration-limit", f.migration_limit,
                  "Times a streaming request moves to another worker when its decode worker is lost (0 = never)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--heartbeat-timeout-ms", f.heartbeat_timeout_ms, "Drop a worker silent this long")->capture_default_str();
  cmd->add_option("--remote-prefill-timeout-ms", f.remote_prefill_timeout_ms, "Deadline of a remote prefill before the decode worker prefills locally")->capture_default_str();
  cmd->add_option("--request-timeout-ms", f.request_timeout_ms, "Fail a request with no output for this long")->capture_default_str();
  cmd->add_option("--default-max-tokens", f.default_max_tokens, "Chat max_tokens when the request has none")->capture_default_str();
  cmd->add_option("--max-body-bytes", o->max_body_bytes, "Larger request bodies get 413")->capture_default_str();
  cmd->add_option("--max-header-bytes", f.http.max_header_bytes, "Larger request line + headers get 431")->capture_default_str();
  cmd->add_option("--http-header-timeout-s", o->header_timeout_s,
                  "Close a connection whose request header is not complete this long after its first byte (or the accept)")
      ->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--http-idle-timeout-s", o->idle_timeout_s, "Close a keep-alive connection idle this long; a body must arrive within it")
      ->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--http-send-timeout-s", o->send_timeout_s,
                  "Close a connection (aborting its request) whose client takes none of its reply for this long")
      ->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--max-connections", f.http.max_connections, "Open HTTP connections beyond which new ones get 503 (0 = no limit)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--api-key", o->api_keys,
                  "Require Authorization: Bearer KEY on /v1/* (repeatable: any of the keys; default $TANDEM_API_KEY, "
                  "comma-separated)");
  cmd->add_option("--max-pending-requests", f.max_pending_requests, "Requests in flight beyond which new ones get 429 (0 = no limit)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--request-timeout-s", o->request_timeout_s,
                  "Fail a request (an error event on a stream) not done this long after it arrived, and abort it on its worker (0 = none)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--drain-timeout-ms", o->drain_timeout_ms, "On SIGTERM, wait this long for running requests")->capture_default_str();
  cmd->add_option("--ready-file", f.ready_file, "Write {http_port, registry_port} here once listening");
  add_cluster_flags(cmd, &o->cluster);
  cmd->add_option("--tls-cert", f.http.tls_cert, "Serve HTTPS: PEM certificate chain of the HTTP API (with --tls-key)");
  cmd->add_option("--tls-key", f.http.tls_key, "PEM private key of --tls-cert");
  cmd->add_option("--tls-ca", f.http.tls_ca, "PEM CA certificates: HTTPS clients must present a certificate one of them signed");
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
    apply_cluster_flags(o->cluster, {{"--registry-host", o->options.registry_host}});
    o->options.etcd_credentials = load_etcd_credentials(o->etcd, o->registry);
    if (o->registry != "embedded") {
      auto endpoints = cluster::parse_etcd_url(o->registry);
      if (!endpoints.ok()) throw Error("--registry: " + endpoints.status().message() + " (use embedded, etcd://host:port or etcds://host:port)");
      o->options.etcd = std::move(*endpoints);
      check_etcd_access(o->options.etcd, o->options.etcd_credentials, cluster::key_prefix(o->options.cluster_namespace));
    }
    auto reasoning = frontend::parse_reasoning_format(o->reasoning_parser);
    if (!reasoning) throw Error("--reasoning-parser: unknown parser '" + o->reasoning_parser + "' (use qwen3 or deepseek_r1)");
    o->options.reasoning = *reasoning;
    auto tool_parser = frontend::parse_tool_parser_kind(o->tool_call_parser);
    if (!tool_parser) throw Error("--tool-call-parser: unknown parser '" + o->tool_call_parser + "' (use hermes or llama3_json)");
    o->options.tool_parser = *tool_parser;
    auto mode = frontend::parse_router_mode(o->router_mode);
    if (!mode) throw Error("--router-mode: unknown mode '" + o->router_mode + "' (use kv, least-loaded, round-robin, random or prefix-hash)");
    o->options.router.mode = *mode;
    o->options.http.port = static_cast<uint16_t>(o->port);
    o->options.http.max_body_bytes = o->max_body_bytes;
    o->options.http.header_timeout_ms = std::max(1, to_ms(o->header_timeout_s));
    o->options.http.idle_timeout_ms = std::max(1, to_ms(o->idle_timeout_s));
    o->options.http.send_timeout_ms = std::max(1, to_ms(o->send_timeout_s));
    o->options.request_deadline_ms = o->request_timeout_s > 0 ? std::max(1, to_ms(o->request_timeout_s)) : 0;
    auto keys = frontend::resolve_api_keys(o->api_keys, std::getenv("TANDEM_API_KEY"));
    if (!keys.ok()) throw Error(keys.status().message());
    o->options.api_keys = std::move(*keys);
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
