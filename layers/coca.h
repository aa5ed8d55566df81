// CoCA (Collinear Constrained Attention, Zhu et al., ACL 2024): the O(N d) prologue that turns
// the projections into the q and k of ordinary scaled-dot-product attention
// (docs/variants.md, "Variants"). Tensors are (B, H, N, d), d even, h = d/2, plane i =
// dims (i, i+h), R_p the RoPE map of the table (YaRN's magnitude factor included).
//
// Released form ("CoCA-Slack"), scored as S = Q~ . K~ / sqrt(d):
//     Q~ = q * (R_p q)                       elementwise
//     u = (T[:h] + T[h:]) / 2, tbar = relu(u),  K~ = R_p [tbar, tbar]
//   backward:  dq = dQ~ * (R_p q) + R_p^T (dQ~ * q)
//              dT = R_p^T dK~,  dtbar = dT[:h] + dT[h:],  du = dtbar [u > 0],  dT_raw = [du/2, du/2]
// Strict form (rank d):
//     q_s = R_p [(q[i]^2 + q[i+h]^2)_i, 0],   k_s = R_p [tbar, 0]
//   backward:  dm = (R_p^T dq_s)[:h],  dq[i] = 2 q[i] dm[i],  dq[i+h] = 2 q[i+h] dm[i]
//              dtbar = (R_p^T dk_s)[:h],  du = dtbar [u > 0],  dT_raw = [du/2, du/2]
// Each function is one autograd node; its input gradient is returned written (=).
#pragma once

#include <cstdint>

#include "core/hd.h"
#include "layers/rope.h"

namespace tstl {

Tensor coca_query(const Tensor& q, const RopeTable& table);         // Q~ (B, H, N, d)
Tensor coca_key(const Tensor& t_raw, const RopeTable& table);       // K~ (B, H, N, d)
Tensor coca_strict_query(const Tensor& q, const RopeTable& table);  // q_s (B, H, N, d)
Tensor coca_strict_key(const Tensor& t_raw, const RopeTable& table);  // k_s (B, H, N, d)

// ---- Per-plane math shared by the CPU and CUDA kernels ----------------------------------------
// (x0, x1) = (x[i], x[i+h]) of one row; c, s the table's cos/sin for that row and plane;
// (g0, g1) the output gradient of the plane; results go to (y0, y1) / (d0, d1).

template <class T>
TSTL_HD void coca_query_plane(T q0, T q1, T c, T s, T& y0, T& y1) {
  T r0, r1;
  rope_rotate_plane(q0, q1, c, s, r0, r1);
  y0 = q0 * r0;
  y1 = q1 * r1;
}

template <class T>
TSTL_HD void coca_query_plane_backward(T q0, T q1, T c, T s, T g0, T g1, T& d0, T& d1) {
  T r0, r1, back0, back1;
  rope_rotate_plane(q0, q1, c, s, r0, r1);                   // R q
  rope_rotate_plane_transposed(g0 * q0, g1 * q1, c, s, back0, back1);  // R^T (dQ~ * q)
  d0 = g0 * r0 + back0;
  d1 = g1 * r1 + back1;
}

// tbar = relu((t0 + t1) / 2), the non-negative magnitude of a plane.
template <class T>
TSTL_HD T coca_magnitude(T t0, T t1) {
  const T u = (t0 + t1) * T(0.5);
  return u > T(0) ? u : T(0);
}

template <class T>
TSTL_HD void coca_key_plane(T t0, T t1, T c, T s, T& y0, T& y1) {
  const T m = coca_magnitude(t0, t1);
  rope_rotate_plane(m, m, c, s, y0, y1);
}

template <class T>
TSTL_HD void coca_key_plane_backward(T t0, T t1, T c, T s, T g0, T g1, T& d0, T& d1) {
  T b0, b1;
  rope_rotate_plane_transposed(g0, g1, c, s, b0, b1);  // dT = R^T dK~
  const T du = (t0 + t1) > T(0) ? b0 + b1 : T(0);       // relu' at u = (t0 + t1)/2
  d0 = du * T(0.5);
  d1 = du * T(0.5);
}

template <class T>
TSTL_HD void coca_strict_query_plane(T q0, T q1, T c, T s, T& y0, T& y1) {
  rope_rotate_plane(q0 * q0 + q1 * q1, T(0), c, s, y0, y1);
}

template <class T>
TSTL_HD void coca_strict_query_plane_backward(T q0, T q1, T c, T s, T g0, T g1, T& d0, T& d1) {
  T dm, unused;
  rope_rotate_plane_transposed(g0, g1, c, s, dm, unused);
  (void)unused;
  d0 = T(2) * q0 * dm;
  d1 = T(2) * q1 * dm;
}

template <class T>
TSTL_HD void coca_strict_key_plane(T t0, T t1, T c, T s, T& y0, T& y1) {
  rope_rotate_plane(coca_magnitude(t0, t1), T(0), c, s, y0, y1);
}

template <class T>
TSTL_HD void coca_strict_key_plane_backward(T t0, T t1, T c, T s, T g0, T g1, T& d0, T& d1) {
  T dm, unused;
  rope_rotate_plane_transposed(g0, g1, c, s, dm, unused);
  (void)unused;
  const T du = (t0 + t1) > T(0) ? dm : T(0);
  d0 = du * T(0.5);
  d1 = du * T(0.5);
}

enum class CocaPart : uint8_t { Query, Key, StrictQuery, StrictKey };

namespace kernels {
// out = the CoCA part of x (B, H, N, d) with the table cos/sin (N, h).
void coca_forward_cpu(CocaPart part, const Tensor& x, const Tensor& cos, const Tensor& sin, Tensor& out);
void coca_forward_cuda(CocaPart part, const Tensor& x, const Tensor& cos, const Tensor& sin, Tensor& out);
// dx (B, H, N, d) = the backward of that part at x for the output gradient g (B, H, N, d).
void coca_backward_cpu(CocaPart part, const Tensor& x, const Tensor& cos, const Tensor& sin, const Tensor& g, Tensor& dx);
void coca_backward_cuda(CocaPart part, const Tensor& x, const Tensor& cos, const Tensor& sin, const Tensor& g,
                        Tensor& dx);
}  // namespace kernels

}  // namespace tstl
