// JSON Schema -> grammar tree (see json_schema.h).
#include "structured/json_schema.h"

#include <cmath>
#include <map>
#include <set>
#include <string>

#include "structured/regex.h"

namespace tandem::structured {
namespace {

using json = nlohmann::ordered_json;

constexpr int kMaxDigits = 16;         // integer digits: the outputs stay exact in a double
constexpr int kMaxFractionDigits = 15;
constexpr int kMaxStringLength = 4096; // the largest maxLength / minLength built as a bounded repetition
constexpr int kMaxItems = 256;         // the largest minItems / maxItems built as copies
constexpr int kMaxSchemaDepth = 32;    // nested schemas (properties, items, anyOf, $ref) below the root

const std::set<std::string>& annotations() {
  static const std::set<std::string> k = {"title", "description", "default", "examples", "$schema", "$id",
                                          "$comment", "$defs", "definitions", "deprecated", "readOnly",
                                          "writeOnly"};
  return k;
}
const std::set<std::string>& supported() {
  static const std::set<std::string> k = {"type", "properties", "required", "additionalProperties", "items",
                                          "minItems", "maxItems", "enum", "const", "anyOf", "allOf", "$ref",
                                          "minLength", "maxLength", "pattern", "minimum", "maximum",
                                          "exclusiveMinimum", "exclusiveMaximum"};
  return k;
}

std::string type_of(const json& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "boolean";
  if (v.is_number_integer() || v.is_number_unsigned()) return "integer";
  if (v.is_number()) return std::floor(v.get<double>()) == v.get<double>() ? "integer" : "number";
  if (v.is_string()) return "string";
  if (v.is_array()) return "array";
  return "object";
}

bool matches_type(const json& v, const std::string& type) {
  const std::string t = type_of(v);
  return t == type || (type == "number" && t == "integer");
}

NodePtr digit() { return byte_range('0', '9'); }
NodePtr digits(int min, int max) { return repeat(digit(), min, max); }

std::string pad(long long v, size_t width, char fill) {
  std::string s = std::to_string(v);
  return std::string(width - std::min(width, s.size()), fill) + s;
}

// Digit strings of one length from a to b (a <= b, same length), each position as tight as it can be.
NodePtr same_length_range(const std::string& a, const std::string& b) {
  if (a.size() == 1) return byte_range(static_cast<unsigned char>(a[0]), static_cast<unsigned char>(b[0]));
  const std::string ar = a.substr(1), br = b.substr(1);
  if (a[0] == b[0]) return seq({byte_range(a[0], a[0]), same_length_range(ar, br)});
  if (ar.find_first_not_of('0') == std::string::npos && br.find_first_not_of('9') == std::string::npos) {
    return seq({byte_range(a[0], b[0]), digits(static_cast<int>(ar.size()), static_cast<int>(ar.size()))});
  }
  std::vector<NodePtr> alts;
  alts.push_back(seq({byte_range(a[0], a[0]), same_length_range(ar, std::string(ar.size(), '9'))}));
  if (a[0] + 1 <= b[0] - 1) {
    alts.push_back(seq({byte_range(a[0] + 1, b[0] - 1), digits(static_cast<int>(ar.size()), static_cast<int>(ar.size()))}));
  }
  alts.push_back(seq({byte_range(b[0], b[0]), same_length_range(std::string(br.size(), '0'), br)}));
  return alt(std::move(alts));
}

// Decimal integers in [lo, hi], 0 <= lo <= hi, without leading zeros.
NodePtr nonnegative_range(long long lo, long long hi) {
  std::vector<NodePtr> alts;
  long long low_of_len = 0, high_of_len = 9;
  for (size_t len = 1; len <= static_cast<size_t>(kMaxDigits); ++len) {
    const long long a = std::max(lo, low_of_len), b = std::min(hi, high_of_len);
    if (a <= b) alts.push_back(same_length_range(pad(a, len, '0'), pad(b, len, '0')));
    low_of_len = high_of_len + 1;
    high_of_len = high_of_len * 10 + 9;
  }
  return alt(std::move(alts));
}

class SchemaCompiler {
 public:
  SchemaCompiler(const json& root, const JsonGrammarOptions& o) : root_(root), o_(o) {}

