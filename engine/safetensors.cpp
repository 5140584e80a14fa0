#include "engine/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "pagedattn/error.h"

namespace pagedattn::engine {
namespace {

using json = nlohmann::json;

// safetensors dtype names <-> ours (the ones a Llama/Qwen checkpoint or our tests use).
DType parse_st_dtype(const std::string& s, const std::string& where) {
  if (s == "BF16") return DType::kBFloat16;
  if (s == "F16") return DType::kFloat16;
  if (s == "F32") return DType::kFloat32;
  if (s == "F8_E4M3") return DType::kFloat8E4M3;
  if (s == "F8_E5M2") return DType::kFloat8E5M2;
  if (s == "I8") return DType::kInt8;
  if (s == "U8") return DType::kUInt8;
  if (s == "I32") return DType::kInt32;
  if (s == "I64") return DType::kInt64;
  PA_CHECK(false, where, ": dtype \"", s,
           "\" is not supported (BF16, F16, F32, F8_E4M3, F8_E5M2, I8, U8, I32, I64)");
}

const char* st_dtype_name(DType t) {
  switch (t) {
    case DType::kBFloat16:
      return "BF16";
    case DType::kFloat16:
      return "F16";
    case DType::kFloat32:
      return "F32";
    case DType::kFloat8E4M3:
      return "F8_E4M3";
    case DType::kFloat8E5M2:
      return "F8_E5M2";
    case DType::kInt8:
      return "I8";
    case DType::kUInt8:
      return "U8";
    case DType::kInt32:
      return "I32";
    case DType::kInt64:
      return "I64";
  }
  return "?";
}

}  // namespace

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string TensorInfo::shape_string() const {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

MappedFile::MappedFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  PA_CHECK(fd >= 0, "cannot open ", path, ": ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    PA_CHECK(false, "cannot stat ", path, ": ", std::strerror(errno));
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    ::close(fd);
    PA_CHECK(p != MAP_FAILED, "cannot map ", path, ": ", std::strerror(errno));
    data_ = static_cast<const uint8_t*>(p);
  } else {
    ::close(fd);
  }
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
}

SafetensorsFile::SafetensorsFile(const std::string& path) : file_(std::make_shared<MappedFile>(path)) {
  const size_t size = file_->size();
  PA_CHECK(size >= 8, path, ": too short for a safetensors file (", size,
           " bytes; the header length alone is 8)");
  uint64_t header_len = 0;
  std::memcpy(&header_len, file_->data(), 8);  // little-endian on every machine we build for
  PA_CHECK(header_len <= size - 8, path, ": the header claims ", header_len, " bytes but the file has ",
           size - 8, " after the length");
  const char* header = reinterpret_cast<const char*>(file_->data() + 8);
  json j;
  try {
    j = json::parse(header, header + header_len);
  } catch (const json::parse_error& e) {
    PA_CHECK(false, path, ": the header is not valid JSON (", e.what(), ")");
  }
  PA_CHECK(j.is_object(), path, ": the header must be a JSON object");
  const uint8_t* data = file_->data() + 8 + header_len;
  const size_t data_size = size - 8 - header_len;
  std::vector<std::pair<size_t, size_t>> ranges;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const std::string where = path + ": tensor " + it.key();
    const json& t = it.value();
    PA_CHECK(t.is_object() && t.contains("dtype") && t.contains("shape") && t.contains("data_offsets"), where,
             " needs dtype, shape and data_offsets");
    TensorInfo info;
    info.name = it.key();
    try {
      info.dtype = parse_st_dtype(t.at("dtype").get<std::string>(), where);
      info.shape = t.at("shape").get<std::vector<int64_t>>();
      const auto offsets = t.at("data_offsets").get<std::vector<uint64_t>>();
      PA_CHECK(offsets.size() == 2 && offsets[0] <= offsets[1], where, ": data_offsets must be [begin, end]");
      PA_CHECK(offsets[1] <= data_size, where, ": its bytes [", offsets[0], ", ", offsets[1],
               ") run past the file's data (", data_size,
               " bytes): the file is truncated or the header wrong");
      info.data = data + offsets[0];
      info.bytes = static_cast<size_t>(offsets[1] - offsets[0]);
      ranges.emplace_back(offsets[0], offsets[1]);
    } catch (const json::exception& e) {
      PA_CHECK(false, where, ": malformed entry (", e.what(), ")");
    }
    for (int64_t d : info.shape) PA_CHECK(d >= 0, where, ": negative dimension in ", info.shape_string());
    PA_CHECK(static_cast<size_t>(info.numel()) * dtype_size(info.dtype) == info.bytes, where, ": shape ",
             info.shape_string(), " of ", st_dtype_name(info.dtype), " is ",
             info.numel() * dtype_size(info.dtype), " bytes but data_offsets span ", info.bytes);
    tensors_.emplace(info.name, std::move(info));
  }
  // The data is covered exactly: no two tensors overlap and no bytes are left between them.
  std::sort(ranges.begin(), ranges.end());
  size_t at = 0;
  for (const auto& [begin, end] : ranges) {
    PA_CHECK(begin == at, path, ": tensor data ", begin < at ? "overlaps" : "has a hole", " at byte ", begin,
             " of the data section");
    at = end;
  }
  PA_CHECK(at == data_size, path, ": ", data_size - at,
           " bytes after the last tensor are not part of any tensor");
}

