#include <gtest/gtest.h>
#include <chrono>
#include "tokenizer/tokenizer.h"
using namespace tandem::tokenizer;
TEST(Smoke, Load) {
  for (const char* m : {"qwen3", "llama3_1"}) {
    auto t0 = std::chrono::steady_clock::now();
    auto t = Tokenizer::load(std::string(TANDEM_DATA_DIR) + "/tokenizers/" + m);
    auto t1 = std::chrono::steady_clock::now();
    printf("%s load %.3f s\n", m, std::chrono::duration<double>(t1 - t0).count());
    for (auto s : {"Hello world", "I'M DON'T", "   spaces\t\t\n\n", "12345678", "<|im_start|>hi<|im_end|>", "é vs e\u0301", "👨‍👩‍👧 🇯🇵"}) {
      auto ids = t->encode(s);
      for (auto i : ids) printf("%d,", i);
      printf("  %s\n", t->decode(ids).c_str());
    }
  }
}
