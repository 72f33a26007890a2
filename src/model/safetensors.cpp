#include "model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>

#include "common/error.h"

namespace tandem::model {
namespace {

// Headers over this size are corrupt, not large: the reference implementation caps them at 100 MB.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

}  // namespace

SafetensorsFile::SafetensorsFile(const std::filesystem::path& path) : path_(path) {
  const std::string where = path.string();
  int fd = ::open(where.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(where + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    throw Error(where + ": cannot stat: " + std::strerror(err));
  }
  mapping_bytes_ = static_cast<size_t>(st.st_size);
  if (mapping_bytes_ < 8) {
    ::close(fd);
    throw Error(where + ": truncated safetensors file (" + std::to_string(mapping_bytes_) + " bytes, no header)");
  }
  mapping_ = ::mmap(nullptr, mapping_bytes_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (mapping_ == MAP_FAILED) {
    mapping_ = nullptr;
    throw Error(where + ": mmap failed: " + std::strerror(errno));
  }
  try {
    const auto* bytes = static_cast<const unsigned char*>(mapping_);
    uint64_t header_bytes = 0;
    for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | bytes[i];
    if (header_bytes > kMaxHeaderBytes || header_bytes > mapping_bytes_ - 8) {
      throw Error(where + ": corrupt or truncated safetensors header (header claims " +
                  std::to_string(header_bytes) + " bytes, file has " + std::to_string(mapping_bytes_) + ")");
    }
    nlohmann::json header;
    try {
      header = nlohmann::json::parse(reinterpret_cast<const char*>(bytes + 8),
                                     reinterpret_cast<const char*>(bytes + 8 + header_bytes));
    } catch (const nlohmann::json::exception& e) {  // out_of_range too: a number too large (tests/fuzz)
      throw Error(where + ": corrupt safetensors header: " + e.what());
    }
    if (!header.is_object()) throw Error(where + ": corrupt safetensors header: not a JSON object");
    data_section_ = reinterpret_cast<const std::byte*>(bytes + 8 + header_bytes);
    const size_t data_bytes = mapping_bytes_ - 8 - header_bytes;
    for (const auto& [name, info] : header.items()) {
      if (name == "__metadata__") continue;
      SafetensorsEntry e;
      e.name = name;
      try {
        e.dtype_name = info.at("dtype").get<std::string>();
        e.shape = info.at("shape").get<Shape>();
        auto offsets = info.at("data_offsets").get<std::vector<uint64_t>>();
        if (offsets.size() != 2) throw Error("data_offsets must have two entries");
        e.data_begin = offsets[0];
        e.data_end = offsets[1];
      } catch (const nlohmann::json::exception& ex) {
        throw Error(where + ": tensor '" + name + "': malformed header entry: " + ex.what());
      } catch (const Error& ex) {
        throw Error(where + ": tensor '" + name + "': malformed header entry: " + ex.what());
      }
      e.dtype = parse_dtype(e.dtype_name);
      for (int64_t d : e.shape) {
        if (d < 0) throw Error(where + ": tensor '" + name + "': negative dimension in shape " + shape_to_string(e.shape));
      }
      if (e.data_end < e.data_begin) {
        throw Error(where + ": tensor '" + name + "': data_offsets end before they begin");
      }
      if (e.data_end > data_bytes) {
        throw Error(where + ": tensor '" + name + "': data runs past the end of the file (offset " +
                    std::to_string(e.data_end) + " > " + std::to_string(data_bytes) +
                    " data bytes); the file is truncated or corrupt");
      }
      if (e.dtype != DType::kUnsupported) {
        uint64_t expected = static_cast<uint64_t>(num_elements(e.shape)) * dtype_size(e.dtype);
        if (expected != e.data_end - e.data_begin) {
          throw Error(where + ": tensor '" + name + "': " + std::to_string(e.data_end - e.data_begin) +
                      " data bytes for shape " + shape_to_string(e.shape) + " of " + e.dtype_name +
                      " (expected " + std::to_string(expected) + ")");
        }
      }
      entries_.emplace(name, std::move(e));
    }
  } catch (...) {
    ::munmap(mapping_, mapping_bytes_);
    mapping_ = nullptr;
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapping_bytes_);
}

const SafetensorsEntry* SafetensorsFile::find(const std::string& name) const {
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : &it->second;
}

}  // namespace tandem::model
