// A safetensors file read through mmap (https://github.com/huggingface/safetensors, "Format"):
// 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets}}, then
// the data section. Every offset is checked against the file size when the file is opened, so a
// truncated or corrupt file fails at open with the file and tensor named, never at first use.
// Owns the mapping; tensor data pointers stay valid while the object lives. Read-only, thread-safe.
#pragma once

#include <cstddef>
#include <filesystem>
#include <map>
#include <string>

#include "model/tensor.h"

namespace tandem::model {

struct SafetensorsEntry {
  std::string name;
  std::string dtype_name;  // as written in the file, for error messages about unsupported types
  DType dtype = DType::kUnsupported;
  Shape shape;
  size_t data_begin = 0;  // byte offsets within the data section
  size_t data_end = 0;
};

class SafetensorsFile {
 public:
  // Throws tandem::Error naming the file (and the tensor) when it is missing, truncated or corrupt.
  explicit SafetensorsFile(const std::filesystem::path& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::filesystem::path& path() const { return path_; }
  const std::map<std::string, SafetensorsEntry>& entries() const { return entries_; }
  // nullptr when absent.
  const SafetensorsEntry* find(const std::string& name) const;
  // REQUIRES: entry belongs to this file. Points into the mapping; data_end - data_begin bytes.
  const std::byte* data(const SafetensorsEntry& entry) const { return data_section_ + entry.data_begin; }

 private:
  std::filesystem::path path_;
  void* mapping_ = nullptr;
  size_t mapping_bytes_ = 0;
  const std::byte* data_section_ = nullptr;
  std::map<std::string, SafetensorsEntry> entries_;
};

}  // namespace tandem::model
