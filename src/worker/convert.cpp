// Engine types <-> request plane messages (see convert.h).
#include "worker/convert.h"

namespace tandem::worker {

engine::SamplingParams from_proto(const rpc::pb::SamplingParams& p) {
  engine::SamplingParams s;
  s.temperature = p.temperature();
  s.top_p = p.top_p();
  s.top_k = p.top_k();
  s.min_p = p.min_p();
  if (p.has_seed()) s.seed = p.seed();
  s.presence_penalty = p.presence_penalty();
  s.frequency_penalty = p.frequency_penalty();
  s.repetition_penalty = p.repetition_penalty();
  for (int i = 0; i < p.logit_bias_ids_size() && i < p.logit_bias_values_size(); ++i) {
    s.logit_bias.emplace_back(p.logit_bias_ids(i), p.logit_bias_values(i));
  }
  s.max_tokens = p.max_tokens();
  s.min_tokens = p.min_tokens();
  s.stop_token_ids.assign(p.stop_token_ids().begin(), p.stop_token_ids().end());
  s.stop.assign(p.stop().begin(), p.stop().end());
  s.ignore_eos = p.ignore_eos();
  s.logprobs = p.logprobs();
  s.n = p.n();
  s.skip_special_tokens = p.skip_special_tokens();
  s.guided = p.guided();
  return s;
}

void to_proto(const engine::SamplingParams& s, rpc::pb::SamplingParams* p) {
  p->set_temperature(s.temperature);
  p->set_top_p(s.top_p);
  p->set_top_k(s.top_k);
  p->set_min_p(s.min_p);
  if (s.seed) {
    p->set_has_seed(true);
    p->set_seed(*s.seed);
  }
  p->set_presence_penalty(s.presence_penalty);
  p->set_frequency_penalty(s.frequency_penalty);
  p->set_repetition_penalty(s.repetition_penalty);
  for (const auto& [token, bias] : s.logit_bias) {
    p->add_logit_bias_ids(token);
    p->add_logit_bias_values(bias);
  }
  p->set_max_tokens(s.max_tokens);
  p->set_min_tokens(s.min_tokens);
  p->mutable_stop_token_ids()->Add(s.stop_token_ids.begin(), s.stop_token_ids.end());
  for (const auto& text : s.stop) p->add_stop(text);
  p->set_ignore_eos(s.ignore_eos);
  p->set_logprobs(s.logprobs);
  p->set_n(s.n);
  p->set_skip_special_tokens(s.skip_special_tokens);
  p->set_guided(s.guided);
}

void to_proto(const engine::TokenLogprobs& in, rpc::pb::TokenLogprobs* out) {
  out->set_token_id(in.token_id);
  out->set_logprob(in.logprob);
  for (const auto& t : in.top) {
    auto* top = out->add_top();
    top->set_token_id(t.token_id);
    top->set_logprob(t.logprob);
  }
}

engine::TokenLogprobs from_proto(const rpc::pb::TokenLogprobs& in) {
  engine::TokenLogprobs out{in.token_id(), in.logprob(), {}};
  for (const auto& t : in.top()) out.top.push_back({t.token_id(), t.logprob()});
  return out;
}

rpc::pb::FinishReason to_proto(engine::FinishReason reason) {
  switch (reason) {
    case engine::FinishReason::kNone: return rpc::pb::FINISH_NONE;
    case engine::FinishReason::kStop: return rpc::pb::FINISH_STOP;
    case engine::FinishReason::kLength: return rpc::pb::FINISH_LENGTH;
    case engine::FinishReason::kAbort: return rpc::pb::FINISH_ABORT;
    case engine::FinishReason::kError: return rpc::pb::FINISH_ERROR;
  }
  return rpc::pb::FINISH_ERROR;
}

void to_proto(const engine::RequestOutput& in, rpc::pb::Output* out) {
  out->set_request_id(in.request_id);
  out->set_index(in.index);
  out->mutable_token_ids()->Add(in.token_ids.begin(), in.token_ids.end());
  out->set_text(in.text);
  for (const auto& lp : in.logprobs) to_proto(lp, out->add_logprobs());
  out->set_finished(in.finished);
  out->set_finish_reason(to_proto(in.finish_reason));
  out->set_stop_reason(in.stop_reason);
  if (!in.error.ok()) {
    out->set_error_code(static_cast<int32_t>(in.error.code()));
    out->set_error_message(in.error.message());
  }
  out->set_num_prompt_tokens(in.num_prompt_tokens);
  out->set_num_cached_prompt_tokens(in.num_cached_prompt_tokens);
  out->set_num_output_tokens(in.num_output_tokens);
}

}  // namespace tandem::worker
