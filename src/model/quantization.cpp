#include "model/quantization.h"

#include <nlohmann/json.hpp>

#include "common/error.h"

namespace tandem::model {
namespace {

using nlohmann::json;

// Every refusal reads "<config.json>: quantization_config.<field>: <why>".
[[noreturn]] void refuse(const std::string& source, const std::string& field, const std::string& why) {
  throw Error(source + ": quantization_config." + field + ": " + why);
}

std::string value_text(const json& v) { return v.dump(); }

// The string at `key`, or `fallback` when absent or null.
std::string string_field(const json& j, const std::string& key, const std::string& fallback, const std::string& source,
                         const std::string& path) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_string()) refuse(source, path + key, "expected a string, got " + value_text(*it));
  return it->get<std::string>();
}

std::vector<std::string> string_list(const json& j, const std::string& key, const std::string& source) {
  std::vector<std::string> out;
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return out;
  if (!it->is_array()) refuse(source, key, "expected a list of module names, got " + value_text(*it));
  for (const auto& e : *it) {
    if (!e.is_string()) refuse(source, key, "expected a list of module names, got " + value_text(*it));
    out.push_back(e.get<std::string>());
  }
  return out;
}

// The fields of a compressed-tensors QuantizationArgs that must hold for 8-bit float, symmetric, not
// grouped. `path` is e.g. "config_groups.group_0.weights.".
void check_float8_args(const json& args, const std::string& source, const std::string& path) {
  if (!args.is_object()) refuse(source, path.substr(0, path.size() - 1), "expected an object, got " + value_text(args));
  const std::string type = string_field(args, "type", "", source, path);
  if (type != "float") refuse(source, path + "type", "'" + type + "' is not supported (only \"float\": FP8; int8 is not supported)");
  auto bits = args.find("num_bits");
  // Compared as a 64-bit value: get<int>() would wrap 4294967304 (2^32 + 8) to 8 and accept it.
  const bool eight = bits != args.end() && bits->is_number_integer() &&
                     (bits->is_number_unsigned() ? bits->get<uint64_t>() == 8 : bits->get<int64_t>() == 8);
  if (!eight) {
    refuse(source, path + "num_bits", (bits == args.end() ? std::string("missing") : value_text(*bits)) + " is not supported (only 8)");
  }
  if (auto s = args.find("symmetric"); s != args.end() && !s->is_null() && *s != true) {
    refuse(source, path + "symmetric", "asymmetric quantization is not supported");
  }
  for (const char* key : {"group_size", "block_structure", "actorder"}) {
    if (auto it = args.find(key); it != args.end() && !it->is_null() && *it != false) {
      refuse(source, path + key, value_text(*it) + " is not supported (only per-channel or per-tensor FP8)");
    }
  }
}

QuantizationConfig parse_block_fp8(const json& j, const std::string& source) {
  QuantizationConfig q;
  q.method = QuantizationConfig::Method::kFp8Block;
  q.weight_scheme = Fp8Scheme::kBlock;
  const std::string fmt = string_field(j, "fmt", "e4m3", source, "");
  if (fmt != "e4m3") refuse(source, "fmt", "'" + fmt + "' is not supported (only \"e4m3\")");
  const std::string activations = string_field(j, "activation_scheme", "dynamic", source, "");
  if (activations != "dynamic" && activations != "static") {
    refuse(source, "activation_scheme", "'" + activations + "' is not supported (dynamic or static)");
  }
  q.static_activations = activations == "static";
  auto block = j.find("weight_block_size");
  if (block == j.end() || block->is_null()) {
    refuse(source, "weight_block_size", "missing: only block FP8 ([128, 128]) is supported for quant_method \"fp8\"");
  }
  if (*block != json::array({128, 128})) {
    refuse(source, "weight_block_size", value_text(*block) + " is not supported (only [128, 128])");
  }
  q.unquantized_modules = string_list(j, "modules_to_not_convert", source);
  return q;
}

