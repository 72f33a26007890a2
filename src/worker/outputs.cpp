// Routing of outputs to the connection that asked (see outputs.h).
#include "worker/outputs.h"

#include <atomic>

#include "worker/convert.h"

namespace tandem::worker {

void Outputs::set_owner(const std::string& request_id, const std::shared_ptr<rpc::Connection>& conn) {
  std::lock_guard<std::mutex> lock(mu_);
  owners_[request_id] = conn;
}

void Outputs::send(const std::string& request_id, const rpc::pb::Envelope& env, bool finished) {
  std::shared_ptr<rpc::Connection> conn;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = owners_.find(request_id);
    if (it == owners_.end()) return;
    conn = it->second.lock();
    if (finished) owners_.erase(it);
  }
  if (conn) conn->send(env);
}

namespace {

// The last output of choice `index`, with nothing generated: how an error or an abort ends a choice.
rpc::pb::Envelope final_output(const std::string& request_id, int index, rpc::pb::FinishReason reason) {
  rpc::pb::Envelope env;
  auto* out = env.mutable_output();
  out->set_request_id(request_id);
  out->set_index(index);
  out->set_finished(true);
  out->set_finish_reason(reason);
  return env;
}

}  // namespace

void Outputs::send_error(const std::string& request_id, const Status& status, int n) {
  for (int i = 0; i < n; ++i) {
    rpc::pb::Envelope env = final_output(request_id, i, rpc::pb::FINISH_ERROR);
    env.mutable_output()->set_error_code(static_cast<int32_t>(status.code()));
    env.mutable_output()->set_error_message(status.message());
    send(request_id, env, i == n - 1);
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
  Status status = core_->engine->submit(std::move(request), [self, remaining, first, info,
                                                             first_logprobs](engine::RequestOutput out) {
    rpc::pb::Envelope env;
    to_proto(out, env.mutable_output());
    if (first->exchange(false)) {
      if (info.present()) *env.mutable_output()->mutable_prefill() = info;
      if (first_logprobs && env.output().logprobs_size() == 0 && env.output().token_ids_size() > 0) {
        *env.mutable_output()->add_logprobs() = *first_logprobs;
      }
    }
    const bool last = out.finished && remaining->fetch_sub(1) == 1;
    self->send(out.request_id, env, last);
  });
  if (!status.ok()) send_error(id, status, n);
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
  std::lock_guard<std::mutex> lock(mu_);
  return owners_.empty();
}

}  // namespace tandem::worker
