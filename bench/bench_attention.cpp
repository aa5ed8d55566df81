// tstl's flash attention (layers/flash_attention.h) against a straightforward naive f32 attention
// measured in the same run on the same data: the naive one builds the full (N, N) scores with one
// sgemm per (b, h), a masked softmax, and one sgemm for P V (its backward: full dP, dS, and one
// sgemm each for dV, dP, dQ, dK). Both run on all OpenMP threads (the naive one over (b, h)).
//
// FLOP count (causal, the same for both, whatever they actually compute): with
// pairs = N (N + 1) / 2 visible (query, key) pairs per (b, h),
//   forward  = 4 B H d pairs   (S = Q K^T and O = P V, 2 flops per multiply-add),
//   backward = 10 B H d pairs  (S, dP = dO V^T, dV = P^T dO, dQ = dS K, dK = dS^T Q).
// Recomputation (the flash backward recomputes S, and for few heads also dP) is not counted.
//
//   build/bench_attention [repeats=5] [B H N d [block_q block_k]]   (default: the three cases below)
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "bench_util.h"
#include "core/autograd.h"
#include "core/ops.h"
#include "core/rng.h"
#include "layers/flash_attention.h"

namespace {

using tstl::bench::median;
using tstl::bench::seconds;

// The naive attention of one problem: full matrices per (b, h), kept for the backward.
struct Naive {
  int64_t bh, n, d;
  float scale;
  std::vector<float> p;  // (B H, N, N) probabilities (0 above the diagonal)

  void forward(const float* q, const float* k, const float* v, float* o) {
#pragma omp parallel for schedule(dynamic)
    for (int64_t i = 0; i < bh; ++i) {
      float* pi = p.data() + i * n * n;  // (N, N)
      const float *qi = q + i * n * d, *ki = k + i * n * d, *vi = v + i * n * d;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, d, scale, qi, d, ki, d, 0.0f, pi, n);
      for (int64_t r = 0; r < n; ++r) {
        float* row = pi + r * n;
        float row_max = -INFINITY;
        for (int64_t j = 0; j <= r; ++j) row_max = std::max(row_max, row[j]);
        float sum = 0;
        for (int64_t j = 0; j <= r; ++j) sum += row[j] = std::exp(row[j] - row_max);
        for (int64_t j = 0; j <= r; ++j) row[j] /= sum;
        for (int64_t j = r + 1; j < n; ++j) row[j] = 0;
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, d, n, 1.0f, pi, n, vi, d, 0.0f, o + i * n * d, d);
    }
  }

  void backward(const float* q, const float* k, const float* v, const float* d_o, float* dq, float* dk, float* dv) {
#pragma omp parallel
    {
      std::vector<float> ds(static_cast<size_t>(n * n));  // (N, N) dP, then dS
#pragma omp for schedule(dynamic)
      for (int64_t i = 0; i < bh; ++i) {
        const float* pi = p.data() + i * n * n;
        const float *qi = q + i * n * d, *ki = k + i * n * d, *vi = v + i * n * d, *doi = d_o + i * n * d;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, d, n, 1.0f, pi, n, doi, d, 0.0f, dv + i * n * d, d);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, d, 1.0f, doi, d, vi, d, 0.0f, ds.data(), n);
        for (int64_t r = 0; r < n; ++r) {
          const float* p_row = pi + r * n;
          float* row = ds.data() + r * n;
          float delta = 0;
          for (int64_t j = 0; j < n; ++j) delta += p_row[j] * row[j];
          for (int64_t j = 0; j < n; ++j) row[j] = p_row[j] * (row[j] - delta);
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, d, n, scale, ds.data(), n, ki, d, 0.0f,
                    dq + i * n * d, d);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, d, n, scale, ds.data(), n, qi, d, 0.0f,
                    dk + i * n * d, d);
      }
    }
  }
};

