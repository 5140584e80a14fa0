// `pagedattn info`: version, what this build contains, and what the machine offers.
#include <cstdio>
#include <thread>

#include "commands.h"
#include "pagedattn/info.h"
#include "pagedattn/turboquant.h"

namespace pagedattn::cli {

int run_info() {
  const BuildInfo b = build_info();
  std::printf("pagedattn %s\n", b.version.c_str());
  std::printf(
      "cpu backend: yes (%u threads), K/V formats fp32 fp16 bf16 fp8_e4m3 fp8_e5m2 int8 and TurboQuant\n",
      std::thread::hardware_concurrency());
  // TurboQuant: bytes per token and KV head at head dim 128 (bf16: 512), the key codebooks' distortion
  // (E|x - x~|² of a unit vector), the rotation's sign seed.
  std::printf("turboquant presets at head dim 128 (bytes per token and KV head, K + V; bf16 512):");
  for (tq::Preset p : tq::kAllPresets) {
    std::printf(" %s %d", tq::preset_info(p).name, tq::token_bytes(p, 128).total());
  }
  std::printf(
      "\n  key codebook distortion at head dim 128: 2 bits %.4f, 3 bits %.4f, 4 bits %.5f; sign seed "
      "0x%llx\n",
      tq::codebook(128, 2).distortion, tq::codebook(128, 3).distortion, tq::codebook(128, 4).distortion,
      static_cast<unsigned long long>(tq::kSignSeed));
  if (b.cuda) {
    std::printf("cuda backend: yes, archs %s, TMA decode kernel %s\n  head dims:", b.cuda_archs.c_str(),
                b.cuda_tma ? "compiled" : "not compiled");
    for (int hd : b.cuda_head_dims) std::printf(" %d", hd);
    std::printf("\n  query dtypes:");
    for (DType t : b.cuda_dtypes) std::printf(" %s", std::string(dtype_name(t)).c_str());
    std::printf("\n  K/V formats:");
    for (DType t : b.cuda_kv_formats) std::printf(" %s", std::string(dtype_name(t)).c_str());
    std::printf("\n  instances: %zu (query dtype x K/V format x head dim)\n", b.cuda_instances.size());
    std::printf("  TurboQuant attention:");
    for (const auto& i : b.cuda_tq_instances) {
      std::printf(" %s/%s/hd%d", std::string(dtype_name(i.query)).c_str(), tq::preset_info(i.preset).name,
                  i.head_dim);
    }
    std::printf("%s\n", b.cuda_tq_instances.empty() ? " none" : "");
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
