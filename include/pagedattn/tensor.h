// A non-owning strided view of device or host memory. Strides are in elements.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "pagedattn/dtype.h"

namespace pagedattn {

struct Device {
  enum class Kind : uint8_t { kCPU, kCUDA };
  Kind kind = Kind::kCPU;
  int index = 0;  ///< CUDA device ordinal; 0 for the CPU

  static constexpr Device cpu() { return {Kind::kCPU, 0}; }
  static constexpr Device cuda(int index) { return {Kind::kCUDA, index}; }
  bool is_cpu() const { return kind == Kind::kCPU; }
  bool is_cuda() const { return kind == Kind::kCUDA; }
  friend bool operator==(const Device&, const Device&) = default;
};

std::string device_name(const Device& d);  ///< "cpu" or "cuda:N"

struct TensorView {
  static constexpr int kMaxRank = 4;

  void* data = nullptr;
  DType dtype = DType::kFloat32;
  int rank = 0;
  std::array<int64_t, kMaxRank> shape{};
  std::array<int64_t, kMaxRank> strides{};
  Device device{};

  /// A view with row-major (contiguous) strides.
  static TensorView contiguous(void* data, DType dtype, std::initializer_list<int64_t> shape,
                               Device device = Device::cpu());
  /// A view with explicit strides (elements).
  static TensorView strided(void* data, DType dtype, std::initializer_list<int64_t> shape,
                            std::initializer_list<int64_t> strides, Device device = Device::cpu());

  bool defined() const { return data != nullptr || numel() == 0; }
  int64_t numel() const;
  int64_t size(int dim) const { return shape[dim]; }
  int64_t stride(int dim) const { return strides[dim]; }
  bool is_contiguous() const;
  std::string shape_string() const;  ///< "[3, 4, 128]"

  template <typename T>
  T* ptr() const {
    return static_cast<T*>(data);
  }
};

}  // namespace pagedattn