void bench(int64_t batch, int64_t heads, int64_t n, int64_t d, int repeats, tstl::FlashTiles tiles = {}) {
  using namespace tstl;
  Generator gen{7, 0};
  const Shape shape{batch, heads, n, d};
  Tensor q = randn(shape, gen), k = randn(shape, gen), v = randn(shape, gen);
  const Tensor d_o = randn(shape, gen);
  q.set_requires_grad(true), k.set_requires_grad(true), v.set_requires_grad(true);
  AttentionOptions opt;
  opt.scale = 1.0 / std::sqrt(static_cast<double>(d));

  const int64_t bh = batch * heads, numel = bh * n * d;
  Naive naive{bh, n, d, static_cast<float>(opt.scale), std::vector<float>(static_cast<size_t>(bh * n * n))};
  std::vector<float> o(numel), dq(numel), dk(numel), dv(numel);

  auto flash_forward = [&] {
    NoGradGuard no_grad;
    flash_attention(q, k, v, opt, tiles);
  };
  auto flash_backward = [&](double& elapsed) {
    q.zero_grad(), k.zero_grad(), v.zero_grad();
    Tensor out = flash_attention(q, k, v, opt, tiles);
    elapsed = seconds([&] { out.backward(d_o); });
  };
  auto naive_forward = [&] { naive.forward(q.data<float>(), k.data<float>(), v.data<float>(), o.data()); };
  auto naive_backward = [&] {
    naive.backward(q.data<float>(), k.data<float>(), v.data<float>(), d_o.data<float>(), dq.data(), dk.data(),
                   dv.data());
  };

  double dummy;
  flash_forward(), flash_backward(dummy), naive_forward(), naive_backward();  // warm-up
  std::vector<double> tf, tb, nf, nb;
  for (int i = 0; i < repeats; ++i) {  // interleaved: load on the machine hits all alike
    tf.push_back(seconds(flash_forward));
    flash_backward(dummy);
    tb.push_back(dummy);
    nf.push_back(seconds(naive_forward));
    nb.push_back(seconds(naive_backward));
  }
  // Agreement of the two outputs, so the bench cannot time a wrong kernel.
  Tensor out;
  {
    NoGradGuard no_grad;
    out = flash_attention(q, k, v, opt, tiles);
  }
  naive_forward();
  double max_diff = 0;
  for (int64_t i = 0; i < numel; ++i) max_diff = std::max(max_diff, std::fabs(double(out.data<float>()[i]) - o[i]));

  const double pairs = static_cast<double>(bh) * n * (n + 1) / 2.0;
  const double fwd_flops = 4.0 * d * pairs, bwd_flops = 10.0 * d * pairs;
  const double t_tf = median(tf), t_tb = median(tb), t_nf = median(nf), t_nb = median(nb);
  std::printf("(B, H, N, d) = (%lld, %lld, %lld, %lld)  max |O_flash - O_naive| = %.1e\n", static_cast<long long>(batch),
              static_cast<long long>(heads), static_cast<long long>(n), static_cast<long long>(d), max_diff);
  std::printf("  forward   flash %8.2f GFLOP/s (%8.4f s)   naive %8.2f GFLOP/s (%8.4f s)   flash/naive %.2f\n",
              fwd_flops / t_tf * 1e-9, t_tf, fwd_flops / t_nf * 1e-9, t_nf, t_nf / t_tf);
  std::printf("  backward  flash %8.2f GFLOP/s (%8.4f s)   naive %8.2f GFLOP/s (%8.4f s)   flash/naive %.2f\n",
              bwd_flops / t_tb * 1e-9, t_tb, bwd_flops / t_nb * 1e-9, t_nb, t_nb / t_tb);
}

}  // namespace

int main(int argc, char** argv) {
  const int repeats = argc > 1 ? std::atoi(argv[1]) : 5;
  std::printf("flash attention vs naive, f32, causal, scale 1/sqrt(d), median of %d, %d OpenMP threads, %s\n",
              repeats, omp_get_max_threads(), tstl::bench::clock_name());
  std::printf("FLOPs: forward 4 B H d N(N+1)/2, backward 10 B H d N(N+1)/2 (causal pairs only)\n");
  if (argc >= 6) {
    tstl::FlashTiles tiles;
    if (argc >= 8) tiles = {std::atoll(argv[6]), std::atoll(argv[7])};
    if (tiles.block_q == tstl::FlashTiles::kByShape) {
      std::printf("tiles by shape (query tile 32 for N <= 256, else 64) x %lld\n",
                  static_cast<long long>(tiles.block_k));
    } else {
      std::printf("tiles %lld x %lld\n", static_cast<long long>(tiles.block_q), static_cast<long long>(tiles.block_k));
    }
    bench(std::atoll(argv[2]), std::atoll(argv[3]), std::atoll(argv[4]), std::atoll(argv[5]), repeats, tiles);
    return 0;
  }
  bench(16, 8, 128, 32, repeats);
  bench(1, 8, 1024, 64, repeats);
  bench(1, 8, 2048, 32, repeats);
  return 0;
}
