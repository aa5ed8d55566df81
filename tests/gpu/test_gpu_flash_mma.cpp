// The CUDA flash attention against the CPU kernel (the reference) for every variant: its prologue
// (RoPE, KeyNorm, CoCA, CoCA-strict; ALiBi slopes; log-n; an inference-time scaling) runs on the
// CPU in f32, its output is rounded to the dtype under test, and flash_attention then runs on
// the CPU (f32) and on CUDA on those same values. bf16 with head dim 32, 64 or 128 takes the
// tensor-core kernels (layers/flash_mma.h); f32 takes the SIMT kernels.
// Shapes: one exact 64-row tile, several tiles with N not a multiple of 64, N < M (prefill on a
// cache, the default offset M - N) and one-row decoding; then N >= 1024 for every head-dim bucket
// (32, 64, 96, 128, 160, 256) and the split-key decoding kernel (N <= 4) on long caches.
//
// Tolerances, max |gpu - cpu| / max |cpu| per quantity (LSE: absolute, in nats):
//   f32   O, dQ, dK, dV 1e-5; LSE 1e-5   (the same math; summation order and libm ulps differ)
//   bf16  O 1e-2, dV 1e-2, dQ and dK 2e-2, LSE 1e-3. The kernel rounds P (for P V and P^T dO) and
//         dS (for dS K and dS^T Q) to bf16 and stores bf16; the same steps emulated on the CPU
//         (tests/layers/test_flash_mma.cpp) measured at most O 3.0e-3, dV 4.6e-3, dQ 7.2e-3,
//         dK 4.8e-3 and LSE 6.4e-7 against float64, so these bounds leave about 2-3x headroom
//         for the device's summation order and ex2.approx.
// cuDNN's fused attention (layers/flash_attention_cudnn.h), where built, is held to the same bf16
// tolerances for the variants it covers (no log-n; ALiBi with 2^k heads, whose slopes are assumed
// to be the paper's 2^(-8h/H), which this test checks).
// NOT YET RUN ON A GPU (no machine here has one): the first GPU run of this suite is the first
// test of the tensor-core kernels on hardware.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "common/gradcheck.h"
#include "common/variant_param.h"
#include "gpu/gpu_compare.h"
#include "layers/alibi.h"
#include "layers/attention_reference.h"
#include "layers/coca.h"
#include "layers/decoder.h"
#include "layers/flash_attention.h"
#include "layers/flash_attention_cudnn.h"
#include "layers/keynorm.h"
#include "layers/rope.h"

