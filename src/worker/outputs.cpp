// Routing of outputs to the connection that asked, through the sender thread (see outputs.h).
#include "worker/outputs.h"

#include <pthread.h>

#include <atomic>

#include "worker/convert.h"

namespace tandem::worker {

Outputs::Outputs(std::shared_ptr<Core> core) : core_(std::move(core)) {
  sender_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "tandem-outputs");
    sender_loop();
  });
}

Outputs::~Outputs() {
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    stop_ = true;
  }
  queue_cv_.notify_all();
  sender_.join();
}

void Outputs::set_owner(const std::string& request_id, const std::shared_ptr<rpc::Connection>& conn) {
  std::lock_guard<std::mutex> lock(mu_);
  owners_[request_id] = conn;
}

void Outputs::enqueue(Queued item) {
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    // The sender looks at the queue again before it sleeps: only an empty queue needs a wake-up, so a
    // step's outputs cost one notify, not one each.
    wake = queue_.empty();
    queue_.push_back(std::move(item));
  }
  if (wake) queue_cv_.notify_all();
}

void Outputs::send(const std::string& request_id, rpc::pb::Output output, bool finished) {
  Queued item;
  item.request_id = request_id;
  item.output = std::move(output);
  item.finished = finished;
  enqueue(std::move(item));
}

namespace {

// The last output of choice `index`, with nothing generated: how an error or an abort ends a choice.
rpc::pb::Output final_output(const std::string& request_id, int index, rpc::pb::FinishReason reason) {
  rpc::pb::Output out;
  out.set_request_id(request_id);
  out.set_index(index);
  out.set_finished(true);
  out.set_finish_reason(reason);
  return out;
}

}  // namespace

void Outputs::send_error(const std::string& request_id, const Status& status, int n) {
  for (int i = 0; i < n; ++i) {
    rpc::pb::Output out = final_output(request_id, i, rpc::pb::FINISH_ERROR);
    out.set_error_code(static_cast<int32_t>(status.code()));
    out.set_error_message(status.message());
    send(request_id, std::move(out), i == n - 1);
  }
}

void Outputs::finish_aborted(const std::string& request_id, int n) {
  for (int i = 0; i < n; ++i) send(request_id, final_output(request_id, i, rpc::pb::FINISH_ABORT), i == n - 1);
}

void Outputs::submit(engine::Request request, const rpc::pb::PrefillInfo& info,
                     std::optional<rpc::pb::TokenLogprobs> first_logprobs) {
  const std::string id = request.request_id;
  const int n = request.sampling.n;
  auto remaining = std::make_shared<std::atomic<int>>(n);
  auto first = std::make_shared<std::atomic<bool>>(true);
  auto self = shared_from_this();
  // On the engine thread: queue the output as it is; the sender converts it.
  Status status = core_->engine->submit(std::move(request), [self, remaining, first, info,
                                                             first_logprobs](engine::RequestOutput out) {
    Queued item;
    if (first->exchange(false)) {
      if (info.present()) *item.output.mutable_prefill() = info;
      if (first_logprobs && out.logprobs.empty() && !out.token_ids.empty()) *item.output.add_logprobs() = *first_logprobs;
    }
    item.finished = out.finished && remaining->fetch_sub(1) == 1;
    item.engine_output = std::move(out);
    self->enqueue(std::move(item));
  });
  if (!status.ok()) send_error(id, status, n);
}

void Outputs::sender_loop() {
  std::vector<Queued> items;
  std::vector<std::shared_ptr<rpc::Connection>> owner_of;  // [items.size()]
  rpc::pb::Envelope env;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(queue_mu_);
      sending_ = false;
      queue_cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything is sent
      items.swap(queue_);
      sending_ = true;
    }
    // Every owner of the round under one lock.
    owner_of.assign(items.size(), nullptr);
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (size_t i = 0; i < items.size(); ++i) {
        auto it = owners_.find(items[i].engine_output ? items[i].engine_output->request_id : items[i].request_id);
        if (it == owners_.end()) continue;
        owner_of[i] = it->second.lock();
        if (items[i].finished) owners_.erase(it);
      }
    }
    for (size_t i = 0; i < items.size(); ++i) {
      if (!owner_of[i]) continue;
      Queued& item = items[i];
      rpc::pb::Output* out = env.mutable_output();
      if (item.engine_output) {
        // What rode on it first (prefill info, the first token's logprobs) stays; to_proto adds the rest.
        out->Clear();
        to_proto(*item.engine_output, out);
        if (item.output.has_prefill()) out->mutable_prefill()->Swap(item.output.mutable_prefill());
        if (out->logprobs_size() == 0 && item.output.logprobs_size() > 0) out->mutable_logprobs()->Swap(item.output.mutable_logprobs());
      } else {
        out->Swap(&item.output);
      }
      // The connection's writer joins what it finds queued into one write.
      owner_of[i]->send(env);
    }
    items.clear();
  }
}

std::vector<std::string> Outputs::owned_by(const std::shared_ptr<rpc::Connection>& conn) const {
  std::vector<std::string> ids;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [id, owner] : owners_) {
    auto o = owner.lock();
    if (!o || o == conn) ids.push_back(id);
  }
  return ids;
}

bool Outputs::empty() const {
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    if (!queue_.empty() || sending_) return false;
  }
  std::lock_guard<std::mutex> lock(mu_);
  return owners_.empty();
}

}  // namespace tandem::worker