QuantizationConfig parse_compressed_tensors(const json& j, const std::string& source) {
  QuantizationConfig q;
  q.method = QuantizationConfig::Method::kCompressedTensors;
  const std::string format = string_field(j, "format", "float-quantized", source, "");
  if (format != "float-quantized") refuse(source, "format", "'" + format + "' is not supported (only \"float-quantized\")");
  const std::string status = string_field(j, "quantization_status", "compressed", source, "");
  if (status != "compressed") {
    refuse(source, "quantization_status", "'" + status + "' is not supported (only \"compressed\": FP8 values on disk)");
  }
  auto groups = j.find("config_groups");
  if (groups == j.end() || !groups->is_object() || groups->empty()) {
    refuse(source, "config_groups", "missing or empty (expected at least one group with \"weights\")");
  }
  bool first = true;
  for (const auto& [name, group] : groups->items()) {
    const std::string path = "config_groups." + name + ".";
    if (!group.is_object()) refuse(source, path.substr(0, path.size() - 1), "expected an object");
    const std::string group_format = string_field(group, "format", format, source, path);
    if (group_format != "float-quantized") refuse(source, path + "format", "'" + group_format + "' is not supported (only \"float-quantized\")");
    auto weights = group.find("weights");
    if (weights == group.end() || weights->is_null()) refuse(source, path + "weights", "missing");
    check_float8_args(*weights, source, path + "weights.");
    if (auto d = weights->find("dynamic"); d != weights->end() && !d->is_null() && *d != false) {
      refuse(source, path + "weights.dynamic", value_text(*d) + " is not supported (weight scales are stored)");
    }
    const std::string strategy = string_field(*weights, "strategy", "", source, path + "weights.");
    Fp8Scheme scheme;
    if (strategy == "channel") scheme = Fp8Scheme::kChannel;
    else if (strategy == "tensor") scheme = Fp8Scheme::kTensor;
    else refuse(source, path + "weights.strategy", "'" + strategy + "' is not supported (channel or tensor)");
    bool static_activations = false;
    if (auto in = group.find("input_activations"); in != group.end() && !in->is_null()) {
      check_float8_args(*in, source, path + "input_activations.");
      auto d = in->find("dynamic");
      if (d != in->end() && !d->is_null() && !d->is_boolean()) {
        refuse(source, path + "input_activations.dynamic", value_text(*d) + " is not supported (true or false)");
      }
      const bool dynamic = d != in->end() && *d == true;
      const std::string in_strategy = string_field(*in, "strategy", "", source, path + "input_activations.");
      if (dynamic && in_strategy != "token" && in_strategy != "tensor") {
        refuse(source, path + "input_activations.strategy", "'" + in_strategy + "' is not supported for dynamic activations (token or tensor)");
      }
      if (!dynamic && in_strategy != "tensor") {
        refuse(source, path + "input_activations.strategy", "'" + in_strategy + "' is not supported for static activations (tensor)");
      }
      static_activations = !dynamic;
    }
    if (auto out = group.find("output_activations"); out != group.end() && !out->is_null()) {
      refuse(source, path + "output_activations", "quantized outputs are not supported");
    }
    if (!first && (scheme != q.weight_scheme || static_activations != q.static_activations)) {
      refuse(source, path.substr(0, path.size() - 1), "groups with different schemes are not supported");
    }
    q.weight_scheme = scheme;
    q.static_activations = static_activations;
    first = false;
  }
  q.unquantized_modules = string_list(j, "ignore", source);
  return q;
}

}  // namespace

std::string QuantizationConfig::scale_suffix() const {
  return method == Method::kFp8Block ? "weight_scale_inv" : "weight_scale";
}

