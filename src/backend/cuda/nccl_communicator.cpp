// NCCL communicators (see nccl_communicator.h): libnccl loaded with dlopen, the entry points resolved once,
// the collectives as stream-ordered calls and as the blocking parallel::Communicator forms.
#include "backend/cuda/nccl_communicator.h"

#include <cuda_runtime.h>
#include <dlfcn.h>
#include <nccl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>
#include <cstdlib>
#include <mutex>

#include "backend/cuda/cuda_log.h"

namespace tandem::backend::cuda {

// What the members of one in-process group share: the first failure and every member's NCCL handle, so
// one abort reaches all of them.
struct NcclGroup {
  std::mutex mu;
  Status failure;                    // GUARDED_BY(mu)
  std::vector<ncclComm_t> comms;     // GUARDED_BY(mu): null once aborted or destroyed
  std::atomic<bool> failed{false};   // failure.ok() == !failed, readable without the lock
};

namespace {

// The NCCL entry points we use, resolved from the loaded library.
struct NcclApi {
  decltype(&ncclGetVersion) get_version = nullptr;
  decltype(&ncclGetUniqueId) get_unique_id = nullptr;
  decltype(&ncclCommInitRank) comm_init_rank = nullptr;
  decltype(&ncclCommInitRankConfig) comm_init_rank_config = nullptr;
  decltype(&ncclCommGetAsyncError) async_error = nullptr;
  decltype(&ncclCommDestroy) comm_destroy = nullptr;
  decltype(&ncclCommAbort) comm_abort = nullptr;
  decltype(&ncclGetErrorString) error_string = nullptr;
  decltype(&ncclAllReduce) all_reduce = nullptr;
  decltype(&ncclAllGather) all_gather = nullptr;
  decltype(&ncclBroadcast) broadcast = nullptr;
  decltype(&ncclSend) send = nullptr;
  decltype(&ncclRecv) recv = nullptr;
  decltype(&ncclGroupStart) group_start = nullptr;
  decltype(&ncclGroupEnd) group_end = nullptr;
  int version = 0;
  Status status;  // why it is unusable, when it is
};

const NcclApi& api() {
  static const NcclApi loaded = [] {
    NcclApi a;
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("TANDEM_NCCL_LIBRARY"); env != nullptr && *env) candidates.push_back(env);
    candidates.insert(candidates.end(), {"libnccl.so.2", "/usr/local/cuda/lib/libnccl.so.2", "/usr/local/cuda/lib64/libnccl.so.2"});
    void* lib = nullptr;
    std::string tried;
    for (const std::string& name : candidates) {
      lib = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (lib != nullptr) break;
      tried += (tried.empty() ? "" : ", ") + name;
    }
    if (lib == nullptr) {
      a.status = Status::Unavailable("NCCL is not installed here (tried " + tried +
                                     "; set TANDEM_NCCL_LIBRARY to libnccl.so.2)");
      return a;
    }
    bool complete = true;
    auto resolve = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
      if (fn == nullptr) complete = false;
    };
    resolve(a.get_version, "ncclGetVersion");
    resolve(a.get_unique_id, "ncclGetUniqueId");
    resolve(a.comm_init_rank, "ncclCommInitRank");
    resolve(a.comm_init_rank_config, "ncclCommInitRankConfig");
    resolve(a.async_error, "ncclCommGetAsyncError");
    resolve(a.comm_destroy, "ncclCommDestroy");
    resolve(a.comm_abort, "ncclCommAbort");
    resolve(a.error_string, "ncclGetErrorString");
    resolve(a.all_reduce, "ncclAllReduce");
    resolve(a.all_gather, "ncclAllGather");
    resolve(a.broadcast, "ncclBroadcast");
    resolve(a.send, "ncclSend");
    resolve(a.recv, "ncclRecv");
    resolve(a.group_start, "ncclGroupStart");
    resolve(a.group_end, "ncclGroupEnd");
    if (!complete || a.get_version(&a.version) != ncclSuccess) {
      a.status = Status::Unavailable("the NCCL library found lacks entry points this build needs (NCCL 2.14 or later)");
    }
    return a;
  }();
  return loaded;
}

Status nccl_error(const char* call, int device, ncclResult_t r) {
  return Status::Internal(std::string(call) + " failed on cuda:" + std::to_string(device) + ": " + api().error_string(r));
}

