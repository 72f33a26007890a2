// The tokenizer.json pipeline; the order of steps and the added-token rules follow Hugging Face
// tokenizers (tokenizer/added_vocabulary.rs, AddedVocabulary::find_matches).
#include "tokenizer/tokenizer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <limits>
#include <sstream>
#include <unordered_map>

#include "common/error.h"
#include "tokenizer/bpe.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/regex_splitter.h"
#include "tokenizer/unicode.h"

namespace tandem::tokenizer {
namespace {

// GPT-2's pre-tokenizer pattern: what a ByteLevel pre-tokenizer with use_regex=true splits by.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool lstrip = false, rstrip = false, single_word = false, normalized = false, special = false;
};

// Byte trie of added-token contents for leftmost-longest matching (Hugging Face uses an
// Aho-Corasick automaton with LeftmostLongest; with a few hundred tokens a trie walk per
// candidate position gives the same matches).
class TokenTrie {
 public:
  bool empty() const { return nodes_.size() == 1; }
  void insert(std::string_view s, int32_t token_index) {
    int node = 0;
    for (char c : s) {
      const auto b = static_cast<uint8_t>(c);
      int child = find_child(node, b);
      if (child < 0) {
        child = static_cast<int>(nodes_.size());
        nodes_.push_back({});
        nodes_[node].children.emplace_back(b, child);
      }
      node = child;
    }
    if (nodes_[node].token < 0) nodes_[node].token = token_index;
    first_bytes_[static_cast<uint8_t>(s[0])] = true;
  }
  // The longest token starting at text[pos]: its index and length, or {-1, 0}.
  std::pair<int32_t, size_t> longest_at(std::string_view text, size_t pos) const {
    if (!first_bytes_[static_cast<uint8_t>(text[pos])]) return {-1, 0};
    int node = 0;
    std::pair<int32_t, size_t> best{-1, 0};
    for (size_t i = pos; i < text.size(); ++i) {
      node = find_child(node, static_cast<uint8_t>(text[i]));
      if (node < 0) break;
      if (nodes_[node].token >= 0) best = {nodes_[node].token, i + 1 - pos};
    }
    return best;
  }

 private:
  struct Node {
    std::vector<std::pair<uint8_t, int>> children;
    int32_t token = -1;
  };
  int find_child(int node, uint8_t b) const {
    for (const auto& [byte, child] : nodes_[node].children)
      if (byte == b) return child;
    return -1;
  }
  std::vector<Node> nodes_{Node{}};
  bool first_bytes_[256] = {};
};

struct Segment {
  std::string_view text;
  int32_t token_id = -1;  // >= 0: an added token
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// tokenizer_config.json spells a token either as a string or as a serialized AddedToken.
std::string config_token(const nlohmann::json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content")) return (*it)["content"].get<std::string>();
  return "";
}

// The last code point of `s`. REQUIRES: `s` is non-empty, valid UTF-8.
char32_t last_char(std::string_view s) {
  size_t pos = s.size() - 1;
  while (pos > 0 && (static_cast<uint8_t>(s[pos]) & 0xC0) == 0x80) --pos;
  return next_code_point(s, &pos);
}

// model.vocab and model.merges of a tokenizer.json, parsed straight into flat vectors.
struct ModelTables {
  std::vector<std::pair<std::string, int32_t>> vocab;
  std::vector<std::pair<std::string, std::string>> merges;
};

// SAX handler that builds the DOM of tokenizer.json except model.vocab and model.merges (nearly
// all of the file), which go to ModelTables: building and walking ~400k std::map nodes and JSON
// strings for them was most of the load time. A vocab or merges of another shape (a Unigram
// model's list, say) goes to the DOM as usual, so the model type check can name it.
class TokenizerJsonSax {
 public:
  using json = nlohmann::json;
  TokenizerJsonSax(json* root, ModelTables* tables) : dom_(*root), tables_(tables) {}

