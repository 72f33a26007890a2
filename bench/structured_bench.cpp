// structured_bench: the cost of constrained decoding on Qwen3's real vocabulary (151,936 tokens) for
// JSON schemas of realistic size: compile time per schema (DFA; DFA plus every state's mask), the
// per-token mask time of one sequence (fill_mask + advance), cold (the grammar's first sequence, masks
// computed as states are first reached) and warm (a later sequence, masks cached), the time to mask a
// 64-sequence batch per step (what the engine's mask thread must finish while the device runs the
// step), and the sampler's extra cost for applying a mask to a row.
//
// A "sequence" replays the real tokenizer's tokens of a valid document, as a model writing it would.
//
// The schemas are bench/schemas/*.json, the files the offline bench's --guided-json runs use.
//
//   build/bench/structured_bench [--tokenizer DIR] [--schemas DIR] [--reps N]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/sampler.h"
#include "structured/token_constraint.h"
#include "tokenizer/tokenizer.h"

using namespace tandem;
using Clock = std::chrono::steady_clock;

namespace {

double us_since(Clock::time_point t) { return std::chrono::duration<double, std::micro>(Clock::now() - t).count(); }

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5))];
}

struct Case {
  const char* name;
  const char* schema_file;  // in bench/schemas (as `tandem bench --guided-json` uses them); "" = json_object
  const char* document;     // a valid reply
};

// A schema file's text; exits naming the file when it cannot be read.
std::string read_schema(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    std::fprintf(stderr, "structured_bench: cannot read %s (give the folder of the schemas with --schemas)\n", path.c_str());
    std::exit(1);
  }
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

const Case kCases[] = {
    {"person (7 props, nested, pattern, anyOf)",
     "person.json",
     R"({"name": "Maria Fernández", "age": 34, "email": "maria.fernandez@example.com", "tags": ["admin", "staff"], "address": {"street": "12 Rue de la Paix", "city": "Paris", "zip": "75002"}, "active": true, "nickname": null})"},
    {"order ($defs, array of objects, enum, const)",
     "order.json",
     R"({"id": 100234, "status": "paid", "items": [{"sku": "ABC-123", "name": "Blue mug", "qty": 2, "price": 7.5}, {"sku": "XYZ-900", "name": "Tea, green, 100 g", "qty": 1, "price": 12.99}, {"sku": "KLM-007", "qty": 12, "price": 0.35}], "currency": "EUR", "customer": {"id": 77, "name": "Jan de Vries", "vip": false}, "note": "Leave at the door, please."})"},
    {"issue (28 props, 3 levels, arrays of objects, date patterns)",
     "issue.json",
     R"({"id": 2048112, "number": 421, "title": "Decode step slows down with 64 sequences and long prompts", "state": "open", "locked": false, "body": "Steps to reproduce:\n1. Start the server\n2. Send 64 requests\n\nExpected: flat ITL.", "user": {"login": "octo-dev", "id": 5501, "type": "User", "site_admin": false}, "labels": [{"name": "bug", "color": "d73a4a", "default": true}, {"name": "performance", "color": "0e8a16"}], "assignees": ["alice", "bob"], "milestone": {"title": "v0.9", "due_on": "2026-12-15", "open_issues": 12}, "comments": 7, "created_at": "2026-11-30T08:15:00Z", "updated_at": "2026-12-01T17:42:10Z", "closed_at": null, "author_association": "CONTRIBUTOR", "reactions": {"total_count": 5, "plus_one": 4, "heart": 1}, "priority": 1, "estimate_hours": 6.5, "component": "engine", "regression": true, "affected_versions": ["v0.8.1", "v0.8.2"], "links": [{"kind": "relates", "issue": 398}], "summary": "ITL grows by 20% at 64 sequences.", "needs_triage": false, "votes": 12, "os": "linux", "reproducible": true})"},
    {"json_object (any object, depth 4)", "",
     R"({"query": "weather in Oslo", "results": [{"day": "Mon", "temp": -3.5, "sky": "snow"}, {"day": "Tue", "temp": 1, "sky": null}], "units": {"temp": "C"}, "ok": true})"},
};

}  // namespace

