// Fuzz target: an OpenAI request body -> GenerationRequest (parse_generation_request), for
// /v1/completions and /v1/chat/completions. Bad input must come back as an ApiError, never throw.
#include <cstddef>
#include <cstdint>
#include <string>

#include "frontend/openai.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool chat = data[0] & 1;
  std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
  tandem::frontend::GenerationRequest request;
  auto error = tandem::frontend::parse_generation_request(body, chat, &request);
  if (error) {
    if (error->status < 400 || error->status > 599) __builtin_trap();
    (void)tandem::frontend::error_body(*error);
  } else {
    // What the lifecycle does next with a parsed request.
    (void)request.sampling.SerializeAsString();
    if (chat) (void)request.messages.dump();
    if (chat) (void)tandem::frontend::tool_call_constraint(request.tools, tandem::frontend::ToolParserKind::kHermes);
  }
  return 0;
}