  NodePtr ws() const { return repeat(byte_set(whitespace_bytes()), 0, o_.max_whitespace); }

  NodePtr value(const json& s, const std::string& path) {
    // Bounds the recursion here and in the NFA builder; no real schema nests this deep.
    struct Depth {
      int& d;
      explicit Depth(int& depth, const std::string& path) : d(depth) {
        if (++d > kMaxSchemaDepth) throw GrammarError("the schema nests deeper than " + std::to_string(kMaxSchemaDepth) + " at " + path);
      }
      ~Depth() { --d; }
    } depth(depth_, path);
    if (s.is_boolean()) {
      if (!s.get<bool>()) throw GrammarError("the schema at " + path + " is false (matches nothing)");
      return open_value(o_.max_open_depth);
    }
    if (!s.is_object()) throw GrammarError("the schema at " + path + " must be an object or a boolean");
    for (const auto& [key, v] : s.items()) {
      if (!supported().count(key) && !annotations().count(key)) {
        throw GrammarError("unsupported JSON schema keyword '" + key + "' at " + path);
      }
    }
    if (s.contains("$ref")) return ref(s, path);
    if (s.contains("allOf")) {
      const json& all = s["allOf"];
      if (!all.is_array() || all.size() != 1) throw GrammarError("'allOf' is supported only with one schema, at " + path);
      only_annotations_beside(s, "allOf", path);
      return value(all[0], path + "/allOf/0");
    }
    if (s.contains("anyOf")) {
      const json& any = s["anyOf"];
      if (!any.is_array() || any.empty()) throw GrammarError("'anyOf' must be a non-empty array, at " + path);
      only_annotations_beside(s, "anyOf", path);
      std::vector<NodePtr> alts;
      for (size_t i = 0; i < any.size(); ++i) alts.push_back(value(any[i], path + "/anyOf/" + std::to_string(i)));
      return alt(std::move(alts));
    }
    std::vector<std::string> types;
    if (s.contains("type")) {
      const json& t = s["type"];
      if (t.is_string()) {
        types.push_back(t.get<std::string>());
      } else if (t.is_array() && !t.empty()) {
        for (const json& x : t) {
          if (!x.is_string()) throw GrammarError("'type' entries must be strings, at " + path);
          types.push_back(x.get<std::string>());
        }
      } else {
        throw GrammarError("'type' must be a string or a non-empty array, at " + path);
      }
    }
    if (s.contains("enum") || s.contains("const")) return constants(s, types, path);
    if (types.empty()) {
      if (s.contains("properties") || s.contains("required") || s.contains("additionalProperties")) {
        types.push_back("object");
      } else if (s.contains("items") || s.contains("minItems") || s.contains("maxItems")) {
        types.push_back("array");
      } else if (s.contains("minLength") || s.contains("maxLength") || s.contains("pattern")) {
        types.push_back("string");
      } else {
        return open_value(o_.max_open_depth);
      }
    }
    std::vector<NodePtr> alts;
    for (const std::string& t : types) alts.push_back(typed(s, t, path));
    return alt(std::move(alts));
  }

  NodePtr open_value(int depth) const {
    std::vector<NodePtr> alts = {string_of(chars(0, -1)), number(), literal("true"), literal("false"), literal("null")};
    alts.push_back(open_object(depth));
    alts.push_back(open_array(depth));
    return alt(std::move(alts));
  }

