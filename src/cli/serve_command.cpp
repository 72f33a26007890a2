// `tandem serve`: the whole cluster on this machine. A supervisor starts the frontend and the
// workers as child processes (each in its own process group, so Ctrl-C reaches the supervisor
// only and it stops them in order), restarts a worker that dies, and stops everything on SIGINT or
// SIGTERM. With no --model it serves the built-in demo model: tiny-qwen3 random weights (made on
// first use under the cache directory) with the real Qwen3 tokenizer. Workers go on the devices that
// cli/serve_layout.h plans (GPUs when visible, as many a worker as its tensor-parallel size); workers
// sharing GPUs start one after another, each once the one before it has its KV cache (its
// --ready-file), so their memory shares come out even.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "cli/commands.h"
#include "cli/model_files.h"
#include "cli/signals.h"
#include "common/error.h"
#include "cli/cluster_flags.h"
#include "cli/serve_layout.h"
#include "backend/cpu/cpu_backend.h"
#include "common/socket.h"
#include "frontend/auth.h"
#include "security/cluster_auth.h"
#include "security/tls_stream.h"
#ifdef TANDEM_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif
#include "model/config.h"
#include "model/presets.h"
#include "model/random_weights.h"
#include "model/safetensors_writer.h"
#include "model/weight_source.h"