  bool null() { return in_table() ? false : (flush_pending() && dom_.null()); }
  bool boolean(bool v) { return in_table() ? false : (flush_pending() && dom_.boolean(v)); }
  bool number_integer(json::number_integer_t v) {
    if (state_ == State::kVocab) return vocab_entry(v);
    return in_table() ? false : (flush_pending() && dom_.number_integer(v));
  }
  bool number_unsigned(json::number_unsigned_t v) {
    if (state_ == State::kVocab) return vocab_entry(static_cast<json::number_integer_t>(v));
    return in_table() ? false : (flush_pending() && dom_.number_unsigned(v));
  }
  bool number_float(json::number_float_t v, const std::string& s) {
    return in_table() ? false : (flush_pending() && dom_.number_float(v, s));
  }
  bool string(std::string& s) {
    if (state_ == State::kMerges) {  // "left right"
      const size_t space = s.find(' ');
      if (space == std::string::npos) return false;
      tables_->merges.emplace_back(s.substr(0, space), s.substr(space + 1));
      return true;
    }
    if (state_ == State::kMergePair) {
      pair_.push_back(std::move(s));
      return pair_.size() <= 2;
    }
    return in_table() ? false : (flush_pending() && dom_.string(s));
  }
  bool binary(json::binary_t& b) { return in_table() ? false : (flush_pending() && dom_.binary(b)); }
  bool start_object(std::size_t n) {
    if (pending_ == "vocab") {
      pending_.clear();
      state_ = State::kVocab;
      return true;
    }
    if (in_table()) return false;
    if (!flush_pending()) return false;
    path_.push_back(last_key_);
    return dom_.start_object(n);
  }
  bool key(std::string& k) {
    if (state_ == State::kVocab) {
      vocab_key_ = std::move(k);
      return true;
    }
    if (path_.size() == 2 && path_[1] == "model" && (k == "vocab" || k == "merges")) {
      pending_ = k;  // decided by the value's shape
      return true;
    }
    last_key_ = k;
    return dom_.key(k);
  }
  bool end_object() {
    if (state_ == State::kVocab) {
      state_ = State::kNone;
      return true;
    }
    path_.pop_back();
    return dom_.end_object();
  }
  bool start_array(std::size_t n) {
    if (pending_ == "merges") {
      pending_.clear();
      state_ = State::kMerges;
      return true;
    }
    if (state_ == State::kMerges) {  // ["left", "right"]
      state_ = State::kMergePair;
      pair_.clear();
      return true;
    }
    if (in_table()) return false;
    if (!flush_pending()) return false;
    path_.push_back(last_key_);
    return dom_.start_array(n);
  }
  bool end_array() {
    if (state_ == State::kMergePair) {
      if (pair_.size() != 2) return false;
      tables_->merges.emplace_back(std::move(pair_[0]), std::move(pair_[1]));
      state_ = State::kMerges;
      return true;
    }
    if (state_ == State::kMerges) {
      state_ = State::kNone;
      return true;
    }
    path_.pop_back();
    return dom_.end_array();
  }
  template <typename Exception>
  bool parse_error(std::size_t position, const std::string& last_token, const Exception& ex) {
    return dom_.parse_error(position, last_token, ex);
  }

 private:
  enum class State { kNone, kVocab, kMerges, kMergePair };
  bool in_table() const { return state_ != State::kNone; }
  // A vocab or merges key whose value is not of the expected shape: hand it to the DOM after all.
  bool flush_pending() {
    if (pending_.empty()) return true;
    std::string k = std::move(pending_);
    pending_.clear();
    last_key_ = k;
    return dom_.key(k);
  }
  bool vocab_entry(json::number_integer_t id) {
    if (id < 0 || id > INT32_MAX) return false;
    tables_->vocab.emplace_back(std::move(vocab_key_), static_cast<int32_t>(id));
    return true;
  }

