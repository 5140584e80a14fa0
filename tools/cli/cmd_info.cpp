// `pagedattn info`: version, what this build contains, and what the machine offers.
#include <cstdio>
#include <thread>

#include "commands.h"
#include "pagedattn/info.h"

namespace pagedattn::cli {

int run_info() {
  const BuildInfo b = build_info();
  std::printf("pagedattn %s\n", b.version.c_str());
  std::printf("cpu backend: yes (%u threads), K/V formats fp32 fp16 bf16 fp8_e4m3 fp8_e5m2 int8\n",
              std::thread::hardware_concurrency());
  if (b.cuda) {
    std::printf("cuda backend: yes, archs %s, TMA decode kernel %s\n  head dims:", b.cuda_archs.c_str(),
                b.cuda_tma ? "compiled" : "not compiled");
    for (int hd : b.cuda_head_dims) std::printf(" %d", hd);
    std::printf("\n  query dtypes:");
    for (DType t : b.cuda_dtypes) std::printf(" %s", std::string(dtype_name(t)).c_str());
    std::printf("\n  K/V formats:");
    for (DType t : b.cuda_kv_formats) std::printf(" %s", std::string(dtype_name(t)).c_str());
    std::printf("\n  instances: %zu (query dtype x K/V format x head dim)\n", b.cuda_instances.size());
  } else {
    std::printf("cuda backend: no (built without CUDA)\n");
  }
  if (b.cuda) {
    if (const std::string why = cuda_unavailable_reason(); !why.empty()) {
      std::printf("cuda devices: none; %s\n", why.c_str());
    }
  }
  for (const auto& d : cuda_devices()) {
    std::printf("cuda:%d %s, sm_%d%d, %d SMs, %.1f GiB, L2 %.0f MiB, prefill kernel %s, decode loads %s\n",
                d.index, d.name.c_str(), d.major, d.minor, d.sm_count,
                static_cast<double>(d.total_memory) / (1 << 30), static_cast<double>(d.l2_bytes) / (1 << 20),
                d.prefill_kernel.c_str(), d.decode_kernel.c_str());
  }
  return 0;
}

}  // namespace pagedattn::cli
