// safetensors reading: a round trip through our writer, and hand-made corrupt files (bytes written
// directly, not by our writer) that must fail at open with the file and tensor named.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "model/safetensors.h"
#include "model/safetensors_writer.h"

namespace tandem::model {
namespace {
namespace fs = std::filesystem;

fs::path temp_file(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("tandem_st_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir / name;
}

// Writes the raw safetensors layout: 8-byte little-endian header length, header, data.
void write_raw(const fs::path& path, const std::string& header, size_t data_bytes, uint64_t claimed_header = 0) {
  std::ofstream out(path, std::ios::binary);
  uint64_t n = claimed_header ? claimed_header : header.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>(n >> (8 * i)));
  out << header;
  out << std::string(data_bytes, '\x01');
}

std::string open_error(const fs::path& path) {
  try {
    SafetensorsFile file(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Safetensors, RoundTripsEveryDtype) {
  fs::path path = temp_file("roundtrip.safetensors");
  std::vector<TensorToWrite> tensors = {{"a", DType::kF32, {2, 3}}, {"b", DType::kBF16, {4}}, {"c", DType::kF16, {1, 1, 5}}};
  write_safetensors(path, tensors, [](const TensorToWrite& t, std::byte* out) {
    std::vector<float> values(static_cast<size_t>(num_elements(t.shape)));
    for (size_t i = 0; i < values.size(); ++i) values[i] = 0.5f * static_cast<float>(i) - 1.0f;
    convert_elements(DType::kF32, values.data(), t.dtype, out, values.size());
  });
  SafetensorsFile file(path);
  ASSERT_EQ(file.entries().size(), 3u);
  for (const auto& t : tensors) {
    const SafetensorsEntry* e = file.find(t.name);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->dtype, t.dtype);
    EXPECT_EQ(e->shape, t.shape);
    std::vector<float> back(static_cast<size_t>(num_elements(t.shape)));
    convert_elements(e->dtype, file.data(*e), DType::kF32, back.data(), back.size());
    for (size_t i = 0; i < back.size(); ++i) EXPECT_EQ(back[i], 0.5f * static_cast<float>(i) - 1.0f);
  }
}

TEST(Safetensors, TruncatedDataNamesFileAndTensor) {
  fs::path path = temp_file("truncated.safetensors");
  write_raw(path, R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 10);
  std::string error = open_error(path);
  EXPECT_NE(error.find(path.string()), std::string::npos) << error;
  EXPECT_NE(error.find("'w'"), std::string::npos) << error;
  EXPECT_NE(error.find("truncated"), std::string::npos) << error;
}

TEST(Safetensors, HeaderLongerThanFileIsCorrupt) {
  fs::path path = temp_file("bad_header.safetensors");
  write_raw(path, R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4, 1ull << 40);
  std::string error = open_error(path);
  EXPECT_NE(error.find("corrupt or truncated safetensors header"), std::string::npos) << error;
  EXPECT_NE(error.find(path.string()), std::string::npos) << error;
}

TEST(Safetensors, GarbageHeaderIsCorrupt) {
  fs::path path = temp_file("garbage.safetensors");
  write_raw(path, "{not json at all", 8);
  EXPECT_NE(open_error(path).find("corrupt safetensors header"), std::string::npos);
  fs::path tiny = temp_file("tiny.safetensors");
  std::ofstream(tiny) << "abc";
  EXPECT_NE(open_error(tiny).find("truncated"), std::string::npos);
}

// tests/fuzz/safetensors_fuzz: a number too large for a double made the JSON parser throw out_of_range,
// which escaped as that instead of an Error naming the file.
TEST(Safetensors, NumberOutOfRangeInHeaderIsCorrupt) {
  fs::path path = temp_file("huge_number.safetensors");
  write_raw(path, R"({"a":{"dtype":"F32","shape":[7777777e7777],"data_offsets":[0,4]}})", 8);
  const std::string error = open_error(path);
  EXPECT_NE(error.find("corrupt safetensors header"), std::string::npos) << error;
  EXPECT_NE(error.find(path.string()), std::string::npos) << error;
}

TEST(Safetensors, SizeThatDisagreesWithShapeIsCorrupt) {
  fs::path path = temp_file("size.safetensors");
  write_raw(path, R"({"w":{"dtype":"BF16","shape":[3,3],"data_offsets":[0,16]}})", 16);
  std::string error = open_error(path);
  EXPECT_NE(error.find("'w'"), std::string::npos) << error;
  EXPECT_NE(error.find("expected 18"), std::string::npos) << error;
}

TEST(Safetensors, MissingFileNamesThePath) {
  std::string error = open_error("/nonexistent/model.safetensors");
  EXPECT_NE(error.find("/nonexistent/model.safetensors"), std::string::npos) << error;
}

}  // namespace
}  // namespace tandem::model
