// The CUDA flash attention (layers/flash_attention.h): forward, backward and forward+backward
// TFLOP/s of the bf16 tensor-core kernels (layers/flash_mma.h) for head dims 64 and 128 and
// N = 512 ... 16384, per variant, with two peers measured in the same run on the same data:
// cuDNN's fused attention (layers/flash_attention_cudnn.h; where built with the cuDNN frontend
// and for the variants it covers, "-" otherwise) and the f32 SIMT kernels (the kernels the
// tensor-core ones replace for bf16). Ratios: tstl bf16 / cuDNN and tstl bf16 / SIMT f32, on
// fwd+bwd. Exits with a message where there is no CUDA device.
//
// Sizes as FlashAttention-2's benchmark: 16384 tokens per call (B = 16384 / N) and 2048 / d
// heads, which fills an H100. FLOPs count causal pairs only, as FA2 does: with
// pairs = N (N + 1) / 2 per (b, h), forward = 4 B H d pairs, backward = 10 B H d pairs (2.5x
// forward; recomputation not counted).
// Variants: rope, keynorm, coca and coca-strict reach the kernel as an ordinary (q, k) pair (only
// the scale differs: 1 for keynorm); alibi adds the per-head slope; "rope+logn" the row factors.
//
//   build/bench_attention_gpu [repeats=10] [max_n=16384] [json_path]
// With json_path, every row is also written there as a JSON array of objects (variant, d, n,
// batch, heads, TFLOP/s of tstl fwd / bwd / fwd+bwd, of cuDNN (null where not measured), of
// SIMT fwd+bwd, and the two ratios), for scripts/gpu-check.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench_util.h"
#include "core/cuda_backend.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "layers/alibi.h"
#include "layers/flash_attention.h"
#include "layers/flash_attention_cudnn.h"
#include "layers/rope.h"

namespace {

using tstl::DType;
using tstl::Device;
using tstl::Tensor;
using tstl::bench::median;
using tstl::bench::seconds;

struct Variant {
  const char* name;
  bool unit_scale, alibi, logn;
  bool cudnn() const { return !logn; }  // cuDNN has no log-n; its ALiBi slopes are ours for 2^k heads
};
const Variant kVariants[] = {{"rope", false, false, false},      {"keynorm", true, false, false},
                             {"coca", false, false, false},      {"coca-strict", false, false, false},
                             {"alibi", false, true, false},      {"rope+logn", false, false, true}};

struct Timing {
  double fwd, bwd;  // seconds, median
};

enum class Backend { Tstl, Cudnn };

// Times the forward and the backward kernels of one problem in `dtype` (inputs N(0, 1)).
Timing time_flash(int64_t batch, int64_t heads, int64_t n, int64_t d, const Variant& variant, DType dtype,
                  Backend backend, int repeats) {
  tstl::Generator gen{7};
  const auto input = [&] { return tstl::randn({batch, heads, n, d}, gen, DType::F32, Device::CUDA).to(dtype); };
  const Tensor q = input(), k = input(), v = input(), d_o = input();
  const Tensor slopes = variant.alibi ? tstl::alibi_slopes_tensor(heads, n, {}, DType::F32, Device::CUDA) : Tensor();
  const Tensor logn = variant.logn ? tstl::logn_factors(0, n, 512, true, DType::F32, Device::CUDA) : Tensor();
  const double scale = variant.unit_scale ? 1.0 : 1.0 / std::sqrt(static_cast<double>(d));
  Tensor o = Tensor::empty(q.shape(), dtype, Device::CUDA);
  Tensor lse = Tensor::empty({batch, heads, n}, DType::F32, Device::CUDA);
  Tensor dq = Tensor::empty(q.shape(), dtype, Device::CUDA), dk = dq.clone(), dv = dq.clone();
  const auto fwd = [&] {
    if (backend == Backend::Cudnn) {
      tstl::kernels::cudnn_attention_forward(q, k, v, scale, variant.alibi, o, lse);
    } else {
#ifdef TSTL_WITH_CUDA
      tstl::kernels::flash_forward_cuda(q, k, v, slopes, logn, 0, scale, o, lse);
#endif
    }
    tstl::cuda::synchronize();
  };
  const auto bwd = [&] {
    if (backend == Backend::Cudnn) {
      tstl::kernels::cudnn_attention_backward(q, k, v, o, lse, d_o, scale, variant.alibi, dq, dk, dv);
    } else {
#ifdef TSTL_WITH_CUDA
      tstl::kernels::flash_backward_cuda(q, k, v, slopes, logn, 0, scale, o, lse, d_o, dq, dk, dv);
#endif
    }
    tstl::cuda::synchronize();
  };
  fwd(), bwd();  // warm-up: module loading, shared-memory opt-in, the allocator's cache
  std::vector<double> f, b;
  for (int r = 0; r < repeats; ++r) {
    f.push_back(seconds(fwd));
    b.push_back(seconds(bwd));
  }
  return {median(f), median(b)};
}

}  // namespace

