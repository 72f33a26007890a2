// Checkpoint: a Hugging Face model directory on disk (config.json plus model.safetensors or shards
// listed in model.safetensors.index.json), read through mmap. Opening parses config.json, the index
// and every shard header; tensors are converted on read. FP8 tensors (F8_E4M3 with the scale tensor of the
// config's quantization_config beside them) are read as QuantizedWeight or dequantized on read.
// Thread-safe after construction.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "model/safetensors.h"
#include "model/weight_source.h"

namespace tandem::model {

class Checkpoint : public WeightSource {
 public:
  // Throws tandem::Error naming the file for a missing directory, config.json, index or shard.
  explicit Checkpoint(const std::filesystem::path& dir);

  const ModelConfig& config() const override { return config_; }
  std::string describe() const override { return dir_.string(); }
  void validate() const override;
  void read(const TensorSpec& spec, DType out_dtype, void* out) const override;
  std::optional<QuantizedWeight> read_quantized(const TensorSpec& spec) const override;

  const std::filesystem::path& dir() const { return dir_; }

 private:
  struct Location {
    const SafetensorsFile* file;     // nullptr when the index names it but the shard lacks it
    const SafetensorsEntry* entry;
    std::string file_name;           // the shard the index points at
  };
  Location locate(const std::string& name) const;
  // Throws naming the file and tensor unless `spec` (stored as F8_E4M3 at `loc`) has the scale tensor
  // its quantization scheme needs, with the right shape and a float dtype.
  void validate_fp8(const TensorSpec& spec, const Location& loc) const;
  std::string scale_name(const std::string& weight_name) const;

  std::filesystem::path dir_;
  ModelConfig config_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const SafetensorsFile*> files_by_name_;
  std::map<std::string, std::string> weight_map_;  // from the index; empty for a single file
  std::string index_name_;                         // "model.safetensors.index.json" when sharded
};

}  // namespace tandem::model