  // Any object; its values nest `depth` - 1 further levels (at 0 only {} is left).
  NodePtr open_object(int depth, NodePtr value_node = nullptr) const {
    if (depth <= 0 && !value_node) return seq({literal("{"), ws(), literal("}")});
    NodePtr v = value_node ? value_node : open_value(depth - 1);
    NodePtr member = seq({string_of(chars(0, -1)), ws(), literal(":"), ws(), v, ws()});
    NodePtr more = repeat(seq({literal(","), ws(), member}), 0, -1);
    return seq({literal("{"), ws(), optional(seq({member, more})), literal("}")});
  }

  NodePtr open_array(int depth) const {
    if (depth <= 0) return seq({literal("["), ws(), literal("]")});
    return array_of(open_value(depth - 1), 0, -1);
  }

 private:
  static std::bitset<256> whitespace_bytes() {
    std::bitset<256> b;
    b.set(' ');
    b.set('\n');
    b.set('\t');
    return b;
  }

  static void only_annotations_beside(const json& s, const char* keyword, const std::string& path) {
    for (const auto& [key, v] : s.items()) {
      if (key != keyword && !annotations().count(key)) {
        throw GrammarError(std::string("'") + keyword + "' beside '" + key + "' is not supported, at " + path);
      }
    }
  }

  NodePtr ref(const json& s, const std::string& path) {
    only_annotations_beside(s, "$ref", path);
    if (!s["$ref"].is_string()) throw GrammarError("'$ref' must be a string, at " + path);
    const std::string r = s["$ref"].get<std::string>();
    if (r != "#" && r.rfind("#/", 0) != 0) throw GrammarError("only local '$ref's (\"#/...\") are supported: '" + r + "'");
    for (const std::string& open : refs_in_progress_) {
      if (open == r) throw GrammarError("recursive '$ref' '" + r + "' is not supported");
    }
    const json* target = &root_;
    if (r != "#") {
      try {
        target = &root_.at(json::json_pointer(r.substr(1)));
      } catch (const std::exception&) {
        throw GrammarError("'$ref' '" + r + "' points nowhere in the schema");
      }
    }
    // A target's tree is built once and shared by every use (nodes are immutable): built again per use, a
    // chain of definitions that each name the next twice would grow as 2^depth.
    if (auto built = built_refs_.find(r); built != built_refs_.end()) return built->second;
    refs_in_progress_.push_back(r);
    NodePtr n = value(*target, r);
    refs_in_progress_.pop_back();
    built_refs_.emplace(r, n);
    return n;
  }

  NodePtr constants(const json& s, const std::vector<std::string>& types, const std::string& path) const {
    std::vector<json> values;
    if (s.contains("const")) values.push_back(s["const"]);
    if (s.contains("enum")) {
      if (!s["enum"].is_array() || s["enum"].empty()) throw GrammarError("'enum' must be a non-empty array, at " + path);
      for (const json& v : s["enum"]) values.push_back(v);
    }
    std::vector<NodePtr> alts;
    for (const json& v : values) {
      bool ok = types.empty();
      for (const std::string& t : types) ok = ok || matches_type(v, t);
      if (s.contains("const") && s.contains("enum") && v != s["const"]) ok = false;
      if (ok) alts.push_back(literal(v.dump()));
    }
    if (alts.empty()) throw GrammarError("no 'enum'/'const' value has the schema's type, at " + path);
    return alt(std::move(alts));
  }

  static int count(const json& s, const char* key, int def, int max, const std::string& path) {
    if (!s.contains(key)) return def;
    const json& v = s[key];
    if (!v.is_number_integer() || v.get<long long>() < 0) throw GrammarError(std::string("'") + key + "' must be a non-negative integer, at " + path);
    if (v.get<long long>() > max) throw GrammarError(std::string("'") + key + "' above " + std::to_string(max) + " is not supported, at " + path);
    return static_cast<int>(v.get<long long>());
  }

  NodePtr typed(const json& s, const std::string& t, const std::string& path) {
    if (t == "string") return string_schema(s, path);
    if (t == "integer") return integer(s, path);
    if (t == "number") return number_schema(s, path);
    if (t == "boolean") return alt({literal("true"), literal("false")});
    if (t == "null") return literal("null");
    if (t == "array") return array_schema(s, path);
    if (t == "object") return object_schema(s, path);
    throw GrammarError("unknown type '" + t + "' at " + path);
  }