int main(int argc, char** argv) {
  std::string tok_dir = std::string(TANDEM_DATA_DIR) + "/tokenizers/qwen3";
  std::string schemas_dir = TANDEM_BENCH_SCHEMAS_DIR;
  int reps = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--tokenizer")) tok_dir = argv[i + 1];
    else if (!std::strcmp(argv[i], "--schemas")) schemas_dir = argv[i + 1];
    else if (!std::strcmp(argv[i], "--reps")) reps = std::atoi(argv[i + 1]);
  }
  const int kVocab = 151936;
  auto tok = tokenizer::Tokenizer::load(tok_dir);
  auto t0 = Clock::now();
  std::vector<std::optional<std::string>> bytes(tok->vocab_size());
  for (int32_t id = 0; id < tok->vocab_size(); ++id) {
    if (tok->is_special(id)) continue;
    if (auto b = tok->token_bytes(id)) bytes[id] = std::string(*b);
  }
  auto vocab = std::make_shared<const structured::TokenVocabulary>(bytes, kVocab);
  std::printf("vocabulary: %d tokens, %zu trie nodes, built in %.1f ms\n\n", vocab->size(), vocab->num_trie_nodes(), us_since(t0) / 1000);

  std::printf("| schema | DFA states | compile (DFA) ms | compile + all masks ms | tokens | cold median us/token | cold p99 | cold mean | warm median us/token | warm p99 | 64-seq batch median us/step |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (const Case& c : kCases) {
    const std::string spec = std::string(c.schema_file).empty()
                                 ? std::string(R"({"json_object": true})")
                                 : R"({"json_schema": )" + read_schema(schemas_dir + "/" + c.schema_file) + "}";
    const std::vector<int32_t> tokens = tok->encode(c.document, /*add_special_tokens=*/false);
    std::vector<double> compile_ms, full_ms, cold, warm;
    int states = 0;
    for (int rep = 0; rep < reps; ++rep) {
      t0 = Clock::now();
      auto g = structured::CompiledGrammar::compile(spec, vocab);
      compile_ms.push_back(us_since(t0) / 1000);
      if (!g.ok()) {
        std::fprintf(stderr, "%s: %s\n", c.name, g.status().to_string().c_str());
        return 1;
      }
      states = (*g)->dfa().num_states;
      std::vector<uint32_t> words(vocab->num_words());
      for (int pass = 0; pass < 2; ++pass) {  // cold, then warm
        structured::Matcher m(*g);
        for (int32_t t : tokens) {
          t0 = Clock::now();
          m.fill_mask(1 << 20, words);
          const bool ok = m.advance(t);
          (pass == 0 ? cold : warm).push_back(us_since(t0));
          if (!ok || !(words[t >> 5] >> (t & 31) & 1)) {
            std::fprintf(stderr, "%s: token %d (%s) not allowed\n", c.name, t, vocab->bytes(t).c_str());
            return 1;
          }
        }
        if (!m.accepting()) {
          std::fprintf(stderr, "%s: the document does not end in an accepting state\n", c.name);
          return 1;
        }
      }
      t0 = Clock::now();
      auto fresh = structured::CompiledGrammar::compile(spec, vocab);
      (*fresh)->precompute_all_masks();
      full_ms.push_back(us_since(t0) / 1000);
    }
    // 64 sequences at different positions of the document, warm: one step's masks for the batch.
    auto g = *structured::CompiledGrammar::compile(spec, vocab);
    std::vector<structured::Matcher> seqs(64, structured::Matcher(g));
    std::vector<size_t> pos(64);
    for (int s = 0; s < 64; ++s) {
      pos[s] = static_cast<size_t>(s) * tokens.size() / 64;
      for (size_t i = 0; i < pos[s]; ++i) seqs[s].advance(tokens[i]);
    }
    std::vector<uint32_t> batch_words(static_cast<size_t>(64) * vocab->num_words());
    std::vector<double> step_us;
    for (size_t step = 0; step < 2 * tokens.size(); ++step) {
      t0 = Clock::now();
      for (int s = 0; s < 64; ++s) {
        std::span<uint32_t> w(batch_words.data() + static_cast<size_t>(s) * vocab->num_words(), vocab->num_words());
        seqs[s].fill_mask(1 << 20, w);
        seqs[s].advance(tokens[pos[s]]);
        if (++pos[s] == tokens.size()) {
          pos[s] = 0;
          seqs[s] = structured::Matcher(g);
        }
      }
      if (step >= tokens.size()) step_us.push_back(us_since(t0));  // the first lap warms the cache
    }
    double cold_mean = 0;
    for (double x : cold) cold_mean += x;
    cold_mean /= static_cast<double>(cold.size());
    std::printf("| %s | %d | %.1f | %.1f | %zu | %.2f | %.0f | %.1f | %.2f | %.1f | %.0f |\n", c.name, states, percentile(compile_ms, 0.5),
                percentile(full_ms, 0.5), tokens.size(), percentile(cold, 0.5), percentile(cold, 0.99), cold_mean, percentile(warm, 0.5),
                percentile(warm, 0.99), percentile(step_us, 0.5));
  }

  // The sampler's cost of applying a mask (a string-content state allows ~most of the vocabulary).
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> logits(kVocab);
  for (float& x : logits) x = normal(rng);
  engine::Sampler sampler(kVocab, {151645, 151643});
  engine::SamplingParams p;
  p.temperature = 0.8f;
  std::vector<uint32_t> allowed(vocab->num_words());
  auto g = *structured::CompiledGrammar::compile(R"({"json_schema": {"type": "string"}})", vocab);
  structured::Matcher m(g);
  m.advance(*tok->token_to_id("\""));
  m.fill_mask(1 << 20, allowed);
  std::vector<double> plain, masked;
  engine::SampleInput in;
  in.params = &p;
  for (int i = 0; i < 200; ++i) {
    in.allowed = {};
    t0 = Clock::now();
    sampler.sample(logits, in, nullptr);
    plain.push_back(us_since(t0));
    in.allowed = allowed;
    t0 = Clock::now();
    sampler.sample(logits, in, nullptr);
    masked.push_back(us_since(t0));
  }
  std::printf("\nsampler, temperature 0.8, one %d-token row: unmasked median %.1f us, masked (string content) median %.1f us\n", kVocab,
              percentile(plain, 0.5), percentile(masked, 0.5));
  return 0;
}