ncclDataType_t nccl_type(NcclType t) {
  switch (t) {
    case NcclType::kFloat32: return ncclFloat32;
    case NcclType::kBFloat16: return ncclBfloat16;
    case NcclType::kInt32: return ncclInt32;
    case NcclType::kUint8: return ncclUint8;
  }
  return ncclUint8;
}

#define TANDEM_NCCL_RETURN(call, device)                        \
  do {                                                          \
    ncclResult_t tandem_r_ = (call);                            \
    if (tandem_r_ != ncclSuccess) return nccl_error(#call, (device), tandem_r_); \
  } while (0)

// For calls on a communicator that may be non-blocking: ncclInProgress is its "issued, settle() later".
#define TANDEM_NCCL_ISSUED(call, device)                                                       \
  do {                                                                                         \
    ncclResult_t tandem_r_ = (call);                                                           \
    if (tandem_r_ != ncclSuccess && tandem_r_ != ncclInProgress) return nccl_error(#call, (device), tandem_r_); \
  } while (0)

}  // namespace

std::string encode_nccl_id(const NcclId& id) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * id.size());
  for (std::byte b : id) {
    out.push_back(kHex[static_cast<unsigned>(b) >> 4]);
    out.push_back(kHex[static_cast<unsigned>(b) & 15]);
  }
  return out;
}