  NodePtr string_schema(const json& s, const std::string& path) const {
    const int min = count(s, "minLength", 0, kMaxStringLength, path);
    const int max = s.contains("maxLength") ? count(s, "maxLength", 0, kMaxStringLength, path) : -1;
    if (max >= 0 && max < min) throw GrammarError("maxLength < minLength at " + path);
    if (s.contains("pattern")) {
      if (s.contains("minLength") || s.contains("maxLength")) {
        throw GrammarError("'pattern' together with 'minLength'/'maxLength' is not supported, at " + path);
      }
      if (!s["pattern"].is_string()) throw GrammarError("'pattern' must be a string, at " + path);
      RegexOptions ro;
      ro.json_string_content = true;
      return seq({literal("\""), parse_regex(s["pattern"].get<std::string>(), ro), literal("\"")});
    }
    return string_of(chars(min, max));
  }

  static NodePtr string_of(NodePtr content) { return seq({literal("\""), std::move(content), literal("\"")}); }

  // min..max characters of a JSON string's content, each one code point (escapes \" \\ \/ \b \f \n \r \t).
  static NodePtr chars(int min, int max) {
    std::bitset<256> plain;
    for (int c = 0x20; c <= 0x7F; ++c) plain.set(c);
    plain.reset('"');
    plain.reset('\\');
    std::bitset<256> escaped;
    for (char c : std::string("\"\\/bfnrt")) escaped.set(static_cast<unsigned char>(c));
    NodePtr one = alt({byte_set(plain), seq({literal("\\"), byte_set(escaped)}), non_ascii_char()});
    return repeat(one, min, max);
  }

  static NodePtr number(bool negative = true) {
    NodePtr magnitude = alt({literal("0"), seq({byte_range('1', '9'), digits(0, kMaxDigits - 1)})});
    NodePtr integer_part = negative ? seq({optional(literal("-")), magnitude}) : magnitude;
    NodePtr fraction = optional(seq({literal("."), digits(1, kMaxFractionDigits)}));
    std::bitset<256> e;
    e.set('e');
    e.set('E');
    std::bitset<256> sign;
    sign.set('+');
    sign.set('-');
    NodePtr exponent = optional(seq({byte_set(e), optional(byte_set(sign)), digits(1, 2)}));
    return seq({integer_part, fraction, exponent});
  }

  NodePtr number_schema(const json& s, const std::string& path) const {
    for (const char* k : {"maximum", "exclusiveMaximum", "exclusiveMinimum"}) {
      if (s.contains(k)) throw GrammarError(std::string("'") + k + "' on a number is not supported, at " + path);
    }
    if (!s.contains("minimum")) return number();
    if (!s["minimum"].is_number() || s["minimum"].get<double>() != 0) {
      throw GrammarError("'minimum' on a number is supported only as 0, at " + path);
    }
    return number(/*negative=*/false);
  }

  NodePtr integer(const json& s, const std::string& path) const {
    const long long limit = 9999999999999999LL;  // kMaxDigits nines
    long long lo = -limit, hi = limit;
    auto bound = [&](const char* key, bool lower, bool exclusive) {
      if (!s.contains(key)) return;
      const json& v = s[key];
      if (!v.is_number()) throw GrammarError(std::string("'") + key + "' must be a number, at " + path);
      const double x = v.get<double>();
      if (std::fabs(x) > static_cast<double>(limit)) throw GrammarError(std::string("'") + key + "' is too large, at " + path);
      long long b = lower ? static_cast<long long>(std::ceil(x)) : static_cast<long long>(std::floor(x));
      if (exclusive && static_cast<double>(b) == x) b += lower ? 1 : -1;
      if (lower) lo = std::max(lo, b);
      else hi = std::min(hi, b);
    };
    bound("minimum", true, false);
    bound("exclusiveMinimum", true, true);
    bound("maximum", false, false);
    bound("exclusiveMaximum", false, true);
    if (lo > hi) throw GrammarError("no integer lies between the bounds at " + path);
    std::vector<NodePtr> alts;
    if (hi >= 0) alts.push_back(nonnegative_range(std::max(0LL, lo), hi));
    if (lo < 0) alts.push_back(seq({literal("-"), nonnegative_range(std::max(1LL, -hi), -lo)}));
    return alt(std::move(alts));
  }

