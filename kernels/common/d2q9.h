// D2Q9 lattice Boltzmann per-cell math, written once for the C++/OpenMP kernel (csrc/lbm_step_cpu.cpp)
// and the CUDA kernel (kernels/lbm_step.cu). The plain torch reference is
// dynadiff_fast/ops/lbm_step/reference.py; every rule below has its twin there.
//
// Layout: one environment is a [9, H, W] slab of post-collision populations (x along W = flow
// direction, y along H). One fused step of the pull scheme, for cell (x, y):
//   1. pull   g_i(x, y) = f_i(x - c_ix, y - c_iy), with the boundary rules:
//        x periodic | inflow/outflow: source x clamped to [0, W-1] (zero-gradient outlet; what the inlet
//                     column pulls from x = -1 is replaced in 2.)
//        y periodic | no-slip walls: halfway bounce-back g_i = f_opp(i)(x, y)
//                   | free-slip walls: specular reflection g_i = f_mirror(i)(x - c_ix, y), or
//                     bounce-back when that wall cell is solid (so mass stays conserved)
//        solid source cell (cylinder): halfway bounce-back g_i = f_opp(i)(x, y)
//   2. inlet (x = 0): Zou-He velocity boundary, the unknown g1, g5, g8 set so that the cell has velocity
//      (u_in[y], 0) (zou_he_inlet below); then
//   3. update  solid cell      -> rest equilibrium w_i (never read by fluid cells; u = 0 there)
//              fluid           -> BGK  f = g - omega (g - f_eq)            or
//                                 TRT  f = g - omega+ (g+ - f_eq+) - omega- (g- - f_eq-)
//   with f_eq_i = w_i rho (1 + 3 c_i.u + 4.5 (c_i.u)^2 - 1.5 u.u), nu = (1/omega - 1/2) / 3.
#pragma once
#include <cmath>
#include <cstdint>

#include "hd.h"

// Fully unroll the 9-population loops on every compiler, so the CPU row loop vectorises over x.
#if defined(__CUDACC__) || defined(__clang__)
#define DD_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define DD_UNROLL _Pragma("GCC unroll 16")
#else
#define DD_UNROLL
#endif