StatusOr<NcclId> decode_nccl_id(const std::string& hex) {
  NcclId id{};
  if (hex.size() != 2 * id.size()) return Status::InvalidArgument("an NCCL id is 256 hex digits, got " + std::to_string(hex.size()) + " characters");
  auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  for (size_t i = 0; i < id.size(); ++i) {
    const int hi = digit(hex[2 * i]), lo = digit(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return Status::InvalidArgument("an NCCL id is lower-case hex");
    id[i] = static_cast<std::byte>(hi * 16 + lo);
  }
  return id;
}

Status nccl_available() { return api().status; }

std::string nccl_version() {
  const NcclApi& a = api();
  if (!a.status.ok()) return "";
  // NCCL >= 2.9 encodes X*10000 + Y*100 + Z.
  return std::to_string(a.version / 10000) + "." + std::to_string(a.version / 100 % 100) + "." + std::to_string(a.version % 100);
}

StatusOr<NcclId> make_nccl_id() {
  TANDEM_RETURN_IF_ERROR(nccl_available());
  ncclUniqueId raw;
  TANDEM_NCCL_RETURN(api().get_unique_id(&raw), -1);
  NcclId id;
  static_assert(sizeof(raw) == std::tuple_size_v<NcclId>);
  std::memcpy(id.data(), &raw, id.size());
  return id;
}

NcclCommunicator::NcclCommunicator(void* comm, int rank, int world, int device, std::shared_ptr<NcclGroup> group,
                                   bool nonblocking)
    : comm_(comm), rank_(rank), world_(world), device_(device), nonblocking_(nonblocking), group_(std::move(group)) {}

NcclCommunicator::~NcclCommunicator() {
  cudaSetDevice(device_);
  if (stream_ != nullptr) {
    cudaStreamSynchronize(stream_);
    cudaStreamDestroy(stream_);
  }
  ncclComm_t mine = nullptr;
  {
    std::lock_guard lock(group_->mu);
    for (ncclComm_t& c : group_->comms) {
      if (c == static_cast<ncclComm_t>(comm_)) std::swap(mine, c);
    }
  }
  // A healthy communicator is destroyed (which may wait for the other ranks' destroys: outside the lock
  // they may need); an aborted one is gone already.
  if (mine != nullptr) api().comm_destroy(mine);
}

StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::join(const NcclId& id, int rank, int world, int device,
                                                                   int timeout_ms) {
  TANDEM_RETURN_IF_ERROR(nccl_available());
  if (world < 1 || rank < 0 || rank >= world) {
    return Status::InvalidArgument("NCCL rank " + std::to_string(rank) + " is outside [0, " + std::to_string(world) + ")");
  }
  if (cudaError_t err = cudaSetDevice(device); err != cudaSuccess) {
    return Status::Internal("cudaSetDevice(" + std::to_string(device) + ") failed: " + cudaGetErrorString(err));
  }
  ncclUniqueId raw;
  std::memcpy(&raw, id.data(), id.size());
  ncclComm_t comm = nullptr;
  if (timeout_ms <= 0) {
    TANDEM_NCCL_RETURN(api().comm_init_rank(&comm, world, raw, rank), device);
  } else {
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    TANDEM_NCCL_ISSUED(api().comm_init_rank_config(&comm, world, raw, rank, &config), device);
  }
  auto group = std::make_shared<NcclGroup>();
  group->comms.push_back(comm);
  auto joined = std::unique_ptr<NcclCommunicator>(new NcclCommunicator(comm, rank, world, device, std::move(group), timeout_ms > 0));
  if (timeout_ms > 0) TANDEM_RETURN_IF_ERROR(joined->settle(timeout_ms));
  return joined;
}

StatusOr<std::vector<std::unique_ptr<NcclCommunicator>>> make_nccl_communicators(std::span<const int> devices) {
  TANDEM_RETURN_IF_ERROR(nccl_available());
  if (devices.empty()) return Status::InvalidArgument("an NCCL group needs at least one device");
  StatusOr<NcclId> id = make_nccl_id();
  TANDEM_RETURN_IF_ERROR(id.status());
  ncclUniqueId raw;
  std::memcpy(&raw, id->data(), id->size());
  const int world = static_cast<int>(devices.size());
  std::vector<ncclComm_t> comms(devices.size(), nullptr);
  // One thread joins every rank: inside a group call, ncclCommInitRank does not block per rank.
  TANDEM_NCCL_RETURN(api().group_start(), devices[0]);
  for (int r = 0; r < world; ++r) {
    if (cudaError_t err = cudaSetDevice(devices[r]); err != cudaSuccess) {
      api().group_end();
      return Status::Internal("cudaSetDevice(" + std::to_string(devices[r]) + ") failed: " + cudaGetErrorString(err));
    }
    ncclResult_t res = api().comm_init_rank(&comms[r], world, raw, r);
    if (res != ncclSuccess) {
      api().group_end();
      return nccl_error("ncclCommInitRank", devices[r], res);
    }
  }
  TANDEM_NCCL_RETURN(api().group_end(), devices[0]);
  auto group = std::make_shared<NcclGroup>();
  group->comms = comms;
  std::vector<std::unique_ptr<NcclCommunicator>> out;
  for (int r = 0; r < world; ++r) {
    out.push_back(std::unique_ptr<NcclCommunicator>(new NcclCommunicator(comms[r], r, world, devices[r], group)));
  }
  return out;
}

Status NcclCommunicator::settle(int timeout_ms) {
  if (!nonblocking_) return failure();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(std::max(1, timeout_ms));
  for (;;) {
    TANDEM_RETURN_IF_ERROR(failure());
    ncclResult_t state = ncclInProgress;
    ncclResult_t r = api().async_error(static_cast<ncclComm_t>(comm_), &state);
    if (r != ncclSuccess) state = r;
    if (state == ncclSuccess) return Status::Ok();
    if (state != ncclInProgress) {
      Status failed = nccl_error("ncclCommGetAsyncError", device_, state);
      abort(failed);
      return failed;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      Status late = Status::DeadlineExceeded("NCCL on cuda:" + std::to_string(device_) + ": the peer did not answer within " +
                                             std::to_string(timeout_ms) + " ms");
      abort(late);
      return late;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

void destroy_nccl_communicators(std::vector<std::unique_ptr<NcclCommunicator>>& comms) {
  std::vector<std::thread> threads;
  for (auto& c : comms) threads.emplace_back([&c] { c.reset(); });
  for (auto& t : threads) t.join();
  comms.clear();
}

Status NcclCommunicator::failure() const {
  if (!group_->failed.load(std::memory_order_acquire)) return Status::Ok();
  std::lock_guard lock(group_->mu);
  return group_->failure;
}

void NcclCommunicator::abort(const Status& reason) {
  std::lock_guard lock(group_->mu);
  if (group_->failure.ok()) group_->failure = reason.ok() ? Status::Internal("NCCL communicator aborted") : reason;
  group_->failed.store(true, std::memory_order_release);
  // ncclCommAbort may be called while another thread waits on the communicator: that is how a rank
  // stuck waiting for a lost peer is released.
  for (ncclComm_t& c : group_->comms) {
    if (c != nullptr) api().comm_abort(c);
    c = nullptr;
  }
  log_error(std::string("nccl: group aborted: ") + group_->failure.message());
}

Status NcclCommunicator::all_reduce_sum(void* data, size_t count, NcclType type, CUstream_st* stream) {
  TANDEM_RETURN_IF_ERROR(failure());
  TANDEM_NCCL_ISSUED(api().all_reduce(data, data, count, nccl_type(type), ncclSum, static_cast<ncclComm_t>(comm_), stream), device_);
  return Status::Ok();
}

Status NcclCommunicator::all_gather(const void* send, void* recv, size_t send_bytes, CUstream_st* stream) {
  TANDEM_RETURN_IF_ERROR(failure());
  TANDEM_NCCL_ISSUED(api().all_gather(send, recv, send_bytes, ncclUint8, static_cast<ncclComm_t>(comm_), stream), device_);
  return Status::Ok();
}

Status NcclCommunicator::broadcast(void* data, size_t bytes, int root, CUstream_st* stream) {
  TANDEM_RETURN_IF_ERROR(failure());
  if (root < 0 || root >= world_) return Status::InvalidArgument("broadcast: root " + std::to_string(root) + " is not a rank");
  TANDEM_NCCL_ISSUED(api().broadcast(data, data, bytes, ncclUint8, root, static_cast<ncclComm_t>(comm_), stream), device_);
  return Status::Ok();
}

Status NcclCommunicator::send(const void* data, size_t bytes, int peer, CUstream_st* stream) {
  TANDEM_RETURN_IF_ERROR(failure());
  TANDEM_NCCL_ISSUED(api().send(data, bytes, ncclUint8, peer, static_cast<ncclComm_t>(comm_), stream), device_);
  return Status::Ok();
}

Status NcclCommunicator::recv(void* data, size_t bytes, int peer, CUstream_st* stream) {
  TANDEM_RETURN_IF_ERROR(failure());
  TANDEM_NCCL_ISSUED(api().recv(data, bytes, ncclUint8, peer, static_cast<ncclComm_t>(comm_), stream), device_);
  return Status::Ok();
}

Status NcclCommunicator::group_start() {
  TANDEM_RETURN_IF_ERROR(nccl_available());
  TANDEM_NCCL_RETURN(api().group_start(), -1);
  return Status::Ok();
}

Status NcclCommunicator::group_end() {
  TANDEM_RETURN_IF_ERROR(nccl_available());
  TANDEM_NCCL_ISSUED(api().group_end(), -1);
  return Status::Ok();
}

Status NcclCommunicator::ensure_own_stream() {
  if (cudaError_t err = cudaSetDevice(device_); err != cudaSuccess) {
    return Status::Internal("cudaSetDevice(" + std::to_string(device_) + ") failed: " + cudaGetErrorString(err));
  }
  if (stream_ == nullptr && cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking) != cudaSuccess) {
    stream_ = nullptr;
    return Status::Internal("cudaStreamCreate failed on cuda:" + std::to_string(device_));
  }
  return Status::Ok();
}

Status NcclCommunicator::wait_own_stream(const char* what) {
  cudaError_t err = cudaStreamSynchronize(stream_);
  if (err != cudaSuccess) {
    Status failed = Status::Internal(std::string(what) + " on cuda:" + std::to_string(device_) + ": " + cudaGetErrorString(err));
    abort(failed);
    return failed;
  }
  return failure();
}

Status NcclCommunicator::all_reduce_sum(std::span<float> data) {
  TANDEM_RETURN_IF_ERROR(ensure_own_stream());
  TANDEM_RETURN_IF_ERROR(all_reduce_sum(data.data(), data.size(), NcclType::kFloat32, stream_));
  return wait_own_stream("all_reduce_sum");
}

Status NcclCommunicator::all_gather(std::span<const std::byte> send, std::span<std::byte> recv) {
  if (recv.size() != send.size() * static_cast<size_t>(world_)) {
    return Status::InvalidArgument("all_gather: receive buffer must be world_size times the send buffer");
  }
  TANDEM_RETURN_IF_ERROR(ensure_own_stream());
  TANDEM_RETURN_IF_ERROR(all_gather(send.data(), recv.data(), send.size(), stream_));
  return wait_own_stream("all_gather");
}

Status NcclCommunicator::broadcast(std::span<std::byte> data, int root) {
  TANDEM_RETURN_IF_ERROR(ensure_own_stream());
  TANDEM_RETURN_IF_ERROR(broadcast(data.data(), data.size(), root, stream_));
  return wait_own_stream("broadcast");
}

}  // namespace tandem::backend::cuda
