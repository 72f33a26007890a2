// Conversions between the engine's request/output types and the request plane's messages: the one
// place either side of the worker turns one into the other.
#pragma once

#include "engine/request.h"
#include "rpc/messages.pb.h"

namespace tandem::worker {

engine::SamplingParams from_proto(const rpc::pb::SamplingParams& p);
// Every field (from_proto(to_proto(s)) == s).
void to_proto(const engine::SamplingParams& in, rpc::pb::SamplingParams* out);
void to_proto(const engine::TokenLogprobs& in, rpc::pb::TokenLogprobs* out);
engine::TokenLogprobs from_proto(const rpc::pb::TokenLogprobs& in);
rpc::pb::FinishReason to_proto(engine::FinishReason reason);
// Fills `out` from `in` (all but prefill info).
void to_proto(const engine::RequestOutput& in, rpc::pb::Output* out);

}  // namespace tandem::worker