int main(int argc, char** argv) {
  const int repeats = argc > 1 ? std::atoi(argv[1]) : 10;
  const int64_t max_n = argc > 2 ? std::atoll(argv[2]) : 16384;
  if (repeats < 1 || max_n < 512 || argc > 4) {
    std::fprintf(stderr, "usage: bench_attention_gpu [repeats >= 1] [max_n >= 512] [json_path]\n");
    return 2;
  }
  if (tstl::cuda::device_count() == 0) {
    std::printf("bench_attention_gpu: no CUDA device (%s), nothing measured\n",
                tstl::cuda::compiled() ? "none present" : "built without CUDA");
    return 0;
  }
  std::FILE* json = nullptr;
  if (argc > 3) {
    json = std::fopen(argv[3], "w");
    if (!json) {
      std::fprintf(stderr, "bench_attention_gpu: cannot write %s\n", argv[3]);
      return 2;
    }
    std::fprintf(json, "[");
  }
  bool first_row = true;
  std::printf("flash attention on %s, causal, %d repeats (median); TFLOP/s with causal FLOPs (FA2 count)\n",
              tstl::cuda::device_name().c_str(), repeats);
  const bool with_cudnn = tstl::kernels::cudnn_attention_available();
  std::printf("tstl = bf16 tensor-core kernels; cuDNN = its fused attention, bf16%s; SIMT = tstl's f32 kernels\n",
              with_cudnn ? "" : " (not built: no cuDNN frontend)");
  std::printf("ratios on fwd+bwd: tstl / cuDNN, tstl / SIMT\n\n");
  std::printf("%-11s %4s %6s %3s %4s | %7s %7s %7s | %7s %7s %7s | %7s | %6s %6s\n", "variant", "d", "N", "B", "H",
              "tstl f", "tstl b", "f+b", "cuDNN f", "cuDNN b", "f+b", "SIMT", "/cuDNN", "/SIMT");
  for (int64_t d : {64, 128})
    for (int64_t n = 512; n <= max_n; n *= 2)
      for (const Variant& variant : kVariants) {
        const int64_t batch = std::max<int64_t>(1, 16384 / n), heads = 2048 / d;
        const double pairs = static_cast<double>(n) * static_cast<double>(n + 1) / 2.0;
        const double fwd_flops = 4.0 * static_cast<double>(batch * heads * d) * pairs, bwd_flops = 2.5 * fwd_flops;
        const auto tflops = [](double flops, double s) { return flops / s * 1e-12; };
        const Timing tc = time_flash(batch, heads, n, d, variant, DType::BF16, Backend::Tstl, repeats);
        const Timing simt = time_flash(batch, heads, n, d, variant, DType::F32, Backend::Tstl, repeats);
        const double tc_both = tflops(fwd_flops + bwd_flops, tc.fwd + tc.bwd);
        const double simt_both = tflops(fwd_flops + bwd_flops, simt.fwd + simt.bwd);
        char cudnn_cols[64] = "      -       -       - |", cudnn_ratio[16] = "     -";
        char cudnn_json[160] = "\"cudnn_fwd\": null, \"cudnn_bwd\": null, \"cudnn_fwd_bwd\": null, \"vs_cudnn\": null";
        if (with_cudnn && variant.cudnn()) {
          const Timing cu = time_flash(batch, heads, n, d, variant, DType::BF16, Backend::Cudnn, repeats);
          const double cu_both = tflops(fwd_flops + bwd_flops, cu.fwd + cu.bwd);
          std::snprintf(cudnn_json, sizeof cudnn_json,
                        "\"cudnn_fwd\": %.2f, \"cudnn_bwd\": %.2f, \"cudnn_fwd_bwd\": %.2f, \"vs_cudnn\": %.3f",
                        tflops(fwd_flops, cu.fwd), tflops(bwd_flops, cu.bwd), cu_both, tc_both / cu_both);
          std::snprintf(cudnn_cols, sizeof cudnn_cols, "%7.1f %7.1f %7.1f |", tflops(fwd_flops, cu.fwd),
                        tflops(bwd_flops, cu.bwd), cu_both);
          std::snprintf(cudnn_ratio, sizeof cudnn_ratio, "%6.2f", tc_both / cu_both);
        }
        std::printf("%-11s %4lld %6lld %3lld %4lld | %7.1f %7.1f %7.1f | %s %7.1f | %s %6.2f\n", variant.name,
                    static_cast<long long>(d), static_cast<long long>(n), static_cast<long long>(batch),
                    static_cast<long long>(heads), tflops(fwd_flops, tc.fwd), tflops(bwd_flops, tc.bwd), tc_both,
                    cudnn_cols, simt_both, cudnn_ratio, tc_both / simt_both);
        std::fflush(stdout);
        if (json) {
          std::fprintf(json,
                       "%s\n {\"variant\": \"%s\", \"d\": %lld, \"n\": %lld, \"batch\": %lld, \"heads\": %lld, "
                       "\"tstl_fwd\": %.2f, \"tstl_bwd\": %.2f, \"tstl_fwd_bwd\": %.2f, %s, \"simt_fwd_bwd\": %.2f, "
                       "\"vs_simt\": %.3f}",
                       first_row ? "" : ",", variant.name, static_cast<long long>(d), static_cast<long long>(n),
                       static_cast<long long>(batch), static_cast<long long>(heads), tflops(fwd_flops, tc.fwd),
                       tflops(bwd_flops, tc.bwd), tc_both, cudnn_json, simt_both, tc_both / simt_both);
          std::fflush(json);
          first_row = false;
        }
      }
  if (json) {
    std::fprintf(json, "\n]\n");
    std::fclose(json);
  }
  return 0;
}