std::string QuantizationConfig::describe() const {
  switch (method) {
    case Method::kNone: return "none";
    case Method::kFp8Block:
      return "fp8 block " + std::to_string(block_rows) + "x" + std::to_string(block_cols) + ", " +
             (static_activations ? "static" : "dynamic") + " activations";
    case Method::kCompressedTensors:
      return std::string("fp8 per-") + std::string(fp8_scheme_name(weight_scheme)) + " (compressed-tensors), " +
             (static_activations ? "static" : "dynamic") + " activations";
    case Method::kOnlineFp8: return "fp8 per-channel (online, --quantization fp8), dynamic activations";
  }
  return "?";
}

QuantizationConfig parse_quantization_config(const json& j, const std::string& source) {
  if (!j.is_object()) throw Error(source + ": quantization_config: expected an object, got " + value_text(j));
  auto method = j.find("quant_method");
  if (method == j.end() || !method->is_string()) refuse(source, "quant_method", "missing");
  const std::string name = method->get<std::string>();
  if (name == "fp8") return parse_block_fp8(j, source);
  if (name == "compressed-tensors") return parse_compressed_tensors(j, source);
  refuse(source, "quant_method", "'" + name + "' is not supported (supported: fp8 with weight_block_size [128, 128], compressed-tensors float-quantized FP8)");
}

json quantization_config_to_json(const QuantizationConfig& q) {
  if (q.method == QuantizationConfig::Method::kFp8Block) {
    json j = {{"quant_method", "fp8"},
              {"fmt", "e4m3"},
              {"activation_scheme", q.static_activations ? "static" : "dynamic"},
              {"weight_block_size", {q.block_rows, q.block_cols}}};
    j["modules_to_not_convert"] = q.unquantized_modules;
    return j;
  }
  TANDEM_CHECK(q.method == QuantizationConfig::Method::kCompressedTensors);
  auto args = [](const char* strategy, bool dynamic, const json& observer) {
    return json{{"num_bits", 8}, {"type", "float"}, {"symmetric", true}, {"strategy", strategy},
                {"dynamic", dynamic}, {"group_size", nullptr}, {"block_structure", nullptr},
                {"actorder", nullptr}, {"observer", observer}, {"observer_kwargs", json::object()}};
  };
  json group = {{"targets", {"Linear"}},
                {"weights", args(std::string(fp8_scheme_name(q.weight_scheme)).c_str(), false, "minmax")},
                {"input_activations", q.static_activations ? args("tensor", false, "minmax") : args("token", true, nullptr)},
                {"output_activations", nullptr}};
  return json{{"quant_method", "compressed-tensors"},
              {"format", "float-quantized"},
              {"quantization_status", "compressed"},
              {"config_groups", {{"group_0", group}}},
              {"ignore", q.unquantized_modules},
              {"kv_cache_scheme", nullptr}};
}

bool is_quantizable_linear(const std::string& name) {
  static const char* const kSuffixes[] = {".q_proj.weight", ".k_proj.weight", ".v_proj.weight", ".o_proj.weight",
                                          ".gate_proj.weight", ".up_proj.weight", ".down_proj.weight"};
  if (name.rfind("model.layers.", 0) != 0) return false;
  for (const char* suffix : kSuffixes) {
    const std::string s(suffix);
    if (name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0) return true;
  }
  return false;
}

QuantizationConfig resolve_quantization_flag(const std::string& flag, const QuantizationConfig& checkpoint,
                                             const std::string& model) {
  if (flag.empty()) return checkpoint;
  if (flag == "none") {
    if (checkpoint.is_fp8()) {
      throw Error("--quantization none: " + model + " is quantized (" + checkpoint.describe() +
                  " in its config.json); leave --quantization out or pass fp8");
    }
    return checkpoint;
  }
  if (flag != "fp8") throw Error("--quantization: unknown value '" + flag + "' (use fp8 or none)");
  if (checkpoint.is_fp8()) return checkpoint;  // already FP8: its own scales are used
  QuantizationConfig online;
  online.method = QuantizationConfig::Method::kOnlineFp8;
  online.weight_scheme = Fp8Scheme::kChannel;
  return online;
}

}  // namespace tandem::model
