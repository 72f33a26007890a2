#include "model/safetensors_writer.h"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>

#include "common/error.h"
#include "model/config.h"

namespace tandem::model {
namespace fs = std::filesystem;

void write_safetensors(const fs::path& path, const std::vector<TensorToWrite>& tensors,
                       const TensorFiller& fill) {
  nlohmann::ordered_json header;
  header["__metadata__"] = {{"format", "pt"}};
  size_t offset = 0;
  for (const auto& t : tensors) {
    size_t bytes = static_cast<size_t>(num_elements(t.shape)) * dtype_size(t.dtype);
    header[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string header_text = header.dump();
  // The data section starts 8-byte aligned; the format pads the header with spaces.
  while ((header_text.size() + 8) % 8 != 0) header_text.push_back(' ');

  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "wb"), std::fclose);
  if (!file) throw Error(path.string() + ": cannot create: " + std::strerror(errno));
  unsigned char length[8];
  uint64_t n = header_text.size();
  for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>(n >> (8 * i));
  bool ok = std::fwrite(length, 1, 8, file.get()) == 8 &&
            std::fwrite(header_text.data(), 1, header_text.size(), file.get()) == header_text.size();
  std::vector<std::byte> buffer;
  for (const auto& t : tensors) {
    if (!ok) break;
    buffer.resize(static_cast<size_t>(num_elements(t.shape)) * dtype_size(t.dtype));
    fill(t, buffer.data());
    ok = std::fwrite(buffer.data(), 1, buffer.size(), file.get()) == buffer.size();
  }
  if (!ok) throw Error(path.string() + ": write failed: " + std::strerror(errno));
  if (std::fclose(file.release()) != 0) throw Error(path.string() + ": write failed: " + std::strerror(errno));
}

void write_model_directory(const WeightSource& source, const fs::path& dir, DType dtype,
                           size_t max_shard_bytes, const QuantizationConfig& quantization) {
  const bool fp8 = quantization.method == QuantizationConfig::Method::kFp8Block ||
                   quantization.method == QuantizationConfig::Method::kCompressedTensors;
  TANDEM_CHECK(fp8 || !quantization.is_fp8());
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(dir.string() + ": cannot create directory: " + ec.message());

  ModelConfig config = source.config();
  config.torch_dtype = dtype == DType::kF32 ? "float32" : dtype == DType::kF16 ? "float16" : "bfloat16";
  config.quantization = fp8 ? quantization : QuantizationConfig{};
  {
    std::ofstream out(dir / "config.json");
    out << model_config_to_json(config).dump(2) << "\n";
    if (!out) throw Error((dir / "config.json").string() + ": write failed");
  }

  // Group tensors into shards in order, as save_pretrained does.
  std::vector<std::vector<TensorToWrite>> shards(1);
  size_t shard_bytes = 0;
  size_t total_bytes = 0;
  // An FP8 weight and its scale go in the same shard, weight first.
  std::vector<TensorToWrite> tensors;
  for (const TensorSpec& spec : expected_tensors(config)) {
    if (!fp8 || !is_quantizable_linear(spec.name)) {
      tensors.push_back({spec.name, dtype, spec.shape});
      continue;
    }
    tensors.push_back({spec.name, DType::kF8E4M3, spec.shape});
    // The shapes Checkpoint::validate_fp8 accepts, as the published checkpoints write them.
    Shape scale_shape;
    switch (quantization.weight_scheme) {
      case Fp8Scheme::kBlock:
        scale_shape = {(spec.shape[0] + quantization.block_rows - 1) / quantization.block_rows,
                       (spec.shape[1] + quantization.block_cols - 1) / quantization.block_cols};
        break;
      case Fp8Scheme::kChannel: scale_shape = {spec.shape[0], 1}; break;
      case Fp8Scheme::kTensor: scale_shape = {}; break;
    }
    const std::string stem = spec.name.substr(0, spec.name.size() - std::string("weight").size());
    tensors.push_back({stem + quantization.scale_suffix(), DType::kF32, scale_shape});
  }
  for (size_t i = 0; i < tensors.size(); ++i) {
    size_t bytes = static_cast<size_t>(num_elements(tensors[i].shape)) * dtype_size(tensors[i].dtype);
    const bool with_next = tensors[i].dtype == DType::kF8E4M3;
    if (with_next) bytes += static_cast<size_t>(num_elements(tensors[i + 1].shape)) * sizeof(float);
    if (!shards.back().empty() && shard_bytes + bytes > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(tensors[i]);
    if (with_next) shards.back().push_back(tensors[++i]);
    shard_bytes += bytes;
    total_bytes += bytes;
  }
  // The filler is called weight first, then its scale: the scale comes from the weight's quantization.
  QuantizedWeight last;
  std::string last_name;
  auto fill = [&](const TensorToWrite& t, std::byte* out) {
    if (t.dtype == DType::kF8E4M3) {
      std::vector<float> full(static_cast<size_t>(num_elements(t.shape)));
      source.read(TensorSpec{t.name, t.shape}, DType::kF32, full.data());
      last = quantize_fp8(full.data(), t.shape, quantization.weight_scheme, quantization.block_rows, quantization.block_cols);
      last_name = t.name;
      std::memcpy(out, last.values.data(), last.values.size());
      return;
    }
    if (!last_name.empty() && t.name == last_name.substr(0, last_name.size() - 6) + quantization.scale_suffix()) {
      std::memcpy(out, last.scales.data(), last.scales.size() * sizeof(float));
      return;
    }
    source.read(TensorSpec{t.name, t.shape}, t.dtype, out);
  };
  if (shards.size() == 1) {
    fs::remove(dir / "model.safetensors.index.json");
    write_safetensors(dir / "model.safetensors", shards[0], fill);
    return;
  }
  nlohmann::ordered_json index;
  index["metadata"] = {{"total_size", total_bytes}};
  index["weight_map"] = nlohmann::ordered_json::object();
  char name[64];
  for (size_t i = 0; i < shards.size(); ++i) {
    std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
    write_safetensors(dir / name, shards[i], fill);
    for (const auto& t : shards[i]) index["weight_map"][t.name] = name;
  }
  fs::remove(dir / "model.safetensors");
  std::ofstream out(dir / "model.safetensors.index.json");
  out << index.dump(2) << "\n";
  if (!out) throw Error((dir / "model.safetensors.index.json").string() + ": write failed");
}

}  // namespace tandem::model
