// `tandem worker`: one engine serving a role (prefill, decode, both) behind the request plane.
#include <spdlog/spdlog.h>

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "cli/cluster_flags.h"
#include "cli/commands.h"
#include "cli/engine_flags.h"
#include "cli/etcd_flags.h"
#include "cli/model_files.h"
#include "cli/signals.h"
#include "cluster/etcd.h"
#include "cluster/keys.h"
#include "common/error.h"
#include "engine/fake_engine.h"
#include "model/weight_source.h"
#include "tokenizer/text_stream.h"
#include "tokenizer/tokenizer.h"
#include "worker/worker.h"
#include "backend/backend.h"

namespace tandem::cli {
namespace {

// The exit code of a worker whose device failed mid-step (distinct from 1, a bad flag or file).
constexpr int kDeviceFailedExitCode = 3;

struct WorkerCommandOptions {
  std::string role = "both";
  std::string model;
  std::vector<std::string> served_model_name;
  std::string frontend;
  std::string registry;
  std::string cluster_namespace = "default";
  int lease_ttl_s = 10;
  std::string prefill_queue;
  int prefill_queue_ack_wait_ms = 10000;
  int max_pulled_prefills = 4;
  std::string host = "127.0.0.1";
  int rpc_port = 0;
  int transfer_port = 0;
  std::string worker_id;
  int heartbeat_ms = 1000;
  int remote_prefill_timeout_ms = 30000;
  int transfer_timeout_ms = 10000;
  int drain_timeout_ms = 30000;
  std::string engine = "real";
  int fake_step_ms = 0;
  double fake_prefill_us_per_token = 0;
  std::string fake_output;
  EngineFlags engine_flags;
  std::string kv_transfer = "auto";
  std::string ready_file;
  uint64_t seed = 0;
  std::string tokenizer;
  ClusterFlags cluster;
  EtcdFlags etcd;
};

std::string default_model_name(const std::string& model) {
  if (model.rfind("random:", 0) == 0) return model;
  std::filesystem::path p(model);
  if (p.filename().empty()) p = p.parent_path();
  return p.filename().string();
}

}  // namespace

Runner add_worker_command(CLI::App& app) {
  auto o = std::make_shared<WorkerCommandOptions>();
  CLI::App* cmd = app.add_subcommand("worker", "Serve one engine as a prefill, decode or aggregated worker");
  cmd->add_option("--role", o->role, "prefill, decode or both")->capture_default_str();
  cmd->add_option("--model", o->model, "Hugging Face model directory or random:<preset>");
  cmd->add_option("--served-model-name", o->served_model_name,
                  "Model names clients use, one or more (default: the directory's name); the first is the main one");
  cmd->add_option("--frontend", o->frontend, "host:port of the frontend's embedded registry");
  cmd->add_option("--registry", o->registry, "etcd://host:port[,host:port...]: register in etcd instead (cluster mode; etcds://: over TLS)");
  cmd->add_option("--namespace", o->cluster_namespace, "Cluster namespace: etcd keys under /tandem/<namespace>/")->capture_default_str();
  add_etcd_flags(cmd, &o->etcd);
  cmd->add_option("--lease-ttl", o->lease_ttl_s, "etcd lease TTL in seconds: a killed worker is dropped this long after")
      ->capture_default_str()->check(CLI::Range(1, 3600));
  cmd->add_option("--prefill-queue", o->prefill_queue, "nats://host:port: remote prefills through the NATS JetStream queue (tls://[TOKEN@|USER:PASS@]host:port[?ca=F&cert=F&key=F&creds=F] over TLS; docs/security.md)");
  cmd->add_option("--prefill-queue-ack-wait-ms", o->prefill_queue_ack_wait_ms,
                  "A pulled prefill not acknowledged this long goes to another prefill worker")->capture_default_str();
  cmd->add_option("--max-pulled-prefills", o->max_pulled_prefills, "Prefill worker: pull from the queue only while holding fewer")
      ->capture_default_str();
  cmd->add_option("--host", o->host, "Address peers reach this worker on")->capture_default_str();
  cmd->add_option("--rpc-port", o->rpc_port, "Port for remote prefills (0 = any)")->capture_default_str();
  cmd->add_option("--transfer-port", o->transfer_port, "Port for incoming KV (0 = any)")->capture_default_str();
  cmd->add_option("--worker-id", o->worker_id, "Name in logs and metrics (default <role>-<pid>)");
  cmd->add_option("--heartbeat-ms", o->heartbeat_ms, "Heartbeat interval")->capture_default_str()->check(CLI::Range(10, 60000));
  cmd->add_option("--remote-prefill-timeout-ms", o->remote_prefill_timeout_ms, "Deadline of a remote prefill before a local fallback")->capture_default_str();
  cmd->add_option("--transfer-timeout-ms", o->transfer_timeout_ms, "Deadline of one KV push")->capture_default_str();
  cmd->add_option("--drain-timeout-ms", o->drain_timeout_ms, "On SIGTERM, finish held requests up to this long")->capture_default_str();
  cmd->add_option("--engine", o->engine, "real, or fake (no model math; for serving tests and benchmarks)")->capture_default_str();
  cmd->add_option("--fake-step-ms", o->fake_step_ms, "Fake engine: time per decode step")->capture_default_str();
  cmd->add_option("--fake-prefill-us-per-token", o->fake_prefill_us_per_token, "Fake engine: prefill time per prompt token")->capture_default_str();
  cmd->add_option("--fake-output", o->fake_output,
                  "Fake engine: every reply is this text's tokens (--tokenizer's), then stop (for tests)");
  add_engine_flags(cmd, &o->engine_flags, kWorkerRules);
  cmd->add_option("--kv-transfer", o->kv_transfer,
                  "KV transport: auto (CUDA IPC to workers on this host whose GPU this one can reach, else NCCL between GPUs, else TCP), tcp, cuda_ipc, or nccl")
      ->capture_default_str();
  cmd->add_option("--ready-file", o->ready_file, "Write {\"kv_blocks\": N, ...} here once the engine is loaded (for supervisors)");
  cmd->add_option("--seed", o->seed, "Seed of random:<preset> weights")->capture_default_str();
  cmd->add_option("--tokenizer", o->tokenizer, "Tokenizer directory for text output and stop strings (default: the model directory)");
  add_cluster_flags(cmd, &o->cluster);
  return [o]() {
    // Before any thread starts (engine, OpenMP, listeners), so that every thread blocks the signals.
    auto target = std::make_shared<std::atomic<worker::Worker*>>(nullptr);
    auto early_stop = std::make_shared<std::atomic<bool>>(false);
    handle_termination_signals([target, early_stop](int) {
      if (worker::Worker* w = target->load()) {
        w->request_stop();
      } else {
        early_stop->store(true);
      }
    });
    // The request-plane and KV transfer ports both listen on --host.
    apply_cluster_flags(o->cluster, {{"--host", o->host}});
    worker::WorkerOptions options;
    options.role = worker::parse_role(o->role);
    if (o->frontend.empty() == o->registry.empty()) {
      throw Error("give one of --frontend host:port (embedded registry) or --registry etcd://host:port (cluster mode)");
    }
    options.frontend = o->frontend;
    options.registry = o->registry;
    options.etcd_credentials = load_etcd_credentials(o->etcd, o->registry);
    if (!o->registry.empty()) {
      // Before the model loads: a refused password fails the start at once.
      auto endpoints = cluster::parse_etcd_url(o->registry);
      if (!endpoints.ok()) throw Error("--registry: " + endpoints.status().message());
      check_etcd_access(*endpoints, options.etcd_credentials, cluster::key_prefix(o->cluster_namespace));
    }
    options.cluster_namespace = o->cluster_namespace;
    options.lease_ttl_s = o->lease_ttl_s;
    options.prefill_queue = o->prefill_queue;
    options.prefill_queue_ack_wait_ms = o->prefill_queue_ack_wait_ms;
    options.max_pulled_prefills = o->max_pulled_prefills;
    options.host = o->host;
    options.rpc_port = static_cast<uint16_t>(o->rpc_port);
    options.transfer_port = static_cast<uint16_t>(o->transfer_port);
    options.worker_id = o->worker_id;
    options.heartbeat_ms = o->heartbeat_ms;
    options.remote_prefill_timeout_ms = o->remote_prefill_timeout_ms;
    options.transfer_timeout_ms = o->transfer_timeout_ms;
    options.drain_timeout_ms = o->drain_timeout_ms;
    options.kv_transfer = o->kv_transfer;
    options.prefix_caching = !o->engine_flags.no_prefix_caching;
    if (o->model.empty() && o->engine != "fake") throw Error("--model is required (or --engine fake)");
    options.model_name = !o->served_model_name.empty() ? o->served_model_name.front()
                         : o->model.empty()              ? std::string("fake")
                                                         : default_model_name(o->model);
    if (o->served_model_name.size() > 1) {
      options.model_aliases.assign(o->served_model_name.begin() + 1, o->served_model_name.end());
    }
    for (const auto& name : o->served_model_name) {
      if (name.empty()) throw Error("--served-model-name: a name is empty");
    }

    std::shared_ptr<engine::TextStreamFactory> text;
    std::string tokenizer_dir = o->tokenizer;
    if (tokenizer_dir.empty() && !o->model.empty() && std::filesystem::exists(std::filesystem::path(o->model) / "tokenizer.json")) {
      tokenizer_dir = o->model;
    }
    std::vector<int> eos;
    std::shared_ptr<const tokenizer::Tokenizer> tokenizer;
    if (!tokenizer_dir.empty()) {
      tokenizer = tokenizer::Tokenizer::load(tokenizer_dir);
      text = std::make_shared<DetokenizerStreams>(tokenizer);
    }

    std::unique_ptr<engine::Engine> engine;
    if (o->engine == "fake") {
      engine::FakeEngineOptions fake;
      fake.step_ms = o->fake_step_ms;
      fake.prefill_us_per_token = o->fake_prefill_us_per_token;
      if (!o->fake_output.empty()) {
        if (tokenizer_dir.empty()) throw Error("--fake-output needs --tokenizer (its text is made of that tokenizer's tokens)");
        fake.script = tokenizer::Tokenizer::load(tokenizer_dir)->encode(o->fake_output, /*add_special_tokens=*/false);
      }
      if (o->engine_flags.num_kv_blocks > 0) fake.num_blocks = o->engine_flags.num_kv_blocks;
      if (!o->model.empty()) {
        auto weights = model::open_weight_source(o->model, o->seed);
        fake.vocab_size = weights->config().vocab_size;
        fake.eos_token_ids = weights->config().eos_token_ids;
      }
      engine = engine::create_fake_engine(fake, text);
    } else if (o->engine == "real") {
      auto weights = model::open_weight_source(o->model, o->seed);
      engine::EngineOptions engine_options = o->engine_flags.engine_options();
      if (tokenizer) engine_options.constraints = make_constraint_compiler(tokenizer, weights->config().vocab_size);
      engine = engine::create_engine(backend::create_backend(*weights, o->engine_flags.backend_options()), engine_options, text);
    } else {
      throw Error("--engine: unknown engine '" + o->engine + "' (use real or fake)");
    }

    const int kv_blocks = engine->backend().kv_cache_spec().num_blocks;
    worker::Worker w(options, std::move(engine));
    if (!o->ready_file.empty()) {
      // Written whole under a temporary name, then renamed, so a reader never sees half a file.
      const std::string tmp = o->ready_file + ".tmp";
      {
        std::ofstream out(tmp);
        out << "{\"kv_blocks\": " << kv_blocks << ", \"device\": \"" << o->engine_flags.device << "\", \"pid\": " << getpid() << "}\n";
      }
      std::filesystem::rename(tmp, o->ready_file);
    }
    target->store(&w);
    if (early_stop->load()) return 0;
    w.run();
    target->store(nullptr);
    if (Status failure = w.device_failure(); !failure.ok()) {
      std::fprintf(stderr, "tandem worker: the device failed (%s); its requests were failed and the worker exits "
                           "so that its supervisor starts a fresh one\n", failure.message().c_str());
      return kDeviceFailedExitCode;
    }
    return 0;
  };
}

}  // namespace tandem::cli