  NodePtr array_of(NodePtr item, int min, int max) const {
    if (max == 0) return seq({literal("["), ws(), literal("]")});
    NodePtr first = seq({item, ws()});
    NodePtr rest = repeat(seq({literal(","), ws(), item, ws()}), std::max(0, min - 1), max < 0 ? -1 : max - 1);
    NodePtr body = seq({first, rest});
    return seq({literal("["), ws(), min == 0 ? optional(body) : body, literal("]")});
  }

  NodePtr array_schema(const json& s, const std::string& path) {
    const int min = count(s, "minItems", 0, kMaxItems, path);
    const int max = s.contains("maxItems") ? count(s, "maxItems", 0, kMaxItems, path) : -1;
    if (max >= 0 && max < min) throw GrammarError("maxItems < minItems at " + path);
    if (s.contains("items") && s["items"].is_array()) throw GrammarError("tuple 'items' (an array) is not supported, at " + path);
    NodePtr item = s.contains("items") ? value(s["items"], path + "/items") : open_value(o_.max_open_depth - 1);
    return array_of(item, min, max);
  }

  NodePtr object_schema(const json& s, const std::string& path) {
    const json props = s.value("properties", json::object());
    if (!props.is_object()) throw GrammarError("'properties' must be an object, at " + path);
    std::set<std::string> required;
    if (s.contains("required")) {
      if (!s["required"].is_array()) throw GrammarError("'required' must be an array, at " + path);
      for (const json& r : s["required"]) {
        if (!r.is_string()) throw GrammarError("'required' entries must be strings, at " + path);
        if (!props.contains(r.get<std::string>())) {
          throw GrammarError("required property '" + r.get<std::string>() + "' is not in 'properties', at " + path);
        }
        required.insert(r.get<std::string>());
      }
    }
    const json additional = s.value("additionalProperties", json(true));
    if (props.empty()) {
      if (additional.is_boolean()) {
        return additional.get<bool>() ? open_object(o_.max_open_depth) : seq({literal("{"), ws(), literal("}")});
      }
      return open_object(o_.max_open_depth, value(additional, path + "/additionalProperties"));
    }
    // Only declared properties are written: valid whatever additionalProperties says.
    std::vector<NodePtr> items;
    std::vector<bool> req;
    for (const auto& [name, sub] : props.items()) {
      items.push_back(seq({literal(json(name).dump()), ws(), literal(":"), ws(), value(sub, path + "/properties/" + name), ws()}));
      req.push_back(required.count(name) != 0);
    }
    return seq({literal("{"), ws(), members(std::move(items), std::move(req), seq({literal(","), ws()})), literal("}")});
  }

  const json& root_;
  const JsonGrammarOptions& o_;
  std::vector<std::string> refs_in_progress_;
  std::map<std::string, NodePtr> built_refs_;  // $ref -> its target's tree
  int depth_ = 0;
};

}  // namespace

NodePtr json_schema_grammar(const nlohmann::ordered_json& schema, const JsonGrammarOptions& options) {
  SchemaCompiler c(schema, options);
  return seq({c.ws(), c.value(schema, "#"), c.ws()});
}

NodePtr json_object_grammar(const JsonGrammarOptions& options) {
  SchemaCompiler c(json::object(), options);
  return seq({c.ws(), c.open_object(options.max_open_depth), c.ws()});
}

}  // namespace tandem::structured