namespace tandem::cli {
namespace {

namespace fs = std::filesystem;

struct ServeOptions {
  std::string model;
  std::string host = "127.0.0.1";
  int port = 8000;
  int num_prefill_workers = 1;
  int num_decode_workers = 1;
  std::string engine = "real";
  int threads = 0;
  int max_local_prefill = 1000;
  int max_prefill_queue = 2;
  std::string cache_dir;
  std::string tokenizer;
  std::string log_level = "info";
  int stop_timeout_ms = 10000;
  int worker_start_timeout_s = 900;
  std::string device = "auto";
  std::string prefill_device;
  std::string decode_device;
  double gpu_memory_utilization = 0.9;
  int tensor_parallel_size = 1;          // every worker's, unless a role's flag below says otherwise
  int prefill_tensor_parallel_size = 0;  // 0: tensor_parallel_size
  int decode_tensor_parallel_size = 0;   // decode or both workers; 0: tensor_parallel_size
  std::string kv_transfer = "auto";
  std::string kv_cache_dtype = "auto";  // passed to every worker
  std::vector<std::string> worker_args;
  std::vector<std::string> served_model_name;  // passed to the workers, who register these names
  std::string reasoning_parser;                // passed to the frontend
  std::string tool_call_parser;                // passed to the frontend
  bool enable_auto_tool_choice = false;        // vLLM's flag, accepted (see the frontend's)
  std::vector<std::string> frontend_args;
  std::string tls_cert, tls_key, tls_ca;  // HTTPS on the API: passed to the frontend
  std::vector<std::string> api_keys;  // to the frontend through its environment, never its argv
  int max_pending_requests = 0;
  double request_timeout_s = 0;
  ClusterFlags cluster;  // checked here, then handed to every child
  std::string router_mode;     // passed to the frontend
  int migration_limit = -1;    // passed to the frontend when given
};

struct Child {
  std::string name;
  std::vector<std::string> argv;
  std::string device;      // "cpu", or "cuda:N" / "cuda:N,M,..." for a TP worker
  std::vector<int> gpus;   // of `device`, sorted; empty on the CPU
  std::string ready_file;  // the worker writes it once its engine is loaded
  int kv_blocks = 0;       // from the ready file: a restart asks for the same pool
  pid_t pid = -1;
  int restarts = 0;
  std::chrono::steady_clock::time_point started;
};

fs::path cache_root(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* env = std::getenv("TANDEM_CACHE_DIR")) return env;
  if (const char* xdg = std::getenv("XDG_CACHE_HOME")) return fs::path(xdg) / "tandem";
  if (const char* home = std::getenv("HOME")) return fs::path(home) / ".cache" / "tandem";
  return fs::temp_directory_path() / "tandem-cache";
}

// The demo model directory, made on first use: config.json + safetensors + the Qwen3 tokenizer.
fs::path demo_model(const std::string& cache_flag) {
  fs::path dir = cache_root(cache_flag) / "demo-tiny-qwen3";
  if (fs::exists(dir / "config.json") && fs::exists(dir / "tokenizer.json")) return dir;
  fs::path tokenizer = data_dir() / "tokenizers" / "qwen3";
  if (!fs::exists(tokenizer / "tokenizer.json")) {
    throw Error("the demo model needs the Qwen3 tokenizer at " + tokenizer.string() +
                ": run scripts/fetch_data.sh (or set TANDEM_DATA_DIR), or pass --model");
  }
  std::fprintf(stderr, "tandem serve: making the demo model (random weights, real Qwen3 tokenizer) in %s\n",
               dir.c_str());
  fs::path tmp = dir.string() + ".tmp" + std::to_string(getpid());
  fs::remove_all(tmp);
  model::RandomWeights weights(model::preset_config("tiny-qwen3"), 0, "random:tiny-qwen3");
  model::write_model_directory(weights, tmp, model::DType::kBF16, size_t{5} << 30);
  fs::copy_file(tokenizer / "tokenizer.json", tmp / "tokenizer.json");
  if (fs::exists(tokenizer / "tokenizer_config.json")) {
    fs::copy_file(tokenizer / "tokenizer_config.json", tmp / "tokenizer_config.json");
  }
  fs::remove_all(dir);
  fs::rename(tmp, dir);
  return dir;
}

std::string self_exe() { return fs::read_symlink("/proc/self/exe").string(); }

// Starts argv[0] in its own process group; `env`, when given, replaces the environment it inherits.
pid_t spawn(const std::vector<std::string>& argv, const std::vector<std::string>* env = nullptr) {
  // Built before fork: the child may only make async-signal-safe calls until it execs.
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<char*> envp;
  if (env) {
    for (const auto& e : *env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
  }
  pid_t pid = fork();
  if (pid < 0) throw Error(std::string("fork failed: ") + std::strerror(errno));
  if (pid == 0) {
    // The supervisor blocks these for its signal thread; the mask survives exec, so undo it.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
    setpgid(0, 0);                          // Ctrl-C goes to the supervisor, which stops us in order
    prctl(PR_SET_PDEATHSIG, SIGTERM);       // and if the supervisor dies, we follow
    if (env) {
      execve(args[0], args.data(), envp.data());
    } else {
      execv(args[0], args.data());
    }
    std::fprintf(stderr, "tandem serve: exec %s failed: %s\n", args[0], std::strerror(errno));
    _exit(127);
  }
  return pid;
}

bool port_open(const std::string& host, int port) {
  auto fd = net::dial(host + ":" + std::to_string(port), 500);
  if (fd.ok()) close(*fd);
  return fd.ok();
}

bool http_ok(const std::string& host, int port, const std::string& path) {
  auto fd = net::dial(host + ":" + std::to_string(port), 500);
  if (!fd.ok()) return false;
  std::string request = "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n";
  bool ok = net::write_full(*fd, request.data(), request.size(), "frontend").ok();
  char buffer[64] = {};
  ok = ok && net::read_full(*fd, buffer, 12, "frontend").ok();
  close(*fd);
  return ok && std::string(buffer, 12).find(" 200") != std::string::npos;
}

}  // namespace

Runner add_serve_command(CLI::App& app) {
  auto o = std::make_shared<ServeOptions>();
  CLI::App* cmd = app.add_subcommand("serve", "Run the frontend and workers on this machine (default: the demo model)");
  cmd->add_option("--model", o->model, "Hugging Face model directory (default: the built-in demo model)");
  cmd->add_option("--host", o->host, "HTTP address")->capture_default_str();
  cmd->add_option("--port", o->port, "HTTP port")->capture_default_str();
  cmd->add_option("--num-prefill-workers", o->num_prefill_workers, "Prefill workers (0 = aggregated workers only)")->capture_default_str();
  cmd->add_option("--num-decode-workers", o->num_decode_workers, "Decode workers")->capture_default_str()->check(CLI::Range(1, 64));
  cmd->add_option("--engine", o->engine, "real, or fake (no model math)")->capture_default_str();
  cmd->add_option("--threads", o->threads,
                  "CPU threads per worker, divided among its tensor-parallel ranks (0 = the cores shared by ranks)")
      ->capture_default_str();
  cmd->add_option("--max-local-prefill", o->max_local_prefill, "Uncached prompt tokens above which prefill runs remotely")->capture_default_str();
  cmd->add_option("--max-prefill-queue", o->max_prefill_queue, "Remote prefill only while fewer than this are queued")->capture_default_str();
  cmd->add_option("--tokenizer", o->tokenizer,
                  "Directory with tokenizer.json for text prompts and chat (default: the model's own; random "
                  "presets have none, so give e.g. data/tokenizers/llama3_1)");
  cmd->add_option("--cache-dir", o->cache_dir, "Where the demo model is made (default $TANDEM_CACHE_DIR or ~/.cache/tandem)");
  cmd->add_option("--child-log-level", o->log_level, "Log level of the frontend and workers")->capture_default_str();
  cmd->add_option("--device", o->device,
                  "auto (GPUs when visible, else cpu), cpu, cuda (lay out over every visible GPU, as many a worker as "
                  "its TP size: with two or more, prefill on cuda:0 and decode on cuda:1 at TP 1), or cuda:N[,M...] "
                  "(every worker on these GPUs, one a rank)")
      ->capture_default_str();
  cmd->add_option("--prefill-device", o->prefill_device,
                  "Device of the prefill workers (overrides --device), e.g. cuda:0, or cuda:0,1 at TP 2");
  cmd->add_option("--decode-device", o->decode_device,
                  "Device of the decode workers (overrides --device), e.g. cuda:1, or cuda:2,3 at TP 2");
  cmd->add_option("--tensor-parallel-size", o->tensor_parallel_size,
                  "Tensor-parallel ranks of every worker (GPUs a worker, or threads of a CPU worker)")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  cmd->add_option("--prefill-tensor-parallel-size", o->prefill_tensor_parallel_size,
                  "Tensor-parallel ranks of the prefill workers (default: --tensor-parallel-size)")
      ->check(CLI::Range(1, 64));
  cmd->add_option("--decode-tensor-parallel-size", o->decode_tensor_parallel_size,
                  "Tensor-parallel ranks of the decode (or aggregated) workers (default: --tensor-parallel-size)")
      ->check(CLI::Range(1, 64));
  cmd->add_option("--gpu-memory-utilization", o->gpu_memory_utilization,
                  "Fraction of each GPU's free memory (after weights) for KV caches, split evenly between the workers on it")
      ->capture_default_str();
  cmd->add_option("--kv-transfer", o->kv_transfer, "KV transport between workers: auto (CUDA IPC where possible, else NCCL between GPUs, else TCP), tcp, or nccl")
      ->capture_default_str();
  cmd->add_option("--kv-cache-dtype", o->kv_cache_dtype,
                  "KV cache dtype of every worker: auto (fp32 on the CPU, bf16 on CUDA), bf16 or fp8 (e4m3 with a scale "
                  "per token and KV head; docs/quantization.md)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "bf16", "fp8"}));
  cmd->add_option("--worker-start-timeout-s", o->worker_start_timeout_s,
                  "How long a worker may take to load before the next one on its GPU starts anyway")
      ->capture_default_str();
  cmd->add_option("--served-model-name", o->served_model_name,
                  "Model names clients use, one or more (default: the model directory's name)");
  cmd->add_option("--reasoning-parser", o->reasoning_parser,
                  "Split <think>...</think> into reasoning_content: qwen3 or deepseek_r1 (default: none)");
  cmd->add_option("--tool-call-parser", o->tool_call_parser,
                  "Serve 'tools' in chat and read the model's calls into tool_calls: hermes or llama3_json (default: none)");
  cmd->add_flag("--enable-auto-tool-choice", o->enable_auto_tool_choice,
                "Accepted for vLLM's command lines (tool calling is on whenever --tool-call-parser is given)");
  cmd->add_option("--api-key", o->api_keys,
                  "Require Authorization: Bearer KEY on /v1/* (repeatable; default $TANDEM_API_KEY, comma-separated)");
  cmd->add_option("--max-pending-requests", o->max_pending_requests, "Requests in flight beyond which new ones get 429 (0 = no limit)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--request-timeout-s", o->request_timeout_s,
                  "Fail a request not done this long after it arrived, and abort it on its worker (0 = none)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--router-mode", o->router_mode, "The frontend's --router-mode (default kv)");
  cmd->add_option("--migration-limit", o->migration_limit, "The frontend's --migration-limit (default 3)");
  cmd->add_option("--frontend-arg", o->frontend_args, "Extra flag passed to the frontend (repeatable), e.g. --frontend-arg=--max-connections=1000");
  cmd->add_option("--tls-cert", o->tls_cert, "Serve HTTPS: PEM certificate chain of the HTTP API (with --tls-key; the frontend's flag)");
  cmd->add_option("--tls-key", o->tls_key, "PEM private key of --tls-cert");
  cmd->add_option("--tls-ca", o->tls_ca, "PEM CA certificates: HTTPS clients must present a certificate one of them signed");
  add_cluster_flags(cmd, &o->cluster);
  cmd->add_option("--worker-arg", o->worker_args, "Extra flag passed to every worker (repeatable), e.g. --worker-arg=--num-kv-blocks=512");
  return [o]() {
    // Before any thread starts (make-model uses OpenMP), so that every thread blocks the signals.
    std::atomic<bool> stopping{false};
    handle_termination_signals([&stopping](int) { stopping.store(true); });
    // A bad key or cluster TLS file is reported before anything starts (each child loads them again).
    if (!o->cluster.key_file.empty()) {
      auto keys = security::load_cluster_keys(o->cluster.key_file);
      if (!keys.ok()) throw Error(keys.status().message());
    }
    if (!o->cluster.tls_cert.empty() || !o->cluster.tls_key.empty() || !o->cluster.tls_ca.empty()) {
      auto tls = security::TlsContext::load({o->cluster.tls_cert, o->cluster.tls_key, o->cluster.tls_ca}, "--cluster-tls");
      if (!tls.ok()) throw Error(tls.status().message());
    }
    // Absolute, so that a child started in another directory finds the same file.
    for (std::string* file : {&o->cluster.key_file, &o->cluster.tls_cert, &o->cluster.tls_key, &o->cluster.tls_ca,
                              &o->tls_cert, &o->tls_key, &o->tls_ca}) {
      if (!file->empty()) *file = fs::absolute(*file).string();
    }
    const bool https = !o->tls_cert.empty() || !o->tls_key.empty() || !o->tls_ca.empty();
    const std::vector<std::string> cluster_args = cluster_flag_args(o->cluster);
    const bool demo = o->model.empty();
    fs::path model = demo ? demo_model(o->cache_dir) : fs::path(o->model);
    const bool random_preset = o->model.rfind("random:", 0) == 0;  // random weights made by each worker
    if (!demo && !random_preset && !fs::exists(model / "config.json")) {
      throw Error("--model: no config.json in " + model.string() + " (or use random:<preset>)");
    }
    // The frontend tokenizes and the workers detokenize with the same files: --tokenizer, else the
    // model's own, else for a random preset the real tokenizer of its vocabulary when data/tokenizers
    // has it (without one, a preset still serves prompts given as token ids).
    std::string tokenizer_dir;
    if (!o->tokenizer.empty() || random_preset) {
      try {
        // Random weights are made lazily: opening the preset only reads its shape.
        const int vocab = random_preset ? model::open_weight_source(o->model, 0)->config().vocab_size : 0;
        tokenizer_dir = find_tokenizer_dir(o->model, o->tokenizer, vocab);
      } catch (const Error& e) {
        if (!o->tokenizer.empty()) throw;  // a named folder without tokenizer.json is the user's mistake
        std::fprintf(stderr, "tandem serve: no tokenizer for %s (%s): prompts must be token ids\n", o->model.c_str(), e.what());
      }
    } else if (fs::exists(model / "tokenizer.json")) {
      tokenizer_dir = model.string();
    }
    const std::string exe = self_exe();
    for (const auto& a : o->worker_args) {
      if (a.rfind("--tensor-parallel-size", 0) == 0 || a.rfind("--device", 0) == 0) {
        throw Error("--worker-arg=" + a + ": give serve's own --device/--tensor-parallel-size (or "
                    "--prefill-/--decode-tensor-parallel-size), which also lay the workers out over the GPUs");
      }
    }

    // The layout, and whether the model splits at each role's TP size, before any process starts: a
    // bad split is a CLI error here, not a worker that fails to load (and is restarted) later.
    LayoutRequest layout;
    layout.num_prefill_workers = o->num_prefill_workers;
    layout.num_decode_workers = o->num_decode_workers;
    layout.device = o->engine == "fake" ? std::string("cpu") : o->device;
    layout.prefill_device = o->engine == "fake" ? std::string() : o->prefill_device;
    layout.decode_device = o->engine == "fake" ? std::string() : o->decode_device;
    layout.tensor_parallel_size = o->tensor_parallel_size;
    layout.prefill_tensor_parallel_size = o->prefill_tensor_parallel_size;
    layout.decode_tensor_parallel_size = o->decode_tensor_parallel_size;
    layout.gpu_memory_utilization = o->gpu_memory_utilization;
    layout.threads = o->threads;
    layout.num_cpu_cores = static_cast<int>(std::thread::hardware_concurrency());
#ifdef TANDEM_HAVE_CUDA
    // Only asked when a GPU may be used: the supervisor itself never makes a CUDA context.
    if (layout.device != "cpu" || !layout.prefill_device.empty() || !layout.decode_device.empty()) {
      layout.num_gpus = backend::cuda::cuda_device_count();
    }
#endif
    const std::vector<WorkerPlacement> placements = plan_layout(layout);
    {
      // Random presets are made lazily: opening one only reads its shape.
      const model::ModelConfig config = random_preset ? model::open_weight_source(o->model, 0)->config()
                                                      : model::load_model_config(model / "config.json");
      const parallel::ModelShape shape = backend::cpu::shard_shape(config);
      for (bool prefill : {true, false}) {
        if (prefill && o->num_prefill_workers == 0) continue;
        const int tp = role_tensor_parallel_size(layout, prefill);
        if (Status split = parallel::check_splittable(shape, tp); !split.ok()) {
          throw Error(role_tensor_parallel_flag(layout, prefill) + " " + std::to_string(tp) + ": " +
                      (demo ? std::string("the demo model") : o->model) + ": " + split.message());
        }
      }
    }
    const bool shared_gpu = std::any_of(placements.begin(), placements.end(),
                                        [](const WorkerPlacement& w) { return !w.gpus.empty() && w.share_count > 1; });
    const std::string layout_text = describe_layout(placements, layout.num_gpus);

    fs::path ready = fs::temp_directory_path() / ("tandem-serve-" + std::to_string(getpid()) + ".json");
    fs::remove(ready);
    std::vector<Child> children;
    Child frontend;
    frontend.name = "frontend";
    frontend.argv = {exe, "--log-level", o->log_level, "frontend", "--host", o->host, "--port", std::to_string(o->port),
                    "--ready-file", ready.string(), "--max-local-prefill", std::to_string(o->max_local_prefill),
                    "--max-prefill-queue", std::to_string(o->max_prefill_queue)};
    if (!tokenizer_dir.empty()) {
      frontend.argv.push_back("--tokenizer");
      frontend.argv.push_back(tokenizer_dir);
    }
    if (!o->reasoning_parser.empty()) frontend.argv.insert(frontend.argv.end(), {"--reasoning-parser", o->reasoning_parser});
    if (!o->tool_call_parser.empty()) frontend.argv.insert(frontend.argv.end(), {"--tool-call-parser", o->tool_call_parser});
    if (o->max_pending_requests > 0) {
      frontend.argv.insert(frontend.argv.end(), {"--max-pending-requests", std::to_string(o->max_pending_requests)});
    }
    if (o->request_timeout_s > 0) {
      char seconds[32];
      std::snprintf(seconds, sizeof(seconds), "%g", o->request_timeout_s);
      frontend.argv.insert(frontend.argv.end(), {"--request-timeout-s", seconds});
    }
    frontend.argv.insert(frontend.argv.end(), cluster_args.begin(), cluster_args.end());
    if (!o->tls_cert.empty()) frontend.argv.insert(frontend.argv.end(), {"--tls-cert", o->tls_cert});
    if (!o->tls_key.empty()) frontend.argv.insert(frontend.argv.end(), {"--tls-key", o->tls_key});
    if (!o->tls_ca.empty()) frontend.argv.insert(frontend.argv.end(), {"--tls-ca", o->tls_ca});
    if (!o->router_mode.empty()) frontend.argv.insert(frontend.argv.end(), {"--router-mode", o->router_mode});
    if (o->migration_limit >= 0) frontend.argv.insert(frontend.argv.end(), {"--migration-limit", std::to_string(o->migration_limit)});
    for (const auto& a : o->frontend_args) frontend.argv.push_back(a);
    // The keys reach the frontend as TANDEM_API_KEY, so that they show in no process list; checked
    // here first, so that a bad one is reported before anything starts.
    auto api_keys = frontend::resolve_api_keys(o->api_keys, std::getenv("TANDEM_API_KEY"));
    if (!api_keys.ok()) throw Error(api_keys.status().message());
    std::vector<std::string> frontend_env;
    for (char** e = environ; *e != nullptr; ++e) {
      if (std::strncmp(*e, "TANDEM_API_KEY=", 15) != 0) frontend_env.emplace_back(*e);
    }
    if (!api_keys->empty()) {
      std::string joined;
      for (const auto& key : *api_keys) joined += (joined.empty() ? "" : ",") + key;
      frontend_env.push_back("TANDEM_API_KEY=" + joined);
    }
    frontend.pid = spawn(frontend.argv, &frontend_env);
    int registry_port = 0;
    for (int i = 0; i < 300 && registry_port == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      std::ifstream in(ready);
      if (in) registry_port = nlohmann::json::parse(in, nullptr, false).value("registry_port", 0);
      if (waitpid(frontend.pid, nullptr, WNOHANG) == frontend.pid) throw Error("the frontend exited at startup (see its log above)");
    }
    fs::remove(ready);
    if (registry_port == 0) throw Error("the frontend did not start within 15 s");

    for (const auto& w : placements) {
      Child c;
      c.name = w.role + "-" + std::to_string(w.index);
      c.device = w.device;
      c.gpus = w.gpus;
      std::sort(c.gpus.begin(), c.gpus.end());
      c.ready_file = (fs::temp_directory_path() / ("tandem-serve-" + std::to_string(getpid()) + "-" + c.name + ".json")).string();
      c.argv = {exe, "--log-level", o->log_level, "worker", "--role", w.role, "--model", model.string(),
                "--frontend", "127.0.0.1:" + std::to_string(registry_port), "--worker-id", c.name,
                "--threads", std::to_string(w.threads), "--engine", o->engine, "--device", w.device,
                "--tensor-parallel-size", std::to_string(w.tensor_parallel_size), "--kv-transfer", o->kv_transfer,
                "--ready-file", c.ready_file};
      if (!w.gpus.empty()) {
        char share[32];
        std::snprintf(share, sizeof(share), "%.6f", w.gpu_memory_utilization);
        c.argv.insert(c.argv.end(), {"--gpu-memory-utilization", share});
      }
      // Workers detokenize (text output, stop strings): they need the frontend's tokenizer too.
      if (!tokenizer_dir.empty()) c.argv.insert(c.argv.end(), {"--tokenizer", tokenizer_dir});
      if (!o->served_model_name.empty()) {
        c.argv.push_back("--served-model-name");
        c.argv.insert(c.argv.end(), o->served_model_name.begin(), o->served_model_name.end());
      }
      if (o->kv_cache_dtype != "auto") c.argv.insert(c.argv.end(), {"--kv-cache-dtype", o->kv_cache_dtype});
      c.argv.insert(c.argv.end(), cluster_args.begin(), cluster_args.end());
      for (const auto& a : o->worker_args) c.argv.push_back(a);
      children.push_back(std::move(c));
    }
    std::fprintf(stderr, "tandem serve: layout %s%s\n", layout_text.c_str(),
                 shared_gpu ? " (workers sharing GPUs start one after another)" : "");
    // Waits for a worker's ready file; false if it exited or took longer than the start timeout.
    auto wait_ready = [&](Child& c) {
      auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(o->worker_start_timeout_s);
      while (!stopping.load() && std::chrono::steady_clock::now() < deadline) {
        std::ifstream in(c.ready_file);
        if (in) {
          c.kv_blocks = nlohmann::json::parse(in, nullptr, false).value("kv_blocks", 0);
          return true;
        }
        // Exited? Asked without reaping it: the supervision loop below restarts it.
        siginfo_t info{};
        if (waitid(P_PID, c.pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == c.pid) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      return false;
    };
    for (size_t i = 0; i < children.size(); ++i) {
      Child& c = children[i];
      // A GPU's free memory is measured by each worker as it starts: the ones before it on the same GPUs
      // must hold their share first (plan_layout lets workers share only whole, equal GPU sets).
      for (size_t j = 0; j < i; ++j) {
        Child& before = children[j];
        if (c.gpus.empty() || before.gpus != c.gpus || before.pid <= 0 || before.kv_blocks > 0) continue;
        if (!wait_ready(before)) {
          std::fprintf(stderr, "tandem serve: %s did not get ready (see its log above); starting %s anyway\n",
                       before.name.c_str(), c.name.c_str());
        }
      }
      c.pid = spawn(c.argv);
      c.started = std::chrono::steady_clock::now();
    }

    const std::string url = (https ? "https://" : "http://") + (o->host == "0.0.0.0" ? std::string("127.0.0.1") : o->host) + ":" + std::to_string(o->port);
    bool announced = false;
    int exit_code = 0;
    while (!stopping.load()) {
      // Over HTTPS the probe (plain HTTP) cannot ask /health: the port accepting is the sign instead.
      const std::string probe_host = o->host == "0.0.0.0" ? "127.0.0.1" : o->host;
      if (!announced && (https ? port_open(probe_host, o->port) : http_ok(probe_host, o->port, "/health"))) {
        announced = true;
        std::printf("\nTandem is serving %s at %s  (%d prefill + %d decode worker%s, %s)\n",
                    demo ? "the demo model (random weights: its text is gibberish; pass --model DIR for real weights)" : model.c_str(),
                    url.c_str(), o->num_prefill_workers, o->num_decode_workers, o->num_decode_workers > 1 ? "s" : "",
                    o->engine == "fake" ? "fake engine" : layout_text.c_str());
        std::printf("Try:\n  curl %s/v1/chat/completions -H 'Content-Type: application/json' \\\n"
                    "    -d '{\"messages\": [{\"role\": \"user\", \"content\": \"Hello!\"}], \"max_tokens\": 32}'\n"
                    "%s"
                    "Metrics: %s/metrics   Stop: Ctrl-C\n\n",
                    url.c_str(), api_keys->empty() ? "" : "  (with an API key: add -H 'Authorization: Bearer <key>')\n",
                    url.c_str());
        std::fflush(stdout);
      }
      int status = 0;
      pid_t pid = waitpid(-1, &status, WNOHANG);
      if (pid == 0 || pid < 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        continue;
      }
      if (pid == frontend.pid) {
        std::fprintf(stderr, "tandem serve: the frontend exited (status %d); stopping\n", status);
        frontend.pid = -1;
        exit_code = 1;
        break;
      }
      for (auto& c : children) {
        if (c.pid != pid) continue;
        ++c.restarts;
        const std::string how = WIFSIGNALED(status) ? "was killed by signal " + std::to_string(WTERMSIG(status))
                                                    : "exited with code " + std::to_string(WEXITSTATUS(status));
        std::fprintf(stderr, "tandem serve: %s (pid %d) %s; restarting it (restart %d)\n", c.name.c_str(), pid, how.c_str(),
                     c.restarts);
        // Back off when it dies right after starting, so a broken worker does not spin.
        if (std::chrono::steady_clock::now() - c.started < std::chrono::seconds(5)) {
          std::this_thread::sleep_for(std::chrono::seconds(std::min(c.restarts, 5)));
        }
        // The same KV pool as before: the memory its first start measured is now partly its peers'.
        if (c.kv_blocks == 0) {
          std::ifstream in(c.ready_file);
          if (in) c.kv_blocks = nlohmann::json::parse(in, nullptr, false).value("kv_blocks", 0);
        }
        if (c.kv_blocks > 0 && !c.gpus.empty()) {
          bool has_blocks_flag = false;
          for (const auto& a : c.argv) has_blocks_flag = has_blocks_flag || a.rfind("--num-kv-blocks", 0) == 0;
          if (!has_blocks_flag) c.argv.insert(c.argv.end(), {"--num-kv-blocks", std::to_string(c.kv_blocks)});
        }
        fs::remove(c.ready_file);
        c.pid = spawn(c.argv);
        c.started = std::chrono::steady_clock::now();
      }
    }
    // Stop workers first (they leave the registry), then the frontend.
    auto stop_all = [&](std::vector<Child*> group) {
      for (Child* c : group) {
        if (c->pid > 0) kill(c->pid, SIGTERM);
      }
      auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(o->stop_timeout_ms);
      for (Child* c : group) {
        while (c->pid > 0) {
          if (waitpid(c->pid, nullptr, WNOHANG) == c->pid) {
            c->pid = -1;
          } else if (std::chrono::steady_clock::now() > deadline) {
            kill(c->pid, SIGKILL);
            waitpid(c->pid, nullptr, 0);
            c->pid = -1;
          } else {
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
          }
        }
      }
    };
    std::vector<Child*> workers;
    for (auto& c : children) workers.push_back(&c);
    stop_all(workers);
    stop_all({&frontend});
    for (auto& c : children) fs::remove(c.ready_file);
    std::fprintf(stderr, "tandem serve: stopped\n");
    return exit_code;
  };
}

}  // namespace tandem::cli