namespace tstl {
namespace {

using gpu_test::relative_error;
using testing::random_input;

struct Tolerances {
  double o, lse, dq, dk, dv;
};
Tolerances tolerances(DType dtype) {
  if (dtype == DType::BF16) return {1e-2, 1e-3, 2e-2, 2e-2, 1e-2};
  return {1e-5, 1e-5, 1e-5, 1e-5, 1e-5};
}

struct Shape4 {
  int64_t batch, heads, n_queries, n_keys;
};
const Shape4 kShapes[] = {{1, 2, 64, 64}, {2, 2, 200, 200}, {1, 3, 37, 300}, {2, 2, 1, 257}};
const int64_t kHeadDims[] = {32, 64, 128};
constexpr int64_t kTrainLen = 64;

// The kernel's inputs for one variant: q, k (after the prologue), v and the options.
struct AttentionInputs {
  Tensor q, k, v;
  AttentionOptions opt;
};

Tensor round_to(const Tensor& x, DType dtype) { return dtype == DType::BF16 ? x.to(DType::BF16).to(DType::F32) : x; }

// scaled: the inference-time scaling of the variant (RoPE: YaRN x4, ALiBi: NTK-ALiBi x2) on top
// of the trained form; logn: log-n factors (inference form, max(1, .)).
AttentionInputs variant_inputs(Variant variant, const Shape4& s, int64_t d, bool scaled, bool logn, DType dtype) {
  NoGradGuard no_grad;
  const Tensor q_raw = random_input({s.batch, s.heads, s.n_queries, d}, 21, 1.0, false).to(DType::F32);
  const Tensor k_raw = random_input({s.batch, s.heads, s.n_keys, d}, 22, 1.0, false).to(DType::F32);
  const Tensor v = random_input({s.batch, s.heads, s.n_keys, d}, 23, 1.0, false).to(DType::F32);
  const int64_t offset = s.n_keys - s.n_queries;
  RopeOptions rope_options;
  if (scaled) {
    rope_options.scaling = RopeScaling::YaRN;
    rope_options.factor = 4;
    rope_options.train_len = kTrainLen;
  }
  const RopeTable q_table = rope_table(d, offset, s.n_queries, s.n_keys, rope_options);
  const RopeTable k_table = rope_table(d, 0, s.n_keys, s.n_keys, rope_options);
  AttentionInputs in;
  in.opt.scale = variant == Variant::KeyNorm ? 1.0 : 1.0 / std::sqrt(static_cast<double>(d));
  switch (variant) {
    case Variant::Rope: in.q = rope(q_raw, q_table), in.k = rope(k_raw, k_table); break;
    case Variant::KeyNorm: in.q = rope(q_raw, q_table), in.k = rope(key_norm(k_raw), k_table); break;
    case Variant::Coca: in.q = coca_query(q_raw, q_table), in.k = coca_key(k_raw, k_table); break;
    case Variant::CocaStrict: in.q = coca_strict_query(q_raw, q_table), in.k = coca_strict_key(k_raw, k_table); break;
    case Variant::Alibi: {
      AlibiOptions alibi_options;
      if (scaled) alibi_options = {AlibiScaling::NTK, 2, kTrainLen};
      in.q = q_raw, in.k = k_raw;
      in.opt.alibi_slopes = alibi_slopes_tensor(s.heads, s.n_keys, alibi_options);
      break;
    }
  }
  if (logn) in.opt.logn = logn_factors(offset, s.n_queries, kTrainLen, true);
  in.q = round_to(in.q.detach(), dtype);
  in.k = round_to(in.k.detach(), dtype);
  in.v = round_to(v, dtype);
  return in;
}

struct FlashRun {
  Tensor o, dq, dk, dv;  // f32, CPU
};

FlashRun run_flash(const AttentionInputs& in, const Tensor& seed, DType dtype, Device device) {
  Tensor q = in.q.to(dtype).to(device), k = in.k.to(dtype).to(device), v = in.v.to(dtype).to(device);
  for (Tensor* t : {&q, &k, &v}) t->set_requires_grad(true);
  AttentionOptions opt = in.opt;
  if (opt.alibi_slopes.defined()) opt.alibi_slopes = opt.alibi_slopes.to(device);
  if (opt.logn.defined()) opt.logn = opt.logn.to(device);
  Tensor o = flash_attention(q, k, v, opt);
  o.backward(seed.to(dtype).to(device));
  const auto back = [](const Tensor& t) { return t.detach().to(Device::CPU).to(DType::F32); };
  return {back(o), back(q.grad()), back(k.grad()), back(v.grad())};
}

// The LSE the CUDA forward saves, against log-sum-exp of the naive scores (float64 on the CPU).
double lse_error(const AttentionInputs& in, DType dtype) {
#ifndef TSTL_WITH_CUDA
  (void)in, (void)dtype;
  return INFINITY;  // unreachable: the tests skip without CUDA
#else
  const Tensor q = in.q.to(dtype).to(Device::CUDA), k = in.k.to(dtype).to(Device::CUDA),
               v = in.v.to(dtype).to(Device::CUDA);
  const Tensor slopes = in.opt.alibi_slopes.defined() ? in.opt.alibi_slopes.to(Device::CUDA) : Tensor();
  const Tensor logn = in.opt.logn.defined() ? in.opt.logn.to(Device::CUDA) : Tensor();
  Tensor o = Tensor::empty(q.shape(), dtype, Device::CUDA);
  Tensor lse = Tensor::empty({q.size(0), q.size(1), q.size(2)}, DType::F32, Device::CUDA);
  const int64_t offset = k.size(2) - q.size(2);
  kernels::flash_forward_cuda(q, k, v, slopes, logn, offset, in.opt.scale, o, lse);
  const std::vector<double> got = lse.to(Device::CPU).to_vector<double>();
  const std::vector<double> scores = attention_scores(in.q.to(DType::F64), in.k.to(DType::F64), in.opt).to_vector<double>();
  const int64_t m = in.k.size(2);
  double err = 0;
  for (size_t row = 0; row < got.size(); ++row) {
    double mx = -INFINITY, sum = 0;
    for (int64_t j = 0; j < m; ++j) mx = std::max(mx, scores[row * static_cast<size_t>(m) + static_cast<size_t>(j)]);
    for (int64_t j = 0; j < m; ++j) sum += std::exp(scores[row * static_cast<size_t>(m) + static_cast<size_t>(j)] - mx);
    err = std::max(err, std::fabs(got[row] - (mx + std::log(sum))));
  }
  return err;
#endif
}

class GpuFlashVariants : public ::testing::TestWithParam<Variant> {};

TEST_P(GpuFlashVariants, EveryHeadDimShapeAndDtypeMatchesCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  for (DType dtype : {DType::BF16, DType::F32}) {
    const Tolerances tol = tolerances(dtype);
    for (int64_t d : kHeadDims)
      for (const Shape4& s : kShapes)
        for (bool scaled : {false, true})
          for (bool logn : {false, true}) {
            const std::string what = std::string(variant_name(GetParam())) + " " + dtype_name(dtype) + " d" +
                                     std::to_string(d) + " B" + std::to_string(s.batch) + " H" + std::to_string(s.heads) +
                                     " N" + std::to_string(s.n_queries) + " M" + std::to_string(s.n_keys) +
                                     (scaled ? " scaled" : "") + (logn ? " logn" : "");
            SCOPED_TRACE(what);
            const AttentionInputs in = variant_inputs(GetParam(), s, d, scaled, logn, dtype);
            const Tensor seed = round_to(random_input(in.q.shape(), 24, 1.0, false).to(DType::F32), dtype);
            const FlashRun cpu = run_flash(in, seed, DType::F32, Device::CPU);
            const FlashRun gpu = run_flash(in, seed, dtype, Device::CUDA);
            const auto err = [](const Tensor& g, const Tensor& c) {
              return relative_error(g.to_vector<double>(), c.to_vector<double>());
            };
            EXPECT_LE(err(gpu.o, cpu.o), tol.o) << "O";
            EXPECT_LE(err(gpu.dq, cpu.dq), tol.dq) << "dQ";
            EXPECT_LE(err(gpu.dk, cpu.dk), tol.dk) << "dK";
            EXPECT_LE(err(gpu.dv, cpu.dv), tol.dv) << "dV";
            EXPECT_LE(lse_error(in, dtype), tol.lse) << "LSE";
          }
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, GpuFlashVariants, testing::all_variants(), testing::variant_test_name);

// Issue 11 item 6 / issue 12: several Q and K tiles for every head-dim bucket at N >= 1024 (not a
// multiple of any tile: 64-row tensor-core tiles, 32-key SIMT tiles, 8/32-row SIMT tiles at
// d = 256), every variant, bf16 and f32, at offset 0 and with queries after a cache (N < M).
// d = 96 and 160 are zero-padded into the 128 and 256 buckets; bf16 at d = 256 runs the
// tensor-core forward (64 or 32 keys per tile, by the device's shared memory) and the SIMT
// backward; d = 96 and 160 in bf16 run the SIMT kernels.
TEST_P(GpuFlashVariants, LongSequencesEveryHeadDimBucket) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  for (DType dtype : {DType::BF16, DType::F32}) {
    const Tolerances tol = tolerances(dtype);
    for (int64_t d : {32, 64, 96, 128, 160, 256})
      for (const Shape4& s : {Shape4{1, 2, 1100, 1100}, Shape4{1, 2, 1030, 1500}}) {
        const bool logn = GetParam() != Variant::Alibi && s.n_queries < s.n_keys;
        SCOPED_TRACE(std::string(variant_name(GetParam())) + " " + dtype_name(dtype) + " d" + std::to_string(d) +
                     " N" + std::to_string(s.n_queries) + " M" + std::to_string(s.n_keys) + (logn ? " logn" : ""));
        const AttentionInputs in = variant_inputs(GetParam(), s, d, false, logn, dtype);
        const Tensor seed = round_to(random_input(in.q.shape(), 27, 1.0, false).to(DType::F32), dtype);
        const FlashRun cpu = run_flash(in, seed, DType::F32, Device::CPU);
        const FlashRun gpu = run_flash(in, seed, dtype, Device::CUDA);
        const auto err = [](const Tensor& g, const Tensor& c) {
          return relative_error(g.to_vector<double>(), c.to_vector<double>());
        };
        EXPECT_LE(err(gpu.o, cpu.o), tol.o) << "O";
        EXPECT_LE(err(gpu.dq, cpu.dq), tol.dq) << "dQ";
        EXPECT_LE(err(gpu.dk, cpu.dk), tol.dk) << "dK";
        EXPECT_LE(err(gpu.dv, cpu.dv), tol.dv) << "dV";
        EXPECT_LE(lse_error(in, dtype), tol.lse) << "LSE";
      }
  }
}

// The split-key decoding kernel (layers/flash_decode_cuda.cu, N <= 4): one and three query rows
// against long caches (many chunks, a last partial chunk), every head-dim bucket, bf16 and f32,
// with log-n (rotary variants) or ALiBi, and the backward (the ordinary kernels) on its O and LSE.
TEST_P(GpuFlashVariants, DecodingAgainstLongCacheMatchesCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  for (DType dtype : {DType::BF16, DType::F32}) {
    const Tolerances tol = tolerances(dtype);
    for (int64_t d : {32, 64, 128, 160, 256})
      for (const Shape4& s : {Shape4{2, 3, 1, 4099}, Shape4{1, 4, 3, 2000}, Shape4{1, 2, 4, 70}})
        for (bool logn : {false, true}) {
          if (logn && GetParam() == Variant::Alibi) continue;
          SCOPED_TRACE(std::string(variant_name(GetParam())) + " " + dtype_name(dtype) + " d" + std::to_string(d) +
                       " N" + std::to_string(s.n_queries) + " M" + std::to_string(s.n_keys) + (logn ? " logn" : ""));
          const AttentionInputs in = variant_inputs(GetParam(), s, d, true, logn, dtype);
          const Tensor seed = round_to(random_input(in.q.shape(), 28, 1.0, false).to(DType::F32), dtype);
          const FlashRun cpu = run_flash(in, seed, DType::F32, Device::CPU);
          const FlashRun gpu = run_flash(in, seed, dtype, Device::CUDA);
          const auto err = [](const Tensor& g, const Tensor& c) {
            return relative_error(g.to_vector<double>(), c.to_vector<double>());
          };
          EXPECT_LE(err(gpu.o, cpu.o), tol.o) << "O";
          EXPECT_LE(err(gpu.dq, cpu.dq), tol.dq) << "dQ";
          EXPECT_LE(err(gpu.dk, cpu.dk), tol.dk) << "dK";
          EXPECT_LE(err(gpu.dv, cpu.dv), tol.dv) << "dV";
          EXPECT_LE(lse_error(in, dtype), tol.lse) << "LSE";
        }
  }
}

TEST(GpuFlashMma, TensorCoreBackwardIsBitwiseReproducible) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  const AttentionInputs in = variant_inputs(Variant::Alibi, {2, 2, 200, 200}, 64, false, true, DType::BF16);
  const Tensor seed = round_to(random_input(in.q.shape(), 25, 1.0, false).to(DType::F32), DType::BF16);
  const FlashRun first = run_flash(in, seed, DType::BF16, Device::CUDA);
  const FlashRun second = run_flash(in, seed, DType::BF16, Device::CUDA);
  EXPECT_EQ(first.o.to_vector<float>(), second.o.to_vector<float>());
  EXPECT_EQ(first.dq.to_vector<float>(), second.dq.to_vector<float>());
  EXPECT_EQ(first.dk.to_vector<float>(), second.dk.to_vector<float>());
  EXPECT_EQ(first.dv.to_vector<float>(), second.dv.to_vector<float>());
}

TEST(GpuFlashCudnn, CoveredVariantsMatchCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  if (!kernels::cudnn_attention_available()) GTEST_SKIP() << "built without the cuDNN frontend";
  const Tolerances tol = tolerances(DType::BF16);
  for (Variant variant : {Variant::Rope, Variant::KeyNorm, Variant::Coca, Variant::Alibi})
    for (int64_t d : {64, 128})
      for (const Shape4& s : {Shape4{1, 4, 200, 200}, Shape4{2, 4, 37, 300}, Shape4{1, 4, 1, 129}}) {
        SCOPED_TRACE(std::string(variant_name(variant)) + " d" + std::to_string(d) + " N" +
                     std::to_string(s.n_queries) + " M" + std::to_string(s.n_keys));
        const AttentionInputs in = variant_inputs(variant, s, d, false, false, DType::BF16);
        const Tensor seed = round_to(random_input(in.q.shape(), 26, 1.0, false).to(DType::F32), DType::BF16);
        const FlashRun cpu = run_flash(in, seed, DType::F32, Device::CPU);
        const auto on_gpu = [](const Tensor& t) { return t.to(DType::BF16).to(Device::CUDA); };
        const Tensor q = on_gpu(in.q), k = on_gpu(in.k), v = on_gpu(in.v), d_o = on_gpu(seed);
        Tensor o = Tensor::empty(q.shape(), DType::BF16, Device::CUDA);
        Tensor lse = Tensor::empty({q.size(0), q.size(1), q.size(2)}, DType::F32, Device::CUDA);
        Tensor dq = Tensor::empty(q.shape(), DType::BF16, Device::CUDA);
        Tensor dk = Tensor::empty(k.shape(), DType::BF16, Device::CUDA), dv = Tensor::empty(k.shape(), DType::BF16, Device::CUDA);
        const bool alibi = variant == Variant::Alibi;
        kernels::cudnn_attention_forward(q, k, v, in.opt.scale, alibi, o, lse);
        kernels::cudnn_attention_backward(q, k, v, o, lse, d_o, in.opt.scale, alibi, dq, dk, dv);
        const auto err = [](const Tensor& gpu, const Tensor& ref) {
          return relative_error(gpu.to(Device::CPU).to_vector<double>(), ref.to_vector<double>());
        };
        EXPECT_LE(err(o, cpu.o), tol.o) << "O";
        EXPECT_LE(err(dq, cpu.dq), tol.dq) << "dQ";
        EXPECT_LE(err(dk, cpu.dk), tol.dk) << "dK";
        EXPECT_LE(err(dv, cpu.dv), tol.dv) << "dV";
      }
}

// [model] attention_backend = cudnn through flash_attention (what the decoder calls): f32 and bf16
// activations (f32 is rounded to bf16 for cuDNN and back), forward and autograd backward, against
// the CPU kernel on the bf16-rounded inputs, for every variant cuDNN covers.
TEST(GpuFlashCudnn, BackendThroughFlashAttentionMatchesCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  if (!kernels::cudnn_attention_available()) GTEST_SKIP() << "built without the cuDNN frontend";
  const Tolerances tol = tolerances(DType::BF16);
  for (Variant variant : {Variant::Rope, Variant::KeyNorm, Variant::Coca, Variant::CocaStrict, Variant::Alibi})
    for (DType dtype : {DType::F32, DType::BF16})
      for (const Shape4& s : {Shape4{1, 4, 1100, 1100}, Shape4{2, 4, 37, 300}}) {
        SCOPED_TRACE(std::string(variant_name(variant)) + " " + dtype_name(dtype) + " N" + std::to_string(s.n_queries));
        AttentionInputs in = variant_inputs(variant, s, 64, false, false, DType::BF16);
        const Tensor seed = round_to(random_input(in.q.shape(), 29, 1.0, false).to(DType::F32), DType::BF16);
        const FlashRun cpu = run_flash(in, seed, DType::F32, Device::CPU);
        in.opt.backend = AttentionBackend::Cudnn;
        const FlashRun gpu = run_flash(in, seed, dtype, Device::CUDA);
        const auto err = [](const Tensor& g, const Tensor& c) {
          return relative_error(g.to_vector<double>(), c.to_vector<double>());
        };
        EXPECT_LE(err(gpu.o, cpu.o), tol.o) << "O";
        EXPECT_LE(err(gpu.dq, cpu.dq), tol.dq) << "dQ";
        EXPECT_LE(err(gpu.dk, cpu.dk), tol.dk) << "dK";
        EXPECT_LE(err(gpu.dv, cpu.dv), tol.dv) << "dV";
      }
}

}  // namespace
}  // namespace tstl
