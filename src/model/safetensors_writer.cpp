#include "model/safetensors_writer.h"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>

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
                           size_t max_shard_bytes) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(dir.string() + ": cannot create directory: " + ec.message());

  ModelConfig config = source.config();
  config.torch_dtype = dtype == DType::kF32 ? "float32" : dtype == DType::kF16 ? "float16" : "bfloat16";
  {
    std::ofstream out(dir / "config.json");
    out << model_config_to_json(config).dump(2) << "\n";
    if (!out) throw Error((dir / "config.json").string() + ": write failed");
  }

  // Group tensors into shards in order, as save_pretrained does.
  std::vector<std::vector<TensorToWrite>> shards(1);
  size_t shard_bytes = 0;
  size_t total_bytes = 0;
  for (const TensorSpec& spec : expected_tensors(config)) {
    size_t bytes = static_cast<size_t>(num_elements(spec.shape)) * dtype_size(dtype);
    if (!shards.back().empty() && shard_bytes + bytes > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back({spec.name, dtype, spec.shape});
    shard_bytes += bytes;
    total_bytes += bytes;
  }
  auto fill = [&source](const TensorToWrite& t, std::byte* out) {
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
