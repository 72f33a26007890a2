// Fuzz target: chat templates. An even first byte renders the rest as a template over a fixed
// conversation; an odd one renders Qwen3's real template over the rest read as JSON messages (and
// tools). A bad template must throw tandem::Error, a bad conversation return an error Status.
#include <cstddef>
#include <cstdint>
#include <ctime>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace {
using tandem::tokenizer::ChatInputs;
using tandem::tokenizer::ChatTemplate;

const ChatTemplate& qwen3_template() {
  static const auto t = std::make_unique<ChatTemplate>(
      tandem::tokenizer::Tokenizer::load(TANDEM_DATA_DIR "/tokenizers/qwen3")->chat_template());
  return *t;
}

ChatInputs fixed_inputs() {
  ChatInputs in;
  in.messages = nlohmann::ordered_json::parse(
      R"([{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"},)"
      R"({"role":"assistant","content":"Hello","reasoning_content":"think"},{"role":"user","content":[1,2]}])");
  in.tools = nlohmann::ordered_json::parse(R"([{"type":"function","function":{"name":"f","parameters":{}}}])");
  in.add_generation_prompt = true;
  in.bos_token = "<s>";
  in.eos_token = "</s>";
  in.extra = {{"enable_thinking", false}};
  std::tm now{};
  now.tm_year = 126;
  now.tm_mday = 2;
  in.now = now;
  return in;
}
}  // namespace

// Loading the tokenizer takes seconds under ASan on a loaded machine: done here, before libFuzzer's
// per-input timeout starts counting (in the first input it read as a 10 s hang).
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  (void)qwen3_template();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if ((data[0] & 1) == 0) {
    static const ChatInputs inputs = fixed_inputs();
    try {
      ChatTemplate t(rest);
      (void)t.render(inputs);
    } catch (const tandem::Error&) {
    }
    return 0;
  }
  auto json = nlohmann::ordered_json::parse(rest, nullptr, false);
  if (json.is_discarded()) return 0;
  ChatInputs in = fixed_inputs();
  if (json.is_object() && json.contains("messages")) {
    in.messages = json["messages"];
    if (json.contains("tools")) in.tools = json["tools"];
  } else {
    in.messages = json;
  }
  in.add_generation_prompt = data[0] & 2;
  (void)qwen3_template().render(in);
  return 0;
}