namespace dynadiff {
namespace d2q9 {

constexpr int Q = 9;

// Boundary and collision codes shared with the Python side (ops/lbm_step/__init__.py).
enum XBoundary : int { X_PERIODIC = 0, X_INFLOW_OUTFLOW = 1 };
enum YBoundary : int { Y_PERIODIC = 0, Y_NO_SLIP = 1, Y_FREE_SLIP = 2 };
enum Collision : int { BGK = 0, TRT = 1 };

// Velocities: 0 rest, 1 E, 2 N, 3 W, 4 S, 5 NE, 6 NW, 7 SW, 8 SE ("N" = +y = increasing row).
// Switches instead of tables: they fold to constants in unrolled loops on host and device alike.
DD_HD int cx(int i) {
  switch (i) {
    case 1: case 5: case 8: return 1;
    case 3: case 6: case 7: return -1;
    default: return 0;
  }
}
DD_HD int cy(int i) {
  switch (i) {
    case 2: case 5: case 6: return 1;
    case 4: case 7: case 8: return -1;
    default: return 0;
  }
}
DD_HD int opposite(int i) {
  switch (i) {
    case 1: return 3; case 2: return 4; case 3: return 1; case 4: return 2;
    case 5: return 7; case 6: return 8; case 7: return 5; case 8: return 6;
    default: return 0;
  }
}
// Same c_x, opposite c_y: the specular partner at a free-slip wall.
DD_HD int mirror_y(int i) {
  switch (i) {
    case 2: return 4; case 4: return 2; case 5: return 8; case 8: return 5;
    case 6: return 7; case 7: return 6;
    default: return i;
  }
}
DD_HD float weight(int i) { return i == 0 ? 4.0f / 9.0f : (i < 5 ? 1.0f / 9.0f : 1.0f / 36.0f); }

// TRT odd-moment rate from the even one and the magic parameter Lambda = (1/w+ - 1/2)(1/w- - 1/2).
DD_HD float trt_omega_minus(float omega_plus, float magic) {
  return 1.0f / (magic / (1.0f / omega_plus - 0.5f) + 0.5f);
}

DD_HD void moments(const float g[Q], float& rho, float& ux, float& uy) {
  rho = 0.0f;
  float jx = 0.0f, jy = 0.0f;
DD_UNROLL
  for (int i = 0; i < Q; ++i) {
    rho += g[i];
    jx += cx(i) * g[i];
    jy += cy(i) * g[i];
  }
  ux = jx / rho;
  uy = jy / rho;
}

DD_HD float equilibrium(int i, float rho, float ux, float uy) {
  const float cu = cx(i) * ux + cy(i) * uy;
  return weight(i) * rho * (1.0f + 3.0f * cu + 4.5f * cu * cu - 1.5f * (ux * ux + uy * uy));
}

// Smagorinsky eddy viscosity (Hou et al. 1996): the relaxation time grows with the local
// non-equilibrium momentum flux |Pi| = sqrt(Pi:Pi), Pi = sum_i c_i c_i (g_i - f_eq_i), as
// tau = (tau0 + sqrt(tau0^2 + 18 sqrt(2) C^2 |Pi| / rho)) / 2.
// Pi:Pi of the non-equilibrium momentum flux. Pi is written out for the D2Q9 velocities (c_x^2 = 1 for
// E/W/diagonals, c_y^2 = 1 for N/S/diagonals, c_x c_y = +1 for NE/SW, -1 for NW/SE).
DD_HD float nonequilibrium_flux2(const float g[Q], const float feq[Q]) {
  float neq[Q];
  DD_UNROLL
  for (int i = 0; i < Q; ++i) neq[i] = g[i] - feq[i];
  const float diag = neq[5] + neq[6] + neq[7] + neq[8];
  const float pxx = neq[1] + neq[3] + diag;
  const float pyy = neq[2] + neq[4] + diag;
  const float pxy = (neq[5] + neq[7]) - (neq[6] + neq[8]);
  return pxx * pxx + pyy * pyy + 2.0f * pxy * pxy;
}

DD_HD float smagorinsky_rate(float flux2, float rho, float omega, float c2) {
  const float tau0 = 1.0f / omega;
  return 2.0f / (tau0 + sqrtf(tau0 * tau0 + 25.455844f * c2 * sqrtf(flux2) / rho));  // 25.455844 = 18 sqrt(2)
}

DD_HD float smagorinsky_omega(const float g[Q], const float feq[Q], float rho, float omega, float c2) {
  return smagorinsky_rate(nonequilibrium_flux2(g, feq), rho, omega, c2);
}

struct StepArgs {
  int H, W;
  int x_boundary, y_boundary, collision;
  float magic;         // TRT Lambda
  float smagorinsky2;  // C^2 of the Smagorinsky model (0: plain BGK/TRT)
};

// Relax the pulled populations g in place with the environment's rate omega (= omega+ for TRT).
// BGK: every moment relaxes with omega. TRT: even (symmetric) parts with omega, odd parts with
// omega- = trt_omega_minus(omega, Lambda). Both use the Smagorinsky-adjusted omega when C > 0.
// (Template flags, so a vectorised CPU loop over cells carries no branch.)
template <int kCollision, bool kSmagorinsky>
DD_HD void collide(float g[Q], float omega, const StepArgs& a) {
  float rho, ux, uy, feq[Q];
  moments(g, rho, ux, uy);
  DD_UNROLL
  for (int i = 0; i < Q; ++i) feq[i] = equilibrium(i, rho, ux, uy);
  if (kSmagorinsky) omega = smagorinsky_omega(g, feq, rho, omega, a.smagorinsky2);
  if (kCollision == BGK) {
    DD_UNROLL
    for (int i = 0; i < Q; ++i) g[i] -= omega * (g[i] - feq[i]);
    return;
  }
  const float omega_minus = trt_omega_minus(omega, a.magic);
  float out[Q];
  DD_UNROLL
  for (int i = 0; i < Q; ++i) {
    const int o = opposite(i);
    const float sym = 0.5f * ((g[i] + g[o]) - (feq[i] + feq[o]));
    const float anti = 0.5f * ((g[i] - g[o]) - (feq[i] - feq[o]));
    out[i] = g[i] - omega * sym - omega_minus * anti;
  }
  DD_UNROLL
  for (int i = 0; i < Q; ++i) g[i] = out[i];
}

// Zou-He velocity inlet on a west boundary, velocity (u, 0): the unknown populations 1 (E), 5 (NE), 8 (SE)
// from the known ones, so that the cell has exactly momentum (rho u, 0) with the density
// rho = (g0 + g2 + g4 + 2 (g3 + g6 + g7)) / (1 - u). The cell then collides like any fluid cell.
DD_HD void zou_he_inlet(float g[Q], float u) {
  const float rho = (g[0] + g[2] + g[4] + 2.0f * (g[3] + g[6] + g[7])) / (1.0f - u);
  const float ru = rho * u;
  g[1] = g[3] + (2.0f / 3.0f) * ru;
  g[5] = g[7] - 0.5f * (g[2] - g[4]) + (1.0f / 6.0f) * ru;
  g[8] = g[6] + 0.5f * (g[2] - g[4]) + (1.0f / 6.0f) * ru;
}

// Step 1 for one population: the (population, cell) to read, after the boundary rules.
DD_HD int64_t pull_index(int i, int x, int y, const uint8_t* solid, const StepArgs& a) {
  int xs = x - cx(i), ys = y - cy(i), j = i;
  if (xs < 0 || xs >= a.W) {
    if (a.x_boundary == X_PERIODIC)
      xs = xs < 0 ? xs + a.W : xs - a.W;
    else
      xs = xs < 0 ? 0 : a.W - 1;
  }
  if (ys < 0 || ys >= a.H) {
    if (a.y_boundary == Y_FREE_SLIP && !solid[static_cast<int64_t>(y) * a.W + xs])
      return (static_cast<int64_t>(mirror_y(i)) * a.H + y) * a.W + xs;
    if (a.y_boundary != Y_PERIODIC) return (static_cast<int64_t>(opposite(i)) * a.H + y) * a.W + x;
    ys = ys < 0 ? ys + a.H : ys - a.H;  // periodic
  }
  if (solid[static_cast<int64_t>(ys) * a.W + xs]) j = opposite(i), xs = x, ys = y;
  return (static_cast<int64_t>(j) * a.H + ys) * a.W + xs;
}

// One fused pull + boundary + collision update of cell (x, y) of one environment.
// fin/fout: [9, H, W] slabs, solid: [H, W], u_in: [H] inlet velocity (read only with inflow/outflow).
DD_HD void cell_update(const float* fin, float* fout, const uint8_t* solid, const float* u_in, int x, int y,
                       float omega, const StepArgs& a) {
  const int64_t plane = static_cast<int64_t>(a.H) * a.W;
  const int64_t cell = static_cast<int64_t>(y) * a.W + x;
  float g[Q];
  if (solid[cell]) {
DD_UNROLL
    for (int i = 0; i < Q; ++i) fout[i * plane + cell] = weight(i);
    return;
  }
DD_UNROLL
  for (int i = 0; i < Q; ++i) g[i] = fin[pull_index(i, x, y, solid, a)];
  if (a.x_boundary == X_INFLOW_OUTFLOW && x == 0) zou_he_inlet(g, u_in[y]);
  const bool les = a.smagorinsky2 > 0.0f;
  if (a.collision == BGK)
    les ? collide<BGK, true>(g, omega, a) : collide<BGK, false>(g, omega, a);
  else
    les ? collide<TRT, true>(g, omega, a) : collide<TRT, false>(g, omega, a);
DD_UNROLL
  for (int i = 0; i < Q; ++i) fout[i * plane + cell] = g[i];
}

}  // namespace d2q9
}  // namespace dynadiff