SafetensorsFolder::SafetensorsFolder(const std::string& folder) : folder_(folder) {
  namespace fs = std::filesystem;
  PA_CHECK(fs::is_directory(folder), "model folder ", folder, " does not exist");
  const fs::path index = fs::path(folder) / "model.safetensors.index.json";
  std::map<std::string, std::string> expected_shard;  // tensor -> shard file (sharded checkpoints)
  std::vector<std::string> files;
  if (fs::exists(index)) {
    std::ifstream f(index);
    json j;
    try {
      j = json::parse(f);
    } catch (const json::parse_error& e) {
      PA_CHECK(false, index.string(), " is not valid JSON (", e.what(), ")");
    }
    PA_CHECK(j.contains("weight_map") && j.at("weight_map").is_object(), index.string(),
             " has no weight_map");
    for (auto it = j.at("weight_map").begin(); it != j.at("weight_map").end(); ++it) {
      const std::string shard = it.value().get<std::string>();
      expected_shard[it.key()] = shard;
      if (std::find(files.begin(), files.end(), shard) == files.end()) files.push_back(shard);
    }
  } else {
    PA_CHECK(fs::exists(fs::path(folder) / "model.safetensors"), "model folder ", folder,
             " has neither model.safetensors nor model.safetensors.index.json");
    files.push_back("model.safetensors");
  }
  for (const std::string& name : files) {
    files_.push_back(std::make_unique<SafetensorsFile>((fs::path(folder) / name).string()));
    for (const auto& [tensor, info] : files_.back()->tensors()) {
      PA_CHECK(tensors_.count(tensor) == 0, "tensor ", tensor, " appears in more than one shard of ", folder);
      auto it = expected_shard.find(tensor);
      PA_CHECK(expected_shard.empty() || (it != expected_shard.end() && it->second == name), "tensor ",
               tensor, " is in ", name, " but the index ",
               it == expected_shard.end() ? "does not list it" : "places it in " + it->second);
      tensors_.emplace(tensor, info);
    }
  }
  for (const auto& [tensor, shard] : expected_shard) {
    PA_CHECK(tensors_.count(tensor), "the index lists ", tensor, " in ", shard, " but that shard lacks it");
  }
}

const TensorInfo& SafetensorsFolder::get(const std::string& name) const {
  auto it = tensors_.find(name);
  PA_CHECK(it != tensors_.end(), "model folder ", folder_, " has no tensor ", name);
  return it->second;
}

void write_safetensors(const std::string& path, const std::vector<TensorInfo>& tensors) {
  std::vector<const TensorInfo*> sorted;
  for (const auto& t : tensors) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->name < b->name; });
  json header = json::object();
  size_t at = 0;
  for (const TensorInfo* t : sorted) {
    PA_CHECK(static_cast<size_t>(t->numel()) * dtype_size(t->dtype) == t->bytes, "write_safetensors: tensor ",
             t->name, " has ", t->bytes, " bytes for shape ", t->shape_string());
    header[t->name] = {
        {"dtype", st_dtype_name(t->dtype)}, {"shape", t->shape}, {"data_offsets", {at, at + t->bytes}}};
    at += t->bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data starts 8-byte aligned
  std::ofstream f(path, std::ios::binary);
  PA_CHECK(f.good(), "write_safetensors: cannot write ", path);
  const uint64_t len = text.size();
  f.write(reinterpret_cast<const char*>(&len), 8);
  f.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const TensorInfo* t : sorted)
    f.write(reinterpret_cast<const char*>(t->data), static_cast<std::streamsize>(t->bytes));
  PA_CHECK(f.good(), "write_safetensors: writing ", path, " failed");
}

}  // namespace pagedattn::engine
