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
                  " (supported: F32, BF16, F16)");
    }
    if (loc.entry->shape != spec.shape) {
      throw Error(where + ": tensor '" + spec.name + "' has shape " + shape_to_string(loc.entry->shape) +
                  ", expected " + shape_to_string(spec.shape) + " from config.json");
    }
  }
}

void Checkpoint::read(const TensorSpec& spec, DType out_dtype, void* out) const {
  Location loc = locate(spec.name);
  if (loc.entry == nullptr || loc.entry->shape != spec.shape || loc.entry->dtype == DType::kUnsupported) {
    validate();  // throws the precise error
    throw Error(dir_.string() + ": tensor '" + spec.name + "' cannot be read");
  }
  convert_elements(loc.entry->dtype, loc.file->data(*loc.entry), out_dtype, out,
                   static_cast<size_t>(num_elements(spec.shape)));
}

}  // namespace tandem::model
