#include "model/checkpoint.h"

#include <nlohmann/json.hpp>

#include <fstream>
#include <set>

#include "common/error.h"

namespace tandem::model {
namespace fs = std::filesystem;

Checkpoint::Checkpoint(const fs::path& dir) : dir_(dir) {
  if (!fs::is_directory(dir_)) {
    throw Error(dir_.string() + ": not a directory (--model takes a Hugging Face model directory or random:<preset>)");
  }
  config_ = load_model_config(dir_ / "config.json");

  const fs::path index_path = dir_ / "model.safetensors.index.json";
  std::set<std::string> shard_names;
  if (fs::exists(index_path)) {
    index_name_ = index_path.filename().string();
    std::ifstream in(index_path);
    nlohmann::json index;
    try {
      index = nlohmann::json::parse(in);
      for (const auto& [name, file] : index.at("weight_map").items()) {
        weight_map_[name] = file.get<std::string>();
        shard_names.insert(file.get<std::string>());
      }
    } catch (const nlohmann::json::exception& e) {
      throw Error(index_path.string() + ": malformed index: " + e.what());
    }
    for (const auto& shard : shard_names) {
      if (shard.find('/') != std::string::npos || shard == "..") {
        throw Error(index_path.string() + ": shard name '" + shard + "' must be a plain file name");
      }
      if (!fs::exists(dir_ / shard)) {
        throw Error(index_path.string() + ": lists shard '" + shard + "', which is missing from " + dir_.string());
      }
    }
  } else if (fs::exists(dir_ / "model.safetensors")) {
    shard_names.insert("model.safetensors");
  } else {
    throw Error(dir_.string() + ": no model.safetensors or model.safetensors.index.json found");
  }
  for (const auto& shard : shard_names) {
    files_.push_back(std::make_unique<SafetensorsFile>(dir_ / shard));
    files_by_name_[shard] = files_.back().get();
  }
}

Checkpoint::Location Checkpoint::locate(const std::string& name) const {
  if (weight_map_.empty()) {
    const SafetensorsFile* file = files_.front().get();
    return {file, file->find(name), "model.safetensors"};
  }
  auto it = weight_map_.find(name);
  if (it == weight_map_.end()) return {nullptr, nullptr, ""};
  const SafetensorsFile* file = files_by_name_.at(it->second);
  return {file, file->find(name), it->second};
}

std::string Checkpoint::scale_name(const std::string& weight_name) const {
  // "x.weight" -> "x.weight_scale_inv" (block) or "x.weight_scale" (compressed-tensors).
  const std::string stem = weight_name.substr(0, weight_name.size() - std::string("weight").size());
  return stem + config_.quantization.scale_suffix();
}

void Checkpoint::validate_fp8(const TensorSpec& spec, const Location& loc) const {
  const std::string where = (dir_ / loc.file_name).string();
  const QuantizationConfig& q = config_.quantization;
  if (!q.is_fp8()) {
    throw Error(where + ": tensor '" + spec.name + "' is F8_E4M3 but " + (dir_ / "config.json").string() +
                " has no quantization_config saying how it is scaled");
  }
  if (spec.shape.size() != 2 || spec.name.size() < 7 || spec.name.compare(spec.name.size() - 7, 7, ".weight") != 0) {
    throw Error(where + ": tensor '" + spec.name + "' is F8_E4M3, which only linear weights may be");
  }
  const std::string scale = scale_name(spec.name);
  Location sloc = locate(scale);
  if (sloc.entry == nullptr) {
    throw Error((dir_ / (sloc.file_name.empty() ? (index_name_.empty() ? loc.file_name : index_name_) : sloc.file_name)).string() +
                ": tensor '" + scale + "' is missing (the scale of the F8_E4M3 tensor '" + spec.name + "', " + q.describe() + ")");
  }
  const std::string scale_where = (dir_ / sloc.file_name).string();
  const DType sd = sloc.entry->dtype;
  if (sd != DType::kF32 && sd != DType::kBF16 && sd != DType::kF16) {
    throw Error(scale_where + ": tensor '" + scale + "' has dtype " + sloc.entry->dtype_name + " (a scale must be F32, BF16 or F16)");
  }
  const int64_t rows = spec.shape[0], cols = spec.shape[1];
  std::vector<Shape> accepted;
  switch (q.weight_scheme) {
    case Fp8Scheme::kBlock:
      accepted = {{(rows + q.block_rows - 1) / q.block_rows, (cols + q.block_cols - 1) / q.block_cols}};
      break;
    case Fp8Scheme::kChannel: accepted = {{rows, 1}, {rows}}; break;
    case Fp8Scheme::kTensor: accepted = {{}, {1}}; break;
  }
  for (const Shape& shape : accepted) {
    if (sloc.entry->shape == shape) return;
  }
  throw Error(scale_where + ": tensor '" + scale + "' has shape " + shape_to_string(sloc.entry->shape) + ", expected " +
              shape_to_string(accepted.front()) + " for " + q.describe() + " of '" + spec.name + "' " +
              shape_to_string(spec.shape));
}

void Checkpoint::validate() const {
  for (const TensorSpec& spec : expected_tensors(config_)) {
    Location loc = locate(spec.name);
    if (loc.file_name.empty()) {
      throw Error((dir_ / index_name_).string() + ": tensor '" + spec.name + "' is missing from the index");
    }
    const std::string where = (dir_ / loc.file_name).string();
    if (loc.entry == nullptr) throw Error(where + ": tensor '" + spec.name + "' is missing");
    if (loc.entry->dtype == DType::kUnsupported) {
      throw Error(where + ": tensor '" + spec.name + "' has unsupported dtype " + loc.entry->dtype_name +
                  " (supported: F32, BF16, F16, and F8_E4M3 with scales)");
    }
    if (loc.entry->shape != spec.shape) {
      throw Error(where + ": tensor '" + spec.name + "' has shape " + shape_to_string(loc.entry->shape) +
                  ", expected " + shape_to_string(spec.shape) + " from config.json");
    }
    if (loc.entry->dtype == DType::kF8E4M3) validate_fp8(spec, loc);
  }
}

std::optional<QuantizedWeight> Checkpoint::read_quantized(const TensorSpec& spec) const {
  Location loc = locate(spec.name);
  if (loc.entry == nullptr || loc.entry->shape != spec.shape || loc.entry->dtype == DType::kUnsupported) {
    validate();  // throws the precise error
    throw Error(dir_.string() + ": tensor '" + spec.name + "' cannot be read");
  }
  if (loc.entry->dtype != DType::kF8E4M3) return std::nullopt;
  validate_fp8(spec, loc);
  const QuantizationConfig& q = config_.quantization;
  QuantizedWeight w;
  w.shape = spec.shape;
  w.scheme = q.weight_scheme;
  w.block_rows = q.block_rows;
  w.block_cols = q.block_cols;
  const auto* bytes = reinterpret_cast<const uint8_t*>(loc.file->data(*loc.entry));
  w.values.assign(bytes, bytes + (loc.entry->data_end - loc.entry->data_begin));
  Location sloc = locate(scale_name(spec.name));
  w.scales.resize(static_cast<size_t>(num_elements(sloc.entry->shape)));
  convert_elements(sloc.entry->dtype, sloc.file->data(*sloc.entry), DType::kF32, w.scales.data(), w.scales.size());
  return w;
}

void Checkpoint::read(const TensorSpec& spec, DType out_dtype, void* out) const {
  if (std::optional<QuantizedWeight> q = read_quantized(spec)) {
    std::vector<float> values = dequantize(*q);
    convert_elements(DType::kF32, values.data(), out_dtype, out, values.size());
    return;
  }
  Location loc = locate(spec.name);
  convert_elements(loc.entry->dtype, loc.file->data(*loc.entry), out_dtype, out,
                   static_cast<size_t>(num_elements(spec.shape)));
}

}  // namespace tandem::model
