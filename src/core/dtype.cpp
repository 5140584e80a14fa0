#include "pagedattn/dtype.h"

#include <string>

#include "pagedattn/error.h"

namespace pagedattn {

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::kFloat32:
      return "fp32";
    case DType::kFloat16:
      return "fp16";
    case DType::kBFloat16:
      return "bf16";
    case DType::kFloat8E4M3:
      return "fp8_e4m3";
    case DType::kFloat8E5M2:
      return "fp8_e5m2";
    case DType::kInt8:
      return "int8";
    case DType::kInt32:
      return "int32";
    case DType::kInt64:
      return "int64";
    case DType::kUInt8:
      return "uint8";
  }
  return "unknown";
}

DType parse_dtype(std::string_view name) {
  for (DType t : {DType::kFloat32, DType::kFloat16, DType::kBFloat16, DType::kFloat8E4M3, DType::kFloat8E5M2,
                  DType::kInt8, DType::kInt32, DType::kInt64, DType::kUInt8}) {
    if (dtype_name(t) == name) return t;
  }
  PA_CHECK(false, "unknown dtype '", std::string(name),
           "'; expected fp32, fp16, bf16, fp8_e4m3, fp8_e5m2, int8, int32, int64 or uint8");
}

}  // namespace pagedattn