  nlohmann::detail::json_sax_dom_parser<json> dom_;
  ModelTables* tables_;
  State state_ = State::kNone;
  std::vector<std::string> path_;  // names of the open containers ("" for the root and array items)
  std::string last_key_, pending_, vocab_key_;
  std::vector<std::string> pair_;
};

// A token id as tokenizer.json writes it: an integer in [0, 2^31 - 1). nlohmann's get<int32_t>() casts a
// float or an out-of-range integer (1e300, 2^40) without a check, which is undefined behaviour; Hugging
// Face reads ids as u32 and refuses both. The top value is left out so that `id + 1` (a vocabulary
// size) cannot overflow. `field` names where the id sits, for the error.
int32_t token_id(const nlohmann::json& v, const std::string& field) {
  constexpr int64_t kMaxId = std::numeric_limits<int32_t>::max() - 1;
  if (v.is_number_unsigned() && v.get<uint64_t>() <= static_cast<uint64_t>(kMaxId)) return static_cast<int32_t>(v.get<uint64_t>());
  if (v.is_number_integer() && !v.is_number_unsigned() && v.get<int64_t>() >= 0 && v.get<int64_t>() <= kMaxId) {
    return static_cast<int32_t>(v.get<int64_t>());
  }
  throw Error("tokenizer.json: " + field + " must be a token id (an integer from 0 to " + std::to_string(kMaxId) +
              "), got " + v.dump() + " (" + v.type_name() + ")");
}

}  // namespace

struct Tokenizer::Impl {
  std::unique_ptr<BpeModel> model;
  bool nfc = false;
  std::vector<std::unique_ptr<RegexSplitter>> splitters;  // applied in order, each refining the pieces
  std::vector<AddedToken> added;
  std::unordered_map<int32_t, size_t> added_by_id;
  std::unordered_map<std::string, size_t> added_by_content;
  std::vector<std::string> added_bytes;  // [added.size()] what each added token decodes to
  TokenTrie raw_trie;                   // added tokens with normalized=false: matched on the raw text
  TokenTrie normalized_trie;            // normalized=true: matched on the normalized text
  std::vector<int32_t> prefix_ids, suffix_ids;  // the post-processor's single-sequence template
  std::string bos_token, eos_token, chat_template;
  std::optional<int32_t> bos_id, eos_id;
  int32_t vocab_size = 0;

