// Reading Hugging Face safetensors files: memory-mapped, header validated (dtypes, shapes, offsets inside the
// file, no overlaps or holes), and a model folder's tensors (one file or shards listed by
// model.safetensors.index.json) found by name.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "pagedattn/dtype.h"

namespace pagedattn::engine {

/// One tensor of a safetensors file: its dtype, shape and bytes (inside the mapping; not necessarily
/// aligned).
struct TensorInfo {
  std::string name;
  DType dtype = DType::kBFloat16;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  size_t bytes = 0;
  int64_t numel() const;
  std::string shape_string() const;
};

/// A read-only memory mapping of one file (unmapped on destruction).
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

class SafetensorsFile {
 public:
  /// Maps the file and validates its header; throws pagedattn::Error naming the file and the problem.
  explicit SafetensorsFile(const std::string& path);
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const std::string& path() const { return file_->path(); }

 private:
  std::shared_ptr<MappedFile> file_;
  std::map<std::string, TensorInfo> tensors_;
};

/// Every tensor of a model folder: model.safetensors, or the shards that model.safetensors.index.json names
/// (each tensor must be in the shard the index says).
class SafetensorsFolder {
 public:
  explicit SafetensorsFolder(const std::string& folder);
  /// The tensor of this name; throws naming it (and the folder) when absent.
  const TensorInfo& get(const std::string& name) const;
  bool contains(const std::string& name) const { return tensors_.count(name) > 0; }
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }

 private:
  std::string folder_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, TensorInfo> tensors_;
};

/// Writes tensors as a safetensors file (for tests and for saving random-weight presets): header with the
/// tensors in name order, data 8-byte aligned as the format recommends.
void write_safetensors(const std::string& path, const std::vector<TensorInfo>& tensors);

}  // namespace pagedattn::engine