  void parse_normalizer(const nlohmann::json& n);
  void parse_pre_tokenizer(const nlohmann::json& p);
  void parse_post_processor(const nlohmann::json& p);
  void split_added(std::string_view text, const TokenTrie& trie, std::vector<Segment>* out) const;
  void encode_plain(std::string_view text, std::vector<int32_t>* ids) const;
};

void Tokenizer::Impl::parse_normalizer(const nlohmann::json& n) {
  if (n.is_null()) return;
  const std::string type = n.value("type", "");
  if (type == "NFC") {
    nfc = true;
  } else if (type == "Sequence") {
    for (const auto& child : n.at("normalizers")) parse_normalizer(child);
  } else {
    throw Error("unsupported normalizer '" + type + "' (supported: NFC, Sequence)");
  }
}

void Tokenizer::Impl::parse_pre_tokenizer(const nlohmann::json& p) {
  if (p.is_null()) return;
  const std::string type = p.value("type", "");
  if (type == "Sequence") {
    for (const auto& child : p.at("pretokenizers")) parse_pre_tokenizer(child);
  } else if (type == "Split") {
    const auto& pattern = p.at("pattern");
    if (!pattern.contains("Regex")) throw Error("unsupported pre-tokenizer Split with a String pattern");
    const std::string behavior = p.value("behavior", "");
    if (behavior != "Isolated") throw Error("unsupported pre-tokenizer Split behavior '" + behavior + "'");
    if (p.value("invert", false)) throw Error("unsupported pre-tokenizer Split with invert=true");
    splitters.push_back(std::make_unique<RegexSplitter>(pattern["Regex"].get<std::string>()));
  } else if (type == "ByteLevel") {
    // The byte mapping itself is implicit: BpeModel works on raw bytes.
    if (p.value("add_prefix_space", false)) throw Error("unsupported pre-tokenizer ByteLevel with add_prefix_space=true");
    if (p.value("use_regex", true)) splitters.push_back(std::make_unique<RegexSplitter>(kGpt2Pattern));
  } else {
    throw Error("unsupported pre-tokenizer '" + type + "' (supported: Split, ByteLevel, Sequence)");
  }
}

void Tokenizer::Impl::parse_post_processor(const nlohmann::json& p) {
  if (p.is_null()) return;
  const std::string type = p.value("type", "");
  if (type == "ByteLevel") return;  // only adjusts offsets
  if (type == "Sequence") {
    for (const auto& child : p.at("processors")) parse_post_processor(child);
    return;
  }
  if (type != "TemplateProcessing") {
    throw Error("unsupported post-processor '" + type + "' (supported: TemplateProcessing, ByteLevel, Sequence)");
  }
  prefix_ids.clear();
  suffix_ids.clear();
  bool seen_sequence = false;
  for (const auto& piece : p.at("single")) {
    if (piece.contains("Sequence")) {
      seen_sequence = true;
    } else if (piece.contains("SpecialToken")) {
      const std::string name = piece["SpecialToken"].at("id").get<std::string>();
      const auto& ids = p.at("special_tokens").at(name).at("ids");
      auto& target = seen_sequence ? suffix_ids : prefix_ids;
      for (const auto& id : ids) target.push_back(token_id(id, "post_processor.special_tokens." + name + ".ids"));
    }
  }
}

void Tokenizer::Impl::split_added(std::string_view text, const TokenTrie& trie, std::vector<Segment>* out) const {
  if (trie.empty()) {
    if (!text.empty()) out->push_back({text, -1});
    return;
  }
  size_t start_offset = 0;  // end of the last accepted token
  size_t pos = 0;
  while (pos < text.size()) {
    auto [index, length] = trie.longest_at(text, pos);
    if (index < 0) {
      ++pos;
      continue;
    }
    const AddedToken& token = added[static_cast<size_t>(index)];
    size_t start = pos, stop = pos + length;
    pos = stop;  // matches never overlap, accepted or not
    if (token.single_word) {
      size_t after = stop;
      const bool start_ok = start == 0 || !is_alphanumeric(last_char(text.substr(0, start)));
      const bool stop_ok = stop == text.size() || !is_alphanumeric(next_code_point(text, &after));
      if (!start_ok || !stop_ok) continue;
    }
    if (token.lstrip) {
      size_t s = start;
      while (s > start_offset) {
        size_t p = s - 1;
        while (p > 0 && (static_cast<uint8_t>(text[p]) & 0xC0) == 0x80) --p;
        size_t q = p;
        if (!is_whitespace(next_code_point(text, &q))) break;
        s = p;
      }
      start = s;
    }
    if (token.rstrip) {
      while (stop < text.size()) {
        size_t q = stop;
        if (!is_whitespace(next_code_point(text, &q))) break;
        stop = q;
      }
      pos = stop;
    }
    if (start > start_offset) out->push_back({text.substr(start_offset, start - start_offset), -1});
    out->push_back({text.substr(start, stop - start), token.id});
    start_offset = stop;
  }
  if (start_offset < text.size()) out->push_back({text.substr(start_offset), -1});
}

void Tokenizer::Impl::encode_plain(std::string_view text, std::vector<int32_t>* ids) const {
  if (text.empty()) return;
  std::vector<std::string_view> pieces{text}, next;
  for (const auto& splitter : splitters) {
    next.clear();
    for (std::string_view piece : pieces) splitter->split(piece, &next);
    pieces.swap(next);
  }
  for (std::string_view piece : pieces) model->encode_word(piece, ids);
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

std::unique_ptr<Tokenizer> Tokenizer::load(const std::string& dir) {
  const std::string tokenizer_path = dir + "/tokenizer.json";
  const std::string config_path = dir + "/tokenizer_config.json";
  std::string tokenizer_json = read_file(tokenizer_path);
  std::string config_json;
  if (std::ifstream(config_path).good()) config_json = read_file(config_path);
  std::unique_ptr<Tokenizer> tokenizer;
  try {
    tokenizer = from_json(tokenizer_json, config_json);
  } catch (const Error& e) {
    throw Error(tokenizer_path + ": " + e.what());
  }
  // Newer Hugging Face checkpoints keep the template in its own file beside tokenizer_config.json.
  const std::string template_path = dir + "/chat_template.jinja";
  if (tokenizer->impl_->chat_template.empty() && std::ifstream(template_path).good()) {
    tokenizer->impl_->chat_template = read_file(template_path);
  }
  return tokenizer;
}

std::unique_ptr<Tokenizer> Tokenizer::from_json(std::string_view tokenizer_json, std::string_view tokenizer_config_json) {
  nlohmann::json root, config;
  ModelTables tables;
  try {
    TokenizerJsonSax sax(&root, &tables);
    if (!nlohmann::json::sax_parse(tokenizer_json, &sax)) {
      // A vocab or merges of another shape: parse it plainly so the error can name the model type.
      root = nlohmann::json::parse(tokenizer_json);
      const std::string type = root.value("model", nlohmann::json::object()).value("type", std::string("BPE"));
      if (type != "BPE") throw Error("unsupported tokenizer model type '" + type + "' (only byte-level BPE is supported)");
      throw Error("malformed tokenizer.json: model.vocab must map tokens to ids and model.merges list pairs");
    }
    if (!tokenizer_config_json.empty()) config = nlohmann::json::parse(tokenizer_config_json);
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("malformed JSON: ") + e.what());
  }
  auto impl = std::make_unique<Impl>();
  try {
    impl->model = std::make_unique<BpeModel>(root.at("model"), tables.vocab, tables.merges);
    impl->parse_normalizer(root.value("normalizer", nlohmann::json()));
    impl->parse_pre_tokenizer(root.value("pre_tokenizer", nlohmann::json()));
    impl->parse_post_processor(root.value("post_processor", nlohmann::json()));
    const auto decoder = root.value("decoder", nlohmann::json());
    const std::string decoder_type = decoder.is_null() ? "none" : decoder.value("type", "");
    if (decoder_type != "ByteLevel") throw Error("unsupported decoder '" + decoder_type + "' (supported: ByteLevel)");

    impl->vocab_size = impl->model->num_ids();
    const auto added_tokens = root.value("added_tokens", nlohmann::json::array());
    for (size_t i = 0; i < added_tokens.size(); ++i) {
      const auto& t = added_tokens.at(i);
      AddedToken token;
      token.id = token_id(t.at("id"), "added_tokens[" + std::to_string(i) + "].id");
      token.content = t.at("content").get<std::string>();
      token.lstrip = t.value("lstrip", false);
      token.rstrip = t.value("rstrip", false);
      token.single_word = t.value("single_word", false);
      token.normalized = t.value("normalized", false);
      token.special = t.value("special", false);
      if (token.content.empty()) continue;
      const size_t index = impl->added.size();
      (token.normalized ? impl->normalized_trie : impl->raw_trie).insert(token.content, static_cast<int32_t>(index));
      impl->added_by_id[token.id] = index;
      impl->added_by_content[token.content] = index;
      // The ByteLevel decoder maps a token through the byte alphabet when every character is in
      // it, and otherwise keeps its UTF-8 as is.
      auto bytes = byte_level_decode(token.content);
      impl->added_bytes.push_back(bytes ? *bytes : token.content);
      impl->vocab_size = std::max(impl->vocab_size, token.id + 1);
      impl->added.push_back(std::move(token));
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("malformed tokenizer.json: ") + e.what());
  }

  if (!config.is_null()) {
    impl->bos_token = config_token(config, "bos_token");
    impl->eos_token = config_token(config, "eos_token");
    auto it = config.find("chat_template");
    if (it != config.end() && it->is_string()) {
      impl->chat_template = it->get<std::string>();
    } else if (it != config.end() && it->is_array()) {
      for (const auto& named : *it)
        if (named.value("name", "") == "default") impl->chat_template = named.value("template", "");
    }
  }
  auto tokenizer = std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
  if (!tokenizer->impl_->bos_token.empty()) tokenizer->impl_->bos_id = tokenizer->token_to_id(tokenizer->impl_->bos_token);
  if (!tokenizer->impl_->eos_token.empty()) tokenizer->impl_->eos_id = tokenizer->token_to_id(tokenizer->impl_->eos_token);
  return tokenizer;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const Impl& im = *impl_;
  std::string cleaned;
  if (valid_utf8_prefix(text) != text.size()) {
    cleaned = utf8_lossy(text);
    text = cleaned;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  if (add_special_tokens) ids.insert(ids.end(), im.prefix_ids.begin(), im.prefix_ids.end());
  std::vector<Segment> segments, inner;
  im.split_added(text, im.raw_trie, &segments);
  for (const Segment& segment : segments) {
    if (segment.token_id >= 0) {
      ids.push_back(segment.token_id);
      continue;
    }
    // Each piece between added tokens is normalized on its own, as Hugging Face does.
    std::string normalized;
    std::string_view piece = segment.text;
    if (im.nfc && !is_nfc_quick(piece)) {
      normalized = nfc(piece);
      piece = normalized;
    }
    if (im.normalized_trie.empty()) {
      im.encode_plain(piece, &ids);
      continue;
    }
    inner.clear();
    im.split_added(piece, im.normalized_trie, &inner);
    for (const Segment& sub : inner) {
      if (sub.token_id >= 0) {
        ids.push_back(sub.token_id);
      } else {
        im.encode_plain(sub.text, &ids);
      }
    }
  }
  if (add_special_tokens) ids.insert(ids.end(), im.suffix_ids.begin(), im.suffix_ids.end());
  return ids;
}

std::optional<std::string_view> Tokenizer::token_bytes(int32_t id) const {
  if (auto it = impl_->added_by_id.find(id); it != impl_->added_by_id.end()) return impl_->added_bytes[it->second];
  if (impl_->model->has_id(id)) return impl_->model->id_to_bytes(id);
  return std::nullopt;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::string bytes;
  for (int32_t id : ids) {
    if (skip_special_tokens && is_special(id)) continue;
    if (auto b = token_bytes(id)) bytes.append(*b);
  }
  if (valid_utf8_prefix(bytes) == bytes.size()) return bytes;
  return utf8_lossy(bytes);
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (auto it = impl_->added_by_content.find(std::string(token)); it != impl_->added_by_content.end()) {
    return impl_->added[it->second].id;
  }
  if (valid_utf8_prefix(token) != token.size()) return std::nullopt;
  auto bytes = byte_level_decode(token);
  if (!bytes) return std::nullopt;
  const int32_t id = impl_->model->bytes_to_id(*bytes);
  if (id < 0) return std::nullopt;
  return id;
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  if (auto it = impl_->added_by_id.find(id); it != impl_->added_by_id.end()) return impl_->added[it->second].content;
  if (!impl_->model->has_id(id)) return std::nullopt;
  std::string out;
  for (char c : impl_->model->id_to_bytes(id)) append_utf8(byte_to_char(static_cast<uint8_t>(c)), &out);
  return out;
}

bool Tokenizer::is_special(int32_t id) const {
  auto it = impl_->added_by_id.find(id);
  return it != impl_->added_by_id.end() && impl_->added[it->second].special;
}

int32_t Tokenizer::vocab_size() const { return impl_->vocab_size; }
const std::string& Tokenizer::bos_token() const { return impl_->bos_token; }
const std::string& Tokenizer::eos_token() const { return impl_->eos_token; }
std::optional<int32_t> Tokenizer::bos_id() const { return impl_->bos_id; }
std::optional<int32_t> Tokenizer::eos_id() const { return impl_->eos_id; }
const std::string& Tokenizer::chat_template() const { return impl_->chat_template; }

}  // namespace tandem::tokenizer
